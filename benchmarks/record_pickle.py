"""Record pickling: CPU µs per ``pickle.dumps`` + ``loads`` of a ``Tagged``, as Bytewax pays it
for every record that changes process (``igflow run -i/-a``), against another checkout's.

    .venv/bin/python benchmarks/record_pickle.py --against /tmp/base [--rounds 3]

Each side runs in a fresh interpreter with its checkout first on ``sys.path``, alternately,
``--rounds`` times; each measures 5,000 records one at a time (median of 7 passes, CPU time of
the process). Both sides must give the same pickle bytes. Prints the medians and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = """
import hashlib, pickle, statistics, sys, time
from datetime import UTC, datetime, timedelta
import core.records as records
from core.records import Decoded, PolicyTags, Provenance, Signal, Tagged
assert records.__file__.startswith(sys.argv[1]), records.__file__
start = datetime(2026, 1, 1, tzinfo=UTC)
items = []
for i in range(5000):
    s = Signal(f"t{i % 10}", f"s{i}", "latency", 0.5, 1.0, "sensor-a", start + timedelta(seconds=i))
    p = Provenance("signals", 0, i, 1, f"{i:064x}")
    d = Decoded(s, p, None, None, ())
    items.append(Tagged(d, PolicyTags("p", "r", "l", "x"), "v1", f"{i:032x}"))
digest = hashlib.sha256(b"".join(pickle.dumps(it) for it in items)).hexdigest()
passes = []
for _ in range(7):
    t = time.process_time()
    for it in items:
        pickle.loads(pickle.dumps(it))
    passes.append((time.process_time() - t) / len(items) * 1e6)
print(statistics.median(passes), digest)
"""


def _measure(code: Path) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(code))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(code)],
        cwd=code,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, required=True, help="another checkout")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base: list[float] = []
    mine: list[float] = []
    digests: set[str] = set()
    for r in range(args.rounds):
        sides = [(args.against.resolve(), base), (REPO, mine)]
        for code, into in sides if r % 2 == 0 else sides[::-1]:
            us, digest = _measure(code)
            into.append(us)
            digests.add(digest)
            print(f"round {r + 1}: {code}: {us:.2f} µs/record ({digest[:12]})")
    if len(digests) != 1:
        msg = f"the two sides pickle different bytes: {sorted(digests)}"
        raise SystemExit(msg)
    ratio = statistics.median(mine) / statistics.median(base)
    print(
        f"medians: {args.against} {statistics.median(base):.2f} µs, this checkout "
        f"{statistics.median(mine):.2f} µs: {ratio:.2f}x; load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
