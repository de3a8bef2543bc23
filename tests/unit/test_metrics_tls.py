"""The Prometheus hop with TLS on: the metrics endpoints (``core.metrics.start_server``) serve
HTTPS with the stack's certificate and refuse plaintext; the stack's Prometheus configuration
scrapes over HTTPS verifying the CA and serves its own API over HTTPS (checked by ``promtool``);
readers of Prometheus get an ``https://`` URL.

The hop end to end (a real Prometheus scraping a real ``igflow serve``, ``igflow slo``) is in
tests/integration/test_tls.py.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import Counter

from core import prometheus_query
from core.metrics import start_server
from core.settings import Settings
from dev import tls as stack_tls
from dev.config import StackConfig
from dev.prometheus import Prometheus, scrape_config, web_config
from tests.promtool import promtool

PROBE = Counter("igflow_test_tls_metrics_total", "A counter only this test module increments")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stack_tls.ensure(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(stack_tls.ensure(tmp_path_factory.mktemp("other")) / stack_tls.CA_FILE)


@pytest.fixture
def https_metrics(ca_dir: Path) -> Iterator[str]:
    port = _free_port()
    certificate = {
        "ssl_certfile": str(ca_dir / stack_tls.CERT_FILE),
        "ssl_keyfile": str(ca_dir / stack_tls.KEY_FILE),
    }
    server, thread = start_server("127.0.0.1", port, certificate)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _verifying(ca_dir: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_dir / stack_tls.CA_FILE))


def test_https_metrics_serve_a_verifying_client(https_metrics: str, ca_dir: Path) -> None:
    PROBE.inc()
    got = httpx.get(f"https://{https_metrics}/metrics", verify=_verifying(ca_dir), timeout=5)
    assert got.status_code == 200
    assert "igflow_test_tls_metrics_total 1.0" in got.text


def test_https_metrics_refuse_plaintext_and_another_ca(
    https_metrics: str, ca_dir: Path, other_ca: str
) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{https_metrics}/metrics", timeout=5)
    stranger = ssl.create_default_context(cafile=other_ca)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://{https_metrics}/metrics", verify=stranger, timeout=5)
    # The server lives on after refusing both.
    got = httpx.get(f"https://{https_metrics}/metrics", verify=_verifying(ca_dir), timeout=5)
    assert got.status_code == 200


def test_a_silent_client_does_not_hold_up_the_next_scrape(https_metrics: str, ca_dir: Path) -> None:
    """The handshake runs in the connection's thread: prometheus_client's own ``certfile``
    option handshakes in ``accept()``, where a client that connects and never speaks blocks
    every later one."""
    host, port = https_metrics.split(":")
    with socket.create_connection((host, int(port)), timeout=5):
        got = httpx.get(f"https://{https_metrics}/metrics", verify=_verifying(ca_dir), timeout=5)
        assert got.status_code == 200


def test_plaintext_mode_serves_http_as_before() -> None:
    port = _free_port()
    server, thread = start_server("127.0.0.1", port, {})
    try:
        got = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert got.status_code == 200
        assert "igflow_test_tls_metrics_total" in got.text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_servers_certificate_setting_reaches_the_metrics_ports(tmp_path: Path) -> None:
    """``Settings.server_tls()`` is what the flow, the API's and the probe's metrics ports get:
    the stack's certificate with TLS on, none with it off or ``tls.plaintext_servers``."""
    on = Settings.load({"IGFLOW_STACK_DIR": str(tmp_path), "IGFLOW_TLS_ENABLED": "true"})
    assert on.server_tls() == {
        "ssl_certfile": str(tmp_path.resolve() / "tls" / "server.pem"),
        "ssl_keyfile": str(tmp_path.resolve() / "tls" / "server.key"),
    }
    off = Settings.load({"IGFLOW_STACK_DIR": str(tmp_path), "IGFLOW_TLS_ENABLED": "false"})
    assert off.server_tls() == {}


def test_readers_of_the_stacks_prometheus_use_https_with_tls() -> None:
    env = {"IGFLOW_PROMETHEUS_PORT": "26090"}
    assert prometheus_query.default_url(env, tls=True) == "https://127.0.0.1:26090"
    assert prometheus_query.default_url(env) == "http://127.0.0.1:26090"
    assert prometheus_query.default_url({}) == "http://127.0.0.1:19090"


def test_the_stacks_prometheus_scrapes_and_serves_https_with_tls(
    tmp_path: Path, ca_dir: Path
) -> None:
    ports = (_free_port(), _free_port(), _free_port())
    cfg = StackConfig.from_env({"IGFLOW_STACK_DIR": str(tmp_path), "IGFLOW_TLS_ENABLED": "true"})
    shutil.copytree(ca_dir, cfg.tls_dir)
    cfg = dataclasses.replace(cfg, scrape_ports=ports)
    svc = Prometheus()
    svc.prepare(cfg)
    work = svc.workdir(cfg)
    config = json.loads((work / "prometheus.yml").read_text(encoding="utf-8"))
    ca = str(cfg.tls_dir / stack_tls.CA_FILE)
    assert [
        (j["scheme"], j["tls_config"], j["static_configs"]) for j in config["scrape_configs"]
    ] == [
        ("https", {"ca_file": ca, "insecure_skip_verify": False}, [{"targets": [f"127.0.0.1:{p}"]}])
        for p in ports
    ]
    web = work / "web.yml"
    assert json.loads(web.read_text(encoding="utf-8")) == web_config(
        str(cfg.tls_dir / stack_tls.CERT_FILE), str(cfg.tls_dir / stack_tls.KEY_FILE)
    )
    assert f"--web.config.file={web}" in svc.command(cfg)
    promtool("check", "config", str(work / "prometheus.yml"), cwd=work)
    promtool("check", "web-config", str(web), cwd=work)


def test_the_stacks_prometheus_stays_plaintext_without_tls(tmp_path: Path) -> None:
    cfg = StackConfig.from_env({"IGFLOW_STACK_DIR": str(tmp_path), "IGFLOW_TLS_ENABLED": "false"})
    svc = Prometheus()
    (svc.workdir(cfg)).mkdir(parents=True)
    (svc.workdir(cfg) / "web.yml").write_text("{}", encoding="utf-8")  # left by a TLS start
    svc.prepare(cfg)
    config = json.loads((svc.workdir(cfg) / "prometheus.yml").read_text(encoding="utf-8"))
    assert (
        config["scrape_configs"]
        == scrape_config("127.0.0.1:9464", "127.0.0.1:9465", "rules.json", probe="127.0.0.1:9466")[
            "scrape_configs"
        ]
    )
    assert all("scheme" not in job for job in config["scrape_configs"])
    assert not (svc.workdir(cfg) / "web.yml").exists()
    assert not any(arg.startswith("--web.config.file") for arg in svc.command(cfg))
