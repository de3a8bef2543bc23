"""Kafka → flow → Iceberg on the real local stack: every valid record lands, every bad one
reaches the DLQ with its reason, logs are JSON and metrics are served."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from core.settings import Settings
from igflow.producer import produce
from igflow.workload import WorkloadSpec
from sinks.dlq import DLQ_HEADERS
from tests.conftest import SIGNAL_V1
from tests.integration.conftest import (
    QUICK_IDLE_FLUSH,
    REPO,
    env_for,
    expected_valid,
    finish,
    igflow,
    json_lines,
    lake_count,
    lake_rows,
    produce_workload,
    read_topic,
    recent,
)
from tests.ports import free_port


def _v1_id(settings: Settings) -> int:
    with SchemaRegistryClient(settings.kafka.registry_config()) as client:
        registered = client.lookup_schema(settings.kafka.subject, Schema(SIGNAL_V1.text, "AVRO"))
    assert registered.schema_id is not None
    return registered.schema_id


def test_1000_bad_payloads_reach_the_dlq_and_every_valid_record_lands(
    it_settings: Settings,
) -> None:
    spec = WorkloadSpec(tenants=10, count=300, bad=1000, seed=11)
    report = produce_workload(it_settings, spec)
    assert report.kinds["valid"] == 3000
    assert sum(report.kinds[k] for k in ("garbage", "truncated", "unknown_schema")) == 1000

    _out, err = finish(igflow(it_settings, "run"))

    rows = lake_rows(it_settings)
    landed = [(r["tenant_id"], r["signal_id"]) for r in rows]
    assert len(landed) == 3000
    assert set(landed) == expected_valid(spec, _v1_id(it_settings))
    assert all(len(r["input_hash"]) == 64 and r["schema_version"] > 0 for r in rows)

    dlq = read_topic(it_settings, it_settings.kafka.dlq_topic)
    assert len(dlq) == 1000
    reasons = Counter(dict(m.headers())["igflow.reason"].decode() for m in dlq)
    # garbage and truncated payloads fail to decode; unknown ids are SCHEMA_UNKNOWN.
    assert reasons["SCHEMA_UNKNOWN"] == report.kinds["unknown_schema"]
    assert reasons["DECODE_FAILED"] == report.kinds["garbage"] + report.kinds["truncated"]
    assert all(set(DLQ_HEADERS) <= set(dict(m.headers())) for m in dlq)
    # The original bytes are kept, and each DLQ message points back at its source record.
    sources = {
        (
            int(dict(m.headers())["igflow.source.partition"]),
            int(dict(m.headers())["igflow.source.offset"]),
        )
        for m in dlq
    }
    assert len(sources) == 1000
    assert not sources & {(r["kafka_partition"], r["kafka_offset"]) for r in rows}

    logs = list(json_lines(err))
    assert any(
        entry.get("error_code") == "SCHEMA_UNKNOWN" and "kafka_offset" in entry for entry in logs
    )
    appended = (
        e.get("rows", 0)
        for e in logs
        if e.get("op") == "lake.append" and e.get("table") == "signals"
    )
    assert sum(appended) == 3000
    per_tenant: Counter[str] = Counter()
    for entry in logs:
        if entry.get("table") == "signals":
            per_tenant.update(entry.get("rows_per_tenant", {}))
    assert per_tenant == {f"tenant-{i:02d}": 300 for i in range(10)}


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_tail_mode_serves_prometheus_metrics_per_tenant_and_reason(it_settings: Settings) -> None:
    produce_workload(it_settings, WorkloadSpec(tenants=3, count=100, bad=9, seed=3))
    port = free_port()
    proc = igflow(it_settings, "run", "--tail", "--metrics-port", str(port), **QUICK_IDLE_FLUSH)
    # With TLS on the flow's metrics port serves HTTPS only, with the stack's certificate.
    scheme = "https" if it_settings.server_tls() else "http"
    get: dict[str, Any] = {"timeout": 2, "verify": it_settings.client_verify()}
    try:
        deadline = time.monotonic() + 90
        text = ""
        while time.monotonic() < deadline:
            if lake_count(it_settings) >= 300:
                try:
                    text = httpx.get(f"{scheme}://127.0.0.1:{port}/metrics", **get).text
                except httpx.HTTPError:
                    text = ""
                if _metric(text, "ingest_events_processed_total", table="signals") >= 300:
                    break
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            time.sleep(0.5)
        landed = _metric(
            text, "ingest_events_processed_total", tenant_id="tenant-01", table="signals"
        )
        assert landed == 100
        assert _metric(text, "igflow_dlq_events_total") == 9
        assert _metric(text, "igflow_dlq_events_total", reason="SCHEMA_UNKNOWN") == 3
        assert "igflow_lake_commit_seconds_bucket" in text
        assert "igflow_lake_batch_rows_bucket" in text
        assert "igflow_pipeline_latency_seconds_bucket" in text
        # The freshness SLI, per tenant (core/slo.py): each commit observed under its tenants.
        fresh = _metric(
            text, "igflow_pipeline_latency_seconds_count", tenant_id="tenant-01", table="signals"
        )
        assert fresh >= 1
        # Tail mode keeps running after the end offsets.
        time.sleep(1)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("workers", [2])
def test_two_workers_land_everything_once(it_settings: Settings, workers: int) -> None:
    spec = WorkloadSpec(tenants=8, count=500, duplicates=0.0, seed=5)
    produce_workload(it_settings, spec)
    finish(igflow(it_settings, "run", "-w", str(workers)))
    rows = lake_rows(it_settings)
    keys = [(r["kafka_partition"], r["kafka_offset"]) for r in rows]
    assert len(keys) == len(set(keys)) == 4000


def test_a_bounded_run_stops_at_the_end_present_at_start_while_producers_go_on(
    it_settings: Settings,
) -> None:
    first = produce_workload(it_settings, WorkloadSpec(tenants=4, count=500, seed=9))
    stop = threading.Event()
    produced_later: list[int] = []

    def keep_producing() -> None:
        # Later events than the first workload's, each round its own: none is a duplicate.
        later = recent(WorkloadSpec(tenants=4, count=100, seed=10))
        while not stop.is_set():
            start = later.start + timedelta(hours=1, minutes=10 * (len(produced_later) % 90))
            # Its own seed too: rounds repeating the same values are no sample of the drift
            # reference's distribution (the drift step judged two rounds' copies as drifted).
            spec = dataclasses.replace(later, start=start, seed=10 + len(produced_later))
            produced_later.append(produce(it_settings, spec, rate=2000).total)

    producer = threading.Thread(target=keep_producing)
    producer.start()
    try:
        # Ends although the topic keeps growing.
        _out, err = finish(igflow(it_settings, "run"), timeout=120)
    finally:
        stop.set()
        producer.join()
    ends = {
        e["kafka_partition"]: e["kafka_offset"]
        for e in json_lines(err)
        if e.get("op") == "source.end"
    }
    rows = lake_rows(it_settings)
    # Every partition fixes its end when it starts (ListOffsets); empty ones end at 0.
    assert set(ends) == set(range(it_settings.kafka.partitions))
    assert {p for p, end in ends.items() if end > 0} == {r["kafka_partition"] for r in rows}
    assert first.total <= len(rows) == sum(ends.values()) < first.total + sum(produced_later)
    # Each partition landed exactly the offsets below the end it fixed at start.
    for partition, end in ends.items():
        offsets = sorted(r["kafka_offset"] for r in rows if r["kafka_partition"] == partition)
        assert offsets == list(range(end))


def test_the_flow_runs_under_bytewaxs_own_runner(it_settings: Settings) -> None:
    produce_workload(it_settings, WorkloadSpec(tenants=2, count=150, seed=4))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "flows.coherence:flow"],
        cwd=REPO,
        env=env_for(it_settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    finish(proc)
    assert len(lake_rows(it_settings)) == 300
