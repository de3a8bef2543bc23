"""``igflow slo`` and ``igflow slo gate`` against a real Prometheus (Debian's package).

The series are written by Prometheus's own backfill (``promtool tsdb create-blocks-from
openmetrics``) into a fresh data folder, then a Prometheus is started on it on a free port: a
burning tenant trips the gate (exit 1, named), a healthy set of tenants passes (exit 0). Needs no
other service of the stack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port

STEP_S = 60
HOURS = 3


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make system` (Debian's prometheus package)")
    return path


def _openmetrics(series: dict[str, tuple[float, float]], end: int) -> str:
    """Counters growing linearly: ``{series: (start, per_step)}``, one sample a minute for
    ``HOURS`` hours up to unix time ``end``, grouped by metric family as OpenMetrics wants."""
    lines: list[str] = []
    steps = HOURS * 3600 // STEP_S
    for name in sorted(series, key=lambda s: s.split("{")[0]):
        start, per_step = series[name]
        for i in range(steps + 1):
            t = end - (steps - i) * STEP_S
            lines.append(f"{name} {start + per_step * i} {t}")
    return "\n".join([*lines, "# EOF", ""])


class _Prometheus:
    def __init__(self, url: str, at: int) -> None:
        self.url = url
        self.at = at


def _serve(tmp: Path, series: dict[str, tuple[float, float]]) -> Iterator[_Prometheus]:
    end = int(time.time()) // STEP_S * STEP_S - STEP_S
    data = tmp / "data"
    source = tmp / "series.om"
    source.write_text(_openmetrics(series, end), encoding="utf-8")
    done = subprocess.run(
        [_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    config = tmp / "prometheus.yml"
    config.write_text("global: {}\n", encoding="utf-8")
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            _binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "prometheus was not ready within 60 s"
            time.sleep(0.2)
        yield _Prometheus(url, end)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _igflow(prometheus: _Prometheus, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "igflow.cli", "slo", *args, "--prometheus", prometheus.url,
         "--at", str(prometheus.at)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
        check=False,
    )  # fmt: skip


LANDED = 'ingest_events_processed_total{{tenant_id="{}",table="signals"}}'
HEALTHY = {
    LANDED.format("tenant-00"): (0.0, 60.0),
    LANDED.format("tenant-05"): (0.0, 60.0),
    'igflow_rejected_total{stage="validate",reason="FIELD_INVALID",tenant_id="tenant-05"}': (
        0.0,
        3.0,
    ),
    'igflow_api_request_duration_seconds_bucket{kind="read",tenant_id="tenant-05",le="0.35"}': (
        0.0,
        100.0,
    ),
    'igflow_api_request_duration_seconds_count{kind="read",tenant_id="tenant-05"}': (0.0, 100.0),
}


@pytest.fixture
def healthy(tmp_path: Path) -> Iterator[_Prometheus]:
    yield from _serve(tmp_path, HEALTHY)


@pytest.fixture
def burning(tmp_path: Path) -> Iterator[_Prometheus]:
    # tenant-00 (vip: 99.95%) loses one signal in eleven (6 of 66) to a store that gave up.
    yield from _serve(tmp_path, {**HEALTHY, 'igflow_ingest_failed_total{tenant_id="tenant-00"}': (
        0.0, 6.0)})  # fmt: skip


def test_a_healthy_set_passes_the_gate(healthy: _Prometheus) -> None:
    done = _igflow(healthy, "gate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every budget holds" in done.stdout
    rows = json.loads(_igflow(healthy, "report", "--json").stdout)
    by = {(r["tenant_id"], r["slo"]): r for r in rows}
    assert by[("tenant-00", "ingest_availability")]["tier"] == "vip"
    assert by[("tenant-05", "ingest_availability")]["tier"] == "standard"
    assert by[("tenant-05", "ingest_availability")]["budget_left"] == pytest.approx(1.0)
    assert by[("tenant-05", "api_read_latency")]["sli"] == pytest.approx(1.0)
    assert by[("tenant-05", "ingest_availability")]["burn_rate_1h"] == pytest.approx(0.0)


def test_a_burning_tenant_trips_the_gate(burning: _Prometheus) -> None:
    done = _igflow(burning, "gate")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "error budget spent: tenant-00 (ingest_availability)" in done.stdout
    rows = json.loads(_igflow(burning, "--json").stdout)
    row = next(
        r for r in rows if (r["tenant_id"], r["slo"]) == ("tenant-00", "ingest_availability")
    )
    assert row["spent"] is True
    assert row["sli"] == pytest.approx(60 / 66, rel=1e-3)
    # 9.1% bad against a 0.05% budget: a burn rate of about 182.
    assert row["burn_rate_1h"] == pytest.approx((6 / 66) / 0.0005, rel=1e-2)
    assert not any(r["spent"] for r in rows if r["tenant_id"] == "tenant-05")


def test_an_unreachable_prometheus_fails_the_gate() -> None:
    done = _igflow(_Prometheus(f"http://127.0.0.1:{free_port()}", 0), "gate")
    assert done.returncode == 2
    assert "cannot query Prometheus" in done.stderr
