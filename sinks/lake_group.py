"""Group commit: the batches a process's workers hand one lake table at the same time go into
one Iceberg append.

Each worker's sink partition used to append what reached it, so ``-w 2`` made about twice the
appends of one worker (27 against 66-70 a run, each a fixed pyiceberg cost that grows with the
table's metadata, and a ``-w 2`` commit waited for the GIL the other worker held). Here a worker
that finds another's append in progress waits for it, and the next append takes every batch
that waited: one append for all of them, made by one of the waiting workers. An append also
waits a little (:data:`LINGER_SECONDS`) for the workers that have not handed a batch yet: without
it, two workers' batches met in one append rarely (64-70 appends a run against 27-42).

Order and exactly-once are those of one worker's appends: :meth:`GroupCommit.submit` returns
only once the rows it was given are committed (or raises what the append raised), so a worker
hands its next batch, and with it a lane's newer rows, only after its older ones landed; a lane
is batched on one worker (:func:`flows.coherence.land`). The append itself filters by the
ledger as before, whatever lanes it holds.
"""

from __future__ import annotations

import threading
import time
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


#: How long an append waits for the process's other workers' batches (they fill at about the
#: same pace: the tenants are interleaved). A waiting worker releases the GIL, so with ``-w 2``
#: the other runs alone meanwhile; the lake's latency is seconds (``lake.batch_max_seconds``).
LINGER_SECONDS = 0.1


class GroupCommit(Generic[T]):
    """One table's appends for the ``workers`` threads (workers) of a process: an append waits
    up to ``linger`` seconds for each of them to hand a batch (none with one worker)."""

    def __init__(self, workers: int = 1, linger: float = LINGER_SECONDS) -> None:
        self._workers = workers
        self._linger = linger
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
            self._cond.notify_all()  # a lingering append counts the batches waiting
            while not mine.done:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy = True
                until = time.monotonic() + self._linger
                while len(self._waiting) < self._workers:
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
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
