"""collect_batches: lists of a key's items, closed at a size or a time after their *first* item.

Bytewax 0.21's ``op.collect`` restarts its timeout on every item: its ``timeout`` is an idle
time, so a key fed steadily (a lake lane at a steady rate) is emitted only at ``max_size`` or
when its input pauses. That is what held the lake's commits: at 200 events/s over 10 tenants
a lane's batch closed only when the producer stopped (one commit of 5,900 rows after 30 s,
``benchmarks/latency.py``), while ``lake.batch_max_seconds`` promises "this many seconds after
its first row". This step keeps that promise: a batch is emitted ``timeout`` after its first
item (wall clock, like ``op.collect``), at ``max_size`` items, or at the end of input.

On a grid (``grid=True``, the lake's collect): a batch is due at the first multiple of
``timeout`` on the Unix epoch's clock after its first item (so at most ``timeout`` after it, as
promised, on average half that). Every key's batches then close at the same instants, in one
activation, and reach the lake's writer in one hand-over: one commit per table per tick. Timed
from each key's own first item, the keys' batches closed at scattered instants; with the commit
on the worker's thread a blocked worker happened to line them up, but with the lake's writer
thread (:mod:`sinks.lake_group`) each went in its own commit (signal commits 51-64 against
43-51 in the same 40 s latency runs, session 14).

The processes of a cluster (``-i/-a``) cannot share a commit: each commits its own lanes. On one
grid they committed to the same table at the same instant, and one of the two lost the race,
waited and wrote its files again: a 2-process ``--tail`` run at 2,000 events/s lost 21-22 races
in 47-52 appends in 20 s. So each process's grid is shifted by its share of ``timeout``
(``phase``: process ``i`` of ``n`` at ``i * timeout / n``, ``flows.coherence.commit_phase``)
and their commits take turns: 0-7 lost races in 50-54 appends. Batches that close at
``max_size`` (a backlog: a bounded run reads as fast as it can) are off the grid and may
still race (about 15 in 58 appends of a 200,000-signal bounded run).

The wall clock decides only where one lake commit ends and the next begins, never what a row
holds; a replay does not depend on it (it lands each of the original's commits as it was:
:mod:`sinks.lake_plan`).

Handed batches (``handed=True``, the lake's collect): each batch is emitted as a
:class:`~core.handed.Handed` list, which the lake's writer thread acknowledges once its rows are
committed (:mod:`sinks.lake_group`). Until then the key keeps it (``CollectState.handed``, in
the recovery snapshot), and a key resumed with handed batches emits them again first, before
anything newer of the key; the lake's ledger skips the rows of those that did commit. So the
worker need not wait for the commit: a crash before it loses nothing. A key holding only handed
batches wakes every :data:`ACK_CHECK` to drop the acknowledged ones (and itself once none is
left), so its next snapshot no longer holds them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar, cast

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulBatchLogic

from core.handed import Handed
from operators.batching import Runs, run_builder, stateful_batch_at
from operators.sealed_state import sealed_builder
from tenancy.sealed_state import StateSeal

__all__ = ["ACK_CHECK", "CollectState", "collect_batches", "grid_after", "land_resumed"]

V = TypeVar("V")

#: How often a key holding handed batches looks for their acknowledgements (a lake commit
#: takes 0.03-0.1 s; snapshots are 1 s apart by default: ``run.snapshot_seconds``).
ACK_CHECK = timedelta(seconds=0.25)


@dataclasses.dataclass
class CollectState(Generic[V]):
    """A key's open batch and when it is due (``None``: empty); ``handed``: the batches it
    emitted that were not yet acknowledged, oldest first (emitted again on resume)."""

    items: list[V] = dataclasses.field(default_factory=list)
    due: datetime | None = None
    handed: list[list[V]] = dataclasses.field(default_factory=list)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A snapshot of before handed batches (session 13 and older) has no ``handed``.
        state.setdefault("handed", [])
        self.__dict__.update(state)


class CollectLogic(StatefulBatchLogic[V, list[V], CollectState[V]]):
    """One key's batch; ``now`` is injectable so the timing can be tested without sleeping.

    ``handed``: emit :class:`~core.handed.Handed` batches and keep each until it is
    acknowledged (see the module docstring). A resumed state's handed batches are emitted again
    first, whatever ``handed``. ``grid``: a batch is due on the grid of ``timeout`` (the module
    docstring), not ``timeout`` after its first item; ``phase``: that grid shifted by it (each
    process of a cluster on its own: the module docstring)."""

    def __init__(
        self,
        state: CollectState[V],
        timeout: timedelta,
        max_size: int,
        now: Callable[[], datetime],
        *,
        handed: bool = False,
        grid: bool = False,
        phase: timedelta = timedelta(0),
    ) -> None:
        self.state = state
        self.timeout = timeout
        self.grid = grid
        self.phase = phase
        self.max_size = max_size
        self.now = now
        self.track = handed
        #: Resumed handed batches, not yet emitted again (they go out before anything else);
        #: one emptied by an offboarded tenant's records left out of the snapshot goes nowhere.
        self.resend: list[list[V]] = [batch for batch in state.handed if batch]
        state.handed = []
        #: Batches emitted and not yet acknowledged, oldest first (``handed`` only).
        self.handed: list[Handed[V]] = []
        #: When to look for acknowledgements next (``None``: nothing handed).
        self.check_at: datetime | None = None

    def on_item(self, value: V) -> tuple[Iterable[list[V]], bool]:
        """One item: the per-item logic this step ran before batches, kept as the reference
        of :meth:`on_batch` (a full list starts a new state, as the engine's discard did)."""
        state = self.state
        if state.due is None:
            state.due = self._due()
        state.items.append(value)
        if len(state.items) >= self.max_size:
            self.state = CollectState()
            return self._out([state.items]), self._keep()
        return self._out([]), self._keep()

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
                state.due = self._due()  # from the first item, never pushed back
            items = state.items
            take = values[at : at + max_size - len(items)]
            items.extend(take)
            at += len(take)
            if len(items) >= max_size:
                full.append(items)
                state = self.state = CollectState()
        return self._out(full), self._keep()

    def _due(self) -> datetime:
        now = self.now()
        return grid_after(now, self.timeout, self.phase) if self.grid else now + self.timeout

    def on_notify(self) -> tuple[Iterable[list[V]], bool]:
        due = self.state.due
        if self.handed or self.resend:  # woken to re-emit or to look for acknowledgements
            now = self.now()
            if self.check_at is not None and now >= self.check_at:
                self._prune()
                self.check_at = now + ACK_CHECK if self.handed else None
            if due is None or now < due:
                return self._out([]), self._keep()
        return self._emit()

    def on_eof(self) -> tuple[Iterable[list[V]], bool]:
        return self._emit()

    def _emit(self) -> tuple[Iterable[list[V]], bool]:
        items = self.state.items
        self.state = CollectState()
        return self._out([items] if items else []), self._keep()

    def _out(self, batches: list[list[V]]) -> tuple[list[V], ...]:
        """What to emit: the resumed handed batches first, then ``batches``; tracked as handed
        batches when ``handed``."""
        if self.resend:
            batches = [*self.resend, *batches]
            self.resend = []
        if not self.track or not batches:
            return tuple(batches)
        out = [Handed(batch) for batch in batches]
        self._prune()
        self.handed.extend(out)
        if self.check_at is None:
            self.check_at = self.now() + ACK_CHECK
        return tuple(out)

    def _prune(self) -> None:
        if self.handed:
            self.handed = [batch for batch in self.handed if not batch.acked]

    def _keep(self) -> bool:
        """Retain the key while it holds an open batch or unacknowledged handed ones."""
        self._prune()
        if self.state.items or self.handed or self.resend:
            return StatefulBatchLogic.RETAIN
        return StatefulBatchLogic.DISCARD

    def notify_at(self) -> datetime | None:
        due = self.state.due
        if self.resend:
            return self.now()
        if self.check_at is not None and self.handed:
            return self.check_at if due is None else min(due, self.check_at)
        return due

    def snapshot(self) -> CollectState[V]:
        # New lists: the state keeps changing after this returns (the items are immutable).
        # The handed batches not acknowledged now, as plain lists, oldest first.
        self._prune()
        handed = [*self.resend, *(list(batch) for batch in self.handed)]
        return CollectState(list(self.state.items), self.state.due, handed)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def grid_after(now: datetime, step: timedelta, phase: timedelta = timedelta(0)) -> datetime:
    """The first instant ``phase`` past a multiple of ``step`` on the Unix epoch's clock after
    ``now`` (``now`` itself if ``step`` is not positive)."""
    micros = step // _MICRO
    if micros <= 0:
        return now
    origin = _EPOCH + phase
    return origin + _MICRO * (((now - origin) // _MICRO // micros + 1) * micros)


def _resumed(resume: Any) -> CollectState[Any]:
    """A resume state, also one ``op.collect`` snapshotted (``acc``, ``timeout_at``) before this
    step replaced it under the same step id (and one of before handed batches: no ``handed``,
    see :meth:`CollectState.__setstate__`)."""
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
    *,
    handed: bool = False,
    grid: bool = False,
    phase: timedelta = timedelta(0),
) -> KeyedStream[list[V]]:
    """Emit each key's items as lists of at most ``max_size``, ``timeout`` after the first item
    of each list (wall clock), or at the end of input; see the module docstring. ``up`` is runs
    (:mod:`operators.batching`): their items are collected in order, whatever the runs' sizes.
    With ``seal`` (and ``key_of``, the function ``up`` is keyed by), each record of the open
    batches is sealed in the snapshot under its tenant's keys (:mod:`operators.sealed_state`).
    ``handed``: emit :class:`~core.handed.Handed` batches, kept in the snapshot until
    acknowledged. ``grid``: batches are due on the grid of ``timeout``, shifted by ``phase``."""

    def builder(resume: Any) -> CollectLogic[V]:
        return CollectLogic(
            _resumed(resume),
            timeout,
            max_size,
            lambda: datetime.now(UTC),
            handed=handed,
            grid=grid,
            phase=phase,
        )

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
        state = _resumed(resume)
        held = [*(item for batch in state.handed for item in batch), *state.items]
        if held:
            land(held)
        return _LandResumed()

    sealed = sealed_builder(builder, seal, f"{step_id}.stateful", key_of)
    # Typed as records, not runs: nothing flows into the step or out of it.
    none: KeyedStream[V] = op.flat_map_batch("none", up, _nothing)
    return cast("Runs[V]", stateful_batch_at("stateful", none, sealed))
