"""GraphQL over HTTP (``POST /graphql``) and over WebSocket (graphql-transport-ws).

Each request goes through the same gates, in order, before anything executes:

1. **authentication** (:class:`api.auth.Authenticator`): a bearer JWT or an ``X-API-Key``; on a
   WebSocket, the ``connection_init`` payload (``{"Authorization": "Bearer ..."}`` or
   ``{"X-API-Key": ...}``) or the upgrade request's headers. Failure: HTTP 401 (WebSocket close
   code 4403, the reason code as the close reason);
2. **rate limit**: the caller's tenant's token bucket (:mod:`api.ratelimit`). Failure: HTTP 429
   with ``Retry-After`` (WebSocket: an ``error`` message for that subscribe);
3. **admission** (:mod:`api.persisted`): the allowlist in production mode, Apollo APQ;
4. **validation** with the operation-cost limit (:mod:`api.documents`: cached per text);
5. **execution**, where every resolver asks the policy first (:mod:`api.schema`).

Every error carries ``extensions.code`` (a reason code); an unexpected exception is reported as
``INTERNAL_SERVER_ERROR`` with no text of its own, and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncGenerator
from datetime import timedelta
from inspect import isawaitable
from typing import Any

from ariadne import graphql
from ariadne.asgi.handlers import GraphQLTransportWSHandler
from ariadne.asgi.handlers.graphql_transport_ws import ClientContext
from ariadne.types import Operation
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLSchema,
    OperationType,
    get_operation_ast,
)
from graphql.execution import Executor, create_source_event_stream, execute_subscription_event
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from api import request_json
from api.auth import AuthFailure, Principal
from api.documents import Documents
from api.events import EventBatch, SubscriptionEnded, TenantStream
from api.metrics import API_SECONDS, FANOUT_LATENCY, RATE_LIMITED, REQUEST_SECONDS, REQUESTS
from api.persisted import Admission, sha256_hex
from api.request_json import BadJson
from api.services import Services
from api.ws_messages import INVALID_MESSAGE, protocol_message
from core.bodies import read_body
from core.metric_labels import tenant_label
from core.reasons import ReasonCode

__all__ = ["Gates", "GraphQLEndpoint", "SubscriptionsHandler", "format_error"]

log = logging.getLogger(__name__)

_STATUS = {
    ReasonCode.AUTH_MISSING: 401,
    ReasonCode.AUTH_INVALID: 401,
    ReasonCode.AUTH_EXPIRED: 401,
    ReasonCode.RATE_LIMITED: 429,
    ReasonCode.QUERY_NOT_ALLOWED: 403,
    ReasonCode.BAD_REQUEST: 400,
    # The API key table could not be read: try again, the credentials may well be good.
    ReasonCode.STORE_UNAVAILABLE: 503,
    # Apollo clients expect 200 here, then resend the query with its hash.
    ReasonCode.PERSISTED_QUERY_NOT_FOUND: 200,
}


class _DropGraphQLErrors(logging.Filter):
    """Ariadne logs every GraphQL error at ERROR, expected ones (a denial, NOT_FOUND) included;
    :func:`format_error` logs the unexpected ones itself, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not isinstance(record.msg, GraphQLError)


#: The logger handed to Ariadne.
ARIADNE_LOGGER = "api.ariadne"
logging.getLogger(ARIADNE_LOGGER).addFilter(_DropGraphQLErrors())

_AUTH = frozenset({ReasonCode.AUTH_MISSING, ReasonCode.AUTH_INVALID, ReasonCode.AUTH_EXPIRED})


def format_error(error: GraphQLError, debug: bool = False) -> dict[str, Any]:
    """Ariadne's error formatter: every error gets ``extensions.code``; no internals leak."""
    formatted: dict[str, Any] = dict(error.formatted)
    extensions: dict[str, Any] = dict(formatted.get("extensions") or {})
    if "code" not in extensions:
        if "cost" in extensions:
            extensions["code"] = ReasonCode.QUERY_TOO_COSTLY.value
        elif error.original_error is None or isinstance(error.original_error, GraphQLError):
            extensions["code"] = ReasonCode.BAD_REQUEST.value  # syntax, validation, variables
        else:
            log.error("resolver failed", exc_info=error.original_error)
            extensions["code"] = ReasonCode.INTERNAL_SERVER_ERROR.value
            formatted["message"] = "internal error"
    formatted["extensions"] = extensions
    return formatted


def _errors(reason: ReasonCode, message: str) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": reason.value}}]}


class Gates:
    """Authentication, rate limit and admission, shared by HTTP and WebSocket."""

    def __init__(self, schema: GraphQLSchema, services: Services) -> None:
        self.schema = schema
        self.services = services
        self.production = services.persisted.production
        self.documents = Documents(
            schema,
            max_cost=services.settings.api.max_query_cost,
            introspection=not self.production,
            max_tokens=services.settings.api.max_query_tokens,
        )
        self._names = {sha256_hex(doc): op for op, doc in services.persisted.by_id.items()}

    def operation_label(self, document: str) -> str:
        """The metric label: the allowlist id of the document, else ``other``."""
        return self._names.get(sha256_hex(document), "other")

    def admit(self, principal: Principal) -> None:
        wait = self.services.buckets.take(principal.tenant_id)
        if wait > 0:
            RATE_LIMITED.labels(principal.tenant_id).inc()
            raise _Limited(wait)


def _kind(document: DocumentNode | None, operation_name: object) -> str:
    """``write`` for a mutation, else ``read`` (the latency SLI's kind)."""
    name = operation_name if isinstance(operation_name, str) else None
    operation = None if document is None else get_operation_ast(document, name)
    if operation is not None and operation.operation is OperationType.MUTATION:
        return "write"
    return "read"


class _Limited(Exception):
    def __init__(self, wait: float) -> None:
        super().__init__("rate limited")
        self.wait = wait


class GraphQLEndpoint:
    """The ASGI endpoint of ``POST /graphql``."""

    def __init__(self, gates: Gates) -> None:
        self._gates = gates
        self._services = gates.services

    async def handle(self, request: Request) -> Response:
        """Answer one ``POST /graphql``."""
        started = time.perf_counter()
        label = "other"
        try:
            response, label = await self._handle(request)
        except _Limited as limited:
            response = JSONResponse(
                _errors(ReasonCode.RATE_LIMITED, "rate limit exceeded for this tenant"),
                status_code=429,
                headers={
                    "Retry-After": str(max(1, round(limited.wait + 0.5))),
                    "x-igflow-code": ReasonCode.RATE_LIMITED.value,
                },
            )
            REQUESTS.labels(ReasonCode.RATE_LIMITED.value).inc()
        seconds = time.perf_counter() - started
        REQUEST_SECONDS.labels(label).observe(seconds)
        sli = getattr(request.state, "sli", None)
        if sli is not None:
            API_SECONDS.labels(*sli).observe(seconds)
        code = response.headers.get("x-igflow-code")
        log.log(
            logging.INFO if code else logging.DEBUG,
            "graphql request",
            extra={"op": label, "latency_ms": round(seconds * 1000, 3), "error_code": code},
        )
        return response

    async def _handle(self, request: Request) -> tuple[Response, str]:
        services = self._services
        try:
            principal = await services.auth.authenticate(
                request.headers.get("authorization"), request.headers.get("x-api-key")
            )
        except AuthFailure as failure:
            return self._refuse(failure.reason, failure.detail), "other"
        self._gates.admit(principal)
        body = await read_body(request, services.settings.api.max_body_bytes)
        if body is None:
            return self._refuse(ReasonCode.BAD_REQUEST, "request body too large"), "other"
        try:
            data = request_json.loads(body)
        except BadJson as bad:
            return self._refuse(ReasonCode.BAD_REQUEST, bad.detail), "other"
        if not isinstance(data, dict):
            return self._refuse(ReasonCode.BAD_REQUEST, "the body is not a JSON object"), "other"
        try:
            document = services.persisted.resolve(data)
        except Admission as refused:
            return self._refuse(refused.reason, refused.detail), "other"
        label = self._gates.operation_label(document)
        data = {**data, "query": document}
        data.pop("id", None)
        data.pop("documentId", None)
        # A new text is parsed and validated off the event loop; ariadne then finds it cached.
        prepared, _errors_found = await self._gates.documents.prepare_async(document)
        kind = _kind(prepared, data.get("operationName"))
        request.state.sli = (kind, tenant_label(principal.tenant_id))
        _success, result = await graphql(
            self._gates.schema,
            data,
            context_value={
                "request": request,
                "principal": principal,
                "services": services,
                "body": body,
            },
            query_parser=self._gates.documents.parser,
            query_validator=self._gates.documents.validator,
            error_formatter=format_error,
            logger=ARIADNE_LOGGER,
        )
        errors = result.get("errors") or []
        status = "ok" if not errors else errors[0].get("extensions", {}).get("code", "ERROR")
        REQUESTS.labels(status).inc()
        # Executed (even with field errors, such as a denial): 200; refused before: 400.
        response = JSONResponse(result, status_code=200 if "data" in result else 400)
        if errors:
            response.headers["x-igflow-code"] = status
        return response, label

    def _refuse(self, reason: ReasonCode, message: str) -> Response:
        REQUESTS.labels(reason.value).inc()
        headers = {"x-igflow-code": reason.value}
        if reason in _AUTH:
            headers["WWW-Authenticate"] = 'Bearer realm="igflow"'
        return JSONResponse(
            _errors(reason, message), status_code=_STATUS.get(reason, 400), headers=headers
        )


class SubscriptionsHandler(GraphQLTransportWSHandler):
    """graphql-transport-ws with the API's gates: authenticate on ``connection_init``, then
    rate-limit and admit each ``subscribe`` (persisted ids and hashes resolve here too)."""

    def __init__(self, gates: Gates) -> None:
        self._gates = gates
        self._services = gates.services
        api = gates.services.settings.api
        self._max_subscriptions = api.ws_max_subscriptions
        # An unauthenticated socket is closed (4408) unless it sends connection_init by then.
        super().__init__(
            connection_init_wait_timeout=timedelta(seconds=api.ws_init_timeout_seconds)
        )

    async def handle_websocket(self, websocket: WebSocket) -> None:
        """Ariadne's message loop, with each message checked first
        (:func:`api.ws_messages.protocol_message`): an invalid one closes the socket with the
        protocol's 4400 and ``BAD_REQUEST`` as the reason, instead of raising inside a handler."""
        await websocket.accept("graphql-transport-ws")
        client_context = ClientContext()
        waiting = self.handle_connection_init_timeout(websocket, client_context)
        timeout = client_context.connection_init_timeout_task = asyncio.create_task(waiting)
        try:
            while _open(websocket):
                event = await websocket.receive()
                if event["type"] == "websocket.disconnect":
                    break
                message = protocol_message(event)
                if isinstance(message, str):
                    REQUESTS.labels(ReasonCode.BAD_REQUEST.value).inc()
                    log.info(
                        "websocket message refused",
                        extra={"op": "ws", "error_code": ReasonCode.BAD_REQUEST.value},
                    )
                    await websocket.close(INVALID_MESSAGE, ReasonCode.BAD_REQUEST.value)
                    break
                await self.handle_websocket_message(websocket, message, client_context)
        except WebSocketDisconnect:
            pass
        finally:
            timeout.cancel()
            for operation_id in list(client_context.operations):
                # A delivery that was sending when the client left ends with its disconnect.
                with contextlib.suppress(WebSocketDisconnect):
                    await self.stop_websocket_operation(websocket, operation_id, client_context)

    async def observe_async_results(
        self,
        websocket: WebSocket,
        results_producer: AsyncGenerator[Any, None],
        operation_id: str,
        client_context: Any,
    ) -> None:
        """Ariadne's, for what its own path runs over a socket (a query or a mutation), but
        quiet when the client has left: Ariadne logged the disconnect as a failed resolver,
        with its traceback, and raised again sending that error (found by fuzzing the socket)."""
        try:
            async for result in results_producer:
                payload = result if isinstance(result, dict) else _payload(result)
                await websocket.send_json({"type": "next", "id": operation_id, "payload": payload})
        except WebSocketDisconnect:
            return  # the connection's loop ends its operations
        client_context.operations.pop(operation_id, None)
        client_context.operation_tasks.pop(operation_id, None)
        if _open(websocket):
            with contextlib.suppress(WebSocketDisconnect):
                await websocket.send_json({"type": "complete", "id": operation_id})

    async def handle_websocket_invalid_type(self, websocket: WebSocket) -> None:
        REQUESTS.labels(ReasonCode.BAD_REQUEST.value).inc()
        await websocket.close(INVALID_MESSAGE, ReasonCode.BAD_REQUEST.value)

    async def handle_websocket_connection_init_message(
        self, websocket: WebSocket, message: dict[str, Any], client_context: Any
    ) -> None:
        if client_context.connection_init_received:
            await websocket.close(code=4429)  # the protocol's "too many initialisation requests"
            return
        client_context.connection_init_received = True
        payload = message.get("payload")
        headers = {k.lower(): v for k, v in payload.items()} if isinstance(payload, dict) else {}
        if not all(isinstance(headers.get(k, ""), str) for k in ("authorization", "x-api-key")):
            # {"Authorization": 123}, a list, an object: not a credential.
            REQUESTS.labels(ReasonCode.AUTH_INVALID.value).inc()
            await websocket.close(code=4403, reason=ReasonCode.AUTH_INVALID.value)
            return
        authorization = headers.get("authorization") or websocket.headers.get("authorization")
        api_key = headers.get("x-api-key") or websocket.headers.get("x-api-key")
        try:
            principal = await self._services.auth.authenticate(authorization, api_key)
        except AuthFailure as failure:
            REQUESTS.labels(failure.reason.value).inc()
            # 4403 is the protocol's "Forbidden"; the reason code rides as the close reason.
            await websocket.close(code=4403, reason=failure.reason.value)
            return
        websocket.scope["igflow.principal"] = principal
        await websocket.send_json({"type": "connection_ack"})
        client_context.connection_acknowledged = True

    async def get_context_for_request(self, request: Any, data: Any) -> Any:
        return {
            "request": request,
            "principal": request.scope["igflow.principal"],
            "services": self._services,
        }

    async def handle_websocket_subscribe(
        self, websocket: WebSocket, data: Any, operation_id: str, client_context: Any
    ) -> None:
        principal: Principal | None = websocket.scope.get("igflow.principal")
        if principal is None or not client_context.connection_acknowledged:
            await websocket.close(code=4401, reason=ReasonCode.AUTH_MISSING.value)  # Unauthorized
            return
        refusal: tuple[ReasonCode, str] | None = None
        if not isinstance(data, dict):
            refusal = (ReasonCode.BAD_REQUEST, "the payload is not an object")
        elif len(client_context.operations) >= self._max_subscriptions:
            refusal = (
                ReasonCode.TOO_MANY_SUBSCRIPTIONS,
                f"a connection holds at most {self._max_subscriptions} subscriptions",
            )
        else:
            try:
                self._gates.admit(principal)
                data = {**data, "query": self._services.persisted.resolve(data)}
            except _Limited:
                refusal = (ReasonCode.RATE_LIMITED, "rate limit exceeded for this tenant")
            except Admission as refused:
                refusal = (refused.reason, refused.detail)
        if refusal is not None:
            REQUESTS.labels(refusal[0].value).inc()
            await websocket.send_json(
                {"type": "error", "id": operation_id, "payload": _errors(*refusal)["errors"]}
            )
            return
        REQUESTS.labels("ok").inc()
        # A new text is parsed and validated off the event loop; what follows finds it cached.
        document, errors = await self._gates.documents.prepare_async(data["query"])
        if document is not None and get_operation_ast(document, data.get("operationName")) is None:
            # Several operations and no operationName, or none of that name: Ariadne's path
            # raises (RuntimeError) and the socket was dropped (found by fuzzing the socket).
            missing = GraphQLError("the document has no single operation of that name to run")
            await self._send_errors(websocket, operation_id, list(errors) or [missing])
            return
        if not await self._subscribe_shared(websocket, data, operation_id, client_context):
            # Not a valid subscription (a query or mutation over the socket, or an invalid
            # document): Ariadne's own path answers it.
            await super().handle_websocket_subscribe(websocket, data, operation_id, client_context)

    async def _subscribe_shared(
        self, websocket: WebSocket, data: dict[str, Any], operation_id: str, client_context: Any
    ) -> bool:
        """Start a subscription whose payloads are rendered once per window and tenant for all
        its subscribers; ``False`` if ``data`` is not a valid subscription.

        Ariadne would execute the subscription's selection once per event *and subscriber*
        (~0.3 ms each here: 1,000 subscribers cost ~300 ms of CPU per change, past the 250 ms
        budget). The resolvers of a subscription event are a function of the event alone, so
        subscribers with the same document and variables share the rendered JSON.
        """
        document, errors = self._gates.documents.prepare(data["query"])
        if document is None or errors:
            return False
        operation = get_operation_ast(document, data.get("operationName"))
        if operation is None or operation.operation is not OperationType.SUBSCRIPTION:
            return False
        if operation_id in client_context.operations:
            await websocket.close(code=4409)  # the protocol's "subscriber already exists"
            return True
        context = await self.get_context_for_request(websocket, data)
        built = Executor.build(
            self._gates.schema,
            document,
            context_value=context,
            raw_variable_values=data.get("variables"),
            operation_name=data.get("operationName"),
        )
        if isinstance(built, list):  # the variables do not coerce
            await self._send_errors(websocket, operation_id, built)
            return True
        stream = create_source_event_stream(built)
        if isawaitable(stream):
            stream = await stream
        if isinstance(stream, ExecutionResult):  # e.g. the policy's denial
            await self._send_errors(websocket, operation_id, stream.errors or [])
            return True
        if not isinstance(stream, TenantStream):
            msg = f"a subscription resolver returned {type(stream).__name__}, not TenantStream"
            raise TypeError(msg)
        key = json.dumps(
            [data["query"], data.get("variables"), data.get("operationName")],
            sort_keys=True,
            default=str,
        )
        batches = stream.batches()
        client_context.operations[operation_id] = Operation(
            id=operation_id, name=data.get("operationName"), generator=batches
        )
        delivery = client_context.operation_tasks[operation_id] = asyncio.ensure_future(
            self._deliver(websocket, operation_id, client_context, stream.kind, key, built, batches)
        )
        # The next message is read once the subscription is live (Redis confirmed it) or has
        # failed: a client that sends a ping after its subscribe knows on the pong that every
        # event published from then on reaches it (igflow probe relies on it). Bounded by the
        # hub's subscribe timeout; the delivery ending first (a disconnect) ends the wait too.
        live = asyncio.ensure_future(stream.opened.wait())
        await asyncio.wait((live, delivery), return_when=asyncio.FIRST_COMPLETED)
        live.cancel()
        return True

    async def _deliver(
        self,
        websocket: WebSocket,
        operation_id: str,
        client_context: Any,
        kind: str,
        key: str,
        built: Executor[Any],
        batches: AsyncGenerator[EventBatch, None],
    ) -> None:
        prefix = '{"type":"next","id":' + json.dumps(operation_id) + ',"payload":'
        render = functools.partial(_render, built)
        try:
            async for batch in batches:
                for payload in batch.rendered(kind, key, render):
                    await websocket.send_text(prefix + payload + "}")
                FANOUT_LATENCY.observe((time.perf_counter() - batch.received) * 1000.0)
        except SubscriptionEnded as exc:
            await websocket.send_text(prefix + json.dumps(_errors(exc.reason, exc.detail)) + "}")
        client_context.operations.pop(operation_id, None)
        client_context.operation_tasks.pop(operation_id, None)
        if WebSocketState.DISCONNECTED not in (websocket.client_state, websocket.application_state):
            await websocket.send_json({"type": "complete", "id": operation_id})

    async def _send_errors(
        self, websocket: WebSocket, operation_id: str, errors: list[GraphQLError]
    ) -> None:
        payload = [format_error(e) for e in errors]
        if payload:
            REQUESTS.labels(payload[0]["extensions"]["code"]).inc()
        await websocket.send_json({"type": "error", "id": operation_id, "payload": payload})


def _payload(result: ExecutionResult) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if result.data is not None:
        payload["data"] = result.data
    if result.errors:
        payload["errors"] = [format_error(e) for e in result.errors]
    return payload


def _open(websocket: WebSocket) -> bool:
    return WebSocketState.DISCONNECTED not in (websocket.client_state, websocket.application_state)


def _render(built: Executor[Any], event: dict[str, Any]) -> str:
    """One event's ``next`` payload for the operation ``built``, as JSON text."""
    result = execute_subscription_event(built.build_per_event_executor(event))
    if isawaitable(result):  # the subscription field resolvers are synchronous
        msg = "a subscription event resolved asynchronously"
        raise TypeError(msg)
    return json.dumps(_payload(result), separators=(",", ":"))
