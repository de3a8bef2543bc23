"""How long a score change waits in the score step after its signal leaves the drift step, in
event time: ``score.close_on = "signal"`` against ``"horizon"`` (issue 15, point 3).

    .venv/bin/python benchmarks/score_horizon.py --rate 5000 --seconds 40

No engine and no stack: the drift step (:class:`operators.drift.TenantDrift`) and the score step
(:class:`operators.score.TickScore`) per tenant, in process, fed what ``benchmarks/latency.py``
produces (10 tenants round robin, the workload's four types in turn, event time = the planned
send time ``n / rate``), every setting at its default. Both steps decide by event time only,
so this is the wait ``latency.py`` reports as ``(score publish)`` after the drift decision when
the flow keeps up (its event time is its send time), without the machine's load in it.

For each signal that changed its tenant's score: the event time of the drift push that let it
out, and of the push whose release published its tick's change (the tick's last change carries
it); the wait is the difference. A signal whose tick is published at the end of input (the
bounded run's flush) is left out. Deterministic: the same arguments print the same figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.records import Decoded, PolicyTags, Provenance, Quarantined, Signal, Tagged
from core.settings import Settings
from operators.drift import TenantDrift
from operators.score import TickScore

_TYPES = ("latency", "consistency", "freshness", "completeness")
_TAGS = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")
_START = datetime(2026, 1, 1, tzinfo=UTC)


def _inputs(rate: float, seconds: float, tenants: int, seed: int) -> list[Decoded]:
    rng = random.Random(seed)
    out = []
    for n in range(int(rate * seconds)):
        t, i = n % tenants, n // tenants
        tenant = f"tenant-{t:02d}"
        value = min(1.0, max(0.0, rng.betavariate(8, 2)))
        weight = None if rng.random() < 0.1 else round(rng.uniform(0.5, 2.0), 3)
        ts = _START + timedelta(seconds=n / rate)
        signal = Signal(tenant, f"s{i}", _TYPES[i % len(_TYPES)], value, weight, "a", ts)
        out.append(Decoded(signal, Provenance("bench", t, i, 1, "h")))
    return out


def waits(items: list[Decoded], close_on: str) -> tuple[list[float], int, int]:
    """The waits (s) of every signal whose change was published before the end of input; the
    changes published; the signals that changed a score."""
    settings = Settings()
    score_settings = dataclasses.replace(settings.score, close_on=close_on)
    drift: dict[str, TenantDrift] = {}
    score: dict[str, TickScore] = {}
    #: Per tenant, the release times (s) of the signals whose change is not published yet.
    held: dict[str, list[float]] = {}
    out: list[float] = []
    published = changed = 0
    for item in items:
        tenant = item.signal.tenant_id
        d = drift.get(tenant) or drift.setdefault(
            tenant, TenantDrift(tenant, settings.drift, None, "")
        )
        s = score.get(tenant) or score.setdefault(tenant, TickScore(score_settings))
        now = (item.signal.ts - _START).total_seconds()
        mine = held.setdefault(tenant, [])
        for released in d.push(item):
            if isinstance(released, Quarantined):
                continue
            before = s.reference._seq
            changes = s.add([Tagged(released, _TAGS, "p", "x")])
            made = s.reference._seq != before
            changed += made
            if changes:
                published += len(changes)
                # Its own change is still pending when it opened the next tick.
                keep = made and s._pending is not None
                done = mine if not keep else mine[:]
                out.extend(now - r for r in done)
                mine.clear()
                if keep:
                    mine.append(now)
            elif made:
                mine.append(now)
    return out, published, changed


def _q(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="events/s of event time")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    items = _inputs(args.rate, args.seconds, args.tenants, args.seed)
    tick = Settings().score.tick_seconds
    print(
        f"{len(items):,} signals, {args.tenants} tenants, {args.rate:g} events/s of event time,"
        f" tick {tick:g} s, drift batch_seconds {Settings().drift.batch_seconds:g} s"
    )
    for close_on in ("signal", "horizon"):
        start = time.process_time()
        w, published, changed = waits(items, close_on)
        cpu = time.process_time() - start
        print(
            f"close_on={close_on:8s} published {published:,} changes of {changed:,};"
            f" wait after the drift release p50 {_q(w, 50):.3f} s, p95 {_q(w, 95):.3f} s,"
            f" p99 {_q(w, 99):.3f} s, max {max(w, default=0):.3f} s;"
            f" {sum(x > 0.05 for x in w) / max(1, len(w)):.1%} wait > 50 ms ({cpu:.1f} CPU s)"
        )


if __name__ == "__main__":
    main()
