"""Another checkout for a benchmark's ``--against DIR``: made from a commit, and run on this stack.

    .venv/bin/python benchmarks/checkouts.py <commit> /tmp/base   # then: ... --against /tmp/base

:func:`checkout` (this file as a command): ``git archive`` of the commit into DIR, with its
own build of the compiled modules (``core._native``, ``core._rowhash``, ``psi._sodium``): a
wheel built in isolation (``pip wheel --no-deps``, a few seconds), its ``.so`` files copied
beside the sources. Without them the base's Python would run on this checkout's extension,
whose functions may take other arguments (``benchmarks/stage_ab.py`` loads the base's own;
the flow benchmarks run the base's code from DIR).

The engine's settings look for the local stack in ``.stack`` under the current directory
(``Settings.stack_dir``) unless ``IGFLOW_STACK_DIR`` names it, and a benchmark runs another
checkout's commands from that checkout's directory (its code, its policies). Without the
variable such a run found no stack there: no TLS CA (its Kafka client refused to start), no
keys. ``igflow run`` then failed, or, started in the background, exited at once while
``benchmarks/idle.py`` went on reading its CPU seconds (flat: "0%" for the base). Every
``--against`` benchmark builds its children's environment with :func:`stack_env`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.settings import Settings  # noqa: E402

__all__ = ["checkout", "stack_env"]

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


def checkout(commit: str, into: Path) -> list[str]:
    """``commit``'s files in ``into`` (which must not exist or be empty) with its own compiled
    modules; returns their paths, relative to ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    if any(into.iterdir()):
        msg = f"{into} is not empty"
        raise SystemExit(msg)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    with tempfile.TemporaryDirectory() as wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, str(into)],
            check=True,
        )
        (wheel,) = Path(wheels).glob("*.whl")
        with zipfile.ZipFile(wheel) as built:
            compiled = [name for name in built.namelist() if name.endswith(".so")]
            for name in compiled:
                built.extract(name, into)
    return compiled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", help="a commit of this repository (git rev)")
    parser.add_argument("into", type=Path, help="a new directory")
    args = parser.parse_args()
    for name in checkout(args.commit, args.into):
        print(args.into / name)


if __name__ == "__main__":
    main()
