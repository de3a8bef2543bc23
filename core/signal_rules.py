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
is a pure function of the record, the directory's answer and the settings. The API's publish
runs the same :func:`check` with the same settings, so the flow and the API agree on every rule.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from core.errors import ConfigError
from core.reasons import ReasonCode
from core.records import Decoded, RawRecord, Rejected, Signal
from core.settings import ValidateSettings
from core.switches import Holds
from core.tenants import TenantDirectory

__all__ = ["STAGE", "check", "check_settings", "hold"]

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


def hold(item: Decoded, holds: Holds) -> Decoded | Rejected:
    """``item`` itself, or its ``Rejected`` when ``holds`` holds it (a kill switch is off).

    Only records that passed :func:`check` reach it, so a released record is a valid one."""
    verdict = holds.held(item)
    if verdict is None:
        return item
    reason, detail = verdict
    return _reject(item, reason, detail)
