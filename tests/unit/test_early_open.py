"""What ``igflow run`` opens before Bytewax builds it, and the fallbacks when that fails.

The Kafka source asks for its partitions' watermarks when it lists them (``_Watermarks``), the
DLQ sink opens its workers' producers when the flow is built (``DeadLetterSink.start``); a
partition or a worker without an answer does what it did without them. The answers themselves
are checked on the real broker (``tests/integration/test_kafka_source_start.py``,
``test_dlq_once.py``).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING

from sinks.dlq import DeadLetterSink, _Opened
from sources.kafka import _Partition, _Watermarks


def _unreachable() -> dict[str, Any]:
    # A port nobody listens on: a partition given its watermarks never asks for them.
    return {"bootstrap.servers": "127.0.0.1:9", "group.id": "unit", "log_level": 0}


@pytest.mark.parametrize(("marks", "done"), [((3, 7), False), ((4, 4), False), ((0, 0), True)])
def test_a_partition_given_its_watermarks_ends_at_the_high_one(
    marks: tuple[int, int], done: bool
) -> None:
    part = _Partition(
        _unreachable(), "t", 0, OFFSET_BEGINNING, bounded=True, batch_size=10, marks=marks
    )
    try:
        assert part._end == marks[1]
        assert part._done is done  # an empty log (0, 0): at once; else at its EOF
        assert part.snapshot() == OFFSET_BEGINNING  # nothing read yet
    finally:
        part.close()


def test_watermarks_a_client_could_not_ask_for_fall_back_to_the_partition() -> None:
    # A configuration librdkafka refuses: no answer, each partition asks for itself.
    marks = _Watermarks({"no.such.property": "x"}, "t", [0, 1])
    assert marks.take(0) is None
    assert marks.take(1) is None
    assert marks.take(2) is None  # not listed


class _Recorded(DeadLetterSink):
    """Opens nothing on Kafka: records which workers it opened on which thread."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__("127.0.0.1:9", "dlq", max_bytes=4096, kept_in="ns.quarantine")
        self.opened: list[tuple[int, str]] = []
        self._fail = fail

    def _open(self, worker_index: int) -> _Opened:
        self.opened.append((worker_index, threading.current_thread().name))
        if self._fail:
            msg = f"worker {worker_index}: the broker said no"
            raise RuntimeError(msg)
        return _Opened(producer=None, max_bytes=4096, marks={("id", 0, "decode"): 5})  # type: ignore[arg-type]


def test_a_started_worker_is_opened_once_in_the_background_and_built_from_it() -> None:
    sink = _Recorded()
    sink.start(range(2, 4))
    sink.start(range(2, 4))  # a second start opens nothing again
    built = sink.build("dlq", 3, 4)
    assert built._marks == {("id", 0, "decode"): 5}
    sink.build("dlq", 2, 4)
    assert sorted(sink.opened) == [(2, "dlq-open-2"), (3, "dlq-open-3")]
    # A worker that was not started (or is built again) opens on the building thread.
    sink.build("dlq", 3, 4)
    assert sink.opened[-1] == (3, threading.current_thread().name)


def test_an_open_that_failed_in_the_background_raises_in_build() -> None:
    sink = _Recorded(fail=True)
    sink.start([0])
    with pytest.raises(RuntimeError, match="worker 0: the broker said no"):
        sink.build("dlq", 0, 1)
