"""A deterministic synthetic workload of coherence signals.

The same :class:`WorkloadSpec` (seed included) always gives the same messages, byte for byte and
in the same order, so a test can compute exactly what must land. Tenants are interleaved round
robin; event time advances by ``step`` per signal of a tenant from a fixed start (never the wall
clock). Optional faults: exact duplicates (the same bytes re-sent), bad payloads (garbage,
truncated Avro, unknown schema id), and a drifted tenant whose values shift upward mid-stream.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from core.canary import CANARY_SOURCE
from core.wire import encode, frame
from tenancy.registry import seed_tenants

__all__ = [
    "BAD_KINDS",
    "INVALID_KINDS",
    "SOURCES",
    "Message",
    "WorkloadSpec",
    "generate",
    "recent_start",
    "seed_demo_tenants",
    "tenant_ids",
]

#: The kinds of bad payload, injected in turn.
BAD_KINDS = ("garbage", "truncated", "unknown_schema")
#: Records that decode but break a validate rule, injected in turn, with the reason expected.
INVALID_KINDS = {
    "value_out_of_range": "FIELD_INVALID",
    "negative_weight": "FIELD_INVALID",
    "empty_signal_id": "FIELD_INVALID",
    "unknown_tenant": "TENANT_UNKNOWN",
    "source_not_allowed": "SOURCE_NOT_ALLOWED",
    "future_ts": "TS_OUT_OF_RANGE",
}
#: A tenant no registry knows, and a source no tenant allows.
UNKNOWN_TENANT = "tenant-unknown"
ROGUE_SOURCE = "rogue-source"
#: A schema id no registry hands out in practice (ids count up from 1).
UNKNOWN_SCHEMA_ID = 2_000_000_000

_TYPES = ("latency", "consistency", "freshness", "completeness")
SOURCES = ("sensor-a", "sensor-b", "feed-c")


@dataclasses.dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What to generate. ``count`` is signals per tenant (before duplicates and bad records)."""

    tenants: int = 10
    count: int = 1000
    seed: int = 7
    #: Probability that a signal is followed by an exact re-send of an earlier one.
    duplicates: float = 0.0
    #: Number of bad payloads mixed in at deterministic positions.
    bad: int = 0
    #: Probability that a signal is followed by a record that decodes but is invalid
    #: (one of :data:`INVALID_KINDS`, in turn).
    invalid: float = 0.0
    #: Tenant index whose values drift upward from ``drift_from`` (a fraction of its signals).
    drift_tenant: int | None = None
    drift_from: float = 0.5
    drift_shift: float = 0.35
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    step: timedelta = timedelta(seconds=1)
    #: Add v2's ``selectors`` field (needs a v2 writer schema).
    selectors: bool = False
    #: Tenant ids are ``<prefix>-00``, ``<prefix>-01``, … (they must be in the tenant registry).
    tenant_prefix: str = "tenant"


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One Kafka message to produce; ``record`` is ``None`` for a bad payload."""

    key: bytes
    value: bytes
    record: dict[str, Any] | None
    #: ``"valid"``, ``"duplicate"``, one of :data:`BAD_KINDS` or ``"invalid:<kind>"`` with a
    #: key of :data:`INVALID_KINDS`.
    kind: str


def recent_start(now: datetime) -> datetime:
    """Midnight (UTC) of the day before ``now``: a start whose events are neither in the future
    nor older than the retention when produced now (the validate step checks both)."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=1)


def tenant_ids(n: int, prefix: str = "tenant") -> list[str]:
    """The tenant ids of a workload with ``n`` tenants."""
    return [f"{prefix}-{i:02d}" for i in range(n)]


def _record(
    spec: WorkloadSpec, rng: random.Random, tenant: str, t_index: int, i: int
) -> dict[str, Any]:
    value = min(1.0, max(0.0, rng.betavariate(8, 2)))
    if spec.drift_tenant == t_index and i >= int(spec.count * spec.drift_from):
        value = min(1.0, value + spec.drift_shift) if value < 0.6 else max(0.0, value - 0.6)
    record: dict[str, Any] = {
        "tenant_id": tenant,
        "signal_id": f"{tenant}-sig-{i:07d}",
        "type": _TYPES[i % len(_TYPES)],
        "value": round(value, 6),
        "weight": None if rng.random() < 0.1 else round(rng.uniform(0.5, 2.0), 3),
        "source": SOURCES[(i + t_index) % len(SOURCES)],
        "ts": spec.start + spec.step * i + timedelta(milliseconds=t_index),
    }
    if spec.selectors:
        record["selectors"] = [f"sel-{rng.randrange(10_000):05d}" for _ in range(rng.randrange(4))]
    return record


def _invalid(kind: str, record: dict[str, Any], n: int) -> dict[str, Any]:
    out = dict(record, signal_id=f"{record['tenant_id']}-inv-{n:07d}")
    if kind == "value_out_of_range":
        out["value"] = 1.5
    elif kind == "negative_weight":
        out["weight"] = -1.0
    elif kind == "empty_signal_id":
        out["signal_id"] = ""
    elif kind == "unknown_tenant":
        out["tenant_id"] = UNKNOWN_TENANT
    elif kind == "source_not_allowed":
        out["source"] = ROGUE_SOURCE
    else:  # future_ts: ten days ahead of any producer clock that sends this workload
        out["ts"] = record["ts"] + timedelta(days=10)
    return out


def _bad(kind: str, rng: random.Random, good: bytes) -> bytes:
    if kind == "garbage":
        # Never starts with the magic byte 0, so it is not mistaken for the wire format.
        return bytes([rng.randrange(1, 256)]) + rng.randbytes(rng.randrange(4, 64))
    if kind == "truncated":
        return good[: max(6, len(good) // 2)]
    return frame(UNKNOWN_SCHEMA_ID, good[5:])


def generate(
    spec: WorkloadSpec, schema_id: int, parsed_schema: dict[str, Any]
) -> Iterator[Message]:
    """The workload's messages, in production order."""
    rng = random.Random(spec.seed)
    tenants = tenant_ids(spec.tenants, spec.tenant_prefix)
    total = spec.tenants * spec.count
    bad_at = set(rng.sample(range(total), min(spec.bad, total))) if spec.bad else set()
    bad_extra = max(0, spec.bad - total)
    sent: list[Message] = []
    n = 0
    bad_n = 0
    invalid_n = 0
    invalid_kinds = list(INVALID_KINDS)
    for i in range(spec.count):
        for t_index, tenant in enumerate(tenants):
            record = _record(spec, rng, tenant, t_index, i)
            value = encode(schema_id, parsed_schema, record)
            message = Message(tenant.encode(), value, record, "valid")
            yield message
            sent.append(message)
            if n in bad_at:
                kind = BAD_KINDS[bad_n % len(BAD_KINDS)]
                bad_n += 1
                yield Message(tenant.encode(), _bad(kind, rng, value), None, kind)
            if spec.invalid and rng.random() < spec.invalid:
                kind = invalid_kinds[invalid_n % len(invalid_kinds)]
                bad_record = _invalid(kind, record, invalid_n)
                invalid_n += 1
                yield Message(
                    tenant.encode(),
                    encode(schema_id, parsed_schema, bad_record),
                    bad_record,
                    f"invalid:{kind}",
                )
            if spec.duplicates and rng.random() < spec.duplicates:
                again = sent[rng.randrange(max(0, len(sent) - 50), len(sent))]
                yield dataclasses.replace(again, kind="duplicate")
            n += 1
    for _ in range(bad_extra):
        kind = BAD_KINDS[bad_n % len(BAD_KINDS)]
        bad_n += 1
        yield Message(b"bad", _bad(kind, rng, sent[-1].value if sent else b"\0" * 8), None, kind)


def seed_demo_tenants(dsn: str, count: int = 10) -> list[str]:
    """Register the demo workload's tenants (``tenant-00`` ...), each accepting the workload's
    sources and the probe's canaries (``igflow probe``); returns the ids newly registered. A
    demo tenant an operator has changed keeps those changes when ``igflow setup`` runs again."""
    return seed_tenants(dsn, tenant_ids(count), (*SOURCES, CANARY_SOURCE))
