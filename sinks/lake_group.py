"""Group commit off the worker's thread: one writer thread per lake table and process appends
the batches the process's workers hand it, several at a time.

Off the worker (session 14): the Parquet write and the Iceberg commit (signals ~0.07 s, scores
~0.035 s a commit) ran on the Bytewax worker's thread, so the serving stores' items and the
next records waited behind every commit (3.5-4.7 s of each 40 s latency run at 5,000
events/s). Now :meth:`GroupCommit.submit` queues a batch and returns; the table's writer thread
appends it. What a crash before the commit would lose is kept by the collect that emitted the
batch until :meth:`~core.handed.Handed.ack` (called here once the commit succeeded): its
recovery snapshot holds the batch, and a resumed collect emits it again first
(:mod:`operators.collect`); the ledger skips what did commit.

Grouping: the writer takes every batch queued when it starts an append (one append for all of
them), after waiting a little (:data:`LINGER_SECONDS`) for the workers that have not handed a
batch yet when the process has more than one: without it, two workers' batches met in one
append rarely (64-70 appends a run against 27-42). It does not wait while a worker is blocked
in :meth:`GroupCommit.submit` for room (the bound below): that worker's batch cannot come
before an append, and the other workers' may not come at all (their lanes' batches close on
the commit grid). Until session 29 it did: a `-w 2` run over partitions of unequal size spent
2.4 s of its ~6.7 s with the busy worker blocked and the writer lingering 0.1 s an append.

Order: one thread per table and process, first in first out, so a lane's batches (a lane is
batched on one worker: :func:`flows.coherence.land`) are appended in the order its collect
emitted them, which the ledger needs (it skips rows at or below what a lane committed). An
append that fails stops the writer: nothing queued after it is appended (a later batch landing
before an earlier one would make the ledger skip the earlier one's rows for good).

One at a time (``merge=False``, a replay's planned commits: each must be its own snapshot, the
original's): the writer appends each batch on its own, in the order handed, without lingering;
the worker still goes on while it does (a replay has no recovery store, so nothing in flight
needs a snapshot; its end waits for every commit). Measured in session 17 with the replay
benchmark (README, "Session 17 end").

Bounds: at most ``in_flight`` batches of ``batch_rows`` rows (``lake.in_flight`` batches of
``lake.batch_max_rows``) queued or being appended; :meth:`GroupCommit.submit` blocks the worker
while the rows held would pass that (backpressure; a hand-over larger than the bound waits
until nothing is held). One at a time (``merge=False``) the bound is ``in_flight`` commits,
whatever their rows: a replay's planned commits are the original's (10,000-41,000 rows each in
the replay benchmark, against a bound of 10,000 rows), so each waited for an empty writer and
the worker stood still while the commit before it was appended (py-spy: ~0.3 s of a 4.7 s
replay, and again at the end); those rows are held by the plan's step until their commit is
complete anyway, so a commit queued behind the one appending costs no memory the replay did
not hold already. Counted in rows, not hand-overs: a lane batch closed by its timer is
small (at 5,000 events/s over 10 tenants, ~1,000 rows in 2 s), and counting each as one made
the worker wait after two of them, so each append took two lanes' batches (more appends, more
CPU; session 14's first measurement). Errors: what
the append raised is raised again on the worker, by its next :meth:`~GroupCommit.submit` or by
:meth:`~GroupCommit.drain` (the sink's ``close`` at the end of input), so the flow fails as it
did when the worker appended itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from sinks import writer_errors

__all__ = ["IN_FLIGHT", "LINGER_SECONDS", "GroupCommit"]

T = TypeVar("T")
log = logging.getLogger(__name__)

#: How long an append waits for the process's other workers' batches (they fill at about the
#: same pace: the tenants are interleaved). Only the writer thread waits: the workers go on.
LINGER_SECONDS = 0.1

#: Batches of ``lake.batch_max_rows`` a table's writer may hold queued or appending before the
#: worker waits (``lake.in_flight``'s default).
IN_FLIGHT = 2


class _Queued(Generic[T]):
    __slots__ = ("acks", "append", "rows")

    def __init__(
        self,
        rows: Sequence[T],
        append: Callable[[list[T]], object],
        acks: Sequence[Callable[[], None]],
    ) -> None:
        self.rows = rows
        self.append = append
        self.acks = acks


class GroupCommit(Generic[T]):
    """One table's appends for the ``workers`` threads (workers) of a process, made by one
    writer thread: an append takes every batch queued, after waiting up to ``linger`` seconds
    for each worker to hand one (none with one worker); with ``merge=False`` each batch is its
    own append, in the order handed. At most ``in_flight * batch_rows`` rows are queued or
    appending (with ``merge=False``, ``in_flight`` batches); ``name`` names the thread and the
    log lines."""

    def __init__(
        self,
        workers: int = 1,
        linger: float = LINGER_SECONDS,
        in_flight: int = IN_FLIGHT,
        batch_rows: int = 1,
        name: str = "lake",
        *,
        merge: bool = True,
    ) -> None:
        if in_flight < 1 or batch_rows < 1:
            msg = f"in_flight and batch_rows must be >= 1, got {in_flight}, {batch_rows}"
            raise ValueError(msg)
        self._workers = workers
        self._linger = linger if merge else 0.0
        self._merge = merge
        self._limit = in_flight * batch_rows
        self._in_flight = in_flight
        self._name = name
        self._cond = threading.Condition()
        self._queue: list[_Queued[T]] = []
        #: Batches queued or being appended, and their rows.
        self._held = 0
        self._rows = 0
        self._error: BaseException | None = None
        #: Whether the error has been raised on a worker (``close`` does not raise it again).
        self._raised = False
        #: Writer errors raised on this process's workers before this one was built
        #: (:mod:`sinks.writer_errors`).
        self._raised_before = writer_errors.raised()
        self._thread: threading.Thread | None = None
        #: The writer exits once nothing is queued (close); a later submit starts another.
        self._stop = False
        #: Workers waiting in :meth:`submit` for room (the writer does not linger then).
        self._blocked = 0
        #: Appends made, batches given, and seconds workers waited for room (tests, benchmarks).
        self.appends = 0
        self.batches = 0
        self.blocked_seconds = 0.0

    @property
    def in_flight(self) -> int:
        """Batches queued or being appended now."""
        with self._cond:
            return self._held

    def submit(
        self,
        rows: Sequence[T],
        append: Callable[[list[T]], object],
        acks: Sequence[Callable[[], None]] = (),
    ) -> None:
        """Queue ``rows`` for an append with ``append`` (on the writer thread, together with
        what else is queued then) and return; each of ``acks`` is called once they are
        committed. Blocks while the rows held and these would pass the bound (any number when
        none is held); raises what a failed append raised."""
        with self._cond:
            self._raise_if_failed()
            if self._full(len(rows)):
                start = time.perf_counter()
                # A worker waiting for room ends the writer's linger: no other batch is worth
                # waiting for while this one cannot be handed (the module docstring).
                self._blocked += 1
                self._cond.notify_all()
                try:
                    while self._full(len(rows)) and self._error is None:
                        self._cond.wait()
                finally:
                    self._blocked -= 1
                self.blocked_seconds += time.perf_counter() - start
                self._raise_if_failed()
            self._queue.append(_Queued(rows, append, acks))
            self._held += 1
            self._rows += len(rows)
            self._stop = False
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"igflow-lake-{self._name}", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _full(self, more: int) -> bool:
        if not self._merge:
            return self._held >= self._in_flight  # commits, not rows (the module docstring)
        return self._rows > 0 and self._rows + more > self._limit

    def drain(self) -> None:
        """Return once every batch submitted is committed; raise what a failed append raised."""
        with self._cond:
            while self._held and self._error is None:
                self._cond.wait()
            self._raise_if_failed()

    def close(self) -> None:
        """:meth:`drain`, then let the writer thread end (it holds the sink's tables); a later
        :meth:`submit` starts a new one. A failed append already raised on a worker is not
        raised again: the flow is failing with it, and Bytewax closes its sinks while it
        unwinds (a partition's ``Drop``), where a second exception is a panic within a panic
        and aborts the process (SIGABRT, no traceback: CI runs 35 and 37). Nor when another
        writer's error was raised on a worker since this one was built: the flow is failing with
        that one, and this writer logged its own (:mod:`sinks.writer_errors`)."""
        with self._cond:
            raised = self._raised
        if not raised and writer_errors.raised() == self._raised_before:
            self.drain()
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            self._raised = True
            writer_errors.raised_on_worker()
            raise self._error  # the append's own error, as when the worker appended itself

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if not self._queue:  # closed, everything committed
                    self._thread = None
                    return
                until = time.monotonic() + self._linger
                while len(self._queue) < self._workers and not self._blocked:
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._merge:
                    taken, self._queue = self._queue, []
                else:
                    taken, self._queue = self._queue[:1], self._queue[1:]
            try:
                taken[0].append([row for queued in taken for row in queued.rows])
            except BaseException as exc:  # raised on the workers; the writer stops here
                log.error(
                    "%s: the lake writer stopped: %r",
                    self._name,
                    exc,
                    extra={"op": "lake.append", "table": self._name},
                )
                with self._cond:
                    self._error = exc
                    self._queue = []  # never appended: their collects still hold them
                    self._thread = None
                    self._cond.notify_all()
                return
            for queued in taken:
                for ack in queued.acks:
                    ack()
            with self._cond:
                self._held -= len(taken)
                self._rows -= sum(len(queued.rows) for queued in taken)
                self.appends += 1
                self.batches += len(taken)
                self._cond.notify_all()
