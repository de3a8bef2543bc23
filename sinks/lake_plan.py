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
match).

With one worker everything funnels through it and each planned commit is one append, commit for
commit. With several (``-w`` or ``-i/-a``) a table partitioned by its lane's tenant
(:func:`spreads`: signals, scores) is keyed by that tenant instead, like the run's collect, so a
row stays on the worker that tagged it (the constant key moved every lake row to one worker,
pickled between processes: the 2-process replay paid more CPU for it than for the whole run).
Each worker then emits its tenants' parts of each commit, and :class:`PlannedSink` appends the
parts of distinct tenants together: a data file holds the rows of one partition (day, tenant)
of one append, so it is the original's file whether or not other tenants' parts, of this commit
or another, share the append; two parts of one tenant never do (its lanes' commits stay in
order). The data files stay byte-identical; the snapshots are per worker. The other tables
(quarantine is partitioned by reason) keep the constant key.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import KeyedStream, StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from pyiceberg.catalog import Catalog
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform

from core import _native
from sinks.lake_tables import DECONFLICTION, QUARANTINE, SCORES, SIGNALS, TableDef
from sinks.ledger_format import Ledger, properties_ledger
from sinks.ledger_history import read_history

__all__ = [
    "CommitPlan",
    "PlannedCommit",
    "PlannedSink",
    "laid_out",
    "lane_tenant",
    "load_plans",
    "planned_batches",
    "planned_logic",
    "planned_sink",
    "spreads",
]

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
        #: Per lane's tenant, per commit, how many of that tenant's lanes it raised.
        self._tenant_lanes: dict[str, dict[int, int]] = {}
        for (_topic, _partition, lane), indexes in self._index.items():
            counts = self._tenant_lanes.setdefault(lane_tenant(lane), {})
            for i in indexes:
                counts[i] = counts.get(i, 0) + 1
        #: Whether several workers replay (:func:`planned_batches` keys by tenant then).
        self.spread = False
        #: The original table's partition spec (:meth:`from_table`): a replay lays its table out
        #: the same (:func:`laid_out`), so its files can come out byte-identical to a table's
        #: written in an older layout (``sinks.lake_tables.LEGACY_PARTITION_SPECS``).
        self.spec: PartitionSpec | None = None

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
        """The plan of ``table``'s current lineage (snapshots without a ledger are skipped): its
        snapshots, and the commits of expired ones from its history files
        (:mod:`sinks.ledger_history`)."""
        history: list[tuple[int, Ledger, bool]] = []
        for commit in read_history(table).commits:
            entry = properties_ledger(table, commit.properties)
            if entry is not None:
                history.append((commit.snapshot_id, *entry))
        history.reverse()  # ancestors come newest first
        plan = cls.from_changes(history, topic)
        plan.spec = table.spec()
        return plan

    def spread_over_workers(self, spread: bool = True) -> CommitPlan:
        """This plan, to be batched by several workers (``spread``) or by one."""
        plan = copy.copy(self)
        plan.spread = spread
        return plan

    def lanes_of(self, tenant: str | None) -> dict[int, int]:
        """Per commit index, how many lanes of ``tenant`` (``None``: of any) it raised; the
        commits that raised none are absent."""
        if tenant is None:
            return {i: c.lanes for i, c in enumerate(self.commits)}
        return dict(self._tenant_lanes.get(tenant, {}))

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


def lane_tenant(lane: str) -> str:
    """The tenant of a ledger lane ``<stage>:<tenant>`` (``""`` for none)."""
    return lane.partition(":")[2]


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
        self,
        plan: CommitPlan,
        table: TableDef[T],
        max_rows: int,
        resume: _State[T] | None,
        *,
        by_tenant: bool = False,
    ) -> None:
        """``by_tenant``: the key is the rows' lane tenant (learnt from the first row), so only
        that tenant's lanes decide when a commit is complete; otherwise every lane does."""
        self._plan = plan
        self._table = table
        self._max_rows = max(1, max_rows)
        self._pending: dict[int, list[T]] = dict(resume.pending) if resume else {}
        self._closed: dict[int, int] = dict(resume.closed) if resume else {}
        self._next = resume.next if resume else 0
        self._unplanned: list[T] = list(resume.unplanned) if resume else []
        #: Per commit of this key, how many of its lanes' mark rows complete it; its commits
        #: in order. ``None`` until the key's tenant is known (``by_tenant``).
        self._need: dict[int, int] | None = None if by_tenant else plan.lanes_of(None)
        self._order: list[int] = sorted(self._need) if self._need is not None else []
        if self._need is None:
            held = [*(i for items in self._pending.values() for i in items), *self._unplanned]
            if held:
                self._learn(held[0])

    def _learn(self, item: T) -> None:
        self._need = self._plan.lanes_of(lane_tenant(self._table.lane(item)))
        self._order = sorted(self._need)

    def on_batch(self, values: list[T]) -> tuple[Iterable[list[T]], bool]:
        if self._need is None and values:
            self._learn(values[0])
        self._place(values)
        return self._drain(final=False), StatefulBatchLogic.RETAIN

    def _place_python(self, values: list[T]) -> None:
        """Each row into its planned commit's pending rows (or the unplanned ones), row by row
        through :meth:`CommitPlan.commit_of`: the reference of :meth:`_place`."""
        provenance, lane_of, commit_of = (
            self._table.provenance,
            self._table.lane,
            self._plan.commit_of,
        )
        pending, closed, unplanned, nxt = self._pending, self._closed, self._unplanned, self._next
        for item in values:
            p = provenance(item)
            at, last = commit_of(p.topic, p.kafka_partition, lane_of(item), p.kafka_offset)
            if at < nxt:
                # No commit held it, or (a second row at one offset of a lane) its commit has
                # gone: the appender's ledger decides, as it would without a plan.
                unplanned.append(item)
                continue
            pending.setdefault(at, []).append(item)
            if last:
                closed[at] = closed.get(at, 0) + 1

    def _place(self, values: list[T]) -> None:
        """:meth:`_place_python` in C (``core._native.plan_place``: the same operations on the
        same objects, commit_of inlined: a lane's marks looked up once per stretch of rows of
        one (topic, partition, lane), a row's mark searched from the row before's first), the
        rows' provenances and lanes read by the table's getters first (at C speed for the
        signals and the scores: :meth:`~sinks.lake_tables.TableDef.lanes`). The replay
        benchmark's ~400,000 rows spent 0.18 s in the Python form of this loop (session 31);
        ``tests/unit/test_replay_plan.py`` holds it equal to the reference."""
        table = self._table
        rows = values if isinstance(values, list) else list(values)
        _native.plan_place(
            rows,
            list(map(table.provenance, rows)),
            table.lanes(rows),
            self._plan._marks,
            self._plan._index,
            self._pending,
            self._closed,
            self._unplanned,
            self._next,
        )

    def on_eof(self) -> tuple[Iterable[list[T]], bool]:
        return self._drain(final=True), StatefulBatchLogic.RETAIN

    def _drain(self, *, final: bool) -> list[list[T]]:
        out: list[list[T]] = []
        commits = len(self._plan.commits)
        need, order = self._need or {}, self._order
        at_order = bisect.bisect_left(order, self._next)
        while at_order < len(order):
            at = order[at_order]
            if not final and self._closed.get(at, 0) < need[at]:
                break
            items = self._pending.pop(at, [])
            self._closed.pop(at, None)
            if items:
                out.append(items)
            at_order += 1
            self._next = at + 1
        if at_order >= len(order):
            # This key's last planned commit is out (or it has none): the rest is unplanned.
            self._next = commits
        if self._next >= commits and self._unplanned:
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


def laid_out(table: TableDef[T], plan: CommitPlan | None) -> TableDef[T]:
    """``table`` partitioned like the original's table of ``plan`` (as it is without a plan, or
    a plan that knows no spec)."""
    if plan is None or plan.spec is None:
        return table
    return dataclasses.replace(table, partition_spec=plan.spec)


def spreads(table: TableDef[T]) -> bool:
    """Whether ``table``'s rows can be batched by their lane's tenant on several workers with
    data files byte-identical to the original's: its lane is ``<stage>:<column>`` and the
    table is partitioned by that column (identity), so two tenants' rows never share a file."""
    if table.lane_column is None:
        return False
    column = table.lane_column[1]
    return any(
        isinstance(f.transform, IdentityTransform)
        and table.schema.find_field(f.source_id).name == column
        for f in table.partition_spec.fields
    )


def planned_batches(
    step_id: str, up: Stream[T], table: TableDef[T], plan: CommitPlan, max_rows: int
) -> KeyedStream[list[T]]:
    """``up``'s rows as the original's commits of ``table`` (see the module docstring), in its
    commit order; rows the plan lacks follow in batches of ``max_rows``. On one worker; or,
    when the ``plan`` is spread and ``table`` :func:`spreads`, keyed by the rows' lane tenant,
    each commit emitted as its parts per tenant (land them with :func:`planned_sink`)."""
    by_tenant = plan.spread and spreads(table)
    if by_tenant:
        lane_of = table.lane

        def tenants(batch: list[T]) -> list[tuple[str, T]]:
            return [(lane_tenant(lane_of(item)), item) for item in batch]

        keyed = op.flat_map_batch(f"{step_id}_tenant", up, tenants)
    else:
        keyed = op.key_on(f"{step_id}_one", up, lambda _item: table.name)
    return op.stateful_batch(step_id, keyed, planned_logic(plan, table, max_rows, by_tenant))


def planned_logic(
    plan: CommitPlan, table: TableDef[T], max_rows: int, by_tenant: bool
) -> Callable[[Any], StatefulBatchLogic[T, list[T], Any]]:
    """The builder of :func:`planned_batches`' stateful logic (its rows keyed by ``table``'s
    name, or by their lane tenant when ``by_tenant``), for a step that feeds it otherwise
    (``flows.coherence.planned_runs``: a run at a time)."""

    def build(resume: Any) -> StatefulBatchLogic[T, list[T], Any]:
        return _PlannedBatches(plan, table, max_rows, resume, by_tenant=by_tenant)

    return build


Batches = tuple[str, list[T]]


def planned_sink(
    sink: DynamicSink[Batches[T]], table: TableDef[T], plan: CommitPlan
) -> DynamicSink[Batches[T]]:
    """The sink for :func:`planned_batches` of ``table``: ``sink`` itself (it must append each
    batch on its own: ``commit_each``), or, when that step emits the parts of commits per
    tenant, a :class:`PlannedSink` around it."""
    return PlannedSink(sink) if plan.spread and spreads(table) else sink


class PlannedSink(DynamicSink[Batches[T]]):
    """Appends the per-tenant parts of planned commits (:func:`planned_batches`, spread) through
    ``sink``, parts of distinct tenants together: each worker holds its parts until one of a
    tenant already held arrives (then it appends what it holds, in one commit) or the input
    ends. Held parts are in no recovery snapshot: a replay runs without a recovery store."""

    def __init__(self, sink: DynamicSink[Batches[T]]) -> None:
        self._sink = sink

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[Batches[T]]:
        return _Together(self._sink.build(step_id, worker_index, worker_count))


class _Together(StatelessSinkPartition[Batches[T]]):
    def __init__(self, inner: StatelessSinkPartition[Batches[T]]) -> None:
        self._inner = inner
        self._held: dict[str, list[T]] = {}

    def write_batch(self, items: list[Batches[T]]) -> None:
        for tenant, rows in items:
            if tenant in self._held:
                self._append()  # a tenant's parts land one after another, never together
            self._held[tenant] = rows

    def _append(self) -> None:
        if self._held:
            rows = [row for part in self._held.values() for row in part]
            self._held = {}
            self._inner.write_batch([("", rows)])

    def close(self) -> None:
        try:
            self._append()
        finally:
            self._inner.close()


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
