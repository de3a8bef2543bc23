"""Crash and resume: SIGKILL the flow mid-stream, restart it, and every record is in Iceberg
exactly once — with one process, and with a cluster of two processes (``-i/-a``)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from core.settings import Settings
from igflow.workload import WorkloadSpec
from tests.integration.conftest import (
    cluster_addresses,
    finish_all,
    igflow,
    kill,
    lake_count,
    lake_rows,
    produce_workload,
)

TOTAL = 16_000
SPEC = WorkloadSpec(tenants=8, count=TOTAL // 8, seed=21)


def _slow(settings: Settings) -> Settings:
    # Small fetches and batches: many commits, so a kill lands mid-stream.
    return settings.with_changes("kafka", batch_size=50).with_changes(
        "lake", batch_max_rows=200, batch_max_seconds=0.2
    )


def _start(
    settings: Settings, recovery: Path, processes: int, addresses: str
) -> list[subprocess.Popen[bytes]]:
    args = ["run", "-r", str(recovery)]
    if processes == 1:
        return [igflow(settings, *args, IGFLOW_RUN_SNAPSHOT_SECONDS="0.5")]
    return [
        igflow(settings, *args, "-i", str(i), "-a", addresses, IGFLOW_RUN_SNAPSHOT_SECONDS="0.5")
        for i in range(processes)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_sigkill_mid_stream_then_resume_lands_each_record_once(
    it_settings: Settings, tmp_path: Path, processes: int
) -> None:
    settings = _slow(it_settings)
    produce_workload(settings, SPEC)
    recovery = tmp_path / "recovery"
    addresses = cluster_addresses(processes)

    procs = _start(settings, recovery, processes, addresses)
    deadline = time.monotonic() + 120
    landed = 0
    while time.monotonic() < deadline:
        landed = lake_count(settings)
        if landed >= TOTAL // 8:
            break
        assert all(p.poll() is None for p in procs), "the flow ended before it could be killed"
        time.sleep(0.05)
    for p in procs:
        kill(p)
    at_kill = lake_count(settings)
    assert 0 < at_kill < TOTAL, f"kill was not mid-stream: {at_kill} of {TOTAL} had landed"

    finish_all(_start(settings, recovery, processes, addresses))

    rows = lake_rows(settings)
    keys = [(r["tenant_id"], r["source"], r["signal_id"], r["ts"]) for r in rows]
    offsets = [(r["kafka_partition"], r["kafka_offset"]) for r in rows]
    assert len(rows) == TOTAL
    assert len(set(keys)) == TOTAL
    assert len(set(offsets)) == TOTAL
