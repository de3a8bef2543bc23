"""The signal rules: field, event-time and tenant checks on a decoded signal, shared by the
flow's validate step (``operators/validate.py``) and the API's publish.

Contract: every input record comes out exactly once, either unchanged on ``oks`` or as
``Rejected`` (stage ``validate``) on ``errs``. The rules run in this fixed order and the first
that fails decides the reason code:

1. fields (``FIELD_INVALID``): first the contract's size limits (``ValidateSettings``, UTF-8
   bytes): ``tenant_id`` and ``signal_id`` at most ``max_id_bytes``, ``type`` at most
   ``max_type_bytes``, ``source`` at most ``max_source_bytes``, at most ``max_selectors``
   selectors of at most ``max_selector_bytes`` each; then, in the contract's order:
   ``tenant_id``, ``signal_id``, ``type`` not blank (after stripping white space); ``value``
   finite and in [0, 1]; ``weight`` null or finite and >= 0 (``-0.0`` counts as 0); ``source``
   not blank; ``ts`` time-zone aware; no NUL character in any string field or selector (no
   serving store can keep it faithfully);
2. event time (``TS_OUT_OF_RANGE``): ``ts`` at most ``max_future_skew_seconds`` after the
   record's Kafka timestamp and at most ``max_age_seconds`` before it, both bounds inclusive.
   Measured against the Kafka timestamp (part of the input), never the wall clock, so a replay
   decides exactly as the first run did; a record without a Kafka timestamp skips this rule;
3. tenant (``TENANT_UNKNOWN``): ``tenant_id`` registered and active;
4. source (``SOURCE_NOT_ALLOWED``): ``source`` among the tenant's sources, when it lists some.

The flow's validate step then applies :func:`hold` with the source registry's rules
(:mod:`core.sources`: ``SOURCE_UNREGISTERED``, ``SOURCE_TRANSPORT_MISMATCH``,
``SOURCE_SLA_MISSED``, when ``sources.mode`` is not ``off``), then with the holds (kill switches,
``SOURCE_DISABLED`` / ``TENANT_DISABLED``; residency, ``RESIDENCY_BLOCKED``) to what passed; the
API's publish does neither, so such records reach Kafka and are refused or held there.

A reject's ``detail`` names the field and the rule, never a value from the record. :func:`check`
is a pure function of the record, the directory's answer and the settings.

:func:`check_batch` is the batch path (issue 15): the same rules over a batch's columns, at C
speed (``map`` over a column, numpy over the numbers), which clear the records that pass every
rule at once; a record they cannot clear is decided by :func:`check` itself, the reference, so
every reject, its reason code and its detail are :func:`check`'s. For any batch its result is
``[check(item) for item in batch]`` (``tests/unit/test_validate.py``), with one difference in
timing only: the tenant directory is asked once per tenant per batch, not once per record. The
API's publish runs the same :func:`check` with the same settings, so the flow and the API agree
on every rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from operator import attrgetter

import numpy as np

from core.errors import ConfigError
from core.reasons import ReasonCode
from core.records import Decoded, RawRecord, Rejected, Signal
from core.settings import ValidateSettings
from core.switches import Holds
from core.tenants import TenantDirectory

__all__ = ["STAGE", "check", "check_batch", "check_settings", "hold", "refusal"]

STAGE = "validate"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _over(text: str, limit: int) -> bool:
    """Whether ``text`` takes more than ``limit`` bytes in UTF-8 (without encoding short ones)."""
    n = len(text)
    if n <= limit // 4:  # a code point takes at most 4 bytes
        return False
    if n > limit:
        return True
    return len(text.encode("utf-8", "surrogatepass")) > limit


def _size_problem(s: Signal, settings: ValidateSettings) -> str | None:
    id_quarter = settings.max_id_bytes // 4
    if (  # the common case, decided without encoding anything
        len(s.tenant_id) > id_quarter
        or len(s.signal_id) > id_quarter
        or len(s.type) > settings.max_type_bytes // 4
        or len(s.source) > settings.max_source_bytes // 4
    ):
        for name, text, limit, setting in (
            ("tenant_id", s.tenant_id, settings.max_id_bytes, "max_id_bytes"),
            ("signal_id", s.signal_id, settings.max_id_bytes, "max_id_bytes"),
            ("type", s.type, settings.max_type_bytes, "max_type_bytes"),
            ("source", s.source, settings.max_source_bytes, "max_source_bytes"),
        ):
            if _over(text, limit):
                return f"{name} longer than validate.{setting} ({limit} bytes)"
    selectors = s.selectors
    if selectors:
        if len(selectors) > settings.max_selectors:
            return f"more than validate.max_selectors ({settings.max_selectors}) selectors"
        limit = settings.max_selector_bytes
        if max(map(len, selectors)) > limit // 4 and any(_over(x, limit) for x in selectors):
            return f"a selector longer than validate.max_selector_bytes ({limit} bytes)"
    return None


def check_settings(settings: ValidateSettings) -> None:
    """Raise :class:`~core.errors.ConfigError` for size limits below 1."""
    small = [
        f"{name} must be >= 1, got {getattr(settings, name)}"
        for name in _LIMITS
        if getattr(settings, name) < 1
    ]
    if small:
        msg = "invalid validate settings: " + "; ".join(small)
        raise ConfigError(msg)


_LIMITS = (
    "max_id_bytes",
    "max_type_bytes",
    "max_source_bytes",
    "max_selectors",
    "max_selector_bytes",
)


def _field_problem(item: Decoded, settings: ValidateSettings) -> str | None:
    s = item.signal
    problem = _size_problem(s, settings)
    if problem is not None:
        return problem
    if not s.tenant_id.strip():
        return "tenant_id is blank"
    if not s.signal_id.strip():
        return "signal_id is blank"
    if not s.type.strip():
        return "type is blank"
    if not math.isfinite(s.value):
        return "value is not finite"
    if not 0.0 <= s.value <= 1.0:
        return "value out of [0, 1]"
    if s.weight is not None:
        if not math.isfinite(s.weight):
            return "weight is not finite"
        if s.weight < 0.0:
            return "weight is negative"
    if not s.source.strip():
        return "source is blank"
    if s.ts.utcoffset() is None:
        return "ts has no time zone"
    # Unrolled (no tuple of pairs and no generator per record), in the contract's field order.
    if "\x00" in s.tenant_id:
        return "tenant_id contains NUL"
    if "\x00" in s.signal_id:
        return "signal_id contains NUL"
    if "\x00" in s.type:
        return "type contains NUL"
    if "\x00" in s.source:
        return "source contains NUL"
    if s.selectors and any("\x00" in selector for selector in s.selectors):
        return "a selector contains NUL"
    return None


def _time_problem(item: Decoded, settings: ValidateSettings) -> str | None:
    if item.kafka_timestamp_ms is None:
        return None
    # Whole microseconds, so "exactly at the bound" is exact (no float rounding).
    ts_us = (item.signal.ts - _EPOCH) // _MICROSECOND
    kafka_us = item.kafka_timestamp_ms * 1000
    if ts_us - kafka_us > round(settings.max_future_skew_seconds * 1e6):
        return "ts more than max_future_skew_seconds after the Kafka timestamp"
    if kafka_us - ts_us > round(settings.max_age_seconds * 1e6):
        return "ts more than max_age_seconds before the Kafka timestamp"
    return None


def _reject(item: Decoded, reason: ReasonCode, detail: str) -> Rejected:
    raw = item.raw
    if raw is None:
        p = item.provenance
        raw = RawRecord(
            p.topic, p.kafka_partition, p.kafka_offset, None, None, item.kafka_timestamp_ms
        )
    return Rejected(
        reason,
        detail,
        raw,
        stage=STAGE,
        tenant_id=item.signal.tenant_id or None,
        schema_version=item.provenance.schema_version,
    )


def check(
    item: Decoded, tenants: TenantDirectory, settings: ValidateSettings
) -> Decoded | Rejected:
    """``item`` itself if it passes every rule, else its ``Rejected`` (see the module docstring)."""
    problem = _field_problem(item, settings)
    if problem is not None:
        return _reject(item, ReasonCode.FIELD_INVALID, problem)
    problem = _time_problem(item, settings)
    if problem is not None:
        return _reject(item, ReasonCode.TS_OUT_OF_RANGE, problem)
    entry = tenants.get(item.signal.tenant_id)
    if entry is None:
        return _reject(item, ReasonCode.TENANT_UNKNOWN, "tenant not registered")
    if not entry.active:
        return _reject(item, ReasonCode.TENANT_UNKNOWN, "tenant inactive")
    if entry.sources is not None and item.signal.source not in entry.sources:
        return _reject(item, ReasonCode.SOURCE_NOT_ALLOWED, "source not allowed for the tenant")
    return item


#: Below this many records a batch is checked record by record: numpy's fixed cost per call
#: outweighs what the columns save.
_COLUMNAR_MIN = 16

#: How far (µs) a record's event time must stay inside a bound for the columns' float
#: arithmetic to clear it; closer to a bound, :func:`check`'s exact integers decide.
_MARGIN_US = 1000.0

_SIGNAL = attrgetter("signal")
_KAFKA_MS = attrgetter("kafka_timestamp_ms")
_TENANT_ID = attrgetter("tenant_id")
_SIGNAL_ID = attrgetter("signal_id")
_TYPE = attrgetter("type")
_SOURCE = attrgetter("source")
_SELECTORS = attrgetter("selectors")
_VALUE = attrgetter("value")
_WEIGHT = attrgetter("weight")
_TS = attrgetter("ts")
_TZINFO = attrgetter("tzinfo")

#: The types a value or weight may have for the columns to judge it.
_NUMBERS = frozenset({float, int})


def check_batch(
    items: Sequence[Decoded], tenants: TenantDirectory, settings: ValidateSettings
) -> list[Decoded | Rejected]:
    """``[check(item, tenants, settings) for item in items]``, a batch at a time.

    The batch's columns clear the records that pass every rule; :func:`check` decides the
    others (see the module docstring). Each tenant of the batch is looked up once."""
    n = len(items)
    if n < _COLUMNAR_MIN:
        return [check(item, tenants, settings) for item in items]
    try:
        suspects = _suspects(items, tenants, settings)
    except (TypeError, ValueError, OverflowError, OSError):
        # A field of an unexpected type or range: the reference decides every record.
        return [check(item, tenants, settings) for item in items]
    out: list[Decoded | Rejected] = list(items)
    for i in np.flatnonzero(suspects).tolist():
        out[i] = check(items[i], tenants, settings)
    return out


def _text_suspects(column: list[str], quarter: int, n: int) -> np.ndarray | None:
    """Records whose string in ``column`` the columns cannot clear (maybe over its size limit,
    blank or holding a NUL), or ``None`` when they clear every record: one C-speed pass per
    test over the column, and a pass per record only for a column that failed one."""
    if (
        max(map(len, column)) <= quarter
        and all(column)
        and not any(map(str.isspace, column))
        and "\x00" not in "".join(column)
    ):
        return None
    return np.fromiter(
        (len(x) > quarter or not x or x.isspace() or "\x00" in x for x in column), bool, n
    )


def _suspects(
    items: Sequence[Decoded], tenants: TenantDirectory, settings: ValidateSettings
) -> np.ndarray:
    """Per record: ``True`` unless the columns show it passes every rule of :func:`check`.

    Each test only ever clears a record the reference passes (a shorter string than a quarter
    of its byte limit is within it; a non-empty string that is not all white space is not
    blank; a value in [0, 1] by numpy's comparisons is finite and in range; an event time 1 ms
    inside both bounds in floats is inside them in exact microseconds)."""
    n = len(items)
    signals = list(map(_SIGNAL, items))
    suspect = np.zeros(n, dtype=bool)
    id_quarter = settings.max_id_bytes // 4
    tenant_ids = list(map(_TENANT_ID, signals))
    sources = list(map(_SOURCE, signals))
    for column, quarter in (
        (tenant_ids, id_quarter),
        (list(map(_SIGNAL_ID, signals)), id_quarter),
        (list(map(_TYPE, signals)), settings.max_type_bytes // 4),
        (sources, settings.max_source_bytes // 4),
    ):
        found = _text_suspects(column, quarter, n)
        if found is not None:
            suspect |= found
    selectors = list(map(_SELECTORS, signals))
    if any(selectors):
        most, quarter = settings.max_selectors, settings.max_selector_bytes // 4
        suspect |= np.fromiter(
            (
                bool(sel)
                and (len(sel) > most or max(map(len, sel)) > quarter or "\x00" in "".join(sel))
                for sel in selectors
            ),
            bool,
            n,
        )
    numbers = list(map(_VALUE, signals))
    weighted = list(map(_WEIGHT, signals))
    if None in weighted:
        weighted = [0.0 if w is None else w for w in weighted]
    if not set(map(type, numbers)).union(map(type, weighted)) <= _NUMBERS:
        # numpy would read a string as a number; the reference decides such a batch.
        msg = "a value or weight that is not a number"
        raise TypeError(msg)
    values = np.array(numbers, dtype=np.float64)
    weights = np.array(weighted, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        suspect |= ~((values >= 0.0) & (values <= 1.0))
        suspect |= ~(np.isfinite(weights) & (weights >= 0.0))
    times = list(map(_TS, signals))
    zones = list(map(_TZINFO, times))
    if zones.count(UTC) != n:
        suspect |= np.fromiter((t.utcoffset() is None for t in times), bool, n)
        if suspect.all():
            return suspect
        # A naive time is a suspect already; its timestamp() would read the local zone.
        times = [t if t.tzinfo is not None else _EPOCH for t in times]
    stamps = list(map(_KAFKA_MS, items))
    if None in stamps:
        nan = math.nan
        stamps = [nan if k is None else k for k in stamps]
    kafka_us = np.array(stamps, dtype=np.float64) * 1000.0
    ts_us = np.array(list(map(datetime.timestamp, times)), dtype=np.float64) * 1e6
    ahead = round(settings.max_future_skew_seconds * 1e6) - _MARGIN_US
    behind = round(settings.max_age_seconds * 1e6) - _MARGIN_US
    with np.errstate(invalid="ignore"):
        skew = ts_us - kafka_us
        in_time = np.isnan(kafka_us) | ((skew <= ahead) & (-skew <= behind))
    suspect |= ~in_time
    # The tenant rules, each tenant asked once: any source of an open tenant, or the listed
    # (tenant, source) pairs of a tenant that lists its sources.
    open_tenants: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for tenant in set(tenant_ids):
        entry = tenants.get(tenant)
        if entry is None or not entry.active:
            continue
        if entry.sources is None:
            open_tenants.add(tenant)
        else:
            pairs.update((tenant, source) for source in entry.sources)
    allowed = np.zeros(n, dtype=bool)
    if open_tenants:
        allowed |= np.fromiter(map(open_tenants.__contains__, tenant_ids), bool, n)
    if pairs:
        allowed |= np.fromiter(
            map(pairs.__contains__, zip(tenant_ids, sources, strict=True)), bool, n
        )
    suspect |= ~allowed
    return suspect


def hold(item: Decoded, holds: Holds) -> Decoded | Rejected:
    """``item`` itself, or its ``Rejected`` when ``holds`` holds it (a kill switch is off).

    Only records that passed :func:`check` reach it, so a released record is a valid one."""
    verdict = holds.held(item)
    if verdict is None:
        return item
    return refusal(item, verdict)


def refusal(item: Decoded, verdict: tuple[ReasonCode, str]) -> Rejected:
    """The ``Rejected`` of ``item``, held by a :class:`~core.switches.Holds` whose ``held``
    gave ``verdict`` (what :func:`hold` returns for it)."""
    reason, detail = verdict
    return _reject(item, reason, detail)
