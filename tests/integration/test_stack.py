"""Integration tests of the local service stack (``python -m dev``).

The session fixture starts whatever part of the stack is not running yet and stops only
that part again at the end, so a stack brought up by ``make`` is left as it was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from neo4j import GraphDatabase

from dev import stack
from dev.config import StackConfig
from dev.errors import StackError
from dev.kafka import client_config as kafka_client_config
from dev.neo4j import driver_tls
from dev.services import BY_NAME, Port, Service, configured

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def cfg() -> Iterator[StackConfig]:
    config = StackConfig.from_env(os.environ)
    services = configured(config)
    started_here = [s for s in services if stack.our_pid(config, s) is None]
    stack.start(config, services, report=lambda _line: None)
    yield config
    stack.stop(config, started_here, report=lambda _line: None)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_status_reports_all_ready(cfg: StackConfig) -> None:
    rows = stack.status(cfg, configured(cfg))
    assert [(r.name, r.state) for r in rows] == [(s.name, "ready") for s in configured(cfg)]
    assert all(r.pid is not None for r in rows)


def test_start_again_is_a_noop(cfg: StackConfig) -> None:
    services = configured(cfg)
    before = {s.name: stack.our_pid(cfg, s) for s in services}
    lines: list[str] = []
    began = time.monotonic()
    stack.start(cfg, services, report=lines.append)
    assert time.monotonic() - began < 10
    assert {s.name: stack.our_pid(cfg, s) for s in services} == before
    assert len(lines) == len(services)
    assert all("already running" in line for line in lines)


@pytest.mark.parametrize(
    ("service", "field", "env_var"),
    [
        ("redis", "redis_port", "IGFLOW_REDIS_URL"),
        ("kafka", "kafka_port", "IGFLOW_KAFKA_BOOTSTRAP"),
        ("neo4j", "bolt_port", "IGFLOW_NEO4J_URI"),
        ("prometheus", "prometheus_port", "IGFLOW_PROMETHEUS_PORT"),
    ],
)
def test_port_taken_error_names_service_port_and_env_var(
    cfg: StackConfig, tmp_path: Path, taken_port: int, service: str, field: str, env_var: str
) -> None:
    overrides: dict[str, Any] = {"state_dir": tmp_path, field: taken_port}
    other = dataclasses.replace(cfg, **overrides)
    with pytest.raises(StackError) as err:
        stack.start(other, [BY_NAME[service]], report=lambda _line: None)
    message = str(err.value)
    assert message.startswith(f"{service}: port {taken_port} is already in use")
    assert env_var in message
    assert [r.state for r in stack.status(other, [BY_NAME[service]])] == ["port taken"]


def test_prometheus_scrapes_the_flow_and_the_api_with_the_slo_rules(cfg: StackConfig) -> None:
    # With TLS on, Prometheus serves and scrapes HTTPS only (tests/integration/test_tls.py).
    scheme = "https" if cfg.tls else "http"
    context = ssl.create_default_context(cafile=str(cfg.tls_dir / "ca.pem")) if cfg.tls else None
    base = f"{scheme}://127.0.0.1:{cfg.prometheus_port}/api/v1"
    with urllib.request.urlopen(f"{base}/targets", timeout=5, context=context) as resp:
        targets = json.load(resp)["data"]["activeTargets"]
    assert {(t["labels"]["job"], t["scrapeUrl"]) for t in targets} == {
        ("igflow-flow", f"{scheme}://127.0.0.1:9464/metrics"),
        ("igflow-api", f"{scheme}://127.0.0.1:9465/metrics"),
        ("igflow-probe", f"{scheme}://127.0.0.1:9466/metrics"),
    }
    with urllib.request.urlopen(f"{base}/rules", timeout=5, context=context) as resp:
        groups = json.load(resp)["data"]["groups"]
    names = {g["name"] for g in groups}
    assert "slo:burn-rate-alerts" in names
    assert "slo:vip:ingest_availability" in names
    assert all(r["health"] != "err" for g in groups for r in g["rules"])


class _Crashing(Service):
    """A fake service that writes some output and exits at once."""

    name = "crashing"

    def ports(self, cfg: StackConfig) -> list[Port]:
        return []

    def command(self, cfg: StackConfig) -> list[str]:
        return ["sh", "-c", "for i in $(seq 1 25); do echo line $i; done; exit 3"]

    def is_ready(self, cfg: StackConfig) -> bool:
        return False


def test_exit_during_start_up_reports_log_tail(cfg: StackConfig, tmp_path: Path) -> None:
    other = dataclasses.replace(cfg, state_dir=tmp_path)
    with pytest.raises(StackError) as err:
        stack.start(other, [_Crashing()], report=lambda _line: None)
    message = str(err.value)
    assert message.startswith("crashing exited during start-up with exit code 3")
    assert "line 25" in message
    assert "line 6\n" in message
    assert "line 5\n" not in message
    assert not (tmp_path / "run" / "crashing.pid").exists()


def test_kafka_and_neo4j_keep_their_data_across_a_restart(cfg: StackConfig) -> None:
    """The genuine products keep topics, records and nodes in the stack folder."""
    if cfg.graph != "neo4j":
        pytest.skip("the FalkorDB stand-in is selected instead of Neo4j")
    topic = f"it.stack.keep.{os.getpid()}.{time.monotonic_ns()}"
    connection = kafka_client_config(cfg)  # SSL against the stack's CA when it runs TLS
    admin = AdminClient(connection)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(
        timeout=30
    )
    producer = Producer(connection)
    producer.produce(topic, key=b"k", value=b"kept", partition=1)
    assert producer.flush(30) == 0
    uri = f"bolt://127.0.0.1:{cfg.bolt_port}"
    auth = (cfg.neo4j_user, cfg.neo4j_password)
    with GraphDatabase.driver(uri, auth=auth, **driver_tls(cfg)) as driver:
        driver.execute_query("CREATE (:StackKeep {topic: $topic})", topic=topic)

    jvms = [BY_NAME["neo4j"], BY_NAME["kafka"]]
    stack.stop(cfg, jvms, report=lambda _line: None)
    stack.start(cfg, jvms, report=lambda _line: None)

    consumer = Consumer({**connection, "group.id": topic, "enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, 1, 0)])
        message = consumer.poll(30)
        assert message is not None and message.error() is None
        assert message.value() == b"kept"
    finally:
        consumer.close()
    assert len(AdminClient(connection).list_topics(topic).topics[topic].partitions) == 2
    with GraphDatabase.driver(uri, auth=auth, **driver_tls(cfg)) as driver:
        records, _, _ = driver.execute_query(
            "MATCH (n:StackKeep {topic: $topic}) DETACH DELETE n RETURN count(n) AS c", topic=topic
        )
    assert records[0]["c"] == 1
    admin.delete_topics([topic])
