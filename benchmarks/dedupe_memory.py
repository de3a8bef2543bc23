"""Dedupe memory benchmark: the state's size stays flat once event time passes one TTL.

    .venv/bin/python benchmarks/dedupe_memory.py                  # 1M signals, TTL 1 h
    .venv/bin/python benchmarks/dedupe_memory.py --signals 200000 --plot /tmp/dedupe.png

Feeds N signals of 10 tenants through :class:`operators.dedupe.TenantDedupe` (the pure state,
no Bytewax) with event time advancing at ``--rate`` signals per second overall (100/s: 1M
signals span 10,000 s, 2.8 h), each ``ts`` up to ``--jitter`` seconds out of order, and about
``--duplicates`` of them exact re-sends of a recent signal (inside the TTL). The input is
generated from a seed in chunks, outside the timed region.

Two passes over the same input:

1. Timing and RSS (no tracing): microseconds per ``check`` (the check call only), and every
   ``--every`` seconds of event time a row with the keys held and the process RSS.
2. ``tracemalloc`` (skip with ``--no-tracemalloc``): the bytes the states hold at each row
   (current traced bytes minus those before the first signal, with no input chunk alive).

Prints the table and, per column, the ratio of its maximum after the first TTL to its value at
the first TTL: about 1.0 means memory is flat. The key count is flat from the first TTL on; the
bytes take one step up shortly after it and are flat from then: the key index (a dict) is
rebuilt at three times its live keys once deletions have used up its entry table, which moves
it into the next power-of-two size class once. ``--plot PATH`` saves a PNG (matplotlib, Agg).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import json
import random
import resource
import sys
import time
import tracemalloc
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.records import Decoded, Provenance, Signal  # noqa: E402
from operators.dedupe import TenantDedupe, Verdict  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=UTC)
SOURCES = ("sensor-a", "sensor-b", "feed-c")
CHUNK = 10_000


@dataclasses.dataclass(frozen=True)
class Spec:
    signals: int
    tenants: int
    rate: float
    jitter: float
    duplicates: float
    seed: int


@dataclasses.dataclass
class Row:
    elapsed_s: float
    signals: int
    keys: int
    rss_bytes: int
    traced_bytes: int | None = None


def rss_bytes() -> int:
    """Resident set size now (Linux ``/proc``), else the peak from ``getrusage``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Workload:
    """The input, generated on demand; the same for the same ``spec``."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.tenants = [f"tenant-{t:02d}" for t in range(spec.tenants)]
        #: Recent signals of each tenant, ``(ts in microseconds, signal_id, source)``.
        self.recent: list[deque[tuple[int, str, str]]] = [deque(maxlen=256) for _ in self.tenants]

    def records(self, begin: int, end: int) -> list[Decoded]:
        """Signals ``begin`` to ``end`` (call with consecutive ranges)."""
        spec, rng = self.spec, self.rng
        jitter_us = int(spec.jitter * 1_000_000)
        out = []
        for i in range(begin, end):
            t = i % spec.tenants
            ring = self.recent[t]
            if ring and rng.random() < spec.duplicates:
                micros, sid, source = ring[rng.randrange(len(ring))]  # an exact re-send
            else:
                micros = round(i / spec.rate * 1_000_000) - rng.randrange(jitter_us + 1)
                sid, source = f"{self.tenants[t]}-sig-{i:07d}", SOURCES[i % len(SOURCES)]
                ring.append((micros, sid, source))
            ts = START + timedelta(microseconds=micros)
            signal = Signal(self.tenants[t], sid, "latency", 0.5, None, source, ts)
            out.append(Decoded(signal, Provenance("bench", 0, i, 1, "")))
        return out


def run(
    spec: Spec, ttl: float, every: float, traced: bool
) -> tuple[list[Row], float, dict[str, int]]:
    """One pass: rows, seconds spent in ``check``, verdict counts."""
    gc.collect()
    if traced:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0] if traced else 0
    states = {f"tenant-{t:02d}": TenantDedupe(ttl) for t in range(spec.tenants)}
    per_row = round(every * spec.rate)
    rows: list[Row] = []
    counts = dict.fromkeys((v.name for v in Verdict), 0)
    spent = 0.0
    workload = Workload(spec)
    # Chunks end at every row, so no input is alive when a row is measured.
    ends = sorted({*range(CHUNK, spec.signals, CHUNK), *range(per_row, spec.signals, per_row)})
    for begin, end in itertools.pairwise([0, *ends, spec.signals]):
        chunk = workload.records(begin, end)
        start = time.perf_counter()
        verdicts = [states[item.signal.tenant_id].check(item) for item in chunk]
        spent += time.perf_counter() - start
        for v in verdicts:
            counts[v.name] += 1
        del chunk, verdicts
        if end % per_row == 0 or end == spec.signals:
            row = Row(end / spec.rate, end, sum(map(len, states.values())), rss_bytes())
            if traced:
                row.traced_bytes = tracemalloc.get_traced_memory()[0] - base
            rows.append(row)
    if traced:
        tracemalloc.stop()
    return rows, spent, counts


def flatness(rows: list[Row], ttl: float, column: str) -> float | None:
    """Max of ``column`` after the first TTL over its value at the first TTL."""
    at = [r for r in rows if r.elapsed_s >= ttl]
    if len(at) < 2 or getattr(at[0], column) is None:
        return None
    first = getattr(at[0], column)
    return float(max(getattr(r, column) for r in at[1:]) / first)


def plot(rows: list[Row], ttl: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [r.elapsed_s / 3600 for r in rows]
    fig, left = plt.subplots(figsize=(8, 4.5))
    left.plot(hours, [r.keys / 1000 for r in rows], "o-", label="keys held (thousands)")
    left.set_xlabel("event time elapsed (h)")
    left.set_ylabel("keys held (thousands)")
    right = left.twinx()
    right.plot(hours, [r.rss_bytes / 2**20 for r in rows], "s--", color="C1", label="RSS (MiB)")
    if rows[0].traced_bytes is not None:
        traced = [(r.traced_bytes or 0) / 2**20 for r in rows]
        right.plot(hours, traced, "^--", color="C2", label="state, tracemalloc (MiB)")
    right.set_ylabel("MiB")
    left.axvline(ttl / 3600, color="grey", linestyle=":", label="one TTL")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles=handles, loc="lower right")
    left.set_title("dedupe state size over event time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=1_000_000)
    parser.add_argument("--ttl", type=float, default=3600.0, help="seconds of event time")
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--rate", type=float, default=100.0, help="signals per event-time second")
    parser.add_argument("--jitter", type=float, default=30.0, help="max seconds out of order")
    parser.add_argument("--duplicates", type=float, default=0.02, help="fraction re-sent")
    parser.add_argument("--every", type=float, default=600.0, help="seconds of event time a row")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-tracemalloc", action="store_true")
    parser.add_argument("--plot", metavar="PATH", help="save a PNG of the table")
    parser.add_argument("--json", metavar="PATH", help="save the rows as JSON")
    args = parser.parse_args()
    spec = Spec(args.signals, args.tenants, args.rate, args.jitter, args.duplicates, args.seed)

    print(
        f"{spec.signals:,} signals, {spec.tenants} tenants, {spec.rate:g}/s of event time "
        f"({spec.signals / spec.rate / 3600:.2f} h), TTL {args.ttl:g} s"
    )
    rows, spent, counts = run(spec, args.ttl, args.every, traced=False)
    if not args.no_tracemalloc:
        traced_rows, _, _ = run(spec, args.ttl, args.every, traced=True)
        for row, traced in zip(rows, traced_rows, strict=True):
            row.traced_bytes = traced.traced_bytes
    micros = spent / spec.signals * 1e6
    print(
        f"check: {micros:.2f} µs/record ({spec.signals / spent:,.0f}/s); "
        + ", ".join(f"{k.lower()} {v:,}" for k, v in counts.items())
    )

    print(
        f"\n{'event time':>10} {'signals':>10} {'keys held':>10} {'state MiB':>10} "
        f"{'B/key':>6} {'RSS MiB':>8}"
    )
    for r in rows:
        h, m = divmod(round(r.elapsed_s / 60), 60)
        traced = "-" if r.traced_bytes is None else f"{r.traced_bytes / 2**20:.1f}"
        per_key = "-" if r.traced_bytes is None or not r.keys else f"{r.traced_bytes / r.keys:.0f}"
        print(
            f"{h:>7d}:{m:02d} {r.signals:>10,} {r.keys:>10,} {traced:>10} {per_key:>6} "
            f"{r.rss_bytes / 2**20:>8.1f}"
        )
    print("\nmax after the first TTL / value at the first TTL (1.0 = flat):")
    for column, label in (
        ("keys", "keys held"),
        ("traced_bytes", "state bytes"),
        ("rss_bytes", "RSS"),
    ):
        ratio = flatness(rows, args.ttl, column)
        if ratio is not None:
            print(f"  {label:<12} {ratio:.3f}")
    if args.plot:
        plot(rows, args.ttl, args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        out = {
            "spec": dataclasses.asdict(spec),
            "ttl": args.ttl,
            "us_per_check": micros,
            "counts": counts,
            "rows": [dataclasses.asdict(r) for r in rows],
        }
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
