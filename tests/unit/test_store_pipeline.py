"""The serving stores' write pipeline: order, bounds, drain, errors, and what a crash keeps.

The store here is an honest in-memory one (a list per writer, a gate that pauses it); the
engine is the real Bytewax (``run_main``, its recovery store and ``TestingSource.ABORT``).
"""

from __future__ import annotations

import threading
import time
import unittest.mock
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, run_main
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from core.records import Decoded, PolicyTags, Provenance, ScoreChange, Signal, Tagged
from core.settings import KafkaSettings, StoreSettings
from sinks.dlq import DeadLetterTarget
from sinks.serving import PipelinedPartition, ServingSink, tenant_lanes
from sinks.store_pipeline import StorePipeline, StoreWriterFailed

Item = tuple[str, int]  # (tenant, number)


class GatedStore:
    """Records each write (a list of items); blocks while its gate is closed. ``dead``: the
    process it belonged to is gone, so what it writes from then on is discarded."""

    def __init__(self, *, open_: bool = True) -> None:
        self.gate = threading.Event()
        if open_:
            self.gate.set()
        self.dead = False
        self.writes: list[list[Item]] = []
        self.entered = threading.Event()

    def write(self, batch: Sequence[Item]) -> None:
        self.entered.set()
        self.gate.wait()
        if not self.dead:
            self.writes.append(list(batch))

    def die(self) -> None:
        """The process ends here: what this store still writes is lost."""
        self.dead = True
        self.gate.set()

    @property
    def items(self) -> list[Item]:
        return [item for write in self.writes for item in write]


def _wait(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _items(n: int, tenants: int = 3) -> list[Item]:
    return [(f"t{i % tenants}", i) for i in range(n)]


def test_items_are_written_in_order_in_chunks_of_at_most_the_batch_size() -> None:
    store = GatedStore(open_=False)
    pipe = StorePipeline("unit-order", store.write, batch_size=7, max_in_flight=100)
    items = _items(95)
    for start in range(0, len(items), 3):  # Bytewax's small batches …
        pipe.put(items[start : start + 3])
    store.gate.set()
    pipe.close()
    assert store.items == items
    # … coalesce into store-sized writes once the store lets them through.
    assert all(1 <= len(w) <= 7 for w in store.writes)
    assert max(len(w) for w in store.writes) == 7


def test_put_blocks_only_once_the_pipeline_holds_its_bound() -> None:
    store = GatedStore(open_=False)
    pipe = StorePipeline("unit-bound", store.write, batch_size=10, max_in_flight=3)
    assert pipe.limit == 30
    before = REGISTRY.get_sample_value("igflow_sink_blocked_seconds_total", {"sink": "unit-bound"})
    pipe.put(_items(30))  # the bound: returns at once although the store is paused
    assert len(pipe.unacknowledged()) == 30
    done = threading.Event()

    def put_more() -> None:
        pipe.put(_items(5))
        done.set()

    worker = threading.Thread(target=put_more)
    worker.start()
    assert not done.wait(0.3), "a full pipeline must make the worker wait"
    assert REGISTRY.get_sample_value("igflow_sink_pending_rows", {"sink": "unit-bound"}) == 30
    store.gate.set()
    assert done.wait(5)
    worker.join()
    pipe.close()
    assert store.items == _items(30) + _items(5)
    after = REGISTRY.get_sample_value("igflow_sink_blocked_seconds_total", {"sink": "unit-bound"})
    assert (after or 0.0) - (before or 0.0) >= 0.3


def test_unacknowledged_holds_the_chunk_being_written_and_what_waits() -> None:
    store = GatedStore(open_=False)
    pipe = StorePipeline("unit-snap", store.write, batch_size=4, max_in_flight=10)
    pipe.put(_items(10))
    assert store.entered.wait(5)  # the writer holds the first chunk, unacknowledged
    assert pipe.unacknowledged() == _items(10)
    store.gate.set()
    _wait(lambda: not pipe.unacknowledged())
    pipe.close()
    assert store.items == _items(10)


def test_a_resumed_pipeline_writes_what_it_was_handed_first() -> None:
    store = GatedStore()
    pipe = StorePipeline(
        "unit-resume", store.write, batch_size=4, max_in_flight=2, pending=_items(9)
    )
    pipe.put([("t9", 100)])
    pipe.close()
    assert store.items == [*_items(9), ("t9", 100)]


def test_close_drains_everything_put() -> None:
    store = GatedStore(open_=False)
    pipe = StorePipeline("unit-drain", store.write, batch_size=5, max_in_flight=50)
    pipe.put(_items(123))
    threading.Timer(0.2, store.gate.set).start()
    pipe.close()  # waits for the store
    assert store.items == _items(123)


def test_an_error_in_the_writer_surfaces_on_the_worker() -> None:
    def failing(batch: Sequence[Item]) -> None:
        msg = "permission denied"
        raise PermissionError(msg)

    pipe = StorePipeline("unit-error", failing, batch_size=5, max_in_flight=2)
    pipe.put(_items(3))
    with pytest.raises(StoreWriterFailed) as raised:
        _wait(lambda: pipe.unacknowledged() is None)  # raises once the thread has stopped
    assert isinstance(raised.value.__cause__, PermissionError)
    with pytest.raises(StoreWriterFailed):
        pipe.put(_items(1))
    # Raised on the worker already: close (Bytewax's Drop while the flow unwinds) stays quiet.
    pipe.close()
    # Nothing was acknowledged: what it held is still there for a snapshot taken before.


def test_close_raises_a_writer_error_the_worker_has_not_seen() -> None:
    """The end of input: close is where a failure first reaches the worker, and the flow fails."""

    def failing(batch: Sequence[Item]) -> None:
        msg = "permission denied"
        raise PermissionError(msg)

    pipe = StorePipeline("unit-error-close", failing, batch_size=5, max_in_flight=2)
    pipe.put(_items(3))
    with pytest.raises(StoreWriterFailed):
        pipe.close()


def test_close_leaves_its_error_to_the_log_once_another_writers_error_was_raised() -> None:
    """Regression: two stores failed at once; the worker raised the first's error, and the
    second's close (Bytewax's Drop while the flow unwinds) raised its own: SIGABRT
    (tests/unit/test_sink_failure_exit.py runs it in the engine)."""

    def failing(batch: Sequence[Item]) -> None:
        msg = "store down"
        raise ConnectionError(msg)

    first = StorePipeline("unit-error-first", failing, batch_size=5, max_in_flight=2)
    second = StorePipeline("unit-error-second", failing, batch_size=5, max_in_flight=2)
    first.put(_items(1))
    second.put(_items(1))
    with pytest.raises(StoreWriterFailed):
        _wait(lambda: first.unacknowledged() is None)
    second.close()  # logged by its writer when it stopped; the flow fails with the first
    first.close()
    # A pipeline built after that failure raises its own at close as before.
    later = StorePipeline("unit-error-later", failing, batch_size=5, max_in_flight=2)
    later.put(_items(1))
    with pytest.raises(StoreWriterFailed):
        later.close()


def test_a_worker_waiting_on_a_full_pipeline_is_woken_by_the_writers_error() -> None:
    gate = threading.Event()

    def failing(batch: Sequence[Item]) -> None:
        gate.wait()
        msg = "bad command"
        raise ValueError(msg)

    pipe = StorePipeline("unit-error-wait", failing, batch_size=2, max_in_flight=1)
    pipe.put(_items(2))
    threading.Timer(0.1, gate.set).start()
    with pytest.raises(StoreWriterFailed):
        pipe.put(_items(2))  # blocked on the bound until the writer fails


# --- in the engine: a serving sink whose store pauses, a crash, a resume -----------------------


class _Sink(ServingSink[Item]):
    """A serving sink over :class:`GatedStore`: each execution (``build_part``) gets the next
    store of ``stores``, as a restarted process would get a new connection."""

    def __init__(self, stores_: list[GatedStore], settings: StoreSettings) -> None:
        super().__init__(settings, DeadLetterTarget.of(KafkaSettings()))
        self.stores = stores_
        self.built = 0

    def build_part(
        self, step_id: str, for_part: str, resume_state: list[Item] | None
    ) -> PipelinedPartition[Item]:
        store = self.stores[self.built]
        self.built += 1
        return _Partition(store, self._stores, self._dead_letters, resume_state)


class _Partition(PipelinedPartition[Item]):
    def __init__(
        self,
        store: GatedStore,
        settings: StoreSettings,
        dead_letters: DeadLetterTarget,
        resume: list[Item] | None,
    ) -> None:
        super().__init__(
            "unit-engine",
            store,
            settings,
            dead_letters,
            transient=lambda exc: False,
            resume=resume,
        )
        self._store = store

    def close(self) -> None:
        # Bytewax closes a partition at an ABORT too (after its last snapshot), where a SIGKILL
        # would not: the "process" ends here, so nothing its store writes from now on counts.
        if not self._store.gate.is_set():
            self._store.die()
        super().close()


def _flow(items: list[object], sink: _Sink) -> Dataflow:
    flow = Dataflow("store_pipeline_test")
    up = op.input("in", flow, TestingSource(items, batch_size=5))
    op.output("store", op.key_on("by_tenant", up, lambda item: item[0]), sink)
    return flow


def test_a_clean_run_writes_everything_once_in_order_per_tenant() -> None:
    store = GatedStore()
    items = _items(200)
    run_main(_flow(list(items), _Sink([store], StoreSettings(batch_size=16, max_in_flight=2))))
    assert store.items == items


def test_what_a_paused_store_held_at_the_crash_is_written_after_the_resume(
    tmp_path: Path,
) -> None:
    """The first execution's store never acknowledges anything (paused until the process dies):
    the source's snapshot is past items the store never got, so only the sink's snapshot can
    bring them back."""
    items = _items(100, tenants=4)
    paused, resumed = GatedStore(open_=False), GatedStore()
    sink = _Sink([paused, resumed], StoreSettings(batch_size=10, max_in_flight=20))
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path), timedelta(0))
    crashing: list[object] = [*items[:60], TestingSource.ABORT(), *items[60:]]
    try:
        run_main(_flow(crashing, sink), epoch_interval=timedelta(0), recovery_config=recovery)
        assert paused.entered.is_set()
        assert paused.items == []
        run_main(_flow(crashing, sink), epoch_interval=timedelta(0), recovery_config=recovery)
    finally:
        paused.die()
    # Everything once, each tenant's items in their order (the store's guards rely on it).
    assert sorted(resumed.items) == sorted(items)
    for tenant in ("t0", "t1", "t2", "t3"):
        assert [i for i in resumed.items if i[0] == tenant] == [i for i in items if i[0] == tenant]


# --- lanes: kinds of items no write orders against each other, each on its own thread -----------


def _odd(item: Item) -> int:
    """The lanes of these tests: odd numbers on lane 1, even on lane 0."""
    return item[1] % 2


def _laned(name: str, zero: GatedStore, one: GatedStore, **kw: object) -> StorePipeline[Item]:
    return StorePipeline(name, zero.write, lanes=(one.write,), lane_of=_odd, **kw)  # type: ignore[arg-type]


def test_a_lane_is_not_held_behind_another_lanes_write() -> None:
    """The Redis score lane: a change put while a chunk of signals is being written is written
    meanwhile, not after it."""
    evens, odds = GatedStore(open_=False), GatedStore()
    pipe = _laned("unit-lanes", evens, odds, batch_size=50, max_in_flight=4)
    items = _items(40)
    pipe.put(items[:20])
    assert evens.entered.wait(5)  # lane 0 is writing its chunk, paused there
    pipe.put(items[20:])
    _wait(lambda: odds.items == [i for i in items if i[1] % 2])
    assert evens.items == []
    evens.gate.set()
    pipe.close()
    assert evens.items == [i for i in items if i[1] % 2 == 0]


@settings(max_examples=40, deadline=None)
@given(
    puts=st.lists(st.integers(min_value=0, max_value=12), max_size=25),
    batch_size=st.integers(min_value=1, max_value=6),
    max_in_flight=st.integers(min_value=1, max_value=3),
    pending=st.integers(min_value=0, max_value=9),
)
def test_each_lane_keeps_its_order_for_any_puts(
    puts: list[int], batch_size: int, max_in_flight: int, pending: int
) -> None:
    evens, odds = GatedStore(), GatedStore()
    items = _items(pending + sum(puts), tenants=2)
    pipe = _laned(
        "unit-lanes-order",
        evens,
        odds,
        batch_size=batch_size,
        max_in_flight=max_in_flight,
        pending=items[:pending],
    )
    at = pending
    for size in puts:
        pipe.put(items[at : at + size])
        at += size
    pipe.close()
    assert evens.items == [i for i in items if i[1] % 2 == 0]
    assert odds.items == [i for i in items if i[1] % 2]
    assert all(1 <= len(w) <= batch_size for w in evens.writes + odds.writes)


def test_the_bound_is_shared_by_the_lanes() -> None:
    evens, odds = GatedStore(open_=False), GatedStore(open_=False)
    pipe = _laned("unit-lanes-bound", evens, odds, batch_size=5, max_in_flight=2)
    pipe.put(_items(10))  # 5 on each lane: the bound of the pipeline, not of a lane
    done = threading.Event()

    def put_more() -> None:
        pipe.put([("t0", 12)])  # lane 0's
        done.set()

    worker = threading.Thread(target=put_more)
    worker.start()
    assert not done.wait(0.3), "the lanes together hold the bound"
    odds.gate.set()  # room made by the other lane lets it in
    assert done.wait(5)
    worker.join()
    evens.gate.set()
    pipe.close()
    assert evens.items == [*[i for i in _items(10) if i[1] % 2 == 0], ("t0", 12)]


def test_a_laned_snapshot_resumes_each_lane_in_its_order() -> None:
    """The snapshot is every lane's items, lane after lane; a resumed pipeline sorts them back
    (and a snapshot of a pipeline without lanes, its items interleaved, resumes the same way)."""
    evens, odds = GatedStore(open_=False), GatedStore(open_=False)
    items = _items(30)
    pipe = _laned("unit-lanes-snap", evens, odds, batch_size=4, max_in_flight=10)
    pipe.put(items)
    assert evens.entered.wait(5) and odds.entered.wait(5)
    snapshot = pipe.unacknowledged()
    assert snapshot == [i for i in items if i[1] % 2 == 0] + [i for i in items if i[1] % 2]
    evens.die()
    odds.die()
    pipe.close()
    for held in (snapshot, items):  # laned, or an older partition's plain FIFO
        again_evens, again_odds = GatedStore(), GatedStore()
        resumed = _laned(
            "unit-lanes-resume",
            again_evens,
            again_odds,
            batch_size=4,
            max_in_flight=2,
            pending=held,
        )
        resumed.put([("t0", 31), ("t1", 32)])
        resumed.close()
        assert again_evens.items == [*[i for i in items if i[1] % 2 == 0], ("t1", 32)]
        assert again_odds.items == [*[i for i in items if i[1] % 2], ("t0", 31)]


def test_an_error_on_one_lane_stops_the_pipeline() -> None:
    evens = GatedStore(open_=False)

    def failing(batch: Sequence[Item]) -> None:
        msg = "WRONGTYPE"
        raise ValueError(msg)

    pipe = StorePipeline(
        "unit-lanes-error",
        evens.write,
        batch_size=5,
        max_in_flight=4,
        lanes=(failing,),
        lane_of=_odd,
    )
    pipe.put(_items(6))
    with pytest.raises(StoreWriterFailed) as raised:
        _wait(lambda: pipe.unacknowledged() is None)
    assert isinstance(raised.value.__cause__, ValueError)
    evens.gate.set()
    pipe.close()  # raised on the worker already; the other lane's thread has stopped too
    assert all(not thread.is_alive() for thread in pipe._threads)


def test_lanes_need_their_lane_of() -> None:
    store = GatedStore()
    with pytest.raises(ValueError, match="go together"):
        StorePipeline(
            "unit-lanes-bad", store.write, batch_size=1, max_in_flight=1, lanes=(store.write,)
        )


def test_a_partition_with_a_score_writer_writes_the_changes_on_their_own_lane() -> None:
    """The Redis sink's partition: score changes to the second writer, everything else to the
    first, each kind in the order it was put; the snapshot holds both kinds."""
    signals, scores = GatedStore(open_=False), GatedStore()
    part: PipelinedPartition[object] = PipelinedPartition(
        "unit-score-lane",
        signals,  # type: ignore[arg-type]
        StoreSettings(batch_size=3, max_in_flight=10),
        DeadLetterTarget.of(KafkaSettings()),
        transient=lambda exc: False,
        scores=scores,  # type: ignore[arg-type]
    )
    items: list[object] = [_signal(i) if i % 4 else _change(i) for i in range(1, 13)]
    part.write_batch(items)
    assert signals.entered.wait(5)
    _wait(lambda: len(scores.items) == 3)  # not behind the paused signals
    assert scores.items == [i for i in items if isinstance(i, ScoreChange)]
    assert part.snapshot() == [i for i in items if not isinstance(i, ScoreChange)]
    signals.gate.set()
    part.close()
    assert signals.items == [i for i in items if not isinstance(i, ScoreChange)]


def test_the_redis_sink_gives_score_changes_a_lane_and_a_connection_of_their_own() -> None:
    from sinks.redis import RedisSink

    sink = RedisSink(StoreSettings(), DeadLetterTarget.of(KafkaSettings()))
    part = sink.build_part("redis", "0", None)
    try:
        pipeline = part._pipeline
        assert len(pipeline._threads) == 2
        first, second = (w.args[0] for w in pipeline._writes)  # type: ignore[attr-defined]
        assert first is not second  # a RedisWriter (its own client) per lane
        assert pipeline._lane_of is not None
        assert pipeline._lane_of(_change(1)) == 1
        assert pipeline._lane_of(_signal(1)) == 0
    finally:
        part.close()


def test_a_partition_with_tenant_writers_keeps_each_tenant_on_one_lane_in_order() -> None:
    """The graph sink's partition: tenants spread over the writers, each tenant's signals and
    score changes on one lane in the order they were put; a paused lane holds only its own
    tenants; the snapshot holds what is unwritten, and a resumed partition puts it back on the
    same lanes."""
    lane_of = tenant_lanes(2)
    tenants = [f"tenant-{i:02d}" for i in range(4)]
    assert {lane_of(_signal(1, t)) for t in tenants} == {0, 1}  # both lanes get tenants
    first, second = GatedStore(open_=False), GatedStore()

    def build(resume: list[object] | None) -> PipelinedPartition[object]:
        return PipelinedPartition(
            "unit-tenant-lanes",
            first,  # type: ignore[arg-type]
            StoreSettings(batch_size=3, max_in_flight=20),
            DeadLetterTarget.of(KafkaSettings()),
            transient=lambda exc: False,
            resume=resume,
            tenant_writers=[second],  # type: ignore[list-item]
        )

    part = build(None)
    items: list[object] = [
        _change(i, t) if i % 3 == 0 else _signal(i, t) for i in range(1, 31) for t in tenants[:4]
    ]
    part.write_batch(items)
    on_second = [i for i in items if lane_of(i) == 1]
    on_first = [i for i in items if lane_of(i) == 0]
    assert on_first and on_second
    _wait(lambda: len(second.items) == len(on_second))  # not behind the paused lane
    assert second.items == on_second
    assert part.snapshot() == on_first
    assert {_tenant(i) for i in on_first}.isdisjoint({_tenant(i) for i in on_second})
    # A crash now: a resumed partition writes what the first lane held, on the first lane.
    resumed_first, resumed_second = GatedStore(), GatedStore()
    first, second = resumed_first, resumed_second
    again = build(part.snapshot())
    again.close()
    assert resumed_first.items == on_first
    assert resumed_second.items == []


def test_a_partition_with_tenant_writers_and_a_score_writer_puts_every_change_on_its_lane() -> None:
    """The graph sink's partition: the signals spread over the tenant lanes, every score change
    on the lane after them, each in the order it was put; a change is not written behind a
    paused signal lane, and the snapshot holds what is unwritten, on a resume put back on the
    same lanes."""
    lane_of = tenant_lanes(2)
    tenants = [f"tenant-{i:02d}" for i in range(4)]
    first, second, scores = GatedStore(open_=False), GatedStore(), GatedStore()

    def build(resume: list[object] | None) -> PipelinedPartition[object]:
        return PipelinedPartition(
            "unit-tenant-and-score-lanes",
            first,  # type: ignore[arg-type]
            StoreSettings(batch_size=3, max_in_flight=40),
            DeadLetterTarget.of(KafkaSettings()),
            transient=lambda exc: False,
            resume=resume,
            tenant_writers=[second],  # type: ignore[list-item]
            scores=scores,  # type: ignore[arg-type]
        )

    part = build(None)
    items: list[object] = [
        _change(i, t) if i % 3 == 0 else _signal(i, t) for i in range(1, 31) for t in tenants
    ]
    part.write_batch(items)
    changes = [i for i in items if isinstance(i, ScoreChange)]
    on_first = [i for i in items if i not in changes and lane_of(i) == 0]
    on_second = [i for i in items if i not in changes and lane_of(i) == 1]
    assert on_first and on_second
    _wait(lambda: len(scores.items) == len(changes))  # not behind the paused lane
    _wait(lambda: len(second.items) == len(on_second))
    assert scores.items == changes
    assert second.items == on_second
    assert part.snapshot() == on_first
    # A crash now: a resumed partition writes what the first lane held, on the first lane.
    resumed = GatedStore(), GatedStore(), GatedStore()
    first, second, scores = resumed
    again = build(part.snapshot() + changes[:2])
    again.close()
    assert resumed[0].items == on_first
    assert resumed[1].items == []
    assert resumed[2].items == changes[:2]


def test_the_graph_sink_spreads_tenants_over_its_writers() -> None:
    from sinks.graph import GraphSink

    sink = GraphSink(StoreSettings(graph_writers=3), DeadLetterTarget.of(KafkaSettings()))
    with unittest.mock.patch("sinks.graph.GraphWriter.ensure_schema"):  # no server here
        part = sink.build_part("graph", "0", None)
    try:
        pipeline = part._pipeline
        assert len(pipeline._threads) == 4
        writers = [w.args[0] for w in pipeline._writes]  # type: ignore[attr-defined]
        assert len({id(w) for w in writers}) == 4  # a GraphWriter (its own sessions) per lane
        assert pipeline._lane_of is not None
        lanes = {pipeline._lane_of(_signal(1, f"tenant-{i}")) for i in range(30)}
        assert lanes == {0, 1, 2}
        for i in range(30):
            assert pipeline._lane_of(_change(1, f"tenant-{i}")) == 3  # the score lane
    finally:
        part.close()


def test_the_graph_sink_on_falkordb_keeps_a_tenants_changes_on_its_signals_lane() -> None:
    # FalkorDB has no constraints: a tenant's items stay serialized on one lane (sinks/graph.py).
    from sinks.graph import GraphSink

    stores = StoreSettings(graph_writers=2, graph_compat="falkordb")
    sink = GraphSink(stores, DeadLetterTarget.of(KafkaSettings()))
    with (
        unittest.mock.patch("sinks.graph.GraphWriter.ensure_schema"),
        unittest.mock.patch("sinks.graph.server_for"),  # no server here
    ):
        part = sink.build_part("graph", "0", None)
    try:
        pipeline = part._pipeline
        assert len(pipeline._threads) == 2
        assert pipeline._lane_of is not None
        for i in range(30):
            tenant = f"tenant-{i}"
            assert pipeline._lane_of(_change(1, tenant)) == pipeline._lane_of(_signal(2, tenant))
    finally:
        part.close()


def _tenant(item: object) -> str:
    return item.tenant_id if isinstance(item, ScoreChange) else item.decoded.signal.tenant_id  # type: ignore[attr-defined]


_T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _change(seq: int, tenant: str = "t") -> ScoreChange:
    return ScoreChange(
        tenant,
        0.8,
        "HEALTHY",
        _T0,
        1,
        1.0,
        "prov",
        Provenance("topic", 0, seq, 1, "0" * 64),
        seq=seq,
    )


def _signal(offset: int, tenant: str = "t") -> Tagged:
    sig = Signal(tenant, f"s-{offset}", "latency", 0.5, None, "src", _T0)
    decoded = Decoded(sig, Provenance("topic", 0, offset, 1, "0" * 64))
    return Tagged(decoded, PolicyTags("b", "standard-365d", "l", "US"), "p" * 64, "prov")
