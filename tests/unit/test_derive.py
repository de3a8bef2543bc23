"""derive_scores: the scores re-derived from landed signals equal the flow's own."""

from __future__ import annotations

from typing import Any

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main
from pyiceberg.catalog import Catalog

from core.errors import ConfigError
from core.records import RawRecord
from core.settings import Settings
from core.switches import NO_HOLDS
from flows.coherence import build
from igflow.workload import SOURCES, WorkloadSpec, generate, tenant_ids
from operators.tenancy import TenancyPolicy
from replay.derive import derive_scores
from replay.run import Progress
from tenancy.registry import StaticTenants
from tests.conftest import SIGNAL_V1, V1_ID, DictSchemas, kafka_messages
from tests.memory_keys import memory_sealer

POLICY = TenancyPolicy.load(Settings().policies_dir)
TENANTS = StaticTenants.of(*tenant_ids(10), sources=SOURCES)

#: One in-memory key store for the module: runs compared with each other seal alike.
SEALER = memory_sealer()


def _run(settings: Settings, schemas: DictSchemas, records: list[RawRecord]) -> None:
    flow = build(
        settings,
        source=TestingSource(records, batch_size=7),
        lookup=schemas,
        dlq=TestingSink([]),
        tenants=TENANTS,
        holds=NO_HOLDS,
        policy=POLICY,
        sealer=SEALER,
    )
    run_main(flow)


def _scores(catalog: Catalog, namespace: str) -> list[dict[str, Any]]:
    """The ``scores`` rows of ``namespace``, sorted by (tenant, seq)."""
    rows: list[dict[str, Any]] = (
        catalog.load_table(f"{namespace}.scores").scan().to_arrow().to_pylist()
    )
    return sorted(rows, key=lambda r: (r["tenant_id"], r["seq"]))


def _final(rows: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """The last change of each tenant: its score, status and two-place score."""
    out: dict[str, tuple[Any, ...]] = {}
    for r in rows:  # sorted by (tenant, seq)
        out[r["tenant_id"]] = (r["score"], r["status"], r["score_2dp"])
    return out


def _workload(tenants: int, count: int) -> list[RawRecord]:
    spec = WorkloadSpec(tenants=tenants, count=count, bad=5, invalid=0.1, duplicates=0.1)
    return kafka_messages(list(generate(spec, V1_ID, SIGNAL_V1.parsed)), partitions=4)


def test_scores_derived_from_signals_equal_the_flows_row_for_row(
    lake_settings: Settings, schemas: DictSchemas, catalog: Catalog
) -> None:
    records = _workload(tenants=3, count=60)
    # The producer keys by tenant: each tenant's records are in one partition.
    spans = {(r.key, r.partition) for r in records}
    assert len({k for k, _p in spans}) == len(spans)
    settings = lake_settings.with_changes("lake", namespace="a")
    _run(settings, schemas, records)

    seen: list[Progress] = []
    report = derive_scores(lake_settings, "a", "b", seen.append)

    original = _scores(catalog, "a")
    derived = _scores(catalog, "b")
    assert original
    assert derived == original
    assert (
        report.rows == catalog.load_table("a.signals").scan().to_arrow().num_rows == seen[-1].rows
    )
    assert seen[-1].total == report.rows
    assert report.tenants == 3
    assert report.snapshot_id is not None


def test_a_tenant_spanning_partitions_ends_on_the_same_score(
    lake_settings: Settings, schemas: DictSchemas, catalog: Catalog
) -> None:
    records = _workload(tenants=2, count=60)
    # Re-spread the records over 3 partitions round-robin, keeping the arrival order: each
    # tenant now spans partitions and (partition, offset) order is not its arrival order.
    offsets = [0, 0, 0]
    spread = []
    for i, r in enumerate(records):
        p = i % 3
        spread.append(RawRecord(r.topic, p, offsets[p], r.key, r.value, r.timestamp_ms))
        offsets[p] += 1
    settings = lake_settings.with_changes("lake", namespace="a")
    _run(settings, schemas, spread)

    derive_scores(lake_settings, "a", "b")

    original = _scores(catalog, "a")
    derived = _scores(catalog, "b")
    assert derived != original  # the change sequences differ: the case is a real one
    assert _final(derived) == _final(original)
    assert set(_final(original)) == set(tenant_ids(2))


def test_derive_refuses_its_source_a_namespace_with_tables_and_a_missing_source(
    lake_settings: Settings, schemas: DictSchemas, catalog: Catalog
) -> None:
    settings = lake_settings.with_changes("lake", namespace="a")
    _run(settings, schemas, _workload(tenants=1, count=5))
    with pytest.raises(ConfigError, match="source"):
        derive_scores(lake_settings, "a", "a")
    with pytest.raises(ConfigError, match="does not exist"):
        derive_scores(lake_settings, "missing", "b")
    derive_scores(lake_settings, "a", "b")
    with pytest.raises(ConfigError, match="already has tables"):
        derive_scores(lake_settings, "a", "b")
