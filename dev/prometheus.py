"""Prometheus in the local stack: Debian's ``prometheus`` package (``make system``), scraping the
flow's metrics port (``igflow run --metrics-port 9464``), the API's (``api.metrics_port``,
9465) and ``igflow probe``'s (``probe.metrics_port``, 9466), with the SLO rules generated from
the shipped SLO file at every start (``<state>/prometheus/rules.json``, the same as ``igflow
slo rules``). Data in ``<state>/prometheus/data``, kept across restarts; its HTTP API on
``IGFLOW_PROMETHEUS_PORT``.

With TLS on (``cfg.tls``) both of its hops are HTTPS: it scrapes with ``scheme: https`` and
``tls_config.ca_file`` (the stack's CA; Go checks the certificate's IP SAN ``127.0.0.1``), and
serves its API and UI with the stack's certificate (``--web.config.file``, ``tls_server_config``;
exporter-toolkit, in Debian 12's 2.42). A plaintext request gets ``400`` and no data.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from pathlib import Path
from typing import Any

from core import slo
from dev import config, tls
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
#: Scrapes and rule evaluations: every 15 s for docker-compose's Prometheus
#: (``slo/prometheus.yml``); every 5 s for the local stack's, which is for quick feedback (a
#: dashboard or ``igflow slo`` seconds after a run; the dashboard's tests wait for two scrapes
#: and an evaluation: 30 s at 15 s).
SCRAPE_INTERVAL = "15s"
LOCAL_SCRAPE_INTERVAL = "5s"
RULES_FILE = "rules.json"
WEB_CONFIG_FILE = "web.yml"

__all__ = [
    "API_METRICS_PORT",
    "FLOW_METRICS_PORT",
    "PROBE_METRICS_PORT",
    "Prometheus",
    "scrape_config",
    "web_config",
]


def scrape_config(
    flow: str,
    api: str,
    rules: str,
    probe: str | None = None,
    ca_file: str | None = None,
    interval: str = SCRAPE_INTERVAL,
) -> dict[str, Any]:
    """A Prometheus configuration scraping the flow at ``flow``, the API at ``api`` and, when
    given, ``igflow probe`` at ``probe`` (``host:port``), evaluating the rule file ``rules``
    (JSON is YAML: Prometheus reads it). With ``ca_file`` every scrape is HTTPS, verifying the
    target's certificate and host name against that CA. ``interval``: of scrapes and rule
    evaluations alike."""
    jobs = [("igflow-flow", flow), ("igflow-api", api)]
    if probe is not None:
        jobs.append(("igflow-probe", probe))
    secure: dict[str, Any] = {}
    if ca_file is not None:
        secure = {
            "scheme": "https",
            "tls_config": {"ca_file": ca_file, "insecure_skip_verify": False},
        }
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [rules],
        "scrape_configs": [
            {"job_name": job, **secure, "static_configs": [{"targets": [target]}]}
            for job, target in jobs
        ],
    }


def web_config(cert_file: str, key_file: str) -> dict[str, Any]:
    """Prometheus's ``--web.config.file``: its API and UI over HTTPS only, with this
    certificate (TLS 1.2 at least)."""
    return {
        "tls_server_config": {"cert_file": cert_file, "key_file": key_file, "min_version": "TLS12"}
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
        flow, api, probe = (f"127.0.0.1:{port}" for port in cfg.scrape_ports)
        ca = str(cfg.tls_dir / tls.CA_FILE) if cfg.tls else None
        scrape = scrape_config(
            flow, api, RULES_FILE, probe=probe, ca_file=ca, interval=LOCAL_SCRAPE_INTERVAL
        )
        self._config_file(cfg).write_text(json.dumps(scrape, indent=2) + "\n", encoding="utf-8")
        web = self._web_config_file(cfg)
        if cfg.tls:
            certificate = web_config(
                str(cfg.tls_dir / tls.CERT_FILE), str(cfg.tls_dir / tls.KEY_FILE)
            )
            web.write_text(json.dumps(certificate, indent=2) + "\n", encoding="utf-8")
        else:
            web.unlink(missing_ok=True)

    def _web_config_file(self, cfg: StackConfig) -> Path:
        return self.workdir(cfg) / WEB_CONFIG_FILE

    def command(self, cfg: StackConfig) -> list[str]:
        web = [f"--web.config.file={self._web_config_file(cfg)}"] if cfg.tls else []
        return [
            str(SYSTEM_PROMETHEUS),
            f"--config.file={self._config_file(cfg)}",
            f"--storage.tsdb.path={self.workdir(cfg) / 'data'}",
            f"--web.listen-address=127.0.0.1:{cfg.prometheus_port}",
            *web,
            "--web.enable-lifecycle",
        ]

    def is_ready(self, cfg: StackConfig) -> bool:
        scheme = "https" if cfg.tls else "http"
        url = f"{scheme}://127.0.0.1:{cfg.prometheus_port}/-/ready"
        context = None
        if cfg.tls:
            context = ssl.create_default_context(cafile=str(cfg.tls_dir / tls.CA_FILE))
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S, context=context) as resp:
            return int(resp.status) == 200
