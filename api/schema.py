"""The executable GraphQL schema: ``schema.graphql`` bound to its resolvers.

Every resolver asks the policy (:class:`api.authz.Authorizer`, ``policies/graphql.rego``) before
it touches a store or Kafka; a denial raises a GraphQL error whose ``extensions.code`` is the
policy's reason code, and the field's data is never computed. Store and broker failures are
errors with codes too (``STORE_UNAVAILABLE``, ``KAFKA_UNAVAILABLE``), never partial data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ariadne import (
    MutationType,
    QueryType,
    ScalarType,
    SubscriptionType,
    load_schema_from_path,
    make_executable_schema,
)
from graphql import GraphQLError, GraphQLResolveInfo, GraphQLSchema

from api.auth import Principal
from api.events import TenantStream
from api.metrics import INGEST_PUBLISHED
from api.publish import PublishRejected, derived_signal_id
from api.scores import StoreUnavailable
from api.services import Services
from core.reasons import ReasonCode
from core.records import Signal
from core.resources import package_path

__all__ = ["SCHEMA_FILE", "build_schema", "coded"]

Info = GraphQLResolveInfo[Any]

SCHEMA_FILE = package_path("api", "schema.graphql")

datetime_scalar = ScalarType("DateTime")


@datetime_scalar.serializer
def _serialize_datetime(value: Any) -> str:
    if isinstance(value, str):  # already ISO 8601 (events from Redis)
        return value
    if not isinstance(value, datetime) or value.tzinfo is None:
        msg = "DateTime needs a time-zone-aware datetime"
        raise ValueError(msg)
    return value.astimezone(UTC).isoformat()


@datetime_scalar.value_parser
def _parse_datetime(value: Any) -> datetime:
    # A naive time parses here and is refused by the flow's own rule (FIELD_INVALID).
    if not isinstance(value, str):
        msg = "DateTime is an ISO 8601 string"
        raise ValueError(msg)
    return datetime.fromisoformat(value)


def coded(reason: ReasonCode, message: str) -> GraphQLError:
    """A GraphQL error carrying ``reason`` as ``extensions.code``."""
    return GraphQLError(message, extensions={"code": reason.value})


def _services(info: Info) -> Services:
    services: Services = info.context["services"]
    return services


def authorize(info: Info, action: str, tenant_id: str) -> Services:
    """Ask the policy; raise the denial as a coded error. Returns the services."""
    services = _services(info)
    principal: Principal = info.context["principal"]
    decision = services.authz.decide(principal, action, tenant_id)
    if not decision.allow:
        reason = decision.reason or ReasonCode.TENANT_FORBIDDEN
        raise coded(reason, f"not authorized to {action} this tenant's coherence data")
    return services


async def admit(info: Info, operation: str) -> None:
    """Raise ``OPERATION_DISABLED`` when ``operation`` is switched off (:mod:`api.switches`)."""
    reason = await _services(info).operations.refused(operation)
    if reason is not None:
        raise coded(reason, f"the {operation} operation is switched off")


query = QueryType()
mutation = MutationType()
subscription = SubscriptionType()


@query.field("tenantCoherence")
async def _tenant_coherence(_: None, info: Info, tenantId: str) -> dict[str, Any]:
    await admit(info, "read")
    services = authorize(info, "read", tenantId)
    principal: Principal = info.context["principal"]
    try:
        score = await services.scores.get(tenantId, caller=principal.tenant_id)
    except StoreUnavailable as exc:
        raise coded(ReasonCode.STORE_UNAVAILABLE, "no score store answered") from exc
    if score is None:
        raise coded(ReasonCode.NOT_FOUND, "no coherence score for this tenant yet")
    return {
        "tenantId": score.tenant_id,
        "score": score.score,
        "status": score.status,
        "updatedAt": score.updated_at,
    }


def signal_from_input(data: dict[str, Any]) -> Signal:
    """The :class:`Signal` a publish input describes (``signalId`` derived when absent)."""
    weight = data.get("weight")
    signal = Signal(
        tenant_id=data["tenantId"],
        signal_id=data.get("signalId") or "",
        type=data["type"],
        value=float(data["value"]),
        weight=None if weight is None else float(weight),
        source=data["source"],
        ts=data["ts"],
        selectors=tuple(data.get("selectors") or ()),
    )
    if not signal.signal_id:
        signal = Signal(
            signal.tenant_id,
            derived_signal_id(signal),
            signal.type,
            signal.value,
            signal.weight,
            signal.source,
            signal.ts,
            signal.selectors,
        )
    return signal


def _traceparent(info: Info) -> str | None:
    """The client's W3C ``traceparent`` (an HTTP request's; none over a WebSocket)."""
    request = info.context.get("request")
    headers = getattr(request, "headers", None)
    return None if headers is None else headers.get("traceparent")


@mutation.field("publishCoherenceSignal")
async def _publish(_: None, info: Info, input: dict[str, Any]) -> bool:
    await admit(info, "publish")
    services = authorize(info, "write", input["tenantId"])
    principal: Principal = info.context["principal"]
    try:
        await services.publisher.publish(
            signal_from_input(input),
            via="graphql",
            principal=principal.subject,
            body=info.context.get("body", b""),
            traceparent=_traceparent(info),
        )
    except PublishRejected as exc:
        raise coded(exc.reason, exc.detail) from exc
    INGEST_PUBLISHED.labels("graphql").inc()
    return True


# The sources authorize before they return their stream, so a denial is the protocol's `error`
# message (no subscription starts), not an event.
@subscription.source("coherenceEvents")  # type: ignore[arg-type]
async def _events_source(_: None, info: Info, tenantId: str) -> TenantStream:
    await admit(info, "subscribe")
    hub = authorize(info, "read", tenantId).hub
    return TenantStream(hub, tenantId, "signal", info.context["principal"].tenant_id)


@subscription.field("coherenceEvents")
def _event(event: dict[str, Any], _info: Info, **_: Any) -> dict[str, Any]:
    return event


@subscription.source("coherenceScoreChanged")  # type: ignore[arg-type]
async def _score_source(_: None, info: Info, tenantId: str) -> TenantStream:
    await admit(info, "subscribe")
    hub = authorize(info, "read", tenantId).hub
    return TenantStream(hub, tenantId, "score", info.context["principal"].tenant_id)


@subscription.field("coherenceScoreChanged")
def _score(event: dict[str, Any], _info: Info, **_: Any) -> dict[str, Any]:
    return event


def build_schema() -> GraphQLSchema:
    """Load ``schema.graphql`` and bind the resolvers (fails at start-up if they disagree)."""
    return make_executable_schema(
        load_schema_from_path(str(SCHEMA_FILE)),
        datetime_scalar,
        query,
        mutation,
        subscription,
    )
