"""Group commit: the batches a process's workers hand one lake table at the same time go into
one Iceberg append.

Each worker's sink partition used to append what reached it, so ``-w 2`` made about twice the
appends of one worker (27 against 66-70 a run, each a fixed pyiceberg cost that grows with the
table's metadata, and a ``-w 2`` commit waited for the GIL the other worker held). Here a worker
that finds another's append in progress waits for it, and the next append takes every batch
that waited: one append for all of them, made by one of the waiting workers.

Order and exactly-once are those of one worker's appends: :meth:`GroupCommit.submit` returns
only once the rows it was given are committed (or raises what the append raised), so a worker
hands its next batch, and with it a lane's newer rows, only after its older ones landed; a lane
is batched on one worker (:func:`flows.coherence.land`). The append itself filters by the
ledger as before, whatever lanes it holds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")


class _Waiting(Generic[T]):
    __slots__ = ("done", "error", "rows")

    def __init__(self, rows: Sequence[T]) -> None:
        self.rows = rows
        self.done = False
        self.error: BaseException | None = None


class GroupCommit(Generic[T]):
    """One table's appends for the threads (workers) of a process."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: list[_Waiting[T]] = []
        self._busy = False
        #: Appends made and batches given (for tests and benchmarks).
        self.appends = 0
        self.batches = 0

    def submit(self, rows: Sequence[T], append: Callable[[list[T]], object]) -> None:
        """Append ``rows`` with ``append``, together with the rows other threads submit
        meanwhile; return once they are committed, or raise what the append raised."""
        mine = _Waiting(rows)
        with self._cond:
            self._waiting.append(mine)
            while not mine.done:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy = True
                taken, self._waiting = self._waiting, []
                error: BaseException | None = None
                self._cond.release()
                try:
                    append([row for waiting in taken for row in waiting.rows])
                except BaseException as exc:  # every taken batch's worker raises it
                    error = exc
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self.appends += 1
                    self.batches += len(taken)
                    for waiting in taken:
                        waiting.done = True
                        waiting.error = error
                    self._cond.notify_all()
        if mine.error is not None:
            raise mine.error
