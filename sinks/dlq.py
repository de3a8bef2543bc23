"""Dead-letter queue: rejected records go back to Kafka, untouched, with why and where from.

The message value is the original bytes and the key the original key, so a fixed record can be
re-produced as it was. Headers (all UTF-8): ``igflow.reason`` (a :class:`ReasonCode`),
``igflow.detail`` (non-sensitive), ``igflow.source.topic``, ``igflow.source.partition``,
``igflow.source.offset``, ``igflow.input_hash``, plus the original record's headers are not
copied (they may carry producer data we do not vouch for).

Delivery is at least once (each batch is flushed and every delivery confirmed, else the flow
stops and resumes from its snapshot); a consumer of the DLQ de-duplicates on (source topic,
partition, offset).

**Poison pills.** Any record the source can read leaves as a reject, however large. A message
larger than the DLQ topic's ``max.message.bytes`` (:func:`dlq_max_message_bytes`: the signal
topic's ``kafka.max_message_bytes`` plus room for our headers; key, value and headers count), or
one the broker refuses as too large, goes *by reference*: no value (and no key when the key
alone is too large), plus the headers ``igflow.value.omitted`` (the original value's size in
bytes), ``igflow.key.omitted`` (the key's, when dropped) and ``igflow.value.kept_in`` (the
quarantine table, which keeps the exact bytes with the same source coordinates and
``igflow.input_hash``). So an oversized record never stops the flow.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, KafkaException, Producer

from core import metrics
from core.errors import ConfigError, SinkError
from core.partitioning import JAVA_PARTITIONER
from core.reasons import ReasonCode
from core.records import Rejected
from core.settings import KafkaSettings

__all__ = [
    "DETAIL_MAX_BYTES",
    "DLQ_HEADERS",
    "DLQ_HEADROOM_BYTES",
    "REFERENCE_HEADERS",
    "DeadLetterSink",
    "DeadLetterTarget",
    "SinkDeadLetters",
    "by_reference",
    "dlq_max_message_bytes",
    "dlq_message",
    "message_size",
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


DlqMessage = KafkaSinkMessage[bytes | None, bytes | None]

#: Headers of a message sent by reference (see the module docstring).
REFERENCE_HEADERS = ("igflow.value.omitted", "igflow.key.omitted", "igflow.value.kept_in")
#: A key up to this size stays on a message sent by reference (partitioning, compaction).
_KEEP_KEY_BYTES = 1024
#: Room the producer's ``message.max.bytes`` leaves above our own cap for its framing.
_FRAMING_BYTES = 4096


def message_size(msg: DlqMessage) -> int:
    """Bytes of key, value and headers: what the broker's size limit counts, less framing."""
    size = len(msg.key or b"") + len(msg.value or b"")
    return size + sum(len(name) + len(value or b"") for name, value in msg.headers)


def by_reference(msg: DlqMessage, kept_in: str) -> DlqMessage:
    """``msg`` without its value (and its key, if over 1 KiB): see the module docstring."""
    headers = list(msg.headers)
    headers.append(("igflow.value.omitted", str(len(msg.value or b"")).encode()))
    key = msg.key
    if key is not None and len(key) > _KEEP_KEY_BYTES:
        headers.append(("igflow.key.omitted", str(len(key)).encode()))
        key = None
    headers.append(("igflow.value.kept_in", kept_in.encode()))
    return KafkaSinkMessage(key=key, value=None, headers=headers, topic=msg.topic)


def _too_large(error: KafkaError | None) -> bool:
    return error is not None and error.code() == KafkaError.MSG_SIZE_TOO_LARGE


def _reducible(msg: DlqMessage) -> bool:
    """Whether :func:`by_reference` makes ``msg`` smaller (it has a value or a large key)."""
    return msg.value is not None or (msg.key is not None and len(msg.key) > _KEEP_KEY_BYTES)


class _DeadLetterPartition(StatelessSinkPartition[DlqMessage]):
    def __init__(self, producer: Producer, topic: str, max_bytes: int, kept_in: str) -> None:
        self._producer = producer
        self._topic = topic
        self._max_bytes = max_bytes
        self._kept_in = kept_in

    def write_batch(self, items: list[DlqMessage]) -> None:
        refused: list[DlqMessage] = []
        failures: list[KafkaError] = []
        for msg in items:
            if message_size(msg) > self._max_bytes:
                metrics.DLQ_BY_REFERENCE.inc()
                msg = by_reference(msg, self._kept_in)
            self._produce(msg, refused, failures)
        self._flush()
        # The broker refused some as too large (a topic max.message.bytes below our cap): once
        # more, by reference, which is a few hundred bytes.
        for msg in refused:
            metrics.DLQ_BY_REFERENCE.inc()
            self._produce(by_reference(msg, self._kept_in), [], failures)
        if refused:
            self._flush()
        if failures:
            msg_text = f"DLQ {self._topic}: {len(failures)} message(s) not delivered: {failures[0]}"
            raise SinkError(msg_text)

    def _produce(
        self, msg: DlqMessage, refused: list[DlqMessage], failures: list[KafkaError]
    ) -> None:
        def delivered(err: KafkaError | None, _msg: object) -> None:
            if err is None:
                return
            if _too_large(err) and _reducible(msg):
                refused.append(msg)
            else:
                failures.append(err)

        headers: list[tuple[str, str | bytes | None]] = list(msg.headers)
        try:
            self._producer.produce(
                self._topic if msg.topic is None else msg.topic,
                value=msg.value,
                key=msg.key,
                headers=headers,
                on_delivery=delivered,
            )
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if not _too_large(error) or not _reducible(msg):
                raise
            refused.append(msg)
        except BufferError:  # the local queue is full: make room, then try again once
            self._producer.flush()
            self._produce(msg, refused, failures)
            return
        self._producer.poll(0)

    def _flush(self) -> None:
        remaining = self._producer.flush(60.0)
        if remaining:
            msg = f"DLQ {self._topic}: {remaining} message(s) not acknowledged in 60 s"
            raise SinkError(msg)

    def close(self) -> None:
        self._producer.flush(60.0)


class DeadLetterSink(DynamicSink[DlqMessage]):
    """The DLQ topic: every reject delivered (acknowledged by all in-sync replicas) or the flow
    stops; one too large for the topic goes by reference (see the module docstring)."""

    def __init__(self, bootstrap: str, topic: str, *, max_bytes: int, kept_in: str) -> None:
        if max_bytes < 4096:
            msg = f"the DLQ's largest message must be >= 4096 bytes, got {max_bytes}"
            raise ConfigError(msg)
        self._bootstrap = bootstrap
        self._topic = topic
        self._max_bytes = max_bytes
        self._kept_in = kept_in

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        producer = Producer(
            {
                "bootstrap.servers": self._bootstrap,
                "acks": "all",
                "linger.ms": 0,
                "message.max.bytes": self._max_bytes + _FRAMING_BYTES,
                **JAVA_PARTITIONER,
            }
        )
        return _DeadLetterPartition(producer, self._topic, self._max_bytes, self._kept_in)


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetterTarget:
    """Where the flow's rejects and a serving sink's dead letters go: the DLQ topic, and the
    largest message its producers send (:func:`dlq_max_message_bytes`)."""

    bootstrap: str
    topic: str
    max_message_bytes: int

    @classmethod
    def of(cls, kafka: KafkaSettings) -> DeadLetterTarget:
        """The DLQ topic of the Kafka settings, sized for the largest signal record."""
        return cls(kafka.bootstrap, kafka.dlq_topic, dlq_max_message_bytes(kafka.max_message_bytes))

    def sink(self, *, kept_in: str) -> DeadLetterSink:
        """The flow's DLQ sink (see :class:`DeadLetterSink`)."""
        return DeadLetterSink(
            self.bootstrap, self.topic, max_bytes=self.max_message_bytes, kept_in=kept_in
        )

    def for_sink(self, sink: str) -> SinkDeadLetters:
        """Where the serving sink ``sink`` sends what it could not write."""
        return SinkDeadLetters(self.bootstrap, self.topic, sink, self.max_message_bytes)


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
