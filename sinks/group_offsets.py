"""The flow's consumer-group offsets, committed to Kafka after durable lake commits, for
monitoring only.

The flow reads by assignment and keeps its positions in Bytewax's recovery store; the Iceberg
ledger decides what is landed. Standard Kafka tooling (``kafka-consumer-groups.sh --describe``,
lag exporters) sees neither, so after the lake's appends this commits (from a thread of its
own, :class:`GroupOffsets`), for the group ``kafka.group_id``, each partition's highest landed
offset + 1 (the most advanced ledger lane of that partition, over every lake table the process
writes), and sets the gauge ``igflow_consumer_lag{topic,partition}`` to the high watermark
minus that offset. Commits only ever move forward within a process. Nothing reads these
offsets back: a failed commit is logged and the flow goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

from core import metrics
from core.tls import Brokers, kafka_connection

__all__ = ["GroupOffsets", "GroupTarget", "group_offsets"]

log = logging.getLogger(__name__)

_TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class GroupTarget:
    """Where to commit: the bootstrap servers, the group and the flow's input topic."""

    bootstrap: Brokers
    group_id: str
    topic: str


class GroupOffsets:
    """Commits one group's offsets of one topic (see the module docstring); thread-safe.

    Off the lake's writer threads: :meth:`landed` notes the marks and returns, and a thread of
    this object's own commits the newest marks noted (a commit and a watermark query per
    partition are ~5 round trips to the broker: ~1 s of a 200,000-signal run's writer threads,
    during which each held the other tables' writers at the committer's lock; session 27).
    Marks noted while a commit is in flight go in the next one. :meth:`flush` waits until every
    mark noted before it is committed (or failed): the sink's end calls it, so a bounded run's
    group reaches its end offsets before the run ends."""

    def __init__(self, target: GroupTarget) -> None:
        self._target = target
        self._cond = threading.Condition()
        # Made now, when the lake sinks are built, not at the first commit: librdkafka connects
        # and finds the group's coordinator in its own threads while the flow starts, so the
        # first commit is one round trip. A bounded run's first commit is at its end, and
        # the run waited for the connection and the lookup there (60-280 ms of a 10-signal run).
        self._consumer = Consumer(
            {
                **kafka_connection(target.bootstrap),
                "group.id": target.group_id,
                "enable.auto.commit": False,
            }
        )
        #: Committed per partition, and noted but not yet taken by the thread.
        self._sent: dict[int, int] = {}
        self._noted: dict[int, int] = {}
        self._committing = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def landed(self, ledger: Mapping[tuple[str, int, str], int]) -> None:
        """Note the offsets after the highest landed offset per partition of ``ledger``
        (``(topic, partition, lane) -> offset``), to be committed where that moves the group
        forward."""
        marks: dict[int, int] = {}
        for (topic, partition, _lane), offset in ledger.items():
            if topic == self._target.topic:
                marks[partition] = max(marks.get(partition, -1), offset + 1)
        with self._cond:
            if self._closed:
                return
            for partition, offset in marks.items():
                if offset > max(self._sent.get(partition, -1), self._noted.get(partition, -1)):
                    self._noted[partition] = offset
            if not self._noted:
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"group-offsets-{self._target.group_id}", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every offset noted so far is committed (or failed and logged); ``False``
        if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._noted and not self._committing, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop the committer's thread and close its consumer (what is noted but not committed
        then is dropped: :meth:`flush` first); later marks are ignored."""
        with self._cond:
            self._closed = True
            self._noted = {}
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._consumer.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._noted) or self._closed)
                if self._closed:
                    return
                ahead, self._noted = self._noted, {}
                self._committing = True
            try:
                self._commit(ahead)
            except Exception as exc:  # monitoring only: logged, and the flow goes on
                log.warning(
                    "could not commit group %s offsets: %s",
                    self._target.group_id,
                    exc,
                    extra={"op": "group.commit"},
                )
            finally:
                with self._cond:
                    self._committing = False
                    self._cond.notify_all()

    def _commit(self, ahead: Mapping[int, int]) -> None:
        consumer = self._consumer
        offsets = [TopicPartition(self._target.topic, p, o) for p, o in sorted(ahead.items())]
        consumer.commit(offsets=offsets, asynchronous=False)  # raises: logged by _run
        with self._cond:
            self._sent.update(ahead)
        for partition, offset in ahead.items():
            self._gauge(consumer, partition, offset)

    def _gauge(self, consumer: Consumer, partition: int, offset: int) -> None:
        tp = TopicPartition(self._target.topic, partition)
        try:
            _low, high = consumer.get_watermark_offsets(tp, timeout=_TIMEOUT_S, cached=False)
        except KafkaException:
            return
        metrics.CONSUMER_LAG.labels(self._target.topic, str(partition)).set(max(0, high - offset))


_GROUPS: dict[GroupTarget, GroupOffsets] = {}
_GROUPS_LOCK = threading.Lock()


def group_offsets(target: GroupTarget) -> GroupOffsets:
    """The process's committer for ``target`` (shared by the lake tables' sinks, so that the
    group's offsets only move forward)."""
    with _GROUPS_LOCK:
        held = _GROUPS.get(target)
        if held is None:
            held = _GROUPS[target] = GroupOffsets(target)
        return held
