"""SIGINT/SIGTERM to a cluster of two ``igflow run --tail`` processes: every process exits within
a bound with a log line that says why, whichever processes get the signal, and a resume lands each
record exactly once. Before ``core.shutdown``, a SIGINT to one process left both running
forever (the signalled one joining timely's network threads, the other stepping without its peer).
"""

from __future__ import annotations

import concurrent.futures
import signal
import subprocess
import time
from pathlib import Path

import pytest

from core.settings import Settings
from core.shutdown import EXIT_FORCED
from igflow.workload import WorkloadSpec
from tests.integration.conftest import (
    assert_landed_once,
    cluster_addresses,
    finish_all,
    igflow,
    lake_count,
    produce_workload,
)

TOTAL = 16_000
SPEC = WorkloadSpec(tenants=8, count=TOTAL // 8, seed=23)
STOP_SECONDS = 2.0
#: Signalled: ``stop_seconds``; the others: their peer's exit, then ``stop_seconds``; plus
#: interpreter exit and the peer check's polling, on a busy machine.
BOUND_S = 2 * STOP_SECONDS + 10


def _start(
    settings: Settings, recovery: Path, addresses: str, *extra: str
) -> list[subprocess.Popen[bytes]]:
    return [
        igflow(
            settings,
            "run",
            *extra,
            "-r",
            str(recovery),
            "-i",
            str(i),
            "-a",
            addresses,
            IGFLOW_RUN_SNAPSHOT_SECONDS="0.5",
            IGFLOW_RUN_STOP_SECONDS=str(STOP_SECONDS),
        )
        for i in range(2)
    ]


def _exits(procs: list[subprocess.Popen[bytes]], start: float) -> list[tuple[float, int, str]]:
    """Each process's (seconds from ``start`` to its exit, status, stderr); a process still
    running ``BOUND_S`` after ``start`` fails the test."""

    def wait(proc: subprocess.Popen[bytes]) -> tuple[float, int, str]:
        try:
            _out, err = proc.communicate(timeout=max(0.0, start + BOUND_S - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
            pytest.fail(
                f"pid {proc.pid} still running {BOUND_S} s after the signal:\n"
                f"{err.decode()[-2000:]}"
            )
        return time.monotonic() - start, proc.returncode, err.decode()

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(procs)) as pool:
        return list(pool.map(wait, procs))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "targets"),
    [(signal.SIGINT, (0, 1)), (signal.SIGINT, (0,)), (signal.SIGTERM, (1,))],
    ids=["sigint-both", "sigint-process-0", "sigterm-process-1"],
)
def test_a_signalled_cluster_stops_within_a_bound_then_resumes_exactly_once(
    it_settings: Settings, tmp_path: Path, sig: signal.Signals, targets: tuple[int, ...]
) -> None:
    settings = it_settings.with_changes("kafka", batch_size=50).with_changes(
        "lake", batch_max_rows=200, batch_max_seconds=0.2
    )
    produce_workload(settings, SPEC)
    recovery = tmp_path / "recovery"
    addresses = cluster_addresses(2)
    procs = _start(settings, recovery, addresses, "--tail")
    deadline = time.monotonic() + 120
    while lake_count(settings) < TOTAL // 8 and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), "the flow ended before the signal"
        time.sleep(0.05)

    start = time.monotonic()
    for i in targets:
        procs[i].send_signal(sig)
    exits = _exits(procs, start)

    for i, (_seconds, status, err) in enumerate(exits):
        if i in targets:
            assert f"{sig.name} received" in err, err[-2000:]
            assert status in (128 + sig, EXIT_FORCED), (status, err[-2000:])
        else:
            assert "peer process(es) closed their cluster connection" in err, err[-2000:]
            assert status == EXIT_FORCED, (status, err[-2000:])
        if status == EXIT_FORCED:
            assert "exiting with status 3" in err, err[-2000:]

    finish_all(_start(settings, recovery, addresses))
    assert_landed_once(settings, TOTAL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signalled_lone_process_exits_with_the_signals_status_and_no_trace(
    it_settings: Settings, tmp_path: Path, sig: signal.Signals
) -> None:
    """One process, one worker: the worker runs on the main thread, so the handler's
    KeyboardInterrupt lands inside a step's Python code, and Bytewax returned it wrapped in a
    BytewaxRuntimeError. ``igflow run --tail`` then exited 1 with a Python trace (a Ctrl-C in a
    terminal, a ``docker compose stop``); now 128 + the signal, a log line, and a resume lands
    each record once."""
    settings = it_settings.with_changes("kafka", batch_size=50)
    produce_workload(settings, SPEC)
    recovery = tmp_path / "recovery"
    proc = igflow(
        settings,
        "run",
        "--tail",
        "-r",
        str(recovery),
        IGFLOW_RUN_SNAPSHOT_SECONDS="0.5",
        IGFLOW_RUN_STOP_SECONDS=str(STOP_SECONDS),
    )
    deadline = time.monotonic() + 120
    while lake_count(settings) < TOTAL // 8 and time.monotonic() < deadline:
        assert proc.poll() is None, "the flow ended before the signal"
        time.sleep(0.05)
    start = time.monotonic()
    proc.send_signal(sig)
    ((_seconds, status, err),) = _exits([proc], start)
    assert status == 128 + sig, (status, err[-3000:])
    assert f"{sig.name} received" in err and f"stopped on {sig.name}" in err, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    finish_all([igflow(settings, "run", "-r", str(recovery))])
    assert_landed_once(settings, TOTAL)
