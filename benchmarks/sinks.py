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

``--flow --against PATH --rounds N``: the same (``--no-pause`` implied) of this checkout and of
the checkout at ``PATH`` (a base copy, ``git archive <rev> | tar -x -C PATH``), each in its own
child process with its own code (flow, writers and ``serving_flow``), alternating N rounds;
prints each run's ratio, events/s and CPU seconds, their medians per checkout and the load
average; writes ``benchmarks/results/serving_flow_against.json`` (here: nothing is written
into ``PATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import serving_flow, sink_graph, sink_postgres, sink_redis  # noqa: E402
from benchmarks.checkouts import stack_env  # noqa: E402

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
    parser.add_argument("--against", type=Path, help="--flow: another checkout, alternately")
    parser.add_argument("--rounds", type=int, default=1, help="--flow --against: rounds")
    args = parser.parse_args()
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    if args.flow and args.against:
        runs = _against(args.against, args.rounds, args.signals, args.step_ms)
        (out / "serving_flow_against.json").write_text(json.dumps(runs, indent=2))
        return
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


#: Run in a child whose working directory is a checkout: that checkout's serving_flow.
_CHILD = """
import json, sys
sys.path.insert(0, ".")
from benchmarks import serving_flow
args = json.loads(sys.argv[1])
result = serving_flow.run(args["signals"], 0, 0.0, pause=False, step_ms=args["step_ms"])
print("@@result@@" + json.dumps(result))
"""


def _flow_child(code: Path, signals: int, step_ms: float) -> dict[str, Any]:
    env = stack_env(PYTHONPATH=str(code))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps({"signals": signals, "step_ms": step_ms})],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        msg = f"{code}: the flow benchmark failed ({done.returncode}):\n{done.stderr[-3000:]}"
        raise RuntimeError(msg)
    lines = done.stdout.splitlines()
    print("\n".join(line for line in lines if not line.startswith("@@result@@")))
    result: dict[str, Any] = json.loads(
        next(line for line in lines if line.startswith("@@result@@")).removeprefix("@@result@@")
    )
    return result


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    flows = {f["path"]: f for f in result["flows"]}
    every = flows["lake + redis + postgres + graph"]
    slowest = min(result["stores"], key=lambda r: r["events_per_s"])
    return {
        "ratio": result["flow_vs_slowest_store"],
        "all_stores_events_per_s": every["events_per_s"],
        "slowest_alone_events_per_s": slowest["events_per_s"],
        "slowest": slowest["store"],
        "lake_only_events_per_s": flows["lake only"]["events_per_s"],
        "all_stores_cpu_s": every["cpu_seconds"],
        "lake_only_cpu_s": flows["lake only"]["cpu_seconds"],
        "blocked_s": every["worker_blocked_s"],
        "server_cpu_s": every["server_cpu_s"],
        "load_average": os.getloadavg(),
    }


def _against(base: Path, rounds: int, signals: int, step_ms: float) -> dict[str, Any]:
    """``rounds`` alternating runs of ``--flow --no-pause`` here and at ``base``."""
    codes = [REPO, base.resolve()]
    runs: dict[str, list[dict[str, Any]]] = {str(code): [] for code in codes}
    for n in range(rounds):
        for code in codes if n % 2 == 0 else codes[::-1]:
            print(f"\n=== round {n + 1}: {code} (load average {os.getloadavg()[0]:.1f}) ===")
            row = _summary(_flow_child(code, signals, step_ms))
            runs[str(code)].append(row)
            print(f"[{code}] " + json.dumps(row))
    print(f"\nmedians over {rounds} round(s):")
    for code, rows in runs.items():

        def med(key: str, rows: list[dict[str, Any]] = rows) -> float:
            return statistics.median(r[key] for r in rows)

        blocked = statistics.median(sum(r["blocked_s"].values()) for r in rows)
        ratios = ", ".join(f"{r['ratio']:.2f}" for r in rows)
        loads = ", ".join(f"{r['load_average'][0]:.1f}" for r in rows)
        print(
            f"[{code}] all stores / slowest alone {med('ratio'):.2f}x"
            f" ({med('all_stores_events_per_s'):,.0f} against"
            f" {med('slowest_alone_events_per_s'):,.0f} events/s), lake only"
            f" {med('lake_only_events_per_s'):,.0f} events/s; CPU s all stores"
            f" {med('all_stores_cpu_s'):.2f}, lake only {med('lake_only_cpu_s'):.2f};"
            f" worker blocked {blocked:.1f} s; ratios"
            f" {ratios}; load {loads}"
        )
    return runs


if __name__ == "__main__":
    main()
