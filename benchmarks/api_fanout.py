"""The subscription fan-out phase of ``benchmarks/api.py``: graphql-transport-ws subscribers of
``coherenceScoreChanged`` held by this process, score changes written with ``RedisWriter`` (which
publishes the events), and the latency from each write's return to each subscriber's receipt.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from benchmarks.api_loadgen import percentiles
from benchmarks.api_server import CpuMeter, Server, gauge, histogram_quantiles, say
from core.records import Provenance, ScoreChange
from core.settings import Settings
from sinks.redis import RedisWriter

#: The API issue's promise: a subscriber hears of a change within 250 ms of the sink's write.
FANOUT_BUDGET_MS = 250.0

SCORE_SUB = (
    "subscription S($tenantId: ID!) { coherenceScoreChanged(tenantId: $tenantId) "
    "{ tenantId score status updatedAt } }"
)
PROTOCOL = Subprotocol("graphql-transport-ws")


def score_change(tenant: str, seq: int, score: float) -> ScoreChange:
    """A score change as the flow's score step emits it (what the Redis sink writes)."""
    status = "HEALTHY" if score >= 0.75 else "WARN" if score >= 0.5 else "CRITICAL"
    return ScoreChange(
        tenant_id=tenant,
        score=score,
        status=status,
        updated_at=datetime(2026, 11, 21, tzinfo=UTC) + timedelta(seconds=seq),
        window_count=seq,
        window_weight=float(seq),
        provenance_id=f"bench-{tenant}-{seq}",
        provenance=Provenance("coherence.signals.v1", 0, seq, 1, f"{seq:064x}"),
        score_2dp=Decimal(str(round(score, 2))),
        seq=seq,
    )


@dataclasses.dataclass
class FanoutPhase:
    name: str
    subscribers: int
    tenants: int
    rounds: int
    spacing_s: float
    latencies_ms: np.ndarray[Any, Any]
    expected: int
    errors: collections.Counter[str]
    connect_s: float
    server_view: dict[str, float]
    cpu: dict[str, float]
    per_change: list[dict[str, float]]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "subscribers": self.subscribers,
            "tenants": self.tenants,
            "changes": self.rounds,
            "spacing_ms": self.spacing_s * 1000.0,
            "deliveries_expected": self.expected,
            "deliveries": int(self.latencies_ms.size),
            "errors": sum(v for k, v in self.errors.items() if k != "superseded"),
            "superseded": self.errors.get("superseded", 0),
            "error_kinds": dict(self.errors),
            "write_to_receipt_ms": percentiles(self.latencies_ms),
            "within_budget_pct": (
                100.0 * float((self.latencies_ms <= FANOUT_BUDGET_MS).mean())
                if self.latencies_ms.size
                else float("nan")
            ),
            # The server's own histogram: from the event's arrival from Redis to the subscriber's
            # wake-up (includes the 100 ms window; not the GraphQL execution nor the send).
            "server_arrival_to_wakeup_ms": self.server_view,
            "connect_s": self.connect_s,
            # CPU over the writes and deliveries, in % of one core; the server's per delivery.
            "server_cpu_pct": 100.0 * self.cpu["server_s"] / self.cpu["wall_s"],
            "generator_cpu_pct": 100.0 * self.cpu["generator_s"] / self.cpu["wall_s"],
            "other_cpu_pct": 100.0 * self.cpu["other_s"] / self.cpu["wall_s"],
            "steal_cpu_pct": 100.0 * self.cpu["steal_s"] / self.cpu["wall_s"],
            "server_cpu_ms_per_delivery": 1000.0 * self.cpu["server_s"] / max(1, self.expected),
            "budget_ms": FANOUT_BUDGET_MS,
            "per_change": self.per_change,
        }


async def _subscriber(
    server: Server, token: str, tenant: str, gate: asyncio.Semaphore, deflate: bool
) -> ClientConnection:
    async with gate:
        ws = await connect(
            server.ws_url,
            subprotocols=[PROTOCOL],
            compression="deflate" if deflate else None,
            ping_interval=None,
            open_timeout=60,
            close_timeout=5,
        )
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        ack = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if ack.get("type") != "connection_ack":
            msg = f"no connection_ack: {ack}"
            raise RuntimeError(msg)
        subscribe = {
            "id": "1",
            "type": "subscribe",
            "payload": {"query": SCORE_SUB, "variables": {"tenantId": tenant}},
        }
        await ws.send(json.dumps(subscribe))
        return ws


async def _listen(ws: ClientConnection, got: list[tuple[float, str | bytes]]) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for raw in ws:
            got.append((time.perf_counter(), raw))  # parsed later: keep the receipt cheap


async def _metrics(client: httpx.AsyncClient) -> str:
    return (await client.get("/metrics")).text


async def _wait_gauge(client: httpx.AsyncClient, ok: Callable[[float], bool], what: str) -> None:
    deadline = time.monotonic() + 120
    value = 0.0
    while time.monotonic() < deadline:
        value = gauge(await _metrics(client), "igflow_api_subscribers")
        if ok(value):
            return
        await asyncio.sleep(0.05)
    msg = f"igflow_api_subscribers stayed at {value:.0f}, waiting for {what}"
    raise RuntimeError(msg)


async def fanout_phase(
    server: Server,
    settings: Settings,
    name: str,
    tenants: list[str],
    tokens: dict[str, str],
    subscribers: int,
    rounds: int,
    spacing: float,
    first_seq: int,
    deflate: bool,
) -> FanoutPhase:
    """``subscribers`` subscriptions spread evenly over ``tenants``; ``rounds`` writes of one
    change per tenant, ``spacing`` seconds apart; latency from each write's return to each
    subscriber's receipt of that change."""
    gate = asyncio.Semaphore(64)
    # The client reads the server's metrics port (the API's own port has no /metrics).
    async with httpx.AsyncClient(base_url=server.metrics_url, timeout=10.0) as client:
        await _wait_gauge(client, lambda v: v == 0, "0 (the previous phase's subscribers)")
        started = time.perf_counter()
        assigned = [tenants[k % len(tenants)] for k in range(subscribers)]
        sockets = await asyncio.gather(
            *(_subscriber(server, tokens[t], t, gate, deflate) for t in assigned)
        )
        received: list[list[tuple[float, str | bytes]]] = [[] for _ in sockets]
        listeners = [
            asyncio.create_task(_listen(ws, got)) for ws, got in zip(sockets, received, strict=True)
        ]
        await _wait_gauge(client, lambda v: v >= subscribers, f"{subscribers} subscribers")
        connect_s = time.perf_counter() - started
        say(f"  {subscribers:,} subscribed in {connect_s:.1f} s; {rounds} changes …")
        before = await _metrics(client)

        writer = RedisWriter(settings.stores.redis_url, stream_max=100, ttl_seconds=3600)
        scores = [round(0.30 + 0.65 * ((r * 37) % 101) / 100 + r * 1e-6, 7) for r in range(rounds)]
        by_score = {s: r for r, s in enumerate(scores)}
        assert len(by_score) == rounds
        written: list[float] = []

        def write(r: int) -> float:
            writer.write([score_change(t, first_seq + r, scores[r]) for t in tenants])
            return time.perf_counter()

        meter = CpuMeter(server)
        t0 = time.perf_counter()
        for r in range(rounds):
            delay = t0 + r * spacing - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            # In the event loop's own thread (it blocks the loop ~1 ms): a writer thread would
            # have to wait for the GIL to read the clock while the loop handles deliveries.
            written.append(write(r))
        await asyncio.sleep(max(2.0, spacing * 2))  # the last deliveries
        cpu = meter.read()
        after = await _metrics(client)
        writer.close()

        say("  closing …")
        await asyncio.gather(*(ws.close() for ws in sockets))
        await asyncio.gather(*listeners)

    latencies: list[float] = []
    per_change: list[list[float]] = [[] for _ in range(rounds)]
    errors: collections.Counter[str] = collections.Counter()
    for got in received:
        heard: set[int] = set()
        for at, raw in got:
            message = json.loads(raw)
            if message.get("type") != "next":
                errors[f"message {message.get('type')}"] += 1
                continue
            if message["payload"].get("errors"):
                errors[f"graphql {message['payload']['errors'][0]}"] += 1
                continue
            score = message["payload"]["data"]["coherenceScoreChanged"]["score"]
            which = by_score.get(score)
            if which is None:
                errors["unknown score"] += 1
                continue
            heard.add(which)
            latencies.append((at - written[which]) * 1000.0)
            per_change[which].append(latencies[-1])
        last = max(heard, default=-1)
        # A change a subscriber did not hear while it heard a later one was coalesced away: the
        # server read both writes within one window (a score is a state: the newest wins).
        errors["superseded"] += sum(1 for r in range(last) if r not in heard)
        errors["never delivered"] += rounds - 1 - last
    expected = subscribers * rounds
    errors = +errors  # drop the zero counts
    return FanoutPhase(
        name,
        subscribers,
        len(tenants),
        rounds,
        spacing,
        np.array(latencies),
        expected,
        errors,
        connect_s,
        histogram_quantiles(before, after, "subscription_fanout_latency_ms"),
        cpu,
        [
            {"delivered": len(ms), **percentiles(np.array(ms))} if ms else {"delivered": 0}
            for ms in per_change
        ],
    )
