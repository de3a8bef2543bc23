"""Batch-at-a-time forms of Bytewax's per-item shims (issue 15, point 1).

Bytewax 0.21's ``key_on``, ``key_rm``, ``map_value`` and ``filter_value`` are ``flat_map_batch``
with a Python shim called once per item, and ``stateful`` / ``stateful_flat_map`` are
``stateful_batch`` with a shim that calls ``on_item`` once per item. Measured with py-spy on
``igflow run`` (lake only, 200,000 signals), those shims were about 6 % of the samples. The
forms here make one Python call per engine batch and leave the per-item work to a list
comprehension or to the step's own batch method (the batch forms of ``key_on`` and ``key_rm``
went with the runs: a run is keyed once, where it is cut).

:func:`stateful_batch_at` keeps the step id the per-item ``op.stateful`` gave its inner step
(``<step_id>.stateful_batch``), so a step moved from ``StatefulLogic`` to
``StatefulBatchLogic`` with the same snapshot type resumes from a snapshot of the old one.

**Runs** (docs/columnar-path.md, phase 1). From the tenant keying to the sinks an item is a
*run*: ``(tenant, [record, ...])``, the records of one tenant from one engine batch, in order
(:data:`Run`; a stream of them is a :data:`Runs`). Bytewax then pays its per-item cost (the
keyed steps' ``key_on`` / grouping / ``key_rm``, each ``flat_map_batch`` call) and a pickle
between workers once per run instead of once per record (as columns between processes:
:class:`~core.records.Records`). :func:`runs_on` cuts each engine batch into runs;
:func:`stateful_runs_at` runs a step's record-level
:class:`~bytewax.operators.StatefulBatchLogic` on runs (:class:`RunLogic`: it flattens the
runs a key gets, in order, hands the records to the same logic as before, and gives its
outputs back as one run), so the logic, its state and its snapshot do not change;
:func:`map_runs` applies a record-list function to each run; :func:`flatten` leaves the run
world (the sinks, the rare paths).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from itertools import chain
from typing import Any, Generic, TypeAlias, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from bytewax.operators import KeyedStream, StatefulBatchLogic

from core.records import Records

__all__ = [
    "Run",
    "RunCut",
    "RunLogic",
    "Runs",
    "flatten",
    "map_runs",
    "run_builder",
    "runs_on",
    "snapshots_dropped",
    "stateful_batch_at",
    "stateful_runs_at",
    "tenant_runs",
]

V = TypeVar("V")
W = TypeVar("W")
X = TypeVar("X")
Y = TypeVar("Y")

#: A run: the records of one key (a tenant) from one engine batch, in order, never empty.
Run: TypeAlias = tuple[str, list[X]]
#: A stream of runs: keyed by their tenant, each value a list of records.
Runs: TypeAlias = KeyedStream[list[X]]
#: How an engine batch is cut into runs (tests cut at random points: any cut gives the same
#: outputs).
RunCut: TypeAlias = Callable[[list[X]], list[tuple[str, list[X]]]]


@operator
def stateful_batch_at(
    step_id: str,
    up: KeyedStream[V],
    builder: Callable[[Any], StatefulBatchLogic[V, W, Any]],
) -> KeyedStream[W]:
    """``op.stateful_batch`` under the id ``op.stateful(step_id, ...)`` gave its inner step."""
    return op.stateful_batch("stateful_batch", up, builder)


def tenant_runs(batch: list[X], key: Callable[[X], str]) -> list[tuple[str, list[X]]]:
    """``batch`` as runs: one per key, its items in ``batch``'s order, keys in order of their
    first item. Each run is a :class:`~core.records.Records`: about half of them cross to
    another process at the next keyed step, pickled as columns (~4x cheaper than record by
    record)."""
    runs: dict[str, Records[X]] = {}
    for x in batch:
        k = key(x)
        run = runs.get(k)
        if run is None:
            runs[k] = Records((x,))
        else:
            run.append(x)
    return list(runs.items())


def runs_on(
    step_id: str,
    up: Stream[X],
    key: Callable[[X], str],
    cut: RunCut[X] | None = None,
) -> Runs[X]:
    """``up`` as runs keyed by ``key``: :func:`tenant_runs` of each engine batch, or ``cut``'s
    runs (it must keep each key's items in order and key each run by its items' ``key``)."""

    def keyed(batch: list[X]) -> list[tuple[str, list[X]]]:
        return tenant_runs(batch, key)

    return op.flat_map_batch(step_id, up, keyed if cut is None else cut)


def _flat(batch: list[tuple[str, list[X]]]) -> list[X]:
    return [x for _, run in batch for x in run]


def flatten(step_id: str, up: Runs[X]) -> Stream[X]:
    """The records of ``up``'s runs, in order (unkeyed): where a stream leaves the run world."""
    return op.flat_map_batch(step_id, up, _flat)


def map_runs(step_id: str, up: Runs[X], fn: Callable[[list[X]], list[Y]]) -> Runs[Y]:
    """``fn`` of each run's records, keys and order kept; a run ``fn`` empties is dropped."""

    def mapped(batch: list[tuple[str, list[X]]]) -> list[tuple[str, list[Y]]]:
        out: list[tuple[str, list[Y]]] = []
        for k, run in batch:
            ys = fn(run)
            if ys:
                out.append((k, ys))
        return out

    return op.flat_map_batch(step_id, up, mapped)


#: Whether the executions running now drop their snapshots (:func:`snapshots_dropped`).
_dropped = False


@contextlib.contextmanager
def snapshots_dropped(dropped: bool = True) -> Iterator[None]:
    """While it is open, the :class:`RunLogic` built (Bytewax builds one as a key first
    arrives) answer ``snapshot`` with ``None`` without asking their step, when ``dropped``.

    For an execution without a recovery store: Bytewax 0.21 calls every stateful step's
    ``snapshot`` at the end of each epoch all the same, and then drops what it returns (its
    ``src/worker.rs`` connects the snapshot streams only to a recovery store). Each step's
    snapshot is a deep copy of its state (drift's, dedupe's, score's, psi's): ~0.15 s of the
    GIL in a 200,000-signal lake-only run (session 30). The executor that knows the store is
    absent says so (:func:`flows.execute.execute`); a step's state and outputs do not change.
    """
    global _dropped
    before, _dropped = _dropped, dropped
    try:
        yield
    finally:
        _dropped = before


class RunLogic(StatefulBatchLogic[list[V], Any, Any], Generic[V, W]):
    """A record-level logic on runs: the runs of each call flattened in order into one new
    list for ``inner``; its outputs given back as one run (``runs_out``, not emitted if empty)
    or as they are (a step whose outputs are batches already: the lake's collect). Timers,
    EOF, discards and snapshots are ``inner``'s, so the state and its snapshot are unchanged;
    built inside :func:`snapshots_dropped`, its snapshot is ``None`` (nothing keeps it).
    """

    def __init__(self, inner: StatefulBatchLogic[V, W, Any], runs_out: bool = True) -> None:
        self.inner = inner
        self.runs_out = runs_out
        self.snapshots = not _dropped

    def _out(self, out: Iterable[W]) -> Iterable[Any]:
        if not self.runs_out:
            return out
        run = list(out)  # always a new list: an inner may hand back (or keep) its input
        return (run,) if run else ()

    def on_batch(self, values: list[list[V]]) -> tuple[Iterable[Any], bool]:
        records = list(values[0]) if len(values) == 1 else list(chain.from_iterable(values))
        out, discard = self.inner.on_batch(records)
        return self._out(out), discard

    def on_notify(self) -> tuple[Iterable[Any], bool]:
        out, discard = self.inner.on_notify()
        return self._out(out), discard

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        out, discard = self.inner.on_eof()
        return self._out(out), discard

    def notify_at(self) -> datetime | None:
        return self.inner.notify_at()

    def snapshot(self) -> Any:
        return self.inner.snapshot() if self.snapshots else None


def run_builder(
    builder: Callable[[Any], StatefulBatchLogic[V, W, Any]], runs_out: bool = True
) -> Callable[[Any], RunLogic[V, W]]:
    """``builder``'s logic on runs (:class:`RunLogic`), resumed from the same state."""

    def build(resume: Any) -> RunLogic[V, W]:
        return RunLogic(builder(resume), runs_out)

    return build


@operator
def stateful_runs_at(
    step_id: str,
    up: Runs[V],
    builder: Callable[[Any], StatefulBatchLogic[V, W, Any]],
) -> Runs[W]:
    """:func:`stateful_batch_at` on runs: ``builder``'s record-level logic gets each key's
    records in order and its outputs leave as one run per call (:class:`RunLogic`); the step
    id and the snapshots are the record-level step's, so its recovery snapshots resume."""
    return op.stateful_batch("stateful_batch", up, run_builder(builder))
