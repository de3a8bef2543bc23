"""Start-up benchmark: what every ``igflow`` command and every run pays before it works.

    .venv/bin/python benchmarks/startup.py --against /tmp/base-startup --rounds 5

Three measures, each a fresh process, wall seconds and CPU seconds (user + system of the child):

- ``igflow --help`` (``python -m igflow.cli --help``): the command line's own imports;
- ``import flows.coherence`` as ``igflow run`` imports it (after ``core.lazy_pandas`` defers
  pandas, where the checkout has it): the flow's modules, nothing built;
- ``igflow run`` (bounded, lake only unless ``--sinks``) of a topic holding one record, into a
  fresh namespace: start-up, connections, one append per table; checked to land the record.

``--against DIR`` runs each measure from the checkout in DIR as well (``git archive <commit> |
tar -x -C DIR``), alternating ABBA round by round so that the machine's drift cancels; each
path's medians and the load average are printed, and the ratios this/other. Needs the stack
(``python -m dev start``, ``igflow setup``) for the run. Writes ``benchmarks/results/startup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.checkouts import stack_env  # noqa: E402
from core.catalog import catalog  # noqa: E402
from core.settings import Settings  # noqa: E402
from igflow.admin import create_topics  # noqa: E402
from igflow.producer import produce  # noqa: E402
from igflow.workload import WorkloadSpec  # noqa: E402

#: ``import flows.coherence`` as the runner does it: pandas deferred first where the code can.
IMPORT_FLOW = (
    "import importlib.util\n"
    "if importlib.util.find_spec('core.lazy_pandas'):\n"
    "    from core.lazy_pandas import defer_pandas\n"
    "    defer_pandas()\n"
    "import flows.coherence\n"
)


def _timed(command: list[str], code: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of ``command`` run from the checkout ``code``."""
    env = {**env, "PYTHONPATH": str(code)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=code, env=env, stdout=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        msg = f"{' '.join(command)} failed in {code} ({done.returncode})"
        raise RuntimeError(msg)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another checkout to run alternately")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sinks", default="", help="IGFLOW_STORES_SINKS of the run (lake only)")
    parser.add_argument(
        "--only", nargs="*", choices=("help", "import", "run"), default=["help", "import", "run"]
    )
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    settings = Settings.load().with_changes(
        "kafka", topic=f"bench.{tag}.startup", dlq_topic=f"bench.{tag}.startup.dlq"
    )
    if "run" in args.only:
        create_topics(settings)
        produce(settings, WorkloadSpec(tenants=1, count=1, seed=1))
    lake = catalog(settings)
    env = stack_env()
    env.update(
        {
            "IGFLOW_KAFKA_TOPIC": settings.kafka.topic,
            "IGFLOW_KAFKA_DLQ_TOPIC": settings.kafka.dlq_topic,
            "IGFLOW_RUN_LOG_LEVEL": "WARNING",
            "IGFLOW_STORES_SINKS": args.sinks,
        }
    )
    python = sys.executable
    measures = {
        "help": ("igflow --help", [python, "-m", "igflow.cli", "--help"]),
        "import": ("import flows.coherence", [python, "-c", IMPORT_FLOW]),
        "run": ("igflow run, 1 record", [python, "-m", "igflow.cli", "run", "-w", "1"]),
    }
    codes = [("this", REPO)] + ([("other", args.against)] if args.against else [])
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in range(args.rounds):
        for key in args.only:
            _, command = measures[key]
            for label, code in codes if r % 2 == 0 else codes[::-1]:  # ABBA: drift cancels
                run_env = env
                if key == "run":
                    namespace = f"bench_{tag}_{label}_{r}"
                    run_env = {**env, "IGFLOW_LAKE_NAMESPACE": namespace}
                wall, cpu = _timed(command, code, run_env)
                if key == "run":
                    rows = lake.load_table(f"{namespace}.signals").scan().count()
                    assert rows == 1, f"{namespace}: {rows} rows landed, expected 1"
                samples.setdefault((key, label), []).append((wall, cpu))
                print(f"round {r} {key:<6} {label:<5} {wall:6.2f} s wall {cpu:6.2f} CPU s")

    print(f"\nmedians of {args.rounds} rounds, load average {os.getloadavg()[0]:.1f} now")
    print(f"{'measure':<28} {'code':<6} {'wall s':>7} {'CPU s':>7}")
    results = []
    for key in args.only:
        name, _ = measures[key]
        medians = {}
        for label, code in codes:
            walls, cpus = zip(*samples[(key, label)], strict=True)
            medians[label] = (statistics.median(walls), statistics.median(cpus))
            print(f"{name:<28} {label:<6} {medians[label][0]:>7.2f} {medians[label][1]:>7.2f}")
            results.append(
                {
                    "measure": name,
                    "code": str(code),
                    "wall_s": medians[label][0],
                    "cpu_s": medians[label][1],
                    "samples": samples[(key, label)],
                }
            )
        if "other" in medians:
            (wall, cpu), (other_wall, other_cpu) = medians["this"], medians["other"]
            print(f"{'':<28} {'ratio':<6} {wall / other_wall:>7.2f} {cpu / other_cpu:>7.2f}")
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    summary = {"rounds": args.rounds, "load": os.getloadavg()[0], "results": results}
    (out / "startup.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
