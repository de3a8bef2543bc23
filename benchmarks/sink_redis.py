"""Redis sink benchmark: rows/s of :class:`sinks.redis.RedisWriter` by batch size.

    .venv/bin/python benchmarks/sink_redis.py [--rows 100000] [--batch-sizes 100 1000 10000]

For each batch size, on the local stack's Redis (``IGFLOW_REDIS_URL``), under a fresh key prefix:
1. ``rows`` score changes (10 tenants, round robin, increasing ``seq``), written in batches;
2. the same batches again: a replay, every change skipped by its guard;
3. ``rows`` tagged signals (10 tenants, 4 partitions, increasing offsets) into the capped
   streams (``stores.redis_stream_max``), and their replay.
Records are built before the clock starts; a run's keys are checked, then deleted. Each batch is
one ``EVALSHA`` (one round trip, guards, writes, TTLs and ``PUBLISH`` inside the script).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis

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
from core.settings import Settings  # noqa: E402
from core.store_keys import score_key, signals_key  # noqa: E402
from sinks.redis import RedisWriter  # noqa: E402

TENANTS = 10
PARTITIONS = 4
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TAGS = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")


def score_changes(prefix: str, rows: int) -> list[ScoreChange]:
    """``rows`` changes, tenants in turn, each tenant's ``seq`` counting from 1."""
    out = []
    for i in range(rows):
        tenant, seq = f"{prefix}-{i % TENANTS:02d}", i // TENANTS + 1
        score = (i % 97) / 97
        out.append(
            ScoreChange(
                tenant_id=tenant,
                score=score,
                status="HEALTHY" if score >= 0.75 else "WARN" if score >= 0.5 else "CRITICAL",
                updated_at=T0 + timedelta(seconds=seq),
                window_count=seq,
                window_weight=float(seq),
                provenance_id=f"{i:032x}",
                provenance=Provenance("bench", i % PARTITIONS, i, 1, f"{i:064x}"),
                score_2dp=Decimal(round(score, 2)).quantize(Decimal("0.01")),
                seq=seq,
            )
        )
    return out


def signals(prefix: str, rows: int) -> list[Tagged]:
    """``rows`` signals, tenants in turn, offsets increasing in each of 4 partitions."""
    out = []
    for i in range(rows):
        tenant = f"{prefix}-{i % TENANTS:02d}"
        sig = Signal(
            tenant, f"s-{i}", "latency", (i % 101) / 100, 1.0, "bench", T0 + timedelta(seconds=i)
        )
        provenance = Provenance("bench", i % PARTITIONS, i // PARTITIONS, 1, f"{i:064x}")
        out.append(Tagged(Decoded(sig, provenance), TAGS, "p" * 64, f"{i:032x}"))
    return out


def _write_all(writer: RedisWriter, items: Sequence[ScoreChange | Tagged], size: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(items), size):
        writer.write(items[i : i + size])
    return time.perf_counter() - start


def _clean(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"tenant:{prefix}*", count=1000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])


def run(
    batch_sizes: Sequence[int] = (100, 1000, 10000),
    rows: int = 100_000,
    settings: Settings | None = None,
) -> list[dict[str, Any]]:
    """One result per (kind, batch size): seconds and rows/s of the first write and its replay."""
    stores = (settings or Settings.load()).stores
    client = redis.Redis.from_url(stores.redis_url, decode_responses=True)
    results: list[dict[str, Any]] = []
    try:
        for size in batch_sizes:
            for kind in ("scores", "signals"):
                prefix = f"bench-{uuid.uuid4().hex[:8]}"
                items: list[ScoreChange | Tagged] = []
                items += score_changes(prefix, rows) if kind == "scores" else signals(prefix, rows)
                writer = RedisWriter(
                    stores.redis_url,
                    stream_max=stores.redis_stream_max,
                    ttl_seconds=stores.redis_ttl_seconds,
                )
                try:
                    # Connecting and caching the script stay out of the timing.
                    writer.write(score_changes(f"{prefix}-warm", 1))
                    first = _write_all(writer, items, size)
                    replay = _write_all(writer, items, size)
                    _check(client, prefix, kind, rows)
                finally:
                    writer.close()
                    _clean(client, prefix)
                results.append(
                    {
                        "kind": kind,
                        "batch_size": size,
                        "rows": rows,
                        "seconds": first,
                        "rows_per_s": rows / first,
                        "replay_seconds": replay,
                        "replay_rows_per_s": rows / replay,
                    }
                )
    finally:
        client.close()
    return results


def _check(client: redis.Redis, prefix: str, kind: str, rows: int) -> None:
    """The run landed what it should (a benchmark of a broken writer measures nothing)."""
    tenant = f"{prefix}-00"
    if kind == "scores":
        seq = client.hget(score_key(tenant), "seq")
        expected = str((rows - 1) // TENANTS + 1)
        if seq != expected:
            msg = f"{tenant}: seq {seq!r}, expected {expected}"
            raise RuntimeError(msg)
    else:
        last = client.xrevrange(signals_key(tenant), count=1) or []
        newest = last[0][1] if last else None
        want = f"s-{(rows - 1) // TENANTS * TENANTS}"
        if newest is None or newest.get("signal_id") != want:
            msg = f"{tenant}: newest signal {newest!r}, expected {want}"
            raise RuntimeError(msg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 1000, 10000])
    args = parser.parse_args()
    results = run(args.batch_sizes, args.rows)
    print(f"\n{'kind':<8} {'batch':>6} {'rows':>8} {'seconds':>8} {'rows/s':>9} {'replay/s':>9}")
    for r in results:
        print(
            f"{r['kind']:<8} {r['batch_size']:>6} {r['rows']:>8} {r['seconds']:>8.2f} "
            f"{r['rows_per_s']:>9,.0f} {r['replay_rows_per_s']:>9,.0f}"
        )


if __name__ == "__main__":
    main()
