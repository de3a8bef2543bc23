"""The load generator of ``benchmarks/api.py``: a small keep-alive HTTP/1.1 client, the open loop
(request i sent at t0 + i/rate, whatever the earlier ones are doing) and the closed loop
(capacity), and what one open-loop run measured (``Samples``, ``RequestPhase``) against the
brief's budgets.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.api_server import CpuMeter, Server

#: The product brief's budgets (p95) and our local aims, in milliseconds.
READ_BUDGET_MS, READ_AIM_MS = 350.0, 10.0
WRITE_BUDGET_MS, WRITE_AIM_MS = 700.0, 25.0


def percentiles(ms: np.ndarray[Any, Any]) -> dict[str, float]:
    if ms.size == 0:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(ms.max())}


# --- a small HTTP/1.1 client ------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time (no pipelining)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        length = 0
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status, body = int(head[9:12]), bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the server closed the connection"))


class Http:
    """A pool of keep-alive HTTP/1.1 connections to one loopback server, for POSTs with
    ``Content-Length`` answers (what uvicorn sends). Far cheaper per request than httpx
    (~3.8 ms of CPU per request on this machine), so that one process can offer 500 requests/s
    while the server takes the other core. A connection idle for ``keepalive`` seconds is
    closed rather than reused (uvicorn closes idle ones after 5 s: reusing one then races)."""

    def __init__(
        self, host: str, port: int, max_connections: int = 256, keepalive: float = 4.0
    ) -> None:
        self._host, self._port = host, port
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._keepalive = keepalive
        self.opened = 0

    async def post(
        self, path: str, body: bytes, head: bytes, on_send: Callable[[float], None]
    ) -> tuple[int, bytes]:
        """(status, body); ``head`` is extra header lines; ``on_send`` gets the time the request
        was written (``perf_counter``)."""
        async with self._slots:
            conn = await self._connection()
            assert conn.transport is not None
            waiter = asyncio.get_running_loop().create_future()
            conn.waiter = waiter
            request = (
                f"POST {path} HTTP/1.1\r\nhost: {self._host}:{self._port}\r\n"
                f"content-length: {len(body)}\r\n"
            ).encode()
            on_send(time.perf_counter())
            conn.transport.write(request + head + b"\r\n" + body)
            try:
                status, answer = await waiter
            except BaseException:
                conn.transport.close()
                raise
            if not conn.closed:
                conn.idle_since = time.perf_counter()
                self._idle.append(conn)
            return status, answer

    async def _connection(self) -> _Connection:
        stale = time.perf_counter() - self._keepalive
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and conn.idle_since > stale:
                return conn
            if conn.transport is not None:
                conn.transport.close()
        return await self._open()

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _transport, conn = await loop.create_connection(_Connection, self._host, self._port)
        self.opened += 1
        return conn

    def close(self) -> None:
        for conn in self._idle:
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()


def auth_headers(token: str) -> bytes:
    return f"authorization: Bearer {token}\r\ncontent-type: application/json\r\n".encode()


# --- request phases --------------------------------------------------------------------------

#: A request's body and extra header lines, built for request number i.
Build = Callable[[int], tuple[bytes, bytes]]
#: Why a 200 answer (its JSON) to request i is still wrong, or None.
Check = Callable[[int, dict[str, Any]], str | None]


@dataclasses.dataclass
class Samples:
    """One open-loop run: per request its scheduled, sent and answered times (perf_counter
    seconds; NaN: never sent or never answered) and whether the answer was right; the errors
    by kind; the CPU seconds the server and this process used meanwhile."""

    scheduled: np.ndarray[Any, Any]
    sent: np.ndarray[Any, Any]
    done: np.ndarray[Any, Any]
    ok: np.ndarray[Any, Any]
    errors: collections.Counter[str]
    cpu: dict[str, float]
    connections: int


@dataclasses.dataclass
class RequestPhase:
    name: str
    kind: str  # read or write
    rate: float
    seconds: float
    samples: Samples

    @property
    def budget_ms(self) -> float:
        return READ_BUDGET_MS if self.kind == "read" else WRITE_BUDGET_MS

    @property
    def aim_ms(self) -> float:
        return READ_AIM_MS if self.kind == "read" else WRITE_AIM_MS

    def latencies_ms(self) -> np.ndarray[Any, Any]:
        """Latency from the scheduled send of every request answered rightly."""
        s = self.samples
        ms: np.ndarray[Any, Any] = (s.done - s.scheduled)[s.ok] * 1000.0
        return ms

    def summary(self) -> dict[str, Any]:
        s = self.samples
        n = s.scheduled.size
        sent = s.sent[~np.isnan(s.sent)]
        answered = s.done[~np.isnan(s.done)]
        wall = float(answered.max() - s.scheduled[0]) if answered.size else float("nan")
        send_span = float(sent.max() - sent.min()) if sent.size > 1 else float("nan")
        good = s.ok
        return {
            "name": self.name,
            "kind": self.kind,
            "target_rps": self.rate,
            "seconds": self.seconds,
            "requests": n,
            "errors": int(n - good.sum()),
            "error_kinds": dict(s.errors),
            # Did the generator keep up? The rate requests actually left at, and how late.
            "sent_rps": (sent.size - 1) / send_span if send_span > 0 else float("nan"),
            "send_lag_ms": percentiles((s.sent - s.scheduled)[~np.isnan(s.sent)] * 1000.0),
            "answered_rps": answered.size / wall if wall > 0 else float("nan"),
            "from_schedule_ms": percentiles((s.done - s.scheduled)[good] * 1000.0),
            "from_send_ms": percentiles((s.done - s.sent)[good] * 1000.0),
            # CPU over the run, in % of one core: the server, this process, everything else.
            "server_cpu_pct": 100.0 * s.cpu["server_s"] / s.cpu["wall_s"],
            "generator_cpu_pct": 100.0 * s.cpu["generator_s"] / s.cpu["wall_s"],
            "other_cpu_pct": 100.0 * s.cpu["other_s"] / s.cpu["wall_s"],
            "steal_cpu_pct": 100.0 * s.cpu["steal_s"] / s.cpu["wall_s"],
            "server_cpu_ms_per_request": 1000.0 * s.cpu["server_s"] / max(1, answered.size),
            "connections": s.connections,
            "budget_p95_ms": self.budget_ms,
            "aim_p95_ms": self.aim_ms,
        }


async def _one(http: Http, build: Build, check: Check, number: int, out: Samples, i: int) -> None:
    body, head = build(number)

    def sent(at: float) -> None:
        out.sent[i] = at

    try:
        status, answer = await http.post("/graphql", body, head, sent)
    except (OSError, ConnectionError) as exc:
        out.errors[f"client {type(exc).__name__}"] += 1
        return
    finally:
        out.done[i] = time.perf_counter()
    if status != 200:
        out.errors[f"HTTP {status}"] += 1
        return
    data = json.loads(answer)
    if data.get("errors"):
        out.errors[f"graphql {data['errors'][0].get('extensions', {}).get('code')}"] += 1
        return
    why = check(number, data)
    if why is not None:
        out.errors[why] += 1
        return
    out.ok[i] = True


async def open_loop(
    server: Server,
    rate: float,
    seconds: float,
    build: Build,
    check: Check,
    *,
    start: int = 0,
    drain: float = 15.0,
) -> Samples:
    """Send ``rate * seconds`` requests (numbered from ``start``), request i at t0 + i/rate,
    whatever the earlier ones are doing; then wait up to ``drain`` seconds for the answers
    still out (those not answered by then count as errors)."""
    n = max(1, round(rate * seconds))
    nan = np.full(n, np.nan)
    out = Samples(
        nan.copy(), nan.copy(), nan.copy(), np.zeros(n, dtype=bool), collections.Counter(), {}, 0
    )
    http = Http("127.0.0.1", server.port)
    tasks: list[asyncio.Task[None]] = []
    meter = CpuMeter(server)
    t0 = time.perf_counter() + 0.02
    for i in range(n):
        at = t0 + i / rate
        out.scheduled[i] = at
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(http, build, check, start + i, out, i)))
    _done, pending = await asyncio.wait(tasks, timeout=drain)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
        out.errors[f"no answer {drain:g} s after the last send"] += len(pending)
        for i, task in enumerate(tasks):
            if task in pending:
                out.done[i] = np.nan
    out.cpu = meter.read()
    out.connections = http.opened
    http.close()
    return out


async def capacity(
    server: Server, build: Build, check: Check, seconds: float, in_flight: int
) -> dict[str, float]:
    """Closed loop: ``in_flight`` requests always outstanding for ``seconds``; the most the
    server answers per second, and its CPU per request."""
    http = Http("127.0.0.1", server.port)
    counts = collections.Counter[str]()
    stop = time.perf_counter() + seconds
    meter = CpuMeter(server)

    async def worker(w: int) -> None:
        k = 0
        while time.perf_counter() < stop:
            body, head = build(w + k * in_flight)
            k += 1
            try:
                status, answer = await http.post("/graphql", body, head, lambda _at: None)
            except (OSError, ConnectionError):
                counts["error"] += 1
                continue
            counts["ok" if status == 200 and b'"errors"' not in answer else "error"] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(in_flight)))
    wall = time.perf_counter() - started
    cpu = meter.read()
    http.close()
    total = counts["ok"] + counts["error"]
    return {
        "in_flight": in_flight,
        "seconds": wall,
        "answered_rps": total / wall,
        "errors": counts["error"],
        "server_cpu_pct": 100.0 * cpu["server_s"] / wall,
        "other_cpu_pct": 100.0 * cpu["other_s"] / wall,
        "steal_cpu_pct": 100.0 * cpu["steal_s"] / wall,
        "server_cpu_ms_per_request": 1000.0 * cpu["server_s"] / max(1, total),
        "generator_cpu_ms_per_request": 1000.0 * cpu["generator_s"] / max(1, total),
    }
