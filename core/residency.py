"""Residency: which residency a deployment lands, and the hold of a record that must not land
there (``RESIDENCY_BLOCKED``).

Each residency maps to its own lake namespace (``residency.namespaces``, ``US=coherence,
EU=coherence_eu``) and serving key space (``residency.key_prefixes``, ``EU=eu:``). A flow lands
into one namespace, so it serves the one residency mapped to it (:func:`served_residency`), and
must run with that residency's key prefix. The validate step then holds, as
``RESIDENCY_BLOCKED`` (quarantine table and DLQ, re-sent by ``igflow residency release``):

- a record whose tenant's residency (the ``residency`` tag of ``policies/tenancy.rego``) is not
  the one served;
- a record whose registered source (:mod:`core.sources`) has a residency other than its tenant's.

Like the kill switches it is a :class:`~core.switches.Holds`: the live flow asks it after the
positions its lake already holds, and a replay (whose scratch namespace serves no residency)
holds exactly the original's positions.
"""

from __future__ import annotations

from typing import Protocol

from core.errors import ConfigError
from core.reasons import ReasonCode
from core.records import Decoded, PolicyTags
from core.sources import SourceRegistry
from core.switches import Gate

__all__ = ["ResidencyHolds", "TagSource", "parse_map", "served_residency"]


def parse_map(text: str) -> dict[str, str]:
    """``"US=coherence,EU=coherence_eu"`` -> ``{"US": "coherence", "EU": "coherence_eu"}``
    (the setting's validator has checked the form)."""
    out: dict[str, str] = {}
    for item in (i.strip() for i in text.split(",")):
        if item:
            residency, _, name = item.partition("=")
            out[residency.strip()] = name.strip()
    return out


def served_residency(
    namespaces: str, key_prefixes: str, namespace: str, key_prefix: str
) -> str | None:
    """The residency the flow landing in ``namespace`` serves (``None``: not mapped, no gate).

    :class:`~core.errors.ConfigError` when that residency has a key prefix other than
    ``key_prefix``: its records would land in another residency's serving key space."""
    by_namespace = {ns: r for r, ns in parse_map(namespaces).items()}
    served = by_namespace.get(namespace)
    if served is None:
        return None
    prefix = parse_map(key_prefixes).get(served, "")
    if prefix != key_prefix:
        msg = (
            f"lake namespace {namespace!r} serves residency {served}, whose serving key prefix is "
            f"{prefix!r} (residency.key_prefixes), but stores.key_prefix is {key_prefix!r}"
        )
        raise ConfigError(msg)
    return served


class TagSource(Protocol):
    """The tenants' policy tags (:class:`operators.tenancy.TenancyPolicy`)."""

    def tags(self, tenant_id: str) -> PolicyTags: ...


class ResidencyHolds:
    """Holds a record that must not land in the residency ``served`` (see the module docstring);
    ``served`` ``None`` checks only sources against tenants, ``sources`` ``None`` only tenants."""

    def __init__(
        self, served: str | None, policy: TagSource, sources: SourceRegistry | None = None
    ) -> None:
        self._served = served
        self._policy = policy
        self._sources = sources

    def gate(self) -> Gate | None:
        return self.held

    def held(self, item: Decoded) -> tuple[ReasonCode, str] | None:
        tenant = self._policy.tags(item.signal.tenant_id).residency
        if self._served is not None and tenant != self._served:
            return ReasonCode.RESIDENCY_BLOCKED, f"tenant residency {tenant} not served here"
        if self._sources is not None:
            entry = self._sources.entry(item.signal.source, item.kafka_timestamp_ms)
            if entry is not None and entry.residency and entry.residency != tenant:
                return (
                    ReasonCode.RESIDENCY_BLOCKED,
                    f"source residency {entry.residency} is not the tenant's {tenant}",
                )
        return None
