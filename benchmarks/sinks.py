"""Serving-sink benchmark: rows/s per store at batch sizes 100, 1,000 and 10,000, in one run.

    .venv/bin/python benchmarks/sinks.py            # the local stack must be up
    .venv/bin/python benchmarks/sinks.py --flow     # the whole flow with the stores (below)

Each store's writer (the class its Bytewax sink wraps) writes the same kind of rows the flow sends
it, at each batch size, timed from the first batch to the last acknowledgement; replaying the same
batches (a resume after a crash) is timed too and must change nothing. The graph's figure is set
beside the published Neo4j Kafka connector figure. Per-store details:
``benchmarks/sink_redis.py``, ``sink_graph.py``, ``sink_postgres.py``. Writes
``benchmarks/results/sinks.json``.

``--flow``: the whole flow instead (``benchmarks/serving_flow.py``): events/s with lake + Redis +
Postgres + graph against the lake alone and against the slowest store's own rate for the same
items (issue 15's ratio) in the same run, and the RSS of ``igflow run`` with Redis paused 10 s
(``--no-pause``: without it); writes ``benchmarks/results/serving_flow.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import serving_flow, sink_graph, sink_postgres, sink_redis  # noqa: E402

#: Neo4j Kafka connector, as published: 5,000-7,700 nodes/s.
NEO4J_CONNECTOR_NODES_PER_S = (5_000, 7_700)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per Redis/Postgres run")
    parser.add_argument("--graph-rows", type=int, default=20_000, help="rows per graph run")
    parser.add_argument("--flow", action="store_true", help="the whole flow with the stores")
    parser.add_argument("--signals", type=int, default=100_000, help="--flow: signals per run")
    parser.add_argument(
        "--pause-signals", type=int, default=200_000, help="--flow: signals of the paused run"
    )
    parser.add_argument("--pause", type=float, default=10.0, help="--flow: seconds Redis pauses")
    parser.add_argument("--pause-only", action="store_true", help="--flow: the paused run only")
    parser.add_argument("--no-pause", action="store_true", help="--flow: skip the paused run")
    parser.add_argument(
        "--step-ms",
        type=float,
        default=10.0,
        help="--flow: event time between a tenant's signals (10: 100 a second per tenant)",
    )
    args = parser.parse_args()
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    if args.flow:
        result = serving_flow.run(
            args.signals,
            args.pause_signals,
            args.pause,
            pause_only=args.pause_only,
            pause=not args.no_pause,
            step_ms=args.step_ms,
        )
        (out / "serving_flow.json").write_text(json.dumps(result, indent=2))
        return
    sizes = args.batch_sizes
    table: list[dict[str, Any]] = []
    for r in sink_redis.run(sizes, args.rows):
        table.append(
            {
                "store": f"redis ({r['kind']})",
                "batch": r["batch_size"],
                "rows_per_s": r["rows_per_s"],
                "replay_rows_per_s": r["replay_rows_per_s"],
            }
        )
    for r in sink_postgres.run(sizes, args.rows):
        if r["method"] != "unnest":
            continue
        table.append(
            {
                "store": "postgres (score upserts)",
                "batch": r["batch_size"],
                "rows_per_s": r["changes_per_s"],
                "upserts_per_s": r["upserts_per_s"],
            }
        )
    for r in sink_graph.run(sizes, args.graph_rows):
        table.append(
            {
                "store": "graph (signals)",
                "batch": r["batch_size"],
                "rows_per_s": r["rows_per_s"],
                "nodes_per_s": r["nodes_per_s"],
                "replay_rows_per_s": r["replay_rows_per_s"],
            }
        )
    print(f"\n{'store':<26} {'batch':>6} {'rows/s':>9} {'replay rows/s':>14} {'nodes/s':>9}")
    for row in table:
        replay = row.get("replay_rows_per_s")
        nodes = row.get("nodes_per_s")
        print(
            f"{row['store']:<26} {row['batch']:>6,} {row['rows_per_s']:>9,.0f}"
            f" {f'{replay:,.0f}' if replay else '-':>14} {f'{nodes:,.0f}' if nodes else '-':>9}"
        )
    low, high = NEO4J_CONNECTOR_NODES_PER_S
    print(f"{'Neo4j Kafka connector (published)':<33} {'':>9} {'':>14} {low:,}-{high:,}")
    (out / "sinks.json").write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
