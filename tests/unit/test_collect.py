"""collect_batches: a batch is due a timeout after its *first* item (op.collect: its last)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulLogic
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given
from hypothesis import strategies as st

from operators.batching import runs_on
from operators.collect import (
    CollectLogic,
    CollectState,
    _resumed,
    collect_batches,
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
