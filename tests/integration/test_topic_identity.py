"""Offsets are not identities: a topic re-created under an existing lake stops the flow with a
clear error instead of having its records skipped as already landed."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from core.settings import Settings
from igflow.workload import WorkloadSpec
from tests.integration.conftest import finish, igflow, lake_rows, produce_workload

pytestmark = pytest.mark.integration


def _recreate(settings: Settings) -> None:
    """Delete the signal topic and create it again (deletion is asynchronous on KRaft)."""
    admin = AdminClient(settings.kafka.client_config())
    topic = settings.kafka.topic
    admin.delete_topics([topic], operation_timeout=30)[topic].result(timeout=30)
    deadline = time.monotonic() + 60
    while True:
        spec = NewTopic(topic, num_partitions=settings.kafka.partitions, replication_factor=1)
        try:
            admin.create_topics([spec], operation_timeout=30)[topic].result(timeout=30)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_re_created_topic_under_an_existing_lake_stops_the_flow(it_settings: Settings) -> None:
    produce_workload(it_settings, WorkloadSpec(tenants=2, count=30, seed=61))
    finish(igflow(it_settings, "run"))
    landed = lake_rows(it_settings)
    assert len(landed) == 60

    _recreate(it_settings)
    # Different records at the same offsets: the ledger alone would skip every one of them.
    produce_workload(
        it_settings, WorkloadSpec(tenants=2, count=30, seed=62, tenant_prefix="tenant")
    )
    proc = igflow(it_settings, "run")
    _out, err = proc.communicate(timeout=180)

    assert proc.returncode != 0
    assert b"was deleted and re-created" in err
    assert b"IGFLOW_LAKE_NAMESPACE" in err
    assert len(lake_rows(it_settings)) == 60  # nothing skipped silently, nothing mixed in
