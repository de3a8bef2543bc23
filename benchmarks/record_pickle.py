"""Record pickling: CPU µs per ``pickle.dumps`` + ``loads`` of a ``Tagged``, as Bytewax pays it
for every record that changes process (``igflow run -i/-a``), against another checkout's.

    .venv/bin/python benchmarks/record_pickle.py --against /tmp/base [--rounds 3]
    .venv/bin/python benchmarks/record_pickle.py --against /tmp/base --runs

Each side runs in a fresh interpreter with its checkout first on ``sys.path``, alternately,
``--rounds`` times; each measures 5,000 records one at a time (median of 7 passes, CPU time of
the process). Both sides must give the same pickle bytes. Prints the medians and the ratio.

``--runs``: what crosses at ``by_tenant`` since tenant runs (session 14): ``Decoded`` records
with their raw Kafka record, cut into runs by each checkout's own
``operators.batching.tenant_runs`` (engine batches of 1,000 records of 10 tenants: runs of
100), each ``(tenant, run)`` pickled and unpickled as one Bytewax item; µs per record. The
bytes may differ (a run may pickle as columns: ``core.records.Records``); each side checks
that the runs load equal, and both sides must build the same records (the digest of
the records pickled one by one).
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


_RUNS_CHILD = """
import hashlib, pickle, statistics, sys, time
from datetime import UTC, datetime, timedelta
import core.records as records
from core.records import Decoded, Provenance, RawRecord, Signal
from operators.batching import tenant_runs
assert records.__file__.startswith(sys.argv[1]), records.__file__
start = datetime(2026, 1, 1, tzinfo=UTC)
items = []
for i in range(5000):
    t = f"tenant-{i % 10:02d}"
    raw = RawRecord("coherence.signals.v1", i % 4, i, t.encode(), bytes(70), 1_767_225_600_000 + i)
    s = Signal(t, f"s{i}", "latency", 0.5, 1.0, "sensor-a", start + timedelta(seconds=i))
    p = Provenance("coherence.signals.v1", i % 4, i, 2, f"{i:064x}")
    items.append(Decoded(s, p, raw.timestamp_ms, raw, ()))
runs = [
    run
    for at in range(0, len(items), 1000)
    for run in tenant_runs(items[at : at + 1000], lambda d: d.signal.tenant_id)
]
assert pickle.loads(pickle.dumps(runs)) == runs
digest = hashlib.sha256(b"".join(pickle.dumps(r) for run in runs for r in run[1])).hexdigest()
passes = []
for _ in range(7):
    t = time.process_time()
    for run in runs:
        pickle.loads(pickle.dumps(run))
    passes.append((time.process_time() - t) / len(items) * 1e6)
print(statistics.median(passes), digest)
"""


def _measure(code: Path, child: str = _CHILD) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(code))
    out = subprocess.run(
        [sys.executable, "-c", child, str(code)],
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
    parser.add_argument("--runs", action="store_true", help="tenant runs of Decoded records")
    args = parser.parse_args()
    base: list[float] = []
    mine: list[float] = []
    digests: set[str] = set()
    for r in range(args.rounds):
        sides = [(args.against.resolve(), base), (REPO, mine)]
        for code, into in sides if r % 2 == 0 else sides[::-1]:
            us, digest = _measure(code, _RUNS_CHILD if args.runs else _CHILD)
            into.append(us)
            digests.add(digest)
            print(f"round {r + 1}: {code}: {us:.2f} µs/record ({digest[:12]})")
    if len(digests) != 1:
        msg = f"the two sides pickle (or load) different records: {sorted(digests)}"
        raise SystemExit(msg)
    ratio = statistics.median(mine) / statistics.median(base)
    print(
        f"medians: {args.against} {statistics.median(base):.2f} µs, this checkout "
        f"{statistics.median(mine):.2f} µs: {ratio:.2f}x; load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
