"""Lake write micro-benchmark: ``sinks.lake_write.append`` against pyiceberg's ``Table.append``.

    .venv/bin/python benchmarks/lake_write.py [--rows 150000] [--batch 5000] [--rounds 3]

The same Arrow batches (signals and scores from ``benchmarks/lake_append.py``'s workload, with
snapshot properties of the size the sink writes) appended to fresh tables of a SQLite catalog
in a temporary folder, by each path alternately, ``--rounds`` times, in one process. Prints the
CPU seconds of the process (the Parquet writer's threads included) per path and table, their
medians and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.lake_append import workload  # noqa: E402
from sinks.iceberg import ensure_table  # noqa: E402
from sinks.lake_tables import SCORES, SIGNALS  # noqa: E402
from sinks.lake_write import append  # noqa: E402

#: Snapshot properties about the size of a 5,000-row append's digest and ledger delta.
PROPERTIES = {"igflow.digest": "d" * 3000, "igflow.offsets.delta": "o" * 1500}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=150_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    signals, scores = workload(args.rows)
    paths: dict[str, Callable[[Table, pa.Table], None]] = {
        "Table.append": lambda t, b: t.append(b, snapshot_properties=PROPERTIES),
        "lake_write.append": lambda t, b: append(t, b, PROPERTIES),
    }
    cpu: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "warehouse").mkdir()
        catalog = SqlCatalog(
            "bench", uri=f"sqlite:///{tmp}/catalog.db", warehouse=(Path(tmp) / "warehouse").as_uri()
        )
        for table_def, items in ((SIGNALS, signals), (SCORES, scores)):
            batches = [
                table_def.to_arrow(items[i : i + args.batch])
                for i in range(0, len(items), args.batch)
            ]
            for r in range(args.rounds):
                for label, write in paths.items():
                    namespace = f"{label.split('.')[0].lower()}_{r}"
                    table = ensure_table(catalog, namespace, table_def)
                    start = time.process_time()
                    for batch in batches:
                        write(table, batch)
                    cpu.setdefault((table_def.name, label), []).append(time.process_time() - start)
    print(f"{'table':<8} {'path':<18} {'CPU s per round':<24} {'median':>7} {'us/row':>7}")
    for (name, label), values in cpu.items():
        median = statistics.median(values)
        runs = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:<8} {label:<18} {runs:<24} {median:>7.2f} {median / args.rows * 1e6:>7.1f}")
    for name in ("signals", "scores"):
        base = statistics.median(cpu[(name, "Table.append")])
        new = statistics.median(cpu[(name, "lake_write.append")])
        print(f"{name}: lake_write.append {base / new:.2f}x Table.append (CPU)")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
