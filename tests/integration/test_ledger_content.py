"""Offsets are not identities under one topic id either: records deleted or lost at the lake's
ledger marks stop the flow with a clear error instead of being skipped as already landed."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from igflow.settings import Settings
from igflow.workload import WorkloadSpec
from tests.integration.conftest import finish, igflow, lake_rows, produce_workload

pytestmark = pytest.mark.integration


def _delete_records(settings: Settings) -> None:
    """DeleteRecords up to each partition's end: log start moves past every ledger mark, as on a
    broker that lost its data under the same topic id."""
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    topic = settings.kafka.topic
    # OFFSET_END (-1): delete everything up to the high watermark.
    parts = [TopicPartition(topic, p, -1) for p in range(settings.kafka.partitions)]
    for future in admin.delete_records(parts, operation_timeout=30).values():
        future.result(timeout=30)


def test_records_lost_at_the_ledger_marks_stop_the_flow(it_settings: Settings) -> None:
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

    _delete_records(it_settings)
    # Records after the loss: without the marks' content they would land as if nothing happened.
    produce_workload(it_settings, WorkloadSpec(tenants=2, count=50, seed=71))
    proc = igflow(it_settings, "run")
    _out, err = proc.communicate(timeout=180)

    assert proc.returncode != 0, err.decode(errors="replace")[-2000:]
    assert b"LedgerContentChanged" in err or b"the last this table's ledger landed" in err
    assert b"is gone: the log starts at offset" in err
    assert b"IGFLOW_LAKE_NAMESPACE" in err
    assert len(lake_rows(it_settings)) == 80  # nothing landed past the unverifiable marks
