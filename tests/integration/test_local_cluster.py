"""``igflow run --processes 2``: one command, two processes forked after the imports.

On the stack: a tailing cluster stopped by a SIGINT to the command (what a terminal's Ctrl-C
does: its children are in their own process group, so the command passes the signal on once),
and one whose command is SIGKILLed (its children must stop too, not run on as orphans); each is
resumed by ``igflow run --processes 2``, and every record lands exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from core.settings import Settings
from igflow.workload import WorkloadSpec
from tests.integration.conftest import (
    assert_landed_once,
    finish,
    igflow,
    lake_count,
    produce_workload,
)

TOTAL = 16_000
SPEC = WorkloadSpec(tenants=8, count=TOTAL // 8, seed=29)


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(") ", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _tailing(
    it_settings: Settings, tmp_path: Path
) -> tuple[Settings, Path, subprocess.Popen[bytes], list[int]]:
    """A workload, and ``igflow run --processes 2 --tail`` over it once an eighth has landed:
    the settings, the recovery store, the command and its two processes."""
    settings = it_settings.with_changes("kafka", batch_size=50).with_changes(
        "lake", batch_max_rows=200, batch_max_seconds=0.2
    )
    produce_workload(settings, SPEC)
    recovery = tmp_path / "recovery"
    proc = igflow(
        settings,
        "run",
        "--processes",
        "2",
        "--tail",
        "-r",
        str(recovery),
        IGFLOW_RUN_SNAPSHOT_SECONDS="0.5",
        IGFLOW_RUN_STOP_SECONDS="2",
    )
    deadline = time.monotonic() + 120
    while lake_count(settings) < TOTAL // 8 and time.monotonic() < deadline:
        assert proc.poll() is None, "the flow ended before the signal"
        time.sleep(0.05)
    children = _children(proc.pid)
    assert len(children) == 2, children
    for child in children:
        assert os.getpgid(child) == child  # its own group: a terminal's ^C reaches the command
    return settings, recovery, proc, children


def _resume_and_check(settings: Settings, recovery: Path) -> None:
    finish(igflow(settings, "run", "--processes", "2", "-r", str(recovery)))
    assert_landed_once(settings, TOTAL)


@pytest.mark.slow
def test_a_sigint_to_the_command_stops_both_processes_then_a_resume_lands_exactly_once(
    it_settings: Settings, tmp_path: Path
) -> None:
    settings, recovery, proc, _children_pids = _tailing(it_settings, tmp_path)
    os.kill(proc.pid, signal.SIGINT)  # the command only, as a terminal's ^C would
    try:
        _out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"igflow run --processes 2 still running 30 s after SIGINT: {proc.stderr}")
    text = err.decode()
    assert proc.returncode in (128 + signal.SIGINT, 3), (proc.returncode, text[-3000:])
    # Each process got the signal once (a second one would have exited it at once).
    assert text.count("SIGINT received") == 2, text[-3000:]
    _resume_and_check(settings, recovery)


@pytest.mark.slow
def test_the_processes_stop_when_the_command_is_killed_then_a_resume_lands_exactly_once(
    it_settings: Settings, tmp_path: Path
) -> None:
    settings, recovery, proc, children = _tailing(it_settings, tmp_path)
    proc.kill()  # the command alone: SIGKILL, no chance to pass anything on
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(c) for c in children), "a killed command left its processes running"
    _resume_and_check(settings, recovery)
