"""collect_batches: a batch is due a timeout after its *first* item (op.collect: its last)."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from hypothesis import given, settings
from hypothesis import strategies as st

from core.handed import Handed
from operators.batching import runs_on
from operators.collect import (
    ACK_CHECK,
    CollectLogic,
    CollectState,
    _resumed,
    collect_batches,
    grid_after,
    land_resumed,
)
from tests.runs import random_runs

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        return self.t


def test_the_timeout_counts_from_the_first_item_not_the_last() -> None:
    clock = Clock()
    logic: CollectLogic[int] = CollectLogic(CollectState(), timedelta(seconds=2), 100, clock)
    assert logic.notify_at() is None
    for i in range(10):  # a steady stream: one item every 0.5 s
        assert logic.on_item(i) == ((), StatefulLogic.RETAIN)
        clock.t += timedelta(milliseconds=500)
        # op.collect would now be due 2 s after this item; this batch stays due at T0 + 2 s.
        assert logic.notify_at() == T0 + timedelta(seconds=2)
    assert logic.on_notify() == (([*range(10)],), StatefulLogic.DISCARD)


@given(st.integers(0, 10**12), st.integers(1, 10**8))
def test_grid_after_is_the_next_multiple_of_the_step_on_the_epoch_clock(
    micros: int, step: int
) -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    now = epoch + timedelta(microseconds=micros)
    due = grid_after(now, timedelta(microseconds=step))
    offset = (due - epoch) // timedelta(microseconds=1)
    assert offset % step == 0
    assert now < due <= now + timedelta(microseconds=step)


@given(st.integers(0, 10**12), st.integers(1, 10**8), st.integers(0, 10**8))
def test_grid_after_a_phase_is_the_next_multiple_past_the_phase(
    micros: int, step: int, phase: int
) -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    now = epoch + timedelta(microseconds=micros)
    due = grid_after(now, timedelta(microseconds=step), timedelta(microseconds=phase))
    offset = (due - epoch) // timedelta(microseconds=1)
    assert (offset - phase) % step == 0
    assert now < due <= now + timedelta(microseconds=step)


def test_each_process_of_a_cluster_closes_its_batches_on_its_own_phase() -> None:
    """Two processes' lanes take turns to commit (flows.coherence.commit_phase): process 1 of
    2 closes half a period after process 0; one process alone (or none given) is on the grid."""
    from core.cluster import Cluster
    from core.settings import Settings
    from flows.coherence import commit_phase

    settings = Settings.load().with_changes("lake", batch_max_seconds=2.0)
    two = ("127.0.0.1:1", "127.0.0.1:2")
    assert commit_phase(settings, None) == timedelta(0)
    assert commit_phase(settings, Cluster()) == timedelta(0)
    assert commit_phase(settings, Cluster(0, two)) == timedelta(0)
    assert commit_phase(settings, Cluster(1, two)) == timedelta(seconds=1)
    clock = Clock()
    timeout = timedelta(seconds=2)
    logics = [
        CollectLogic(CollectState[int](), timeout, 100, clock, grid=True, phase=phase)
        for phase in (commit_phase(settings, Cluster(i, two)) for i in range(2))
    ]
    clock.t = T0 + timedelta(milliseconds=100)
    for i, logic in enumerate(logics):
        logic.on_batch([i])
    assert [logic.notify_at() for logic in logics] == [T0 + timeout, T0 + timedelta(seconds=1)]


def test_on_the_grid_every_keys_batch_is_due_at_the_same_instant() -> None:
    """The lake's collect: keys whose first items came at different times close together, at
    most ``timeout`` after their first item (a timer from each first item scattered them)."""
    clock = Clock()
    timeout = timedelta(seconds=2)
    logics = [CollectLogic(CollectState[int](), timeout, 100, clock, grid=True) for _ in range(3)]
    for i, logic in enumerate(logics):  # first items 0.1 s, 0.8 s and 1.9 s past a grid point
        clock.t = T0 + timedelta(milliseconds=(100, 800, 1900)[i])
        logic.on_batch([i])
        assert logic.notify_at() == T0 + timeout
    clock.t = T0 + timeout
    assert [logic.on_notify()[0] for logic in logics] == [([0],), ([1],), ([2],)]
    timed = CollectLogic(CollectState[int](), timeout, 100, clock)  # the default: from the item
    clock.t = T0 + timedelta(milliseconds=2100)
    timed.on_batch([9])
    assert timed.notify_at() == clock.t + timeout


def test_max_size_and_eof_close_a_batch() -> None:
    logic: CollectLogic[int] = CollectLogic(CollectState(), timedelta(seconds=2), 3, Clock())
    logic.on_item(1)
    logic.on_item(2)
    assert logic.on_item(3) == (([1, 2, 3],), StatefulLogic.DISCARD)
    fresh: CollectLogic[int] = CollectLogic(CollectState(), timedelta(seconds=2), 3, Clock())
    assert fresh.on_eof() == ((), StatefulLogic.DISCARD)  # nothing to emit: no empty batch
    fresh.on_item(7)
    assert fresh.on_eof() == (([7],), StatefulLogic.DISCARD)


def test_a_snapshot_is_a_copy_and_an_op_collect_state_resumes() -> None:
    logic: CollectLogic[int] = CollectLogic(CollectState(), timedelta(seconds=2), 10, Clock())
    logic.on_item(1)
    snap = logic.snapshot()
    logic.on_item(2)
    assert pickle.loads(pickle.dumps(snap)) == CollectState([1], T0 + timedelta(seconds=2))

    class OldState:  # what op.collect snapshotted: bytewax.operators._CollectState
        acc = [4, 5]
        timeout_at = T0

    assert _resumed(OldState()) == CollectState([4, 5], T0)
    assert _resumed(None) == CollectState()


@given(st.integers(0, 1000), st.integers(1, 9), st.integers(1, 6))
def test_in_a_dataflow_every_item_comes_out_once_per_key(
    seed: int, batch: int, max_run: int
) -> None:
    """Runs of any size in (:mod:`operators.batching`), lists of at most ``max_size`` out."""
    items = [(f"k{i % 3}", i) for i in range(20)]
    out: list[tuple[str, list[tuple[str, int]]]] = []
    flow = Dataflow("collect_test")
    up = op.input("in", flow, TestingSource(items, batch_size=batch))
    keyed = random_runs("runs", up, lambda kv: kv[0], seed, max_run)
    batches = collect_batches("batch", keyed, timedelta(seconds=60), 4)
    op.output("out", batches, TestingSink(out))
    run_main(flow)
    for key in ("k0", "k1", "k2"):
        got = [kv for k, batch in out if k == key for kv in batch]
        assert got == [kv for kv in items if kv[0] == key]
        assert all(len(batch) <= 4 for k, batch in out if k == key)


def test_a_retired_batching_step_lands_what_it_held_before_its_successor_emits(
    tmp_path: Path,
) -> None:
    """The lake's re-keying (session 13): a store written by ``collect_batches("batch")`` keyed
    one way resumes in a flow keyed another way; :func:`land_resumed` under the old id lands the
    held batches when the snapshot loads, before the new step emits anything."""
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    items = [0, 1, 2, 3, TestingSource.ABORT(), 4, 5, 6, 7]
    events: list[tuple[str, list[int]]] = []

    def old_key(i: int) -> str:
        return f"lane:{i % 2}"

    def new_key(i: int) -> str:
        return old_key(i).partition(":")[2]

    def flow(retired: bool) -> Dataflow:
        flow = Dataflow("retired_test")
        up = op.input("in", flow, TestingSource(items))
        if not retired:  # the former keying: batches by lane, never due in the test
            keyed = runs_on("key", up, old_key)
            batches = collect_batches("batch", keyed, timedelta(hours=1), 100)
        else:
            keyed = runs_on("key", up, new_key)
            landed = land_resumed("batch", keyed, lambda held: events.append(("landed", held)))
            after = op.merge("after", keyed, landed)
            batches = collect_batches("tenant_batch", after, timedelta(hours=1), 1)
        op.inspect("out", batches, lambda _step, kv: events.append(("out", kv[1])))
        return flow

    # An abort ends the execution as a crash would: no end of input, the snapshot kept.
    run_main(flow(False), epoch_interval=timedelta(0), recovery_config=recovery)
    assert events == []  # held in the snapshot, none emitted
    run_main(flow(True), epoch_interval=timedelta(0), recovery_config=recovery)
    landed = [batch for kind, batch in events if kind == "landed"]
    assert sorted(v for batch in landed for v in batch) == [0, 1, 2, 3]
    assert [kind for kind, _ in events[: len(landed)]] == ["landed"] * len(landed)
    assert sorted(v for kind, batch in events if kind == "out" for v in batch) == [4, 5, 6, 7]
    # The retired step forgot what it landed: a resume from this store lands nothing again.
    events.clear()
    items.append(8)  # the source resumes after 7
    run_main(flow(True), epoch_interval=timedelta(0), recovery_config=recovery)
    # (at least once: the last epoch before the end of input may be read again)
    assert {kind for kind, _ in events} == {"out"}
    assert events[-1] == ("out", [8])


# ------------------------------------------------------------ handed batches (the lake's writer)


def test_a_handed_batch_stays_in_the_snapshot_until_acknowledged() -> None:
    clock = Clock()
    logic: CollectLogic[int] = CollectLogic(
        CollectState(), timedelta(seconds=2), 3, clock, handed=True
    )
    (batch,), keep = logic.on_batch([1, 2, 3])
    assert isinstance(batch, Handed) and batch == [1, 2, 3]
    assert keep == StatefulLogic.RETAIN  # nothing open, but the batch is not committed yet
    assert logic.snapshot() == CollectState([], None, [[1, 2, 3]])
    assert logic.notify_at() == T0 + ACK_CHECK  # it looks for the acknowledgement
    logic.on_batch([4])
    snap = logic.snapshot()
    assert snap == CollectState([4], T0 + timedelta(seconds=2), [[1, 2, 3]])
    assert type(pickle.loads(pickle.dumps(snap)).handed[0]) is list
    batch.ack()
    assert logic.snapshot() == CollectState([4], T0 + timedelta(seconds=2), [])
    # The open batch is due; then a key holding only acknowledged batches is dropped.
    clock.t += timedelta(seconds=2)
    (last,), keep = logic.on_notify()
    assert last == [4] and keep == StatefulLogic.RETAIN
    assert logic.snapshot() == CollectState([], None, [[4]])
    clock.t += ACK_CHECK
    last.ack()
    assert logic.on_notify() == ((), StatefulLogic.DISCARD)


def test_a_key_holding_only_handed_batches_wakes_to_drop_them() -> None:
    clock = Clock()
    logic: CollectLogic[int] = CollectLogic(
        CollectState(), timedelta(seconds=2), 2, clock, handed=True
    )
    (batch,), _ = logic.on_batch([1, 2])
    clock.t += ACK_CHECK
    assert logic.on_notify() == ((), StatefulLogic.RETAIN)  # not acknowledged yet
    assert logic.notify_at() == clock.t + ACK_CHECK
    batch.ack()
    clock.t += ACK_CHECK
    assert logic.on_notify() == ((), StatefulLogic.DISCARD)
    assert logic.snapshot() == CollectState()


@pytest.mark.parametrize("handed", [True, False])
def test_a_resumed_key_emits_its_handed_batches_first_in_order(handed: bool) -> None:
    clock = Clock()
    resumed = pickle.loads(pickle.dumps(CollectState([5], T0, [[1, 2], [3, 4]])))
    logic: CollectLogic[int] = CollectLogic(resumed, timedelta(seconds=2), 3, clock, handed=handed)
    assert logic.notify_at() == T0  # at once, even with no new item
    assert logic.snapshot() == CollectState([5], T0, [[1, 2], [3, 4]])
    out, _ = logic.on_batch([6, 7])
    assert [list(b) for b in out] == [[1, 2], [3, 4], [5, 6, 7]]
    assert all(isinstance(b, Handed) for b in out) == handed
    # On a timer too, and the open batch only when due.
    again: CollectLogic[int] = CollectLogic(
        CollectState([5], T0 + timedelta(seconds=1), [[1, 2]]), timedelta(seconds=2), 3, clock
    )
    assert again.on_notify() == (([1, 2],), StatefulLogic.RETAIN)
    clock.t += timedelta(seconds=1)
    assert again.on_notify() == (([5],), StatefulLogic.DISCARD)


def test_a_collect_state_of_before_handed_batches_resumes() -> None:
    old = CollectState([1, 2], T0)
    del old.__dict__["handed"]  # what session 13 pickled: no such field
    resumed = _resumed(pickle.loads(pickle.dumps(old)))
    assert resumed == CollectState([1, 2], T0, [])
    logic: CollectLogic[int] = CollectLogic(resumed, timedelta(seconds=2), 3, Clock(), handed=True)
    assert logic.on_eof()[0] == ([1, 2],)


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("feed"), st.integers(1, 7)),
        st.tuples(st.just("tick"), st.integers(0, 3000)),
        st.tuples(st.just("commit"), st.integers(1, 3)),
        st.tuples(st.just("snapshot"), st.just(0)),
        st.tuples(st.just("crash"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 60), st.integers(1, 6), _OPS)
def test_every_item_lands_once_in_order_across_acks_and_crashes(
    count: int, max_size: int, ops: list[tuple[str, int]]
) -> None:
    """A model of the lake's recovery argument: a writer commits queued batches in order and
    acks them; the ledger skips items at or below the lane's mark; a crash loses the queue and
    resumes the collect from the last snapshot and the source from where it was then."""
    timeout = timedelta(seconds=2)
    clock = Clock()

    def build(state: CollectState[int]) -> CollectLogic[int]:
        return CollectLogic(state, timeout, max_size, clock, handed=True)

    logic = build(CollectState())
    fed = 0  # the source's position
    queue: list[list[int]] = []  # handed to the writer, not committed
    lake: list[int] = []
    mark = -1  # the ledger: the lane's highest committed item
    saved: tuple[CollectState[int], int] = (CollectState(), 0)

    def hand(out: Iterable[list[int]]) -> None:
        queue.extend(out)  # write_batch returns at once

    def commit(batches: int) -> None:
        nonlocal mark, queue
        taken, queue = queue[:batches], queue[batches:]
        for batch in taken:
            new = [i for i in batch if i > mark]
            lake.extend(new)
            mark = max([mark, *new])
        for batch in taken:
            assert isinstance(batch, Handed)
            batch.ack()

    for name, arg in ops:
        if name == "feed" and fed < count:
            values = list(range(fed, min(count, fed + arg)))
            fed += len(values)
            hand(logic.on_batch(values)[0])
        elif name == "tick":
            clock.t += timedelta(milliseconds=arg)
            due = logic.notify_at()
            if due is not None and due <= clock.t:
                hand(logic.on_notify()[0])
        elif name == "commit":
            commit(arg)
        elif name == "snapshot":  # an epoch ends: everything emitted is queued or committed
            saved = (pickle.loads(pickle.dumps(logic.snapshot())), fed)
        elif name == "crash":
            queue = []
            state, fed = saved
            logic = build(pickle.loads(pickle.dumps(state)))
            saved = (pickle.loads(pickle.dumps(state)), fed)
    while fed < count:
        values = list(range(fed, min(count, fed + max_size)))
        fed += len(values)
        hand(logic.on_batch(values)[0])
    hand(logic.on_eof()[0])
    commit(len(queue))
    assert lake == list(range(count))


class _AckingSink(DynamicSink[tuple[str, list[int]]]):
    """Records what reached each worker's sink and acks the handed batches."""

    def __init__(self) -> None:
        self.got: list[tuple[str, list[int], bool]] = []
        self.lock = threading.Lock()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _AckingPart:
        return _AckingPart(self)


class _AckingPart(StatelessSinkPartition[tuple[str, list[int]]]):
    def __init__(self, sink: _AckingSink) -> None:
        self.sink = sink

    def write_batch(self, items: list[tuple[str, list[int]]]) -> None:
        with self.sink.lock:
            for key, batch in items:
                self.sink.got.append((key, list(batch), isinstance(batch, Handed)))
                if isinstance(batch, Handed):
                    batch.ack()


def test_with_two_workers_the_sink_gets_the_very_handed_objects() -> None:
    """The acknowledgement is a flag on the object the collect emitted: it only works if the
    sink gets that object, not a pickled copy (a DynamicSink does not move items)."""
    items = [(f"k{i % 5}", i) for i in range(200)]
    flow = Dataflow("handed_test")
    runs = op.input("in", flow, TestingSource([(k, [v]) for k, v in items]))
    batches = collect_batches("batch", runs, timedelta(seconds=60), 7, handed=True)
    sink = _AckingSink()
    op.output("out", batches, sink)
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    assert sink.got and all(handed for _key, _batch, handed in sink.got)
    for key in {k for k, _ in items}:
        assert [v for k, b, _ in sink.got if k == key for v in b] == [
            v for k, v in items if k == key
        ]
