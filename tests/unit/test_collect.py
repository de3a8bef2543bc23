"""collect_batches: a batch is due a timeout after its *first* item (op.collect: its last)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulLogic
from bytewax.testing import TestingSink, TestingSource, run_main

from operators.collect import CollectLogic, CollectState, _resumed, collect_batches

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


def test_in_a_dataflow_every_item_comes_out_once_per_key() -> None:
    items = [(f"k{i % 3}", i) for i in range(20)]
    out: list[tuple[str, list[int]]] = []
    flow = Dataflow("collect_test")
    keyed = op.input("in", flow, TestingSource(items))
    batches = collect_batches("batch", keyed, timedelta(seconds=60), 4)
    op.output("out", batches, TestingSink(out))
    run_main(flow)
    for key in ("k0", "k1", "k2"):
        got = [v for k, batch in out if k == key for v in batch]
        assert got == [v for k, v in items if k == key]
        assert all(len(batch) <= 4 for k, batch in out if k == key)
