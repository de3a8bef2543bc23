"""What one lost lake commit race costs: CPU s of an ``IcebergAppender.append`` whose first
commit the catalog refuses (``CommitFailedException``, as when another process committed first),
minus one that commits at once, against another checkout's, in the same run.

    .venv/bin/python benchmarks/lost_race.py --against /tmp/base [--rows 13000] [--rounds 2]

Each side runs in a fresh interpreter with its checkout first on ``sys.path``, alternately,
``--rounds`` times; each appends ``--rows`` signals (10 tenants, 4 Kafka partitions) to a fresh
table of a local SQLite catalog, 7 times each way (retry wait 0), and prints the medians of
the process's CPU time (the Parquet writer threads included). The retry selects the same rows:
since branch racefiles it commits the lost attempt's data files instead of writing them again.
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
import dataclasses, os, random, statistics, sys, tempfile, time
from datetime import UTC, datetime, timedelta
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException
import sinks.iceberg as iceberg
from core.records import Decoded, PolicyTags, Provenance, Signal, Tagged
from sinks.lake_tables import SIGNALS
assert iceberg.__file__.startswith(sys.argv[1]), iceberg.__file__
policy = iceberg._COMMIT_RETRY
iceberg._COMMIT_RETRY = dataclasses.replace(policy, base_seconds=0.0, cap_seconds=0.0)
tags = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")
rng = random.Random(1)
start = datetime(2026, 1, 1, tzinfo=UTC)
items = []
for o in range(int(sys.argv[2])):
    s = Signal(f"tenant-0{o % 10}", f"s-{o}", "latency", rng.random(), None, "src",
               start + timedelta(seconds=o // 10))
    d = Decoded(s, Provenance("topic", o % 4, o, 1, "%064x" % o))
    items.append(Tagged(d, tags, "p" * 64, f"prov-{o}"))
root = tempfile.mkdtemp()
os.makedirs(f"{root}/w")
catalog = SqlCatalog("t", uri=f"sqlite:///{root}/c.db", warehouse=f"file://{root}/w")
real = catalog.commit_table
cpu = {0: [], 1: []}
for i in range(7):
    for lose in (0, 1):
        refuse = [lose]
        def commit_table(tbl, requirements, updates):
            if refuse[0]:
                refuse[0] -= 1
                raise CommitFailedException("another writer won")
            return real(tbl, requirements, updates)
        catalog.commit_table = commit_table
        table = iceberg.ensure_table(catalog, f"ns{i}_{lose}", SIGNALS)
        appender = iceberg.IcebergAppender(table, SIGNALS)
        t = time.process_time()
        result = appender.append(items)
        cpu[lose].append(time.process_time() - t)
        assert (result.attempts, result.appended) == (1 + lose, len(items)), result
print(statistics.median(cpu[0]), statistics.median(cpu[1]))
"""


def side(code: Path, rows: int) -> tuple[float, float]:
    """CPU s of an append without and with one lost race, from the checkout ``code``."""
    env = dict(os.environ, PYTHONPATH=str(code))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(code), str(rows)],
        cwd=code,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[-2]), float(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, required=True, help="another checkout")
    parser.add_argument("--rows", type=int, default=13_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    codes = [("this", REPO), ("base", args.against)]
    got: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in codes}
    for r in range(args.rounds):
        for name, code in codes if r % 2 == 0 else codes[::-1]:
            won, lost = side(code, args.rows)
            got[name].append((won, lost))
            print(
                f"{name}: append {won:.3f} CPU s, with a lost race {lost:.3f} (+{lost - won:.3f})"
            )
    cost = {}
    for name, runs in got.items():
        won = statistics.median(w for w, _ in runs)
        lost = statistics.median(x for _, x in runs)
        cost[name] = lost - won
        print(f"{name} medians: append {won:.3f} CPU s, a lost race costs {cost[name]:.3f} more")
    if cost["base"] > 0:
        print(f"a lost race: {cost['this'] / cost['base']:.2f}x the base's CPU")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
