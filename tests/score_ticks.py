"""The coalescing law, written the plain way: the oracle of the score's per-tick tests."""

from __future__ import annotations

import dataclasses
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


def with_horizons(items: Sequence[Tagged], ahead_ms: Sequence[int | None]) -> list[Tagged]:
    """``items`` with a drift horizon on those whose ``ahead_ms`` is not ``None``: the newest
    ``ts`` up to that item plus ``ahead_ms`` (the drift step's event time is at least every
    ``ts`` it let out, and may be ahead of them by the records it still holds)."""
    out: list[Tagged] = []
    newest: datetime | None = None
    for item, ahead in zip(items, ahead_ms, strict=True):
        ts = item.signal.ts
        newest = ts if newest is None or ts > newest else newest
        if ahead is not None:
            d = item.decoded
            decoded = dataclasses.replace(d, horizon=newest + timedelta(milliseconds=ahead))
            item = dataclasses.replace(item, decoded=decoded)
        out.append(item)
    return out


def closed_by_horizons(
    items: Sequence[Tagged], settings: ScoreSettings
) -> tuple[list[list[ScoreChange]], list[ScoreChange]]:
    """The horizon law, the plain way: what the score step publishes after each item, and at
    the end of input (``settings.close_on = "horizon"``; tick 0: every change at once).

    Each change of the per-record stream belongs to the tick ``max(tick(W), first open tick)``
    (``W``: the tenant's event time after its signal); the first open tick is the one after the
    last published. The open tick's change (the last change that belongs to it) is published
    after the item that moves ``tick(W)`` past it, or after an item whose horizon ``H`` is not
    before it (``tick <= tick(H)``: the drift release it ended let out that tick's records so
    far), whichever comes first; else at the end of input."""
    tick_seconds = settings.tick_seconds
    state = TenantScore(dataclasses.replace(settings, tick_seconds=0.0))
    per_item: list[list[ScoreChange]] = [[] for _ in items]
    first_open: int | None = None
    pending: tuple[int, ScoreChange] | None = None
    for n, item in enumerate(items):
        change = state.add(item)
        if not tick_seconds:
            per_item[n] += [] if change is None else [change]
            continue
        w = state.updated_at
        assert w is not None
        now = tick_of(w, tick_seconds)
        if pending is not None and now > pending[0]:
            per_item[n].append(pending[1])
            first_open, pending = pending[0] + 1, None
        if change is not None:
            pending = (now if first_open is None else max(now, first_open), change)
        h = item.decoded.horizon
        if pending is not None and h is not None and pending[0] <= tick_of(h, tick_seconds):
            per_item[n].append(pending[1])
            first_open, pending = pending[0] + 1, None
    return per_item, [] if pending is None else [pending[1]]
