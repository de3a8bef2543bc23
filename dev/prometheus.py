"""Prometheus in the local stack: Debian's ``prometheus`` package (``make system``), scraping the
flow's metrics port (``igflow run --metrics-port 9464``), the API's (``api.metrics_port``,
9465) and ``igflow probe``'s (``probe.metrics_port``, 9466), with the SLO rules generated from
the shipped SLO file at every start (``<state>/prometheus/rules.json``, the same as ``igflow
slo rules``). Data in ``<state>/prometheus/data``, kept across restarts; its HTTP API on
``IGFLOW_PROMETHEUS_PORT``.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from core import slo
from dev import config
from dev.config import StackConfig
from dev.errors import StackError
from dev.service import PROBE_TIMEOUT_S, Port, Service

SYSTEM_PROMETHEUS = Path("/usr/bin/prometheus")
#: The ports the stack's Prometheus scrapes on 127.0.0.1: the flow's (``igflow run
#: --metrics-port 9464``; process i of a cluster on 9464 + i) and the API's (``api.metrics_port``).
FLOW_METRICS_PORT = 9464
API_METRICS_PORT = 9465
#: ``igflow probe``'s (``probe.metrics_port``).
PROBE_METRICS_PORT = 9466
SCRAPE_INTERVAL = "15s"
RULES_FILE = "rules.json"

__all__ = [
    "API_METRICS_PORT",
    "FLOW_METRICS_PORT",
    "PROBE_METRICS_PORT",
    "Prometheus",
    "scrape_config",
]


def scrape_config(flow: str, api: str, rules: str, probe: str | None = None) -> dict[str, Any]:
    """A Prometheus configuration scraping the flow at ``flow``, the API at ``api`` and, when
    given, ``igflow probe`` at ``probe`` (``host:port``), evaluating the rule file ``rules``
    (JSON is YAML: Prometheus reads it)."""
    jobs = [("igflow-flow", flow), ("igflow-api", api)]
    if probe is not None:
        jobs.append(("igflow-probe", probe))
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [rules],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in jobs
        ],
    }


class Prometheus(Service):
    """Debian's prometheus, in the foreground, listening on loopback."""

    name = "prometheus"

    def ports(self, cfg: StackConfig) -> list[Port]:
        return [Port(cfg.prometheus_port, config.ENV_PROMETHEUS)]

    def _config_file(self, cfg: StackConfig) -> Path:
        return self.workdir(cfg) / "prometheus.yml"

    def prepare(self, cfg: StackConfig) -> None:
        super().prepare(cfg)
        if not SYSTEM_PROMETHEUS.is_file():
            msg = f"prometheus: {SYSTEM_PROMETHEUS} not found; run `make system` (Debian's package)"
            raise StackError(msg)
        work = self.workdir(cfg)
        rules = slo.rule_groups(slo.load())
        (work / RULES_FILE).write_text(json.dumps(rules, indent=2) + "\n", encoding="utf-8")
        scrape = scrape_config(
            f"127.0.0.1:{FLOW_METRICS_PORT}",
            f"127.0.0.1:{API_METRICS_PORT}",
            RULES_FILE,
            probe=f"127.0.0.1:{PROBE_METRICS_PORT}",
        )
        self._config_file(cfg).write_text(json.dumps(scrape, indent=2) + "\n", encoding="utf-8")

    def command(self, cfg: StackConfig) -> list[str]:
        return [
            str(SYSTEM_PROMETHEUS),
            f"--config.file={self._config_file(cfg)}",
            f"--storage.tsdb.path={self.workdir(cfg) / 'data'}",
            f"--web.listen-address=127.0.0.1:{cfg.prometheus_port}",
            "--web.enable-lifecycle",
        ]

    def is_ready(self, cfg: StackConfig) -> bool:
        url = f"http://127.0.0.1:{cfg.prometheus_port}/-/ready"
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as resp:
            return int(resp.status) == 200
