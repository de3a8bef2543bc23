"""The coherence flow in-process: TestingSource in, SQLite Iceberg catalog and TestingSink out."""

from __future__ import annotations

import uuid

import hypothesis.strategies as st
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import HealthCheck, given, settings
from pyiceberg.catalog import Catalog

from flows.coherence import build
from igflow.settings import Settings
from igflow.workload import WorkloadSpec, generate
from sinks.dlq import DLQ_HEADERS
from sinks.iceberg import ledger
from tests.conftest import SIGNAL_V1, V1_ID, DictSchemas, kafka_messages


def _run(settings: Settings, schemas: DictSchemas, messages: list) -> list:
    dlq: list = []
    flow = build(settings, source=TestingSource(messages), lookup=schemas, dlq=TestingSink(dlq))
    run_main(flow)
    return dlq


def test_valid_signals_land_once_and_bad_ones_reach_the_dlq(
    lake_settings: Settings, schemas: DictSchemas, catalog: Catalog
) -> None:
    spec = WorkloadSpec(tenants=3, count=50, bad=12)
    workload = list(generate(spec, V1_ID, SIGNAL_V1.parsed))
    messages = kafka_messages(workload)

    dlq = _run(lake_settings, schemas, messages)

    table = catalog.load_table("coherence.signals")
    rows = table.scan().to_arrow()
    assert rows.num_rows == 150
    assert len(set(rows.column("signal_id").to_pylist())) == 150
    assert len(dlq) == 12
    reasons = {dict(m.headers)["igflow.reason"].decode() for m in dlq}
    assert reasons == {"DECODE_FAILED", "SCHEMA_UNKNOWN"}
    assert all(set(DLQ_HEADERS) <= set(dict(m.headers)) for m in dlq)
    bad_values = {m.value for m in workload if m.record is None}
    assert {m.value for m in dlq} == bad_values
    # The ledger holds the last offset of every partition that had valid records.
    last = {}
    for m in messages:
        last[("coherence.signals.v1", m.partition)] = m.offset
    assert ledger(table).keys() == last.keys()


def test_a_replayed_input_lands_nothing_twice(
    lake_settings: Settings, schemas: DictSchemas, catalog: Catalog
) -> None:
    messages = kafka_messages(
        list(generate(WorkloadSpec(tenants=2, count=40), V1_ID, SIGNAL_V1.parsed))
    )
    _run(lake_settings, schemas, messages[:50])
    # A resume re-reads from an earlier offset: everything again, plus the rest.
    _run(lake_settings, schemas, messages)
    rows = catalog.load_table("coherence.signals").scan().to_arrow()
    assert rows.num_rows == 80
    keys = list(
        zip(
            rows.column("kafka_partition").to_pylist(),
            rows.column("kafka_offset").to_pylist(),
            strict=True,
        )
    )
    assert len(set(keys)) == 80


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    tenants=st.integers(1, 3),
    count=st.integers(1, 25),
    bad=st.integers(0, 15),
    duplicates=st.sampled_from([0.0, 0.2]),
    partitions=st.integers(1, 4),
    source_batch=st.integers(1, 20),
    lake_batch=st.integers(1, 40),
    seed=st.integers(0, 1000),
)
def test_every_record_lands_once_or_reaches_the_dlq_once(
    lake_settings: Settings,
    catalog: Catalog,
    tenants: int,
    count: int,
    bad: int,
    duplicates: float,
    partitions: int,
    source_batch: int,
    lake_batch: int,
    seed: int,
) -> None:
    """Law: the input splits exactly into lake rows and DLQ messages, keyed by offset."""
    namespace = f"law{uuid.uuid4().hex[:8]}"
    settings = lake_settings.with_changes("lake", namespace=namespace, batch_max_rows=lake_batch)
    spec = WorkloadSpec(tenants=tenants, count=count, bad=bad, duplicates=duplicates, seed=seed)
    workload = list(generate(spec, V1_ID, SIGNAL_V1.parsed))
    records = kafka_messages(workload, partitions=partitions)
    dlq: list = []
    flow = build(
        settings,
        source=TestingSource(records, batch_size=source_batch),
        lookup=DictSchemas({V1_ID: SIGNAL_V1.text}),
        dlq=TestingSink(dlq),
    )
    run_main(flow)

    rows = catalog.load_table(f"{namespace}.signals").scan().to_arrow().to_pylist()
    landed = sorted((r["kafka_partition"], r["kafka_offset"]) for r in rows)
    rejected = sorted(
        (
            int(dict(m.headers)["igflow.source.partition"]),
            int(dict(m.headers)["igflow.source.offset"]),
        )
        for m in dlq
    )
    assert sorted(landed + rejected) == sorted((r.partition, r.offset) for r in records)
    good = {(r.partition, r.offset) for r, m in zip(records, workload, strict=True) if m.record}
    assert set(landed) == good
