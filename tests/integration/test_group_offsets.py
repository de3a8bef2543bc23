"""The flow's lag is visible to standard Kafka tooling: it commits its consumer group's offsets
after durable lake commits (monitoring only)."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from core.settings import Settings
from igflow.producer import end_offsets
from igflow.workload import WorkloadSpec
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
