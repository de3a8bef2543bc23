"""Lake metadata vs tenants: snapshot-summary bytes and commit time at 10, 1,000 and 10,000 tenants.

    .venv/bin/python benchmarks/ledger.py                 # no stack needed: SQLite catalog
    .venv/bin/python benchmarks/ledger.py --tenants 10 1000 10000 --commits 40

Per tenant count, a fresh SQLite-catalog warehouse in a temporary directory and the signals table in
its own layout (by event day and residency since session 21: one data file a commit whatever its
tenants; until then this benchmark dropped the table's day x tenant partitioning, so that data files
did not multiply with tenants and the figures were the metadata's). A first commit lands one row per
(tenant, Kafka partition), so the table's ledger knows every lane (4 partitions: 4 lanes per
tenant). Then ``--commits`` appends through the real :class:`sinks.iceberg.IcebergAppender` (re-read
the ledger, filter, digest, commit), each a batch of ``--rows`` rows over ``--touch`` tenants taken
in turn from all of them: the batch is the same at every tenant count, so whatever grows is
metadata. The counts' commits are interleaved (the first of each, then the second of each, ...), so
that load from other work on a shared machine falls on all of them alike. Reported per tenant count:
the median and mean commit time, the bytes of a snapshot summary (its properties as JSON, mean over
the measured commits), the table metadata file after the last commit (Iceberg rewrites it, every
snapshot's summary included, at each commit) and the ledger checkpoint files written beside it; then
the ratio of 10,000 tenants to 10. Writes ``benchmarks/results/ledger.json``.
"""

from __future__ import annotations

import argparse
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

from core.records import Decoded, PolicyTags, Provenance, Signal, Tagged  # noqa: E402
from sinks.iceberg import IcebergAppender, ensure_table  # noqa: E402
from sinks.lake_tables import SIGNALS  # noqa: E402

TOPIC = "coherence.signals.v1"
PARTITIONS = 4
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TAGS = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")
#: The signals table: every row here is of one day and one residency, so one data file a commit.
TABLE = SIGNALS


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


class _Lake:
    """One tenant count's warehouse, table and appender."""

    def __init__(self, root: Path, tenants: int, rows: int, touch: int) -> None:
        self.tenants = tenants
        self.names = [f"tenant-{i:05d}" for i in range(tenants)]
        self.rows = rows
        self.touched = min(touch, tenants)
        self.warehouse = root / f"t{tenants}"
        self.warehouse.mkdir()
        catalog = SqlCatalog(
            "bench",
            uri=f"sqlite:///{self.warehouse}/catalog.db",
            warehouse=self.warehouse.as_uri(),
        )
        self.appender = IcebergAppender(ensure_table(catalog, "bench", TABLE), TABLE, flow="bench")
        self.offsets = [0] * PARTITIONS
        self.seconds: list[float] = []
        self.summaries: list[int] = []
        # The first commit: a row per (tenant, partition), so the ledger knows every lane.
        start = time.perf_counter()
        self.appender.append([self._take(t, p) for t in self.names for p in range(PARTITIONS)])
        self.warm_s = time.perf_counter() - start

    def _take(self, tenant: str, partition: int) -> Tagged:
        item = _item(tenant, partition, self.offsets[partition])
        self.offsets[partition] += 1
        return item

    def step(self, c: int) -> None:
        """Measured commit ``c``: ``rows`` rows over ``touched`` tenants taken in turn."""
        batch_tenants = [
            self.names[(c * self.touched + j) % self.tenants] for j in range(self.touched)
        ]
        batch = [
            self._take(batch_tenants[i % self.touched], i % PARTITIONS)
            for i in range(self.rows)  # offsets rise per partition: every row is new
        ]
        result = self.appender.append(batch)
        assert result.appended == self.rows, result
        self.seconds.append(result.seconds)
        self.summaries.append(_summary_bytes(self.appender.table))

    def figures(self) -> dict[str, Any]:
        metadata = self.appender.table.metadata_location.removeprefix("file://")
        sidecars = sorted(self.warehouse.rglob("igflow-ledger-*"))
        seconds, summaries = self.seconds, self.summaries
        return {
            "tenants": self.tenants,
            "lanes": self.tenants * PARTITIONS,
            "commits": len(seconds),
            "rows_per_commit": self.rows,
            "tenants_per_commit": self.touched,
            "warm_commit_ms": round(self.warm_s * 1000, 1),
            "commit_ms_median": round(statistics.median(seconds) * 1000, 2),
            "commit_ms_mean": round(statistics.fmean(seconds) * 1000, 2),
            "commit_ms_max": round(max(seconds) * 1000, 2),
            "summary_bytes_mean": round(statistics.fmean(summaries)),
            "summary_bytes_max": max(summaries),
            "metadata_file_bytes": Path(metadata).stat().st_size,
            "checkpoint_files": len(sidecars),
            "checkpoint_bytes": sum(p.stat().st_size for p in sidecars),
        }


def run(tenant_counts: list[int], commits: int, rows: int, touch: int) -> list[dict[str, Any]]:
    """Every tenant count in its own warehouse, their measured commits interleaved (commit 1 of
    each, then commit 2 of each, ...) so that load from other work on a shared machine falls on
    every count alike."""
    with tempfile.TemporaryDirectory(prefix="igflow-ledger-") as tmp:
        lakes = [_Lake(Path(tmp), n, rows, touch) for n in tenant_counts]
        for c in range(commits):
            for lake in lakes:
                lake.step(c)
        return [lake.figures() for lake in lakes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument("--commits", type=int, default=40, help="measured commits per count")
    parser.add_argument("--rows", type=int, default=200, help="rows per measured commit")
    parser.add_argument("--touch", type=int, default=10, help="tenants per measured commit")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ledger.json"))
    args = parser.parse_args()
    results = run(args.tenants, args.commits, args.rows, args.touch)
    for r in results:
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
