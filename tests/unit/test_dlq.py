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
    """Keeps what it "delivers"; refuses above ``producer_max`` at once, above ``topic_max`` at
    delivery (flush), and fails every delivery while ``down``."""

    def __init__(self, producer_max: int, topic_max: int, *, down: bool = False) -> None:
        self.producer_max = producer_max
        self.topic_max = topic_max
        self.down = down
        self.delivered: list[dict[str, Any]] = []
        self._queued: list[tuple[dict[str, Any], Callable[..., None]]] = []

    def produce(self, topic: str, *, on_delivery: Callable[..., None], **msg: Any) -> None:
        msg["topic"] = topic
        size = len(msg["value"] or b"") + len(msg["key"] or b"")
        if size > self.producer_max:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self._queued.append((msg, on_delivery))

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float = -1) -> int:
        queued, self._queued = self._queued, []
        for msg, on_delivery in queued:
            size = len(msg["value"] or b"") + len(msg["key"] or b"")
            if self.down:
                on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), None)
            elif size > self.topic_max:
                on_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
            else:
                self.delivered.append(msg)
                on_delivery(None, msg)
        return 0


def _message(offset: int, value: bytes, key: bytes | None = b"k") -> Any:
    raw = RawRecord("signals", 2, offset, key, value)
    return dlq_message(Rejected(ReasonCode.TENANT_UNKNOWN, "tenant not registered", raw))


def _write(producer: BrokerProducer, items: list[Any], max_bytes: int) -> list[dict[str, Any]]:
    _DeadLetterPartition(producer, "dlq", max_bytes, KEPT_IN).write_batch(items)  # type: ignore[arg-type]
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
