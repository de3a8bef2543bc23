"""Offsets are not identities under one topic id either (the ledger's content marks). A lost
log is not something a single genuine broker can be made to do here, so the stops are unit tests
(``tests/unit/test_ledger_content.py``, an in-memory log); this checks the marks on Kafka: re-runs
read each mark's record and find it, and a log whose start moved past the marks (DeleteRecords,
as retention does on a quiet topic) is no loss and does not stop the flow."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from core.settings import Settings
from igflow.producer import produce
from igflow.workload import WorkloadSpec
from tests.integration.conftest import finish, igflow, lake_rows, produce_workload, recent

pytestmark = pytest.mark.integration


def _delete_records(settings: Settings) -> None:
    """DeleteRecords up to each partition's end: the log start moves past every ledger mark."""
    admin = AdminClient(settings.kafka.client_config())
    topic = settings.kafka.topic
    # OFFSET_END (-1): delete everything up to the high watermark.
    parts = [TopicPartition(topic, p, -1) for p in range(settings.kafka.partitions)]
    for future in admin.delete_records(parts, operation_timeout=30).values():
        future.result(timeout=30)


def test_the_marks_hold_on_kafka_and_a_moved_log_start_is_no_loss(it_settings: Settings) -> None:
    produce_workload(it_settings, WorkloadSpec(tenants=2, count=30, seed=71))
    finish(igflow(it_settings, "run"))
    assert len(lake_rows(it_settings)) == 60

    # A normal re-run over the same log: every mark holds its record, nothing lands twice.
    finish(igflow(it_settings, "run"))
    assert len(lake_rows(it_settings)) == 60
    # New records (signals 30..39 of each tenant; 0..29 again are dropped by dedupe): they land
    # past the marks, which still hold their records.
    produce_workload(it_settings, WorkloadSpec(tenants=2, count=40, seed=71))
    finish(igflow(it_settings, "run"))
    assert len(lake_rows(it_settings)) == 80

    # Every landed record deleted (as retention would on a quiet topic), then 20 signals an hour
    # later (new idempotency keys): the marks cannot be read, but Kafka hands none of their
    # offsets out again, so the new signals land.
    _delete_records(it_settings)
    later = recent(WorkloadSpec(tenants=2, count=10, seed=72))
    produce(it_settings, dataclasses.replace(later, start=later.start + timedelta(hours=1)))
    _out, err = finish(igflow(it_settings, "run"))
    assert "cannot be checked: the log starts at offset" in err
    rows = lake_rows(it_settings)
    assert len(rows) == 100
    assert len({(r["tenant_id"], r["source"], r["signal_id"], r["ts"]) for r in rows}) == 100
