"""The SLO file (slo/slos.json), its checks, and the bounded tenant labels the SLIs rely on."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from core import slo
from core.errors import ConfigError
from core.metric_labels import OTHER_TENANTS, TenantLabels
from core.resources import slo_file


def _shipped() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(slo_file().read_text(encoding="utf-8"))
    return data


def test_the_shipped_file_has_the_seeds_defaults() -> None:
    slos = slo.load()
    assert slos.default_tier == "standard"
    assert {t.name for t in slos.tiers} >= {"vip", "standard"}
    standard = {o.sli: o for t in slos.tiers if t.name == "standard" for o in t.objectives}
    assert standard["ingest_availability"].objective == 0.999
    assert standard["freshness"].threshold_seconds == 0.1
    assert standard["freshness"].objective == 0.95  # p95
    assert standard["api_read_latency"].threshold_seconds == 0.35
    assert standard["api_write_latency"].threshold_seconds == 0.7
    assert set(standard) == set(slo.SLIS)


def test_tenants_are_in_their_tier_or_the_default() -> None:
    slos = slo.load()
    assert slos.tier_of("tenant-00") == "vip"
    assert slos.tier_of("tenant-07") == "standard"
    assert slos.tier_of("never-seen") == "standard"
    assert slos.named_tenants() == {"tenant-00"}


def test_tier_matchers_partition_the_tenants() -> None:
    data = _shipped()
    data["tiers"]["vip"]["tenants"] = ["a.b", "c"]
    slos = slo.parse(data)
    vip, standard = (next(t for t in slos.tiers if t.name == n) for n in ("vip", "standard"))
    # RE2 metacharacters are escaped (twice: once for the regex, once for the PromQL string).
    assert slos.tenant_matcher(vip) == 'tenant_id=~"a\\\\.b|c"'
    assert slos.tenant_matcher(standard) == 'tenant_id!~"a\\\\.b|c"'


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["tiers"]["vip"]["slos"].update(typo={"objective": 0.9}), "unknown SLI"),
        (
            lambda d: d["tiers"]["vip"]["slos"]["freshness"].update(threshold_seconds=0.2),
            "bucket boundary",
        ),
        (lambda d: d["tiers"]["standard"].update(tenants=["tenant-00"]), "is in tiers"),
        (lambda d: d.update(default_tier="gold"), "default_tier"),
        (
            lambda d: d["tiers"]["vip"]["slos"]["ingest_availability"].update(objective=1),
            "below 1",
        ),
    ],
)
def test_a_wrong_file_is_refused_with_its_reason(edit: Any, message: str) -> None:
    data = copy.deepcopy(_shipped())
    edit(data)
    with pytest.raises(ConfigError, match=message):
        slo.parse(data)


def test_thresholds_are_buckets_of_the_metrics_themselves() -> None:
    from api.metrics import API_SECONDS
    from core.metrics import PIPELINE_LATENCY

    assert tuple(PIPELINE_LATENCY._upper_bounds[:-1]) == tuple(map(float, slo.FRESHNESS_BUCKETS))
    assert tuple(API_SECONDS._upper_bounds[:-1]) == tuple(map(float, slo.API_LATENCY_BUCKETS))
    assert "tenant_id" in PIPELINE_LATENCY._labelnames
    assert set(API_SECONDS._labelnames) == {"kind", "tenant_id"}


def test_tenant_labels_are_bounded_by_the_cap_and_keep_named_tenants() -> None:
    labels = TenantLabels(cap=2, pinned=["vip"])
    assert [labels(t) for t in ("a", "b", "c", "a", "vip")] == ["a", "b", OTHER_TENANTS, "a", "vip"]
    assert len({labels(f"t{i}") for i in range(1000)} | {"a", "b", "vip"}) <= 2 + 1 + 1 + 2


def test_a_graphql_mutation_is_a_write_and_the_rest_a_read() -> None:
    from graphql import parse

    from api.graphql_http import _kind

    doc = parse("query Q { a } mutation M { b }")
    assert _kind(doc, "M") == "write"
    assert _kind(doc, "Q") == "read"
    assert _kind(parse("mutation { b }"), None) == "write"
    assert _kind(parse("{ a }"), None) == "read"
    assert _kind(None, None) == "read"  # did not parse: refused before it could write


def test_budget_left_and_burn_rate() -> None:
    slos = slo.load()
    query = next(
        q
        for q in slo.budget_queries(slos)
        if q.tier == "standard" and q.objective.sli == "ingest_availability"
    )
    half = slo.budget_row("t", query, 0.0005, 0.0144)  # half the 0.1% budget; 14.4x this hour
    assert half.sli == pytest.approx(0.9995)
    assert half.budget_left == pytest.approx(0.5)
    assert half.burn_rate_1h == pytest.approx(14.4)
    assert not half.spent
    assert slo.budget_row("t", query, 0.001, None).spent  # exactly the budget: spent
    quiet = slo.budget_row("t", query, 0.01, float("nan"))  # no event in the last hour
    assert quiet.spent and quiet.burn_rate_1h is None
    assert "[30d]" in query.window and "[1h]" in query.last_hour
