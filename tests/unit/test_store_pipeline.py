"""The serving stores' write pipeline: order, bounds, drain, errors, and what a crash keeps.

The store here is an honest in-memory one (a list per writer, a gate that pauses it); the
engine is the real Bytewax (``run_main``, its recovery store and ``TestingSource.ABORT``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, run_main
from prometheus_client import REGISTRY

from core.settings import KafkaSettings, StoreSettings
from sinks.dlq import DeadLetterTarget
from sinks.serving import PipelinedPartition, ServingSink
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
