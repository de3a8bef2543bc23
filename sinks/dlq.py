"""Dead-letter queue: rejected records go back to Kafka, untouched, with why and where from.

The message value is the original bytes and the key the original key, so a fixed record can be
re-produced as it was. Headers (all UTF-8): ``igflow.reason`` (a :class:`ReasonCode`),
``igflow.detail`` (non-sensitive), ``igflow.source.topic``, ``igflow.source.partition``,
``igflow.source.offset``, ``igflow.input_hash``, plus the original record's headers are not
copied (they may carry producer data we do not vouch for).

Delivery is at least once (Bytewax's KafkaSink flushes each batch); a consumer of the DLQ
de-duplicates on (source topic, partition, offset).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
from confluent_kafka import Producer

from igflow import metrics
from igflow.errors import SinkError
from igflow.partitioning import JAVA_PARTITIONER
from igflow.reasons import ReasonCode
from igflow.records import Rejected

__all__ = [
    "DETAIL_MAX_BYTES",
    "DLQ_HEADERS",
    "DLQ_HEADROOM_BYTES",
    "SinkDeadLetters",
    "dlq_max_message_bytes",
    "dlq_message",
    "dlq_sink",
]

log = logging.getLogger(__name__)

DLQ_HEADERS = (
    "igflow.reason",
    "igflow.detail",
    "igflow.source.topic",
    "igflow.source.partition",
    "igflow.source.offset",
    "igflow.input_hash",
)


#: Longest ``igflow.detail`` header, in UTF-8 bytes (longer details are cut).
DETAIL_MAX_BYTES = 1024
#: What a DLQ message may add to the record it carries: the six headers (names and values, the
#: detail at most DETAIL_MAX_BYTES, a topic name at most 249 bytes) and the record framing,
#: with room to spare. A sink's dead letter (an item as JSON, a few KB) fits as well.
DLQ_HEADROOM_BYTES = 16_384


def dlq_max_message_bytes(signal_max_message_bytes: int) -> int:
    """The DLQ topic's ``max.message.bytes`` (and its producers' ``message.max.bytes``) for a
    signal topic that accepts records up to ``signal_max_message_bytes``: every record the flow
    reads can be dead-lettered whole."""
    return signal_max_message_bytes + DLQ_HEADROOM_BYTES


def _detail(text: str) -> bytes:
    raw = text.encode()
    return (
        raw
        if len(raw) <= DETAIL_MAX_BYTES
        else raw[:DETAIL_MAX_BYTES].decode(errors="ignore").encode()
    )


def dlq_message(rejected: Rejected) -> KafkaSinkMessage[bytes | None, bytes | None]:
    """The DLQ message for a rejected record (counts it and logs it, once)."""
    raw = rejected.record
    metrics.DLQ_EVENTS.labels(rejected.reason.value).inc()
    log.warning(
        "rejected record: %s",
        rejected.detail,
        extra={
            "op": "dlq",
            "error_code": rejected.reason.value,
            "kafka_partition": raw.partition,
            "kafka_offset": raw.offset,
            "input_hash": rejected.input_hash,
        },
    )
    values = (
        rejected.reason.value,
        rejected.detail,
        raw.topic,
        str(raw.partition),
        str(raw.offset),
        rejected.input_hash,
    )
    headers = [
        (name, _detail(value) if name == "igflow.detail" else value.encode())
        for name, value in zip(DLQ_HEADERS, values, strict=True)
    ]
    return KafkaSinkMessage(key=raw.key, value=raw.value, headers=headers)


def dlq_sink(bootstrap: str, topic: str, max_message_bytes: int) -> KafkaSink:
    """Bytewax sink producing to the DLQ topic, acknowledged by all in-sync replicas;
    ``max_message_bytes`` is the topic's (:func:`dlq_max_message_bytes`)."""
    config = {
        "acks": "all",
        "linger.ms": "0",
        "message.max.bytes": str(max_message_bytes),
        **JAVA_PARTITIONER,
    }
    return KafkaSink(brokers=[bootstrap], topic=topic, add_config=config)


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


class SinkDeadLetters:
    """Where a serving sink sends a batch it could not write (``SINK_UNAVAILABLE``).

    Each item becomes one DLQ message: the value is the item as JSON (a score change or a tagged
    signal, so an operator can re-apply it), with the usual headers plus ``igflow.sink``. Items
    carry their provenance, so the headers point back at the Kafka record behind them. Delivery
    is confirmed before :meth:`__call__` returns; if Kafka is down too, it raises and the flow
    stops (and resumes from its snapshot) rather than lose the batch.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        sink: str,
        max_message_bytes: int,
        timeout_s: float = 30.0,
    ) -> None:
        self._max_message_bytes = max_message_bytes
        self._bootstrap = bootstrap
        self._topic = topic
        self._sink = sink
        self._timeout = timeout_s
        self._producer: Producer | None = None

    def __call__(self, batch: Sequence[Any], error: BaseException) -> None:
        if self._producer is None:
            self._producer = Producer(
                {
                    "bootstrap.servers": self._bootstrap,
                    "acks": "all",
                    "linger.ms": 0,
                    "message.max.bytes": self._max_message_bytes,
                    **JAVA_PARTITIONER,
                }
            )
        failures: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        for item in batch:
            provenance = getattr(item, "provenance", None)
            tenant = getattr(item, "tenant_id", None) or getattr(
                getattr(item, "signal", None), "tenant_id", ""
            )
            headers: list[tuple[str, str | bytes | None]] = [
                ("igflow.reason", ReasonCode.SINK_UNAVAILABLE.value.encode()),
                ("igflow.detail", f"{self._sink} unavailable: {type(error).__name__}".encode()),
                ("igflow.sink", self._sink.encode()),
            ]
            if provenance is not None:
                headers += [
                    ("igflow.source.topic", provenance.topic.encode()),
                    ("igflow.source.partition", str(provenance.kafka_partition).encode()),
                    ("igflow.source.offset", str(provenance.kafka_offset).encode()),
                    ("igflow.input_hash", provenance.input_hash.encode()),
                ]
            value = json.dumps(
                dataclasses.asdict(item), default=_json_default, sort_keys=True
            ).encode()
            self._producer.produce(
                self._topic,
                key=str(tenant).encode(),
                value=value,
                headers=headers,
                on_delivery=delivered,
            )
        metrics.DLQ_EVENTS.labels(ReasonCode.SINK_UNAVAILABLE.value).inc(len(batch))
        remaining = self._producer.flush(self._timeout)
        if remaining or failures:
            msg = f"{self._sink}: could not dead-letter {len(batch)} rows ({failures[:1]})"
            raise SinkError(msg)
