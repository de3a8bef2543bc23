"""The whole flow with the serving stores: events/s with lake + Redis + Postgres + graph against
the lake alone and against each store's own write rate in the same run, and the flow's RSS while
one store is paused for 10 s.

    .venv/bin/python benchmarks/sinks.py --flow --signals 100000   # the local stack must be up

1. N signals (10 demo tenants, 5% duplicates, 2% invalid, a tenant's signals ``--step-ms``
   apart in event time, 10 ms by default) produced to a fresh topic. Then (a) each enabled
   store alone: the items the flow sends it for those records (``benchmarks/store_mix.py``),
   written by its sink's writer, twice (the first pass warms the servers and is printed apart;
   the second is the store's rate); (b) the flow, run bounded with one worker in this process (like
   ``benchmarks/stages.py``) into fresh namespaces, lake only and then lake and the three serving
   stores. The stores are written under scratch names (a replay's: Redis key prefix, graph label
   prefix, Postgres schema), so every run starts empty and no guard skips a write; they are
   dropped at the end. Printed: each store's rate in the flow's events (records / seconds) and
   its server's CPU seconds, the flows' events/s and CPU seconds (and per record: the whole
   process's, and each store's writer thread's), how long the worker waited on each store's
   full queue, and issue 15's ratio: the flow with every store over the slowest
   store alone (target >= 0.8x), beside the most the machine allows: the slowest store's
   seconds alone x the cores over the CPU seconds the run with every store used (the flow's
   process and the stores' servers), which no scheduling can beat.
2. The same flow as ``igflow run`` in a child process, all stores on, with Redis SIGSTOPped for
   ``--pause`` seconds once a fifth of the signals has landed: the child's RSS sampled every
   0.1 s (before, peak during the pause, peak overall), and the lake rows committed during the
   pause (the lake goes on until the stores' queues are full: ``stores.max_in_flight`` batches
   of ``stores.batch_size``). ``--no-pause`` skips it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import redis
from bytewax.run import cli_main
from psycopg import sql
from pyiceberg.catalog import Catalog

from benchmarks import store_mix
from benchmarks.bench_topics import demo_workload, with_topics
from benchmarks.checkouts import stack_env
from core import metrics
from core.catalog import catalog
from core.records import ScoreChange
from core.settings import Settings
from dev import stack as dev_stack
from dev.config import StackConfig
from flows.coherence import Edges, build
from igflow.admin import create_topics
from igflow.producer import produce
from sinks.graph import GraphWriter
from sinks.lake_tables import SCORES, SIGNALS

REPO = Path(__file__).resolve().parents[1]


def _scratch_stores(settings: Settings, tag: str) -> Settings:
    return settings.with_changes(
        "stores",
        sinks="redis,graph,postgres",
        key_prefix=f"bench:{tag}:",
        graph_label_prefix=f"bench_{tag}_",
        postgres_schema=f"bench_{tag}",
    )


def _drop_stores(settings: Settings) -> None:
    stores = settings.stores
    client = redis.Redis.from_url(stores.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{stores.key_prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()
    GraphWriter.for_stores(stores, label_prefix=stores.graph_label_prefix).drop_scratch()
    with psycopg.connect(stores.postgres_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(stores.postgres_schema)
            )
        )


def _drop_or_warn(settings: Settings) -> None:
    """:func:`_drop_stores`, saying on stderr what it could not drop instead of raising (the
    benchmark's figures stand; a silent failure here once left 17 GB of scratch graphs)."""
    try:
        _drop_stores(settings)
    except Exception as exc:  # reported; the run's results are kept
        stores = settings.stores
        print(
            f"warning: scratch stores {stores.key_prefix!r} / {stores.graph_label_prefix!r} /"
            f" {stores.postgres_schema!r} not dropped: {exc!r}",
            file=sys.stderr,
        )


def _landed(settings: Settings, lake: Catalog | None = None) -> int:
    """Signals in ``settings``' lake; ``lake``: its catalog, opened once by a caller that asks
    often (opening one is a database connection and a metadata parse)."""
    try:
        lake = catalog(settings) if lake is None else lake
        table = lake.load_table(f"{settings.lake.namespace}.{SIGNALS.name}")
    except Exception:  # not created yet
        return 0
    snapshot = table.current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return 0
    return int(snapshot.summary.additional_properties.get("total-records", "0"))


def _rows(settings: Settings, table: str) -> int:
    lake = catalog(settings)
    name = f"{settings.lake.namespace}.{table}"
    return lake.load_table(name).scan().count() if lake.table_exists(name) else 0


def _blocked() -> dict[str, float]:
    """Seconds the worker has waited on each store's full queue so far (this process)."""
    return {
        sample.labels["sink"]: sample.value
        for family in metrics.SINK_BLOCKED_SECONDS.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def _cpu() -> float:
    """CPU seconds of this process so far (the worker's and every writer thread's)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _in_process(settings: Settings) -> float:
    start = time.perf_counter()
    cli_main(build(settings, Edges()), workers_per_process=1, epoch_interval=timedelta(seconds=1))
    return time.perf_counter() - start


_TICK = os.sysconf("SC_CLK_TCK")


class _StoreThreads:
    """CPU seconds of each store's writer thread (``igflow-store-<name>``) while it lives, read
    from ``/proc/self/task/<tid>/stat`` every 0.1 s (a thread's last 0.1 s may be missed: it
    ends with its flow)."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _StoreThreads:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            for thread in threading.enumerate():
                if not thread.name.startswith("igflow-store-"):
                    continue
                try:
                    stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
                except OSError:  # ended meanwhile
                    continue
                fields = stat[stat.rindex(")") + 2 :].split()
                name = thread.name.removeprefix("igflow-store-")
                self.cpu[name] = (int(fields[11]) + int(fields[12])) / _TICK


def _env(settings: Settings) -> dict[str, str]:
    env = stack_env()
    s = settings.stores
    env.update(
        {
            "IGFLOW_KAFKA_TOPIC": settings.kafka.topic,
            "IGFLOW_KAFKA_DLQ_TOPIC": settings.kafka.dlq_topic,
            "IGFLOW_LAKE_NAMESPACE": settings.lake.namespace,
            "IGFLOW_STORES_SINKS": s.sinks,
            "IGFLOW_STORES_KEY_PREFIX": s.key_prefix,
            "IGFLOW_STORES_GRAPH_LABEL_PREFIX": s.graph_label_prefix,
            "IGFLOW_STORES_POSTGRES_SCHEMA": s.postgres_schema,
        }
    )
    return env


def paused_run(settings: Settings, total: int, pause_s: float) -> dict[str, Any]:
    """``igflow run`` in a child, Redis paused ``pause_s`` once a fifth has landed; RSS and lake."""
    cfg = StackConfig.from_env(os.environ)
    redis_pid = dev_stack.our_pid(cfg, dev_stack.select(["redis"], cfg)[0])
    if redis_pid is None:
        msg = "the stack's redis is not running"
        raise RuntimeError(msg)
    # Its log to a file: a pipe read only at the end would fill up and block the flow.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "igflow.cli", "run"],
            cwd=REPO,
            env=_env(settings),
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        samples: list[tuple[float, float]] = []
        lake = catalog(settings)  # polled every 0.1 s below
        started = time.monotonic()
        paused_at = resumed_at = None
        landed_at_pause = landed_at_resume = 0
        try:
            while proc.poll() is None:
                now = time.monotonic()
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    samples.append((now, _rss_mib(proc.pid)))
                if paused_at is None and _landed(settings, lake) >= total // 5:
                    landed_at_pause = _landed(settings, lake)
                    os.kill(redis_pid, signal.SIGSTOP)
                    paused_at = now
                elif paused_at is not None and resumed_at is None and now - paused_at >= pause_s:
                    landed_at_resume = _landed(settings, lake)
                    os.kill(redis_pid, signal.SIGCONT)
                    resumed_at = now
                time.sleep(0.1)
        finally:
            if resumed_at is None:
                os.kill(redis_pid, signal.SIGCONT)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.seek(0)
        err = log.read()
    if proc.returncode != 0:
        msg = f"igflow run failed ({proc.returncode}):\n{err.decode()[-3000:]}"
        raise RuntimeError(msg)
    if paused_at is None or resumed_at is None:
        msg = "the run ended before the pause was over: produce more signals"
        raise RuntimeError(msg)
    before = [rss for t, rss in samples if t < paused_at]
    during = [rss for t, rss in samples if paused_at <= t <= resumed_at]
    return {
        "seconds": time.monotonic() - started,
        "pause_s": resumed_at - paused_at,
        "rss_before_pause_mib": max(before) if before else 0.0,
        "rss_peak_in_pause_mib": max(during) if during else 0.0,
        "rss_peak_mib": max(rss for _t, rss in samples),
        "lake_rows_at_pause": landed_at_pause,
        "lake_rows_committed_in_pause": landed_at_resume - landed_at_pause,
        "landed": _landed(settings),
    }


def run(
    signals: int,
    pause_signals: int,
    pause_s: float,
    *,
    pause_only: bool = False,
    pause: bool = True,
    step_ms: float = 10.0,
) -> dict[str, Any]:
    """Both parts (``pause_only``: the second; ``pause=False``: the first); returns what it
    prints."""
    logging.basicConfig(level=logging.ERROR)  # one warning per rejected record otherwise
    base = Settings.load()
    tag = uuid.uuid4().hex[:8]
    base = with_topics(base, tag)
    throughput: dict[str, Any] = {}
    result: dict[str, Any] = {}
    made: list[Settings] = []
    try:
        if not pause_only:
            throughput = _throughput(base, tag, signals, step_ms, made)
        if pause or pause_only:
            result = _paused(base, pause_signals, pause_s, step_ms, made)
    finally:
        for scoped in made:
            _drop_or_warn(scoped)
    return {**throughput, "paused": result}


def _rate(row: dict[str, Any]) -> str:
    return f"{row['store']} {row['events_per_s']:,.0f} events/s"


def _throughput(
    base: Settings, tag: str, signals: int, step_ms: float, made: list[Settings]
) -> dict[str, Any]:
    create_topics(base)
    spec = demo_workload(signals, step=timedelta(milliseconds=step_ms))
    report = produce(base, spec)
    total = report.total
    print(f"produced {total:,} signals ({step_ms:g} ms apart per tenant) in {report.seconds:.1f} s")
    items, records = store_mix.flow_items(base, spec)
    n_scores = sum(isinstance(item, ScoreChange) for item in items)
    print(
        f"the stores get {len(items) - n_scores:,} signals and {n_scores:,} score changes"
        f" for {records:,} records"
    )
    # Each store written alone twice under its own scratch names: the first pass warms the
    # servers (Neo4j's JIT and page cache: cold, the graph wrote 2,692 events/s where warm it
    # wrote 9,403, which made the ratio swing from 1.33x to 0.65x between two runs), and the
    # second is the rate the ratio uses; the flows after it meet warm servers too.
    cold = _scratch_stores(base, f"{tag}c")
    made.append(cold)
    warmup = store_mix.store_rates(cold, items, records)
    print("warm-up, each store alone: " + ", ".join(_rate(r) for r in warmup))
    alone = _scratch_stores(base, f"{tag}w")
    made.append(alone)
    stores = store_mix.store_rates(alone, items, records)
    flows: list[dict[str, Any]] = []
    for label, with_stores in (("lake only", False), ("lake + redis + postgres + graph", True)):
        ns = f"bench_{tag}_{len(flows)}"
        scoped = base.with_changes("lake", namespace=ns)
        if with_stores:
            scoped = _scratch_stores(scoped, f"{tag}{len(flows)}")
            made.append(scoped)
        else:
            scoped = scoped.with_changes("stores", sinks="")
        cpu = _cpu()
        blocked = _blocked()
        servers = store_mix.server_cpu()
        with _StoreThreads() as writers:
            seconds = _in_process(scoped)
        servers = {k: v - servers[k] for k, v in store_mix.server_cpu().items() if k in servers}
        flows.append(
            {
                "path": label,
                "seconds": seconds,
                "cpu_seconds": _cpu() - cpu,
                "worker_blocked_s": {k: v - blocked.get(k, 0.0) for k, v in _blocked().items()},
                "writer_cpu_us_per_record": {k: v / total * 1e6 for k, v in writers.cpu.items()},
                "server_cpu_s": servers,
                "events_per_s": total / seconds,
                "landed": _landed(scoped),
                "score_rows": _rows(scoped, SCORES.name),
            }
        )
    lake = flows[0]["events_per_s"]
    print(
        f"\n{'store alone, same items':<34} {'items':>8} {'seconds':>8} {'server CPU s':>12}"
        f" {'events/s':>9}"
    )
    for r in stores:
        server = r["server_cpu_s"]
        print(
            f"{r['store']:<34} {r['items']:>8,} {r['seconds']:>8.2f}"
            f" {'-' if server is None else f'{server:.2f}':>12} {r['events_per_s']:>9,.0f}"
        )
    slowest = min(stores, key=lambda r: r["events_per_s"]) if stores else None
    print(
        f"\n{'path':<34} {'seconds':>8} {'CPU s':>7} {'events/s':>9} {'landed':>8} {'scores':>7}"
        f" {'vs lake':>7}"
    )
    for r in flows:
        print(
            f"{r['path']:<34} {r['seconds']:>8.2f} {r['cpu_seconds']:>7.2f}"
            f" {r['events_per_s']:>9,.0f} {r['landed']:>8,} {r['score_rows']:>7,}"
            f" {r['events_per_s'] / lake:>6.2f}x"
        )
    blocked_s = ", ".join(f"{k} {v:.1f} s" for k, v in flows[1]["worker_blocked_s"].items())
    print(f"the worker waited on full store queues (all stores): {blocked_s or 'never'}")
    cpu_us = flows[1]["cpu_seconds"] / total * 1e6
    writers_us = ", ".join(
        f"{k} {v:.1f}" for k, v in sorted(flows[1]["writer_cpu_us_per_record"].items())
    )
    print(
        f"the flow's CPU per record: lake only {flows[0]['cpu_seconds'] / total * 1e6:.1f} µs,"
        f" all stores {cpu_us:.1f} µs, of which the stores' writer threads: {writers_us} µs"
    )
    servers_s = ", ".join(f"{k} {v:.2f}" for k, v in flows[1]["server_cpu_s"].items())
    print(f"the stores' servers' CPU seconds during that run: {servers_s}")
    ratio = None
    bound = _cpu_bound(slowest, flows[1]) if slowest is not None else None
    if slowest is not None:
        ratio = flows[1]["events_per_s"] / slowest["events_per_s"]
        print(
            f"\nall stores: {flows[1]['events_per_s']:,.0f} events/s = {ratio:.2f}x the slowest"
            f" store alone ({slowest['store']}, {slowest['events_per_s']:,.0f} events/s);"
            " target >= 0.8x (or >= 20,000 events/s)"
        )
        if bound is not None:
            print(
                f"what this machine allows: at most {bound['ratio']:.2f}x, if the all-stores run"
                f" kept its {bound['cores']} cores busy throughout ({bound['cores']} x"
                f" {slowest['seconds']:.2f} s of the store alone / {bound['cpu_s']:.2f} CPU s of"
                " the flow and the stores' servers; the Kafka broker's not counted)"
            )
    if (flows[1]["landed"], flows[1]["score_rows"]) != (len(items) - n_scores, n_scores):
        print(
            "note: the flow landed other counts than the stores were written alone"
            f" ({flows[1]['landed']:,} signals, {flows[1]['score_rows']:,} scores)"
        )
    return {
        "records": total,
        "step_ms": step_ms,
        "store_items": {"signals": len(items) - n_scores, "score_changes": n_scores},
        "stores_warmup": warmup,
        "stores": stores,
        "slowest_store": slowest["store"] if slowest else None,
        "flows": flows,
        "flow_vs_slowest_store": ratio,
        "cpu_bound": bound,
    }


def _cpu_bound(slowest: dict[str, Any], every_store: dict[str, Any]) -> dict[str, Any] | None:
    """The highest ratio (every store / the slowest alone) the machine's cores allow: the run
    with every store takes at least its CPU seconds (the flow's process and the stores'
    servers) over the cores, so the ratio is at most the store's seconds alone x cores / those
    CPU seconds. An upper bound: the Kafka broker's CPU is left out, and no run keeps every
    core busy throughout. ``None`` when a server's CPU was not read."""
    servers = every_store["server_cpu_s"]
    if not servers or any(v is None for v in servers.values()):
        return None
    cores = len(os.sched_getaffinity(0))
    cpu_s = every_store["cpu_seconds"] + sum(servers.values())
    return {"cores": cores, "cpu_s": cpu_s, "ratio": slowest["seconds"] * cores / cpu_s}


def _paused(
    base: Settings, pause_signals: int, pause_s: float, step_ms: float, made: list[Settings]
) -> dict[str, Any]:
    ptag = uuid.uuid4().hex[:8]
    paused = base.with_changes(
        "kafka", topic=f"bench.{ptag}.signals", dlq_topic=f"bench.{ptag}.dlq"
    ).with_changes("lake", namespace=f"bench_{ptag}")
    paused = _scratch_stores(paused, ptag)
    made.append(paused)
    create_topics(paused)
    pspec = demo_workload(pause_signals, step=timedelta(milliseconds=step_ms), seed=2)
    ptotal = produce(paused, pspec).total
    result = paused_run(paused, ptotal, pause_s)
    print(
        f"\nigflow run, {ptotal:,} signals, Redis paused {result['pause_s']:.1f} s at"
        f" {result['lake_rows_at_pause']:,} landed: {result['lake_rows_committed_in_pause']:,}"
        f" signals committed to the lake during the pause; RSS before the pause"
        f" {result['rss_before_pause_mib']:.0f} MiB, peak in the pause"
        f" {result['rss_peak_in_pause_mib']:.0f} MiB, peak {result['rss_peak_mib']:.0f} MiB;"
        f" {result['landed']:,} landed in {result['seconds']:.1f} s"
    )
    return result
