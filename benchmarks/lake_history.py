"""Lake history benchmark: what one append costs as the table's history grows.

    .venv/bin/python benchmarks/lake_history.py                      # 1,000 commits of 100 rows
    .venv/bin/python benchmarks/lake_history.py --commits 2000 --plot /tmp/history.png
    .venv/bin/python benchmarks/lake_history.py --kept 200          # expiring as it goes
    .venv/bin/python benchmarks/lake_history.py --kept 64 --manifests 32   # and compacting

Appends ``--commits`` batches of ``--rows`` signals (10 tenants, 4 partitions) one after another
with :class:`~sinks.iceberg.IcebergAppender`, the flow's appender, to a new signals table in a
SQLite catalog in a temporary folder, as a tailing flow does on its commit grid, and prints, per
``--every`` commits, the CPU and wall milliseconds of one commit, the table metadata file's size
and the manifests the current snapshot lists; at the end, the time to plan a scan of the whole
table (what a notebook's query pays for the manifests). With ``--merge`` the table merges its
manifests (``commit.manifest-merge.enabled``). With ``--kept N`` the appender expires snapshots as
the flow's does (``lake.snapshots_kept``; :mod:`sinks.ledger_history` keeps the history the
replay plan and ``verify --from-history`` read): the line stays flat, the expiries included.
With ``--manifests N`` it also rewrites the manifests into few once the current snapshot lists
more than N (``lake.manifests_kept``; :mod:`sinks.lake_manifests`), the rewrites included.

Why: every snapshot stays in the table metadata until it is expired, and pyiceberg reads, copies
and writes that whole file at each commit (``update_table_metadata`` ends in a deep copy of it,
three times per commit; ``load_table`` parses it), so a commit costs more with every commit
before it. The figures (docs/performance.md) are the slope of that line and the fit printed at
the end: how many snapshots a table may hold before one commit takes longer than the flow's
commit grid allows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from pyiceberg.catalog.sql import SqlCatalog

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import sinks.iceberg as iceberg  # noqa: E402
from benchmarks.lake_append import workload  # noqa: E402
from sinks.iceberg import IcebergAppender, ensure_table  # noqa: E402
from sinks.lake_tables import SIGNALS  # noqa: E402


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares ``(intercept, slope)`` of ``y = a + b x``."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - slope * mx, slope


def plot(points: list[tuple[int, float, float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, left = plt.subplots(figsize=(8, 4.5))
    xs = [x for x, _, _ in points]
    left.plot(xs, [cpu for _, cpu, _ in points], marker="o", label="CPU ms per commit")
    left.set_xlabel("snapshots in the table")
    left.set_ylabel("ms per commit (CPU)")
    right = left.twinx()
    right.plot(xs, [kib for _, _, kib in points], color="tab:orange", label="metadata KiB")
    right.set_ylabel("table metadata file, KiB")
    left.set_title("One lake append against the table's history")
    fig.legend(loc="lower right", bbox_to_anchor=(0.88, 0.15))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=100, help="rows per commit")
    parser.add_argument("--every", type=int, default=100, help="commits per printed row")
    parser.add_argument("--merge", action="store_true", help="merge manifests")
    parser.add_argument("--grid", type=float, default=2.0, help="seconds between commits")
    parser.add_argument("--plot", help="save a PNG of the line here")
    parser.add_argument(
        "--kept",
        type=int,
        default=0,
        help="the appender's snapshots_kept (lake.snapshots_kept): expire as it goes (0: never)",
    )
    parser.add_argument(
        "--manifests",
        type=int,
        default=0,
        help="the appender's manifests_kept (lake.manifests_kept): compact as it goes (0: never)",
    )
    args = parser.parse_args()
    if args.merge:
        iceberg._TABLE_PROPERTIES = {  # the benchmark's variant
            **iceberg._TABLE_PROPERTIES,
            "commit.manifest-merge.enabled": "true",
        }
    signals, _scores = workload(args.commits * args.rows)
    points: list[tuple[int, float, float]] = []
    print(
        f"{'commits':>9} {'kept':>6} {'CPU ms':>8} {'wall ms':>8} {'metadata KiB':>13} "
        f"{'manifests':>10}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "warehouse").mkdir()
        catalog = SqlCatalog(
            "bench", uri=f"sqlite:///{root}/catalog.db", warehouse=(root / "warehouse").as_uri()
        )
        table = ensure_table(catalog, "bench", SIGNALS)
        appender = IcebergAppender(
            table, SIGNALS, snapshots_kept=args.kept, manifests_kept=args.manifests
        )
        cpu, wall = time.process_time(), time.perf_counter()
        for k in range(args.commits):
            appender.append(signals[k * args.rows : (k + 1) * args.rows])
            if (k + 1) % args.every:
                continue
            per_cpu = (time.process_time() - cpu) / args.every * 1000
            per_wall = (time.perf_counter() - wall) / args.every * 1000
            current = catalog.load_table(("bench", SIGNALS.name))
            location = current.metadata_location
            kib = Path(location.removeprefix("file://")).stat().st_size / 1024
            manifests = len(current.current_snapshot().manifests(current.io))  # type: ignore[union-attr]
            kept = len(current.metadata.snapshots)
            print(
                f"{k + 1:>9,} {kept:>6,} {per_cpu:>8.1f} {per_wall:>8.1f} {kib:>13,.0f} "
                f"{manifests:>10,}"
            )
            points.append((k + 1, per_cpu, kib))
            cpu, wall = time.process_time(), time.perf_counter()
        # What a reader pays for the manifests: planning a scan of the whole table.
        current = catalog.load_table(("bench", SIGNALS.name))
        start = time.perf_counter()
        tasks = len(list(current.scan().plan_files()))
        planned = time.perf_counter() - start
        print(f"\nplanning a scan of the table: {planned * 1000:,.0f} ms ({tasks:,} data files)")
    intercept, slope = fit([(x, y) for x, y, _ in points])
    grown = (points[-1][2] - points[0][2]) / max(1, points[-1][0] - points[0][0]) * 1024
    print(
        f"fit: {intercept:.1f} ms + {slope * 1000:.1f} ms per 1,000 commits before it, a commit"
        f" (CPU); {grown:,.0f} bytes of metadata per commit"
    )
    if slope > 0:
        # Two tables (signals, scores) commit on the same grid: at what history does their
        # commits' CPU fill the grid's interval on their own?
        full = (args.grid * 1000 / 2 - intercept) / slope
        print(
            f"two tables committing every {args.grid:g} s fill that interval with commit CPU "
            f"alone after ~{full:,.0f} commits each ({full * args.grid / 3600:.1f} h of a tail run)"
        )
    if args.plot:
        plot(points, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
