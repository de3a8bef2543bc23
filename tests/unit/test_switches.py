"""Kill switches without services: the hold rule, the flow holding a switched-off source's
records (nothing lost), a replay holding exactly what the original held, the API's gate."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from pyiceberg.catalog import Catalog

from api.switches import OperationGate
from core.errors import ConfigError
from core.reasons import ReasonCode
from core.records import Decoded
from core.sealing import is_sealed
from core.settings import Settings, SwitchSettings, ValidateSettings
from core.signal_rules import hold
from core.switches import (
    HELD_REASONS,
    NO_HOLDS,
    FirstHolds,
    ReplayedHolds,
    StaticSwitches,
    SwitchHolds,
    SwitchKind,
    held_detail,
)
from flows.coherence import build
from igflow.cli import _parser
from igflow.lake_reader import open_sealed
from igflow.workload import SOURCES, WorkloadSpec, generate, tenant_ids
from operators.tenancy import TenancyPolicy
from operators.validate import validate_batch
from sources.pausable import PausableSource
from tenancy.registry import StaticTenants
from tenancy.switches import PostgresSwitches
from tests.conftest import SIGNAL_V1, V1_ID, DictSchemas, kafka_messages
from tests.memory_keys import memory_sealer
from tests.unit.test_validate import decoded

POLICY = TenancyPolicy.load(Settings().policies_dir)
TENANTS = StaticTenants.of(*tenant_ids(3), sources=SOURCES)

#: One in-memory key store for the module: runs compared with each other seal alike.
SEALER = memory_sealer()


def test_a_source_switch_holds_before_a_tenant_switch() -> None:
    item = decoded(tenant_id="tenant-00", source="sensor-a")
    both = SwitchHolds(
        StaticSwitches([(SwitchKind.SOURCE, "sensor-a"), (SwitchKind.TENANT, "tenant-00")])
    )
    out = hold(item, both)
    assert not isinstance(out, type(item))
    assert out.reason is ReasonCode.SOURCE_DISABLED
    assert out.detail == "source switched off: sensor-a"
    assert out.stage == "validate" and out.tenant_id == "tenant-00"
    tenant_only = SwitchHolds(StaticSwitches([(SwitchKind.TENANT, "tenant-00")]))
    out = hold(item, tenant_only)
    assert not isinstance(out, type(item))
    assert (out.reason, out.detail) == (
        ReasonCode.TENANT_DISABLED,
        held_detail(SwitchKind.TENANT, "tenant-00"),
    )
    # Other sources, other tenants and other kinds of switch hold nothing.
    others = SwitchHolds(
        StaticSwitches(
            [
                (SwitchKind.SOURCE, "sensor-b"),
                (SwitchKind.TENANT, "tenant-01"),
                (SwitchKind.FLOW, "coherence"),
                (SwitchKind.OPERATION, "publish"),
            ]
        )
    )
    assert hold(item, others) is item
    assert hold(item, NO_HOLDS) is item


def test_replayed_holds_go_by_input_position_only() -> None:
    item = decoded(tenant_id="tenant-00", source="sensor-a")
    p = item.provenance
    held = ReplayedHolds(
        {(p.topic, p.kafka_partition, p.kafka_offset): (ReasonCode.SOURCE_DISABLED, "x")}
    )
    out = hold(item, held)
    assert not isinstance(out, type(item)) and out.reason is ReasonCode.SOURCE_DISABLED
    elsewhere = ReplayedHolds(
        {(p.topic, p.kafka_partition, p.kafka_offset + 1): (ReasonCode.SOURCE_DISABLED, "x")}
    )
    assert hold(item, elsewhere) is item


def test_a_batch_asks_only_the_holds_that_can_hold_something_now() -> None:
    """validate's native path asks each record only the gates of holds that can hold
    something (``Holds.gate``): none while every switch is on and no position is held; the
    gates it gets decide as ``held`` does."""
    item = decoded(tenant_id="tenant-00", source="sensor-a")
    p = item.provenance
    position = (p.topic, p.kafka_partition, p.kafka_offset)
    board = StaticSwitches()
    quiet = FirstHolds(ReplayedHolds({}), SwitchHolds(board))
    assert quiet.gate() is None and quiet.held(item) is None
    off = SwitchHolds(StaticSwitches([(SwitchKind.SOURCE, "sensor-a")]))
    replayed = ReplayedHolds({position: (ReasonCode.TENANT_DISABLED, "x")})
    for holds in (FirstHolds(off), FirstHolds(replayed, off), FirstHolds(off, replayed)):
        gate = holds.gate()
        assert gate is not None and gate(item) == holds.held(item) is not None
    asked: list[Decoded] = []

    def counted(record: Decoded) -> None:
        asked.append(record)

    class Quiet:
        def gate(self) -> None:
            return None

        def held(self, record: Decoded) -> None:
            counted(record)

    assert validate_batch(TENANTS, ValidateSettings(), Quiet())([item]) == [item]
    assert asked == []


def _run(settings: Settings, records: list[Any], holds: Any) -> list[Any]:
    dlq: list[Any] = []
    run_main(
        build(
            settings,
            source=TestingSource(records, batch_size=10),
            lookup=DictSchemas({V1_ID: SIGNAL_V1.text}),
            dlq=TestingSink(dlq),
            tenants=TENANTS,
            holds=holds,
            policy=POLICY,
            sealer=SEALER,
        )
    )
    return dlq


def _rows(catalog: Catalog, namespace: str, table: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (
        catalog.load_table(f"{namespace}.{table}").scan().to_arrow().to_pylist()
    )
    return rows


def test_the_flow_holds_a_switched_off_source_and_lands_everything_else(
    lake_settings: Settings, catalog: Catalog
) -> None:
    workload = list(generate(WorkloadSpec(tenants=3, count=40, seed=5), V1_ID, SIGNAL_V1.parsed))
    records = kafka_messages(workload)
    off = SwitchHolds(StaticSwitches([(SwitchKind.SOURCE, "feed-c")]))
    dlq = _run(lake_settings, records, off)

    valid = {(m.record["tenant_id"], m.record["signal_id"]): m.record for m in workload if m.record}
    held = {k for k, r in valid.items() if r["source"] == "feed-c"}
    assert 0 < len(held) < len(valid)
    landed = [(r["tenant_id"], r["signal_id"]) for r in _rows(catalog, "coherence", "signals")]
    assert len(landed) == len(set(landed))
    assert set(landed) == set(valid) - held
    quarantine = _rows(catalog, "coherence", "quarantine")
    assert Counter(r["reason"] for r in quarantine) == {"SOURCE_DISABLED": len(held)}
    assert {r["detail"] for r in quarantine} == {"source switched off: feed-c"}
    # Held with the exact Kafka key and value (sealed for their tenant: opened through the
    # analyst's helper), so a release re-sends them byte for byte.
    assert all(is_sealed(r["payload"]) for r in quarantine)
    table = catalog.load_table("coherence.quarantine").scan().to_arrow()
    opened = open_sealed(table, "quarantine", SEALER).to_pylist()
    sent = {(r.partition, r.offset): (r.key, r.value) for r in records}
    assert len(opened) == len(held) and all(
        sent[(r["kafka_partition"], r["kafka_offset"])] == (r["kafka_key"], r["payload"])
        for r in opened
    )
    reasons = Counter(dict(m.headers)["igflow.reason"].decode() for m in dlq)
    assert reasons == {"SOURCE_DISABLED": len(held)}


def test_a_replay_with_the_original_holds_writes_the_same_rows(
    lake_settings: Settings, catalog: Catalog
) -> None:
    workload = list(generate(WorkloadSpec(tenants=3, count=30, seed=9), V1_ID, SIGNAL_V1.parsed))
    records = kafka_messages(workload)
    _run(lake_settings, records, SwitchHolds(StaticSwitches([(SwitchKind.TENANT, "tenant-01")])))
    original = _rows(catalog, "coherence", "quarantine")
    assert {r["reason"] for r in original} == {"TENANT_DISABLED"}
    positions = {
        (r["kafka_topic"], r["kafka_partition"], r["kafka_offset"]): (
            ReasonCode(r["reason"]),
            r["detail"],
        )
        for r in original
    }
    # The switch is on again when the replay runs; it holds by position all the same.
    again = lake_settings.with_changes("lake", namespace="again")
    _run(again, records, ReplayedHolds(positions))

    def content(ns: str, table: str) -> list[tuple[Any, ...]]:
        return sorted(
            tuple(v for k, v in r.items() if k != "ingested_at") for r in _rows(catalog, ns, table)
        )

    for table in ("signals", "scores", "quarantine"):
        assert content("again", table) == content("coherence", table), table


class _Unreachable:
    def off(self) -> frozenset[tuple[SwitchKind, str]]:
        msg = "switch board unavailable: no route"
        raise ConfigError(msg)

    def is_off(self, kind: SwitchKind, name: str) -> bool:
        msg = "switch board unavailable: no route"
        raise ConfigError(msg)


def test_the_api_gate_refuses_a_switched_off_operation_and_fails_open() -> None:
    gate = OperationGate(StaticSwitches([(SwitchKind.OPERATION, "publish")]))
    assert asyncio.run(gate.refused("publish")) is ReasonCode.OPERATION_DISABLED
    assert asyncio.run(gate.refused("read")) is None
    assert asyncio.run(OperationGate(_Unreachable()).refused("publish")) is None


def test_switch_settings_and_held_reasons() -> None:
    assert SwitchSettings().refresh_seconds == 2.0
    with pytest.raises(ConfigError):
        SwitchSettings(refresh_seconds=0)
    env = {"IGFLOW_SWITCHES_REFRESH_SECONDS": "0.5"}
    assert Settings.load(environ=env).switches.refresh_seconds == 0.5
    assert set(HELD_REASONS) == {SwitchKind.SOURCE, SwitchKind.TENANT}
    # Construction connects to nothing; pickling keeps the DSN and the interval only.
    board = PostgresSwitches("postgresql://nobody@127.0.0.1:1/none", 3.0)
    assert board.due
    assert board.__reduce__() == (PostgresSwitches, ("postgresql://nobody@127.0.0.1:1/none", 3.0))


def test_the_cli_parses_switch_commands() -> None:
    args = _parser().parse_args(["switch", "off", "source", "feed-c", "--note", "outage"])
    assert (args.action, args.kind, args.name, args.note) == ("off", "source", "feed-c", "outage")
    args = _parser().parse_args(["switch", "on", "tenant", "t1", "--no-wait"])
    assert args.no_wait and not args.no_release
    with pytest.raises(SystemExit):
        _parser().parse_args(["switch", "off", "nonsense", "x"])


def test_a_paused_source_reads_nothing_and_then_everything() -> None:
    asked: list[bool] = []
    seen_while_paused: list[int] = []
    out: list[int] = []

    def paused() -> bool:
        # Off for the first 5 questions, then on.
        asked.append(len(asked) < 5)
        return asked[-1]

    def note(x: int) -> int:
        if any(asked) and len(asked) <= 5:
            seen_while_paused.append(x)
        return x

    flow = Dataflow("pause")
    source = PausableSource(TestingSource(range(20), batch_size=3), paused, timedelta(0))
    op.output("out", op.map("note", op.input("in", flow, source), note), TestingSink(out))
    run_main(flow)
    assert asked[:5] == [True] * 5 and not asked[5]
    assert seen_while_paused == []
    assert out == list(range(20))
