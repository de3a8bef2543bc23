"""sinks.lake_group: batches handed at the same time go into one append; each submit returns
once its rows are appended, or raises what their append raised."""

from __future__ import annotations

import threading
import time

import pytest

from sinks.lake_group import GroupCommit


def test_batches_waiting_for_an_append_go_into_the_next_one_together() -> None:
    together: GroupCommit[int] = GroupCommit()
    appended: list[list[int]] = []
    first_started = threading.Event()
    release = threading.Event()

    def append(rows: list[int]) -> None:
        if not appended:
            first_started.set()
            assert release.wait(10)
        appended.append(rows)

    first = threading.Thread(target=together.submit, args=([0], append))
    first.start()
    assert first_started.wait(10)
    # While the first append runs, three workers hand batches: they wait, then go in one.
    waiting = [
        threading.Thread(target=together.submit, args=([i, i + 10], append)) for i in (1, 2, 3)
    ]
    for t in waiting:
        t.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with together._cond:
            if len(together._waiting) == 3:
                break
        time.sleep(0.001)
    release.set()
    for t in [first, *waiting]:
        t.join(10)
    assert appended[0] == [0]
    assert sorted(appended[1]) == [1, 2, 3, 11, 12, 13]
    assert (together.appends, together.batches) == (2, 4)


def test_a_submit_returns_only_after_its_rows_are_appended() -> None:
    together: GroupCommit[int] = GroupCommit()
    landed: list[int] = []
    lock = threading.Lock()

    def append(rows: list[int]) -> None:
        with lock:
            landed.extend(rows)

    def worker(w: int) -> None:
        for i in range(200):
            row = w * 1000 + i
            together.submit([row], append)
            with lock:  # in order, once: the next batch only after this one landed
                assert landed.count(row) == 1

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(landed) == sorted(w * 1000 + i for w in range(4) for i in range(200))
    for w in range(4):
        assert [r for r in landed if r // 1000 == w] == [w * 1000 + i for i in range(200)]
    assert together.batches == 800


def test_an_append_that_fails_fails_every_batch_it_held() -> None:
    together: GroupCommit[int] = GroupCommit()

    def append(rows: list[int]) -> None:
        msg = f"catalog down ({len(rows)} rows)"
        raise RuntimeError(msg)

    with pytest.raises(RuntimeError, match="catalog down"):
        together.submit([1, 2], append)
    # ... and the next append is tried afresh.
    got: list[int] = []
    together.submit([3], got.extend)
    assert got == [3]


def test_an_append_waits_a_little_for_the_other_workers_batches() -> None:
    together: GroupCommit[int] = GroupCommit(workers=2, linger=5.0)
    appended: list[list[int]] = []
    first = threading.Thread(target=together.submit, args=([1], appended.append))
    first.start()
    time.sleep(0.05)  # the second worker's batch comes while the first one's append waits
    together.submit([2], appended.append)
    first.join(10)
    assert [sorted(rows) for rows in appended] == [[1, 2]]


def test_an_append_waits_no_longer_than_its_linger() -> None:
    together: GroupCommit[int] = GroupCommit(workers=2, linger=0.05)
    appended: list[list[int]] = []
    started = time.monotonic()
    together.submit([1], appended.append)  # the other worker has nothing
    assert appended == [[1]]
    assert time.monotonic() - started < 5
