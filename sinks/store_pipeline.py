"""One serving store's write pipeline: the worker hands items over, one thread writes them.

The Bytewax worker calls :meth:`StorePipeline.put` and goes on with the dataflow; a writer thread
takes the items in the order they were put, at most ``batch_size`` at a time (so small Bytewax
batches coalesce into store-sized writes), and calls ``write`` on each chunk. ``write`` owns the
retries and the dead-lettering (:class:`~sinks.serving.PipelinedPartition`), so a chunk leaves
the pipeline only once the store acknowledged it or the DLQ took it.

Bounds: at most ``batch_size * max_in_flight`` items are held (the chunk being written
included). :meth:`put` blocks the worker only while that many are held: a slow or paused store
applies backpressure after the bound, never before, and the memory held is bounded by it.

Order: one thread, strictly first in first out, and a chunk is retried in place before the next
is taken; so what one tenant's items reach the store in the order they were put, which is what
the stores' guards (``seq``, offsets marks) rely on.

Crash safety: :meth:`unacknowledged` is every item put and not yet acknowledged, in order. The
sink partition returns it as its recovery snapshot, and a resumed partition puts it back first
(``pending``); the writes are idempotent, so an item written just before the crash and written
again after it changes nothing.

Lanes: a store whose items fall into kinds that no write orders against each other (Redis: a
tenant's score changes, guarded by ``seq``, and its signals, guarded by offset marks) may give
each kind a lane of its own (``lane_of``, one ``write`` per lane): one writer thread per lane,
each first in first out as above, so a kind's items keep their order, and a score change put
while a large chunk of signals is being written does not wait for that write. The bound is
shared by the lanes (the items held by all of them), and :meth:`unacknowledged` holds every
lane's items, lane after lane; a resumed pipeline sorts what it is handed back into its lanes.

Errors: an exception escaping ``write`` (a permanent store error, or the DLQ unreachable) stops
the thread; it is logged at once and raised, as :class:`StoreWriterFailed`, from the worker's
next :meth:`put`, :meth:`unacknowledged` or :meth:`close`, so the flow stops (and resumes from
its last snapshot) rather than run on with a dead writer. :meth:`close` drains: it returns once
everything put was written (or dead-lettered).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

from core import metrics
from core.errors import SinkError
from sinks import writer_errors

__all__ = ["StorePipeline", "StoreWriterFailed"]

T = TypeVar("T")
log = logging.getLogger(__name__)


class StoreWriterFailed(SinkError):
    """A store's writer thread stopped on an error (the cause); the flow must stop too."""


class StorePipeline(Generic[T]):
    """A bounded first-in-first-out hand-over from the worker to one writer thread.

    ``write(chunk)`` is called on the writer thread with at most ``batch_size`` items; it returns
    once the chunk is acknowledged (or dead-lettered), and raises only for what must stop the
    flow. ``pending`` (a resumed partition's snapshot) is written first.

    ``lanes`` (more writes, one per lane after the first) with ``lane_of`` (an item's lane: 0
    for ``write``'s, ``i`` for ``lanes[i - 1]``): one writer thread per lane (module docstring).
    """

    def __init__(
        self,
        name: str,
        write: Callable[[list[T]], None],
        *,
        batch_size: int,
        max_in_flight: int,
        pending: Iterable[T] = (),
        lanes: Sequence[Callable[[list[T]], None]] = (),
        lane_of: Callable[[T], int] | None = None,
    ) -> None:
        if batch_size < 1 or max_in_flight < 1:
            msg = f"batch_size and max_in_flight must be >= 1, got {batch_size}, {max_in_flight}"
            raise ValueError(msg)
        if bool(lanes) != (lane_of is not None):
            msg = "lanes and lane_of go together"
            raise ValueError(msg)
        self._name = name
        self._writes = [write, *lanes]
        self._lane_of = lane_of
        self._batch_size = batch_size
        self._limit = batch_size * max_in_flight
        self._lanes: list[deque[T]] = [deque() for _ in self._writes]
        self._count = 0  # items held, every lane's
        self._place(list(pending))
        self._cond = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        #: Whether the error has been raised on a worker (``close`` does not raise it again).
        self._raised = False
        #: Writer errors raised on this process's workers before this one was built
        #: (:mod:`sinks.writer_errors`).
        self._raised_before = writer_errors.raised()
        self._pending_gauge = metrics.SINK_PENDING.labels(name)
        self._blocked = metrics.SINK_BLOCKED_SECONDS.labels(name)
        self._pending_gauge.set(self._count)
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(lane,),
                name=f"igflow-store-{name}" + (f"-{lane}" if lane else ""),
                daemon=True,
            )
            for lane in range(len(self._writes))
        ]
        for thread in self._threads:
            thread.start()

    @property
    def limit(self) -> int:
        """The most items held at once."""
        return self._limit

    def put(self, items: Sequence[T]) -> None:
        """Hand ``items`` over in order; blocks only while the pipeline holds its limit."""
        done = 0
        with self._cond:
            while done < len(items):
                self._raise_if_failed()
                room = self._limit - self._count
                if room <= 0:
                    start = time.perf_counter()
                    self._cond.wait()
                    self._blocked.inc(time.perf_counter() - start)
                    continue
                self._place(items[done : done + room])
                done += room
                self._pending_gauge.set(self._count)
                self._cond.notify_all()

    def _place(self, items: Sequence[T]) -> None:
        """``items`` onto their lanes, in order (under the lock, or before the threads start)."""
        lane_of = self._lane_of
        if lane_of is None:
            self._lanes[0].extend(items)
        else:
            lanes = self._lanes
            for item in items:
                lanes[lane_of(item)].append(item)
        self._count += len(items)

    def unacknowledged(self) -> list[T]:
        """Every item put and not yet acknowledged (the chunks being written too): each lane's
        in order, lane after lane."""
        with self._cond:
            self._raise_if_failed()
            return [item for held in self._lanes for item in held]

    def close(self) -> None:
        """Write everything held, stop the threads; raises if a writer failed, unless that
        was raised on the worker already: the flow is failing with it, and Bytewax closes its
        sinks while it unwinds (a partition's ``Drop``), where a second exception is a panic
        within a panic and aborts the process (SIGABRT, no traceback: CI runs 35 and 37). Nor
        when another writer's error was raised on a worker since this pipeline was built: the
        flow is failing with that one, and this writer logged its own
        (:mod:`sinks.writer_errors`)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        with self._cond:
            if not self._raised and writer_errors.raised() == self._raised_before:
                self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            self._raised = True
            writer_errors.raised_on_worker()
            msg = f"{self._name}: the store writer stopped: {self._error!r}"
            raise StoreWriterFailed(msg) from self._error

    def _run(self, lane: int) -> None:
        held = self._lanes[lane]
        write = self._writes[lane]
        try:
            while True:
                with self._cond:
                    while not held and not self._closing and self._error is None:
                        self._cond.wait()
                    if not held or self._error is not None:
                        return  # closing and everything written, or another lane failed
                    chunk = list(itertools.islice(held, self._batch_size))
                write(chunk)  # outside the lock: the worker keeps putting meanwhile
                with self._cond:
                    for _ in chunk:
                        held.popleft()
                    self._count -= len(chunk)
                    self._pending_gauge.set(self._count)
                    self._cond.notify_all()
        except BaseException as exc:  # surfaces on the worker; never a silently dead thread
            log.error(
                "%s: the store writer stopped: %r",
                self._name,
                exc,
                extra={"op": f"sink.{self._name}"},
            )
            with self._cond:
                if self._error is None:
                    self._error = exc
                self._cond.notify_all()
