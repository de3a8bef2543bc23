"""CPU seconds of a local stack server's threads while a command runs, grouped by thread name.

    .venv/bin/python benchmarks/server_threads.py -- .venv/bin/python benchmarks/sink_graph.py \\
        --rows 20000 --batch-sizes 1000 1000

Reads ``/proc/<pid>/task/*/stat`` of the stack's server (``--service``, Neo4j by default)
before and after the command and prints each thread group's CPU seconds and share, the digits
of a thread's name replaced by ``#``: for Neo4j's JVM, ``neo4j.BoltWorke`` (Cypher and the
store), ``GC Thread##`` and ``G# Conc##`` (G1's young collections and concurrent marking),
``C# CompilerThre`` (the JIT), ``neo4j.BoltNetwo`` (netty, TLS). The kernel cuts thread names
at 15 characters. Threads that ended during the command are not counted.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dev import stack as dev_stack  # noqa: E402
from dev.config import StackConfig  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> dict[str, tuple[str, float]]:
    """Each live thread of ``pid``: its id -> (name, CPU seconds so far)."""
    out: dict[str, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[task.name] = (name, (int(fields[11]) + int(fields[12])) / _TICK)
    return out


def grouped(
    before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds between the two snapshots by thread name, digits replaced by ``#``."""
    groups: dict[str, float] = {}
    for tid, (name, cpu) in after.items():
        group = re.sub(r"\d+", "#", name)
        groups[group] = groups.get(group, 0.0) + cpu - before.get(tid, (name, 0.0))[1]
    return groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", default="neo4j", help="the stack's service (neo4j)")
    parser.add_argument("--top", type=int, default=12, help="groups printed")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    cfg = StackConfig.from_env(os.environ)
    pid = dev_stack.our_pid(cfg, dev_stack.select([args.service], cfg)[0])
    if pid is None:
        print(f"{args.service} of this stack is not running", file=sys.stderr)
        return 2
    before = threads(pid)
    code = subprocess.run(command, check=False).returncode
    groups = grouped(before, threads(pid))
    total = sum(groups.values())
    print(f"\n{args.service} (pid {pid}) threads' CPU during the command: {total:.2f} s")
    for group, cpu in sorted(groups.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {group:<18} {cpu:8.2f} s {100 * cpu / total if total else 0.0:5.1f}%")
    return code


if __name__ == "__main__":
    sys.exit(main())
