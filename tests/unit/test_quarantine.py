"""Quarantine commands over a SQLite catalog: list batches per tenant, discard with an audit row.

(Release re-sends through Kafka: tests/integration/test_stages.py covers it on the real stack.)
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta

import fastavro
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main
from pyiceberg.catalog import Catalog

from core.records import RawRecord
from core.settings import Settings
from core.switches import NO_HOLDS
from core.wire import encode
from flows.coherence import build
from igflow import quarantine_commands
from igflow.quarantine import QuarantineError, decide, list_batches, rejects_summary
from igflow.workload import SOURCES, WorkloadSpec, generate, tenant_ids
from operators.tenancy import TenancyPolicy
from tenancy.registry import StaticTenants
from tests.conftest import SIGNAL_V1, V1_ID, DictSchemas, kafka_messages
from tests.memory_keys import memory_sealer

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

#: One in-memory key store for the module: runs compared with each other seal alike.
SEALER = memory_sealer()


@pytest.fixture
def held(lake_settings: Settings, catalog: Catalog) -> Settings:
    """A flow run whose tenant-01 drifts half-way: its later batches are held."""
    settings = lake_settings.with_changes(
        "drift",
        batch_size=20,
        reference_batches=2,
        reference_values=0,
        batch_seconds=3600.0,
        ks_alpha=0.0001,
    )
    spec = WorkloadSpec(tenants=2, count=400, drift_tenant=1, invalid=0.05)
    records = kafka_messages(list(generate(spec, V1_ID, SIGNAL_V1.parsed)))
    flow = build(
        settings,
        source=TestingSource(records),
        lookup=DictSchemas({V1_ID: SIGNAL_V1.text}),
        dlq=TestingSink([]),
        tenants=StaticTenants.of(*tenant_ids(2), sources=SOURCES),
        holds=NO_HOLDS,
        policy=TenancyPolicy.load(settings.policies_dir),
        sealer=SEALER,
    )
    run_main(flow)
    return settings


def test_held_batches_are_listed_per_tenant_with_their_statistics(held: Settings) -> None:
    batches = list_batches(held)
    assert batches and {b.tenant_id for b in batches} == {"tenant-01"}
    assert {b.reason for b in batches} == {"DRIFT_DETECTED"} and {b.status for b in batches} == {
        "open"
    }
    assert all(b.rows > 0 and b.psi is not None and b.psi >= 0.2 for b in batches)
    assert list_batches(held, tenant="tenant-00") == []
    rejects = rejects_summary(held)
    assert rejects and {stage for (_t, stage, _r) in rejects} == {"validate"}


def test_discard_writes_an_audit_row_and_a_batch_is_decided_once(held: Settings) -> None:
    batch = list_batches(held)[0]
    entry = decide(held, batch.batch_id, "discarded", actor="ops", note="known outage", now=NOW)
    assert entry["rows"] == batch.rows and entry["action"] == "discarded"
    statuses = {b.batch_id: b.status for b in list_batches(held)}
    assert statuses[batch.batch_id] == "discarded"
    assert [b.batch_id for b in list_batches(held, status="discarded")] == [batch.batch_id]
    with pytest.raises(QuarantineError, match="already discarded"):
        decide(held, batch.batch_id, "released", actor="ops", now=NOW)


def test_unknown_and_malformed_batch_ids_are_refused(held: Settings) -> None:
    with pytest.raises(QuarantineError, match="no quarantined batch"):
        decide(held, "0" * 32, "discarded", actor="ops", now=NOW)
    with pytest.raises(QuarantineError, match="not a batch id"):
        decide(held, "x' OR '1'='1", "discarded", actor="ops", now=NOW)


def test_a_schema_drift_batch_lists_every_type_it_holds(
    lake_settings: Settings, catalog: Catalog, capsys: pytest.CaptureFixture[str]
) -> None:
    # Records of three types written with a schema that has a field the flow does not know:
    # they form one SCHEMA_DRIFT batch per tenant, whatever their type.
    writer = json.loads(SIGNAL_V1.text)
    writer["fields"].append({"name": "extra", "type": "string", "default": ""})
    parsed = fastavro.parse_schema(writer)
    types = ["latency", "consistency", "freshness"]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    records = []
    for i in range(9):
        record = {
            "tenant_id": "tenant-00",
            "signal_id": f"s-{i}",
            "type": types[i % 3],
            "value": 0.5,
            "weight": None,
            "source": SOURCES[0],
            "ts": start + timedelta(milliseconds=10 * i),  # within one short drift hold
            "extra": "x",
        }
        ms = int(record["ts"].timestamp() * 1000) + 1000  # type: ignore[attr-defined]
        records.append(RawRecord("t", 0, i, b"tenant-00", encode(9, parsed, record), ms))
    run_main(
        build(
            lake_settings,
            source=TestingSource(records),
            lookup=DictSchemas({9: json.dumps(writer)}),
            dlq=TestingSink([]),
            holds=NO_HOLDS,
            tenants=StaticTenants.of("tenant-00", sources=SOURCES),
            policy=TenancyPolicy.load(lake_settings.policies_dir),
            sealer=SEALER,
        )
    )
    [batch] = list_batches(lake_settings)
    assert (batch.reason, batch.rows) == ("SCHEMA_DRIFT", 9)
    assert batch.types == tuple(sorted(types))
    assert batch.type == "consistency,freshness,latency"
    quarantine_commands._list(
        argparse.Namespace(tenant=None, status=None, json=True, rejects=False), lake_settings
    )
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["types"] == sorted(types) and listed["type"] == batch.type
    quarantine_commands._list(
        argparse.Namespace(tenant=None, status=None, json=False, rejects=False), lake_settings
    )
    assert "consistency,freshness,latency" in capsys.readouterr().out
