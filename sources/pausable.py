"""A source that stops reading while a switch says so (``igflow switch off flow coherence``).

:class:`PausableSource` wraps any partitioned source. While ``paused()`` answers true, each of
its partitions emits nothing and asks to be woken ``check_every`` later, without touching the
inner partition: no record is read, so none can be lost or skipped, and the resume state stays
the inner partition's. When ``paused()`` answers false again, reading goes on where it stopped.
A bounded run that is paused does not end until it is switched back on.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

__all__ = ["PausableSource"]

X = TypeVar("X")
S = TypeVar("S")


class _Partition(StatefulSourcePartition[X, S], Generic[X, S]):
    def __init__(
        self,
        inner: StatefulSourcePartition[X, S],
        paused: Callable[[], bool],
        check_every: timedelta,
    ) -> None:
        self._inner = inner
        self._paused = paused
        self._check_every = check_every
        self._was_paused = False

    def next_batch(self) -> list[X]:
        self._was_paused = self._paused()
        if self._was_paused:
            return []
        return list(self._inner.next_batch())

    def next_awake(self) -> datetime | None:
        if self._was_paused:
            return datetime.now(UTC) + self._check_every
        return self._inner.next_awake()

    def snapshot(self) -> S:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class PausableSource(FixedPartitionedSource[X, S], Generic[X, S]):
    """``inner``, read only while ``paused()`` is false (asked before every batch)."""

    def __init__(
        self,
        inner: FixedPartitionedSource[X, S],
        paused: Callable[[], bool],
        check_every: timedelta = timedelta(milliseconds=200),
    ) -> None:
        self._inner = inner
        self._paused = paused
        self._check_every = check_every

    def list_parts(self) -> list[str]:
        return self._inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: S | None) -> _Partition[X, S]:
        inner = self._inner.build_part(step_id, for_part, resume_state)
        return _Partition(inner, self._paused, self._check_every)
