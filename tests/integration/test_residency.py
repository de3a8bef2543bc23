"""Residency on the local stack (issue 18, point 3): a flow landing a residency's namespace holds
the records of tenants of other residencies as ``RESIDENCY_BLOCKED`` (quarantine and DLQ,
nothing lost), two deployments over one topic land each tenant in its own residency's
namespace, a flow configured with another residency's key space does not start, and held records
are released (``igflow residency release``) and land exactly once once the mapping is fixed; a
replay holds exactly what the run held.

tenant-03 is EU in ``policies/tenancy.json``; the demo's other tenants are US.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from core.catalog import catalog
from core.settings import Settings
from igflow.residency_release import release_blocked
from igflow.workload import WorkloadSpec
from tests.integration.conftest import expected_valid, finish, igflow, produce_workload
from tests.integration.test_pipeline import _v1_id
from tests.integration.test_switches import dsn  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration


def _rows(settings: Settings, namespace: str, table: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = (
        catalog(settings).load_table(f"{namespace}.{table}").scan().to_arrow().to_pylist()
    )
    return rows


def test_two_residencies_land_apart_and_nothing_is_lost(
    it_settings: Settings,
    dsn: str,  # noqa: F811
) -> None:
    settings = it_settings.with_changes("stores", postgres_dsn=dsn)
    us, eu = settings.lake.namespace, f"{settings.lake.namespace}_eu"
    env = {
        "IGFLOW_POSTGRES_DSN": dsn,
        "IGFLOW_RESIDENCY_NAMESPACES": f"US={us},EU={eu}",
        "IGFLOW_RESIDENCY_KEY_PREFIXES": "EU=eu:",
    }
    spec = WorkloadSpec(tenants=4, count=60, seed=71)
    produce_workload(settings, spec)
    valid = expected_valid(spec, _v1_id(settings))
    eu_keys = {k for k in valid if k[0] == "tenant-03"}
    assert 0 < len(eu_keys) < len(valid)

    # An EU deployment with the US key space refuses to start (exit 2, named).
    wrong = igflow(settings, "run", **env, IGFLOW_LAKE_NAMESPACE=eu)
    _out, err = wrong.communicate(timeout=120)
    assert wrong.returncode == 2, err.decode()[-2000:]
    assert "serves residency EU" in err.decode()

    finish(igflow(settings, "run", **env))  # the US deployment
    finish(igflow(settings, "run", **env, IGFLOW_LAKE_NAMESPACE=eu, IGFLOW_STORES_KEY_PREFIX="eu:"))
    landed_us = Counter((r["tenant_id"], r["signal_id"]) for r in _rows(settings, us, "signals"))
    landed_eu = Counter((r["tenant_id"], r["signal_id"]) for r in _rows(settings, eu, "signals"))
    assert set(landed_us) == valid - eu_keys and set(landed_us.values()) == {1}
    assert set(landed_eu) == eu_keys and set(landed_eu.values()) == {1}
    held_us = [r for r in _rows(settings, us, "quarantine") if r["reason"] == "RESIDENCY_BLOCKED"]
    held_eu = [r for r in _rows(settings, eu, "quarantine") if r["reason"] == "RESIDENCY_BLOCKED"]
    assert {r["tenant_id"] for r in held_us} == {"tenant-03"}
    assert {r["detail"] for r in held_us} == {"tenant residency EU not served here"}
    assert "tenant-03" not in {r["tenant_id"] for r in held_eu}
    # Each valid record landed in its residency and is held in the other one.
    assert len(held_us) == len(eu_keys) and len(held_eu) == len(valid - eu_keys)
    shown = json.loads(finish(igflow(settings, "residency", "show", **env))[0])
    assert (shown["serves"], shown["namespaces"]) == ("US", {"US": us, "EU": eu})


def test_held_records_are_released_once_the_mapping_is_fixed(
    it_settings: Settings,
    dsn: str,  # noqa: F811
) -> None:
    settings = it_settings.with_changes("stores", postgres_dsn=dsn)
    ns = settings.lake.namespace
    # Every score change (no tick coalescing): the original is two bounded runs (see
    # test_switches).
    env = {"IGFLOW_POSTGRES_DSN": dsn, "IGFLOW_SCORE_TICK_SECONDS": "0"}
    spec = WorkloadSpec(tenants=3, count=60, seed=73)  # US tenants only
    produce_workload(settings, spec)
    valid = expected_valid(spec, _v1_id(settings))
    # A mistake: this namespace mapped to EU. Every US tenant's record is held.
    finish(igflow(settings, "run", **env, IGFLOW_RESIDENCY_NAMESPACES=f"EU={ns}"))
    assert _rows(settings, ns, "signals") == []
    held = _rows(settings, ns, "quarantine")
    assert Counter(r["reason"] for r in held) == {"RESIDENCY_BLOCKED": len(valid)}

    fixed = {**env, "IGFLOW_RESIDENCY_NAMESPACES": f"US={ns}"}
    out = json.loads(finish(igflow(settings, "residency", "release", **fixed))[0])
    assert (out["held"], out["released"], out["already_released"]) == (len(valid), len(valid), 0)
    again = release_blocked(settings)
    assert (again.held, again.already, again.sent) == (len(valid), len(valid), 0)

    finish(igflow(settings, "run", **fixed))
    landed = Counter((r["tenant_id"], r["signal_id"]) for r in _rows(settings, ns, "signals"))
    assert set(landed) == valid and set(landed.values()) == {1}
    # The originals stay held by position; a replay holds them too and lands the copies.
    into = f"{ns}_replay"
    finish(igflow(settings, "replay", "--into", into, "--lake-only", **fixed))
    verified, _err = finish(igflow(settings, "verify", "--against", into, **fixed))
    assert "IDENTICAL" in verified
