"""Does a SIGSTOPped Postgres hold a lake-only flow? The flow's CPU seconds through a pause.

    .venv/bin/python benchmarks/paused_postgres.py --signals 200000 [--against DIR]

1. Produces N signals (10 tenants) to a fresh topic of the local stack.
2. ``igflow run`` (bounded, lake only) over it into a fresh namespace; ``--start`` seconds after
   launch (past start-up) the stack's Postgres (postmaster and backends) is SIGSTOPped for
   ``--pause`` seconds, then SIGCONTed. The child's CPU seconds are sampled every 0.5 s: a flat
   line during the pause means the flow is held. ``py-spy dump`` (if installed in the venv)
   is taken half-way through the pause and its threads' top frames printed: where it waits.
   ``--against DIR`` runs the checkout in DIR the same way afterwards, on the same topic.

Not a timing benchmark: it shows where a paused Postgres holds the flow (the caches' refresh,
the lake's SQL catalog), which README.md's issue 15 point 4 paragraph reports.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.checkouts import stack_env  # noqa: E402
from benchmarks.source import fresh_topic  # noqa: E402
from core.settings import Settings  # noqa: E402
from dev import stack as dev_stack  # noqa: E402
from dev.config import StackConfig  # noqa: E402

PY_SPY = REPO / ".venv" / "bin" / "py-spy"


def _children(pid: int) -> set[int]:
    out = {pid}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out |= _children(int(entry))
    return out


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _top_frames(dump: str) -> list[str]:
    """Each thread (thread pools aside): its innermost frame, and the first of ours or of the
    Iceberg catalog below it."""
    out: list[str] = []
    lines = dump.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("Thread ") or "ThreadPoolExecutor" in line:
            continue
        frames = []
        for frame in lines[i + 1 :]:
            if not frame.startswith("    "):
                break
            frames.append(frame.strip())
        marks = ("sinks/", "tenancy/", "flows/", "pyiceberg/catalog/")
        pick = frames[:1] + [f for f in frames[1:] if any(m in f for m in marks)][:1]
        out.append(f"{line.strip()}: {' <- '.join(pick)}")
    return out


def run(settings: Settings, code: Path, start: float, pause: float, pg_pid: int) -> None:
    env = stack_env()
    env.update(
        {
            "PYTHONPATH": str(code),
            "IGFLOW_KAFKA_TOPIC": settings.kafka.topic,
            "IGFLOW_KAFKA_DLQ_TOPIC": settings.kafka.dlq_topic,
            "IGFLOW_LAKE_NAMESPACE": f"bench_pause_{uuid.uuid4().hex[:8]}",
            "IGFLOW_RUN_LOG_LEVEL": "WARNING",
            "IGFLOW_STORES_SINKS": "",
        }
    )
    proc = subprocess.Popen([sys.executable, "-m", "igflow.cli", "run"], cwd=code, env=env)
    t0 = time.monotonic()
    stopped: set[int] = set()
    state = "before"
    samples: list[tuple[float, float]] = []
    dump = ""
    try:
        while proc.poll() is None:
            t = time.monotonic() - t0
            if state == "before" and t >= start:
                for _ in range(2):  # twice: catch a backend forked in between
                    for p in sorted(_children(pg_pid) - stopped):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(p, signal.SIGSTOP)
                            stopped.add(p)
                state = "paused"
            elif state == "paused" and not dump and t >= start + pause / 2 and PY_SPY.exists():
                done = subprocess.run(
                    [str(PY_SPY), "dump", "--pid", str(proc.pid)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                dump = done.stdout or done.stderr
            elif state == "paused" and t >= start + pause:
                for p in sorted(stopped):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGCONT)
                stopped.clear()
                state = "after"
            with contextlib.suppress(OSError):
                samples.append((t, _cpu_s(proc.pid)))
            time.sleep(0.5)
    finally:
        for p in sorted(stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)
    rc = proc.wait()

    def cpu_at(when: float) -> float:
        return max((c for t, c in samples if t <= when), default=0.0)

    during = cpu_at(start + pause) - cpu_at(start + 1.0)
    print(
        f"{code}: rc {rc}, wall {time.monotonic() - t0:.1f} s, CPU {cpu_at(start):.2f} s "
        f"before the pause, {during:.2f} s from 1 s into it to its end ({pause - 1:.0f} s), "
        f"{samples[-1][1] - cpu_at(start + pause):.2f} s after; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    for line in _top_frames(dump):
        print("   ", line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=200_000)
    parser.add_argument("--start", type=float, default=14.0, help="seconds after launch")
    parser.add_argument("--pause", type=float, default=12.0)
    parser.add_argument("--against", type=Path, help="another checkout, run afterwards")
    args = parser.parse_args()
    settings, _total = fresh_topic(args.signals)
    cfg = StackConfig.from_env(os.environ)
    pg_pid = dev_stack.our_pid(cfg, dev_stack.select(["postgres"], cfg)[0])
    if pg_pid is None:
        sys.exit("postgres is not running (python -m dev start)")
    for code in [REPO] + ([args.against] if args.against else []):
        run(settings, code, args.start, args.pause, pg_pid)


if __name__ == "__main__":
    main()
