"""Scheduled compaction benchmark: a steady flow with ``igflow compact --every`` beside it,
against the same flow without, in one run.

    .venv/bin/python benchmarks/maintenance.py --rate 1000 --seconds 300 --every 30

1. A fresh topic; two ``igflow run --tail`` (the lake only, the default 0.5 s commit grid) read
   it, each into a namespace of its own; ``igflow compact --every`` (by size tier, its defaults)
   runs beside the first.
2. An open-loop producer in its own process (``benchmarks/latency.py``'s) sends ``--rate``
   events/s for ``--seconds`` (10 tenants).
3. After ``--cooldown`` seconds the flows get SIGINT and the compactor SIGTERM; each process's
   CPU seconds (user + system) are its own, from ``wait4``.
4. Each namespace's ``signals`` table: its live data files, its bytes, a full scan and a scan of
   one tenant (``tenant-03``; median of ``--reads``); the bytes the compactions read, over what
   the flow wrote (the other table's bytes: the same rows, never rewritten); the digests of both
   compared (the rows are the same).

Prints a table; writes ``benchmarks/results/maintenance.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_topics import fresh_topics  # noqa: E402
from benchmarks.compaction import _reads  # noqa: E402
from benchmarks.replay import _env as lake_only_env  # noqa: E402
from core.catalog import catalog  # noqa: E402
from replay.verify import compare, digest_table  # noqa: E402


def _start(argv: list[str], env: dict[str, str], out: Any, err: Any) -> subprocess.Popen[bytes]:
    """Start ``igflow ARGV``; ``err`` (a file) keeps its standard error, read if it fails."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "igflow.cli", *argv],
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=err,
        start_new_session=True,
    )
    _STARTED[proc.pid] = (proc, err)
    return proc


#: Every process started, with its standard error (a temporary file), by pid: read when it
#: fails, and none outlives the run when a step fails.
_STARTED: dict[int, tuple[subprocess.Popen[bytes], Any]] = {}


def _kill_left() -> None:
    """SIGKILL the process group of each started process still running, and reap it (a failed
    run once left two flows and two compactors running for two hours)."""
    for proc, _err in _STARTED.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _stop(proc: subprocess.Popen[bytes], sig: int) -> float:
    """Signal ``proc``, reap it: its CPU seconds (user + system)."""
    proc.send_signal(sig)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode not in (0, 128 + sig, -sig):
                _proc, err = _STARTED[proc.pid]
                err.seek(0)
                msg = f"{proc.args} exited {proc.returncode}:\n{err.read().decode()[-3000:]}"
                raise RuntimeError(msg)
            return usage.ru_utime + usage.ru_stime
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    _pid, _status, usage = os.wait4(proc.pid, 0)
    msg = f"{proc.args} did not stop within 60 s of its signal"
    raise RuntimeError(msg)


def _bytes(table: Any) -> int:
    snapshot = table.current_snapshot()
    return int(snapshot.summary.additional_properties.get("total-files-size", 0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s, open loop")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--every", type=float, default=30.0, help="the compactor's round")
    parser.add_argument("--cooldown", type=float, default=10.0)
    parser.add_argument("--reads", type=int, default=5)
    args = parser.parse_args()
    tag, settings = fresh_topics()
    sides = {"compacted on a schedule": f"bench_{tag}_a", "as landed": f"bench_{tag}_b"}
    (kept, plain) = sides.values()
    print(f"namespaces {kept} (with igflow compact --every {args.every:g}) and {plain}")
    with contextlib.ExitStack() as files:
        files.callback(_kill_left)
        compactor_out = files.enter_context(tempfile.TemporaryFile())
        flows = {}
        for namespace in sides.values():
            env = lake_only_env(settings, namespace)
            env["IGFLOW_RUN_LOG_LEVEL"] = "ERROR"
            err = files.enter_context(tempfile.TemporaryFile())
            flows[namespace] = _start(["run", "--tail"], env, subprocess.DEVNULL, err)
        time.sleep(8)  # the flows connect and create their tables before the clock starts
        compactor = _start(
            ["compact", "--every", str(args.every)],
            lake_only_env(settings, kept),
            compactor_out,
            files.enter_context(tempfile.TemporaryFile()),
        )
        producer = subprocess.run(
            [
                sys.executable,
                str(REPO / "benchmarks" / "latency.py"),
                "--produce-child",
                json.dumps({"topic": settings.kafka.topic}),
                "--rate",
                str(args.rate),
                "--seconds",
                str(args.seconds),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        sent = json.loads(producer.stdout.strip().splitlines()[-1])
        time.sleep(args.cooldown)
        cpu = {ns: _stop(proc, signal.SIGINT) for ns, proc in flows.items()}
        compactor_cpu = _stop(compactor, signal.SIGTERM)
        compactor_out.seek(0)
        lines = [json.loads(x) for x in compactor_out.read().decode().splitlines() if x]
    commits = [x for x in lines if "commit" in x and x["table"].endswith(".signals")]
    rounds = [x for x in lines if "seconds" in x]
    cat = catalog(settings)
    tables = {ns: cat.load_table((ns, "signals")) for ns in sides.values()}
    written = _bytes(tables[plain])
    read = sum(int(c["bytes_before"]) for c in commits)
    rows = []
    for label, namespace in sides.items():
        table = tables[namespace]
        rows.append(
            {
                "side": label,
                "flow_cpu_s": cpu[namespace],
                "bytes": _bytes(table),
                **_reads(table, args.reads),
            }
        )
    identical = compare(*(digest_table(t, "signals") for t in tables.values())).identical
    print(
        f"\nsent {sent['sent']:,} records in {sent['seconds']:.0f} s"
        f" ({sent['sent'] / sent['seconds']:,.0f}/s); the compactor: {len(rounds)} rounds,"
        f" {len(commits)} commits on signals, {compactor_cpu:.2f} CPU s; it read"
        f" {read / 1e6:.1f} MB for the {written / 1e6:.1f} MB the flow wrote"
        f" ({read / max(written, 1):.2f}x)"
    )
    print(
        f"\n{'signals table':<26} {'files':>6} {'MB':>7} {'flow cpu s':>10} {'full scan s':>11}"
        f" {'one tenant s':>12} {'its rows':>9}"
    )
    for r in rows:
        print(
            f"{r['side']:<26} {r['files']:>6} {r['bytes'] / 1e6:>7.2f} {r['flow_cpu_s']:>10.1f}"
            f" {r['full_scan_s']:>11.3f} {r['tenant_scan_s']:>12.3f} {r['tenant_rows']:>9,}"
        )
    print(f"digests of the two namespaces: {'identical' if identical else 'DIFFER'}")
    print(f"(kept: {kept}, {plain}, topic {settings.kafka.topic}; make bench-clean drops them)")
    out = REPO / "benchmarks" / "results" / "maintenance.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "rate": args.rate,
        "seconds": args.seconds,
        "every": args.every,
        "sent": sent,
        "compactor": {"rounds": len(rounds), "commits": len(commits), "cpu_s": compactor_cpu},
        "bytes_read_by_compaction": read,
        "bytes_written_by_flow": written,
        "rows": rows,
        "identical": identical,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
