"""Importing the policies leaves the C++ runtime's allocator its own.

regopy's library exports snmalloc's ``operator new`` and ``delete``. Imported first, it made
libstdc++'s own calls to them bind to snmalloc for the whole process, Arrow's and Parquet's
strings included, and ``igflow run`` grew ~400 bytes of resident memory a record
(``core.rego._load_cxx_runtime``). The dynamic linker's binding log says where they went.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fresh_python import REPO

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="LD_DEBUG is the GNU dynamic linker's"
)

#: ``binding file <from> [0] to <to> [0]: normal symbol `<name>'``
_BINDING = re.compile(r"binding file (\S+) \[\d+\] to (\S+) \[\d+\]: normal symbol `(\w+)'")


def _bindings(code: str) -> dict[tuple[str, str], str]:
    """``(library, symbol) -> library it binds to`` for a fresh interpreter running ``code``."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "LD_DEBUG": "bindings"},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    found: dict[tuple[str, str], str] = {}
    for line in done.stderr.splitlines():
        match = _BINDING.search(line)
        if match:
            source, target, symbol = match.groups()
            found[Path(source).name, symbol] = Path(target).name
    return found


@pytest.mark.parametrize("then", ["", "import pyarrow"])
def test_libstdcxx_new_and_delete_stay_its_own_after_the_policies_load(then: str) -> None:
    bindings = _bindings(f"import core.rego\n{then}")
    runtime = {
        symbol: target
        for (source, symbol), target in bindings.items()
        if source.startswith("libstdc++") and symbol in {"_Znwm", "_ZdlPv", "_ZdlPvm"}
    }
    assert runtime, "libstdc++'s operator new/delete bindings were not logged"
    assert all(target.startswith("libstdc++") for target in runtime.values()), runtime
    # regopy keeps its own allocator for its own code.
    assert bindings.get(("librego_shared.so", "_Znwm")) == "librego_shared.so"
