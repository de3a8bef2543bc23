"""Each serving store's own write rate for the items the flow sends it (issue 15's store ratio).

Used by ``benchmarks/sinks.py --flow``. :func:`flow_items` runs the flow's steps' own logic
(decode, validate, drift, dedupe, tenant-tag, redact, score: the engine-independent classes the
Bytewax steps wrap) over the workload ``igflow produce`` sends, in one process, and returns what
reaches the serving stores: the tagged signals and the score changes, in the order the score step
publishes them after each signal. The psi step passes every signal on (it only adds lake rows),
so it is left out. :func:`store_rates` then writes those items into each enabled store with the
writer its Bytewax sink wraps, alone, in chunks of ``stores.batch_size`` (what the sink's writer
thread takes at most), the items each sink gets (Redis and the graph: signals and score
changes; Postgres: score changes), through the same ``prepare`` step as the sink. A store's rate
is counted in the flow's events: records produced / seconds of that store's writes, so the
flow's events/s divided by the slowest store's rate is the fraction of the stores' own speed the
flow reaches.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.contracts import signal_contracts
from core.records import Decoded, RawRecord, ScoreChange, Tagged
from core.settings import Settings
from dev import stack as dev_stack
from dev.config import StackConfig
from igflow.workload import SOURCES, WorkloadSpec, generate, tenant_ids
from operators.decode import SignalDecoder
from operators.dedupe import TenantDedupe, Verdict
from operators.drift import TenantDrift
from operators.redact import RedactionPolicy, redact
from operators.score import TickScore
from operators.tenancy import TenancyPolicy, tag
from operators.validate import check
from sinks.graph import GraphWriter
from sinks.postgres import PostgresWriter, newest_per_tenant
from sinks.redis import RedisWriter
from sinks.serving import tenant_and_score_lanes, tenant_lanes
from tenancy.registry import StaticTenants

__all__ = ["flow_items", "server_cpu", "store_rates"]

Item = Tagged | ScoreChange

#: The stack service behind each store.
SERVICES = {"redis": "redis", "graph": "neo4j", "postgres": "postgres"}
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_of(stat: str, *, children: bool) -> float:
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime: children it reaped
    return ticks / _TICK


def server_cpu() -> dict[str, float]:
    """CPU seconds used so far by the local stack's server of each store: the process, the
    children it reaped and its live children (Postgres's backends). Stores whose server is not
    this stack's are left out."""
    cfg = StackConfig.from_env(os.environ)
    out: dict[str, float] = {}
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text()
            except OSError:  # exited meanwhile
                continue
    for store, name in SERVICES.items():
        pid = dev_stack.our_pid(cfg, dev_stack.select([name], cfg)[0])
        if pid is None or pid not in stats:
            continue
        total = _cpu_of(stats[pid], children=True)
        for stat in stats.values():
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:  # ppid
                total += _cpu_of(stat, children=False)
        out[store] = total
    return out


def flow_items(settings: Settings, spec: WorkloadSpec) -> tuple[list[Item], int]:
    """The items the flow sends its serving stores for ``spec``'s records, in order, and the
    number of records (``spec`` as produced: the same seed, start and step)."""
    contract = signal_contracts()[0]
    decoder = SignalDecoder(lambda _id: contract.text, signal_contracts()[-1].parsed)
    tenants = StaticTenants.of(*tenant_ids(spec.tenants), sources=SOURCES)
    policy = TenancyPolicy.load(settings.policies_dir)
    redaction = RedactionPolicy.load(settings.policies_dir)
    drifts: dict[str, TenantDrift] = {}
    dedupes: dict[str, TenantDedupe] = {}
    scores: dict[str, TickScore] = {}
    items: list[Item] = []

    def unmasked(_tenant: str, _ts: Any, _message: bytes) -> bytes:
        msg = "the shipped redaction policy hashes nothing"
        raise AssertionError(msg)

    def land(passed: Decoded) -> None:
        t = passed.signal.tenant_id
        dedupe = dedupes.get(t)
        if dedupe is None:
            dedupe = dedupes[t] = TenantDedupe(settings.dedupe.ttl_seconds)
        if dedupe.check(passed) is not Verdict.NEW:
            return
        tagged = redact(tag(passed, policy), redaction, unmasked)
        items.append(tagged)
        score = scores.get(t)
        if score is None:
            score = scores[t] = TickScore(settings.score)
        items.extend(score.add((tagged,)))

    records = 0
    clock = 0  # the producer's Kafka timestamp: a second after the newest valid event so far
    for offset, m in enumerate(generate(spec, 1, contract.parsed)):
        records += 1
        if m.kind == "valid" and m.record:
            clock = max(clock, int(m.record["ts"].timestamp() * 1000) + 1000)
        decoded = decoder.decode(RawRecord("bench", 0, offset, m.key, m.value, clock or None))
        if not isinstance(decoded, Decoded):
            continue
        valid = check(decoded, tenants, settings.validate)
        if not isinstance(valid, Decoded):
            continue
        t = valid.signal.tenant_id
        drift = drifts.get(t)
        if drift is None:
            release_key = settings.quarantine.release_key
            drift = drifts[t] = TenantDrift(t, settings.drift, None, release_key)
        for out in drift.push(valid):
            if isinstance(out, Decoded):
                land(out)
    for drift in drifts.values():
        for out in drift.flush():
            if isinstance(out, Decoded):
                land(out)
    for score in scores.values():
        items.extend(score.flush())
    return items, records


def _in_chunks(write: Callable[[list[Any]], None], size: int) -> Callable[[list[Any]], None]:
    """All of the items written with ``write``, ``size`` at a time, in order."""

    def all_of(items: list[Any]) -> None:
        for at in range(0, len(items), size):
            write(items[at : at + size])

    return all_of


def _laned(
    writes: Sequence[Callable[[list[Any]], None]], lane_of: Callable[[Any], int]
) -> Callable[[list[Any]], None]:
    """All of the items written as the graph sink's partition spreads them: each on its lane
    of ``writes`` (``lane_of``), in order, every lane on its own thread at once; returns when
    all are written."""

    def all_of(items: list[Any]) -> None:
        lanes: list[list[Any]] = [[] for _ in writes]
        for item in items:
            lanes[lane_of(item)].append(item)
        threads = [
            threading.Thread(target=write, args=(lane,))
            for write, lane in zip(writes, lanes, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return all_of


def store_rates(scratch: Settings, items: Sequence[Item], records: int) -> list[dict[str, Any]]:
    """Each store of ``scratch.stores.sinks`` written alone with ``items`` (its share of them),
    under ``scratch``'s scratch names (empty: nothing to skip), as its sink writes them, in
    chunks of ``stores.batch_size`` (the graph on ``stores.graph_writers`` connections at once,
    tenants spread over them, and its score changes on one more); one row per store: items
    written, seconds, items/s and events/s (``records`` / seconds)."""
    stores = scratch.stores
    size = max(1, stores.batch_size)
    scores_only = [item for item in items if isinstance(item, ScoreChange)]
    writes: list[tuple[str, Callable[[list[Any]], None], list[Item]]] = []
    if "redis" in stores.enabled:
        redis_writer = RedisWriter(
            stores.redis_url,
            stream_max=stores.redis_stream_max,
            ttl_seconds=stores.redis_ttl_seconds,
            key_prefix=stores.key_prefix,
        )
        writes.append(("redis", _in_chunks(redis_writer.write, size), list(items)))
    if "graph" in stores.enabled:
        # As its sink: the signals on graph_writers lanes by tenant, the score changes on a lane
        # of their own (not on FalkorDB: its tenants' items on their signals' lane).
        tenants = stores.graph_writers
        score_lane = not stores.graph_compat
        graph = [GraphWriter.for_stores(stores) for _ in range(tenants + score_lane)]
        graph[0].ensure_schema()
        lanes = [_in_chunks(writer.write, size) for writer in graph]
        lane_of = tenant_and_score_lanes(tenants) if score_lane else tenant_lanes(tenants)
        writes.append(
            ("graph", _laned(lanes, lane_of) if len(lanes) > 1 else lanes[0], list(items))
        )
    if "postgres" in stores.enabled:
        pg_writer = PostgresWriter(stores.postgres_dsn, schema=stores.postgres_schema)
        pg_writer.ensure_schema()
        newest = _in_chunks(lambda c: pg_writer.write(newest_per_tenant(c)), size)
        writes.append(("postgres", newest, scores_only))
    rows = []
    for name, write, share in writes:
        cpu = server_cpu()
        start = time.perf_counter()
        write(share)
        seconds = time.perf_counter() - start
        used = server_cpu()
        rows.append(
            {
                "store": name,
                "items": len(share),
                "seconds": seconds,
                "server_cpu_s": used[name] - cpu[name] if name in used and name in cpu else None,
                "items_per_s": len(share) / seconds if seconds else 0.0,
                "events_per_s": records / seconds if seconds else 0.0,
            }
        )
    if "redis" in stores.enabled:
        redis_writer.close()
    if "postgres" in stores.enabled:
        pg_writer.close()
    return rows
