"""Dead-letter queue: rejected records go back to Kafka, untouched, with why and where from.

The message value is the original bytes and the key the original key, so a fixed record can be
re-produced as it was. Headers (all UTF-8): ``igflow.reason`` (a :class:`ReasonCode`),
``igflow.detail`` (non-sensitive), ``igflow.source.topic``, ``igflow.source.partition``,
``igflow.source.offset``, ``igflow.input_hash``, plus the original record's headers are not
copied (they may carry producer data we do not vouch for).

**Each reject once**, across restarts, resumes and re-runs. Each worker writes its batches in
Kafka transactions (``transactional.id`` per DLQ topic and worker): with the messages, the
same transaction writes the batch's high-water marks to the compacted topic
``<dlq_topic>.marks`` (:func:`dlq_marks_topic`), one per (source topic id, partition, lane). At
start a worker reads the marks (read_committed, after ``init_transactions`` fenced and aborted
whatever its previous incarnation left open) and skips every reject at or below its lane's
mark: what Bytewax replays after a resume, and what a bounded re-run reads again. A lane is the
stage for the stages before the flow is keyed by tenant (``decode``, ``validate``: a partition's
records are on one worker, in offset order) and ``stage:tenant`` after it (``dedupe``: each
tenant's records stay in order), so a mark is sound; the header ``igflow.lane`` carries it.
Consumers read the DLQ with ``isolation.level=read_committed`` (librdkafka's default) so they
never see an aborted attempt. The source topic's id (not its name) keys the marks: a topic
deleted and created again starts afresh.

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
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.cimpl import NewTopic

from core import metrics
from core.errors import ConfigError, SinkError
from core.kafka_start import eof_config, from_low_config, low_start
from core.logs import LineLimit
from core.partitioning import JAVA_PARTITIONER
from core.reasons import ReasonCode
from core.records import Rejected
from core.sealing import (
    DLQ_SEALED_HEADER,
    DLQ_SEALED_ROW_HEADER,
    DLQ_SEALED_TENANT_HEADER,
    SCOPE_DLQ,
    SHREDDED_HEADER_VALUE,
    kafka_row,
    keyholder,
)
from core.settings import KafkaSettings
from core.tls import Brokers, kafka_connection
from sinks.topic_identity import TopicIds
from tenancy.sealing import Sealer, event_time_of_ms

__all__ = [
    "DETAIL_MAX_BYTES",
    "DLQ_HEADERS",
    "DLQ_HEADROOM_BYTES",
    "REFERENCE_HEADERS",
    "DeadLetterSink",
    "DeadLetterTarget",
    "MarkKey",
    "SinkDeadLetters",
    "by_reference",
    "dlq_lane",
    "dlq_marks_topic",
    "dlq_max_message_bytes",
    "dlq_message",
    "marks_topic_spec",
    "message_size",
    "read_marks",
    "reject_lines",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DLQ_HEADERS = (
    "igflow.reason",
    "igflow.detail",
    "igflow.source.topic",
    "igflow.source.partition",
    "igflow.source.offset",
    "igflow.input_hash",
    "igflow.stage",
    "igflow.lane",
)
#: Stages that reject before the flow is keyed by tenant: one lane per stage and partition.
_UNKEYED_STAGES = frozenset({"decode", "validate"})


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


def dlq_marks_topic(dlq_topic: str) -> str:
    """The compacted topic holding the DLQ's exactly-once marks (see the module docstring)."""
    return f"{dlq_topic}.marks"


def dlq_lane(rejected: Rejected) -> str:
    """The exactly-once lane of a reject (see the module docstring)."""
    if rejected.stage in _UNKEYED_STAGES:
        return rejected.stage
    return f"{rejected.stage}:{rejected.tenant_id or ''}"


#: ``igflow_dlq_events_total`` by reason, labelled once (a dict's get is thread-safe, and two
#: threads labelling the same reason get the same child).
_DLQ_EVENTS: dict[str, Any] = {}


def reject_lines(per_second: int) -> LineLimit:
    """The limit :func:`dlq_message` logs rejected records under: ``per_second`` per reason."""
    return LineLimit(log, per_second, op="dlq")


def dlq_message(
    rejected: Rejected, sealer: Sealer | None = None, lines: LineLimit | None = None
) -> KafkaSinkMessage[bytes | None, bytes | None]:
    """The DLQ message for a rejected record (counts it and logs it, once: under ``lines``'
    limit when given, :func:`reject_lines`); with a ``sealer``, the value of a record that
    carries a tenant is sealed with that tenant's ``dlq`` key (header ``igflow.sealed``:
    ``dlq/value``), or withheld if its keys are destroyed."""
    raw = rejected.record
    reason = rejected.reason.value
    counter = _DLQ_EVENTS.get(reason)
    if counter is None:  # prometheus_client's labels() costs ~3 µs a call: once per reason
        counter = _DLQ_EVENTS[reason] = metrics.DLQ_EVENTS.labels(reason)
    counter.inc()
    hashed = rejected.input_hash  # a SHA-256 of the value each time it is asked for
    extra = {
        "op": "dlq",
        "error_code": reason,
        "kafka_partition": raw.partition,
        "kafka_offset": raw.offset,
        "input_hash": hashed,
    }
    if lines is None:
        log.warning("rejected record: %s", rejected.detail, extra=extra)
    else:
        lines.warning(reason, "rejected record: %s", rejected.detail, extra=extra)
    values = (
        reason,
        "",  # igflow.detail: bounded in bytes, set below
        raw.topic,
        str(raw.partition),
        str(raw.offset),
        hashed,
        rejected.stage,
        dlq_lane(rejected),
    )
    headers = [(name, value.encode()) for name, value in zip(DLQ_HEADERS, values, strict=True)]
    headers[1] = (DLQ_HEADERS[1], _detail(rejected.detail))
    value = raw.value
    holder = keyholder(rejected.tenant_id, reason)
    if sealer is not None and holder is not None and value is not None:
        row = kafka_row(raw.topic, raw.partition, raw.offset)
        value = sealer.seal(
            holder, SCOPE_DLQ, "value", row, event_time_of_ms(raw.timestamp_ms), value
        )
        headers += _sealed_headers("value", value is not None, holder, row)
    return KafkaSinkMessage(key=raw.key, value=value, headers=headers)


def _sealed_headers(column: str, sealed: bool, holder: str, row: str) -> list[tuple[str, bytes]]:
    """``igflow.sealed`` (``dlq/<column>``, or ``shredded`` for a withheld value) and the binding
    :func:`igflow.dlq_reader.open_dead_letter` opens it with."""
    marker = f"{SCOPE_DLQ}/{column}" if sealed else SHREDDED_HEADER_VALUE
    return [
        (DLQ_SEALED_HEADER, marker.encode()),
        (DLQ_SEALED_TENANT_HEADER, holder.encode()),
        (DLQ_SEALED_ROW_HEADER, row.encode()),
    ]


DlqMessage = KafkaSinkMessage[bytes | None, bytes | None]

#: Headers of a message sent by reference (see the module docstring).
REFERENCE_HEADERS = ("igflow.value.omitted", "igflow.key.omitted", "igflow.value.kept_in")
#: A key up to this size stays on a message sent by reference (partitioning, compaction).
_KEEP_KEY_BYTES = 1024
#: Room the producer's ``message.max.bytes`` leaves above our own cap for its framing.
_FRAMING_BYTES = 4096
#: What a record batch adds to key, value and headers, at most (batch and record headers,
#: varints; a transactional batch of one record): the topic's limit counts the batch.
_RECORD_OVERHEAD_BYTES = 512


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


#: A mark's key: (source topic id, source partition, lane).
MarkKey = tuple[str, int, str]


def _mark_key(key: MarkKey) -> bytes:
    return json.dumps(list(key), separators=(",", ":")).encode()


def _header_map(msg: DlqMessage) -> dict[str, str]:
    return {name: (value or b"").decode(errors="replace") for name, value in msg.headers}


def read_marks(bootstrap: Brokers, marks_topic: str, timeout_s: float = 60.0) -> dict[MarkKey, int]:
    """Every mark committed to ``marks_topic`` (read_committed; the last one per key wins)."""
    # Assigned at the low watermarks read below, not OFFSET_BEGINNING (core/kafka_start.py).
    consumer = Consumer(
        eof_config(
            from_low_config(
                {
                    **kafka_connection(bootstrap),
                    "group.id": "igflow-dlq-marks",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                }
            )
        )
    )
    marks: dict[MarkKey, int] = {}
    try:
        deadline = time.monotonic() + timeout_s
        # A topic created a moment ago (by another worker) may not be in every broker's
        # metadata yet: ask again until it is.
        while True:
            metadata = consumer.list_topics(marks_topic, timeout=timeout_s).topics[marks_topic]
            if metadata.error is None and metadata.partitions:
                break
            if time.monotonic() > deadline:
                msg = f"DLQ marks topic {marks_topic}: {metadata.error} (run igflow setup)"
                raise SinkError(msg)
            time.sleep(0.2)
        starts: dict[int, int] = {}
        for p in metadata.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(marks_topic, p), timeout=timeout_s
            )
            if high > low:
                starts[p] = low_start(low)
        remaining = set(starts)
        consumer.assign([TopicPartition(marks_topic, p, o) for p, o in starts.items()])
        while remaining:
            if time.monotonic() > deadline:
                msg = f"DLQ marks topic {marks_topic}: not read to its end in {timeout_s} s"
                raise SinkError(msg)
            record = consumer.poll(0.5)
            if record is None:
                continue
            error = record.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(record.partition())
                    continue
                msg = f"DLQ marks topic {marks_topic}: {error}"
                raise SinkError(msg)
            topic_id, partition, lane = json.loads(record.key() or b"null")
            marks[(str(topic_id), int(partition), str(lane))] = int(record.value() or b"-1")
    finally:
        consumer.close()
    return marks


class _DeadLetterPartition(StatelessSinkPartition[DlqMessage]):
    """One worker's DLQ writer: transactions, marks, and sending by reference."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        max_bytes: int,
        kept_in: str,
        marks: dict[MarkKey, int],
        topic_ids: TopicIds,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._marks_topic = dlq_marks_topic(topic)
        self._max_bytes = max_bytes
        self._kept_in = kept_in
        self._marks = marks
        self._topic_ids = topic_ids

    def _fresh(self, items: list[DlqMessage]) -> tuple[list[DlqMessage], dict[MarkKey, int]]:
        """The items above their lane's mark, and the marks they raise."""
        fresh: list[DlqMessage] = []
        raised: dict[MarkKey, int] = {}
        for msg in items:
            headers = _header_map(msg)
            key = (
                self._topic_ids(headers["igflow.source.topic"]),
                int(headers["igflow.source.partition"]),
                headers["igflow.lane"],
            )
            offset = int(headers["igflow.source.offset"])
            if offset <= max(self._marks.get(key, -1), raised.get(key, -1)):
                metrics.DLQ_SKIPPED.inc()
                continue
            raised[key] = offset
            fresh.append(msg)
        return fresh, raised

    def write_batch(self, items: list[DlqMessage]) -> None:
        fresh, raised = self._fresh(items)
        if not fresh:
            return
        # Too large for our cap: by reference from the start. Refused by the broker as too
        # large (a topic max.message.bytes below our cap): the attempt is aborted and made once
        # more with those by reference, which are a few hundred bytes.
        small = [by_reference(m, self._kept_in) for m in fresh]
        for i, msg in enumerate(fresh):
            if message_size(msg) > self._max_bytes:
                metrics.DLQ_BY_REFERENCE.inc()
                fresh[i] = small[i]
        for _attempt in range(3):
            refused: list[int] = []
            failures: list[KafkaError] = []
            self._producer.begin_transaction()
            for i, msg in enumerate(fresh):
                self._produce(i, msg, refused, failures)
            for key, offset in raised.items():
                self._producer.produce(
                    self._marks_topic, key=_mark_key(key), value=str(offset).encode()
                )
            self._flush()
            purged = [e for e in failures if e.code() == KafkaError._PURGE_QUEUE]
            if refused or (purged and len(purged) == len(failures)):
                # Other messages of the attempt may fail with it (the idempotent producer
                # stops a partition's in-flight messages after a refusal): the next attempt,
                # with the refused ones by reference, decides.
                self._producer.abort_transaction(60.0)
                for i in refused:
                    metrics.DLQ_BY_REFERENCE.inc()
                    fresh[i] = small[i]
                continue
            if failures:
                self._producer.abort_transaction(60.0)
                msg_text = (
                    f"DLQ {self._topic}: {len(failures)} message(s) not delivered: {failures[0]}"
                )
                raise SinkError(msg_text)
            self._producer.commit_transaction(60.0)
            self._marks.update(raised)
            return
        msg_text = f"DLQ {self._topic}: refused as too large even by reference"
        raise SinkError(msg_text)

    def _produce(
        self, index: int, msg: DlqMessage, refused: list[int], failures: list[KafkaError]
    ) -> None:
        def delivered(err: KafkaError | None, _msg: object) -> None:
            if err is None:
                return
            if _too_large(err) and _reducible(msg):
                refused.append(index)
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
            refused.append(index)
        except BufferError:  # the local queue is full: make room, then try again once
            self._producer.flush()
            self._produce(index, msg, refused, failures)
            return
        self._producer.poll(0)

    def _flush(self) -> None:
        remaining = self._producer.flush(60.0)
        if remaining:
            msg = f"DLQ {self._topic}: {remaining} message(s) not acknowledged in 60 s"
            raise SinkError(msg)

    def close(self) -> None:
        self._producer.flush(60.0)


def marks_topic_spec(dlq_topic: str, replication_factor: int) -> NewTopic:
    """The DLQ marks topic: compacted (the last mark per key is all that counts), one
    partition."""
    return NewTopic(
        dlq_marks_topic(dlq_topic),
        num_partitions=1,
        replication_factor=replication_factor,
        config={"cleanup.policy": "compact"},
    )


def _ensure_marks_topic(admin: AdminClient, dlq_topic: str, replication_factor: int) -> None:
    spec = marks_topic_spec(dlq_topic, replication_factor)
    if spec.topic in admin.list_topics(timeout=30).topics:
        return
    try:
        admin.create_topics([spec], operation_timeout=30)[spec.topic].result(timeout=30)
    except KafkaException as exc:  # another worker created it first
        error = exc.args[0] if exc.args else None
        if not isinstance(error, KafkaError) or error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def _topic_max_bytes(admin: AdminClient, topic: str) -> int:
    """The topic's ``max.message.bytes`` less what the broker counts beyond key, value and
    headers (a large number when the topic does not exist yet: the broker decides)."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource])[resource].result(timeout=30)
    except KafkaException:
        return 2**31 - 1
    entry = entries.get("max.message.bytes")
    if entry is None or entry.value is None:
        return 2**31 - 1
    return max(4096, int(entry.value) - _RECORD_OVERHEAD_BYTES)


class DeadLetterSink(DynamicSink[DlqMessage]):
    """The DLQ topic: every reject delivered once (transactions and marks), or the flow stops;
    one too large for the topic goes by reference (see the module docstring)."""

    def __init__(
        self,
        bootstrap: Brokers,
        topic: str,
        *,
        max_bytes: int,
        kept_in: str,
        replication_factor: int = 1,
    ) -> None:
        if max_bytes < 4096:
            msg = f"the DLQ's largest message must be >= 4096 bytes, got {max_bytes}"
            raise ConfigError(msg)
        self._bootstrap = bootstrap
        self._topic = topic
        self._max_bytes = max_bytes
        self._kept_in = kept_in
        self._replication_factor = replication_factor
        #: Worker index -> its partition's open, started by :meth:`start`.
        self._opening: dict[int, Future[_Opened]] = {}

    def _topic_checks(self) -> int:
        """Create the marks topic if missing; the DLQ topic's largest message."""
        admin = AdminClient(kafka_connection(self._bootstrap))
        _ensure_marks_topic(admin, self._topic, self._replication_factor)
        # A topic that takes less than our cap (Kafka's 1 MB default on a DLQ created by hand):
        # decide by reference before producing, rather than after the broker refuses.
        return _topic_max_bytes(admin, self._topic)

    def start(self, worker_indices: Iterable[int]) -> None:
        """Open these workers' partitions now, in the background, for :meth:`build` to take.

        Opening one is network waits only (the topic checks, fencing the producer, reading
        the marks: 0.2-0.6 s, :meth:`_open`), and Bytewax builds its sinks one after another
        on the worker's thread before the first record; started while the process still
        imports and builds the flow, they are done by then. The same steps in the same order
        as an open in :meth:`build`, so a worker's marks are still read after its previous
        incarnation is fenced. ``worker_indices`` must be this process's own
        (:meth:`core.cluster.Cluster.worker_indices`): fencing is by worker index, so opening
        another process's would fence its live producer. An open that fails raises in
        :meth:`build`, as if it had run there.
        """
        for index in worker_indices:
            if index not in self._opening:
                self._opening[index] = _in_background(
                    functools.partial(self._open, index), f"dlq-open-{index}"
                )

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        opening = self._opening.pop(worker_index, None)
        opened = opening.result() if opening is not None else self._open(worker_index)
        return _DeadLetterPartition(
            opened.producer,
            self._topic,
            opened.max_bytes,
            self._kept_in,
            opened.marks,
            TopicIds(self._bootstrap),
        )

    def _open(self, worker_index: int) -> _Opened:
        """Worker ``worker_index``'s producer, fenced, and the marks of its lanes."""
        # The topics' checks (two admin requests) while the producer is fenced (the transaction
        # coordinator's round trips): independent waits, 60-80 ms each at start-up. The marks
        # are read once both are done.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlq-build") as pool:
            checked = pool.submit(self._topic_checks)
            producer = _producer(
                self._bootstrap,
                self._max_bytes + _FRAMING_BYTES,
                {"transactional.id": f"igflow-dlq.{self._topic}.{worker_index}"},
            )
            # Fences this worker's previous incarnation and aborts what it left open, so the
            # marks read next are final for this worker's lanes.
            producer.init_transactions(60.0)
            max_bytes = min(self._max_bytes, checked.result())
        marks = read_marks(self._bootstrap, dlq_marks_topic(self._topic))
        return _Opened(producer, max_bytes, marks)


@dataclasses.dataclass(frozen=True, slots=True)
class _Opened:
    """What a DLQ partition is built from: its fenced producer, the topic's largest message
    and the marks."""

    producer: Producer
    max_bytes: int
    marks: dict[MarkKey, int]


def _in_background(work: Callable[[], T], name: str) -> Future[T]:
    """``work()`` on a daemon thread: a process that ends before it is needed (a build that
    failed later, a test that never runs its flow) does not wait for its network timeouts."""
    future: Future[T] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(work())
        except BaseException as exc:  # handed to whoever asks for the result
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def _producer(bootstrap: Brokers, max_bytes: int, extra: dict[str, Any] | None = None) -> Producer:
    """A DLQ producer: every write acknowledged by all in-sync replicas, Java's partitioner."""
    return Producer(
        {
            **kafka_connection(bootstrap),
            "acks": "all",
            "linger.ms": 0,
            "message.max.bytes": max_bytes,
            **JAVA_PARTITIONER,
            **(extra or {}),
        }
    )


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetterTarget:
    """Where the flow's rejects and a serving sink's dead letters go: the DLQ topic, the
    largest message its producers send (:func:`dlq_max_message_bytes`), and the replication of
    the marks topic the flow's DLQ sink creates if missing."""

    bootstrap: Brokers
    topic: str
    max_message_bytes: int
    replication_factor: int = 1
    #: Seals the dead letters of a serving store that carry a tenant (:mod:`core.sealing`).
    sealer: Sealer | None = None

    @classmethod
    def of(cls, kafka: KafkaSettings, sealer: Sealer | None = None) -> DeadLetterTarget:
        """The DLQ topic of the Kafka settings, sized for the largest signal record."""
        return cls(
            kafka.connection(),
            kafka.dlq_topic,
            dlq_max_message_bytes(kafka.max_message_bytes),
            kafka.replication_factor,
            sealer,
        )

    def sink(self, *, kept_in: str) -> DeadLetterSink:
        """The flow's DLQ sink (see :class:`DeadLetterSink`)."""
        return DeadLetterSink(
            self.bootstrap,
            self.topic,
            max_bytes=self.max_message_bytes,
            kept_in=kept_in,
            replication_factor=self.replication_factor,
        )

    def for_sink(self, sink: str) -> SinkDeadLetters:
        """Where the serving sink ``sink`` sends what it could not write."""
        return SinkDeadLetters(
            self.bootstrap, self.topic, sink, self.max_message_bytes, sealer=self.sealer
        )


def _as_dict(item: Any) -> dict[str, Any]:
    """``item`` as a dict for its dead letter, without the drift step's ``horizon`` (a signal's
    :attr:`~core.records.Decoded.horizon` is flow bookkeeping, never landed)."""
    out = dataclasses.asdict(item)
    decoded = out.get("decoded")
    if isinstance(decoded, dict):
        decoded.pop("horizon", None)
    return out


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
        bootstrap: Brokers,
        topic: str,
        sink: str,
        max_message_bytes: int,
        timeout_s: float = 30.0,
        sealer: Sealer | None = None,
    ) -> None:
        self._sealer = sealer
        self._max_message_bytes = max_message_bytes
        self._bootstrap = bootstrap
        self._topic = topic
        self._sink = sink
        self._timeout = timeout_s
        self._producer: Producer | None = None

    def __call__(self, batch: Sequence[Any], error: BaseException) -> None:
        if self._producer is None:
            self._producer = _producer(self._bootstrap, self._max_message_bytes)
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
            value: bytes | None = json.dumps(
                _as_dict(item), default=_json_default, sort_keys=True
            ).encode()
            if self._sealer is not None and tenant and provenance is not None:
                row = self._row(provenance, item)
                value = self._seal(str(tenant), row, item, value or b"")
                headers += _sealed_headers(self._sink, value is not None, str(tenant), row)
            self._producer.produce(
                self._topic,
                key=str(tenant).encode(),
                value=value,
                headers=headers,
                on_delivery=delivered,
            )
        metrics.DLQ_EVENTS.labels(ReasonCode.SINK_UNAVAILABLE.value).inc(len(batch))
        self._flushed(batch, failures)

    @staticmethod
    def _row(provenance: Any, item: Any) -> str:
        """The row a dead letter is bound to: the item's Kafka record and kind (a signal and
        its score change share one record)."""
        row = kafka_row(provenance.topic, provenance.kafka_partition, provenance.kafka_offset)
        return f"{row}/{type(item).__name__}"

    def _seal(self, tenant: str, row: str, item: Any, value: bytes) -> bytes | None:
        """A dead letter's JSON sealed with the tenant's ``dlq`` key (the column is the sink)."""
        assert self._sealer is not None
        ts = getattr(getattr(item, "signal", None), "ts", None) or getattr(item, "updated_at", None)
        return self._sealer.seal(
            tenant,
            SCOPE_DLQ,
            self._sink,
            row,
            ts if isinstance(ts, datetime) else event_time_of_ms(None),
            value,
        )

    def _flushed(self, batch: Sequence[Any], failures: list[str]) -> None:
        assert self._producer is not None
        remaining = self._producer.flush(self._timeout)
        if remaining or failures:
            msg = f"{self._sink}: could not dead-letter {len(batch)} rows ({failures[:1]})"
            raise SinkError(msg)
