"""What `igflow`'s main sets up for the process: a native crash leaves every thread's Python stack
on stderr; numpy's OpenBLAS runs no threads of its own unless the environment asks."""

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


def test_igflow_keeps_numpy_to_one_blas_thread_unless_told() -> None:
    # The threads numpy's import starts (OpenBLAS's), counted in /proc: none once igflow's main
    # has run, one (on this 2-core machine, or more) when the environment asks for two.
    code = (
        "import contextlib, io, os, sys\n"
        "from igflow.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "before = len(os.listdir('/proc/self/task'))\n"
        "import numpy\n"
        "print(len(os.listdir('/proc/self/task')) - before)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "0", out.stderr
    env["OPENBLAS_NUM_THREADS"] = "2"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "1", out.stderr
