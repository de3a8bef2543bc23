"""Lake append benchmark: the lake sink's own cost per row, without Kafka or the dataflow.

    .venv/bin/python benchmarks/lake_append.py --rows 200000 --batch 5000

Appends N signals and N score changes (10 tenants, 4 partitions, each batch every lane's rows
as one ``write_batch`` joins them) with :class:`~sinks.iceberg.IcebergAppender` to a SQLite
catalog in a temporary folder, then re-appends the first tenth (a resume: every row skipped).
Prints wall and CPU seconds per table and µs per row. To compare code alternately on a shared
machine, run it from another checkout too: ``PYTHONPATH=DIR python DIR/benchmarks/lake_append.py``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pyiceberg.catalog.sql import SqlCatalog

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.records import (  # noqa: E402
    Decoded,
    PolicyTags,
    Provenance,
    ScoreChange,
    Signal,
    Tagged,
)
from sinks.iceberg import IcebergAppender, ensure_table  # noqa: E402
from sinks.lake_tables import SCORES, SIGNALS, TableDef  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TAGS = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")


def workload(rows: int) -> tuple[list[Tagged], list[ScoreChange]]:
    """``rows`` signals and as many score changes, offsets increasing per partition."""
    rng = random.Random(1)
    signals, scores = [], []
    for i in range(rows):
        partition, offset = i % 4, i // 4
        tenant = f"tenant-{rng.randrange(10):02d}"
        ts = T0 + timedelta(milliseconds=i)
        prov = Provenance("coherence.signals.v1", partition, offset, 2, f"{i:064x}")
        signal = Signal(tenant, f"sig-{i}", "latency", rng.random(), None, "src-a", ts)
        signals.append(Tagged(Decoded(signal, prov, 1_767_225_600_000 + i), TAGS, "p" * 64, f"{i}"))
        score = rng.uniform(0, 100)
        scores.append(
            ScoreChange(
                tenant, score, "HEALTHY", ts, i, float(i), f"{i}", prov, Decimal(f"{score:.2f}"), i
            )
        )
    return signals, scores


def run(table_def: TableDef[Any], items: list[Any], batch: int, tmp: Path) -> tuple[float, float]:
    """Wall and CPU seconds to append ``items`` in batches, then to skip a tenth again."""
    catalog = SqlCatalog(
        "bench", uri=f"sqlite:///{tmp}/catalog.db", warehouse=(tmp / "warehouse").as_uri()
    )
    table = ensure_table(catalog, "bench", table_def)
    appender = IcebergAppender(table, table_def)
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(items), batch):
        appender.append(items[start : start + batch])
    again = appender.append(items[: len(items) // 10])
    assert again.appended == 0, again
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args()
    signals, scores = workload(args.rows)
    print(f"{'table':<10} {'wall s':>8} {'CPU s':>8} {'µs/row (CPU)':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "warehouse").mkdir()
        for table_def, items in ((SIGNALS, signals), (SCORES, scores)):
            wall, cpu = run(table_def, items, args.batch, Path(tmp))
            print(f"{table_def.name:<10} {wall:>8.2f} {cpu:>8.2f} {cpu / len(items) * 1e6:>13.1f}")


if __name__ == "__main__":
    main()
