"""TLS on every hop, against the genuine servers: on each, a client that verifies the server
against the stack's CA (Postgres ``verify-full``) gets in, and a plaintext client is refused, as
is a client that trusts another CA.

The module starts its own stack with TLS on (``IGFLOW_TLS_ENABLED=true``) in a temporary state
directory on free ports, whatever the session's stack does, and stops it at the end. The JVM
products' classpaths are copied from the session's stack, so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
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

import httpx
import neo4j
import psycopg
import pytest
import redis
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from neo4j import GraphDatabase, TrustCustomCAs

from core.settings import Settings
from dev import stack as dev_stack
from dev import tls as stack_tls
from dev.config import StackConfig
from dev.services import configured
from sinks.graph import GraphWriter
from tests.integration.api_server import serve
from tests.integration.conftest import REPO
from tests.integration.test_psi_cli import CLIENT, EXPECTED, SERVER
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
