"""Synthetic probes: one canary signal per tenant through the real path, timed end to end.

A round, per tenant and concurrently: subscribe to the tenant's ``coherenceEvents`` over the
API's WebSocket (``graphql-transport-ws``), publish a canary (:mod:`core.canary`) with ``POST
/v1/coherence/signals``, and wait until the subscription delivers that signal: API → Kafka →
the flow (decode, validate, drift, dedupe, tenant-tag; dropped before score) → the Redis sink's
write and channel → the API's fan-out. The time from just before the publish to the receipt is
the tenant's probe freshness, observed in ``igflow_probe_freshness_seconds{tenant_id}`` (the
``probe_freshness`` SLI of ``slo/slos.json``); each outcome is counted in
``igflow_probe_runs_total{tenant_id, outcome}``: ``ok``, ``timeout`` (not back within
``probe.timeout_seconds``, observed as that long so it counts as bad), ``refused`` (the publish
was refused: the code is in the result, e.g. ``SOURCE_NOT_ALLOWED`` for a tenant that does not
list the probe's source) or ``error`` (the API could not be reached).

The canary also lands in the lake's ``signals`` table and the graph, like any signal; it never
counts in the tenant's score.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client import Counter, Histogram
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from core.canary import CANARY_SOURCE, CANARY_TYPE
from core.metric_labels import tenant_label
from core.slo import PROBE_BUCKETS

__all__ = ["PROBE_FRESHNESS", "PROBE_RUNS", "ProbeResult", "probe_round", "probe_tenant"]

PROBE_FRESHNESS = Histogram(
    "igflow_probe_freshness_seconds",
    "A canary signal's trip: the API's publish to its delivery by the API's subscription",
    ["tenant_id"],
    buckets=PROBE_BUCKETS,
)
PROBE_RUNS = Counter(
    "igflow_probe_runs_total", "Canary signals sent, by outcome", ["tenant_id", "outcome"]
)

_SUBSCRIPTION = "subscription($t: ID!) { coherenceEvents(tenantId: $t) { id source type } }"


@dataclasses.dataclass(frozen=True, slots=True)
class ProbeResult:
    """One canary's fate."""

    tenant_id: str
    signal_id: str
    #: ``ok``, ``timeout``, ``refused`` or ``error``.
    outcome: str
    #: Publish to receipt (``ok``), or the time waited (``timeout``); ``None`` otherwise.
    seconds: float | None
    #: The publish's answer: Kafka partition and offset, or the refusal's code.
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _record(result: ProbeResult) -> ProbeResult:
    label = tenant_label(result.tenant_id)
    PROBE_RUNS.labels(label, result.outcome).inc()
    if result.seconds is not None:
        PROBE_FRESHNESS.labels(label).observe(result.seconds)
    return result


def _failed(message: dict[str, Any]) -> bool:
    """A refused subscribe (``error``), or a subscription that ended with errors (a ``next``
    carrying them, then ``complete``)."""
    kind = message.get("type")
    return kind == "error" or (
        kind == "next" and bool((message.get("payload") or {}).get("errors"))
    )


async def probe_tenant(
    api_url: str,
    tenant_id: str,
    token: str,
    timeout: float,
    verify: ssl.SSLContext | bool = True,
) -> ProbeResult:
    """Send one canary for ``tenant_id`` through the API at ``api_url`` (with a bearer
    ``token`` holding the tenant's ``coherence:read`` and ``coherence:write``), wait for it to
    come back, and record the outcome in the metrics. ``verify``: for an ``https://`` API, a
    context trusting the CA its certificate must chain to (``True``: the system's CAs)."""
    signal_id = f"canary-{uuid.uuid4()}"
    ws_url = "ws" + api_url.removeprefix("http").rstrip("/") + "/graphql"
    auth = {"Authorization": f"Bearer {token}"}
    try:
        context = verify if isinstance(verify, ssl.SSLContext) else None
        async with connect(ws_url, subprotocols=["graphql-transport-ws"], ssl=context) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init", "payload": auth}))
            ack = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if ack.get("type") != "connection_ack":
                return _record(ProbeResult(tenant_id, signal_id, "refused", None, str(ack)))
            await ws.send(
                json.dumps(
                    {
                        "id": "1",
                        "type": "subscribe",
                        "payload": {"query": _SUBSCRIPTION, "variables": {"t": tenant_id}},
                    }
                )
            )
            # The API reads the ping only once the subscription is live (or has failed), so on
            # the pong every event published from now on reaches it: the canary cannot overtake
            # its own subscription (with TLS a new Redis connection takes ~85 ms longer).
            await ws.send(json.dumps({"type": "ping"}))
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                if message.get("type") == "pong":
                    break
                if _failed(message):
                    return _record(ProbeResult(tenant_id, signal_id, "refused", None, str(message)))
            body = {
                "tenantId": tenant_id,
                "signalId": signal_id,
                "type": CANARY_TYPE,
                "source": CANARY_SOURCE,
                "value": 1.0,
                "ts": datetime.now(UTC).isoformat(),
            }
            started = time.monotonic()
            async with httpx.AsyncClient(timeout=timeout, verify=verify) as http:
                resp = await http.post(
                    f"{api_url.rstrip('/')}/v1/coherence/signals", json=body, headers=auth
                )
            if resp.status_code != 202:
                code = resp.headers.get("x-igflow-code") or str(resp.status_code)
                return _record(ProbeResult(tenant_id, signal_id, "refused", None, code))
            where = resp.json()
            detail = f"partition {where['partition']} offset {where['offset']}"
            deadline = started + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                message = json.loads(await asyncio.wait_for(ws.recv(), left))
                if _failed(message):
                    return _record(ProbeResult(tenant_id, signal_id, "refused", None, str(message)))
                event = (message.get("payload") or {}).get("data") or {}
                if (event.get("coherenceEvents") or {}).get("id") == signal_id:
                    seconds = time.monotonic() - started
                    return _record(ProbeResult(tenant_id, signal_id, "ok", seconds, detail))
    except TimeoutError:
        return _record(ProbeResult(tenant_id, signal_id, "timeout", timeout, "not read back"))
    except (OSError, httpx.HTTPError, WebSocketException, ValueError) as exc:
        return _record(ProbeResult(tenant_id, signal_id, "error", None, type(exc).__name__))


async def probe_round(
    api_url: str,
    tenants: Sequence[str],
    token_for: Callable[[str], str],
    timeout: float,
    verify: ssl.SSLContext | bool = True,
) -> list[ProbeResult]:
    """One canary per tenant of ``tenants``, all at once; results in the tenants' order."""
    return list(
        await asyncio.gather(
            *(probe_tenant(api_url, t, token_for(t), timeout, verify) for t in tenants)
        )
    )
