"""The Grafana dashboards (``dashboards/grafana/``) and their provisioning in docker-compose.yml.

Docker is not available here, so what compose would do is checked as data: the YAML and JSON
parse, every file compose mounts exists, the provisioning points at the folder the dashboards
are mounted in, every panel uses the provisioned data source, every PromQL expression parses
(``promtool check rules``) and names only metrics the engine exports or rules it records.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import api.metrics
import core.metrics
import igflow.probe
from core import slo

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "dashboards" / "grafana"
DASHBOARDS = {"tenant": GRAFANA / "tenant.json", "platform": GRAFANA / "platform.json"}
# The modules whose metrics the dashboards read (imported for their registrations).
EXPORTERS = (api.metrics, core.metrics, igflow.probe)


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def _dashboard(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARDS[name].read_text())
    return data


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_compose_provisions_grafana_with_files_that_exist() -> None:
    grafana = _compose()["services"]["grafana"]
    assert grafana["image"].startswith("grafana/grafana:")
    assert "grafana" in _compose()["volumes"]
    mounts = {}
    for volume in grafana["volumes"]:
        source, target, *_mode = volume.split(":")
        if source.startswith("./"):
            assert (REPO / source).exists(), source
            mounts[target] = REPO / source
    assert all(p.startswith("127.0.0.1:") for p in grafana["ports"])
    # The provider's path is where the dashboards are mounted.
    provider_file = mounts["/etc/grafana/provisioning/dashboards"] / "igflow.yml"
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    folder = provider["options"]["path"]
    mounted = {t: s for t, s in mounts.items() if t.startswith(folder + "/")}
    assert {Path(s).name for s in mounted.values()} == {"tenant.json", "platform.json"}
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home in mounted
    # The data source is the compose Prometheus, under the uid every panel names.
    sources = mounts["/etc/grafana/provisioning/datasources"] / "prometheus.yml"
    (source,) = yaml.safe_load(sources.read_text())["datasources"]
    assert source["url"] == "https://prometheus:9090" and "prometheus" in _compose()["services"]
    # Verified against the certs service's CA, which the Grafana container mounts.
    assert source["jsonData"]["tlsAuthWithCACert"] is True
    assert source["secureJsonData"]["tlsCACert"] == "$__file{/tls/ca.pem}"
    assert "tls:/tls:ro" in grafana["volumes"]
    for name in DASHBOARDS:
        dashboard = _dashboard(name)
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]
            assert all(t["datasource"]["uid"] == source["uid"] for t in panel["targets"])


def test_compose_scrapes_the_probe_it_runs() -> None:
    services = _compose()["services"]
    probe = services["probe"]
    assert probe["command"][0] == "probe"
    assert probe["environment"]["IGFLOW_PROBE_METRICS_PORT"] == "9466"
    config = yaml.safe_load((REPO / "slo" / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    assert "probe:9466" in targets


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboards_are_well_formed(name: str) -> None:
    dashboard = _dashboard(name)
    assert dashboard["uid"] == f"igflow-{name}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(
        p["targets"] and all(t["expr"].strip() for t in p["targets"]) for p in dashboard["panels"]
    )
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_the_tenant_dashboard_is_one_tenant_at_a_time() -> None:
    dashboard = _dashboard("tenant")
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "tenant" and not variable["multi"] and not variable["includeAll"]
    assert "tenant_id" in variable["query"]["query"]
    for expr in _exprs(dashboard):
        # Every selector on a tenant is this dashboard's tenant; only the lag is per partition.
        assert "tenant_id" not in expr or 'tenant_id="$tenant"' in expr, expr
        assert "$tenant" in expr or "igflow_consumer_lag" in expr, expr


def _known_names() -> set[str]:
    """Every series name the registered metrics expose (``_total``, ``_bucket``... included),
    the rules the SLO file records, and Prometheus's own ``ALERTS``."""
    names = {n for ns in REGISTRY._collector_to_names.values() for n in ns}
    groups = slo.rule_groups(slo.load())["groups"]
    names.update(r["record"] for g in groups for r in g["rules"] if "record" in r)
    names.add("ALERTS")
    return names


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_query_parses_and_names_real_series(name: str, tmp_path: Path) -> None:
    exprs = [e.replace("$tenant", "tenant-00") for e in _exprs(_dashboard(name))]
    known = _known_names()
    for expr in exprs:
        for metric in re.findall(r"\b((?:igflow_|ingest_|slo:)[A-Za-z0-9_:]+|ALERTS)\b", expr):
            assert metric in known, f"{metric} in {expr}"
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.json"
    path.write_text(json.dumps(rules))
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: run `make system` (Debian's prometheus package)")
    done = subprocess.run(
        [binary, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
