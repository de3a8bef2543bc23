"""The coalescing law, written the plain way: the oracle of the score's per-tick tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from core.records import ScoreChange

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
