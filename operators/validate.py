"""validate: the signal rules (:mod:`core.signal_rules`) as a step.

Contract: every input record comes out exactly once, either unchanged on ``oks`` or as
``Rejected`` (stage ``validate``) on ``errs``; the rules, their order and their reason codes are
:func:`core.signal_rules.check`'s. The API's publish runs the same check with the same settings,
so the flow and the API agree on every rule.
"""

from __future__ import annotations

import dataclasses
import time

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from core import tracing
from core.metrics import REJECTED
from core.records import Decoded, Rejected
from core.settings import ValidateSettings
from core.signal_rules import STAGE, check, check_batch, check_settings, hold
from core.switches import Holds, StaticSwitches, SwitchHolds
from core.tenants import StaticTenants, TenantDirectory, TenantEntry
from operators.split import split

__all__ = [
    "StaticTenants",
    "TenantDirectory",
    "TenantEntry",
    "ValidateOut",
    "check",
    "check_batch",
    "check_settings",
    "validate",
]

#: The metric label of a tenant the registry does not know: ids from the input must not become
#: label values (an unbounded, attacker-chosen set).
_UNREGISTERED = "(unregistered)"


@dataclasses.dataclass(frozen=True)
class ValidateOut:
    """The two streams out of :func:`validate`."""

    oks: Stream[Decoded]
    errs: Stream[Rejected]


@operator
def validate(
    step_id: str,
    up: Stream[Decoded],
    tenants: TenantDirectory,
    settings: ValidateSettings,
    holds: Holds | None = None,
    sources: Holds | None = None,
) -> ValidateOut:
    """Apply :func:`check`, then the source registry's rules (``sources``, a
    :class:`~core.sources.SourceRules`; ``None``: no registry), then the holds (``holds``: kill
    switches and residency; ``None``: every switch on) through :func:`~core.signal_rules.hold`,
    to every record; rejects and held records leave on ``errs`` and
    are counted in ``igflow_rejected_total{stage="validate"}`` (an unregistered tenant as
    ``(unregistered)``). Raises :class:`~core.errors.ConfigError` for unusable size limits, at
    build time."""
    check_settings(settings)
    switches = holds if holds is not None else SwitchHolds(StaticSwitches())

    def held(item: Decoded, out: Decoded | Rejected) -> Decoded | Rejected:
        """What the rules let through, past the source registry's and the switches' holds;
        a reject counted."""
        if sources is not None and not isinstance(out, Rejected):
            out = hold(out, sources)
        if not isinstance(out, Rejected):
            out = hold(out, switches)
        if isinstance(out, Rejected):
            tenant = item.signal.tenant_id
            label = tenant if tenants.get(tenant) is not None else _UNREGISTERED
            REJECTED.labels(STAGE, out.reason, label).inc()
        return out

    def counted(item: Decoded) -> Decoded | Rejected:
        start = 0 if item.trace is None else time.time_ns()
        out = held(item, check(item, tenants, settings))
        if start:
            error = out.reason.value if isinstance(out, Rejected) else None
            tracing.record_stage(STAGE, item, start, error=error)
        return out

    def checked(batch: list[Decoded]) -> list[Decoded | Rejected]:
        # The batch's columns clear what passes the rules (check_batch); holds, metrics and
        # tracing then go record by record, as `counted` does for a traced record.
        results = check_batch(batch, tenants, settings)
        for i, (item, out) in enumerate(zip(batch, results, strict=True)):
            results[i] = counted(item) if item.trace is not None else held(item, out)
        return results

    results = op.flat_map_batch("check", up, checked)
    oks, errs = split("split", results, Decoded, Rejected)
    return ValidateOut(oks, errs)
