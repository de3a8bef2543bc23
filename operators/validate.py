"""validate: the signal rules (:mod:`core.signal_rules`) as a step.

Contract: every input record comes out exactly once, either unchanged on ``oks`` or as
``Rejected`` (stage ``validate``) on ``errs``; the rules, their order and their reason codes are
:func:`core.signal_rules.check`'s. The API's publish runs the same check with the same settings,
so the flow and the API agree on every rule.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import UTC

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from core import _native, tracing
from core.metrics import REJECTED
from core.reasons import ReasonCode
from core.records import Decoded, Rejected, Signal
from core.settings import ValidateSettings
from core.signal_rules import STAGE, check, check_batch, check_settings, hold, refusal
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
    "validate_batch",
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
    checked = validate_batch(tenants, settings, holds, sources)
    results = op.flat_map_batch("check", up, checked)
    oks, errs = split("split", results, Decoded, Rejected)
    return ValidateOut(oks, errs)


#: The slots validate's C loop reads (``core/_native.c`` validate_run), in its order.
_DECODED_SLOTS = tuple(Decoded.__dict__[name] for name in ("signal", "kafka_timestamp_ms", "trace"))
_SIGNAL_SLOTS = tuple(
    Signal.__dict__[name]
    for name in ("tenant_id", "signal_id", "type", "value", "weight", "source", "ts", "selectors")
)
#: The C loop's integers are 64-bit: a limit beyond this decides as this does (a string's bytes
#: and two event times' distance in µs, from a Kafka time the loop reads up to ±4e15 ms, stay
#: far inside).
_BOUND = 1 << 62


def _limits(settings: ValidateSettings) -> tuple[int, ...] | None:
    """validate_run's limits (``core/_native.c``), or ``None`` where settings hold something the
    C loop does not take (the reference decides the batch, and names what is wrong)."""
    try:
        sizes = [getattr(settings, name) for name in _SIZE_LIMITS]
        bounds = [
            round(settings.max_future_skew_seconds * 1e6),
            round(settings.max_age_seconds * 1e6),
        ]
    except (TypeError, ValueError, OverflowError):
        return None
    if not all(type(x) is int for x in (*sizes, *bounds)):
        return None
    return tuple(max(-_BOUND, min(_BOUND, x)) for x in (*sizes, *bounds))


_SIZE_LIMITS = (
    "max_id_bytes",
    "max_type_bytes",
    "max_source_bytes",
    "max_selectors",
    "max_selector_bytes",
)


def validate_batch(
    tenants: TenantDirectory,
    settings: ValidateSettings,
    holds: Holds | None = None,
    sources: Holds | None = None,
    *,
    native: bool = True,
) -> Callable[[list[Decoded]], list[Decoded | Rejected]]:
    """The step's batch function: each record of a batch as :func:`validate` decides it (the
    rules, the source registry's holds, the switches' holds, the reject metric, tracing).

    ``native`` (the flow's): a record the rules surely pass, untraced, goes through a C loop
    (``core/_native.c`` validate_run) that reads its fields from the slots, checks them in
    :func:`check`'s order and asks the holds in order; any other record (a rule it may break,
    a field of another type, a traced one) is decided by the Python step itself, so every
    reject, reason, detail and metric is the reference's. ``native=False`` is that reference:
    :func:`check_batch`, then the holds, record by record (``tests/unit/test_validate_native.py``
    compares the two)."""
    switches = holds if holds is not None else SwitchHolds(StaticSwitches())

    def counted_reject(item: Decoded, out: Rejected) -> Rejected:
        tenant = item.signal.tenant_id
        label = tenant if tenants.get(tenant) is not None else _UNREGISTERED
        REJECTED.labels(STAGE, out.reason, label).inc()
        return out

    def held(item: Decoded, out: Decoded | Rejected) -> Decoded | Rejected:
        """What the rules let through, past the source registry's and the switches' holds;
        a reject counted."""
        if sources is not None and not isinstance(out, Rejected):
            out = hold(out, sources)
        if not isinstance(out, Rejected):
            out = hold(out, switches)
        if isinstance(out, Rejected):
            return counted_reject(item, out)
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

    limits = _limits(settings)  # frozen settings: once, not per batch
    if not native or limits is None:
        return checked
    asked = tuple(h for h in (sources, switches) if h is not None)

    def refused(item: Decoded, verdict: tuple[ReasonCode, str]) -> Rejected:
        return counted_reject(item, refusal(item, verdict))

    def checked_native(batch: list[Decoded]) -> list[Decoded | Rejected]:
        # The holds that can hold something now, asked once per batch (a switch turned off
        # holds from the next batch on, as it did from the next record).
        gates = tuple(g for g in (h.gate() for h in asked) if g is not None)
        return _native.validate_run(
            batch if isinstance(batch, list) else list(batch),
            _DECODED_SLOTS,
            _SIGNAL_SLOTS,
            limits,
            UTC,
            tenants.get,
            gates,
            counted,
            refused,
        )

    return checked_native
