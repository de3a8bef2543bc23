"""The report of ``benchmarks/api.py``: the table it prints and the plot of the latency
distributions (``api.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.api_fanout import FANOUT_BUDGET_MS, FanoutPhase
from benchmarks.api_loadgen import (
    READ_AIM_MS,
    READ_BUDGET_MS,
    WRITE_AIM_MS,
    WRITE_BUDGET_MS,
    RequestPhase,
)


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:,.1f}"


def print_table(
    requests: list[dict[str, Any]],
    capacities: dict[str, dict[str, float]],
    fanouts: list[dict[str, Any]],
    logs: dict[str, dict[str, int]],
) -> None:
    print("\ncapacity (closed loop, one server process):")
    for name, c in capacities.items():
        print(
            f"  {name:<44} {c['answered_rps']:>7,.0f} answers/s with {c['in_flight']:.0f} in "
            f"flight; server {c['server_cpu_pct']:.0f}% of a core, "
            f"{c['server_cpu_ms_per_request']:.2f} ms CPU a request; other processes "
            f"{c['other_cpu_pct']:.0f}%, steal {c['steal_cpu_pct']:.0f}%"
            + (f"; {c['errors']:.0f} errors" if c["errors"] else "")
        )
    print(
        f"\n{'operation':<44} {'from':<8} {'rps':>5} {'sent/s':>7} {'n':>6} "
        f"{'err':>5} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} {'budget':>7} "
        f"{'p95/bgt':>8} {'aim':>4} {'p95/aim':>8}"
    )
    for row in requests:
        for label, key in (("schedule", "from_schedule_ms"), ("send", "from_send_ms")):
            p = row[key]
            head = ["", "", "", "", ""]
            if label == "schedule":
                head = [
                    row["name"],
                    f"{row['target_rps']:g}",
                    f"{row['sent_rps']:.1f}",
                    f"{row['requests']:,}",
                    f"{row['errors']:,}",
                ]
            print(
                f"{head[0]:<44} {label:<8} {head[1]:>5} {head[2]:>7} {head[3]:>6} {head[4]:>5} "
                f"{_ms(p['p50']):>8} {_ms(p['p95']):>8} {_ms(p['p99']):>8} {_ms(p['max']):>8} "
                f"{row['budget_p95_ms']:>7.0f} {p['p95'] / row['budget_p95_ms']:>8.3f} "
                f"{row['aim_p95_ms']:>4.0f} {p['p95'] / row['aim_p95_ms']:>8.2f}"
            )
    for row in fanouts:
        p = row["write_to_receipt_ms"]
        print(
            f"{row['name']:<44} {'write':<8} {'':>5} {'':>7} {row['deliveries']:>6,} "
            f"{row['errors']:>5,} {_ms(p['p50']):>8} {_ms(p['p95']):>8} {_ms(p['p99']):>8} "
            f"{_ms(p['max']):>8} {row['budget_ms']:>7.0f} {p['p95'] / row['budget_ms']:>8.3f} "
            f"{'-':>4} {'-':>8}"
        )
    print("(ms; 'from schedule' counts the wait of a request the server or the generator held up)")
    print("\nthe generator and the server during each open-loop run (CPU: % of one core):")
    for row in requests:
        lag = row["send_lag_ms"]
        print(
            f"  {row['name']:<44} {row['target_rps']:>5g}/s: answered {row['answered_rps']:.1f}/s,"
            f" send lag p99 {_ms(lag['p99'])} ms; server {row['server_cpu_pct']:.0f}%, "
            f"generator {row['generator_cpu_pct']:.0f}%, other processes "
            f"{row['other_cpu_pct']:.0f}%, steal {row['steal_cpu_pct']:.0f}%; "
            f"{row['connections']} connections"
            + (f"; errors {row['error_kinds']}" if row["error_kinds"] else "")
        )
    if fanouts:
        print("\nfan-out, the server's own view (arrival from Redis → subscriber woken; buckets):")
    for row in fanouts:
        v = row["server_arrival_to_wakeup_ms"]
        print(
            f"  {row['name']:<44} p50 {_ms(v['p50'])}, p95 {_ms(v['p95'])}, p99 {_ms(v['p99'])}"
            f" ms; {row['within_budget_pct']:.1f}% of deliveries within {row['budget_ms']:.0f} ms;"
            f" server {row['server_cpu_ms_per_delivery']:.3f} ms CPU a delivery, "
            f"{row['server_cpu_pct']:.0f}%, other processes {row['other_cpu_pct']:.0f}%, "
            f"steal {row['steal_cpu_pct']:.0f}%; "
            f"subscribed in {row['connect_s']:.1f} s"
            + (f"; {row['error_kinds']}" if row["error_kinds"] else "")
        )
    for mode, counts in logs.items():
        if counts:
            print(f"\nthe server logged ({mode} mode):")
            for message, count in list(counts.items())[:8]:
                print(f"  {count:>7,} x {message}")


def plot(requests: list[RequestPhase], fanouts: list[FanoutPhase], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nines = np.array([0, 50, 75, 90, 95, 99, 99.9])
    qs = np.concatenate([np.linspace(0, 99, 199), np.linspace(99, 99.95, 40)])
    x = -np.log10(1 - qs / 100)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    ax = axes[0]
    for phase in requests:
        ms = phase.latencies_ms()
        if ms.size:
            ax.plot(x, np.percentile(ms, qs), label=f"{phase.name} ({phase.rate:g}/s)")
    for value, style, label in (
        (READ_AIM_MS, ":", "read aim 10 ms"),
        (WRITE_AIM_MS, "-.", "write aim 25 ms"),
        (READ_BUDGET_MS, "--", "read budget 350 ms"),
        (WRITE_BUDGET_MS, "-", "write budget 700 ms"),
    ):
        ax.axhline(value, color="grey", linestyle=style, linewidth=0.8, label=label)
    ax.set_title("requests: latency from the scheduled send (open loop)")
    ax2 = axes[1]
    for fan in fanouts:
        if fan.latencies_ms.size:
            ax2.plot(x, np.percentile(fan.latencies_ms, qs), label=fan.name)
    ax2.axhline(FANOUT_BUDGET_MS, color="grey", linestyle="--", linewidth=0.8, label="250 ms")
    ax2.axhline(100.0, color="grey", linestyle=":", linewidth=0.8, label="100 ms window")
    ax2.set_title("subscription fan-out: sink write → client receipt")
    for a in axes:
        a.set_yscale("log")
        a.set_xticks(-np.log10(1 - nines / 100))
        a.set_xticklabels([f"p{n:g}" for n in nines])
        a.set_xlabel("percentile")
        a.set_ylabel("ms")
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
