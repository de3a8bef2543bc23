"""TLS on every hop, against the genuine servers: on each, a client that verifies the server
against the stack's CA (Postgres ``verify-full``) gets in, and a plaintext client is refused, as
is a client that trusts another CA. The Prometheus hop too: the stack's Prometheus scrapes a flow
metrics port and ``igflow serve``'s over HTTPS (``up == 1``), serves its own API over HTTPS only,
and ``igflow slo`` reads it verifying the CA.

The module starts its own stack with TLS on (``IGFLOW_TLS_ENABLED=true``) in a temporary state
directory on free ports, whatever the session's stack does, and stops it at the end. The JVM
products' classpaths are copied from the session's stack, so nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import neo4j
import psycopg
import pytest
import redis
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from neo4j import GraphDatabase, TrustCustomCAs

from core.metrics import start_server
from core.redis_tls import async_redis_client, redis_client, tls_context
from core.settings import Settings
from dev import stack as dev_stack
from dev import tls as stack_tls
from dev.config import StackConfig
from dev.prometheus import Prometheus, scrape_config
from dev.services import configured
from sinks.graph import GraphWriter
from tests.integration.api_server import serve
from tests.integration.conftest import REPO
from tests.integration.test_psi_cli import CLIENT, EXPECTED, SERVER
from tests.integration.test_slo_gate import HEALTHY, STEP_S, _binary, _openmetrics
from tests.unit.test_psi_commands import write_csv

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class TlsStack:
    """A running TLS stack: its config, the application's settings and their environment."""

    def __init__(self, cfg: StackConfig, env: dict[str, str]) -> None:
        self.cfg = cfg
        self.env = env
        self.settings = Settings.load(env)
        self.ca = str(cfg.tls_dir / stack_tls.CA_FILE)


@pytest.fixture(scope="module")
def tls_stack(stack: Settings) -> Iterator[TlsStack]:
    # Short and traversable: Postgres's socket path has a length limit, and its server user
    # must reach the folder.
    state = Path(tempfile.mkdtemp(prefix="igtls-", dir="/tmp"))
    state.chmod(0o755)
    names = ("kafka", "ctl", "pg", "redis", "bolt", "reg", "prom", "fdb")
    ports = {name: _free_port() for name in names}
    env = {
        "IGFLOW_STACK_DIR": str(state),
        "IGFLOW_TLS_ENABLED": "true",
        "IGFLOW_KAFKA_BOOTSTRAP": f"127.0.0.1:{ports['kafka']}",
        "IGFLOW_KAFKA_CONTROLLER_PORT": str(ports["ctl"]),
        "IGFLOW_POSTGRES_DSN": f"postgresql://igflow:igflow@127.0.0.1:{ports['pg']}/igflow",
        "IGFLOW_REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "IGFLOW_NEO4J_URI": f"bolt://127.0.0.1:{ports['bolt']}",
        "IGFLOW_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{ports['reg']}",
        "IGFLOW_PROMETHEUS_PORT": str(ports["prom"]),
        "IGFLOW_FALKORDB_PORT": str(ports["fdb"]),
    }
    # Neo4j whatever the session's stack runs (the FalkorDB stand-in has no TLS here).
    if "IGFLOW_STACK_JAVA_HOME" in os.environ:
        env["IGFLOW_STACK_JAVA_HOME"] = os.environ["IGFLOW_STACK_JAVA_HOME"]
    cfg = StackConfig.from_env(env)
    services = [s for s in configured(cfg) if s.name != "prometheus"]
    try:
        jars = Path(stack.stack_dir, "jars")
        if jars.is_dir():
            shutil.copytree(jars, state / "jars")
        dev_stack.start(cfg, services, report=lambda _line: None)
        yield TlsStack(cfg, env)
    finally:
        dev_stack.stop(cfg, services, report=lambda _line: None)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def other_ca() -> Iterator[str]:
    """A CA that signed none of the stack's certificates."""
    folder = Path(tempfile.mkdtemp(prefix="igtls-other-"))
    try:
        yield str(stack_tls.ensure(folder) / stack_tls.CA_FILE)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _plain_dsn(ts: TlsStack) -> str:
    return ts.env["IGFLOW_POSTGRES_DSN"]


def test_postgres_verify_full_in_plaintext_out(tls_stack: TlsStack, other_ca: str) -> None:
    dsn = tls_stack.settings.stores.postgres_dsn
    assert "sslmode=verify-full" in dsn
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        assert conn.pgconn.ssl_in_use
        version = conn.execute("SHOW ssl").fetchone()
        assert version == ("on",)
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        psycopg.connect(_plain_dsn(tls_stack) + "?sslmode=disable", connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(
            _plain_dsn(tls_stack) + f"?sslmode=verify-full&sslrootcert={other_ca}",
            connect_timeout=5,
        )


def test_redis_tls_only(tls_stack: TlsStack, other_ca: str) -> None:
    url = tls_stack.settings.stores.redis_url
    assert url.startswith("rediss://")
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        assert client.set("tls-probe", "1")
        assert client.get("tls-probe") == b"1"
    finally:
        client.close()
    plain = redis.Redis.from_url(tls_stack.env["IGFLOW_REDIS_URL"], socket_timeout=5)
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    plain.close()
    stranger = redis.Redis(
        port=int(tls_stack.cfg.redis_port),
        ssl=True,
        ssl_ca_certs=other_ca,
        ssl_cert_reqs="required",
        socket_timeout=5,
    )
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        stranger.ping()
    stranger.close()


def test_redis_clients_verify_with_the_stack_ca_alone(tls_stack: TlsStack, other_ca: str) -> None:
    """The product's clients (``core.redis_tls``): one context from the stack's CA, shared by
    every connection, and a server signed by another CA refused, sync and asyncio."""
    url = tls_stack.settings.stores.redis_url
    ca = parse_qs(urlsplit(url).query)["ssl_ca_certs"][0]
    client = redis_client(url, socket_timeout=5)
    try:
        assert client.ping()
        connection = client.connection_pool.get_connection()
        try:
            assert connection._sock.context is tls_context(ca)  # type: ignore[union-attr]
        finally:
            client.connection_pool.release(connection)
    finally:
        client.close()
    stranger_url = url.replace(quote(ca, safe=""), quote(other_ca, safe=""))
    assert stranger_url != url
    stranger = redis_client(stranger_url, socket_timeout=5)
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        stranger.ping()
    stranger.close()

    async def both() -> None:
        good = async_redis_client(url, socket_timeout=5)
        bad = async_redis_client(stranger_url, socket_timeout=5)
        try:
            assert await good.ping()
            with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
                await bad.ping()
        finally:
            await good.aclose()
            await bad.aclose()

    asyncio.run(both())


def test_kafka_ssl_listener(tls_stack: TlsStack, other_ca: str) -> None:
    kafka = tls_stack.settings.kafka
    config = kafka.client_config()
    assert config["security.protocol"] == "SSL"
    topic = f"tls-{uuid.uuid4().hex[:8]}"
    producer = Producer({**config, "acks": "all"})
    producer.produce(topic, b"over tls")
    assert producer.flush(30) == 0
    consumer = Consumer(
        {**config, "group.id": topic, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    consumer.subscribe([topic])
    try:
        deadline, got = time.monotonic() + 30, None
        while got is None and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                got = msg.value()
    finally:
        consumer.close()
    assert got == b"over tls"
    for refused in (
        {"bootstrap.servers": kafka.bootstrap},
        {**config, "ssl.ca.location": other_ca},
    ):
        admin = AdminClient({**refused, "log_level": 0})
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=5)


def test_bolt_tls_required(tls_stack: TlsStack, other_ca: str) -> None:
    stores = tls_stack.settings.stores
    writer = GraphWriter.for_stores(stores)
    records, _, _ = writer._server.driver.execute_query("RETURN 1 AS one")
    assert records[0]["one"] == 1
    auth = (stores.neo4j_user, stores.neo4j_password)
    for options in (
        {},  # plaintext Bolt
        {"encrypted": True, "trusted_certificates": TrustCustomCAs(other_ca)},
    ):
        with (
            GraphDatabase.driver(stores.neo4j_uri, auth=auth, connection_timeout=5, **options) as d,
            pytest.raises(neo4j.exceptions.ServiceUnavailable),
        ):
            d.verify_connectivity()


def test_registry_https_only(tls_stack: TlsStack, other_ca: str) -> None:
    kafka = tls_stack.settings.kafka
    assert kafka.schema_registry_url.startswith("https://")
    with SchemaRegistryClient(kafka.registry_config()) as client:
        assert client.get_subjects() == []
    with pytest.raises(httpx.TransportError):
        httpx.get(tls_stack.env["IGFLOW_SCHEMA_REGISTRY_URL"] + "/subjects", timeout=5)
    stranger = ssl.create_default_context(cafile=other_ca)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(kafka.schema_registry_url + "/subjects", timeout=5, verify=stranger)


def test_igflow_serve_https_only(tls_stack: TlsStack) -> None:
    settings = tls_stack.settings.with_changes("stores", sinks="")
    env = {k: v for k, v in tls_stack.env.items() if k != "IGFLOW_PROMETHEUS_PORT"}
    with serve(settings, **env) as server:
        assert server.url.startswith("https://")
        assert server.client.get("/health").status_code == 200
        plain = server.url.replace("https://", "http://")
        with pytest.raises(httpx.TransportError):
            httpx.get(plain + "/health", timeout=5)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(server.url + "/health", timeout=5, verify=True)


def test_psi_server_https_only(tls_stack: TlsStack, tmp_path: Path) -> None:
    csv = tmp_path / "server.csv"
    write_csv(csv, ("selector",), [(s,) for s in SERVER])
    port = _free_port()
    env = {**os.environ, **tls_stack.env}
    command = [sys.executable, "-m", "igflow.cli", "psi", "serve", "--csv", str(csv)]
    proc = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())
        assert started["url"] == f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.get(
                    started["url"] + "/healthz",
                    verify=tls_stack.settings.client_verify(),
                    timeout=2,
                )
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert answer.status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        # The partner's client (igflow psi match) verifies against the stack's CA.
        mine = tmp_path / "client.csv"
        write_csv(mine, ("selector",), [(s,) for s in CLIENT])
        match = subprocess.run(
            [*command[:4], "match", "--csv", str(mine), "--server", started["url"]],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert match.returncode == 0, match.stderr[-2000:]
        assert json.loads(match.stdout)["matches"] == EXPECTED
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=15)


# --- Prometheus: the metrics ports it scrapes, its own API, and igflow slo reading it ----------


class TlsPrometheus:
    """The stack's Prometheus (dev/prometheus.py) on the TLS stack, scraping free ports, with
    test_slo_gate's healthy series backfilled up to unix time ``at``."""

    def __init__(self, cfg: StackConfig, at: int) -> None:
        self.cfg = cfg
        self.at = at
        self.url = f"https://127.0.0.1:{cfg.prometheus_port}"
        self.flow, self.api, self.probe = cfg.scrape_ports


@pytest.fixture(scope="module")
def tls_prometheus(tls_stack: TlsStack) -> Iterator[TlsPrometheus]:
    cfg = dataclasses.replace(
        tls_stack.cfg, scrape_ports=(_free_port(), _free_port(), _free_port())
    )
    end = int(time.time()) // STEP_S * STEP_S - STEP_S
    source = cfg.state_dir / "series.om"
    source.write_text(_openmetrics(HEALTHY, end), encoding="utf-8")
    data = cfg.data_dir("prometheus") / "data"
    done = subprocess.run(
        [_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    services = [Prometheus()]
    try:
        dev_stack.start(cfg, services, report=lambda _line: None)
        yield TlsPrometheus(cfg, end)
    finally:
        dev_stack.stop(cfg, services, report=lambda _line: None)


def _targets(prom: TlsPrometheus, verify: ssl.SSLContext | bool) -> dict[str, dict[str, Any]]:
    got = httpx.get(f"{prom.url}/api/v1/targets", verify=verify, timeout=5)
    got.raise_for_status()
    return {t["labels"]["job"]: t for t in got.json()["data"]["activeTargets"]}


def test_prometheus_scrapes_https_targets_and_serves_https_only(
    tls_stack: TlsStack, tls_prometheus: TlsPrometheus, other_ca: str
) -> None:
    """A flow metrics port (``core.metrics.start_server``, what ``igflow run --metrics-port``
    serves) and ``igflow serve``'s metrics port, both HTTPS with the stack's certificate, are
    scraped ``up == 1`` over HTTPS by the stack's Prometheus; plaintext is refused on each hop."""
    prom = tls_prometheus
    settings = tls_stack.settings.with_changes("stores", sinks="")
    verify = settings.client_verify()
    flow, flow_thread = start_server("127.0.0.1", prom.flow, settings.server_tls())
    env = {k: v for k, v in tls_stack.env.items() if k != "IGFLOW_PROMETHEUS_PORT"}
    try:
        with serve(settings, **env, IGFLOW_API_METRICS_PORT=str(prom.api)) as server:
            assert server.metrics_url == f"https://127.0.0.1:{prom.api}/metrics"
            assert "graphql_requests_total" in server.metrics()
            with pytest.raises(httpx.TransportError):
                httpx.get(f"http://127.0.0.1:{prom.api}/metrics", timeout=5)
            with pytest.raises(httpx.TransportError):
                httpx.get(f"http://127.0.0.1:{prom.flow}/metrics", timeout=5)
            deadline = time.monotonic() + 90
            while True:
                targets = _targets(prom, verify)
                # Empty until Prometheus has read its configuration.
                health = {
                    j: targets.get(j, {}).get("health") for j in ("igflow-flow", "igflow-api")
                }
                if set(health.values()) == {"up"}:
                    break
                assert time.monotonic() < deadline, targets
                time.sleep(1)
            for job, port in (("igflow-flow", prom.flow), ("igflow-api", prom.api)):
                assert targets[job]["scrapeUrl"] == f"https://127.0.0.1:{port}/metrics"
            up = httpx.get(
                f"{prom.url}/api/v1/query", params={"query": "up"}, verify=verify, timeout=5
            ).json()["data"]["result"]
            by_job = {r["metric"]["job"]: r["value"][1] for r in up}
            assert by_job["igflow-flow"] == "1" and by_job["igflow-api"] == "1", up
    finally:
        flow.shutdown()
        flow.server_close()
        flow_thread.join(timeout=5)
    # Go answers a plaintext request with a 400 and closes; the client may see the reset first.
    try:
        plain = httpx.get(f"http://127.0.0.1:{prom.cfg.prometheus_port}/api/v1/targets", timeout=5)
    except httpx.TransportError:
        pass
    else:
        assert plain.status_code == 400
        assert "HTTPS server" in plain.text and "activeTargets" not in plain.text
    stranger = ssl.create_default_context(cafile=other_ca)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{prom.url}/api/v1/targets", verify=stranger, timeout=5)


def test_prometheus_checks_the_targets_host_name(tls_stack: TlsStack, tmp_path: Path) -> None:
    """The stack's scrape configuration (``dev.prometheus.scrape_config`` with the CA) refuses a
    target whose certificate does not name it: the same metrics server, signed by the same CA,
    answers on 127.0.0.2 (loopback, not in the SAN) and is ``down`` with Go's host name error,
    while on 127.0.0.1 it is ``up``."""
    settings = tls_stack.settings
    good, other = _free_port(), _free_port()
    servers = [
        start_server("127.0.0.1", good, settings.server_tls()),
        start_server("127.0.0.2", other, settings.server_tls()),
    ]
    config = scrape_config(
        f"127.0.0.1:{good}", f"127.0.0.2:{other}", "none.json", ca_file=tls_stack.ca
    )
    config["global"]["scrape_interval"] = "1s"
    del config["rule_files"]
    (tmp_path / "prometheus.yml").write_text(json.dumps(config), encoding="utf-8")
    port = _free_port()
    proc = subprocess.Popen(
        [
            _binary("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                got = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=2).json()
                jobs = {t["labels"]["job"]: t for t in got["data"]["activeTargets"]}
            except (httpx.TransportError, ValueError):
                jobs = {}
            health = {j: jobs.get(j, {}).get("health") for j in ("igflow-flow", "igflow-api")}
            if health == {"igflow-flow": "up", "igflow-api": "down"}:
                break
            assert proc.poll() is None, "prometheus exited"
            assert time.monotonic() < deadline, jobs
            time.sleep(0.5)
        error = jobs["igflow-api"]["lastError"]
        assert "certificate is valid for" in error and "127.0.0.2" in error, error
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def _slo(tls_stack: TlsStack, prom: TlsPrometheus, *args: str, **env: str) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "igflow.cli", "slo", *args, "--at", str(prom.at)],
        cwd=REPO,
        env={**os.environ, **tls_stack.env, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_igflow_slo_reads_the_https_prometheus(
    tls_stack: TlsStack, tls_prometheus: TlsPrometheus, other_ca: str
) -> None:
    """``igflow slo`` finds the stack's Prometheus at ``https://`` (TLS on) and verifies it with
    the stack's CA; told to use plain HTTP, or to trust another CA, it fails (exit 2)."""
    prom = tls_prometheus
    done = _slo(tls_stack, prom, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {(r["tenant_id"], r["slo"]): r for r in json.loads(done.stdout)}
    assert rows[("tenant-05", "ingest_availability")]["budget_left"] == pytest.approx(1.0)
    assert rows[("tenant-05", "api_read_latency")]["sli"] == pytest.approx(1.0)
    gate = _slo(tls_stack, prom, "gate")
    assert gate.returncode == 0, gate.stdout + gate.stderr[-2000:]
    plain = _slo(tls_stack, prom, "--prometheus", f"http://127.0.0.1:{prom.cfg.prometheus_port}")
    assert plain.returncode == 2
    # The 400 of Go's "HTTP request to an HTTPS server", or the reset that follows it.
    assert re.search(r"refused a query \(400\)|Connection reset", plain.stderr), plain.stderr
    stranger = _slo(tls_stack, prom, IGFLOW_TLS_CA_FILE=other_ca)
    assert stranger.returncode == 2
    assert "CERTIFICATE_VERIFY_FAILED" in stranger.stderr, stranger.stderr[-2000:]
