"""Lake metadata vs tenants: snapshot-summary bytes and commit time at 10, 1,000 and 10,000 tenants.

    .venv/bin/python benchmarks/ledger.py                 # no stack needed: SQLite catalog
    .venv/bin/python benchmarks/ledger.py --tenants 10 1000 10000 --commits 40

Per tenant count, a fresh SQLite-catalog warehouse in a temporary directory and the signals
table (unpartitioned here, so that data files do not multiply with tenants and the figures are
the metadata's). A first commit lands one row per (tenant, Kafka partition), so the table's
ledger knows every lane (4 partitions: 4 lanes per tenant). Then ``--commits`` appends through
the real :class:`sinks.iceberg.IcebergAppender` (re-read the ledger, filter, digest, commit), each
a batch of ``--rows`` rows over ``--touch`` tenants taken in turn from all of them: the batch is
the same at every tenant count, so whatever grows is metadata. Reported per tenant count: the
median and mean commit time, the bytes of a snapshot summary (its properties as JSON, mean over
the measured commits), the table metadata file after the last commit (Iceberg rewrites it, every
snapshot's summary included, at each commit) and the ledger checkpoint files written beside it;
then the ratio of 10,000 tenants to 10. Writes ``benchmarks/results/ledger.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pyiceberg.catalog.sql import SqlCatalog  # noqa: E402
from pyiceberg.partitioning import PartitionSpec  # noqa: E402

from core.records import Decoded, PolicyTags, Provenance, Signal, Tagged  # noqa: E402
from sinks.iceberg import IcebergAppender, ensure_table  # noqa: E402
from sinks.lake_tables import SIGNALS  # noqa: E402

TOPIC = "coherence.signals.v1"
PARTITIONS = 4
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TAGS = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")
#: The signals table without its (day, tenant) partitioning: one data file per commit.
TABLE = dataclasses.replace(SIGNALS, partition_spec=PartitionSpec())


def _item(tenant: str, partition: int, offset: int) -> Tagged:
    signal = Signal(
        tenant, f"s-{partition}-{offset}", "latency", 0.5, None, "src", T0 + timedelta(seconds=1)
    )
    decoded = Decoded(signal, Provenance(TOPIC, partition, offset, 1, f"{offset:064x}"))
    return Tagged(decoded, TAGS, "p" * 64, f"prov-{partition}-{offset}")


def _summary_bytes(table: Any) -> int:
    snapshot = table.current_snapshot()
    props = dict(snapshot.summary.additional_properties)
    props["operation"] = snapshot.summary.operation.value
    return len(json.dumps(props, separators=(",", ":")).encode())


def run(tenants: int, commits: int, rows: int, touch: int) -> dict[str, Any]:
    """One tenant count in a fresh warehouse: the figures of its measured commits."""
    names = [f"tenant-{i:05d}" for i in range(tenants)]
    with tempfile.TemporaryDirectory(prefix="igflow-ledger-") as tmp:
        warehouse = Path(tmp) / "warehouse"
        warehouse.mkdir()
        catalog = SqlCatalog(
            "bench", uri=f"sqlite:///{tmp}/catalog.db", warehouse=warehouse.as_uri()
        )
        table = ensure_table(catalog, "bench", TABLE)
        appender = IcebergAppender(table, TABLE, flow="bench")
        offsets = [0] * PARTITIONS

        def take(tenant: str, partition: int) -> Tagged:
            item = _item(tenant, partition, offsets[partition])
            offsets[partition] += 1
            return item

        start = time.perf_counter()
        appender.append([take(t, p) for t in names for p in range(PARTITIONS)])
        warm_s = time.perf_counter() - start
        seconds: list[float] = []
        summaries: list[int] = []
        touched = min(touch, tenants)
        for c in range(commits):
            batch_tenants = [names[(c * touched + j) % tenants] for j in range(touched)]
            batch = [
                take(batch_tenants[i % touched], i % PARTITIONS)
                for i in range(rows)  # offsets rise per partition: every row is new
            ]
            result = appender.append(batch)
            assert result.appended == rows, result
            seconds.append(result.seconds)
            summaries.append(_summary_bytes(appender.table))
        metadata = appender.table.metadata_location.removeprefix("file://")
        sidecars = sorted(warehouse.rglob("igflow-ledger-*"))
        return {
            "tenants": tenants,
            "lanes": tenants * PARTITIONS,
            "commits": commits,
            "rows_per_commit": rows,
            "tenants_per_commit": touched,
            "warm_commit_ms": round(warm_s * 1000, 1),
            "commit_ms_median": round(statistics.median(seconds) * 1000, 2),
            "commit_ms_mean": round(statistics.fmean(seconds) * 1000, 2),
            "commit_ms_max": round(max(seconds) * 1000, 2),
            "summary_bytes_mean": round(statistics.fmean(summaries)),
            "summary_bytes_max": max(summaries),
            "metadata_file_bytes": Path(metadata).stat().st_size,
            "checkpoint_files": len(sidecars),
            "checkpoint_bytes": sum(p.stat().st_size for p in sidecars),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument("--commits", type=int, default=40, help="measured commits per count")
    parser.add_argument("--rows", type=int, default=200, help="rows per measured commit")
    parser.add_argument("--touch", type=int, default=10, help="tenants per measured commit")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ledger.json"))
    args = parser.parse_args()
    results = []
    for n in args.tenants:
        r = run(n, args.commits, args.rows, args.touch)
        results.append(r)
        print(json.dumps(r), flush=True)
    print()
    print("| tenants | lanes | commit ms (median / mean / max) | summary bytes | metadata bytes |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['tenants']:,} | {r['lanes']:,} | {r['commit_ms_median']:.1f} / "
            f"{r['commit_ms_mean']:.1f} / {r['commit_ms_max']:.1f} | "
            f"{r['summary_bytes_mean']:,} | {r['metadata_file_bytes']:,} |"
        )
    ratios: dict[str, float] = {}
    if len(results) > 1:
        low, high = results[0], results[-1]
        for key in ("commit_ms_median", "commit_ms_mean", "summary_bytes_mean"):
            ratios[key] = round(high[key] / low[key], 2)
        print(
            f"\n{high['tenants']:,} vs {low['tenants']:,} tenants: commit time "
            f"{ratios['commit_ms_median']}x (median), {ratios['commit_ms_mean']}x (mean); "
            f"summary bytes {ratios['summary_bytes_mean']}x"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "args": vars(args)}
    out.write_text(json.dumps({**payload, "results": results, "ratios": ratios}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
