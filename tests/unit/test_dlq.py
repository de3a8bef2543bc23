"""The DLQ sink's poison-pill rule: a reject too large for the DLQ goes by reference.

The producer here is an honest in-memory stand-in with librdkafka's two ways of refusing a large
message: at ``produce`` (over the producer's ``message.max.bytes``) and at delivery (the topic's
``max.message.bytes``, e.g. genuine Kafka's 1 MB default under a larger local setting).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from bytewax.connectors.kafka import KafkaSinkMessage
from confluent_kafka import KafkaError, KafkaException

from core.errors import SinkError
from core.reasons import ReasonCode
from core.records import RawRecord, Rejected
from sinks.dlq import _DeadLetterPartition, by_reference, dlq_message, message_size

KEPT_IN = "coherence.quarantine"


class BrokerProducer:
    """Keeps what it "delivers" in committed transactions; refuses above ``producer_max`` at
    once, above ``topic_max`` at delivery (flush), and fails every delivery while ``down``."""

    def __init__(self, producer_max: int, topic_max: int, *, down: bool = False) -> None:
        self.producer_max = producer_max
        self.topic_max = topic_max
        self.down = down
        self.delivered: list[dict[str, Any]] = []
        self.marks: dict[bytes, bytes] = {}
        self.aborted = 0
        self._pending: list[dict[str, Any]] = []
        self._queued: list[tuple[dict[str, Any], Callable[..., None] | None]] = []
        self._open = False

    def begin_transaction(self) -> None:
        assert not self._open, "a transaction is already open"
        self._open = True

    def commit_transaction(self, _timeout: float = -1) -> None:
        assert self._open and not self._queued
        for msg in self._pending:
            if msg["topic"].endswith(".marks"):
                self.marks[msg["key"]] = msg["value"]
            else:
                self.delivered.append(msg)
        self._pending, self._open = [], False

    def abort_transaction(self, _timeout: float = -1) -> None:
        assert self._open
        self._pending, self._queued, self._open = [], [], False
        self.aborted += 1

    def produce(
        self, topic: str, *, on_delivery: Callable[..., None] | None = None, **msg: Any
    ) -> None:
        assert self._open, "produced outside a transaction"
        msg["topic"] = topic
        size = len(msg.get("value") or b"") + len(msg.get("key") or b"")
        if size > self.producer_max:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self._queued.append((msg, on_delivery))

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float = -1) -> int:
        queued, self._queued = self._queued, []
        for msg, on_delivery in queued:
            size = len(msg.get("value") or b"") + len(msg.get("key") or b"")
            error = None
            if self.down:
                error = KafkaError(KafkaError._MSG_TIMED_OUT)
            elif size > self.topic_max:
                error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
            else:
                self._pending.append(msg)
            if on_delivery is not None:
                on_delivery(error, None if error else msg)
        return 0


def _message(offset: int, value: bytes, key: bytes | None = b"k") -> Any:
    raw = RawRecord("signals", 2, offset, key, value)
    return dlq_message(
        Rejected(ReasonCode.TENANT_UNKNOWN, "tenant not registered", raw, stage="validate")
    )


def _partition(
    producer: BrokerProducer, max_bytes: int, marks: dict[Any, int] | None = None
) -> _DeadLetterPartition:
    return _DeadLetterPartition(
        producer,  # type: ignore[arg-type]
        "dlq",
        max_bytes,
        KEPT_IN,
        {} if marks is None else marks,
        lambda topic: f"id-of-{topic}",  # type: ignore[arg-type]
    )


def _write(producer: BrokerProducer, items: list[Any], max_bytes: int) -> list[dict[str, Any]]:
    _partition(producer, max_bytes).write_batch(items)
    return producer.delivered


@pytest.mark.parametrize(
    ("producer_max", "topic_max", "cap"),
    [
        (10_000, 10_000, 5_000),  # our cap decides before producing
        (10_000, 10_000, 50_000),  # cap above the producer's limit: refused at produce
        (100_000, 10_000, 50_000),  # cap above the topic's limit: refused at delivery
    ],
)
def test_oversized_rejects_go_by_reference_and_the_rest_whole(
    producer_max: int, topic_max: int, cap: int
) -> None:
    small, big = b"s" * 100, b"b" * 20_000
    huge_key = b"K" * 20_000
    items = [_message(1, small), _message(2, big), _message(3, big, huge_key), _message(4, small)]
    out = {
        int(dict(m["headers"])["igflow.source.offset"]): m
        for m in _write(BrokerProducer(producer_max, topic_max), items, cap)
    }
    assert sorted(out) == [1, 2, 3, 4]  # every reject delivered, none twice
    for offset in (1, 4):
        assert out[offset]["value"] == small and out[offset]["key"] == b"k"
        assert "igflow.value.omitted" not in dict(out[offset]["headers"])
    for offset in (2, 3):
        headers = dict(out[offset]["headers"])
        assert out[offset]["value"] is None
        assert headers["igflow.value.omitted"] == b"20000"
        assert headers["igflow.value.kept_in"] == KEPT_IN.encode()
        assert headers["igflow.reason"] == b"TENANT_UNKNOWN"
        assert headers["igflow.source.partition"] == b"2"
        assert len(headers["igflow.input_hash"]) == 64
    assert out[2]["key"] == b"k"
    assert out[3]["key"] is None and dict(out[3]["headers"])["igflow.key.omitted"] == b"20000"


def test_a_dlq_that_is_down_stops_the_flow_instead_of_losing_rejects() -> None:
    with pytest.raises(SinkError, match="not delivered"):
        _write(BrokerProducer(10_000, 10_000, down=True), [_message(1, b"x")], 5_000)


def test_by_reference_is_small_and_keeps_the_coordinates() -> None:
    msg = _message(7, b"v" * 10_000_000, b"K" * 2_000_000)
    ref = by_reference(msg, KEPT_IN)
    assert message_size(ref) < 1024
    assert dict(ref.headers)["igflow.source.offset"] == b"7"
    assert isinstance(ref, KafkaSinkMessage) and ref.value is None and ref.key is None


def test_a_tombstone_with_a_key_too_large_for_the_topic_goes_by_reference() -> None:
    raw = RawRecord("signals", 0, 9, b"K" * 20_000, None)
    msg = dlq_message(Rejected(ReasonCode.EMPTY_PAYLOAD, "record has no value", raw))
    [out] = _write(BrokerProducer(100_000, 10_000), [msg], 50_000)
    assert out["key"] is None and dict(out["headers"])["igflow.key.omitted"] == b"20000"


def _offsets(delivered: list[dict[str, Any]]) -> list[int]:
    return [int(dict(m["headers"])["igflow.source.offset"]) for m in delivered]


def test_a_replayed_batch_is_not_sent_again_and_the_marks_say_why() -> None:
    producer = BrokerProducer(100_000, 100_000)
    partition = _partition(producer, 50_000)
    first = [_message(o, b"x") for o in (3, 5, 8)]
    partition.write_batch(first)
    # A resume replays from the snapshot: some already sent, some new.
    partition.write_batch([_message(o, b"x") for o in (5, 8, 9, 12)])
    assert _offsets(producer.delivered) == [3, 5, 8, 9, 12]
    # The marks: one per (topic id, partition, lane), the highest offset sent.
    assert producer.marks == {b'["id-of-signals",2,"validate"]': b"12"}
    # A new incarnation starts from the committed marks: a re-run of everything sends nothing.
    marks = {("id-of-signals", 2, "validate"): 12}
    again = BrokerProducer(100_000, 100_000)
    _partition(again, 50_000, marks).write_batch([_message(o, b"x") for o in range(15)])
    assert _offsets(again.delivered) == [13, 14]


def test_lanes_keep_their_own_marks() -> None:
    producer = BrokerProducer(100_000, 100_000)
    raw = RawRecord("signals", 2, 4, b"k", b"x")
    late = dlq_message(Rejected(ReasonCode.TOO_LATE, "late", raw, stage="dedupe", tenant_id="t1"))
    partition = _partition(producer, 50_000)
    partition.write_batch([_message(10, b"x"), late])
    assert _offsets(producer.delivered) == [10, 4]  # offset 4 is in another lane
    assert dict(producer.delivered[1]["headers"])["igflow.lane"] == b"dedupe:t1"


def test_a_failed_batch_raises_no_mark_and_is_sent_whole_next_time() -> None:
    producer = BrokerProducer(100_000, 100_000, down=True)
    partition = _partition(producer, 50_000)
    with pytest.raises(SinkError, match="not delivered"):
        partition.write_batch([_message(1, b"x"), _message(2, b"x")])
    assert producer.aborted == 1 and producer.marks == {} and producer.delivered == []
    producer.down = False
    partition.write_batch([_message(1, b"x"), _message(2, b"x")])
    assert _offsets(producer.delivered) == [1, 2]
