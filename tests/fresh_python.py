"""Run code in a fresh interpreter at the repository's root: for what is process-wide (which
modules a start-up imports, pyarrow's one-time pandas probe, the garbage collector's freeze)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, *args: str, env: Mapping[str, str | None] | None = None) -> Any:
    """The JSON value ``code`` (dedented) prints on its last line, run with ``args`` as
    ``sys.argv[1:]`` and this environment changed by ``env`` (``None``: unset); its stderr in
    the assertion when it fails."""
    environ = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
