"""Where a bounded Kafka partition starts (``sources/kafka.py``), on the real broker.

From the beginning, a bounded partition is assigned at the log's start offset as the watermark
query it makes anyway reports it, not at the logical ``OFFSET_BEGINNING`` (which librdkafka
resolves with a query of its own, ~0.5 s later). It must read what the logical offset reads:
every record from the log's start, also when the start moves after the query (retention,
DeleteRecords) and before the first fetch; and its snapshot stays ``OFFSET_BEGINNING`` until it
has read a record, as before, so a snapshot taken then resumes from the beginning.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from core.settings import Settings
from core.tls import kafka_connection
from sources.kafka import KafkaTopicSource, _Partition, _Watermarks
from tests.integration.conftest import tagged_topics
from tests.integration.scratch import Scratch

pytestmark = pytest.mark.integration


def _produce(settings: Settings, count: int) -> None:
    producer = Producer(settings.kafka.client_config())
    for i in range(count):
        producer.produce(settings.kafka.topic, value=f"v{i}".encode(), partition=0)
    assert producer.flush(30) == 0


def _delete_below(settings: Settings, offset: int) -> None:
    admin = AdminClient(settings.kafka.client_config())
    parts = [TopicPartition(settings.kafka.topic, 0, offset)]
    for future in admin.delete_records(parts, operation_timeout=30).values():
        future.result(timeout=30)


def _config(settings: Settings) -> dict[str, Any]:
    return {
        **kafka_connection(settings.kafka.connection()),
        "group.id": "igflow-unused",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
    }


def _drain(part: _Partition) -> list[int]:
    offsets: list[int] = []
    try:
        for _ in range(10_000):
            offsets.extend(r.offset for r in part.next_batch())
    except StopIteration:
        return offsets
    finally:
        part.close()
    msg = "the bounded partition never ended"
    raise AssertionError(msg)


def test_from_the_beginning_reads_from_the_log_start(stack: Settings, scratch: Scratch) -> None:
    settings = tagged_topics(stack, scratch)
    _produce(settings, 10)
    _delete_below(settings, 3)
    source = KafkaTopicSource(settings.kafka.connection(), settings.kafka.topic, bounded=True)
    part = source.build_part("kafka", "0", None)
    assert part.snapshot() == OFFSET_BEGINNING  # nothing read yet: resumes from the beginning
    assert _drain(part) == list(range(3, 10))


def test_a_log_start_moved_after_the_query_reads_what_the_beginning_holds(
    stack: Settings, scratch: Scratch
) -> None:
    settings = tagged_topics(stack, scratch)
    _produce(settings, 10)

    class Raced(_Partition):
        """Retention deletes offsets 0..5 between the watermark query and the assignment."""

        def _watermarks(self) -> tuple[int, int]:
            low, high = super()._watermarks()
            _delete_below(settings, 6)
            return low, high

    part = Raced(
        _config(settings), settings.kafka.topic, 0, OFFSET_BEGINNING, bounded=True, batch_size=100
    )
    # Assigned at offset 0, deleted by then: out of range, the reset goes to the earliest
    # offset (what OFFSET_BEGINNING means), not to the end (librdkafka's default).
    assert _drain(part) == list(range(6, 10))


def _led(settings: Settings) -> None:
    """Wait until the new topic's partition 0 has a leader that answers ListOffsets (a topic
    created a moment ago answers NOT_LEADER_FOR_PARTITION first; producing waits for it)."""
    consumer = Consumer({**_config(settings), "group.id": "igflow-test"})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                consumer.get_watermark_offsets(TopicPartition(settings.kafka.topic, 0), timeout=5)
                return
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        consumer.close()


def test_an_empty_partition_is_done_at_once(stack: Settings, scratch: Scratch) -> None:
    settings = tagged_topics(stack, scratch)
    _led(settings)
    part = _Partition(
        _config(settings), settings.kafka.topic, 0, OFFSET_BEGINNING, bounded=True, batch_size=100
    )
    assert _drain(part) == []


def test_listing_the_partitions_fixes_their_ends_with_the_watermarks_a_partition_asks_for(
    stack: Settings, scratch: Scratch
) -> None:
    # list_parts asks for every partition's watermarks at once, in the background; each
    # partition built then takes them instead of asking for itself: the same answer.
    settings = tagged_topics(stack, scratch)
    _produce(settings, 10)
    _delete_below(settings, 3)
    tp = TopicPartition(settings.kafka.topic, 0)
    asked = Consumer(_config(settings))
    try:
        own = asked.get_watermark_offsets(tp, timeout=30, cached=False)
    finally:
        asked.close()
    assert _Watermarks(_config(settings), settings.kafka.topic, [0]).take(0) == own == (3, 10)

    source = KafkaTopicSource(settings.kafka.connection(), settings.kafka.topic, bounded=True)
    parts = source.list_parts()
    time.sleep(1.0)  # the listed answers are in by now
    _produce(settings, 5)  # after the start: not this run's
    listed = source.build_part("kafka", parts[0], None)
    assert _drain(listed) == list(range(3, 10))
    # A partition that asks for itself (no listing) asks now, and reads what is there now.
    alone = KafkaTopicSource(settings.kafka.connection(), settings.kafka.topic, bounded=True)
    assert _drain(alone.build_part("kafka", "0", None)) == list(range(3, 15))
