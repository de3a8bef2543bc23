"""The source registry: what a registered source is, how a record's transport is told, and the
rules the validate step applies to a record of a registered source.

A source (the signal's ``source`` field) is registered with ``igflow sources add``
(:mod:`tenancy.sources`, table ``source_revisions``): its owners, the transports it may arrive
by, its license and terms of service, the retention of what it sends, its residency and its SLA
window. Every change is a new *revision* that applies from its ``effective_from`` on (the change
plus ``sources.grace_seconds``), and a record is judged by the revision in force at its Kafka
timestamp, never by the wall clock: a replay, or a re-run after the registry changed, decides
and stamps every record exactly as the first run did.

Rules (:func:`source_verdict`), in this order, for a record that passed the signal rules:

1. ``SOURCE_UNREGISTERED``: no revision of the source in force (only when enforced);
2. ``SOURCE_TRANSPORT_MISMATCH``: the record's transport (:func:`transport_of`) is not one the
   source is registered with;
3. ``SOURCE_SLA_MISSED``: the record reached Kafka more than the source's SLA window after its
   event time (``ts``), measured against the Kafka timestamp like the event-time rule.

A registered source's license and retention are stamped into the provenance manifest of every
record it sent (:func:`operators.tenancy.manifest`).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from core.errors import ConfigError
from core.reasons import ReasonCode
from core.records import Decoded
from core.switches import Gate

__all__ = [
    "RELEASED_HEADER",
    "TRANSPORTS",
    "VIA_HEADER",
    "Revision",
    "SourceEntry",
    "SourceRegistry",
    "SourceRules",
    "StaticSources",
    "as_of",
    "check_entry",
    "source_verdict",
    "transport_of",
]

#: The transports a source may be registered with: ``kafka`` (a producer writes the topic) and
#: ``api`` (``igflow serve``'s publish: GraphQL, REST or webhook).
TRANSPORTS = ("kafka", "api")
#: The header the API's publish sets on every record it sends (:mod:`api.publish`).
VIA_HEADER = "igflow.ingest.via"
#: The header a released copy carries (:func:`igflow.quarantine.resend_rows`).
RELEASED_HEADER = "igflow.released.from"

_RETENTION = re.compile(r"^[a-z][a-z0-9]*-[0-9]+d$")
_RESIDENCY = re.compile(r"^[A-Z]+$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclasses.dataclass(frozen=True, slots=True)
class SourceEntry:
    """One source as registered."""

    name: str
    owners: tuple[str, ...]
    #: A subset of :data:`TRANSPORTS`, never empty.
    transports: tuple[str, ...]
    license: str
    #: Terms of service (a URL or a reference); ``""``: none recorded.
    tos: str
    #: The retention of what it sends, in the tags' form (``standard-365d``).
    retention: str
    #: ``""``: any residency; else a residency code (``US``, ``EU``).
    residency: str
    #: The SLA window: at most this many seconds between a record's event time and its Kafka
    #: timestamp; ``None``: no window.
    sla_seconds: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class Revision:
    """A source as from ``effective_from_ms`` (milliseconds since the epoch); ``entry`` ``None``:
    removed from then on."""

    effective_from_ms: int
    entry: SourceEntry | None


def check_entry(entry: SourceEntry) -> SourceEntry:
    """``entry`` itself, or :class:`~core.errors.ConfigError` naming what is wrong."""
    problems = []
    if not entry.name.strip():
        problems.append("the name is blank")
    if not entry.owners or any(not o.strip() for o in entry.owners):
        problems.append("at least one owner, none blank")
    if not entry.transports or any(t not in TRANSPORTS for t in entry.transports):
        problems.append(f"transports must be some of {', '.join(TRANSPORTS)}")
    if not entry.license.strip():
        problems.append("the license is blank")
    if not _RETENTION.match(entry.retention):
        problems.append("retention must look like standard-365d")
    if entry.residency and not _RESIDENCY.match(entry.residency):
        problems.append("residency must be upper-case letters (US, EU) or empty")
    if entry.sla_seconds is not None and not (
        math.isfinite(entry.sla_seconds) and entry.sla_seconds > 0
    ):
        problems.append("the SLA window must be a finite number of seconds > 0")
    if problems:
        msg = f"source {entry.name!r}: " + "; ".join(problems)
        raise ConfigError(msg)
    return entry


def as_of(revisions: Sequence[Revision], at_ms: int | None) -> SourceEntry | None:
    """The entry in force at ``at_ms`` among ``revisions`` (sorted by ``effective_from_ms``, ties
    in the order made); ``at_ms`` ``None`` (a record without a Kafka timestamp): the newest."""
    if not revisions:
        return None
    if at_ms is None:
        return revisions[-1].entry
    i = bisect.bisect_right(revisions, at_ms, key=lambda r: r.effective_from_ms)
    return revisions[i - 1].entry if i else None


class SourceRegistry(Protocol):
    """Answers which entry of a source was in force at a time."""

    def entry(self, name: str, at_ms: int | None) -> SourceEntry | None:
        """The source's entry at ``at_ms`` (see :func:`as_of`); ``None``: not registered."""
        ...


class StaticSources:
    """A fixed, in-memory :class:`SourceRegistry`: ``entries`` in force since the epoch, and
    ``revisions`` by name (tests; and the Postgres registry's loaded copy)."""

    def __init__(
        self,
        entries: Iterable[SourceEntry] = (),
        revisions: Mapping[str, Sequence[Revision]] | None = None,
    ) -> None:
        history: dict[str, list[Revision]] = {e.name: [Revision(0, e)] for e in entries}
        for name, revs in (revisions or {}).items():
            history.setdefault(name, []).extend(revs)
        self._history = {
            name: sorted(revs, key=lambda r: r.effective_from_ms) for name, revs in history.items()
        }

    def entry(self, name: str, at_ms: int | None) -> SourceEntry | None:
        revisions = self._history.get(name)
        return None if revisions is None else as_of(revisions, at_ms)


def transport_of(item: Decoded) -> str | None:
    """``api`` for a record the API's publish sent, ``kafka`` for any other; ``None`` for a
    copy re-sent by a release (its original transport is not known: not checked)."""
    raw = item.raw
    if raw is None or not raw.headers:
        return "kafka"
    if raw.header(RELEASED_HEADER) is not None:
        return None
    return "api" if raw.header(VIA_HEADER) is not None else "kafka"


def source_verdict(
    item: Decoded, registry: SourceRegistry, *, enforce: bool
) -> tuple[ReasonCode, str] | None:
    """``(reason, detail)`` when ``item`` breaks a rule of its source (module docstring), else
    ``None``. The detail names the rule, never a value from the record."""
    entry = registry.entry(item.signal.source, item.kafka_timestamp_ms)
    if entry is None:
        if enforce:
            return ReasonCode.SOURCE_UNREGISTERED, "source not registered"
        return None
    transport = transport_of(item)
    if transport is not None and transport not in entry.transports:
        return (
            ReasonCode.SOURCE_TRANSPORT_MISMATCH,
            f"transport {transport} not registered for the source",
        )
    if entry.sla_seconds is not None and item.kafka_timestamp_ms is not None:
        late_us = item.kafka_timestamp_ms * 1000 - (item.signal.ts - _EPOCH) // _MICROSECOND
        if late_us > round(entry.sla_seconds * 1e6):
            return ReasonCode.SOURCE_SLA_MISSED, "reached Kafka after the source's SLA window"
    return None


class SourceRules:
    """:func:`source_verdict` as a :class:`~core.switches.Holds`, for the validate step."""

    def __init__(self, registry: SourceRegistry, *, enforce: bool) -> None:
        self._registry = registry
        self._enforce = enforce

    def gate(self) -> Gate | None:
        return self.held

    def held(self, item: Decoded) -> tuple[ReasonCode, str] | None:
        return source_verdict(item, self._registry, enforce=self._enforce)
