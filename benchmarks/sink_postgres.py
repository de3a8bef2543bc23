"""Postgres sink benchmark: score changes/s through :class:`sinks.postgres.PostgresWriter`.

    .venv/bin/python benchmarks/sink_postgres.py    # or: --rows 200000 --batch-sizes 100 1000

Writes ``rows`` score changes, spread round-robin over 1,000 tenants with increasing ``seq`` and
event time (so every batch updates existing rows: the guarded upsert does real work), at each
batch size, into a fresh schema of the local stack's Postgres (dropped afterwards). Two ways:

- ``unnest``: the writer itself, one ``INSERT ... SELECT FROM unnest(...)`` per batch;
- ``executemany``: the same guarded upsert, one row per statement, sent by psycopg's
  ``executemany`` in pipeline mode inside one transaction per batch (the alternative the writer
  did not take; it lives here only as the baseline).

A batch first collapses to each tenant's newest change, so a batch larger than the number of
tenants upserts fewer rows than it carries: ``changes/s`` counts score changes in,
``upserts/s`` rows sent to the server. Prints a table; ``--json PATH`` also writes the results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.migrations import apply  # noqa: E402
from core.records import Provenance, ScoreChange  # noqa: E402
from core.settings import Settings  # noqa: E402
from operators.score import round_half_even  # noqa: E402
from sinks.postgres import PostgresWriter, newest_per_tenant  # noqa: E402

TENANTS = 1000
METHODS = ("unnest", "executemany")

_ROW_UPSERT = """
INSERT INTO coherence_scores AS held
    (tenant_id, score, status, updated_at, seq, score_exact, window_count, provenance)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb)
ON CONFLICT (tenant_id) DO UPDATE SET
    score = EXCLUDED.score, status = EXCLUDED.status, updated_at = EXCLUDED.updated_at,
    seq = EXCLUDED.seq, score_exact = EXCLUDED.score_exact,
    window_count = EXCLUDED.window_count, provenance = EXCLUDED.provenance
WHERE (EXCLUDED.updated_at, EXCLUDED.seq) > (held.updated_at, held.seq)
"""


def changes(rows: int, tenants: int = TENANTS) -> list[ScoreChange]:
    """``rows`` changes, round-robin over ``tenants``; the i-th is change ``i // tenants + 1`` of
    its tenant, one second after the previous change of any tenant."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    out = []
    for i in range(rows):
        score = Fraction(i % 101, 100)
        out.append(
            ScoreChange(
                tenant_id=f"tenant-{i % tenants:04d}",
                score=float(score),
                status="HEALTHY" if score >= 0.75 else "WARN" if score >= 0.5 else "CRITICAL",
                updated_at=start + timedelta(seconds=i),
                window_count=i // tenants + 1,
                window_weight=float(i // tenants + 1),
                provenance_id=f"{i:032x}",
                provenance=Provenance("coherence.signals.v1", i % 4, i, 1, f"{i:064x}"),
                score_2dp=round_half_even(score),
                seq=i // tenants + 1,
            )
        )
    return out


@contextmanager
def scratch_schema(dsn: str) -> Iterator[str]:
    """A DSN whose tables live in a fresh schema with the migrations applied; dropped after."""
    schema = f"bench_pgsink_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        sep = "&" if "?" in dsn else "?"
        scoped = f"{dsn}{sep}options=-csearch_path%3D{schema}"
        apply(scoped)
        yield scoped
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def _with_writer(dsn: str, batches: Sequence[Sequence[ScoreChange]]) -> float:
    writer = PostgresWriter(dsn)
    try:
        writer.write(batches[0][:1])  # connect outside the timing
        start = time.perf_counter()
        for batch in batches:
            writer.write(batch)
        return time.perf_counter() - start
    finally:
        writer.close()


def _with_executemany(dsn: str, batches: Sequence[Sequence[ScoreChange]]) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = time.perf_counter()
        for batch in batches:
            params = [
                (
                    c.tenant_id,
                    c.score_2dp,
                    c.status,
                    c.updated_at,
                    c.seq,
                    c.score,
                    c.window_count,
                    json.dumps(
                        {
                            "provenance_id": c.provenance_id,
                            "topic": c.provenance.topic,
                            "partition": c.provenance.kafka_partition,
                            "offset": c.provenance.kafka_offset,
                            "schema_version": c.provenance.schema_version,
                            "input_hash": c.provenance.input_hash,
                        }
                    ),
                )
                for c in newest_per_tenant(batch)
            ]
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(_ROW_UPSERT, params)
        return time.perf_counter() - start


def run(
    batch_sizes: Sequence[int] = (100, 1000, 10000),
    rows: int = 100_000,
    *,
    methods: Sequence[str] = METHODS,
    dsn: str | None = None,
) -> list[dict[str, Any]]:
    """One result per (method, batch size): ``method, batch_size, changes, upserts, seconds,
    changes_per_s, upserts_per_s``. ``dsn``: the local stack's Postgres unless given."""
    dsn = dsn or Settings.load().stores.postgres_dsn
    data = changes(rows)
    results: list[dict[str, Any]] = []
    for method in methods:
        timed = {"unnest": _with_writer, "executemany": _with_executemany}[method]
        for size in batch_sizes:
            batches = [data[i : i + size] for i in range(0, len(data), size)]
            upserts = sum(len(newest_per_tenant(b)) for b in batches)
            with scratch_schema(dsn) as scoped:
                seconds = timed(scoped, batches)
                with psycopg.connect(scoped) as conn:
                    held = conn.execute(
                        "SELECT count(*), max(seq) FROM coherence_scores"
                    ).fetchone()
            assert held == (min(rows, TENANTS), data[-1].seq), held  # every change landed
            results.append(
                {
                    "method": method,
                    "batch_size": size,
                    "changes": rows,
                    "upserts": upserts,
                    "seconds": seconds,
                    "changes_per_s": rows / seconds,
                    "upserts_per_s": upserts / seconds,
                }
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = run(args.batch_sizes, args.rows, methods=args.methods)
    print(f"{args.rows:,} score changes over {TENANTS:,} tenants\n")
    print(
        f"{'method':<12} {'batch':>6} {'upserts':>8} {'seconds':>8} {'changes/s':>10}"
        f" {'upserts/s':>10}"
    )
    for r in results:
        print(
            f"{r['method']:<12} {r['batch_size']:>6,} {r['upserts']:>8,} {r['seconds']:>8.2f}"
            f" {r['changes_per_s']:>10,.0f} {r['upserts_per_s']:>10,.0f}"
        )
    if args.json is not None:
        document = {"rows": args.rows, "tenants": TENANTS, "results": results}
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
