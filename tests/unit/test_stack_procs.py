"""The dev stack's process plumbing (``dev/procs.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.fresh_python import REPO


def test_a_server_left_running_at_exit_raises_no_resource_warning(tmp_path: Path) -> None:
    """Regression (session 32): the Kafka and Neo4j processes that ``test_stack`` restarts are
    the stack's from then on; their Popen objects went with the interpreter at the end of the
    suite and printed "ResourceWarning: subprocess N is still running" with a traceback (warnings
    are errors under pytest). A server that this interpreter started and that still runs when
    it exits is meant to: nothing is printed. An ended one is reaped as Popen does."""
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from dev import procs
        running = procs.spawn(["sleep", "60"], cwd=Path("."), log=Path({str(tmp_path / "s.log")!r}))
        ended = procs.spawn(["true"], cwd=Path("."), log=Path({str(tmp_path / "t.log")!r}))
        ended.wait()
        print(running.pid)
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    pid = int(done.stdout.split()[-1])
    try:
        assert done.stderr == ""
        assert Path(f"/proc/{pid}").exists()  # it outlived the interpreter that started it
    finally:
        os.kill(pid, signal.SIGKILL)
