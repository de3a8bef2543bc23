"""API benchmark: latency of ``igflow serve`` under a steady load from a second process.

    .venv/bin/python benchmarks/api.py          # the local stack must be up; about 2 minutes

Starts its own ``igflow serve`` (one uvicorn process on a free loopback port) over a fresh topic
and 10 fresh tenants, with the per-tenant rate limit raised far above the offered load (so a
429 would be a failure, counted as an error), and drives it from this process. Each operation
is measured three ways:

* **capacity**: a closed loop with 16 requests always in flight: the most the server answers
  per second, and its CPU time per request;
* **open loop** at each rate (reads: 100 and the issue's 500 RPS; writes: 50 and 200 RPS):
  request i is sent at t0 + i/rate whatever the earlier ones are doing, over up to 256
  keep-alive connections; latency is measured from the scheduled time (a stall is charged to
  every request it held up: no coordinated omission) and from the actual send. Whether the
  generator kept up is reported (the rate requests left at, their lag behind the schedule), and
  the CPU used meanwhile by the server, by this process and by every other process of the
  machine (others' load makes the figures noisy; this says how much there was).

Operations: ``tenantCoherence`` by query text (development mode), round-robin over the tenants,
each with its own JWT, the scores written first to Redis and Postgres by the flow's own writers;
the same by persisted-query id (``pq_tenant_coherence_v1``) against a second server in
production mode; ``publishCoherenceSignal`` (``ts`` now, ``value`` in [0, 1]), answered only
once the broker (the local stack's Kafka) has acknowledged the record.

Fan-out: graphql-transport-ws subscribers of ``coherenceScoreChanged`` held by this process
(1, as the floor; 1,000 on one tenant; 1,000 as 100 on each of 10 tenants); once the server's
``igflow_api_subscribers`` gauge counts them all, score changes are written with ``RedisWriter``
(which publishes the events), every subscribed tenant in one write, 1 s apart; latency per
delivery is from the write's return to the client's receipt. The server coalesces events in
100 ms windows, so ~100 ms is the floor; a change read by the server in the same window as a
newer one is superseded (a score is a state), which is counted, not an error.

Prints a table with the brief's budget and the local aim beside each p95, writes
``benchmarks/results/api.json`` and a plot of the latency distributions, ``api.png``. The parts:
``api_server.py`` (the server, its CPU and metrics), ``api_loadgen.py`` (the HTTP client, open and
closed loops), ``api_fanout.py`` (the subscribers) and ``api_report.py`` (the table and the plot).

Hostile documents (``api_hostile.py``; ``--hostile-only`` runs just this): the worst ``/health``
latency, probed every 5 ms from another process, while one client sends documents built to hold
the server (nested fragment spreads, 50,000 aliases, 100 same-named fields, JSON nested 10,000
deep, a 9 MiB WebSocket message), beside the same probe alone and with a benign document sent
the same way; also written to ``benchmarks/results/api_hostile.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import os
import resource
import secrets
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from api.jwt_keys import JWKS_FILE, dev_keys_dir, mint_token  # noqa: E402
from benchmarks.api_fanout import FanoutPhase, fanout_phase, score_change  # noqa: E402
from benchmarks.api_hostile import hostile_phase  # noqa: E402
from benchmarks.api_loadgen import (  # noqa: E402
    Build,
    Check,
    RequestPhase,
    auth_headers,
    capacity,
    open_loop,
)
from benchmarks.api_report import plot, print_table  # noqa: E402
from benchmarks.api_server import (  # noqa: E402
    Server,
    gauge,
    say,
    serve,
    server_log_summary,
    settle,
)
from core.settings import Settings  # noqa: E402
from igflow.admin import create_topics  # noqa: E402
from sinks.postgres import PostgresWriter  # noqa: E402
from sinks.redis import RedisWriter  # noqa: E402
from tenancy.registry import upsert_tenant  # noqa: E402

SCORE_QUERY = (
    "query TenantCoherence($tenantId: ID!) { tenantCoherence(tenantId: $tenantId) "
    "{ tenantId score status updatedAt } }"
)
PUBLISH = (
    "mutation PublishSignal($input: PublishCoherenceSignalInput!) "
    "{ publishCoherenceSignal(input: $input) }"
)
PERSISTED_READ = "pq_tenant_coherence_v1"
RESULTS = REPO / "benchmarks" / "results"


def read_requests(
    tenants: list[str], tokens: dict[str, str], persisted: bool
) -> tuple[Build, Check]:
    bodies: dict[str, bytes] = {}
    for tenant in tenants:
        request: dict[str, Any] = {"variables": {"tenantId": tenant}}
        if persisted:
            request["id"] = PERSISTED_READ
        else:
            request["query"] = SCORE_QUERY
        bodies[tenant] = json.dumps(request).encode()
    heads = {t: auth_headers(tokens[t]) for t in tenants}

    def build(i: int) -> tuple[bytes, bytes]:
        tenant = tenants[i % len(tenants)]
        return bodies[tenant], heads[tenant]

    def check(i: int, data: dict[str, Any]) -> str | None:
        got = (data.get("data") or {}).get("tenantCoherence") or {}
        return None if got.get("tenantId") == tenants[i % len(tenants)] else "wrong answer"

    return build, check


def write_requests(tenants: list[str], tokens: dict[str, str], tag: str) -> tuple[Build, Check]:
    heads = {t: auth_headers(tokens[t]) for t in tenants}

    def build(i: int) -> tuple[bytes, bytes]:
        tenant = tenants[i % len(tenants)]
        signal_input = {
            "tenantId": tenant,
            "type": "latency",
            "value": (i * 37 % 1001) / 1000.0,  # in [0, 1]
            "source": "bench-api",
            "ts": datetime.now(UTC).isoformat(),
            "signalId": f"bench-{tag}-{i}",
        }
        body = json.dumps({"query": PUBLISH, "variables": {"input": signal_input}}).encode()
        return body, heads[tenant]

    def check(_i: int, data: dict[str, Any]) -> str | None:
        return None if (data.get("data") or {}).get("publishCoherenceSignal") is True else "false"

    return build, check


def bad_credential_requests(address: str) -> tuple[Build, Check]:
    """Requests from ``address`` (``X-Forwarded-For``, which uvicorn takes from a loopback peer)
    with credentials that never verify: random API keys (each a Postgres lookup, if it got that
    far) and garbage bearer tokens, alternately."""
    body = json.dumps({"query": SCORE_QUERY, "variables": {"tenantId": "nobody"}}).encode()

    def build(i: int) -> tuple[bytes, bytes]:
        if i % 2:
            credential = f"x-api-key: igk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
        else:
            credential = f"authorization: Bearer {secrets.token_urlsafe(40)}"
        head = f"{credential}\r\nx-forwarded-for: {address}\r\ncontent-type: application/json\r\n"
        return body, head.encode()

    def check(_i: int, _data: dict[str, Any]) -> str | None:
        return "a bad credential was accepted"

    return build, check


# --- main ------------------------------------------------------------------------------------


def _raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))  # the server inherits it
    return soft


@dataclasses.dataclass
class Operation:
    """One request kind to measure: its requests, its rates, and what was measured."""

    name: str
    kind: str  # read or write
    rates: list[float]
    build: Build
    check: Check
    capacity: dict[str, float] = dataclasses.field(default_factory=dict)
    phases: list[RequestPhase] = dataclasses.field(default_factory=list)

    async def measure_capacity(self, server: Server, args: argparse.Namespace) -> None:
        """A short warm-up at 50/s (not counted), then the closed-loop capacity."""
        await open_loop(server, 50.0, args.warmup, self.build, self.check, start=10_000_000)
        await settle(server)
        self.capacity = await capacity(
            server, self.build, self.check, args.capacity_seconds, args.in_flight
        )
        say(
            f"  {self.name}: capacity {self.capacity['answered_rps']:,.0f}/s "
            f"({self.capacity['server_cpu_ms_per_request']:.2f} ms of server CPU a request)"
        )
        await settle(server)

    async def run_rates(self, server: Server, args: argparse.Namespace, *, overload: bool) -> None:
        """The open-loop runs at the rates the capacity sustains (or, ``overload``, the others:
        they run last, so that what they leave behind cannot disturb the rest)."""
        most = self.capacity.get("answered_rps", float("inf"))
        for rate in self.rates:
            if (rate >= 0.9 * most) != overload:
                continue
            say(f"  {self.name} at {rate:g}/s for {args.seconds:g} s …")
            samples = await open_loop(
                server,
                rate,
                args.seconds,
                self.build,
                self.check,
                start=round(rate) * 1_000_000,
                drain=args.drain,
            )
            self.phases.append(RequestPhase(self.name, self.kind, rate, args.seconds, samples))
            await settle(server)
        self.phases.sort(key=lambda p: p.rate)


async def run(args: argparse.Namespace) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = Settings.load().with_changes(
        "kafka", topic=f"bench.{tag}.api", dlq_topic=f"bench.{tag}.api-dlq"
    )
    create_topics(settings)
    tenants = [f"bench-api-{tag}-{k:02d}" for k in range(args.tenants)]
    for tenant in tenants:
        upsert_tenant(settings.stores.postgres_dsn, tenant)
    # Both stores, as the flow's sinks leave them (Postgres answers if a Redis read fails).
    first = [score_change(t, 1, 0.8125) for t in tenants]
    writer = RedisWriter(settings.stores.redis_url, stream_max=100, ttl_seconds=3600)
    writer.write(first)
    writer.close()
    pg = PostgresWriter(settings.stores.postgres_dsn)
    pg.write(first)
    pg.close()
    read_tokens = {t: mint_token(settings, t, ["coherence:read"]) for t in tenants}
    write_tokens = {t: mint_token(settings, t, ["coherence:write"]) for t in tenants}
    fd_limit = _raise_fd_limit(2 * max(args.subscribers, 1) + 1024)
    # Far above the offered load, so the limiter refuses nothing (a refusal counts as an error).
    env = {
        "IGFLOW_API_RATE_LIMIT_RPS": str(max([100_000.0, *args.read_rates, *args.write_rates])),
        "IGFLOW_API_RATE_LIMIT_BURST": str(max(100_000, 10 * args.subscribers)),
    }
    if args.hostile_only:
        await hostile_phase(
            settings, read_tokens[tenants[0]], env, args.hostile_seconds, args.hostile_json
        )
        return
    load = os.getloadavg()
    say(
        f"topic {settings.kafka.topic}, {len(tenants)} tenants, fd limit {fd_limit}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} before the run"
    )
    fanouts: list[FanoutPhase] = []
    logs: dict[str, dict[str, int]] = {}
    with serve(settings, "development", env) as server:
        say("server up (development mode)")
        reads = Operation(
            "tenantCoherence (query text)",
            "read",
            args.read_rates,
            *read_requests(tenants, read_tokens, persisted=False),
        )
        writes = Operation(
            "publishCoherenceSignal",
            "write",
            args.write_rates,
            *write_requests(tenants, write_tokens, tag),
        )
        operations = [reads, writes]
        for op in operations:
            await op.measure_capacity(server, args)
        for op in operations:
            await op.run_rates(server, args, overload=False)
        seq = 100
        layouts = [(1, 1), (args.subscribers, 1), (args.subscribers, min(10, len(tenants)))]
        for subscribers, spread in layouts if args.subscribers > 0 else []:
            name = f"fan-out {subscribers:,} sub{'s' if subscribers > 1 else ''}, "
            name += f"{spread} tenant{'s' if spread > 1 else ''}"
            say(f"{name}: subscribing …")
            fanouts.append(
                await fanout_phase(
                    server,
                    settings,
                    name,
                    tenants[:spread],
                    read_tokens,
                    subscribers,
                    args.changes,
                    args.spacing,
                    seq,
                    args.deflate,
                )
            )
            seq += args.changes + 1
        for op in operations:
            await op.run_rates(server, args, overload=True)
        logs["development"] = server_log_summary(server.log)
    if args.persisted:
        # Production mode wants the issuer's keys named: the local stack's JWKS.
        keys = str(dev_keys_dir(settings) / JWKS_FILE)
        with serve(settings, "production", {**env, "IGFLOW_API_JWT_KEYS": keys}) as server:
            say("server up (production mode)")
            persisted = Operation(
                f"tenantCoherence ({PERSISTED_READ}, prod)",
                "read",
                args.read_rates,
                *read_requests(tenants, read_tokens, persisted=True),
            )
            operations.append(persisted)
            await persisted.measure_capacity(server, args)
            await persisted.run_rates(server, args, overload=False)
            await persisted.run_rates(server, args, overload=True)
            logs["production"] = server_log_summary(server.log)

    if args.isolation:
        isolation = await isolation_phase(settings, tenants, read_tokens, args)
    hostile = None
    if args.hostile:
        hostile = await hostile_phase(
            settings, read_tokens[tenants[0]], env, args.hostile_seconds, args.hostile_json
        )

    requests = [phase for op in operations for phase in op.phases]
    capacities = {op.name: op.capacity for op in operations}
    request_rows = [r.summary() for r in requests]
    fanout_rows = [f.summary() for f in fanouts]
    print_table(request_rows, capacities, fanout_rows, logs)
    document = {
        "host": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average_before": load,
        },
        "server": {
            "process": "igflow serve: one uvicorn process on loopback (ws: websockets-sansio)",
            # uvicorn picks these when installed (http "auto", loop "auto").
            "httptools": importlib.util.find_spec("httptools") is not None,
            "uvloop": importlib.util.find_spec("uvloop") is not None,
        },
        "generator": "this process: asyncio, keep-alive HTTP/1.1 connections, open loop",
        "tenants": len(tenants),
        "coalesce_ms": settings.api.coalesce_ms,
        "ws_deflate": args.deflate,
        "capacity": capacities,
        "requests": request_rows,
        "fanout": fanout_rows,
        "server_log": logs,
        "isolation": isolation if args.isolation else None,
        "hostile": hostile,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nresults: {args.json}")
    if args.plot:
        rows = request_rows + fanout_rows
        noise = sum(r["other_cpu_pct"] + r["steal_cpu_pct"] for r in rows) / max(1, len(rows))
        title = (
            f"igflow serve (one uvicorn process) on loopback, {os.cpu_count()} CPUs, "
            f"{len(tenants)} tenants; open-loop load from a second process; other processes "
            f"and hypervisor steal took {noise:.0f}% of a core on average"
        )
        plot(requests, fanouts, Path(args.plot), title)
        print(f"plot: {args.plot}")


async def isolation_phase(
    settings: Settings, tenants: list[str], tokens: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    """One tenant floods (closed loop, far past its bucket) while another reads at a steady
    100/s: the reader's latency beside the same reads with no flood, on a server with a small
    per-tenant limit (200/s), so that the flood is mostly refused with 429. Then one address
    floods with bad credentials (closed loop) while the reader reads at 100/s, on a server with
    the per-address limit on failed authentication and on one with it lifted."""
    flooder, reader = tenants[0], tenants[1]
    env = {"IGFLOW_API_RATE_LIMIT_RPS": "200", "IGFLOW_API_RATE_LIMIT_BURST": "200"}
    build_a, check_a = read_requests([flooder], tokens, persisted=False)
    build_b, check_b = read_requests([reader], tokens, persisted=False)
    out: dict[str, Any] = {"limit_rps": 200, "reader_rps": 100.0, "flood_in_flight": args.in_flight}
    with serve(settings, "development", env) as server:
        say("isolation: server up with a 200/s per-tenant limit")
        await open_loop(server, 50.0, args.warmup, build_b, check_b, start=20_000_000)
        await settle(server)
        alone = await open_loop(server, 100.0, args.seconds, build_b, check_b, start=21_000_000)
        await settle(server)
        say("isolation: the reader again, while the other tenant floods …")
        flood = asyncio.ensure_future(
            capacity(server, build_a, check_a, args.seconds + 1.0, args.in_flight)
        )
        during = await open_loop(server, 100.0, args.seconds, build_b, check_b, start=22_000_000)
        flooded = await flood
    for name, samples in (("reader_alone", alone), ("reader_during_flood", during)):
        summary = RequestPhase(name, "read", 100.0, args.seconds, samples).summary()
        out[name] = {k: summary[k] for k in ("requests", "errors", "from_schedule_ms")}
    # The flood's answers are nearly all 429 (counted as "errors" by the closed loop).
    out["flood"] = {
        "answered_rps": flooded["answered_rps"],
        "refused_or_failed": flooded["errors"],
        "server_cpu_pct": flooded["server_cpu_pct"],
    }
    alone_p95 = out["reader_alone"]["from_schedule_ms"]["p95"]
    during_p95 = out["reader_during_flood"]["from_schedule_ms"]["p95"]
    print(
        f"\nisolation (limit 200/s per tenant): reader at 100/s p95 {alone_p95:.1f} ms alone, "
        f"{during_p95:.1f} ms while another tenant floods at {flooded['answered_rps']:,.0f} "
        f"requests/s ({flooded['errors']:,} of them refused); reader errors "
        f"{out['reader_alone']['errors']} and {out['reader_during_flood']['errors']}"
    )
    # Bad credentials from another address, with the per-address limit on failed
    # authentication (the defaults) and, for comparison, with it lifted out of reach.
    build_x, check_x = bad_credential_requests("203.0.113.9")
    lifted = {"IGFLOW_API_AUTH_FAILURE_RPS": "1e9", "IGFLOW_API_AUTH_FAILURE_BURST": "1000000000"}
    for name, extra in (("limited", {}), ("unlimited", lifted)):
        with serve(settings, "development", {**env, **extra}) as server:
            say(f"isolation: bad credentials from one address, failed-auth limit {name} …")
            await open_loop(server, 50.0, args.warmup, build_b, check_b, start=23_000_000)
            await settle(server)
            flood = asyncio.ensure_future(
                capacity(server, build_x, check_x, args.seconds + 1.0, args.in_flight)
            )
            during = await open_loop(
                server, 100.0, args.seconds, build_b, check_b, start=24_000_000
            )
            flooded = await flood
            lookups = gauge(
                httpx.get(f"{server.metrics_url}/metrics", timeout=5).text,
                "igflow_api_key_lookups_total",
            )
        summary = RequestPhase(name, "read", 100.0, args.seconds, during).summary()
        out[f"reader_during_bad_credentials_{name}"] = {
            k: summary[k] for k in ("requests", "errors", "from_schedule_ms")
        }
        out[f"bad_credentials_{name}"] = {
            "answered_rps": flooded["answered_rps"],
            "server_cpu_pct": flooded["server_cpu_pct"],
            "api_key_lookups": lookups,
        }
        ms = summary["from_schedule_ms"]
        print(
            f"isolation: reader at 100/s p50 {ms['p50']:.1f} ms, p95 {ms['p95']:.1f} ms while "
            f"one address sends bad credentials at {flooded['answered_rps']:,.0f} requests/s "
            f"(failed-auth limit {name}; {lookups:,.0f} API key lookups); reader errors "
            f"{summary['errors']}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--read-rates", type=float, nargs="+", default=[100.0, 500.0], help="reads/s"
    )
    parser.add_argument(
        "--write-rates", type=float, nargs="+", default=[50.0, 200.0], help="writes/s"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per open-loop run")
    parser.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds at 50/s")
    parser.add_argument("--drain", type=float, default=10.0, help="wait for answers after")
    parser.add_argument("--capacity-seconds", type=float, default=3.0)
    parser.add_argument("--in-flight", type=int, default=16, help="closed-loop concurrency")
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--subscribers", type=int, default=1000, help="0: no fan-out")
    parser.add_argument("--changes", type=int, default=10, help="score changes per fan-out")
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between changes")
    parser.add_argument(
        "--deflate", action="store_true", help="subscribers negotiate permessage-deflate"
    )
    parser.add_argument(
        "--no-persisted",
        dest="persisted",
        action="store_false",
        help="skip the reads by persisted id (a second server, in production mode)",
    )
    parser.add_argument(
        "--no-isolation",
        dest="isolation",
        action="store_false",
        help="skip the flood-isolation run (a third server, with a 200/s per-tenant limit)",
    )
    parser.add_argument(
        "--no-hostile",
        dest="hostile",
        action="store_false",
        help="skip the worst /health latency while hostile documents are sent (another server)",
    )
    parser.add_argument(
        "--hostile-only", action="store_true", help="run only the hostile-documents section"
    )
    parser.add_argument("--hostile-seconds", type=float, default=3.0, help="seconds per attack")
    parser.add_argument(
        "--hostile-json", default=str(RESULTS / "api_hostile.json"), help="'' to skip"
    )
    parser.add_argument("--json", default=str(RESULTS / "api.json"), help="'' to skip")
    parser.add_argument("--plot", default=str(RESULTS / "api.png"), help="'' to skip")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
