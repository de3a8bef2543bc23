"""Digest micro-benchmark: µs per row of ``digest_arrow``, another release's against this one's.

    .venv/bin/python benchmarks/digest.py --namespace NS --base /tmp/base [--rounds 5]

Reads each verifiable table of the lake namespace ``NS`` (of the local stack) into Arrow once,
then digests the same Arrow tables with the ``core/digest.py`` of ``--base`` (a copy of another
commit: ``git archive ac564ba | tar -x -C /tmp/base``) and with this checkout's, alternately,
``--rounds`` times, in one process. Both must give the same digests. Reports the median µs
per row (CPU time of the process, so the other load of a shared machine counts less) and the
ratio; writes ``benchmarks/results/digest.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pyiceberg.exceptions import NoSuchTableError  # noqa: E402

from core import digest  # noqa: E402
from core.catalog import catalog  # noqa: E402
from core.settings import Settings  # noqa: E402


def _module(base: Path) -> ModuleType:
    """``core/digest.py`` of another checkout (it imports nothing of the project)."""
    spec = importlib.util.spec_from_file_location("base_digest", base / "core" / "digest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["base_digest"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    base = _module(args.base)
    cat = catalog(Settings.load())
    results = []
    print(f"{'table':<14} {'rows':>8} {'base µs/row':>12} {'new µs/row':>11} {'ratio':>7}")
    for name in ("signals", "scores", "quarantine", "deconfliction"):
        try:
            data = cat.load_table((args.namespace, name)).scan().to_arrow()
        except NoSuchTableError:
            continue
        if data.num_rows == 0:
            continue
        timings: dict[str, list[float]] = {"base": [], "new": []}
        got = {}
        for _ in range(args.rounds):
            for label, fn in (("base", base.digest_arrow), ("new", digest.digest_arrow)):
                start = time.process_time()
                got[label] = fn(name, data)
                timings[label].append(time.process_time() - start)
        same = [
            {k: (g.min_offset, g.max_offset, g.count, g.digest) for k, g in got[label].items()}
            for label in ("base", "new")
        ]
        assert same[0] == same[1], f"{name}: the digests differ"
        us = {k: statistics.median(v) / data.num_rows * 1e6 for k, v in timings.items()}
        ratio = us["base"] / us["new"]
        print(
            f"{name:<14} {data.num_rows:>8,} {us['base']:>12.2f} {us['new']:>11.2f} {ratio:>6.1f}x"
        )
        results.append({"table": name, "rows": data.num_rows, "us_per_row": us, "ratio": ratio})
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "digest.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
