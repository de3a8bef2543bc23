"""Graph sink benchmark: tagged signals/s through :class:`sinks.graph.GraphWriter`.

    .venv/bin/python benchmarks/sink_graph.py     # or: --rows 50000 --batch-sizes 500 5000

Writes ``rows`` tagged signals (10 tenants, round-robin) at each batch size into the local
stack's graph server, under a fresh tenant prefix per run (deleted afterwards). Each signal is
two nodes (``Signal``, ``Provenance``) and two edges (``EMITS``, ``HAS_PROVENANCE``), plus the 10
``Tenant`` nodes: ``nodes/s`` counts the nodes created, ``rows/s`` the signals. The time is the
writer's whole ``write`` per batch: building and encoding the query in Python, the round trip
and the server's work. ``client/server CPU`` splits the first write's cost: this thread's CPU
and the local stack's graph server's (from ``/proc``), per row. ``replay rows/s`` writes the
same batches again (every ``MERGE`` matches, nothing changes), the cost of an at-least-once
redelivery.

Each batch size is written twice, alternating which goes first, on fresh prefixes: by the writer
and by the baseline in the same run, a writer with ``row_merges=True`` (every node and edge
``MERGE``\\ d row by row, :data:`sinks.graph_model.SIGNALS_ROWS_QUERY`, the query before the
batch query); ``vs rows`` is the writer's server CPU per row over the baseline's (lower is
better) and its rows/s over the baseline's. ``--warm N`` first writes N rows unmeasured (Neo4j's
JIT). The machine is shared: run it a few times and take medians.

For scale, the Neo4j Kafka connector's published sink throughput is 5,000-7,700 nodes/s (a
different server and workload: an indication, not a like-for-like comparison).
Prints a table; ``--json PATH`` also writes the results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.store_mix import server_cpu  # noqa: E402
from core.records import Decoded, PolicyTags, Provenance, Signal, Tagged  # noqa: E402
from core.settings import Settings  # noqa: E402
from sinks.graph import NODE_LABELS, GraphWriter  # noqa: E402

TENANTS = 10
#: The Neo4j Kafka connector's published sink throughput, nodes/s.
NEO4J_KAFKA_CONNECTOR = (5_000, 7_700)

_T0 = datetime(2026, 1, 1, tzinfo=UTC)
_TAGS = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")


def signals(rows: int, prefix: str) -> list[Tagged]:
    """``rows`` distinct tagged signals over :data:`TENANTS` tenants named ``<prefix><i>``."""
    out = []
    for n in range(rows):
        tenant = f"{prefix}{n % TENANTS}"
        sig = Signal(
            tenant,
            f"sig-{n:08d}",
            "latency",
            (n % 1000) / 1000,
            None if n % 3 else 1.5,
            f"source-{n % 7}",
            _T0 + timedelta(milliseconds=n),
        )
        provenance = Provenance("coherence.signals.v1", n % 4, n // 4, 1, f"{n:064x}")
        out.append(Tagged(Decoded(sig, provenance), _TAGS, "p" * 64, f"{n:032x}"))
    return out


def _write_all(writer: GraphWriter, items: Sequence[Tagged], batch_size: int) -> float:
    start = time.perf_counter()
    for at in range(0, len(items), batch_size):
        writer.write(items[at : at + batch_size])
    return time.perf_counter() - start


def _cpu_write_all(
    writer: GraphWriter, items: Sequence[Tagged], batch_size: int
) -> tuple[float, float, float | None]:
    """Wall seconds, this thread's CPU seconds and the graph server's (``None``: not the local
    stack's) for writing ``items``."""
    server = server_cpu().get("graph")
    cpu = time.thread_time()
    seconds = _write_all(writer, items, batch_size)
    cpu = time.thread_time() - cpu
    after = server_cpu().get("graph")
    return seconds, cpu, None if server is None or after is None else after - server


def _measure(writer: GraphWriter, rows: int, batch_size: int) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}-"
    items = signals(rows, prefix)
    try:
        seconds, cpu, server = _cpu_write_all(writer, items, batch_size)
        counts = writer.counts(prefix)
        replay = _write_all(writer, items, batch_size)
        assert writer.counts(prefix) == counts, "a replay changed the graph"
    finally:
        writer.delete_tenants(prefix)
    nodes = sum(counts[label] for label in NODE_LABELS)
    assert counts["Signal"] == rows, counts
    assert counts["EMITS"] == counts["HAS_PROVENANCE"] == rows, counts
    return {
        "batch_size": batch_size,
        "rows": rows,
        "nodes": nodes,
        "edges": counts["EMITS"] + counts["HAS_PROVENANCE"],
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "nodes_per_s": round(nodes / seconds),
        "replay_rows_per_s": round(rows / replay),
        "client_cpu_us_per_row": round(cpu / rows * 1e6, 1),
        "server_cpu_us_per_row": None if server is None else round(server / rows * 1e6, 1),
    }


def run(
    batch_sizes: Sequence[int] = (100, 1000, 10000),
    rows: int = 20_000,
    settings: Settings | None = None,
    warm: int = 0,
) -> list[dict[str, Any]]:
    """One result per batch size: rows, nodes created, seconds, rows/s and nodes/s, the rows/s
    of writing the same batches again, CPU per row, and the same for the baseline writer
    (``baseline``) with the ratios ``server_cpu_vs_rows`` and ``rows_per_s_vs_rows``."""
    stores = (settings or Settings.load()).stores
    writer = GraphWriter.for_stores(stores)
    baseline = GraphWriter(
        stores.neo4j_uri,
        stores.neo4j_user,
        stores.neo4j_password,
        label_prefix=stores.graph_label_prefix,
        compat=stores.graph_compat,
        ca_file=stores.neo4j_ca_file,
        row_merges=True,
    )
    writer.ensure_schema()
    if warm:
        _measure(writer, warm, 1000)
        _measure(baseline, warm, 1000)
    results = []
    for n, batch_size in enumerate(batch_sizes):
        order = (writer, baseline) if n % 2 == 0 else (baseline, writer)
        measured = {id(w): _measure(w, rows, batch_size) for w in order}
        result, base = measured[id(writer)], measured[id(baseline)]
        ours, theirs = result["server_cpu_us_per_row"], base["server_cpu_us_per_row"]
        result["baseline"] = base
        result["server_cpu_vs_rows"] = None if not ours or not theirs else round(ours / theirs, 3)
        result["rows_per_s_vs_rows"] = round(result["rows_per_s"] / base["rows_per_s"], 3)
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--warm", type=int, default=0, help="rows written first, unmeasured")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    settings = Settings.load()
    results = run(args.batch_sizes, args.rows, settings, args.warm)
    print(f"{args.rows:,} tagged signals over {TENANTS} tenants -> {settings.stores.neo4j_uri}\n")
    header = (
        f"{'writer':<28} {'batch':>6} {'seconds':>8} {'rows/s':>8} {'nodes/s':>8} "
        f"{'replay rows/s':>14} {'client/server CPU µs per row':>29}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        for name, line in (
            ("GraphWriter (this repo)", r),
            ("  baseline: row MERGEs", r["baseline"]),
        ):
            print(
                f"{name:<28} {line['batch_size']:>6} {line['seconds']:>8.2f} "
                f"{line['rows_per_s']:>8,} {line['nodes_per_s']:>8,} "
                f"{line['replay_rows_per_s']:>14,} {line['client_cpu_us_per_row']:>14} / "
                f"{line['server_cpu_us_per_row'] or '-':<12}"
            )
        print(
            f"{'  vs rows':<28} {'':>6} {'':>8} {r['rows_per_s_vs_rows']:>7}x {'':>8} {'':>14} "
            f"{'server CPU':>14} {r['server_cpu_vs_rows'] or '-'}x"
        )
    low, high = NEO4J_KAFKA_CONNECTOR
    published = f"{low // 1000}-{high / 1000:.1f}k"
    print(f"{'Neo4j Kafka connector':<28} {'-':>6} {'-':>8} {'-':>8} {published:>8}")
    print("  (published figure for Neo4j, not measured here)")
    if args.json is not None:
        document = {"rows": args.rows, "tenants": TENANTS, "results": results}
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
