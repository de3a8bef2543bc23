"""The psi step with a slow partner: signals and rows, the step beside a synchronous baseline.

    .venv/bin/python benchmarks/psi_step.py                  # 20 tenants, 20 windows, 20 ms
    .venv/bin/python benchmarks/psi_step.py --partner-ms 100 --tenants 10

One Bytewax worker runs the flow ``source → key by tenant → psi → sinks`` over the same workload
twice, in one process: once with :func:`operators.psi.psi_step` (the partner asked off the
worker's thread, ``max_in_flight`` windows at once) and once with a *synchronous* baseline, the
step as it was before: the same :class:`TenantDeconfliction` and :class:`Deconflicter`, the
partner asked on the worker's thread when a window closes. The partner is a real in-process
:class:`psi.PsiServer` (OPRF, policy, rate limits) behind a wire that adds ``--partner-ms`` of
latency per request, as a partner across a network would.

Reported per variant: the seconds until the last signal passed the step (what every later
step and store waits on), the seconds until the last row, the rows, and the p50/p99 of how long
a signal waited in the step. Both variants must produce the same rows. Writes
``benchmarks/results/psi_step.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import bytewax.operators as op  # noqa: E402
from bytewax.dataflow import Dataflow  # noqa: E402
from bytewax.operators import StatefulLogic  # noqa: E402
from bytewax.testing import TestingSink, TestingSource, run_main  # noqa: E402

from core.records import Decoded, PolicyTags, Provenance, Signal, Tagged, input_hash  # noqa: E402
from core.settings import PsiSettings  # noqa: E402
from operators.batching import flatten, runs_on  # noqa: E402
from operators.psi import (  # noqa: E402
    Deconflicter,
    DeconflictionResult,
    TenantDeconfliction,
    psi_step,
)
from psi import (  # noqa: E402
    Agreement,
    Caller,
    ClientConfig,
    GroupBatch,
    PolicyConfig,
    PsiClient,
    PsiPolicy,
    PsiServer,
    SelectorSet,
    ServerConfig,
)
from psi.messages import PsiMode  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)
W = 300.0
TAGS = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")
POLICY = PolicyConfig(
    agreements=(
        Agreement("agency-a", min_batch=2, max_requests=1_000_000),
        Agreement("server", min_batch=2, max_requests=1_000_000),
    ),
    min_batch=0,
)


def workload(tenants: int, windows: int, per_window: int) -> list[Tagged]:
    """Each tenant's signals in event-time order, tenants interleaved; two selectors each."""
    out: list[Tagged] = []
    for w in range(windows):
        for i in range(per_window):
            for t in range(tenants):
                offset = len(out)
                payload = f"{t}|{offset}".encode()
                ts = T0 + timedelta(seconds=w * W + i)
                selectors = (f"sel-{offset % 97:03d}", f"sel-{(offset + 1) % 97:03d}")
                signal = Signal(
                    f"tenant-{t:02d}", f"sig-{offset}", "latency", 0.5, None, "s", ts, selectors
                )
                provenance = Provenance("bench", 0, offset, 2, input_hash(payload))
                out.append(
                    Tagged(
                        Decoded(signal, provenance), TAGS, "p1", hashlib.sha256(payload).hexdigest()
                    ),
                )
    return out


def matcher_factory(partner_ms: float) -> Callable[[], Callable[..., Any]]:
    """A fresh client per caller of an in-process partner that answers after ``partner_ms``."""
    policy = PsiPolicy.load(POLICY)
    batch = GroupBatch(1)
    server = PsiServer(
        SelectorSet.of([f"sel-{i:03d}" for i in range(0, 97, 2)]),
        policy,
        ServerConfig(epoch_seconds=3600),
        batch=batch,
        master_seed=bytes(range(32)),
    )
    agency = Caller("agency-a", "US")

    def wire(body: bytes) -> bytes:
        time.sleep(partner_ms / 1000)
        return server.handle(body, agency)

    def factory() -> Callable[..., Any]:
        return PsiClient(wire, policy, ClientConfig("server", "US"), batch=batch).intersect

    return factory


class _Synchronous(StatefulLogic[Tagged, Any, TenantDeconfliction]):
    """The baseline: the partner asked on the worker's thread when a window closes."""

    def __init__(self, ask: Callable[[Any], DeconflictionResult]) -> None:
        self.state = TenantDeconfliction(W)
        self.ask = ask

    def on_item(self, value: Tagged) -> tuple[Iterable[Any], bool]:
        closed = self.state.push(value)
        return ((self.ask(closed), value) if closed else (value,)), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        closed = self.state.flush()
        return ((self.ask(closed),) if closed else ()), StatefulLogic.RETAIN

    def snapshot(self) -> TenantDeconfliction:
        return self.state


def run(variant: str, items: list[Tagged], partner_ms: float, in_flight: int) -> dict[str, Any]:
    factory = matcher_factory(partner_ms)
    flow = Dataflow(f"psi_{variant}")
    sent: dict[int, float] = {}

    def stamp(item: Tagged) -> Tagged:
        sent[item.provenance.kafka_offset] = time.perf_counter()
        return item

    up = op.map("stamp", op.input("in", flow, TestingSource(items, batch_size=64)), stamp)
    keyed = op.key_on("by_tenant", up, lambda t: t.signal.tenant_id)
    rows: list[DeconflictionResult] = []
    waited: list[float] = []
    last: dict[str, float] = {}

    def passed(item: Tagged) -> None:
        now = last["signal"] = time.perf_counter()
        waited.append(now - sent[item.provenance.kafka_offset])

    def landed(row: DeconflictionResult) -> None:
        last["row"] = time.perf_counter()
        rows.append(row)

    if variant == "async":
        settings = PsiSettings(
            server_url="http://partner.invalid:1", idle_flush_seconds=0.0, max_in_flight=in_flight
        )
        runs = runs_on("by_tenant_runs", up, lambda t: t.signal.tenant_id)
        out = psi_step("psi", runs, settings, factory)
        signals, results = flatten("values", out.passed), out.results
    else:
        deconflicter = Deconflicter(factory(), PsiMode.FULL_INTERSECTION, "server")
        both = op.stateful("psi", keyed, lambda _resume: _Synchronous(deconflicter))
        values = op.key_rm("values", both)
        results = op.filter("row_items", values, lambda x: isinstance(x, DeconflictionResult))
        signals = op.filter("signal_items", values, lambda x: isinstance(x, Tagged))
    op.output("signals", op.map("passed", signals, passed), TestingSink([]))
    op.output("rows", op.map("landed", results, landed), TestingSink([]))
    started = time.perf_counter()
    run_main(flow)
    waited.sort()
    return {
        "variant": variant,
        "signals": len(waited),
        "rows": len(rows),
        "last_signal_s": round(last["signal"] - started, 3),
        "last_row_s": round(last["row"] - started, 3),
        "signal_wait_p50_ms": round(statistics.median(waited) * 1000, 2),
        "signal_wait_p99_ms": round(waited[int(len(waited) * 0.99)] * 1000, 2),
        "_rows": sorted(rows, key=lambda r: (r.tenant_id, r.window_start)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--per-window", type=int, default=5)
    parser.add_argument("--partner-ms", type=float, default=20.0)
    parser.add_argument("--in-flight", type=int, default=PsiSettings().max_in_flight)
    args = parser.parse_args()
    items = workload(args.tenants, args.windows, args.per_window)
    results = [run(v, items, args.partner_ms, args.in_flight) for v in ("sync", "async")]
    if results[0].pop("_rows") != results[1].pop("_rows"):
        raise SystemExit("the two variants produced different rows")
    sync, step = results
    print(
        f"{len(items):,} signals, {args.tenants} tenants x {args.windows} windows, partner "
        f"{args.partner_ms:g} ms per request, max_in_flight {args.in_flight}\n"
    )
    print("| variant | last signal passed (s) | last row (s) | rows | signal wait p50 / p99 (ms) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['variant']} | {r['last_signal_s']} | {r['last_row_s']} | {r['rows']} | "
            f"{r['signal_wait_p50_ms']} / {r['signal_wait_p99_ms']} |"
        )
    print(
        f"\nsignals done {sync['last_signal_s'] / step['last_signal_s']:.1f}x sooner, "
        f"rows {sync['last_row_s'] / step['last_row_s']:.1f}x sooner"
    )
    out = REPO / "benchmarks" / "results" / "psi_step.json"
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
