"""Commit plans: a replay lands its lake rows in the original's commits, so that its data files
come out byte-identical.

A data file's bytes follow from the rows it holds, their order and the table's write properties:
pyarrow's Parquet writer is deterministic, pyiceberg splits a commit into one file per partition
(``day(ts)``, tenant) keeping the rows' order, and :class:`~sinks.iceberg.IcebergAppender` sorts
every commit's rows by their Kafka coordinates. What is left is which rows share a commit, and a
normal run decides that by timing: ``collect``'s ``batch_max_seconds``, which lanes' batches reach
one ``write_batch``, how workers interleave. A replay can do better, because the original's
commits say what they held: each append stores the lanes whose marks it raised
(``igflow.offsets.delta``; before that format, the whole ledger in ``igflow.offsets``, the highest
offset per (topic, partition, lane) landed so far: :mod:`sinks.ledger_format`). Walking the
original's lineage oldest first, commit *k* advanced some lanes' marks from *prev* to *new*, so it
held exactly the rows of those lanes with offsets in ``(prev, new]``, the row at *new* among
them.

:func:`planned_batches` puts every row of the table on one worker (a constant key), assigns it to
its planned commit and emits the commits in the original's order, each once all its rows have
arrived: once the row at the new mark of each of its lanes has, since each lane's rows arrive in
offset order (what the ledger relies on as well). The order of commits matters: the ledger skips
offsets at or below a lane's mark, so a lane's commit *k + 1* must not land before its commit
*k*. Rows no commit planned (offsets past the original's marks, lanes it never had) follow the
plan in batches of ``max_rows``. At the end of input, commits still incomplete are emitted as they
are (a sub-range replay covers some commits only in part: those files differ, the digests still
match). Everything funnels through one worker: with several workers, a replay moves every lake
row to it once.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Generic, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import KeyedStream, StatefulBatchLogic
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

from sinks.lake_tables import DECONFLICTION, QUARANTINE, SCORES, SIGNALS, TableDef
from sinks.ledger_format import Ledger, snapshot_ledger

__all__ = ["CommitPlan", "PlannedCommit", "load_plans", "planned_batches"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class PlannedCommit:
    """One commit of the original: its snapshot and how many lanes' marks it raised (it is
    complete when the row at each of those marks has arrived)."""

    snapshot_id: int
    lanes: int


class CommitPlan:
    """The original commits of one table, as offset ranges per (topic, partition, lane)."""

    def __init__(
        self,
        commits: Sequence[PlannedCommit],
        marks: Mapping[tuple[str, int, str], Sequence[tuple[int, int]]],
    ) -> None:
        """``marks``: per lane, ``(mark, commit index)`` in increasing mark order: the commit
        that raised the lane's mark to ``mark`` (from the previous one)."""
        self.commits: tuple[PlannedCommit, ...] = tuple(commits)
        self._marks = {lane: [m for m, _ in pairs] for lane, pairs in marks.items()}
        self._index = {lane: [i for _, i in pairs] for lane, pairs in marks.items()}

    def __len__(self) -> int:
        return len(self.commits)

    @classmethod
    def from_ledgers(
        cls, history: Iterable[tuple[int, Ledger]], topic: str | None = None
    ) -> CommitPlan:
        """The plan of a lineage given oldest first as ``(snapshot id, ledger)``.

        Only lanes of ``topic`` count (``None``: every topic). A commit that raised no mark of
        them (another topic's, a rewrite by another tool) is not part of the plan.
        """
        return cls.from_changes(((s, ledger, False) for s, ledger in history), topic)

    @classmethod
    def from_changes(
        cls, history: Iterable[tuple[int, Ledger, bool]], topic: str | None = None
    ) -> CommitPlan:
        """The plan of a lineage given oldest first as ``(snapshot id, lanes, delta)``: the
        lanes a commit raised when ``delta``, else its whole ledger (the format before deltas;
        a lineage may hold both, old commits first). Otherwise as :meth:`from_ledgers`."""
        commits: list[PlannedCommit] = []
        marks: dict[tuple[str, int, str], list[tuple[int, int]]] = {}
        previous: Ledger = {}
        for snapshot_id, ledger, delta in history:
            raised = [
                (key, mark)
                for key, mark in sorted(ledger.items())
                if (topic is None or key[0] == topic) and mark > previous.get(key, -1)
            ]
            if not delta:
                previous = dict(ledger)
            else:
                previous.update(_raised(ledger, previous))
            if not raised:
                continue
            for key, mark in raised:
                marks.setdefault(key, []).append((mark, len(commits)))
            commits.append(PlannedCommit(snapshot_id, len(raised)))
        return cls(commits, marks)

    @classmethod
    def from_table(cls, table: Table, topic: str | None = None) -> CommitPlan:
        """The plan of ``table``'s current lineage (snapshots without a ledger are skipped)."""
        history: list[tuple[int, Ledger, bool]] = []
        for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
            entry = snapshot_ledger(table, snapshot)
            if entry is not None:
                history.append((snapshot.snapshot_id, *entry))
        history.reverse()  # ancestors come newest first
        return cls.from_changes(history, topic)

    def commit_of(self, topic: str, partition: int, lane: str, offset: int) -> tuple[int, bool]:
        """The index of the commit that held this row (-1: none did), and whether the row is at
        that commit's mark of its lane (the lane's last row in it)."""
        key = (topic, partition, lane)
        marks = self._marks.get(key)
        if marks is None:
            return -1, False
        at = bisect.bisect_left(marks, offset)  # the first mark at or above the offset
        if at == len(marks):
            return -1, False
        return self._index[key][at], marks[at] == offset


def _raised(lanes: Ledger, previous: Ledger) -> list[tuple[tuple[str, int, str], int]]:
    return [(key, mark) for key, mark in lanes.items() if mark > previous.get(key, -1)]


@dataclasses.dataclass(frozen=True, slots=True)
class _State(Generic[T]):
    pending: dict[int, list[T]]
    #: Per commit, how many of its lanes' mark rows have arrived.
    closed: dict[int, int]
    next: int
    unplanned: list[T]


class _PlannedBatches(StatefulBatchLogic[T, list[T], _State[T]]):
    def __init__(
        self, plan: CommitPlan, table: TableDef[T], max_rows: int, resume: _State[T] | None
    ) -> None:
        self._plan = plan
        self._table = table
        self._max_rows = max(1, max_rows)
        self._pending: dict[int, list[T]] = dict(resume.pending) if resume else {}
        self._closed: dict[int, int] = dict(resume.closed) if resume else {}
        self._next = resume.next if resume else 0
        self._unplanned: list[T] = list(resume.unplanned) if resume else []

    def on_batch(self, values: list[T]) -> tuple[Iterable[list[T]], bool]:
        for item in values:
            p = self._table.provenance(item)
            lane = self._table.lane(item)
            at, last = self._plan.commit_of(p.topic, p.kafka_partition, lane, p.kafka_offset)
            if at < self._next:
                # No commit held it, or (a second row at one offset of a lane) its commit has
                # gone: the appender's ledger decides, as it would without a plan.
                self._unplanned.append(item)
                continue
            self._pending.setdefault(at, []).append(item)
            if last:
                self._closed[at] = self._closed.get(at, 0) + 1
        return self._drain(final=False), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[list[T]], bool]:
        return self._drain(final=True), StatefulBatchLogic.RETAIN

    def _drain(self, *, final: bool) -> list[list[T]]:
        out: list[list[T]] = []
        commits = self._plan.commits
        while self._next < len(commits):
            if not final and self._closed.get(self._next, 0) < commits[self._next].lanes:
                break
            items = self._pending.pop(self._next, [])
            self._closed.pop(self._next, None)
            if items:
                out.append(items)
            self._next += 1
        if self._next >= len(commits) and self._unplanned:
            while len(self._unplanned) >= self._max_rows:
                out.append(self._unplanned[: self._max_rows])
                self._unplanned = self._unplanned[self._max_rows :]
            if final and self._unplanned:
                out.append(self._unplanned)
                self._unplanned = []
        return out

    def snapshot(self) -> _State[T]:
        pending = {k: list(v) for k, v in self._pending.items()}
        return _State(pending, dict(self._closed), self._next, list(self._unplanned))


def planned_batches(
    step_id: str, up: Stream[T], table: TableDef[T], plan: CommitPlan, max_rows: int
) -> KeyedStream[list[T]]:
    """``up``'s rows as the original's commits of ``table`` (see the module docstring), in its
    commit order, on one worker; rows the plan lacks follow in batches of ``max_rows``."""
    keyed = op.key_on(f"{step_id}_one", up, lambda _item: table.name)
    return op.stateful_batch(
        step_id,
        keyed,
        lambda resume: _PlannedBatches(plan, table, max_rows, resume),
    )


def load_plans(cat: Catalog, namespace: str, topic: str) -> dict[str, CommitPlan]:
    """Per lake table of ``namespace`` in ``cat``, the plan of its commits of ``topic`` (tables
    that do not exist, or hold no commit of that topic, have none)."""
    from pyiceberg.exceptions import NoSuchTableError

    plans: dict[str, CommitPlan] = {}
    for table in (SIGNALS, SCORES, QUARANTINE, DECONFLICTION):
        try:
            loaded = cat.load_table((namespace, table.name))
        except NoSuchTableError:
            continue
        plan = CommitPlan.from_table(loaded, topic)
        if len(plan):
            plans[table.name] = plan
    return plans
