"""Failed authentications are limited per client address, before anything is checked.

A caller that sends bad credentials costs the server a JWT parse or signature check, or an API key
lookup in Postgres, per request; at ~1,000 requests/s that slowed other tenants' reads from ~1 ms
to a median of 68-82 ms (issue 12). :class:`FailedAuthLimit` wraps the whole application (ASGI
middleware) and gives each client address :class:`~api.ratelimit.FailureBuckets` of
``api.auth_failure_burst`` failures, refilled at ``api.auth_failure_rps``. A failure is any 401
the application answers (a credential refused: ``AUTH_*``, or a webhook ``SIGNATURE_INVALID``) and
any WebSocket it closes with 4403 (refused in ``connection_init``).

Once an address has none left, its requests are answered ``429 AUTH_RATE_LIMITED``
(``application/problem+json``, ``Retry-After``) here, before routing, before any credential is
parsed or looked up, and without a log line each (one per address and cut-off): a dictionary
lookup and a prepared answer. Each request of an address with recent failures reserves one
before its credentials are checked and gets it back if it passes, so concurrent requests cannot
all slip through when the bucket refills. Two exceptions: ``/health`` and
``/ready`` (no credentials), and a request whose credentials this process has already verified
and still trusts (:meth:`api.auth.Authenticator.known`, a hash and a dict lookup), so a good
client behind the same address as an attacker keeps working; a new one waits for
``Retry-After``. A WebSocket upgrade is judged by its headers alone (its ``connection_init``
payload comes later), so a subscriber from a cut-off address passes only if its upgrade request
carries the verified credentials; otherwise the upgrade is answered 429.

The address is the one uvicorn reports: the peer, or ``X-Forwarded-For`` when the peer is a
trusted proxy (uvicorn's ``--forwarded-allow-ips``, by default 127.0.0.1 only). IPv6 addresses
count by their /64, the block one host usually holds. The buckets are per process.
"""

from __future__ import annotations

import ipaddress
import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import Authenticator
from api.metrics import AUTH_THROTTLED
from api.problems import PROBLEM_JSON
from api.ratelimit import FailureBuckets
from core.reasons import ReasonCode

__all__ = ["FailedAuthLimit", "client_key"]

log = logging.getLogger(__name__)

#: Paths that take no credentials, so never fail authentication.
_OPEN = frozenset({"/health", "/ready"})
_CODE = ReasonCode.AUTH_RATE_LIMITED.value
_MAX_ANNOUNCED = 10_000
_BODY = json.dumps(
    {
        "type": f"urn:igflow:problem:{_CODE.lower()}",
        "title": "Too Many Requests",
        "status": 429,
        "code": _CODE,
        "detail": "too many failed authentications from this address",
    }
).encode()


def client_key(scope: Scope) -> str | None:
    """The address a request's failures count against (an IPv6 address's /64), or ``None``."""
    client = scope.get("client")
    if not client:
        return None
    host = str(client[0])
    if ":" not in host:
        return host
    try:
        network = ipaddress.IPv6Network((host.split("%", 1)[0], 64), strict=False)
    except ValueError:
        return host
    return str(network)


class FailedAuthLimit:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp, auth: Authenticator, rate: float, burst: int) -> None:
        self._app = app
        self._auth = auth
        self._failures = FailureBuckets(rate, burst)
        #: Addresses whose cut-off was logged (once each, until their failures are forgotten).
        self._announced: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        key = client_key(scope) if kind in ("http", "websocket") else None
        if key is None or scope["path"] in _OPEN:
            await self._app(scope, receive, send)
            return
        failures = self._failures
        wait = failures.take(key)
        if wait is None:
            self._announced.discard(key)  # no recent failure: a new cut-off is news again
        elif wait and not self._known(scope):
            await self._refuse(scope, send, key, wait)
            return
        # wait == 0.0: a failure is reserved for this request, given back if it passes.
        pending = wait == 0.0

        async def watch(message: Message) -> None:
            nonlocal pending
            kind = message["type"]
            failed = (kind == "http.response.start" and message["status"] == 401) or (
                kind == "websocket.close" and message.get("code") == 4403
            )
            if failed:
                if not pending:
                    failures.fail(key)
                pending = False
            elif pending and kind in ("http.response.start", "websocket.send"):
                pending = False  # answered, or a socket's connection_ack: it passed
                failures.refund(key)
            await send(message)

        try:
            await self._app(scope, receive, watch)
        finally:
            if pending:
                failures.refund(key)

    def _known(self, scope: Scope) -> bool:
        authorization = api_key = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-api-key":
                api_key = value.decode("latin-1")
        return self._auth.known(authorization, api_key)

    async def _refuse(self, scope: Scope, send: Send, key: str, wait: float) -> None:
        AUTH_THROTTLED.inc()
        if key not in self._announced:
            if len(self._announced) >= _MAX_ANNOUNCED:
                self._announced.clear()
            self._announced.add(key)
            log.warning(
                "address cut off after failed authentications",
                extra={"op": "auth", "error_code": _CODE, "client": key},
            )
        headers = [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(_BODY)).encode()),
            (b"retry-after", str(max(1, round(wait + 0.5))).encode()),
            (b"x-igflow-code", _CODE.encode()),
        ]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": _BODY})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 429, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": _BODY})
        else:
            await send({"type": "websocket.close", "code": 1008})  # policy violation
