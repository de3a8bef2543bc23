"""A native crash of an igflow command leaves every thread's Python stack on stderr."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: The environment of the crashing child: without Python's own switch for faulthandler.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}

# igflow's entry point, then an abort as a native library would raise one (SIGABRT).
_CRASH = """
import os
from igflow import cli
cli.main(["config"])
os.abort()
"""


def test_an_abort_after_main_prints_the_python_stack() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CRASH],
        cwd=REPO,
        env=_ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGABRT
    assert "Fatal Python error: Aborted" in done.stderr
    assert 'File "<string>", line 5 in <module>' in done.stderr


def test_without_main_an_abort_says_nothing() -> None:
    """The control: the same abort without igflow's entry point leaves no stack."""
    done = subprocess.run(
        [sys.executable, "-c", "import os\nos.abort()"],
        env=_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGABRT
    assert "Fatal Python error" not in done.stderr
