"""Canary signals (``igflow probe``): they land like any signal but never count in a score."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from bytewax.testing import TestingSink, TestingSource, run_main
from pyiceberg.catalog import Catalog

from core.canary import CANARY_SOURCE, CANARY_TYPE, is_canary
from core.records import Decoded, Provenance, RawRecord, Signal, input_hash
from core.settings import DriftSettings, Settings
from core.switches import NO_HOLDS
from core.wire import encode
from flows.coherence import build
from igflow.workload import SOURCES, Message, WorkloadSpec, generate, tenant_ids
from operators.drift import TenantDrift
from operators.tenancy import TenancyPolicy
from tenancy.registry import StaticTenants
from tests.conftest import SIGNAL_V1, V1_ID, DictSchemas, kafka_messages
from tests.memory_keys import memory_sealer

POLICY = TenancyPolicy.load(Settings().policies_dir)
TENANTS = StaticTenants.of(*tenant_ids(3), sources=(*SOURCES, CANARY_SOURCE))

#: One in-memory key store for the module: runs compared with each other seal alike.
SEALER = memory_sealer()


def _signal(source: str, type_: str) -> Signal:
    return Signal("t", "s", type_, 0.5, None, source, datetime(2026, 1, 1, tzinfo=UTC))


def test_only_the_probe_source_and_the_canary_type_together_mark_a_canary() -> None:
    assert is_canary(_signal(CANARY_SOURCE, CANARY_TYPE))
    assert not is_canary(_signal("sensor-a", CANARY_TYPE))  # a tenant's own "canary" type
    assert not is_canary(_signal(CANARY_SOURCE, "latency"))


def _canaries(workload: list[Message]) -> list[Message]:
    """After every 10th valid message, a canary of the same tenant, value 0 (it would drag the
    score down if it counted), at the same event time."""
    out: list[Message] = []
    for i, m in enumerate(workload):
        out.append(m)
        if m.kind == "valid" and m.record and i % 10 == 0:
            record = {
                **m.record,
                "signal_id": f"canary-{i}",
                "source": CANARY_SOURCE,
                "type": CANARY_TYPE,
                "value": 0.0,
            }
            value = encode(V1_ID, SIGNAL_V1.parsed, record)
            out.append(dataclasses.replace(m, value=value, record=record, kind="valid"))
    return out


def _run(settings: Settings, schemas: DictSchemas, records: list[RawRecord]) -> None:
    dlq: list[Any] = []
    flow = build(
        settings,
        source=TestingSource(records, batch_size=10),
        lookup=schemas,
        dlq=TestingSink(dlq),
        tenants=TENANTS,
        policy=POLICY,
        sealer=SEALER,
        holds=NO_HOLDS,
    )
    run_main(flow)


def _rows(catalog: Catalog, namespace: str, table: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (
        catalog.load_table(f"{namespace}.{table}").scan().to_arrow().to_pylist()
    )
    return rows


def test_canaries_land_in_signals_and_leave_every_score_unchanged(
    lake_settings: Settings, schemas: DictSchemas, catalog: Catalog
) -> None:
    workload = list(generate(WorkloadSpec(tenants=3, count=60, seed=3), V1_ID, SIGNAL_V1.parsed))
    with_canaries = _canaries(workload)
    canaries = len(with_canaries) - len(workload)
    assert canaries > 0

    _run(lake_settings.with_changes("lake", namespace="plain"), schemas, kafka_messages(workload))
    _run(
        lake_settings.with_changes("lake", namespace="probed"),
        schemas,
        kafka_messages(with_canaries),
    )

    plain = _rows(catalog, "plain", "signals")
    probed = _rows(catalog, "probed", "signals")
    landed = [r for r in probed if r["source"] == CANARY_SOURCE]
    assert len(landed) == canaries and len(probed) == len(plain) + canaries

    def scores(namespace: str) -> list[tuple[str, int, float, str]]:
        return sorted(
            (r["tenant_id"], r["seq"], r["score"], r["status"])
            for r in _rows(catalog, namespace, "scores")
        )

    assert scores("probed") == scores("plain")
    assert {t for t, *_ in scores("plain")} == set(tenant_ids(3))


def _decoded(offset: int, source: str, type_: str) -> Decoded:
    payload = f"t|{offset}".encode()
    raw = RawRecord("coherence.signals.v1", 0, offset, b"t", payload)
    signal = Signal("t", f"s-{offset}", type_, 0.5, None, source, datetime(2026, 1, 1, tzinfo=UTC))
    return Decoded(signal, Provenance(raw.topic, 0, offset, 1, input_hash(payload)), None, raw)


def test_a_canary_is_not_batched_for_drift_but_keeps_its_tenants_order() -> None:
    state = TenantDrift("t", DriftSettings(batch_size=3), None, "")
    canary = _decoded(0, CANARY_SOURCE, CANARY_TYPE)
    # An idle tenant: the canary goes on at once (a batch would wait for its time-out).
    assert state.push(canary) == [canary]
    # A busy one: it waits behind the tenant's earlier record, still undecided, as its own
    # signals do; both go on when that record's batch closes.
    held = _decoded(1, "sensor-a", "latency")
    assert state.push(held) == []
    later = _decoded(2, CANARY_SOURCE, CANARY_TYPE)
    assert state.push(later) == []
    assert [o.provenance.kafka_offset for o in state.flush()] == [1, 2]
