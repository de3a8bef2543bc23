"""The Kafka source: one Bytewax partition per Kafka partition, emitting :class:`RawRecord`.

Why not Bytewax's ``KafkaSource``: bounded runs must stop at the end offsets *present at start*,
and its ``tail=False`` stops at whatever end it happens to reach (a live producer can extend it
indefinitely). Here each partition fixes its end once, at start, from the broker's ListOffsets
answer (its high watermark): asked for every partition when the source lists them, on one
client in the background, and taken by each partition when it is built. Under
``read_committed`` (librdkafka's default) a partition also ends at ``PARTITION_EOF``, which comes
at the last stable offset: records of transactions still open at the end are left for the next
run, and aborted ones are never read.

Replay (``igflow replay``) gives per-partition ``start_offsets`` and exclusive ``end_offsets``:
a partition then starts at its start offset (unless resuming) and is done at its end offset; a
bounded run still stops at the end present at start when that comes first.

Resume state is the next offset to read (as with Bytewax's source), so a resumed run re-reads
from its last snapshot; the sinks are idempotent. A poll takes what the partition's consumer
holds without waiting, and waits (5 ms at most) only for the first message of an empty one
(:meth:`_Partition._fetch`). An empty poll schedules the next one on the epoch grid (or 50 ms
later) instead of spinning, which matters on small machines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka import KafkaError as ConfluentError
from confluent_kafka.admin import AdminClient

from core import _native, metrics
from core.errors import IgflowError
from core.kafka_start import from_low_config, low_start
from core.records import RawRecord, slot_descriptors
from core.tls import Brokers, kafka_connection
from sources.epoch_phase import EpochPhase

__all__ = ["KafkaTopicSource"]

log = logging.getLogger(__name__)

_IDLE = timedelta(milliseconds=50)
#: How long a poll of a partition whose consumer holds no message waits for the first one.
#: Kept at or under the 10 ms ``sources.epoch_phase.SNAPSHOT_LAG_S`` allows for the fetch.
_EMPTY_WAIT_S = 0.005
#: ListOffsets of one partition, when a bounded partition fixes its end.
_LIST_OFFSETS_TIMEOUT_S = 30.0


#: Above every Kafka offset: the end of a partition that has none.
_NO_END = 1 << 63


#: RawRecord's slots in the order ``core._native.raw_records`` sets them.
_RAW_SLOTS = slot_descriptors(
    RawRecord,
    ("topic", "partition", "offset", "key", "value", "timestamp_ms", "error", "headers"),
)


def _headers(raw: list[tuple[str, bytes | None]]) -> tuple[tuple[str, bytes], ...]:
    """A message's headers as a record holds them (a header without a value: ``b""``)."""
    return tuple((name, value or b"") for name, value in raw)


class _Partition(StatefulSourcePartition[RawRecord, int]):
    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        partition: int,
        start: int,
        *,
        bounded: bool,
        batch_size: int,
        stop: int | None = None,
        marks: tuple[int, int] | None = None,
        phase: EpochPhase | None = None,
    ) -> None:
        """Read ``partition`` from offset ``start`` (or ``OFFSET_BEGINNING``).

        ``stop`` (exclusive) ends the partition at that offset: it is done once the next offset
        reaches it, at once when ``start >= stop``. Bounded, it also ends at the high watermark
        the broker reports now (or at ``PARTITION_EOF``), whichever comes first; ``marks``:
        the partition's watermarks (low, high) as the broker reported them a moment ago, for the
        same consumer configuration (:class:`_Watermarks`), instead of asking now. ``phase``: the
        poll grid of an idle partition (:mod:`sources.epoch_phase`); absent: every 50 ms.
        """
        self._phase = phase
        self._topic = topic
        self._partition = partition
        self._tp = TopicPartition(topic, partition)
        self._next = start
        self._bounded = bounded
        self._batch_size = batch_size
        self._stop = stop
        self._end: int | None = stop
        self._done = stop is not None and stop <= max(start, 0)
        from_low = bounded and start == OFFSET_BEGINNING and not self._done
        if from_low:
            # A bounded run asks for the watermarks anyway, so it starts at the log's start
            # offset (core/kafka_start.py: a quarter of a small run's start-up). The snapshot
            # keeps OFFSET_BEGINNING until a record is read.
            config = from_low_config(config)
        self._consumer = Consumer(config)
        low = high = None
        if bounded and not self._done:
            low, high = marks if marks is not None else self._watermarks()
        if not self._done:
            first = low_start(low) if from_low and low is not None else start
            self._consumer.assign([TopicPartition(topic, partition, first)])
        self._idle = False
        self._counter = metrics.EVENTS_IN.labels(topic)
        if bounded and not self._done and high is not None:
            self._fix_end(high)

    def _watermarks(self) -> tuple[int, int]:
        """The partition's first and next offsets, as the broker reports them now."""
        low, high = self._consumer.get_watermark_offsets(
            self._tp, timeout=_LIST_OFFSETS_TIMEOUT_S, cached=False
        )
        return low, high

    def _fix_end(self, high: int) -> None:
        """End a bounded read at ``high``, the high watermark at start (and at ``stop``)."""
        if high >= 0:
            if self._stop is not None:
                high = min(high, self._stop)
            self._end = high
            self._done = self._next >= high if self._next >= 0 else high == 0
            log.info(
                "partition %d of %s: bounded run ends at offset %d",
                self._partition,
                self._topic,
                high,
                extra={
                    "op": "source.end",
                    "kafka_partition": self._partition,
                    "kafka_offset": high,
                },
            )

    def next_batch(self) -> list[RawRecord]:
        if self._done:
            raise StopIteration
        batch = self._records(self._fetch())
        if batch:
            self._next = batch[-1].offset + 1
        if self._end is not None and self._next >= self._end:
            self._done = True
        self._idle = not batch
        self._counter.inc(len(batch))
        return batch

    def _fetch(self) -> list[Any]:
        """The messages the consumer holds now (up to the batch size), without waiting for more;
        when it holds none, the first one to come within :data:`_EMPTY_WAIT_S` and whatever came
        with it.

        ``consume(n, timeout)`` returns only when it has ``n`` messages or the timeout is up, so
        a fixed 10 ms wait blocked the worker ~10.5 ms on every partition holding fewer than a
        batch, the partitions one after another (DEVELOPERS.md, the latency notes). ``poll``
        returns at the first message; only a partition with nothing held or coming waits.
        """
        consumer = self._consumer
        msgs = consumer.consume(self._batch_size, 0)
        if msgs:
            return msgs
        first = consumer.poll(_EMPTY_WAIT_S)
        if first is None:
            return []
        more = consumer.consume(self._batch_size - 1, 0) if self._batch_size > 1 else []
        return [first, *more]

    def _records(self, msgs: list[Any]) -> list[RawRecord]:
        """The records of one fetch, in order: :meth:`_take` of each message until one ends the
        partition, with the common message (no error, an offset below the end) read in C
        (``core/_native.c``: :func:`records_python` is its reference).

        That one is what :meth:`_take` makes of it too, with fewer calls per message: no error
        object to ask, the record built by position. Anything else (an error, no offset, the end
        reached) goes to :meth:`_take`, the reference, which also decides where the batch stops.
        """
        batch: list[RawRecord] = []
        end = _NO_END if self._end is None else self._end
        msgs = msgs if type(msgs) is list else list(msgs)
        at, n = 0, len(msgs)
        while at < n:
            at = _native.raw_records(
                msgs, at, self._topic, self._partition, end, RawRecord, _RAW_SLOTS, _headers, batch
            )
            if at < n:
                if self._take(msgs[at], batch):
                    break
                at += 1
        return batch

    def records_python(self, msgs: list[Any]) -> list[RawRecord]:
        """:meth:`_records` in Python: the reference of its C loop
        (``tests/unit/test_kafka_source.py`` compares them)."""
        batch: list[RawRecord] = []
        append = batch.append
        topic, partition = self._topic, self._partition
        end = _NO_END if self._end is None else self._end
        for msg in msgs:
            if msg.error() is None:
                offset = msg.offset()
                if offset is not None and 0 <= offset < end:
                    stamp = msg.timestamp()[1]
                    headers = msg.headers()
                    append(
                        RawRecord(
                            topic,
                            partition,
                            offset,
                            msg.key(),
                            msg.value(),
                            stamp if stamp > 0 else None,
                            None,
                            _headers(headers) if headers else (),
                        )
                    )
                    continue
            if self._take(msg, batch):
                break
        return batch

    def _take(self, msg: Any, batch: list[RawRecord]) -> bool:
        """One message into ``batch`` (or not: an EOF, an error without a record); true when
        the partition is done with it, so the rest of the fetch is not read."""
        error = msg.error()
        if error is not None and error.code() == ConfluentError._PARTITION_EOF:
            if self._bounded:
                self._done = True  # the end at start, or an empty partition
                return True
            return False
        offset = msg.offset()
        if error is not None and error.fatal():
            msg_text = f"fatal consumer error on {self._topic}[{self._partition}]: {error}"
            raise IgflowError(msg_text)
        if offset is None or offset < 0:
            # A broker-level error with no record attached: nothing to skip, librdkafka retries.
            log.warning("consumer error: %s", error, extra={"op": "source"})
            return False
        if self._end is not None and offset >= self._end:
            self._done = True
            return True
        _kind, stamp = msg.timestamp()
        raw = msg.headers()
        batch.append(
            RawRecord(
                topic=self._topic,
                partition=self._partition,
                offset=offset,
                key=msg.key(),
                value=msg.value(),
                timestamp_ms=stamp if stamp > 0 else None,
                error=str(error) if error is not None else None,
                headers=_headers(raw) if raw else (),
            )
        )
        return False

    def next_awake(self) -> datetime | None:
        if not self._idle or self._done:
            return None
        if self._phase is None:
            return datetime.now(UTC) + _IDLE
        return datetime.fromtimestamp(self._phase.next_poll(time.time()), UTC)

    def snapshot(self) -> int:
        # Bytewax snapshots a source partition when it ends the partition's epoch.
        if self._phase is not None:
            self._phase.ended(time.time())
        return self._next

    def close(self) -> None:
        self._consumer.close()


class KafkaTopicSource(FixedPartitionedSource[RawRecord, int]):
    """Every partition of one topic, from the beginning (or the resume offset).

    ``start_offsets`` (partition -> first offset to read) and ``end_offsets`` (partition -> first
    offset *not* to read) bound a replay; a partition missing from them starts at the beginning
    and has no end of its own. ``epoch``: the run's epoch interval (the engine is given
    :attr:`EpochPhase.engine_interval <sources.epoch_phase.EpochPhase.engine_interval>`): an
    idle partition then polls on its grid, so the workers of a cluster end their epochs
    together (:mod:`sources.epoch_phase`). A resume state wins over the start offset. A
    partition whose end is at or before its start emits nothing and is done at once. A partition
    missing from the topic is an error only when it is named in ``start_offsets`` or
    ``end_offsets``. ``named_only`` (a replay): a partition named in neither reads nothing.
    The partitions are listed once per source (:meth:`list_parts`: a replay lists them before
    it builds the flow, and Bytewax's call then costs no second client and metadata request).
    """

    def __init__(
        self,
        bootstrap: Brokers,
        topic: str,
        *,
        bounded: bool,
        batch_size: int = 1000,
        config: dict[str, Any] | None = None,
        start_offsets: Mapping[int, int] | None = None,
        end_offsets: Mapping[int, int] | None = None,
        epoch: timedelta | None = None,
        named_only: bool = False,
    ) -> None:
        self._bootstrap = bootstrap
        self._named_only = named_only
        self._parts: list[str] | None = None
        self._epoch = epoch
        self._topic = topic
        self._bounded = bounded
        self._batch_size = batch_size
        self._config = dict(config or {})
        self._starts = dict(start_offsets or {})
        self._ends = dict(end_offsets or {})
        for name, offsets in (("start", self._starts), ("end", self._ends)):
            bad = sorted(p for p, o in offsets.items() if o < 0)
            if bad:
                msg = f"negative {name} offset for partition(s) {bad} of {topic}"
                raise IgflowError(msg)
        self._marks: _Watermarks | None = None
        self._marks_lock = threading.Lock()

    def list_parts(self) -> list[str]:
        if self._parts is not None:
            return list(self._parts)
        admin = AdminClient({**kafka_connection(self._bootstrap), **self._config})
        meta = admin.list_topics(self._topic, timeout=30).topics.get(self._topic)
        if meta is None or meta.error is not None:
            msg = f"topic {self._topic} is not available: {meta.error if meta else 'missing'}"
            raise IgflowError(msg)
        missing = sorted((set(self._starts) | set(self._ends)) - set(meta.partitions))
        if missing:
            msg = f"topic {self._topic} has no partition(s) {missing}"
            raise IgflowError(msg)
        partitions = sorted(meta.partitions)
        if self._bounded:
            # Bytewax builds the partitions one after another on the worker's thread, and each
            # one's watermarks were a new client's connection and ListOffsets (50-270 ms each
            # on a loaded machine): asked here, all on one client in the background, while
            # Bytewax builds the sinks.
            with self._marks_lock:
                if self._marks is None:
                    self._marks = _Watermarks(self._part_config(), self._topic, partitions)
        self._parts = [str(p) for p in partitions]
        return list(self._parts)

    def _part_config(self) -> dict[str, Any]:
        # librdkafka's 500 ms fetch wait is kept (not core.kafka_start.eof_config's 10 ms): a
        # bounded read ends at its end offset, and at an EOF only when its topic's last offset
        # is a transaction's marker; with the short wait the consumer asks the broker again
        # every 10 ms once it holds everything, and a lake-only run of 200,000 signals was no
        # faster (5.36 against 5.17 s, 3 rounds, session 28).
        return {
            **kafka_connection(self._bootstrap),
            # Assigned, never subscribed: no group membership, offsets live in Bytewax's store.
            "group.id": "igflow-unused",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # librdkafka's default, stated: records of aborted transactions are never read,
            # and a partition's EOF comes at its last stable offset.
            "isolation.level": "read_committed",
            **self._config,
        }

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Partition:
        partition = int(for_part)
        start = resume_state
        if start is None:
            start = self._starts.get(partition, OFFSET_BEGINNING)
        stop = self._ends.get(partition)
        if self._named_only and partition not in self._starts and stop is None:
            start = stop = 0  # named in neither: nothing to read
        marks = self._marks.take(partition) if self._marks is not None else None
        return _Partition(
            self._part_config(),
            self._topic,
            partition,
            start,
            bounded=self._bounded,
            batch_size=self._batch_size,
            stop=stop,
            marks=marks,
            phase=None if self._epoch is None else EpochPhase(self._epoch),
        )


class _Watermarks:
    """The watermarks of a topic's partitions, asked for in the background on one consumer of
    the partitions' own configuration (so under the same ``isolation.level``), each taken once.

    A partition whose answer failed, or was taken already (a second build), gets ``None`` and
    its partition asks for itself, as without this.
    """

    def __init__(self, config: dict[str, Any], topic: str, partitions: list[int]) -> None:
        self._answers: dict[int, Future[tuple[int, int]]] = {p: Future() for p in partitions}
        self._lock = threading.Lock()
        asks = list(self._answers.items())  # take() pops from the dict meanwhile
        thread = threading.Thread(
            target=self._ask, args=(config, topic, asks), name="kafka-watermarks", daemon=True
        )
        thread.start()

    @staticmethod
    def _ask(
        config: dict[str, Any], topic: str, asks: list[tuple[int, Future[tuple[int, int]]]]
    ) -> None:
        try:
            consumer = Consumer(config)
        except BaseException as exc:  # every partition asks again for itself
            for _partition, answer in asks:
                answer.set_exception(exc)
            return
        try:
            for partition, answer in asks:
                try:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition),
                        timeout=_LIST_OFFSETS_TIMEOUT_S,
                        cached=False,
                    )
                except BaseException as exc:  # the partition asks again for itself
                    answer.set_exception(exc)
                else:
                    answer.set_result((low, high))
        finally:
            consumer.close()

    def take(self, partition: int) -> tuple[int, int] | None:
        """``partition``'s watermarks, waiting for the answer; ``None``: ask for yourself."""
        with self._lock:
            answer = self._answers.pop(partition, None)
        if answer is None:
            return None
        try:
            if answer.exception(timeout=_LIST_OFFSETS_TIMEOUT_S) is not None:
                return None
        except TimeoutError:
            return None
        return answer.result()
