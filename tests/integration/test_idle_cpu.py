"""An idle tail flow sleeps: with 1 worker, 2 workers and 2 processes (issue 15).

A flow that waits on an empty topic must park between its wake-ups (the source's 50 ms idle
poll, the stateful steps' timers, Bytewax's own 1 ms park), not poll without waiting. The bound
is on each process's CPU seconds per wall second (``/proc/PID/task/*/schedstat``, the time its
threads ran), in the first 3-second window that has every process under it once a few signals
have landed (so the flow is running, not starting), within 120 s. A resource bound, not a speed
target. Measured 2026-12-05 (load average 6-12): healthy 0.015 (1 worker), 0.03 (2 workers),
0.07 and 0.02 (2 processes); with the Kafka source polling without a wait (``consume(n, 0)``
and ``next_awake`` now: the mutation this test was checked against) 0.26-0.3 with 1 worker and
more with 2. The bound, 0.2, leaves the healthy flow 3x room on a loaded machine.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from core.settings import Settings
from igflow.workload import WorkloadSpec
from tests.integration.conftest import cluster_addresses, igflow, kill, lake_count, produce_workload

#: CPU seconds per wall second, per process.
_BOUND = 0.2
#: Each measuring window, and how long a flow may take to start and settle.
_WINDOW_S = 3.0
_SETTLE_S = 120.0
_QUIET = {"IGFLOW_RUN_LOG_LEVEL": "WARNING"}


def _cpu_s(pid: int) -> float:
    """Seconds the process's threads have run on a CPU (``schedstat``, ns)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            run_ns = (task / "schedstat").read_text().split()[0]
        except (OSError, IndexError):
            continue  # a thread that ended meanwhile
        total += int(run_ns)
    return total / 1e9


def _windows(procs: list[subprocess.Popen[bytes]]) -> list[list[float]]:
    """CPU seconds per wall second of each process, window after window, until one
    window has every process under the bound or the flows had ``_SETTLE_S`` to settle."""
    seen: list[list[float]] = []
    deadline = time.monotonic() + _SETTLE_S
    while time.monotonic() < deadline:
        for proc in procs:
            assert proc.poll() is None, kill(proc)
        before = [_cpu_s(p.pid) for p in procs]
        start = time.monotonic()
        time.sleep(_WINDOW_S)
        after = [_cpu_s(p.pid) for p in procs]
        wall = time.monotonic() - start
        seen.append([(b - a) / wall for a, b in zip(before, after, strict=True)])
        if all(rate < _BOUND for rate in seen[-1]):
            break
    return seen


@pytest.mark.parametrize(("workers", "processes"), [(1, 1), (2, 1), (1, 2)], ids=["w1", "w2", "p2"])
def test_an_idle_tail_flow_sleeps(it_settings: Settings, workers: int, processes: int) -> None:
    addresses = cluster_addresses(processes)
    cluster = (lambda i: ("-i", str(i), "-a", addresses)) if processes > 1 else lambda _i: ()
    # Warnings only: a full log pipe would block the flow, and a blocked flow looks idle.
    procs = [
        igflow(it_settings, "run", "--tail", "-w", str(workers), *cluster(i), **_QUIET)
        for i in range(processes)
    ]
    # Running, not starting or stuck: a few signals land first, then the topic stays empty.
    produce_workload(it_settings, WorkloadSpec(tenants=2, count=10, seed=41))
    deadline = time.monotonic() + _SETTLE_S
    while lake_count(it_settings) == 0:
        for proc in procs:
            assert proc.poll() is None, kill(proc)
        assert time.monotonic() < deadline, "nothing landed"
        time.sleep(0.5)
    seen = _windows(procs)
    assert all(rate < _BOUND for rate in seen[-1]), (
        f"an idle flow keeps busy: {seen} CPU s per s and process, bound {_BOUND}"
    )
