"""The flow's lag is visible to standard Kafka tooling: it commits its consumer group's offsets
after durable lake commits (monitoring only)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from core.settings import Settings
from igflow.producer import end_offsets
from igflow.workload import WorkloadSpec
from sinks.group_offsets import GroupOffsets, GroupTarget
from tests.integration.conftest import finish, igflow, lake_rows, produce_workload
from tests.integration.scratch import Scratch

pytestmark = pytest.mark.integration


def _committed(settings: Settings, group: str, partitions: list[int]) -> dict[int, int]:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": group})
    try:
        tps = [TopicPartition(settings.kafka.topic, p) for p in partitions]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=30)}
    finally:
        consumer.close()


def test_the_group_offsets_reach_the_end_once_everything_landed(
    it_settings: Settings, scratch: Scratch
) -> None:
    group = f"it-group-{uuid.uuid4().hex[:8]}"
    scratch.groups.add(group)
    # Only valid, unique signals: every record lands in the signals table.
    produce_workload(it_settings, WorkloadSpec(tenants=6, count=50, seed=31))
    ends = end_offsets(it_settings, it_settings.kafka.topic)
    partitions = sorted(ends)
    assert set(_committed(it_settings, group, partitions).values()) == {-1001}  # none yet

    finish(igflow(it_settings, "run", IGFLOW_KAFKA_GROUP_ID=group))

    assert len(lake_rows(it_settings)) == sum(ends.values())
    committed = _committed(it_settings, group, partitions)
    # An empty partition has nothing landed and so no commit (librdkafka's -1001: none).
    assert committed == {p: (end if end > 0 else -1001) for p, end in ends.items()}


def test_a_lake_append_does_not_wait_for_the_group_commit(
    it_settings: Settings, scratch: Scratch
) -> None:
    """Regression (session 27): the lake's writer thread committed the group's offsets and
    queried each partition's watermark itself after every append. Now ``landed`` notes the
    marks; a thread of the committer's own commits the newest, and ``flush`` waits for it."""
    group = f"it-group-{uuid.uuid4().hex[:8]}"
    scratch.groups.add(group)
    topic = it_settings.kafka.topic
    offsets = GroupOffsets(GroupTarget(it_settings.kafka.connection(), group, topic))
    commits: list[list[tuple[int, int]]] = []
    entered = threading.Event()
    consumer = offsets._consumer  # the real one, under the slow one below

    class Slow:
        def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
            entered.set()
            time.sleep(0.5)
            commits.append([(tp.partition, tp.offset) for tp in offsets])
            assert not asynchronous
            consumer.commit(offsets=offsets, asynchronous=False)

        def __getattr__(self, name: str) -> Any:
            return getattr(consumer, name)

    offsets._consumer = Slow()  # type: ignore[assignment]
    try:
        _note_while_committing(offsets, topic, entered)
    finally:
        offsets.close(10)  # its thread and its consumer: no librdkafka thread left behind
    # The first commit took what was noted then; the second, everything noted meanwhile.
    assert commits[0] == [(0, 10), (1, 5)]
    assert commits[-1] == [(0, 20)]
    assert len(commits) == 2
    assert _committed(it_settings, group, [0, 1]) == {0: 20, 1: 5}


def _note_while_committing(offsets: GroupOffsets, topic: str, entered: threading.Event) -> None:
    started = time.perf_counter()
    offsets.landed({(topic, 0, "t1"): 9, (topic, 1, "t1"): 4})
    assert time.perf_counter() - started < 0.25
    assert entered.wait(10)
    started = time.perf_counter()
    offsets.landed({(topic, 0, "t2"): 19})  # while the first commit is in flight
    offsets.landed({(topic, 0, "t1"): 14, ("other", 0, "t1"): 99})  # behind: nothing new
    assert time.perf_counter() - started < 0.25
    assert offsets.flush(10)
