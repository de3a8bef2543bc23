"""The coalescing law, written the plain way: the oracle of the score's per-tick tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from core.records import Decoded, PolicyTags, Provenance, ScoreChange, Signal, Tagged
from core.settings import ScoreSettings
from operators.score import TenantScore

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def tick_of(at: datetime, tick_seconds: float) -> int:
    """The index of the tick of ``tick_seconds`` (aligned on the Unix epoch) holding ``at``."""
    return (at - _EPOCH) // timedelta(microseconds=round(tick_seconds * 1_000_000))


def last_of_each_tick(changes: Sequence[ScoreChange], tick_seconds: float) -> list[ScoreChange]:
    """One tenant's per-record changes reduced to the last of each tick of their ``updated_at``
    (every change when ``tick_seconds`` is 0)."""
    if not tick_seconds:
        return list(changes)
    last: dict[int, ScoreChange] = {}
    for change in changes:
        last[tick_of(change.updated_at, tick_seconds)] = change  # dicts keep first-insert order
    return list(last.values())


def reference_from_rows(
    rows: Iterable[dict[str, Any]], settings: ScoreSettings
) -> dict[str, list[ScoreChange]]:
    """Per tenant, the per-record changes of ``coherence.signals`` rows fed to
    :class:`TenantScore` in ``(kafka_partition, kafka_offset)`` order: the order the score step
    saw them when each tenant's records are in one partition (the producer keys by tenant)."""
    states: dict[str, TenantScore] = {}
    out: dict[str, list[ScoreChange]] = {}
    for r in sorted(rows, key=lambda r: (r["kafka_partition"], r["kafka_offset"])):
        signal = Signal(
            r["tenant_id"], r["signal_id"], r["type"], r["value"], r["weight"], r["source"], r["ts"]
        )
        provenance = Provenance(
            r["kafka_topic"],
            r["kafka_partition"],
            r["kafka_offset"],
            r["schema_version"],
            r["input_hash"],
        )
        tags = PolicyTags(r["purpose"], r["retention"], r["license"], r["residency"])
        item = Tagged(Decoded(signal, provenance), tags, r["policy_version"], r["provenance_id"])
        state = states.get(signal.tenant_id) or states.setdefault(
            signal.tenant_id, TenantScore(settings)
        )
        change = state.add(item)
        if change is not None:
            out.setdefault(signal.tenant_id, []).append(change)
    return out
