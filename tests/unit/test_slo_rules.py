"""The Prometheus rules generated from the SLO file, checked and unit-tested by Prometheus's own
``promtool`` (Debian's ``prometheus`` package, installed by ``make system``): recording rules
compute each tenant's error ratio, and the multi-window, multi-burn-rate alerts fire for a burning
tenant and stay quiet for a healthy one. No skip: without promtool these tests fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core import slo
from dev.prometheus import scrape_config
from tests.promtool import promtool

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(slo.rule_groups(slo.load()), indent=2), encoding="utf-8")
    return path


def test_promtool_accepts_the_rules(rules: Path) -> None:
    out = promtool("check", "rules", str(rules), cwd=rules.parent)
    assert "SUCCESS" in out


def test_the_committed_rules_are_the_generated_ones() -> None:
    committed = json.loads((REPO / "slo" / "rules.json").read_text(encoding="utf-8"))
    assert committed == slo.rule_groups(slo.load()), "run: igflow slo rules > slo/rules.json"


def test_the_stack_and_compose_configs_are_valid(tmp_path: Path, rules: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps(scrape_config("127.0.0.1:9464", "127.0.0.1:9465", rules.name)))
    promtool("check", "config", str(config), cwd=tmp_path)
    promtool("check", "config", str(REPO / "slo" / "prometheus.yml"), cwd=REPO)


def _alert(tenant: str, tier: str, sli: str, window: str, objective: float) -> dict[str, Any]:
    row = next(r for r in slo.BURN_ALERTS if f"{r.long_window}/{r.short_window}" == window)
    burn = format(row.burn_rate, "g")
    return {
        "exp_labels": {
            "tenant_id": tenant,
            "slo": sli,
            "tier": tier,
            "severity": row.severity,
            "window": window,
            "burn_rate": burn,
        },
        "exp_annotations": {
            "summary": f"{tenant} burns its {sli} budget ({tier}: objective "
            f"{format(objective, 'g')}) at over {burn}x over {row.long_window} and "
            f"{row.short_window}"
        },
    }


ALL_WINDOWS = ("1h/5m", "6h/30m", "1d/2h", "3d/6h")


def test_burn_rate_alerts_fire_for_a_burning_tenant_only(rules: Path) -> None:
    """Three hours at these rates, evaluated at 2 h (a minute per sample):

    * tenant-00 (vip): half its signals fail: every window burns (pages and tickets);
    * tenant-05 (standard): healthy, with some rejects (rejected with a code is not a failure);
    * tenant-06 (standard): 90% of its commits are slower than 100 ms: freshness burns;
    * tenant-07 (standard): 0.2% fail, twice its 0.1% budget: only the slow 3d/6h ticket fires;
    * tenant-08 (standard): half its probe canaries take over 10 s: probe_freshness burns.
    """
    landed = 'ingest_events_processed_total{{tenant_id="{}",table="signals"}}'
    series = [
        (landed.format("tenant-00"), "0+60x180"),
        ('igflow_ingest_failed_total{tenant_id="tenant-00"}', "0+60x180"),
        (landed.format("tenant-05"), "0+60x180"),
        ('igflow_rejected_total{stage="validate",reason="FIELD_INVALID",tenant_id="tenant-05"}',
         "0+5x180"),
        ('igflow_pipeline_latency_seconds_bucket{table="signals",tenant_id="tenant-05",le="0.1"}',
         "0+10x180"),
        ('igflow_pipeline_latency_seconds_count{table="signals",tenant_id="tenant-05"}',
         "0+10x180"),
        ('igflow_pipeline_latency_seconds_bucket{table="signals",tenant_id="tenant-06",le="0.1"}',
         "0+1x180"),
        ('igflow_pipeline_latency_seconds_count{table="signals",tenant_id="tenant-06"}',
         "0+10x180"),
        (landed.format("tenant-06"), "0+60x180"),
        (landed.format("tenant-07"), "0+998x180"),
        ('igflow_ingest_failed_total{tenant_id="tenant-07"}', "0+2x180"),
        ('igflow_probe_freshness_seconds_bucket{tenant_id="tenant-08",le="10.0"}', "0+1x180"),
        ('igflow_probe_freshness_seconds_count{tenant_id="tenant-08"}', "0+2x180"),
    ]  # fmt: skip
    expected = [
        *(_alert("tenant-00", "vip", "ingest_availability", w, 0.9995) for w in ALL_WINDOWS),
        *(_alert("tenant-06", "standard", "freshness", w, 0.95) for w in ALL_WINDOWS),
        _alert("tenant-07", "standard", "ingest_availability", "3d/6h", 0.999),
        *(_alert("tenant-08", "standard", "probe_freshness", w, 0.99) for w in ALL_WINDOWS),
    ]
    ratio = "slo:sli_error:ratio_rate1h"
    tests = {
        "rule_files": [rules.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "alert_rule_test": [
                    {"eval_time": "2h", "alertname": "SLOErrorBudgetBurn", "exp_alerts": expected}
                ],
                "promql_expr_test": [
                    {
                        "expr": 'slo:error_budget:ratio{slo="probe_freshness"}',
                        "eval_time": "2h",
                        "exp_samples": [
                            {
                                "labels": 'slo:error_budget:ratio{slo="probe_freshness",'
                                f'tier="{tier}"}}',
                                "value": 0.01,
                            }
                            for tier in ("standard", "vip")
                        ],
                    },
                    {
                        "expr": f'{ratio}{{slo="ingest_availability"}}',
                        "eval_time": "2h",
                        "exp_samples": [
                            {"labels": _labels(ratio, t, tier, "ingest_availability"), "value": v}
                            for t, tier, v in (
                                ("tenant-00", "vip", 0.5),
                                ("tenant-05", "standard", 0),
                                ("tenant-06", "standard", 0),
                                ("tenant-07", "standard", 0.002),
                            )
                        ],
                    },
                    {
                        "expr": f'{ratio}{{slo="freshness"}}',
                        "eval_time": "2h",
                        "exp_samples": [
                            {"labels": _labels(ratio, t, "standard", "freshness"), "value": v}
                            for t, v in (("tenant-05", 0), ("tenant-06", 0.9))
                        ],
                    },
                ],
            }
        ],
    }
    test_file = rules.parent / "rules_test.json"
    test_file.write_text(json.dumps(tests, indent=2), encoding="utf-8")
    out = promtool("test", "rules", test_file.name, cwd=rules.parent)
    assert "SUCCESS" in out


def _labels(name: str, tenant: str, tier: str, sli: str) -> str:
    return f'{name}{{slo="{sli}",tenant_id="{tenant}",tier="{tier}"}}'
