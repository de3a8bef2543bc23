"""Outages are not bad input: a schema registry that is down stops the flow (no record is misfiled
into the DLQ), and once it is back a resume lands everything exactly once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from core.settings import Settings
from igflow.workload import WorkloadSpec
from tests.integration.conftest import (
    REPO,
    finish,
    igflow,
    lake_count,
    lake_rows,
    produce_workload,
    read_topic,
)


def _registry(action: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "dev", action, "--only", "registry"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )


def test_a_registry_outage_stops_the_flow_and_a_resume_lands_everything(
    it_settings: Settings, tmp_path: Path
) -> None:
    produce_workload(it_settings, WorkloadSpec(tenants=2, count=100, seed=13))
    recovery = tmp_path / "recovery"
    _registry("stop")
    try:
        proc = igflow(it_settings, "run", "-r", str(recovery))
        _out, err_bytes = proc.communicate(timeout=120)
        err = err_bytes.decode()
        assert proc.returncode != 0
        assert "igflow run: schema registry unavailable" in err
        assert "REGISTRY_UNAVAILABLE" in err  # the retries were logged with their code
        assert lake_count(it_settings) == 0
    finally:
        _registry("start")

    finish(igflow(it_settings, "run", "-r", str(recovery)))
    rows = lake_rows(it_settings)
    assert len(rows) == 200
    assert len({(r["kafka_partition"], r["kafka_offset"]) for r in rows}) == 200
    assert read_topic(it_settings, it_settings.kafka.dlq_topic) == []
