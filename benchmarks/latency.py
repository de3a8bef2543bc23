"""End-to-end latency per store at a steady open-loop rate (issue 15's latency target).

    .venv/bin/python benchmarks/latency.py --rate 5000 --seconds 60   # the local stack must be up

1. A fresh topic whose records carry the broker's append time (``LogAppendTime``), so a
   record's Kafka timestamp *is* its append.
2. ``igflow run --tail`` in a child process, every store on (the lake, Redis, Postgres and the
   graph, under scratch names dropped at the end), every other setting at its default (the lake's
   ``lake.batch_max_seconds``, ``score.tick_seconds``, the drift step's short hold), tracing
   every record at ``--sample-ratio`` to a real OTLP/HTTP receiver in this process
   (:mod:`tests.otlp_receiver`).
3. An open-loop producer in another child process (``igflow.producer.produce`` with ``rate``):
   message ``n`` is sent at ``start + n / rate`` whatever the flow does, 10 demo tenants round
   robin, each signal's event time its planned send time (so the drift step's event-time hold is
   a wall-clock hold too).
4. For every sampled record produced after ``--warmup`` seconds and before the last
   ``--cooldown`` seconds: its Kafka append time (read back from the topic), its drift decision
   (the end of its ``drift`` span: the call that let it out) and each store's ack (the end of
   its ``write <store>`` span). Per store: p50/p95/p99 of ack - append and of ack - decision.
   Where a serving store's time after the decision goes: until the worker handed the item to
   the store's pipeline (its ``put <store>`` span, :mod:`sinks.serving`: the steps after drift
   and Bytewax's hand-overs), then until the pipeline's writer thread started its write (the
   queue), then the write.

The serving stores (Redis, Postgres, the graph) are written a score change per tenant per
``score.tick_seconds`` of event time (the last of each tick), which carries the trace of the
signal that made it: their rows are the sampled signals whose change was written. A signal whose
change a later one of the same tick replaced reaches those stores with that later change.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from confluent_kafka.admin import (  # noqa: E402
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from benchmarks.bench_topics import with_topics  # noqa: E402
from benchmarks.serving_flow import _drop_or_warn, _env, _scratch_stores  # noqa: E402
from core.settings import Settings  # noqa: E402
from igflow.admin import create_topics  # noqa: E402
from igflow.producer import end_offsets, produce  # noqa: E402
from igflow.workload import WorkloadSpec  # noqa: E402
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan  # noqa: E402

TENANTS = 10


def _log_append_time(settings: Settings) -> None:
    """Make the topic stamp each record with the broker's append time."""
    admin = AdminClient(settings.kafka.client_config())
    entry = ConfigEntry(
        "message.timestamp.type",
        "LogAppendTime",
        incremental_operation=AlterConfigOpType.SET,
    )
    resource = ConfigResource(ResourceType.TOPIC, settings.kafka.topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def _produce_child(settings_json: str, rate: float, seconds: float) -> None:
    """The open-loop producer (run in its own process, so the flow's GIL is not its clock)."""
    args = json.loads(settings_json)
    settings = Settings.load().with_changes("kafka", topic=args["topic"])
    start = datetime.now(UTC)
    spec = WorkloadSpec(
        tenants=TENANTS,
        count=int(rate * seconds) // TENANTS,
        seed=3,
        start=start,
        step=timedelta(seconds=TENANTS / rate),
    )
    report = produce(settings, spec, rate=rate)
    total = report.total
    print(json.dumps({"start": start.timestamp(), "sent": total, "seconds": report.seconds}))


def _append_times(settings: Settings, wanted: set[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """Kafka timestamps (ms) of the ``(partition, offset)`` records in ``wanted``."""
    topic = settings.kafka.topic
    ends = end_offsets(settings, topic)
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"latency-bench-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    out: dict[tuple[int, int], int] = {}
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        left = {p for p, end in ends.items() if end > 0}
        while left:
            for msg in consumer.consume(10_000, timeout=5.0):
                if msg.error() is not None:
                    continue
                key = (msg.partition(), msg.offset())
                if key in wanted:
                    out[key] = msg.timestamp()[1]
                if msg.offset() + 1 >= ends[msg.partition()]:
                    left.discard(msg.partition())
    finally:
        consumer.close()
    return out


_APPENDED = re.compile(r"appended (\d+) rows to (\S+) .*?(\d+) ms\)")


def _commits(flow_log: str) -> dict[str, dict[str, float]]:
    """Per lake table, from the flow's log: commits, rows, and seconds spent committing."""
    out: dict[str, dict[str, float]] = {}
    for rows, table, ms in _APPENDED.findall(flow_log):
        entry = out.setdefault(table, {"commits": 0, "rows": 0, "commit_seconds": 0.0})
        entry["commits"] += 1
        entry["rows"] += int(rows)
        entry["commit_seconds"] += int(ms) / 1000
    return out


def _children_cpu() -> float:
    """User + system CPU seconds of this process's reaped children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    n = len(ordered)

    def q(p: float) -> float:
        return ordered[min(n - 1, max(0, int(p * n + 0.999999) - 1))]  # nearest rank

    return {"n": n, "p50": q(0.5), "p95": q(0.95), "p99": q(0.99)}


def _store_row(write: ReceivedSpan) -> str:
    """The row a ``write <store>`` span is reported in: the store, and for a serving store what
    it wrote (a signal or a score change: they take different paths after the drift step)."""
    store = write.name.removeprefix("write ")
    item = write.attributes.get("igflow.item")
    if store.startswith("lake.") or item is None:
        return store
    return f"{store} {'score' if item == 'ScoreChange' else 'signal'}"


def _latencies(
    spans: list[ReceivedSpan], appended: dict[tuple[int, int], int], window: tuple[float, float]
) -> dict[str, dict[str, dict[str, float]]]:
    by_trace: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    since_append: dict[str, list[float]] = defaultdict(list)
    since_drift: dict[str, list[float]] = defaultdict(list)
    #: Where the time after the decision goes: until the write started (for a score change:
    #: split at the score step's publication, ``score publish``) and the write itself.
    to_write: dict[str, list[float]] = defaultdict(list)
    writing: dict[str, list[float]] = defaultdict(list)
    held_by_tick: list[float] = []
    published_to_write: dict[str, list[float]] = defaultdict(list)
    #: A serving store's time before its write starts, split where the item was handed to the
    #: store's pipeline (its ``put <store>`` span, sinks/serving.py): the steps and Bytewax up
    #: to it, the pipeline's queue after it.
    to_put: dict[str, list[float]] = defaultdict(list)
    queued: dict[str, list[float]] = defaultdict(list)
    decided: list[float] = []
    #: (append time, wait until the flow's decode step took it): the backlog, if any.
    consumed: list[tuple[float, float]] = []
    for trace in by_trace.values():
        decode = next((s for s in trace if s.name == "decode"), None)
        drift = next((s for s in trace if s.name == "drift"), None)
        if decode is None or drift is None or drift.attributes.get("igflow.outcome") != "passed":
            continue
        key = (
            int(decode.attributes["messaging.kafka.destination.partition"]),
            int(decode.attributes["messaging.kafka.message.offset"]),
        )
        stamp = appended.get(key)
        if stamp is None or not window[0] <= stamp / 1000 <= window[1]:
            continue
        decided.append(drift.end_ns / 1e9 - stamp / 1000)
        consumed.append((stamp / 1000, decode.start_ns / 1e9 - stamp / 1000))
        published = next((s for s in trace if s.name == "score publish"), None)
        if published is not None:
            held_by_tick.append((published.end_ns - drift.end_ns) / 1e9)
        for write in trace:
            if not write.name.startswith("write ") or write.status == 2:
                continue
            row = _store_row(write)
            since_append[row].append(write.end_ns / 1e9 - stamp / 1000)
            since_drift[row].append((write.end_ns - drift.end_ns) / 1e9)
            to_write[row].append((write.start_ns - drift.end_ns) / 1e9)
            writing[row].append((write.end_ns - write.start_ns) / 1e9)
            if published is not None and write.attributes.get("igflow.item") == "ScoreChange":
                published_to_write[row].append((write.start_ns - published.end_ns) / 1e9)
            put_name = "put " + write.name.removeprefix("write ")
            put = next(
                (
                    s
                    for s in trace
                    if s.name == put_name
                    and s.attributes.get("igflow.item") == write.attributes.get("igflow.item")
                ),
                None,
            )
            if put is not None:
                to_put[row].append((put.end_ns - drift.end_ns) / 1e9)
                queued[row].append((write.start_ns - put.end_ns) / 1e9)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in sorted(since_append):
        out[row] = {
            "since_append": _quantiles(since_append[row]),
            "since_drift": _quantiles(since_drift[row]),
            "decision_to_write_start": _quantiles(to_write[row]),
            "write": _quantiles(writing[row]),
        }
        if published_to_write[row]:
            out[row]["publish_to_write_start"] = _quantiles(published_to_write[row])
        if to_put[row]:
            out[row]["decision_to_put"] = _quantiles(to_put[row])
            out[row]["put_to_write_start"] = _quantiles(queued[row])
    if decided:
        out["(drift decision)"] = {"since_append": _quantiles(decided)}
    if held_by_tick:
        out["(score publish)"] = {"since_drift": _quantiles(held_by_tick)}
    if consumed:
        consumed.sort()
        half = len(consumed) // 2
        # Steady iff the flow keeps up: the wait to be consumed does not grow through the run.
        out["(consumed, 1st half)"] = {"since_append": _quantiles([w for _t, w in consumed[:half]])}
        out["(consumed, 2nd half)"] = {"since_append": _quantiles([w for _t, w in consumed[half:]])}
    return out


def run(
    rate: float,
    seconds: float,
    sample_ratio: float,
    warmup: float,
    cooldown: float,
    lake_batch_seconds: float | None,
    sinks: str = "redis,graph,postgres",
    code: Path = REPO,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One run of the flow of the checkout ``code`` (this one by default); ``extra_env``: more
    settings for the flow, as environment variables (``score.tick_seconds`` ...)."""
    logging.basicConfig(level=logging.ERROR)
    tag = uuid.uuid4().hex[:8]
    base = Settings.load()
    scoped = with_topics(base, tag).with_changes("lake", namespace=f"bench_{tag}")
    if lake_batch_seconds is not None:
        scoped = scoped.with_changes("lake", batch_max_seconds=lake_batch_seconds)
    scoped = _scratch_stores(scoped, tag).with_changes("stores", sinks=sinks)
    create_topics(scoped)
    _log_append_time(scoped)
    try:
        with OtlpReceiver() as receiver, tempfile.TemporaryFile() as flow_log:
            env = _env(scoped)
            env["IGFLOW_TRACING_ENDPOINT"] = receiver.endpoint
            env["IGFLOW_TRACING_SAMPLE_RATIO"] = str(sample_ratio)
            if lake_batch_seconds is not None:
                env["IGFLOW_LAKE_BATCH_MAX_SECONDS"] = str(lake_batch_seconds)
            env.update(extra_env or {})
            # CPU seconds of the reaped children: the producer's are taken out, the rest is the
            # flow's (start-up and the whole run: the same work on either checkout).
            before = _children_cpu()
            # `python -m` puts the working directory first on sys.path: the flow is `code`'s.
            flow = subprocess.Popen(
                [sys.executable, "-m", "igflow.cli", "run", "--tail"],
                cwd=code,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=flow_log,
                start_new_session=True,
            )
            try:
                time.sleep(8)  # the flow connects and creates its tables before the clock starts
                if flow.poll() is not None:
                    flow_log.seek(0)
                    msg = f"igflow run exited:\n{flow_log.read().decode()[-3000:]}"
                    raise RuntimeError(msg)
                producer = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--produce-child",
                        json.dumps({"topic": scoped.kafka.topic}),
                        "--rate",
                        str(rate),
                        "--seconds",
                        str(seconds),
                    ],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                sent = json.loads(producer.stdout.strip().splitlines()[-1])
                producer_cpu = _children_cpu() - before
                time.sleep(cooldown)  # what was produced last lands; spans are exported
            finally:
                flow.send_signal(signal.SIGINT)
                try:
                    flow.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(flow.pid, signal.SIGKILL)
                    flow.wait()
            flow_cpu = _children_cpu() - before - producer_cpu
            spans = list(receiver.spans)
            flow_log.seek(0)
            flow_err = flow_log.read().decode(errors="replace")
        start = float(sent["start"])
        window = (start + warmup, start + float(sent["seconds"]) - 1.0)
        wanted = {
            (
                int(s.attributes["messaging.kafka.destination.partition"]),
                int(s.attributes["messaging.kafka.message.offset"]),
            )
            for s in spans
            if s.name == "decode" and "messaging.kafka.message.offset" in s.attributes
        }
        appended = _append_times(scoped, wanted)
        result = {
            "code": str(code),
            "load_average": os.getloadavg(),
            "rate": rate,
            "sent": sent["sent"],
            "produce_seconds": sent["seconds"],
            "achieved_rate": sent["sent"] / sent["seconds"],
            "flow_cpu_seconds": flow_cpu,
            "traced": len(wanted),
            "spans": dict(Counter(s.name for s in spans)),
            "lake_commits": _commits(flow_err),
            "flow_log_tail": flow_err[-1500:],
            "stores": _latencies(spans, appended, window),
        }
    finally:
        _drop_or_warn(scoped)
    return result


def _print(result: dict[str, Any]) -> None:
    print(
        f"[{result.get('code', REPO)}] open loop {result['rate']:,.0f} events/s asked,"
        f" {result['achieved_rate']:,.0f} sent ({result['sent']:,} in"
        f" {result['produce_seconds']:.1f} s), {result['traced']:,} traced records,"
        f" the flow {result.get('flow_cpu_seconds', 0.0):.1f} CPU s,"
        f" load average {', '.join(f'{x:.1f}' for x in result.get('load_average', ()))}"
    )
    for table, c in result.get("lake_commits", {}).items():
        print(
            f"lake {table}: {c['commits']:.0f} commits of {c['rows'] / max(1, c['commits']):.0f}"
            f" rows on average, {c['commit_seconds']:.1f} s spent committing"
        )
    print(
        f"\n{'store':<22} {'n':>5} {'append→ack p50':>15} {'p95':>7} {'p99':>7}"
        f"   {'decision→ack p50':>17} {'p95':>7} {'p99':>7}"
        f"   {'→write start p50':>17} {'p95':>7}   {'write p50':>9} {'p95':>7}"
    )
    for store, row in result["stores"].items():
        a = row.get("since_append")
        d = row.get("since_drift")
        first = a or d
        assert first is not None
        line = f"{store:<22} {first['n']:>5}"
        line += f" {a['p50']:>14.3f}s {a['p95']:>6.3f}s {a['p99']:>6.3f}s" if a else " " * 32
        if d:
            line += f"   {d['p50']:>16.3f}s {d['p95']:>6.3f}s {d['p99']:>6.3f}s"
        w, t = row.get("decision_to_write_start"), row.get("write")
        if w and t:
            line += f"   {w['p50']:>16.3f}s {w['p95']:>6.3f}s   {t['p50']:>8.3f}s {t['p95']:>6.3f}s"
        print(line)
    split = {k: v for k, v in result["stores"].items() if "decision_to_put" in v}
    if split:
        print(
            f"\n{'store':<22} {'decision→put p50':>17} {'p95':>7}   {'put→write start p50':>20}"
            f" {'p95':>7}"
        )
        for store, row in split.items():
            p, q = row["decision_to_put"], row["put_to_write_start"]
            print(
                f"{store:<22} {p['p50']:>16.3f}s {p['p95']:>6.3f}s   {q['p50']:>19.3f}s"
                f" {q['p95']:>6.3f}s"
            )


def _medians(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per row and measure, the median over rounds of each round's p50 and p95."""
    out: dict[str, dict[str, float]] = {}
    for row in sorted({r for result in results for r in result["stores"]}):
        for measure in (
            "since_append",
            "since_drift",
            "publish_to_write_start",
            "decision_to_put",
            "put_to_write_start",
            "write",
        ):
            for q in ("p50", "p95"):
                values = [
                    result["stores"][row][measure][q]
                    for result in results
                    if measure in result["stores"].get(row, {})
                ]
                if values:
                    out.setdefault(row, {})[f"{measure} {q}"] = statistics.median(values)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="events/s, open loop")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sample-ratio", type=float, default=0.01)
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds left out at the start")
    parser.add_argument("--cooldown", type=float, default=15.0)
    parser.add_argument(
        "--lake-batch-seconds",
        type=float,
        default=None,
        help="override lake.batch_max_seconds (default: the setting's default)",
    )
    parser.add_argument(
        "--sinks", default="redis,graph,postgres", help="serving stores besides the lake"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--against", type=Path, help="another checkout, run alternately")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the flow (repeatable), e.g. IGFLOW_SCORE_TICK_SECONDS=0.1",
    )
    parser.add_argument("--produce-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce_child is not None:
        _produce_child(args.produce_child, args.rate, args.seconds)
        return
    extra = dict(item.split("=", 1) for item in args.env)
    codes = [REPO] + ([args.against] if args.against else [])
    results: dict[Path, list[dict[str, Any]]] = {code: [] for code in codes}
    for _round in range(args.rounds):
        for code in codes:  # alternately: the shared machine's load falls on both alike
            result = run(
                args.rate,
                args.seconds,
                args.sample_ratio,
                args.warmup,
                args.cooldown,
                args.lake_batch_seconds,
                args.sinks,
                code,
                extra,
            )
            results[code].append(result)
            if args.json:
                print(json.dumps(result, indent=2), flush=True)
            else:
                _print(result)
                print(flush=True)
    if args.rounds > 1 or args.against:
        for code, rounds in results.items():
            cpus = [r["flow_cpu_seconds"] for r in rounds]
            each = ", ".join(f"{c:.1f}" for c in cpus)
            print(
                f"[{code}] medians over {len(rounds)} round(s) (decision: the drift step's);"
                f" the flow's CPU {statistics.median(cpus):.1f} s ({each})"
            )
            for row, values in _medians(rounds).items():
                print(f"  {row:<22} " + "  ".join(f"{k} {v:.3f}s" for k, v in values.items()))


if __name__ == "__main__":
    main()
