"""Running a benchmark's commands from another checkout (``--against DIR``) on this run's stack.

The engine's settings look for the local stack in ``.stack`` under the current directory
(``Settings.stack_dir``) unless ``IGFLOW_STACK_DIR`` names it, and a benchmark runs another
checkout's commands from that checkout's directory (its code, its policies). Without the
variable such a run found no stack there: no TLS CA (its Kafka client refused to start), no
keys. ``igflow run`` then failed, or, started in the background, exited at once while
``benchmarks/idle.py`` went on reading its CPU seconds (flat: "0%" for the base). Every
``--against`` benchmark builds its children's environment with :func:`stack_env`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.settings import Settings  # noqa: E402

__all__ = ["stack_env"]

STACK_DIR = "IGFLOW_STACK_DIR"


def stack_env(env: Mapping[str, str] | None = None, **changes: str) -> dict[str, str]:
    """``env`` (this process's environment by default) with ``changes``, and
    ``IGFLOW_STACK_DIR`` naming the stack this process's settings use, as an absolute path
    (unless ``env`` names one already): a child run from any directory reaches the same stack."""
    out = dict(os.environ if env is None else env)
    if not out.get(STACK_DIR):
        out[STACK_DIR] = str(Path(Settings.load().stack_dir).resolve())
    out.update(changes)
    return out
