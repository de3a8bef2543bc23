"""Compaction benchmark: what ``igflow compact`` does to the lake's files and to reading them.

    .venv/bin/python benchmarks/compaction.py --signals 500000     # the local stack must be up

1. N signals (10 tenants, 5% duplicates, 2% invalid, event times ending now) produced to a fresh
   topic; ``igflow run`` (bounded, the lake only, the default 0.5 s commit grid) lands them twice,
   into two fresh namespaces.
2. Each ``signals`` table read as landed: its data files, a full scan and a scan of one tenant
   (``tenant_id = 'tenant-03'``), seconds (median of ``--reads``).
3. One namespace compacted by ``igflow compact`` (each rewritten file's rows by tenant, in row
   groups of 65,536), the other by the same rewrite with the rows kept in the order they were
   committed and pyiceberg's row groups (``compact_table(by_tenant=False)``): the
   compaction's own seconds, then the same reads.
4. Both namespaces' digests compared (``igflow verify``'s): the rows are the same.

Prints a table; writes ``benchmarks/results/compaction.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pyiceberg.table import Table  # noqa: E402

from benchmarks.bench_topics import demo_workload, fresh_topics  # noqa: E402
from benchmarks.replay import _env as lake_only_env  # noqa: E402
from core.catalog import catalog  # noqa: E402
from core.settings import Settings  # noqa: E402
from igflow.producer import produce  # noqa: E402
from replay.verify import compare, digest_table  # noqa: E402
from sinks.lake_compact import compact_table, data_files  # noqa: E402

TENANT = "tenant-03"
TARGET = 64 * 1024 * 1024


def _run(settings: Settings, namespace: str) -> None:
    env = lake_only_env(settings, namespace)
    env["IGFLOW_RUN_LOG_LEVEL"] = "ERROR"  # not a line per rejected record
    subprocess.run([sys.executable, "-m", "igflow.cli", "run"], cwd=REPO, env=env, check=True)


def _median_seconds(call: Callable[[], object], reads: int) -> float:
    times = []
    for _ in range(reads):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _reads(table: Table, reads: int) -> dict[str, Any]:
    one = table.scan(row_filter=f"tenant_id = '{TENANT}'")
    return {
        "files": data_files(table),
        "full_scan_s": _median_seconds(lambda: table.scan().to_arrow(), reads),
        "tenant_scan_s": _median_seconds(one.to_arrow, reads),
        "tenant_rows": one.to_arrow().num_rows,
    }


def _compact(table: Table, load: Callable[[], Table], *, by_tenant: bool) -> float:
    start = time.perf_counter()
    compact_table(table, load, target_bytes=TARGET, by_tenant=by_tenant)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signals", type=int, default=500_000)
    parser.add_argument("--reads", type=int, default=5)
    args = parser.parse_args()
    tag, settings = fresh_topics()
    spec = demo_workload(args.signals)
    print(f"producing {spec.tenants * spec.count:,} signals to {settings.kafka.topic} …")
    produce(settings, spec)
    cat = catalog(settings)
    sides = {"by tenant": f"bench_{tag}_a", "commit order": f"bench_{tag}_b"}
    for namespace in sides.values():
        _run(settings, namespace)
    rows: list[dict[str, Any]] = []
    for label, namespace in sides.items():

        def load(ns: str = namespace) -> Table:
            return cat.load_table((ns, "signals"))

        rows.append({"table": "as landed", "side": label, **_reads(load(), args.reads)})
        seconds = _compact(load(), load, by_tenant=label == "by tenant")
        rows.append(
            {"table": f"compacted, {label}", "compact_s": seconds, **_reads(load(), args.reads)}
        )
    a, b = (digest_table(cat.load_table((ns, "signals")), "signals") for ns in sides.values())
    identical = compare(a, b).identical
    print(
        f"\n{'signals table':<28} {'files':>6} {'compact s':>9} {'full scan s':>11}"
        f" {'one tenant s':>12} {'its rows':>9}"
    )
    for r in rows:
        compact_s = f"{r['compact_s']:.2f}" if "compact_s" in r else "-"
        name = r["table"] if "side" not in r else f"as landed ({r['side']})"
        print(
            f"{name:<28} {r['files']:>6} {compact_s:>9} {r['full_scan_s']:>11.3f}"
            f" {r['tenant_scan_s']:>12.3f} {r['tenant_rows']:>9,}"
        )
    print(f"digests of the two compacted namespaces: {'identical' if identical else 'DIFFER'}")
    out = REPO / "benchmarks" / "results" / "compaction.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"signals": args.signals, "rows": rows, "identical": identical}))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
