"""``read_committed``: the flow never processes records of aborted transactions, and reads on
past them to the committed records behind."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from core.contracts import signal_contracts
from core.partitioning import JAVA_PARTITIONER
from core.settings import Settings
from igflow.producer import produce
from igflow.workload import WorkloadSpec, generate
from tests.integration.conftest import finish, igflow, lake_rows, recent

pytestmark = pytest.mark.integration


def _transaction(settings: Settings, spec: WorkloadSpec, *, commit: bool) -> int:
    """Produce the workload in one transaction, then commit or abort it; the record count."""
    contract = signal_contracts()[0]
    with SchemaRegistryClient(settings.kafka.registry_config()) as client:
        schema_id = client.lookup_schema(settings.kafka.subject, Schema(contract.text, "AVRO"))
    producer = Producer(
        {
            **settings.kafka.client_config(),
            "transactional.id": f"it-{uuid.uuid4().hex}",
            **JAVA_PARTITIONER,
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    count = 0
    for message in generate(spec, int(schema_id.schema_id or 0), contract.parsed):
        producer.produce(settings.kafka.topic, message.value, message.key)
        count += 1
    producer.flush(30)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)
    return count


def test_records_of_an_aborted_transaction_never_land(it_settings: Settings) -> None:
    before = recent(WorkloadSpec(tenants=2, count=40, seed=71))
    aborted = dataclasses.replace(before, seed=72, start=before.start + timedelta(hours=1))
    after = dataclasses.replace(before, seed=73, start=before.start + timedelta(hours=2))
    produce(it_settings, before)
    assert _transaction(it_settings, aborted, commit=False) == 80
    assert _transaction(it_settings, after, commit=True) == 80

    finish(igflow(it_settings, "run"))

    rows = lake_rows(it_settings)
    hour = timedelta(hours=1)
    in_window = [r for r in rows if aborted.start <= r["ts"] < aborted.start + hour]
    assert in_window == []
    assert sum(1 for r in rows if r["ts"] < aborted.start) == 80
    assert sum(1 for r in rows if r["ts"] >= after.start) == 80
