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

import logging

from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage

from igflow import metrics
from igflow.records import Rejected

__all__ = ["DLQ_HEADERS", "dlq_message", "dlq_sink"]

log = logging.getLogger(__name__)

DLQ_HEADERS = (
    "igflow.reason",
    "igflow.detail",
    "igflow.source.topic",
    "igflow.source.partition",
    "igflow.source.offset",
    "igflow.input_hash",
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
    headers = [(name, value.encode()) for name, value in zip(DLQ_HEADERS, values, strict=True)]
    return KafkaSinkMessage(key=raw.key, value=raw.value, headers=headers)


def dlq_sink(bootstrap: str, topic: str) -> KafkaSink:
    """Bytewax sink producing to the DLQ topic, acknowledged by all in-sync replicas."""
    return KafkaSink(brokers=[bootstrap], topic=topic, add_config={"acks": "all", "linger.ms": "0"})
