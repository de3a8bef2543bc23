"""The coherence flow in-process: TestingSource in, SQLite Iceberg catalog and TestingSink out."""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import HealthCheck, given, settings
from pyiceberg.catalog import Catalog

from core.records import Decoded, PolicyTags, Provenance, RawRecord, ScoreChange, Signal, Tagged
from core.settings import Settings
from core.switches import NO_HOLDS
from flows.coherence import build
from igflow.workload import INVALID_KINDS, SOURCES, Message, WorkloadSpec, generate, tenant_ids
from operators.drift import TenantDrift
from operators.score import TenantScore
from operators.tenancy import TenancyPolicy
from sinks.dlq import DLQ_HEADERS
from sinks.iceberg import ledger
from sinks.settings_record import read_settings, settings_history
from tenancy.registry import StaticTenants
from tests.conftest import SIGNAL_V1, V1_ID, DictSchemas, kafka_messages
from tests.memory_keys import memory_sealer
from tests.score_ticks import closed_by_horizons, last_of_each_tick

TAGS = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")

POLICY = TenancyPolicy.load(Settings().policies_dir)
TENANTS = StaticTenants.of(*tenant_ids(10), sources=SOURCES)

#: One in-memory key store for the module: runs compared with each other seal alike.
SEALER = memory_sealer()


def _run(
    settings: Settings, schemas: DictSchemas, records: list[RawRecord], batch_size: int = 10
) -> list[Any]:
    dlq: list[Any] = []
    flow = build(
        settings,
        source=TestingSource(records, batch_size=batch_size),
        lookup=schemas,
        dlq=TestingSink(dlq),
        tenants=TENANTS,
        holds=NO_HOLDS,
        policy=POLICY,
        sealer=SEALER,
    )
    run_main(flow)
    return dlq


def _rows(catalog: Catalog, namespace: str, table: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (
        catalog.load_table(f"{namespace}.{table}").scan().to_arrow().to_pylist()
    )
    return rows


def _valid_keys(workload: list[Message]) -> set[tuple[str, str]]:
    return {
        (m.record["tenant_id"], m.record["signal_id"])
        for m in workload
        if m.kind == "valid" and m.record
    }


def test_valid_signals_land_once_and_bad_ones_reach_the_dlq_and_quarantine(
    lake_settings: Settings, schemas: DictSchemas, catalog: Catalog
) -> None:
    spec = WorkloadSpec(tenants=3, count=50, bad=12, invalid=0.1, duplicates=0.1)
    workload = list(generate(spec, V1_ID, SIGNAL_V1.parsed))
    records = kafka_messages(workload)

    dlq = _run(lake_settings, schemas, records)

    rows = _rows(catalog, "coherence", "signals")
    keys = [(r["tenant_id"], r["signal_id"]) for r in rows]
    assert len(keys) == len(set(keys)) == 150
    assert set(keys) == _valid_keys(workload)
    assert all(
        len(r["provenance_id"]) == 32 and r["policy_version"] == POLICY.version for r in rows
    )

    invalid = Counter(
        INVALID_KINDS[m.kind.split(":")[1]] for m in workload if m.kind.startswith("invalid")
    )
    reasons = Counter(dict(m.headers)["igflow.reason"].decode() for m in dlq)
    assert set(reasons) - set(invalid) == {"DECODE_FAILED", "SCHEMA_UNKNOWN"}
    assert all(reasons[r] == n for r, n in invalid.items())
    assert all(set(DLQ_HEADERS) <= set(dict(m.headers)) for m in dlq)
    quarantine = _rows(catalog, "coherence", "quarantine")
    assert sorted((r["kafka_partition"], r["kafka_offset"]) for r in quarantine) == sorted(
        (
            int(dict(m.headers)["igflow.source.partition"]),
            int(dict(m.headers)["igflow.source.offset"]),
        )
        for m in dlq
    )
    # One ledger mark per (partition, lane); the signal lanes are per tenant.
    lanes = {lane for (_topic, _p, lane) in ledger(catalog.load_table("coherence.signals"))}
    assert lanes == {f"signals:{t}" for t in tenant_ids(3)}
    scores = _rows(catalog, "coherence", "scores")
    assert {r["tenant_id"] for r in scores} == set(tenant_ids(3))


def test_a_replayed_input_lands_nothing_twice(
    lake_settings: Settings, schemas: DictSchemas, catalog: Catalog
) -> None:
    records = kafka_messages(
        list(generate(WorkloadSpec(tenants=2, count=40, invalid=0.1), V1_ID, SIGNAL_V1.parsed))
    )
    _run(lake_settings, schemas, records[:50])
    first = {t: len(_rows(catalog, "coherence", t)) for t in ("signals", "scores", "quarantine")}
    # A fresh run re-reads from offset 0: everything again, plus the rest.
    _run(lake_settings, schemas, records)
    rows = _rows(catalog, "coherence", "signals")
    assert len(rows) == 80
    assert len({(r["kafka_partition"], r["kafka_offset"]) for r in rows}) == 80
    after = {t: len(_rows(catalog, "coherence", t)) for t in ("signals", "scores", "quarantine")}
    assert all(after[t] >= first[t] for t in first)
    score_keys = [
        (r["kafka_partition"], r["kafka_offset"]) for r in _rows(catalog, "coherence", "scores")
    ]
    assert len(score_keys) == len(set(score_keys))


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    tenants=st.integers(1, 3),
    count=st.integers(1, 25),
    bad=st.integers(0, 15),
    invalid=st.sampled_from([0.0, 0.2]),
    duplicates=st.sampled_from([0.0, 0.2]),
    partitions=st.integers(1, 4),
    source_batch=st.integers(1, 20),
    lake_batch=st.integers(1, 40),
    seed=st.integers(0, 1000),
)
def test_every_record_lands_once_or_is_quarantined_once_or_is_a_duplicate(
    lake_settings: Settings,
    catalog: Catalog,
    tenants: int,
    count: int,
    bad: int,
    invalid: float,
    duplicates: float,
    partitions: int,
    source_batch: int,
    lake_batch: int,
    seed: int,
) -> None:
    """Law: the input splits exactly into landed rows, quarantined rows and dropped duplicates."""
    namespace = f"law{uuid.uuid4().hex[:8]}"
    settings = lake_settings.with_changes("lake", namespace=namespace, batch_max_rows=lake_batch)
    spec = WorkloadSpec(
        tenants=tenants, count=count, bad=bad, invalid=invalid, duplicates=duplicates, seed=seed
    )
    workload = list(generate(spec, V1_ID, SIGNAL_V1.parsed))
    records = kafka_messages(workload, partitions=partitions)
    dlq = _run(settings, DictSchemas({V1_ID: SIGNAL_V1.text}), records, source_batch)

    landed = sorted(
        (r["kafka_partition"], r["kafka_offset"]) for r in _rows(catalog, namespace, "signals")
    )
    held = sorted(
        (r["kafka_partition"], r["kafka_offset"]) for r in _rows(catalog, namespace, "quarantine")
    )
    dropped = sorted(
        (r.partition, r.offset)
        for r, m in zip(records, workload, strict=True)
        if m.kind == "duplicate"
    )
    assert sorted(landed + held + dropped) == sorted((r.partition, r.offset) for r in records)
    assert len(dlq) == len(held)  # nothing drifts in so few records: every hold is a reject
    first_copies = {
        (r.partition, r.offset) for r, m in zip(records, workload, strict=True) if m.kind == "valid"
    }
    assert set(landed) == first_copies


def test_the_baseline_file_read_is_the_one_recorded(
    lake_settings: Settings, schemas: DictSchemas, catalog: Catalog, tmp_path: Path
) -> None:
    # build() reads the baseline once: the bytes it parses are the bytes whose hash every lake
    # commit names (a replay checks the file against it).
    path = tmp_path / "baseline.json"
    path.write_bytes(b'{"*": {"*": [0.1, 0.3, 0.5, 0.7, 0.9]}}')
    settings = lake_settings.with_changes("drift", baseline_file=str(path))
    spec = WorkloadSpec(tenants=2, count=20)
    _run(settings, schemas, kafka_messages(list(generate(spec, V1_ID, SIGNAL_V1.parsed))))
    recorded = set()
    for name in ("signals", "quarantine"):
        if catalog.table_exists(f"coherence.{name}"):
            table = catalog.load_table(f"coherence.{name}")
            for sha in {c.sha256 for c in settings_history(table, None)}:
                assert sha is not None
                recorded.add(read_settings(table, sha).inputs["drift_baseline"])
    assert recorded == {hashlib.sha256(path.read_bytes()).hexdigest()}


def test_the_drift_horizon_reaches_the_score_step_through_the_flow(
    lake_settings: Settings, schemas: DictSchemas, catalog: Catalog
) -> None:
    """``score.close_on = "horizon"``: the horizon the drift step sets survives dedupe,
    tenant-tag, redact, psi and the canary filter, and the landed ``scores`` are the law's
    (``tests.score_ticks.closed_by_horizons`` over the drift step's own releases); with
    ``"signal"`` they are the last change of each tick, and the two differ (signals 4 ms apart
    per tenant, ticks of 0.1 s, drift releases every 0.5 s)."""
    spec = WorkloadSpec(tenants=2, count=1_500, step=timedelta(milliseconds=4))
    workload = list(generate(spec, V1_ID, SIGNAL_V1.parsed))
    records = kafka_messages(workload)
    signal_settings = lake_settings.with_changes("score", close_on="signal").with_changes(
        "lake", namespace="by_signal"
    )
    _run(lake_settings, schemas, records)
    _run(signal_settings, schemas, records)

    def landed(namespace: str, tenant: str) -> list[tuple[Any, ...]]:
        rows = [r for r in _rows(catalog, namespace, "scores") if r["tenant_id"] == tenant]
        return sorted((r["seq"], r["score"], r["status"], r["updated_at"]) for r in rows)

    def key(c: ScoreChange) -> tuple[Any, ...]:
        return (c.seq, c.score, c.status, c.updated_at)

    for tenant in tenant_ids(2):
        drift = TenantDrift(tenant, lake_settings.drift, None, "")
        released: list[Decoded] = []
        for n, m in enumerate(w for w in workload if w.record and w.record["tenant_id"] == tenant):
            assert m.record is not None
            fields = {k: m.record[k] for k in ("signal_id", "type", "value", "weight", "source")}
            signal = Signal(tenant_id=tenant, ts=m.record["ts"], **fields)
            decoded = Decoded(signal, Provenance("t", 0, n, 1, "h"))
            released += [o for o in drift.push(decoded) if isinstance(o, Decoded)]
        released += [o for o in drift.flush() if isinstance(o, Decoded)]
        items = [Tagged(d, TAGS, "p", "x") for d in released]
        per_item, at_end = closed_by_horizons(items, lake_settings.score)
        expected = [key(c) for c in [*(c for cs in per_item for c in cs), *at_end]]
        by_horizon = landed("coherence", tenant)
        assert by_horizon == expected
        reference = TenantScore(lake_settings.score)
        every = [c for i in items if (c := reference.add(i)) is not None]
        by_signal = landed("by_signal", tenant)
        assert by_signal == [key(c) for c in last_of_each_tick(every, 0.1)]
        assert by_horizon != by_signal
        assert by_horizon[-1] == by_signal[-1]


def test_the_serving_stores_are_built_before_the_lake_and_the_graph_last(
    lake_settings: Settings,
) -> None:
    # Bytewax's worker runs a pass's steps in the order they were built: the serving stores'
    # puts come before the lake's steps' work, and the graph's put, the one that waits when its
    # queue is full, after the other stores' (flows/coherence.py SERVING).
    flow = build(lake_settings.with_changes("stores", sinks="redis,graph,postgres"))
    order = [step.step_id.removeprefix("coherence.") for step in flow.substeps]
    outputs = [step_id for step_id in order if step_id in ("postgres", "redis", "graph")]
    assert outputs == ["postgres", "redis", "graph"]
    assert order.index("graph") < order.index("lake_signals") < order.index("lake_scores")
