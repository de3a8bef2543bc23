"""The lake's Arrow batches: ``TableDef.to_arrow`` (C buffers, ``core._native.lake_columns``)
against ``TableDef.python_to_arrow`` (its reference, the path before), in one process.

    .venv/bin/python -m benchmarks.lake_arrow --sizes 5000 500 50 --rounds 5   # no stack needed

CPU µs a row per path, the median of ``--rounds`` rounds that alternate the two paths over the
same batches (``benchmarks/lake_append.py``'s workload, split into batches of each size).
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks.lake_append import workload
from sinks.lake_tables import SCORES, SIGNALS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 500, 50])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    signals, scores = workload(args.rows)
    for size in args.sizes:
        for name, table, items in (("signals", SIGNALS, signals), ("scores", SCORES, scores)):
            batches = [items[i : i + size] for i in range(0, len(items), size)]
            paths = {"c": table.to_arrow, "python": table.python_to_arrow}
            spent: dict[str, list[float]] = {k: [] for k in paths}
            for _ in range(args.rounds):
                for key, build in paths.items():
                    start = time.process_time()
                    for batch in batches:
                        build(batch)
                    spent[key].append((time.process_time() - start) / len(items) * 1e6)
            c, py = statistics.median(spent["c"]), statistics.median(spent["python"])
            print(
                f"batch {size:>5} {name:<7}: C {c:.3f} µs/row, python {py:.3f} µs/row "
                f"(CPU, median of {args.rounds} alternating rounds); {py / c:.1f}x"
            )


if __name__ == "__main__":
    main()
