"""Hostile documents for ``benchmarks/api.py``: the worst ``GET /health`` latency while they are
sent (issue 12, point 7: no request may hold the event loop more than a few milliseconds).

A prober process asks ``/health`` every 5 ms on its own keep-alive connection for the whole of
each attack, while ``senders`` threads send one kind of hostile request back to back, each text
new (a comment numbers it), so none is answered from the document cache. The first row is the
same probe with nothing else sent (this machine's own noise); the second, a benign document sent
the same way (the senders' own load, nothing hostile). Each row: what the server answered, the
attack's requests' own latency, and ``/health``'s p50, p99 and worst.
"""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from benchmarks.api_server import Server, say, serve
from core.settings import Settings
from tests.integration.hostile_documents import aliases, conflicting_fields, nested_fragments

__all__ = ["hostile_phase", "hostile_section"]

#: One attack request: given its number, send it and return the server's answer (a code).
Send = Callable[[int], str]


def _graphql(server: Server, token: str, text: str) -> Callable[[], Send]:
    """A sender factory: each sender thread gets its own keep-alive client."""

    def factory() -> Send:
        client = httpx.Client(base_url=server.url, timeout=60)
        headers = {"authorization": f"Bearer {token}"}

        def send(i: int) -> str:
            got = client.post("/graphql", json={"query": f"{text}\n# {i}"}, headers=headers)
            errors = got.json().get("errors") or [{}]
            return str(errors[0].get("extensions", {}).get("code", got.status_code))

        return send

    return factory


def _rest_deep_json(server: Server, token: str) -> Callable[[], Send]:
    def factory() -> Send:
        client = httpx.Client(base_url=server.url, timeout=60)
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}

        def send(i: int) -> str:
            body = b"[" * (10_000 + i % 100) + b"]" * (10_000 + i % 100)
            got = client.post("/v1/coherence/signals", content=body, headers=headers)
            return f"{got.status_code} {got.json().get('code')}"

        return send

    return factory


def _websocket(server: Server, token: str, text: str) -> Callable[[], Send]:
    """A new socket per request: connection_init, then one subscribe with ``text``."""

    def factory() -> Send:
        def send(i: int) -> str:
            try:
                with connect(
                    server.ws_url,
                    subprotocols=[Subprotocol("graphql-transport-ws")],
                    max_size=None,
                ) as ws:
                    init = {"Authorization": f"Bearer {token}"}
                    ws.send(json.dumps({"type": "connection_init", "payload": init}))
                    json.loads(ws.recv(timeout=30))
                    payload = {"query": f"{text}\n# {i}"}
                    ws.send(json.dumps({"id": str(i), "type": "subscribe", "payload": payload}))
                    answer = json.loads(ws.recv(timeout=60))
            except ConnectionClosed as closed:
                # The server may close (1009) while the client is still sending the message:
                # then the client sees the connection reset, not the close frame.
                return f"close {closed.rcvd.code}" if closed.rcvd else "closed while sending"
            return str(answer["payload"][0]["extensions"]["code"])

        return send

    return factory


#: The prober, in a process of its own: in this one, the senders' JSON encoding and framing
#: would hold this process's GIL and delay the probes (measured: a 64 ms worst case with
#: nothing sent at all).
_PROBER = """
import sys, time, json, httpx
latencies = []
with httpx.Client(base_url=sys.argv[1], timeout=60) as client:
    client.get("/health").raise_for_status()
    print("ready", flush=True)
    deadline = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < deadline:
        started = time.perf_counter()
        client.get("/health").raise_for_status()
        latencies.append(time.perf_counter() - started)
        time.sleep(0.005)
print(json.dumps(latencies), flush=True)
"""


def _attack(
    server: Server, factory: Callable[[], Send] | None, seconds: float, senders: int
) -> dict[str, Any]:
    took: list[float] = []
    answers: collections.Counter[str] = collections.Counter()
    stop = threading.Event()
    lock = threading.Lock()
    numbers = iter(range(10**9))

    def attack(send: Send) -> None:
        while not stop.is_set():
            with lock:
                i = next(numbers)
            started = time.perf_counter()
            answer = send(i)
            with lock:
                took.append(time.perf_counter() - started)
                answers[answer] += 1

    prober = subprocess.Popen(
        [sys.executable, "-c", _PROBER, server.url, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert prober.stdout is not None
    assert prober.stdout.readline().strip() == "ready"
    threads = []
    if factory is not None:
        threads = [threading.Thread(target=attack, args=(factory(),)) for _ in range(senders)]
    for thread in threads:
        thread.start()
    health = json.loads(prober.stdout.readline())
    prober.wait()
    stop.set()
    for thread in threads:
        thread.join()
    ms = np.array(health) * 1000.0
    return {
        "requests": sum(answers.values()),
        "answers": dict(answers),
        "request_ms": {
            "p50": float(np.percentile(np.array(took) * 1000.0, 50)) if took else None,
            "max": max(took) * 1000.0 if took else None,
        },
        "health_ms": {
            "probes": len(health),
            "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max()),
        },
    }


def hostile_section(
    server: Server, token: str, *, seconds: float = 3.0, senders: int = 1
) -> list[dict[str, Any]]:
    """Each attack for ``seconds`` from ``senders`` threads; one row per attack."""
    many, fragments, fields = aliases(50_000), nested_fragments(7), conflicting_fields(100)
    attacks: list[tuple[str, int, Callable[[], Send] | None]] = [
        ("nothing (this machine's noise)", 0, None),
        ("control: { __typename }", 16, _graphql(server, token, "{ __typename }")),
        ("nested fragment spreads, 7 levels", len(fragments), _graphql(server, token, fragments)),
        ("50,000 aliases", len(many), _graphql(server, token, many)),
        ("100 same-named fields, validated", len(fields), _graphql(server, token, fields)),
        ("JSON nested 10,000 deep (REST)", 20_000, _rest_deep_json(server, token)),
        ("50,000 aliases over WebSocket", len(many), _websocket(server, token, many)),
        ("9 MiB document over WebSocket", len(many) * 11, _websocket(server, token, many * 11)),
    ]
    rows = []
    for name, size, factory in attacks:
        say(f"hostile: {name} for {seconds:g} s …")
        rows.append({"attack": name, "bytes": size, **_attack(server, factory, seconds, senders)})
    print_hostile(rows, senders)
    return rows


def print_hostile(rows: list[dict[str, Any]], senders: int) -> None:
    print(
        f"\nhostile documents ({senders} senders back to back; /health every 5 ms on its own "
        "connection), milliseconds"
    )
    head = (
        f"{'attack':<36} {'bytes':>9} {'sent':>5} {'req p50':>8} {'req max':>8} "
        f"{'health p50':>10} {'p99':>7} {'max':>7}  answers"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        req, health = row["request_ms"], row["health_ms"]
        p50 = f"{req['p50']:.1f}" if req["p50"] is not None else ""
        top = f"{req['max']:.1f}" if req["max"] is not None else ""
        answers = ", ".join(f"{k} x{v}" for k, v in sorted(row["answers"].items()))
        print(
            f"{row['attack']:<36} {row['bytes']:>9,} {row['requests']:>5} {p50:>8} {top:>8} "
            f"{health['p50']:>10.1f} {health['p99']:>7.1f} {health['max']:>7.1f}  {answers}"
        )


async def hostile_phase(
    settings: Settings, token: str, env: dict[str, str], seconds: float, json_path: str
) -> list[dict[str, Any]]:
    """The section on a server of its own (development mode, so documents are ad hoc); its rows
    are also written to ``json_path`` (unless empty)."""
    with serve(settings, "development", env) as server:
        say("hostile documents: server up (development mode)")
        rows = await asyncio.to_thread(hostile_section, server, token, seconds=seconds)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(rows, indent=2) + "\n")
        print(f"hostile results: {json_path}")
    return rows
