"""collect_batches: lists of a key's items, closed at a size or a time after their *first* item.

Bytewax 0.21's ``op.collect`` restarts its timeout on every item: its ``timeout`` is an idle
time, so a key fed steadily (a lake lane at a steady rate) is emitted only at ``max_size`` or
when its input pauses. That is what held the lake's commits: at 200 events/s over 10 tenants
a lane's batch closed only when the producer stopped (one commit of 5,900 rows after 30 s,
``benchmarks/latency.py``), while ``lake.batch_max_seconds`` promises "this many seconds after
its first row". This step keeps that promise: a batch is emitted ``timeout`` after its first
item (wall clock, like ``op.collect``), at ``max_size`` items, or at the end of input.

The wall clock decides only where one lake commit ends and the next begins, never what a row
holds; a replay does not depend on it (it lands each of the original's commits as it was:
:mod:`sinks.lake_plan`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar, cast

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulBatchLogic

from operators.batching import Runs, run_builder, stateful_batch_at
from operators.sealed_state import sealed_builder
from tenancy.sealed_state import StateSeal

__all__ = ["CollectState", "collect_batches", "land_resumed"]

V = TypeVar("V")


@dataclasses.dataclass
class CollectState(Generic[V]):
    """A key's open batch and when it is due (``None``: empty)."""

    items: list[V] = dataclasses.field(default_factory=list)
    due: datetime | None = None


class CollectLogic(StatefulBatchLogic[V, list[V], CollectState[V]]):
    """One key's batch; ``now`` is injectable so the timing can be tested without sleeping."""

    def __init__(
        self,
        state: CollectState[V],
        timeout: timedelta,
        max_size: int,
        now: Callable[[], datetime],
    ) -> None:
        self.state = state
        self.timeout = timeout
        self.max_size = max_size
        self.now = now

    def on_item(self, value: V) -> tuple[Iterable[list[V]], bool]:
        """One item: the per-item logic this step ran before batches, kept as the reference
        of :meth:`on_batch` (a full list starts a new state, as the engine's discard did)."""
        state = self.state
        if state.due is None:
            state.due = self.now() + self.timeout
        state.items.append(value)
        if len(state.items) >= self.max_size:
            self.state = CollectState()
            return (state.items,), StatefulBatchLogic.DISCARD
        return (), StatefulBatchLogic.RETAIN

    def on_batch(self, values: list[V]) -> tuple[Iterable[list[V]], bool]:
        """Add ``values`` in order; emit each list that reaches ``max_size`` (a full list
        starts a new one, as discarding the per-item logic did: its time runs from its own
        first item)."""
        state = self.state
        full: list[list[V]] = []
        max_size = self.max_size
        at = 0
        while at < len(values):
            if state.due is None:
                state.due = self.now() + self.timeout  # from the first item, never pushed back
            items = state.items
            take = values[at : at + max_size - len(items)]
            items.extend(take)
            at += len(take)
            if len(items) >= max_size:
                full.append(items)
                state = self.state = CollectState()
        return full, (StatefulBatchLogic.DISCARD if not state.items else StatefulBatchLogic.RETAIN)

    def on_notify(self) -> tuple[Iterable[list[V]], bool]:
        return self._emit()

    def on_eof(self) -> tuple[Iterable[list[V]], bool]:
        return self._emit()

    def _emit(self) -> tuple[Iterable[list[V]], bool]:
        items = self.state.items
        return ((items,) if items else ()), StatefulBatchLogic.DISCARD

    def notify_at(self) -> datetime | None:
        return self.state.due

    def snapshot(self) -> CollectState[V]:
        # A new list: the state keeps changing after this returns (the items are immutable).
        return CollectState(list(self.state.items), self.state.due)


def _resumed(resume: Any) -> CollectState[Any]:
    """A resume state, also one ``op.collect`` snapshotted (``acc``, ``timeout_at``) before this
    step replaced it under the same step id."""
    if resume is None:
        return CollectState()
    if isinstance(resume, CollectState):
        return resume
    return CollectState(list(resume.acc), resume.timeout_at)


@operator
def collect_batches(
    step_id: str,
    up: Runs[V],
    timeout: timedelta,
    max_size: int,
    seal: StateSeal | None = None,
    key_of: Callable[[V], str] | None = None,
) -> KeyedStream[list[V]]:
    """Emit each key's items as lists of at most ``max_size``, ``timeout`` after the first item
    of each list (wall clock), or at the end of input; see the module docstring. ``up`` is runs
    (:mod:`operators.batching`): their items are collected in order, whatever the runs' sizes.
    With ``seal`` (and ``key_of``, the function ``up`` is keyed by), each record of the open
    batches is sealed in the snapshot under its tenant's keys (:mod:`operators.sealed_state`)."""

    def builder(resume: Any) -> CollectLogic[V]:
        return CollectLogic(_resumed(resume), timeout, max_size, lambda: datetime.now(UTC))

    # The id and the snapshot (a CollectState of records) of the per-item op.stateful it
    # replaced; the runs are flattened into the same logic, whose outputs are lists already.
    sealed = sealed_builder(builder, seal, f"{step_id}.stateful", key_of)
    return stateful_batch_at("stateful", up, run_builder(sealed, runs_out=False))


class _LandResumed(StatefulBatchLogic[V, V, CollectState[V]]):
    """A key of a retired batching step: its resumed batch was landed by the builder; it is
    dropped at its first activation (due at once), so the next snapshot discards it."""

    def on_batch(self, values: list[V]) -> tuple[Iterable[V], bool]:
        return (), StatefulBatchLogic.DISCARD  # nothing is routed here (see land_resumed)

    def on_notify(self) -> tuple[Iterable[V], bool]:
        return (), StatefulBatchLogic.DISCARD

    def on_eof(self) -> tuple[Iterable[V], bool]:
        return (), StatefulBatchLogic.DISCARD

    def notify_at(self) -> datetime | None:
        return datetime.now(UTC)

    def snapshot(self) -> CollectState[V]:
        return CollectState()


def _nothing(_batch: list[Any]) -> list[Any]:
    return []


@operator
def land_resumed(
    step_id: str,
    up: Runs[V],
    land: Callable[[list[V]], object],
    seal: StateSeal | None = None,
    key_of: Callable[[V], str] | None = None,
) -> Runs[V]:
    """The batching step ``step_id`` of a former keying, kept so that a recovery snapshot it
    wrote still resumes: each batch it held is handed to ``land`` (an exactly-once append)
    *when the snapshot is loaded*, and the step then forgets it. It gets no items (``up`` only
    places it in the dataflow) and emits none; merge its (empty) output into the input of the
    batching step that replaced it: that step then cannot start the resume epoch before every
    worker's resumed batches of this step have landed (Bytewax loads a snapshot at its own
    epoch, before the resume epoch, and a step's input frontier waits for every worker's
    upstream steps). So a lane's older rows land before its newer ones, which the ledger needs
    (it skips rows at or below what a lane already committed). ``seal`` and ``key_of`` open a
    sealed snapshot as :func:`collect_batches` wrote it (``key_of``: its keying then)."""

    def builder(resume: Any) -> _LandResumed[V]:
        held = _resumed(resume).items
        if held:
            land(held)
        return _LandResumed()

    sealed = sealed_builder(builder, seal, f"{step_id}.stateful", key_of)
    # Typed as records, not runs: nothing flows into the step or out of it.
    none: KeyedStream[V] = op.flat_map_batch("none", up, _nothing)
    return cast("Runs[V]", stateful_batch_at("stateful", none, sealed))
