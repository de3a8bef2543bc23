"""Lake commit benchmark: the writer thread's CPU per append, alternately against another checkout.

    .venv/bin/python benchmarks/lake_commit.py --commits 40 --rows 1000 --against DIR --rounds 3
    .venv/bin/python benchmarks/lake_commit.py --uri postgresql+psycopg2://...   # the stack's

Appends ``--commits`` batches of ``--rows`` signals (``benchmarks/lake_append.py``'s workload) with
:class:`~sinks.iceberg.IcebergAppender` to a new signals table of the catalog
:func:`core.catalog.catalog` opens for a SQL ``--uri`` (default: SQLite in a temporary folder;
with a Postgres URI, a fresh namespace in it), after three warm-up appends, and prints the
writer thread's CPU (``time.thread_time``: not the Parquet encoding on pyiceberg's executor
threads) and the process's (``time.process_time``: with it) per commit, in ms. The per-commit
part (the catalog's reads and its conditional ``UPDATE``, the metadata JSON, the manifests) is
what a shorter commit grid (``lake.batch_max_seconds``) multiplies. ``--profile FILE``: a
cProfile of the measured appends, in the writer thread's CPU time.
Each measurement is its own process; with ``--against`` the two checkouts alternate (ABBA).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(
    code: Path, uri: str | None, commits: int, rows: int, profile: str | None
) -> tuple[float, float]:
    """Writer-thread and process CPU ms per commit with the checkout ``code``."""
    sys.path.insert(0, str(code))
    import sinks.iceberg
    from benchmarks.lake_append import workload
    from core.catalog import CatalogOnce
    from sinks.iceberg import IcebergAppender, ensure_table
    from sinks.lake_tables import SIGNALS

    assert Path(sinks.iceberg.__file__).is_relative_to(code), sinks.iceberg.__file__
    signals, _ = workload(rows * (commits + 3))
    gc.collect()
    gc.freeze()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "warehouse").mkdir()
        uri = uri or f"sqlite:///{tmp}/catalog.db"
        properties = {"type": "sql", "uri": uri, "warehouse": (Path(tmp) / "warehouse").as_uri()}
        catalog = CatalogOnce("bench", properties).get()
        namespace = f"bench_{uuid.uuid4().hex[:12]}"
        appender = IcebergAppender(ensure_table(catalog, namespace, SIGNALS), SIGNALS)
        for at in range(0, 3 * rows, rows):  # warm-up: imports, first-use work
            appender.append(signals[at : at + rows])
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile(time.thread_time)  # this thread's CPU
            profiler.enable()
        start, process = time.thread_time(), time.process_time()
        for at in range(3 * rows, len(signals), rows):
            appender.append(signals[at : at + rows])
        seconds, process = time.thread_time() - start, time.process_time() - process
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        if not uri.startswith("sqlite"):
            catalog.purge_table((namespace, SIGNALS.name))
            catalog.drop_namespace(namespace)
    return 1000 * seconds / commits, 1000 * process / commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=40)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--uri", help="the SQL catalog's URI (default: SQLite in a temp folder)")
    parser.add_argument("--against", type=Path, help="another checkout, run alternately")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--profile", help="cProfile output file (one run, this checkout)")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # measure with this code
    args = parser.parse_args()
    if args.one or args.profile:
        thread, process = measure(args.one or REPO, args.uri, args.commits, args.rows, args.profile)
        print(f"{thread:.3f} {process:.3f}")
        return
    codes = [REPO] + ([args.against.resolve()] if args.against else [])
    sizes = ["--commits", str(args.commits), "--rows", str(args.rows)]
    sizes += ["--uri", args.uri] if args.uri else []
    per: dict[Path, list[tuple[float, float]]] = {code: [] for code in codes}
    print(f"{'checkout':<40} {'thread ms/commit':>16} {'process ms/commit':>17}")
    for r in range(args.rounds):
        for code in codes if r % 2 == 0 else codes[::-1]:
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(code), *sizes],
                cwd=code,
                env={**os.environ, "PYTHONPATH": str(code)},
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            per[code].append((float(out[-2]), float(out[-1])))
            thread, process = per[code][-1]
            print(f"{str(code)[-40:]:<40} {thread:>16.2f} {process:>17.2f}", flush=True)
    for code, values in per.items():
        thread = statistics.median(v[0] for v in values)
        process = statistics.median(v[1] for v in values)
        print(f"median {str(code)[-33:]:<33} {thread:>16.2f} {process:>17.2f}")


if __name__ == "__main__":
    main()
