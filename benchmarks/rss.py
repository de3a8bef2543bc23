"""Resident memory of ``igflow run`` over a long run whose state is bounded: does it grow with the
records it has read? (Issue 15's RSS row; sessions 25 and 26 in docs/performance.md.)

    .venv/bin/python benchmarks/rss.py                        # every store, 428,000 signals
    .venv/bin/python benchmarks/rss.py --sinks ""             # the lake only
    .venv/bin/python benchmarks/rss.py --against /tmp/base --rounds 2

N signals (10 demo tenants, 5% duplicates, 2% invalid, a tenant's signals ``--step-ms`` apart
in event time) are produced once to a fresh topic. Then ``igflow run`` reads them in a child
process (one worker) with the dedupe TTL and the score window at ``--state-seconds`` of event
time, so that what the steps hold stops growing once that much event time has passed (60 s at
10 ms: 6,000 signals a tenant), into a fresh lake namespace and scratch stores (dropped at the
end). The child's VmRSS is sampled every 0.1 s and the lake's landed signals every second.

Printed per run: the RSS when each fifth of the landed signals had landed, the peak, and the
**growth**: the median RSS while the last fifth landed minus the median while the second fifth
landed, over the signals landed between them, in bytes a signal. Memory that the run's state
bounds gives ~0 (allocator noise: tens of bytes either way); session 25 measured ~1,100 bytes a
signal with every store, before session 26's fix. The landed count is read once a second, so a
run of a few seconds has fifths without a reading (``-``, and no growth). ``--against PATH``
runs the checkout at ``PATH`` (``git archive <rev> | tar -x -C PATH``, its C extensions copied
or built) on the same topic, alternately, ``--rounds`` times each. Writes
``benchmarks/results/rss.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_topics import demo_workload, fresh_topics  # noqa: E402
from benchmarks.serving_flow import (  # noqa: E402
    _drop_or_warn,
    _env,
    _landed,
    _rss_mib,
    _scratch_stores,
)
from core.catalog import catalog  # noqa: E402
from core.settings import Settings  # noqa: E402
from igflow.producer import produce  # noqa: E402

FIFTHS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signals", type=int, default=428_000)
    parser.add_argument(
        "--sinks", default="redis,graph,postgres", help='the serving stores ("": lake only)'
    )
    parser.add_argument("--state-seconds", type=float, default=60.0)
    parser.add_argument("--step-ms", type=float, default=10.0)
    parser.add_argument("--against", type=Path, help="another checkout, alternately")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    codes = [REPO] if args.against is None else [REPO, args.against.resolve()]

    tag, settings = fresh_topics()
    spec = demo_workload(args.signals, step=timedelta(milliseconds=args.step_ms))
    report = produce(settings, spec)
    print(f"produced {report.total:,} signals to {settings.kafka.topic} in {report.seconds:.1f} s")
    runs: list[dict[str, Any]] = []
    for n in range(args.rounds):
        for code in codes if n % 2 == 0 else codes[::-1]:
            run_tag = f"{tag}{uuid.uuid4().hex[:4]}"
            scoped = settings.with_changes("lake", namespace=f"bench_{run_tag}")
            if args.sinks:
                scoped = _scratch_stores(scoped, run_tag).with_changes("stores", sinks=args.sinks)
            else:
                scoped = scoped.with_changes("stores", sinks="")
            print(f"\n=== round {n + 1}: {code} (load average {os.getloadavg()[0]:.1f}) ===")
            try:
                row = measure(code, scoped, args.state_seconds)
            finally:
                if args.sinks:
                    _drop_or_warn(scoped)
            row.update({"code": str(code), "round": n + 1})
            runs.append(row)
            _print(row)
    if len(codes) > 1:
        print(f"\nmedians over {args.rounds} round(s):")
        for code in codes:
            mine = [r for r in runs if r["code"] == str(code)]
            print(
                f"[{code}] growth {statistics.median(r['growth_bytes'] for r in mine):,.0f} bytes"
                f" a signal, peak {statistics.median(r['peak_mib'] for r in mine):,.0f} MiB"
            )
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "signals": report.total,
        "sinks": args.sinks,
        "state_seconds": args.state_seconds,
        "step_ms": args.step_ms,
        "runs": runs,
    }
    (out / "rss.json").write_text(json.dumps(summary, indent=2))


def measure(code: Path, settings: Settings, state_seconds: float) -> dict[str, Any]:
    """One ``igflow run`` of the checkout ``code`` over ``settings``' topic: its RSS against the
    signals landed (see the module)."""
    env = _env(settings)
    env["PYTHONPATH"] = str(code)
    env["IGFLOW_DEDUPE_TTL_SECONDS"] = f"{state_seconds:g}"
    env["IGFLOW_SCORE_WINDOW_SECONDS"] = f"{state_seconds:g}"
    samples: list[tuple[float, float]] = []  # (seconds, MiB)
    landed: list[tuple[float, int]] = []  # (seconds, signals)
    lake = catalog(settings)  # polled every second: opened once, outside the measured child
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "igflow.cli", "run"],
            cwd=code,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,  # a file: a pipe read only at the end would fill up and block the run
            start_new_session=True,
        )
        started = time.monotonic()
        next_count = started + 1.0
        try:
            while proc.poll() is None:
                now = time.monotonic()
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    samples.append((now - started, _rss_mib(proc.pid)))
                if now >= next_count:
                    landed.append((now - started, _landed(settings, lake)))
                    next_count = now + 1.0
                    _progress(samples[-1][1] if samples else 0.0, landed[-1][1], now - started)
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        seconds = time.monotonic() - started
        log.seek(0)
        err = log.read().decode(errors="replace")
    print(file=sys.stderr)
    if proc.returncode != 0:
        msg = f"{code}: igflow run failed ({proc.returncode}):\n{err[-3000:]}"
        raise RuntimeError(msg)
    total = _landed(settings, lake)
    return {"seconds": seconds, "landed": total, **growth(samples, landed, total)}


def growth(
    samples: list[tuple[float, float]], landed: list[tuple[float, int]], total: int
) -> dict[str, Any]:
    """RSS at each fifth of ``total`` landed, the peak and the growth a signal (the module's
    definition) from RSS ``samples`` and ``landed`` counts, both as (seconds, value)."""
    if total <= 0 or not samples or not landed:
        msg = "nothing landed: no growth to measure"
        raise RuntimeError(msg)

    def landed_at(t: float) -> int:
        held = 0
        for when, count in landed:
            if when > t:
                break
            held = count
        return held

    by_fifth: list[list[float]] = [[] for _ in range(FIFTHS)]
    for t, mib in samples:
        fifth = min(FIFTHS - 1, landed_at(t) * FIFTHS // total)
        by_fifth[fifth].append(mib)
    at_fifths = [max(values) if values else None for values in by_fifth]
    second, last = by_fifth[1], by_fifth[-1]
    growth_bytes = None
    if second and last:
        span = total * (FIFTHS - 2) / FIFTHS  # from the second fifth's middle to the last's
        growth_bytes = (statistics.median(last) - statistics.median(second)) * 2**20 / span
    return {
        "peak_mib": max(mib for _t, mib in samples),
        "rss_by_fifth_mib": at_fifths,
        "growth_bytes": growth_bytes,
    }


def _progress(mib: float, landed: int, seconds: float) -> None:
    print(f"\r  {seconds:6.0f} s  {landed:>9,} landed  RSS {mib:6.0f} MiB", end="", file=sys.stderr)


def _print(row: dict[str, Any]) -> None:
    fifths = " / ".join("-" if v is None else f"{v:.0f}" for v in row["rss_by_fifth_mib"])
    grown = row["growth_bytes"]
    print(
        f"[{row['code']}] {row['landed']:,} landed in {row['seconds']:.1f} s; RSS (MiB, the"
        f" highest in each fifth of the landed) {fifths}; peak {row['peak_mib']:.0f} MiB;"
        f" growth {'-' if grown is None else f'{grown:,.0f}'} bytes a signal"
    )


if __name__ == "__main__":
    main()
