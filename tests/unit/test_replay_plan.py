"""Commit plans: a replay batched like the original's commits writes byte-identical data files.

The real flow runs in-process (Bytewax's TestingSource, a SQLite catalog): once as the original,
then as a replay with the original's commit plans and a different source and lake batching.
Every data file of every table has a byte-identical twin, commit for commit. A replay over more
or fewer records than the original had still lands every row it should (the rows the plan lacks
follow it; commits it covers in part are emitted at the end of input).
"""

from __future__ import annotations

import dataclasses
import itertools
from operator import attrgetter
from typing import Any, cast

import bytewax.operators as op
import hypothesis.strategies as st
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from hypothesis import HealthCheck, example, given, settings
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation

from core.records import Provenance, RawRecord
from core.settings import Settings
from core.switches import NO_HOLDS
from flows.coherence import build, planned_runs
from igflow.workload import SOURCES, WorkloadSpec, generate, tenant_ids
from operators.batching import Runs, flatten
from operators.tenancy import TenancyPolicy
from replay.verify import compare, digest_table, files_identical
from sinks.iceberg import ensure_table
from sinks.lake_plan import (
    CommitPlan,
    PlannedSink,
    _PlannedBatches,
    laid_out,
    load_plans,
    planned_batches,
    spreads,
)
from sinks.lake_tables import (
    DECONFLICTION,
    LEGACY_PARTITION_SPECS,
    QUARANTINE,
    SCORES,
    SIGNALS,
    TableDef,
)
from tenancy.registry import StaticTenants
from tests.conftest import SIGNAL_V1, V1_ID, DictSchemas, kafka_messages
from tests.memory_keys import memory_sealer

POLICY = TenancyPolicy.load(Settings().policies_dir)
TENANTS = StaticTenants.of(*tenant_ids(4), sources=SOURCES)
LANDED = (SIGNALS.name, SCORES.name, QUARANTINE.name)
_NAMESPACES = itertools.count()

#: One in-memory key store for the module: runs compared with each other seal alike.
SEALER = memory_sealer()


def _land(
    settings_: Settings,
    schemas: DictSchemas,
    records: list[RawRecord],
    namespace: str,
    source_batch: int,
    lake_batch: int,
    plans: dict[str, CommitPlan] | None = None,
    workers: int = 1,
) -> None:
    flow = build(
        settings_.with_changes("lake", namespace=namespace, batch_max_rows=lake_batch),
        source=TestingSource(records, batch_size=source_batch),
        lookup=schemas,
        dlq=TestingSink([]),
        tenants=TENANTS,
        holds=NO_HOLDS,
        policy=POLICY,
        sealer=SEALER,
        plans=plans,
    )
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)


def _table(catalog: Catalog, namespace: str, name: str) -> Table | None:
    try:
        return catalog.load_table((namespace, name))
    except NoSuchTableError:
        return None


def _lay_out_legacy(catalog: Catalog, namespace: str) -> None:
    """Create the signals and scores tables of ``namespace`` in the layout before session 21
    (by tenant), as a lake written then holds them."""
    for table in (SIGNALS, SCORES):
        spec = LEGACY_PARTITION_SPECS[table.name]
        ensure_table(catalog, namespace, dataclasses.replace(table, partition_spec=spec))


def _layout(table: Table) -> list[tuple[str, str]]:
    return [(f.name, str(f.transform)) for f in table.spec().fields]


def _snapshots(table: Table) -> int:
    """The table's appends: its snapshots but the manifest compactions' (``replace``, which a
    plan skips: an example of more than ``lake.manifests_kept`` commits has one)."""
    return sum(
        1
        for s in table.metadata.snapshots
        if s.summary is None or s.summary.operation != Operation.REPLACE
    )


def test_a_plan_maps_each_offset_to_the_commit_that_raised_its_lane() -> None:
    t, a, b = "topic", "signals:a", "signals:b"
    plan = CommitPlan.from_ledgers(
        [
            (1, {(t, 0, a): 4}),
            (2, {(t, 0, a): 4, (t, 0, b): 6, ("other", 0, a): 9}),
            (3, {(t, 0, a): 4, (t, 0, b): 6, ("other", 0, a): 12}),  # another topic only
            (4, {(t, 0, a): 10, (t, 0, b): 8}),
        ],
        topic=t,
    )
    assert [(c.snapshot_id, c.lanes) for c in plan.commits] == [(1, 1), (2, 1), (4, 2)]
    assert plan.commit_of(t, 0, a, 0) == (0, False)
    assert plan.commit_of(t, 0, a, 4) == (0, True)
    assert plan.commit_of(t, 0, a, 5) == (2, False)
    assert plan.commit_of(t, 0, a, 10) == (2, True)
    assert plan.commit_of(t, 0, b, 6) == (1, True)
    assert plan.commit_of(t, 0, b, 7) == (2, False)
    assert plan.commit_of(t, 0, a, 11) == (-1, False)  # past every mark
    assert plan.commit_of(t, 1, a, 0) == (-1, False)  # a lane the original never had
    assert plan.commit_of("other", 0, a, 9) == (-1, False)


_specs = st.builds(
    WorkloadSpec,
    tenants=st.integers(1, 4),
    count=st.integers(5, 60),
    seed=st.integers(0, 2**16),
    duplicates=st.sampled_from([0.0, 0.1]),
    invalid=st.sampled_from([0.0, 0.1]),
    bad=st.integers(0, 3),
)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
# More commits than lake.manifests_kept: the original and the replay each compact their manifests
# once (a snapshot the plan skips).
@example(
    spec=WorkloadSpec(tenants=4, count=60, seed=1),
    partitions=1,
    source_batches=(40, 40),
    lake_batches=(6, 6),
    legacy=False,
)
@given(
    spec=_specs,
    partitions=st.integers(1, 3),
    source_batches=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    lake_batches=st.tuples(st.integers(1, 60), st.integers(1, 60)),
    legacy=st.booleans(),
)
def test_a_replay_with_the_original_plan_writes_byte_identical_files(
    lake_settings: Settings,
    catalog: Catalog,
    schemas: DictSchemas,
    spec: WorkloadSpec,
    partitions: int,
    source_batches: tuple[int, int],
    lake_batches: tuple[int, int],
    legacy: bool,
) -> None:
    records = kafka_messages(list(generate(spec, V1_ID, SIGNAL_V1.parsed)), partitions)
    n = next(_NAMESPACES)
    original, replayed = f"plan{n}_a", f"plan{n}_b"
    if legacy:  # the replay lays its tables out like the original's
        _lay_out_legacy(catalog, original)
    _land(lake_settings, schemas, records, original, source_batches[0], lake_batches[0])
    plans = load_plans(catalog, original, lake_settings.kafka.topic)
    _land(lake_settings, schemas, records, replayed, source_batches[1], lake_batches[1], plans)

    files = 0
    for name in LANDED:
        a, b = _table(catalog, original, name), _table(catalog, replayed, name)
        assert (a is None) == (b is None), name
        if a is None or b is None:
            continue
        assert _layout(a) == _layout(b), name
        assert compare(digest_table(a, name), digest_table(b, name)).identical, name
        same, total = files_identical(a, b)
        assert same == total, f"{name}: {same}/{total} files byte-identical"
        assert _snapshots(b) == _snapshots(a) == len(plans.get(name, ())), name
        files += total
    assert files > 0, "nothing landed: the law would hold vacuously"


def test_a_replay_past_the_original_or_short_of_it_lands_every_row(
    lake_settings: Settings, catalog: Catalog, schemas: DictSchemas
) -> None:
    spec = WorkloadSpec(tenants=3, count=80, duplicates=0.1, invalid=0.1, bad=2, seed=3)
    records = kafka_messages(list(generate(spec, V1_ID, SIGNAL_V1.parsed)), partitions=2)
    half = records[: len(records) // 2]
    _land(lake_settings, schemas, half, "short_orig", 7, 25)
    _land(lake_settings, schemas, records, "full_orig", 7, 25)
    # Past the original: the plan of the first half, then the rows it lacks.
    _land(
        lake_settings,
        schemas,
        records,
        "past",
        13,
        40,
        load_plans(catalog, "short_orig", lake_settings.kafka.topic),
    )
    # Short of it: the plan of everything, over the first half (its last commits incomplete).
    _land(
        lake_settings,
        schemas,
        half,
        "short",
        13,
        40,
        load_plans(catalog, "full_orig", lake_settings.kafka.topic),
    )
    for name in LANDED:
        for expected, got in (("full_orig", "past"), ("short_orig", "short")):
            a, b = _table(catalog, expected, name), _table(catalog, got, name)
            assert a is not None and b is not None, name
            report = compare(digest_table(a, name), digest_table(b, name))
            assert report.identical, f"{name} {got}: {[g.key for g in report.mismatched]}"
    # The commits the plan covered in full are byte-identical: the first half's in "past".
    same, total = files_identical(
        *(t for t in (_table(catalog, ns, SIGNALS.name) for ns in ("short_orig", "past")) if t)
    )
    assert same == total > 0


def test_a_plan_counts_each_commits_lanes_per_tenant() -> None:
    t = "topic"
    plan = CommitPlan.from_ledgers(
        [
            (1, {(t, 0, "signals:a"): 4, (t, 1, "signals:a"): 2}),
            (2, {(t, 0, "signals:a"): 4, (t, 1, "signals:a"): 2, (t, 0, "signals:b"): 6}),
            (3, {(t, 0, "signals:a"): 9, (t, 1, "signals:a"): 2, (t, 0, "signals:b"): 8}),
        ],
        topic=t,
    )
    assert plan.lanes_of(None) == {0: 2, 1: 1, 2: 2}
    assert plan.lanes_of("a") == {0: 2, 2: 1}
    assert plan.lanes_of("b") == {1: 1, 2: 1}
    assert plan.lanes_of("never") == {}
    assert not plan.spread and plan.spread_over_workers().spread and not plan.spread


def test_only_tables_partitioned_by_their_lanes_tenant_spread() -> None:
    # Laid out by day and residency (by day), two tenants' rows share a file; so do
    # quarantine's (by reason) and deconfliction's.
    assert not any(map(spreads, (SIGNALS, SCORES, QUARANTINE, DECONFLICTION)))
    # A table laid out by tenant (the layout before session 21) spreads, and a replay of one
    # takes its layout from the original's table.
    for table in (SIGNALS, SCORES):
        legacy = CommitPlan([], {})
        legacy.spec = LEGACY_PARTITION_SPECS[table.name]
        assert spreads(laid_out(table, legacy))
        assert laid_out(table, CommitPlan([], {})) is table and laid_out(table, None) is table


class _Appends(StatelessSinkPartition[tuple[str, list[int]]]):
    """A sink partition that records each batch it is given (the lake's appends)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.closed = False

    def write_batch(self, items: list[tuple[str, list[int]]]) -> None:
        self.batches.extend(rows for _key, rows in items)

    def close(self) -> None:
        self.closed = True


class _Built(DynamicSink[tuple[str, list[int]]]):
    def __init__(self, partition: _Appends) -> None:
        self.partition = partition

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Appends:
        return self.partition


def test_a_planned_sink_appends_distinct_tenants_parts_together_and_one_tenants_apart() -> None:
    appends = _Appends()
    part = PlannedSink(_Built(appends)).build("lake", 0, 1)
    part.write_batch([("a", [1, 2]), ("b", [3])])
    part.write_batch([("c", [4])])
    assert appends.batches == []  # held: another tenant's part may still come
    part.write_batch([("b", [5]), ("a", [6])])  # b again: what is held lands first
    assert appends.batches == [[1, 2, 3, 4]]
    part.write_batch([("a", [7])])
    assert appends.batches == [[1, 2, 3, 4], [5, 6]]
    part.close()
    assert appends.batches == [[1, 2, 3, 4], [5, 6], [7]] and appends.closed


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    spec=_specs,
    partitions=st.integers(1, 3),
    source_batches=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    lake_batches=st.tuples(st.integers(1, 60), st.integers(1, 60)),
    legacy=st.booleans(),
)
def test_a_replay_by_two_workers_with_the_plan_spread_writes_byte_identical_files(
    lake_settings: Settings,
    catalog: Catalog,
    schemas: DictSchemas,
    spec: WorkloadSpec,
    partitions: int,
    source_batches: tuple[int, int],
    lake_batches: tuple[int, int],
    legacy: bool,
) -> None:
    records = kafka_messages(list(generate(spec, V1_ID, SIGNAL_V1.parsed)), partitions)
    n = next(_NAMESPACES)
    original, replayed = f"spread{n}_a", f"spread{n}_b"
    if legacy:  # the replay lays its tables out like the original's
        _lay_out_legacy(catalog, original)
    _land(lake_settings, schemas, records, original, source_batches[0], lake_batches[0])
    plans = load_plans(catalog, original, lake_settings.kafka.topic)
    spread = {name: plan.spread_over_workers() for name, plan in plans.items()}
    _land(lake_settings, schemas, records, replayed, source_batches[1], lake_batches[1], spread, 2)

    files = 0
    for name in LANDED:
        a, b = _table(catalog, original, name), _table(catalog, replayed, name)
        assert (a is None) == (b is None), name
        if a is None or b is None:
            continue
        assert _layout(a) == _layout(b), name
        assert compare(digest_table(a, name), digest_table(b, name)).identical, name
        same, total = files_identical(a, b)
        assert same == total, f"{name}: {same}/{total} files byte-identical"
        files += total
    assert files > 0, "nothing landed: the law would hold vacuously"


@dataclasses.dataclass(frozen=True, slots=True)
class _Row:
    """A landed row as the plan's step sees it: its provenance and its lane."""

    provenance: Provenance
    lane: str


#: SIGNALS, reading a :class:`_Row`'s provenance and lane.
_ROWS: TableDef[Any] = dataclasses.replace(
    cast("TableDef[Any]", SIGNALS),
    provenance=attrgetter("provenance"),
    lane=attrgetter("lane"),
    lane_column=None,  # its lanes are the rows' own, not the stage and tenant's
)
_LANES = [("t", 0, "signals:a"), ("t", 0, "signals:b"), ("t", 1, "signals:a"), ("u", 0, "x:a")]
_ledgers = st.lists(
    st.dictionaries(st.sampled_from(_LANES), st.integers(0, 12), max_size=4),
    max_size=6,
)
_rows = st.lists(st.tuples(st.sampled_from([*_LANES, ("t", 2, "signals:c")]), st.integers(0, 14)))


def _plan_and_rows(
    ledgers: list[dict[tuple[str, int, str], int]],
    rows: list[tuple[tuple[str, int, str], int]],
) -> tuple[CommitPlan, list[_Row]]:
    """A plan of topic ``t`` from snapshots raising ``ledgers``' lanes by their steps, and the
    rows (offsets at, between, before or past the marks; lanes the plan lacks)."""
    marks: dict[tuple[str, int, str], int] = {}
    history = []
    for i, raised in enumerate(ledgers):  # each snapshot's ledger: marks only rise
        for lane, step in raised.items():
            marks[lane] = marks.get(lane, -1) + 1 + step
        history.append((i + 1, dict(marks)))
    items = [
        _Row(Provenance(topic, partition, offset, 1, f"h{n}"), lane)
        for n, ((topic, partition, lane), offset) in enumerate(rows)
    ]
    return CommitPlan.from_ledgers(history, topic="t"), items


def _planned(
    plan: CommitPlan, runs: list[tuple[str, list[_Row]]], batch: int, *, by_run: bool
) -> list[tuple[str, list[_Row]]]:
    """The batches the plan's step emits for ``runs`` (one worker): fed a run at a time
    (:func:`flows.coherence.planned_runs`) or row by row (:func:`planned_batches`)."""
    flow = Dataflow("plan")
    up = cast("Runs[_Row]", op.input("in", flow, TestingSource(runs, batch_size=batch)))
    if by_run:
        out = planned_runs("plan", up, _ROWS, plan, 3)
    else:
        out = planned_batches("plan", flatten("rows", up), _ROWS, plan, 3)
    got: list[tuple[str, list[_Row]]] = []
    op.output("out", out, TestingSink(got))
    run_main(flow)
    return got


@settings(max_examples=100, deadline=None)
@given(
    ledgers=_ledgers,
    rows=_rows,
    cuts=st.lists(st.integers(0, 40), max_size=6),
    batch=st.integers(1, 5),
    spread=st.booleans(),
)
def test_the_plan_fed_a_run_at_a_time_emits_the_batches_of_the_row_by_row_form(
    ledgers: list[dict[tuple[str, int, str], int]],
    rows: list[tuple[tuple[str, int, str], int]],
    cuts: list[int],
    batch: int,
    spread: bool,
) -> None:
    """:func:`flows.coherence.planned_runs` emits the batches :func:`planned_batches` emits
    for the same rows, each key's in order, however they are cut into runs and engine
    batches; also keyed by lane tenant (a spread plan), runs mixing tenants included."""
    plan, items = _plan_and_rows(ledgers, rows)
    plan = plan.spread_over_workers(spread)
    bounds = sorted({0, len(items), *(min(c, len(items)) for c in cuts)})
    runs = [("any", items[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
    got = _planned(plan, runs, batch, by_run=True)
    want = _planned(plan, runs, batch, by_run=False)
    for key in {k for k, _rows in got + want}:
        assert [b for k, b in got if k == key] == [b for k, b in want if k == key], key
    assert sorted(row.provenance.input_hash for _key, rows in got for row in rows) == sorted(
        row.provenance.input_hash for row in items
    )


@settings(max_examples=300, deadline=None)
@given(
    ledgers=_ledgers,
    rows=_rows,
    cuts=st.lists(st.integers(0, 40), max_size=6),
    by_tenant=st.booleans(),
)
def test_placing_rows_in_their_planned_commits_is_the_row_by_row_reference(
    ledgers: list[dict[tuple[str, int, str], int]],
    rows: list[tuple[tuple[str, int, str], int]],
    cuts: list[int],
    by_tenant: bool,
) -> None:
    """:meth:`_PlannedBatches._place` (commit_of inlined) and its reference
    :meth:`_PlannedBatches._place_python` leave the same pending rows, closed counts and
    unplanned rows, so the step emits the same batches, however the rows are batched (also
    once commits have gone out and a row comes back to one of them)."""
    plan, items = _plan_and_rows(ledgers, rows)
    fast = _PlannedBatches(plan, _ROWS, 3, None, by_tenant=by_tenant)
    slow = _PlannedBatches(plan, _ROWS, 3, None, by_tenant=by_tenant)
    slow._place = slow._place_python  # type: ignore[method-assign]
    bounds = sorted({0, len(items), *(min(c, len(items)) for c in cuts)})
    for a, b in itertools.pairwise(bounds):
        got, want = fast.on_batch(items[a:b]), slow.on_batch(items[a:b])
        assert [list(x) for x in got[0]] == [list(x) for x in want[0]]
        assert fast.snapshot() == slow.snapshot()
    assert list(fast.on_eof()[0]) == list(slow.on_eof()[0])
    assert fast.snapshot() == slow.snapshot()
