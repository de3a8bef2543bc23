"""The REST side: HTTP push ingest, health, readiness and the OpenAPI document.

``POST /v1/coherence/signals`` takes one signal as JSON (the GraphQL input's field names),
authenticates the caller (bearer JWT or ``X-API-Key``), applies the tenant's rate limit, checks an
optional webhook signature, validates the body's shape, asks the policy for ``write`` on the
body's tenant, then runs the flow's validate rules and produces to Kafka
(:class:`api.publish.SignalPublisher`). ``202 Accepted`` once the broker acknowledged it, with
where it went. Every error is RFC 7807 ``application/problem+json`` with a reason code.

Signed pushes (webhooks, :mod:`api.webhooks`): a sender holding ``api.webhook_secret`` adds
``X-Igflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``; the API checks it
(constant time, 300 s tolerance) on top of the credentials, refuses a signature already used
within its window (``SIGNATURE_REPLAYED``, in every process sharing the Redis), and records the
push as ``via=webhook``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import request_json
from api.auth import AuthFailure
from api.metrics import API_SECONDS, HTTP_REQUESTS, INGEST_PUBLISHED, RATE_LIMITED
from api.problems import problem
from api.publish import PublishRejected
from api.request_json import BadJson
from api.schema import signal_from_input
from api.services import Services
from api.webhooks import ReplayStoreUnavailable, Signature, verify
from core.bodies import read_body
from core.metric_labels import tenant_label
from core.reasons import ReasonCode
from core.resources import package_path

__all__ = ["OPENAPI_FILE", "Rest", "signal_input"]

log = logging.getLogger(__name__)

OPENAPI_FILE = package_path("api", "openapi.json")
_ROUTE = "/v1/coherence/signals"
_FIELDS = {"tenantId", "signalId", "type", "value", "weight", "source", "ts", "selectors"}


def signal_input(data: Any) -> dict[str, Any] | str:
    """The body as the GraphQL input dict, or why its shape is wrong (names the field only)."""
    if not isinstance(data, dict):
        return "the body is not a JSON object"
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        return f"unknown field {unknown[0]!r}"[:100]
    for name in ("tenantId", "type", "source", "ts"):
        if not isinstance(data.get(name), str):
            return f"{name} must be a string"
    for name, optional in (("value", False), ("weight", True)):
        value = data.get(name)
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name} must be a number"
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer past the largest float (a 400-digit value)
            finite = False
        if not finite:
            return f"{name} must be finite"
    if data.get("signalId") is not None and not isinstance(data["signalId"], str):
        return "signalId must be a string"
    selectors = data.get("selectors")
    if selectors is not None and not (
        isinstance(selectors, list) and all(isinstance(s, str) for s in selectors)
    ):
        return "selectors must be an array of strings"
    try:
        ts = datetime.fromisoformat(data["ts"])
    except ValueError:
        return "ts is not an ISO 8601 time"
    return {**data, "ts": ts}


class Rest:
    """The REST endpoints, bound to the process's services."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._openapi = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))

    async def publish(self, request: Request) -> Response:
        started = time.perf_counter()
        response = await self._publish(request)
        HTTP_REQUESTS.labels(_ROUTE, str(response.status_code)).inc()
        tenant = getattr(request.state, "sli_tenant", None)
        if tenant is not None:
            API_SECONDS.labels("write", tenant).observe(time.perf_counter() - started)
        if response.status_code >= 400:
            log.info(
                "push refused",
                extra={
                    "op": "rest",
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                    "error_code": response.headers.get("x-igflow-code"),
                },
            )
        return response

    async def _publish(self, request: Request) -> Response:
        services = self._services
        try:
            principal = await services.auth.authenticate(
                request.headers.get("authorization"), request.headers.get("x-api-key")
            )
        except AuthFailure as failure:
            return problem(failure.reason, failure.detail, instance=_ROUTE)
        refused = await services.operations.refused("publish")
        if refused is not None:
            return problem(refused, "the publish operation is switched off", instance=_ROUTE)
        wait = services.buckets.take(principal.tenant_id)
        if wait > 0:
            RATE_LIMITED.labels(principal.tenant_id).inc()
            return problem(
                ReasonCode.RATE_LIMITED,
                "rate limit exceeded for this tenant",
                instance=_ROUTE,
                retry_after=wait,
            )
        # Counted in the write-latency SLI from here (a refused flood is not the tenant's latency).
        request.state.sli_tenant = tenant_label(principal.tenant_id)
        body = await read_body(request, services.settings.api.max_body_bytes)
        if body is None:
            return problem(ReasonCode.BAD_REQUEST, "request body too large", status=413)
        via = "rest"
        signature: Signature | None = None
        header = request.headers.get("x-igflow-signature")
        if header is not None:
            now = time.time()
            checked = verify(services.settings.api.webhook_secret, header, body, now)
            if isinstance(checked, str):
                return problem(ReasonCode.SIGNATURE_INVALID, checked, instance=_ROUTE)
            try:
                first = await services.replays.first_use(checked, now)
            except ReplayStoreUnavailable:
                return problem(ReasonCode.STORE_UNAVAILABLE, "signed pushes cannot be checked now")
            if not first:
                return problem(
                    ReasonCode.SIGNATURE_REPLAYED,
                    "this signature was used already",
                    instance=_ROUTE,
                )
            signature, via = checked, "webhook"
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return problem(ReasonCode.BAD_REQUEST, "send application/json", status=415)
        try:
            data = request_json.loads(body)
        except BadJson as bad:
            return problem(ReasonCode.BAD_REQUEST, bad.detail, instance=_ROUTE)
        parsed = signal_input(data)
        if isinstance(parsed, str):
            return problem(ReasonCode.FIELD_INVALID, parsed, instance=_ROUTE)
        decision = services.authz.decide(principal, "write", parsed["tenantId"])
        if not decision.allow:
            reason = decision.reason or ReasonCode.TENANT_FORBIDDEN
            return problem(reason, "not authorized to write this tenant's signals")
        signal = signal_from_input(parsed)
        try:
            delivery = await services.publisher.publish(
                signal,
                via=via,
                principal=principal.subject,
                body=body,
                traceparent=request.headers.get("traceparent"),
            )
        except PublishRejected as exc:
            response = problem(exc.reason, exc.detail, instance=_ROUTE)
            if signature is not None and response.status_code >= 500:
                await services.replays.release(signature)  # not the sender's fault: may retry
            return response
        INGEST_PUBLISHED.labels(via).inc()
        log.info(
            "signal published",
            extra={
                "op": via,
                "tenant_id": signal.tenant_id,
                "kafka_partition": delivery.partition,
                "kafka_offset": delivery.offset,
                "input_hash": delivery.input_hash,
            },
        )
        return JSONResponse(
            {
                "accepted": True,
                "signalId": delivery.signal_id,
                "topic": delivery.topic,
                "partition": delivery.partition,
                "offset": delivery.offset,
                "inputHash": delivery.input_hash,
            },
            status_code=202,
        )

    async def health(self, _request: Request) -> Response:
        """Liveness: the process answers."""
        return JSONResponse({"status": "ok"})

    async def ready(self, _request: Request) -> Response:
        """Readiness: every dependency answers (503 and which ones when not)."""
        services = self._services
        checks = await services.scores.ping()
        checks["kafka"] = await asyncio.to_thread(services.publisher.ready)
        checks["schema_registry"] = await asyncio.to_thread(services.publisher.registry_ready)
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "checks": checks},
            status_code=200 if ready else 503,
        )

    async def openapi(self, _request: Request) -> Response:
        return JSONResponse(self._openapi)
