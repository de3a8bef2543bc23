"""promtool (Debian's prometheus package) for the tests that check Prometheus files with it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["promtool"]


def promtool(*args: str, cwd: Path) -> str:
    """``promtool ARGS`` run in ``cwd``: its standard output; the test fails on a non-zero exit
    (with promtool's output) or when promtool is not installed."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: run `make system` (Debian's prometheus package)")
    done = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout
