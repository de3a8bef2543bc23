"""Residency without services: the map and what a namespace serves, the hold of a tenant of
another residency or of a source whose residency conflicts, the flow holding them (nothing
lost), a replay by the original's held positions, and the settings."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main
from pyiceberg.catalog import Catalog

from core.errors import ConfigError
from core.reasons import ReasonCode
from core.residency import ResidencyHolds, parse_map, served_residency
from core.settings import SettingError, Settings
from core.signal_rules import hold
from core.sources import StaticSources
from core.switches import FirstHolds, Holds
from flows.coherence import build
from flows.held import HELD, held_positions
from igflow.cli import _parser
from igflow.workload import SOURCES, WorkloadSpec, generate, tenant_ids
from operators.tenancy import TenancyPolicy
from tenancy.registry import StaticTenants
from tests.conftest import SIGNAL_V1, V1_ID, DictSchemas, kafka_messages
from tests.memory_keys import memory_sealer
from tests.unit.test_sources import entry
from tests.unit.test_validate import decoded

POLICY = TenancyPolicy.load(Settings().policies_dir)
# tenant-03 is EU in policies/tenancy.json; the others are US.
TENANTS = StaticTenants.of(*tenant_ids(4), sources=SOURCES)
MAP = "US=coherence,EU=coherence_eu"

#: One in-memory key store for the module: runs compared with each other seal alike.
SEALER = memory_sealer()


def test_the_map_and_the_residency_a_namespace_serves() -> None:
    assert parse_map(MAP) == {"US": "coherence", "EU": "coherence_eu"}
    assert parse_map("") == {}
    assert served_residency(MAP, "", "coherence", "") == "US"
    assert served_residency(MAP, "EU=eu:", "coherence_eu", "eu:") == "EU"
    assert served_residency(MAP, "EU=eu:", "elsewhere", "") is None  # not mapped: no gate
    assert served_residency("", "", "coherence", "") is None
    with pytest.raises(ConfigError, match="serves residency EU, whose serving key prefix is 'eu:'"):
        served_residency(MAP, "EU=eu:", "coherence_eu", "")
    with pytest.raises(ConfigError, match="serving key prefix is ''"):
        served_residency(MAP, "EU=eu:", "coherence", "eu:")


def test_a_tenant_of_another_residency_is_held() -> None:
    us, eu = decoded(tenant_id="tenant-00"), decoded(tenant_id="tenant-03")
    gate = ResidencyHolds("US", POLICY)
    assert hold(us, gate) is us
    out = hold(eu, gate)
    assert not isinstance(out, type(eu))
    assert (out.reason, out.detail) == (
        ReasonCode.RESIDENCY_BLOCKED,
        "tenant residency EU not served here",
    )
    assert out.stage == "validate" and out.record.value == b"payload"
    assert hold(eu, ResidencyHolds("EU", POLICY)) is eu
    assert hold(us, ResidencyHolds(None, POLICY)) is us


def test_a_source_whose_residency_conflicts_with_the_tenants_is_held() -> None:
    registry = StaticSources([entry("sensor-a", residency="EU"), entry("sensor-b")])
    gate = ResidencyHolds(None, POLICY, registry)
    us_from_eu = decoded(tenant_id="tenant-00", source="sensor-a")
    out = hold(us_from_eu, gate)
    assert not isinstance(out, type(us_from_eu))
    assert (out.reason, out.detail) == (
        ReasonCode.RESIDENCY_BLOCKED,
        "source residency EU is not the tenant's US",
    )
    eu_from_eu = decoded(tenant_id="tenant-03", source="sensor-a")
    assert hold(eu_from_eu, gate) is eu_from_eu
    anywhere = decoded(tenant_id="tenant-00", source="sensor-b")  # no residency: any
    assert hold(anywhere, gate) is anywhere
    unregistered = decoded(tenant_id="tenant-00", source="feed-c")
    assert hold(unregistered, gate) is unregistered


def _run(settings: Settings, records: list[Any], holds: Holds) -> list[Any]:
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


def test_the_flow_holds_another_residency_and_a_replay_holds_the_same(
    lake_settings: Settings, catalog: Catalog
) -> None:
    workload = list(generate(WorkloadSpec(tenants=4, count=40, seed=3), V1_ID, SIGNAL_V1.parsed))
    records = kafka_messages(workload)
    settings = lake_settings.with_changes("residency", namespaces=MAP)
    dlq = _run(settings, records, ResidencyHolds("US", POLICY))

    valid = {(m.record["tenant_id"], m.record["signal_id"]): m.record for m in workload if m.record}
    eu = {k for k in valid if k[0] == "tenant-03"}
    assert 0 < len(eu) < len(valid)
    landed = {(r["tenant_id"], r["signal_id"]) for r in _rows(catalog, "coherence", "signals")}
    assert landed == set(valid) - eu
    quarantine = _rows(catalog, "coherence", "quarantine")
    assert Counter(r["reason"] for r in quarantine) == {"RESIDENCY_BLOCKED": len(eu)}
    assert {r["tenant_id"] for r in quarantine} == {"tenant-03"}
    reasons = Counter(dict(m.headers)["igflow.reason"].decode() for m in dlq)
    assert reasons == {"RESIDENCY_BLOCKED": len(eu)}
    # The held positions of the namespace hold the same records in a replay, which serves no
    # residency of its own (its scratch namespace is not mapped).
    held = held_positions(settings)
    assert ReasonCode.RESIDENCY_BLOCKED in HELD
    again = settings.with_changes("lake", namespace="again")
    _run(again, records, FirstHolds(held))

    def content(ns: str, table: str) -> list[tuple[Any, ...]]:
        return sorted(
            tuple(v for k, v in r.items() if k != "ingested_at") for r in _rows(catalog, ns, table)
        )

    for table in ("signals", "scores", "quarantine"):
        assert content("again", table) == content("coherence", table), table


def test_a_flow_refuses_a_key_space_of_another_residency(lake_settings: Settings) -> None:
    settings = lake_settings.with_changes(
        "residency", namespaces=MAP, key_prefixes="EU=eu:"
    ).with_changes("lake", namespace="coherence_eu")
    with pytest.raises(ConfigError, match="serves residency EU"):
        build(settings, tenants=TENANTS, policy=POLICY, source=TestingSource([]))


@pytest.mark.parametrize("value", ["EU", "eu=x", "EU=a,EU=b", "US=x,EU=x", "E U=x"])
def test_residency_settings_refuse_a_bad_map(value: str) -> None:
    with pytest.raises(SettingError, match=r"residency\.namespaces"):
        Settings().with_changes("residency", namespaces=value)


def test_the_cli_parses_residency_commands() -> None:
    parser = _parser()
    assert parser.parse_args(["residency", "release", "--tenant", "t"]).tenant == "t"
    assert parser.parse_args(["residency", "show"]).action == "show"
