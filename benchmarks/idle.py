"""Idle benchmark: what a tailing cluster burns when no record comes.

    .venv/bin/python benchmarks/idle.py --seconds 180 --against /tmp/base-idle

Produces 40 signals (4 tenants) to a fresh topic, then starts ``igflow run --tail`` as a cluster
of ``--processes`` processes (lake only) over it, lets it land them and idle, and prints each
process's CPU seconds every ``--every`` seconds (from ``/proc/PID/stat``), with the CPU %
of the last interval. ``--against DIR`` runs the same from the checkout in DIR afterwards
(``git archive <commit> | tar -x -C DIR``), on the same topic, into its own namespace: a
cluster's idle cost is not a matter of a few percent, so one run each is enough to see it.
Stops the processes with SIGTERM at the end; a process that exits before stops the benchmark
with the end of its stderr (its CPU seconds would read as idle). Namespaces ``bench_<tag>_this``
and ``_other`` (``make bench-clean``). Needs the stack (``python -m dev start``,
``igflow setup``).

Found with it (sources/epoch_phase.py, DEVELOPERS.md "Epochs"): two processes polling every
50 ms drifted apart until one spun at 45-60% of a core.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_topics import fresh_topics  # noqa: E402
from benchmarks.checkouts import stack_env  # noqa: E402
from igflow.producer import produce  # noqa: E402
from igflow.workload import WorkloadSpec  # noqa: E402

_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _cluster(
    code: Path, env: dict[str, str], args: argparse.Namespace, label: str, namespace: str
) -> None:
    addresses = ";".join(f"127.0.0.1:{p}" for p in _free_ports(args.processes))
    env = {**env, "PYTHONPATH": str(code), "IGFLOW_LAKE_NAMESPACE": namespace}
    command = [sys.executable, "-m", "igflow.cli", "run", "--tail", "-a", addresses]
    with contextlib.ExitStack() as files:
        logs = [files.enter_context(tempfile.TemporaryFile()) for _ in range(args.processes)]
        procs = [
            subprocess.Popen(
                [*command, "-i", str(i)],
                cwd=code,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            for i, log in enumerate(logs)
        ]
        try:
            last = [0.0] * len(procs)
            for elapsed in range(args.every, args.seconds + 1, args.every):
                time.sleep(args.every)
                _alive(procs, logs, label)  # a process that left reads as idle: never report it
                cpu = [_cpu_seconds(p.pid) for p in procs]
                shares = [100 * (c - b) / args.every for c, b in zip(cpu, last, strict=True)]
                last = cpu
                cells = "  ".join(
                    f"{c:6.1f} CPU s ({s:4.0f}%)" for c, s in zip(cpu, shares, strict=True)
                )
                print(f"{label:<6} {elapsed:4d} s  {cells}", flush=True)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=30)


def _alive(procs: list[subprocess.Popen[bytes]], logs: list[Any], label: str) -> None:
    """Raise, with the end of its stderr, if a process of the cluster has exited."""
    for i, (p, log) in enumerate(zip(procs, logs, strict=True)):
        if p.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            msg = f"{label}: process {i} exited with status {p.returncode}:\n{tail}"
            raise RuntimeError(msg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another checkout to run afterwards")
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--every", type=int, default=30)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    tag, settings = fresh_topics(name="idle")
    produce(settings, WorkloadSpec(tenants=4, count=10, seed=1))
    env = stack_env(
        IGFLOW_KAFKA_TOPIC=settings.kafka.topic,
        IGFLOW_KAFKA_DLQ_TOPIC=settings.kafka.dlq_topic,
        IGFLOW_STORES_SINKS="",
        IGFLOW_RUN_LOG_LEVEL="WARNING",
    )
    print(f"{args.processes} processes tailing {settings.kafka.topic} (40 records, then none)")
    _cluster(REPO, env, args, "this", f"bench_{tag}_this")
    if args.against:
        _cluster(args.against, env, args, "other", f"bench_{tag}_other")
    print(f"load average {os.getloadavg()[0]:.1f} now")


if __name__ == "__main__":
    main()
