"""sinks.lake_group: a table's writer thread appends what the workers queue, in order, several
batches at a time; a submit returns at once unless ``in_flight`` batches are held; acks follow
the commit; a failed append stops the writer and reaches the workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from sinks.lake_group import GroupCommit


def _wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


class Gate:
    """An append that blocks on its first call until released."""

    def __init__(self) -> None:
        self.appended: list[list[int]] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, rows: list[int]) -> None:
        if not self.appended and not self.started.is_set():
            self.started.set()
            assert self.release.wait(10)
        self.appended.append(rows)


def test_a_submit_returns_before_the_append_and_the_batches_queued_meanwhile_go_together() -> None:
    together: GroupCommit[int] = GroupCommit(in_flight=10)
    gate = Gate()
    together.submit([0], gate)  # returns: the writer thread appends it
    assert gate.started.wait(10)
    for i in (1, 2, 3):  # the worker goes on while the first append runs
        together.submit([i, i + 10], gate)
    assert together.in_flight == 4
    gate.release.set()
    together.drain()
    assert gate.appended == [[0], [1, 11, 2, 12, 3, 13]]
    assert (together.appends, together.batches, together.in_flight) == (2, 4, 0)


def test_without_merging_each_batch_is_its_own_append_in_order_and_the_worker_goes_on() -> None:
    # A replay's planned commits: each the original's snapshot, so never two in one append.
    together: GroupCommit[int] = GroupCommit(workers=2, in_flight=10, merge=False)
    gate = Gate()
    together.submit([0], gate)
    assert gate.started.wait(10)
    for i in (1, 2, 3):
        together.submit([i, i + 10], gate)  # returns while the first append runs
    assert together.in_flight == 4
    gate.release.set()
    together.close()
    assert gate.appended == [[0], [1, 11], [2, 12], [3, 13]]
    assert (together.appends, together.batches, together.in_flight) == (4, 4, 0)
    # A failed one stops the writer: what follows is not appended, the worker gets the error.
    failing: GroupCommit[int] = GroupCommit(in_flight=10, merge=False)
    seen: list[list[int]] = []
    release = threading.Event()

    def append(rows: list[int]) -> None:
        assert release.wait(10)  # until all three are queued
        if rows == [1]:
            raise RuntimeError("commit failed")
        seen.append(rows)

    for i in range(3):
        failing.submit([i], append)
    release.set()
    with pytest.raises(RuntimeError, match="commit failed"):
        failing.drain()
    assert seen == [[0]]


def test_batches_are_appended_in_the_order_submitted_and_acked_after_their_commit() -> None:
    together: GroupCommit[int] = GroupCommit(in_flight=3)
    landed: list[int] = []
    acked: list[int] = []

    def append(rows: list[int]) -> None:
        time.sleep(0.0005)
        landed.extend(rows)

    def ack(i: int) -> Callable[[], None]:
        def done() -> None:
            assert i in landed  # never before its rows are committed
            acked.append(i)

        return done

    for i in range(300):
        together.submit([i], append, [ack(i)])
    together.drain()
    assert landed == list(range(300))
    assert acked == list(range(300))
    assert together.appends < 300  # queued batches went into shared appends


def test_the_worker_blocks_while_in_flight_batches_are_held() -> None:
    together: GroupCommit[int] = GroupCommit(in_flight=2)
    gate = Gate()
    together.submit([1], gate)
    assert gate.started.wait(10)
    together.submit([2], gate)  # the second: room for it
    third = threading.Thread(target=together.submit, args=([3], gate))
    third.start()
    time.sleep(0.1)
    assert third.is_alive(), "the third batch went in past the bound"
    assert together.in_flight == 2
    gate.release.set()
    third.join(10)
    assert not third.is_alive()
    together.drain()
    assert [row for rows in gate.appended for row in rows] == [1, 2, 3]
    assert together.blocked_seconds > 0


def test_the_bound_counts_rows_and_a_large_hand_over_waits_for_an_empty_writer() -> None:
    together: GroupCommit[int] = GroupCommit(in_flight=2, batch_rows=100)
    gate = Gate()
    together.submit(list(range(150)), gate)  # nothing held: goes in whatever its size
    assert gate.started.wait(10)
    together.submit(list(range(50)), gate)  # 200 rows: the bound, not past it
    more = threading.Thread(target=together.submit, args=([7], gate))
    more.start()
    time.sleep(0.1)
    assert more.is_alive(), "201 rows went in past a bound of 200"
    gate.release.set()
    more.join(10)
    together.drain()
    big = list(range(500))
    together.submit(big, gate)  # larger than the bound, and nothing held: it goes in
    together.drain()
    assert gate.appended[-1] == big
    assert sum(len(rows) for rows in gate.appended) == 150 + 50 + 1 + 500


def test_without_merging_the_bound_counts_commits_whatever_their_rows() -> None:
    # A replay's planned commits are larger than the row bound (lake.in_flight batches of
    # lake.batch_max_rows): counted in rows, each one waited for an empty writer.
    together: GroupCommit[int] = GroupCommit(in_flight=2, batch_rows=100, merge=False)
    gate = Gate()
    together.submit(list(range(300)), gate)
    assert gate.started.wait(10)
    second = threading.Thread(target=together.submit, args=(list(range(400)), gate))
    second.start()
    second.join(2)
    assert not second.is_alive(), "the second commit waited for the first one's append"
    assert together.blocked_seconds == 0
    third = threading.Thread(target=together.submit, args=([7], gate))
    third.start()
    time.sleep(0.1)
    assert third.is_alive(), "a third commit went in past a bound of two"
    gate.release.set()
    third.join(10)
    assert not third.is_alive()
    together.close()
    assert [len(rows) for rows in gate.appended] == [300, 400, 1]
    assert together.blocked_seconds > 0


def test_a_failed_append_reaches_the_worker_and_nothing_after_it_is_appended() -> None:
    together: GroupCommit[int] = GroupCommit(in_flight=5)
    started = threading.Event()
    release = threading.Event()
    appended: list[list[int]] = []
    acked: list[int] = []

    def append(rows: list[int]) -> None:
        if 1 in rows:
            started.set()
            assert release.wait(10)
            msg = f"catalog down ({len(rows)} rows)"
            raise RuntimeError(msg)
        appended.append(rows)

    together.submit([1], append, [lambda: acked.append(1)])
    assert started.wait(10)
    together.submit([2], append, [lambda: acked.append(2)])  # queued behind the failing one
    release.set()
    with pytest.raises(RuntimeError, match="catalog down"):
        together.drain()
    with pytest.raises(RuntimeError, match="catalog down"):
        together.submit([3], append)
    # The batch queued after the failure never lands: landed before it, a later batch of its
    # lane would make the ledger skip its rows. Neither is acked: their collects keep them.
    assert appended == []
    assert acked == []
    # Raised on the worker already: close (Bytewax's Drop while the flow unwinds) stays quiet.
    together.close()


def test_close_raises_a_failed_append_the_worker_has_not_seen() -> None:
    """The end of input: close is where a failure first reaches the worker, and the flow fails."""
    together: GroupCommit[int] = GroupCommit(in_flight=5)

    def append(rows: list[int]) -> None:
        msg = "catalog down"
        raise RuntimeError(msg)

    together.submit([1], append)
    with pytest.raises(RuntimeError, match="catalog down"):
        together.close()


def test_close_leaves_its_error_to_the_log_once_another_writers_error_was_raised() -> None:
    """Regression: two tables' writers failed at once; the worker raised the first's error, and
    the second's close (Bytewax's Drop while the flow unwinds) raised its own: SIGABRT
    (tests/unit/test_sink_failure_exit.py runs it in the engine)."""

    def append(rows: list[int]) -> None:
        msg = "catalog down"
        raise RuntimeError(msg)

    first: GroupCommit[int] = GroupCommit(in_flight=5, name="first")
    second: GroupCommit[int] = GroupCommit(in_flight=5, name="second")
    first.submit([1], append)
    second.submit([1], append)
    with pytest.raises(RuntimeError, match="catalog down"):
        first.drain()
    second.close()  # logged by its writer when it stopped; the flow fails with the first
    first.close()
    later: GroupCommit[int] = GroupCommit(in_flight=5, name="later")
    later.submit([1], append)
    with pytest.raises(RuntimeError, match="catalog down"):
        later.close()


def test_a_worker_blocked_on_the_bound_gets_the_error() -> None:
    together: GroupCommit[int] = GroupCommit(in_flight=1)
    started = threading.Event()
    release = threading.Event()

    def append(rows: list[int]) -> None:
        started.set()
        assert release.wait(10)
        msg = "commit refused"
        raise RuntimeError(msg)

    together.submit([1], append)
    assert started.wait(10)
    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            together.submit([2], append)
        except RuntimeError as exc:
            errors.append(exc)

    second = threading.Thread(target=blocked)
    second.start()
    time.sleep(0.05)
    assert second.is_alive()
    release.set()
    second.join(10)
    assert [str(e) for e in errors] == ["commit refused"]


def test_an_append_waits_a_little_for_the_other_workers_batches() -> None:
    together: GroupCommit[int] = GroupCommit(workers=2, linger=5.0)
    appended: list[list[int]] = []
    together.submit([1], appended.append)
    time.sleep(0.05)  # the second worker's batch comes while the writer lingers
    together.submit([2], appended.append)
    together.drain()
    assert [sorted(rows) for rows in appended] == [[1, 2]]


def test_an_append_waits_no_longer_than_its_linger() -> None:
    together: GroupCommit[int] = GroupCommit(workers=2, linger=0.05)
    appended: list[list[int]] = []
    started = time.monotonic()
    together.submit([1], appended.append)  # the other worker has nothing
    together.drain()
    assert appended == [[1]]
    assert time.monotonic() - started < 5


def test_an_append_does_not_linger_while_a_worker_waits_for_room() -> None:
    # Regression (session 29): with two workers the writer lingered for the other worker's batch
    # while the busy worker, blocked by the bound, could hand nothing: each append waited its
    # whole linger (2.4 s of a ~6.7 s `-w 2` run). A linger of a minute shows it: the blocked
    # worker's rows are appended at once, not a minute later.
    together: GroupCommit[int] = GroupCommit(workers=2, linger=60.0, in_flight=1, batch_rows=3)
    appended: list[list[int]] = []
    first = threading.Event()

    def append(rows: list[int]) -> None:
        appended.append(rows)
        first.set()

    together.submit([1, 2, 3], append)  # the bound's rows: the next hand-over must wait
    handed = threading.Thread(target=together.submit, args=([4], append))
    handed.start()  # blocked until the first batch is appended
    assert first.wait(20), "the writer lingered while a worker waited for room"
    handed.join(20)
    assert not handed.is_alive()
    assert appended[0] == [1, 2, 3]


def test_in_flight_must_be_positive() -> None:
    with pytest.raises(ValueError, match="in_flight"):
        GroupCommit(in_flight=0)
    with pytest.raises(ValueError, match="batch_rows"):
        GroupCommit(batch_rows=0)


def test_many_workers_each_see_their_batches_in_order() -> None:
    together: GroupCommit[int] = GroupCommit(workers=4, linger=0.001, in_flight=3)
    landed: list[int] = []

    def worker(w: int) -> None:
        for i in range(200):
            together.submit([w * 1000 + i], landed.extend)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    together.drain()
    _wait_for(lambda: together.in_flight == 0)
    assert sorted(landed) == sorted(w * 1000 + i for w in range(4) for i in range(200))
    for w in range(4):
        assert [r for r in landed if r // 1000 == w] == [w * 1000 + i for i in range(200)]
    assert together.batches == 800


def test_close_drains_ends_the_writer_and_a_later_submit_starts_another() -> None:
    together: GroupCommit[int] = GroupCommit(name="closing")
    landed: list[int] = []
    together.submit([1, 2], landed.extend)
    together.close()
    assert landed == [1, 2]
    assert not [t for t in threading.enumerate() if t.name == "igflow-lake-closing"]
    together.close()  # a second partition's close: nothing to do
    together.submit([3], landed.extend)
    together.drain()
    assert landed == [1, 2, 3]
    together.close()
    assert not [t for t in threading.enumerate() if t.name == "igflow-lake-closing"]
