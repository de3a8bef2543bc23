"""The API (``igflow serve``) against a real uvicorn on loopback and the real local stack.

Scores are written by the flow's own sink writers (Redis, Postgres), signals are read back from
the Kafka topic, and every client is a real HTTP or WebSocket client.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from api.jwt_keys import mint_token, sign
from api.persisted import sha256_hex
from api.webhooks import sign as sign_push
from core.records import Decoded, PolicyTags, Provenance, ScoreChange, Signal, Tagged
from core.settings import Settings
from core.store_keys import score_key
from sinks.postgres import PostgresWriter
from sinks.redis import RedisWriter
from tenancy.registry import upsert_tenant
from tests.integration.api_server import ApiServer, serve, subscribe
from tests.integration.conftest import read_topic, tagged_topics
from tests.integration.scratch import Scratch

pytestmark = pytest.mark.integration

READ = ["coherence:read"]
WRITE = ["coherence:write"]
SCORE_QUERY = (
    "query TenantCoherence($tenantId: ID!) { tenantCoherence(tenantId: $tenantId) "
    "{ tenantId score status updatedAt } }"
)
PUBLISH = (
    "mutation PublishSignal($input: PublishCoherenceSignalInput!) "
    "{ publishCoherenceSignal(input: $input) }"
)
SCORE_SUB = (
    "subscription CoherenceScoreChanged($tenantId: ID!) { coherenceScoreChanged(tenantId: "
    "$tenantId) { tenantId score status updatedAt } }"
)
EVENTS_SUB = (
    "subscription CoherenceEvents($tenantId: ID!) { coherenceEvents(tenantId: $tenantId) "
    "{ id type value weight source ts } }"
)


@pytest.fixture(scope="module")
def tenants(stack: Settings, module_scratch: Scratch) -> tuple[str, str]:
    """Two registered tenants of this module's own."""
    tag = uuid.uuid4().hex[:6]
    ids = (f"api-{tag}-a", f"api-{tag}-b")
    for tenant in ids:
        module_scratch.tenants.add(tenant)
        upsert_tenant(stack.stores.postgres_dsn, tenant)
    return ids


@pytest.fixture(scope="module")
def server(
    stack: Settings, module_scratch: Scratch, tenants: tuple[str, str]
) -> Iterator[ApiServer]:
    settings = tagged_topics(stack, module_scratch, "api")
    with serve(settings, IGFLOW_API_WEBHOOK_SECRET="whsec-test") as running:
        yield running


def _change(tenant: str, seq: int, score: float) -> ScoreChange:
    status = "HEALTHY" if score >= 0.75 else "WARN" if score >= 0.5 else "CRITICAL"
    return ScoreChange(
        tenant_id=tenant,
        score=score,
        status=status,
        updated_at=datetime(2026, 11, 21, tzinfo=UTC) + timedelta(seconds=seq),
        window_count=seq,
        window_weight=float(seq),
        provenance_id=f"prov-{tenant}-{seq}",
        provenance=Provenance("coherence.signals.v1", 0, seq, 1, f"{seq:064x}"),
        score_2dp=Decimal(str(round(score, 2))),
        seq=seq,
    )


def _tagged(tenant: str, offset: int) -> Tagged:
    signal = Signal(
        tenant, f"s-{offset}", "latency", 0.5, None, "src", datetime(2026, 11, 21, tzinfo=UTC)
    )
    decoded = Decoded(signal, Provenance("coherence.signals.v1", 0, offset, 1, "0" * 64))
    return Tagged(decoded, PolicyTags("benchmarking", "standard-365d", "R", "US"), "p", "pid")


def _redis_writer(settings: Settings) -> RedisWriter:
    return RedisWriter(settings.stores.redis_url, stream_max=100, ttl_seconds=3600)


def _write_scores(settings: Settings, *changes: ScoreChange) -> None:
    """Land score changes in Redis with the flow's own writer (it also publishes the events)."""
    writer = _redis_writer(settings)
    writer.write(list(changes))
    writer.close()


def _errors(response: Any) -> list[str]:
    return [e["extensions"]["code"] for e in response.json().get("errors", [])]


def _wait_subscribers(server: ApiServer, at_least: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = server.metrics()
        for line in text.splitlines():
            if line.startswith("igflow_api_subscribers ") and float(line.split()[1]) >= at_least:
                return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {at_least} subscribers registered")


# --- tenantCoherence -------------------------------------------------------------------------


def test_tenant_coherence_reads_redis_first_then_postgres(
    server: ApiServer, tenants: tuple[str, str]
) -> None:
    a, b = tenants
    settings = server.settings
    _write_scores(settings, _change(a, 1, 0.8125))
    pg = PostgresWriter(settings.stores.postgres_dsn)
    pg.write([_change(b, 3, 0.4567)])
    pg.close()

    got = server.graphql(
        {"query": SCORE_QUERY, "variables": {"tenantId": a}}, mint_token(settings, a, READ)
    )
    assert got.status_code == 200, got.text
    assert got.json()["data"]["tenantCoherence"] == {
        "tenantId": a,
        "score": 0.8125,
        "status": "HEALTHY",
        "updatedAt": "2026-11-21T00:00:01+00:00",
    }
    # b is only in Postgres (NUMERIC(5,2) beside the exact double): the fallback answers.
    redis.Redis.from_url(settings.stores.redis_url).delete(score_key(b))
    got = server.graphql(
        {"query": SCORE_QUERY, "variables": {"tenantId": b}}, mint_token(settings, b, READ)
    )
    assert got.json()["data"]["tenantCoherence"] == {
        "tenantId": b,
        "score": 0.4567,
        "status": "CRITICAL",
        "updatedAt": "2026-11-21T00:00:03+00:00",
    }


def test_an_unknown_tenant_has_no_score(server: ApiServer) -> None:
    tenant = f"api-none-{uuid.uuid4().hex[:6]}"
    got = server.graphql(
        {"query": SCORE_QUERY, "variables": {"tenantId": tenant}},
        mint_token(server.settings, tenant, READ),
    )
    assert _errors(got) == ["NOT_FOUND"]
    assert got.json()["data"] is None


# --- authentication and authorization --------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(settings: Settings, tenant: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": settings.api.jwt_issuer,
        "aud": settings.api.jwt_audience,
        "sub": "test",
        "tenant_id": tenant,
        "scope": "coherence:read",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _forged_tokens(settings: Settings, tenant: str) -> dict[str, tuple[str | None, str, int]]:
    """name -> (token, expected code, HTTP status)."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    good_header = json.loads(
        base64.urlsafe_b64decode(mint_token(settings, tenant, READ).split(".")[0] + "==")
    )
    return {
        "missing": (None, "AUTH_MISSING", 401),
        "expired": (
            sign(settings, _claims(settings, tenant, iat=1, exp=int(time.time()) - 3600)),
            "AUTH_EXPIRED",
            401,
        ),
        "wrongly signed": (
            jwt.encode(
                _claims(settings, tenant),
                stranger,
                algorithm="RS256",
                headers={"kid": good_header["kid"]},
            ),
            "AUTH_INVALID",
            401,
        ),
        "alg none": (
            _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(_claims(settings, tenant)) + ".",
            "AUTH_INVALID",
            401,
        ),
        "wrong issuer": (
            sign(settings, _claims(settings, tenant, iss="evil")),
            "AUTH_INVALID",
            401,
        ),
        "wrong audience": (
            sign(settings, _claims(settings, tenant, aud="other")),
            "AUTH_INVALID",
            401,
        ),
        "garbage": ("not.a.jwt", "AUTH_INVALID", 401),
        "wrong scope": (
            sign(settings, _claims(settings, tenant, scope="coherence:write")),
            "SCOPE_MISSING",
            200,
        ),
    }


def test_a_tenant_never_reads_another_tenants_score(
    server: ApiServer, tenants: tuple[str, str]
) -> None:
    a, b = tenants
    settings = server.settings
    _write_scores(settings, _change(b, 10, 0.9))
    # A forged tenantId: a's token asking for b.
    got = server.graphql(
        {"query": SCORE_QUERY, "variables": {"tenantId": b}}, mint_token(settings, a, READ)
    )
    assert _errors(got) == ["TENANT_FORBIDDEN"]
    assert got.json()["data"] is None
    # Every bad credential, on the same query for b's score.
    for name, (token, code, status) in _forged_tokens(settings, b).items():
        got = server.graphql({"query": SCORE_QUERY, "variables": {"tenantId": b}}, token)
        assert got.status_code == status, (name, got.text)
        assert _errors(got) == [code], name
        assert not got.json().get("data"), name
    # The ES256 key works as well as the RS256 one.
    got = server.graphql(
        {"query": SCORE_QUERY, "variables": {"tenantId": b}},
        mint_token(settings, b, READ, alg="ES256"),
    )
    assert got.json()["data"]["tenantCoherence"]["score"] == 0.9


def test_subscriptions_are_authenticated_and_authorized(
    server: ApiServer, tenants: tuple[str, str]
) -> None:
    from websockets.exceptions import ConnectionClosed

    a, b = tenants
    settings = server.settings
    with server.connect_ws() as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4403, "AUTH_MISSING")
    auth = {"Authorization": f"Bearer {mint_token(settings, a, READ)}"}
    with subscribe(server, SCORE_SUB, {"tenantId": b}, auth) as (ws, op_id):
        message = json.loads(ws.recv(timeout=10))
    assert message["type"] == "error" and message["id"] == op_id
    assert [e["extensions"]["code"] for e in message["payload"]] == ["TENANT_FORBIDDEN"]


# --- subscriptions ---------------------------------------------------------------------------


def test_a_subscriber_hears_each_score_change(server: ApiServer, tenants: tuple[str, str]) -> None:
    # How soon it hears it (the write's return to the receipt, ~0.1 s: the coalescing window) is
    # measured by benchmarks/api.py's fan-out phase (benchmarks/api_fanout.py), not asserted
    # here: a bound of 250 ms failed once at 0.28 s on a loaded machine (CI, session 15).
    a, _b = tenants
    settings = server.settings
    auth = {"Authorization": f"Bearer {mint_token(settings, a, READ)}"}
    writer = _redis_writer(settings)
    with subscribe(server, SCORE_SUB, {"tenantId": a}, auth) as (ws, op_id):
        _wait_subscribers(server, 1)
        writer.write([_change(a, 99, 0.5)])
        json.loads(ws.recv(timeout=5))
        for seq in range(100, 110):
            writer.write([_change(a, seq, 0.5 + seq / 1000)])
            message = json.loads(ws.recv(timeout=5))
            assert message["type"] == "next" and message["id"] == op_id, message
            got = message["payload"]["data"]["coherenceScoreChanged"]
            assert got["score"] == 0.5 + seq / 1000 and got["tenantId"] == a
        # A burst inside one window is coalesced to its newest score.
        writer.write([_change(a, seq, 0.6) for seq in range(200, 210)])
        message = json.loads(ws.recv(timeout=5))
        assert message["payload"]["data"]["coherenceScoreChanged"]["score"] == 0.6
    writer.close()


def test_coherence_events_streams_every_signal(server: ApiServer, tenants: tuple[str, str]) -> None:
    _a, b = tenants
    settings = server.settings
    auth = {"X-API-Key": _api_key(settings, b, READ)}
    writer = _redis_writer(settings)
    seen: list[str] = []
    with subscribe(server, EVENTS_SUB, {"tenantId": b}, auth) as (ws, _op_id):
        _wait_subscribers(server, 1)
        writer.write([_tagged(b, offset) for offset in range(1_000, 1_025)])
        while len(seen) < 25:
            message = json.loads(ws.recv(timeout=5))
            event = message["payload"]["data"]["coherenceEvents"]
            assert event["weight"] == 1.0 and event["ts"] == "2026-11-21T00:00:00+00:00"
            seen.append(event["id"])
    writer.close()
    assert seen == [f"s-{offset}" for offset in range(1_000, 1_025)]


def test_an_event_published_after_the_pong_reaches_a_new_subscription(
    server: ApiServer, tenants: tuple[str, str]
) -> None:
    """The API reads a socket's next message only once its subscription is live, so a ping
    sent after the subscribe is answered once every event published from then on reaches it
    (what igflow probe relies on). Each round is a new connection and, the last subscriber of
    the tenant having left, a new Redis subscription: with TLS its connection took ~85 ms
    longer, and an event written right after the pong was lost (the probe's rounds timed out)."""
    a, _b = tenants
    settings = server.settings
    auth = {"Authorization": f"Bearer {mint_token(settings, a, READ)}"}
    writer = _redis_writer(settings)
    for offset in range(2_000, 2_008):
        with subscribe(server, EVENTS_SUB, {"tenantId": a}, auth) as (ws, op_id):
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(timeout=15))["type"] == "pong"
            writer.write([_tagged(a, offset)])  # no wait for the subscribers' gauge
            message = json.loads(ws.recv(timeout=5))
            assert message["type"] == "next" and message["id"] == op_id, message
            assert message["payload"]["data"]["coherenceEvents"]["id"] == f"s-{offset}"
    writer.close()


def _api_key(settings: Settings, tenant: str, scopes: list[str]) -> str:
    from api.api_keys import ApiKeyStore

    return ApiKeyStore(settings.stores.postgres_dsn).create(tenant, scopes, "api-test").key


# --- publishing ------------------------------------------------------------------------------


def _signal_input(tenant: str, **changes: Any) -> dict[str, Any]:
    data = {
        "tenantId": tenant,
        "type": "latency",
        "value": 0.75,
        "weight": 2.0,
        "source": "sensor-a",
        "ts": datetime.now(UTC).isoformat(),
    }
    data.update(changes)
    return data


def test_publish_is_acknowledged_and_lands_in_kafka_with_the_avro_serializer(
    server: ApiServer, tenants: tuple[str, str]
) -> None:
    a, _b = tenants
    settings = server.settings
    token = mint_token(settings, a, WRITE)
    got = server.graphql(
        {"query": PUBLISH, "variables": {"input": _signal_input(a, signalId="gql-1")}}, token
    )
    assert got.json() == {"data": {"publishCoherenceSignal": True}}
    key = _api_key(settings, a, WRITE)
    body_rest = json.dumps(_signal_input(a, signalId="rest-1", selectors=["x"])).encode()
    rest = server.client.post(
        "/v1/coherence/signals",
        content=body_rest,
        headers={"x-api-key": key, "content-type": "application/json"},
    )
    assert rest.status_code == 202, rest.text
    assert rest.json()["signalId"] == "rest-1"
    signed = server.client.post(
        "/v1/coherence/signals",
        content=(body := json.dumps(_signal_input(a, signalId="hook-1")).encode()),
        headers={
            "x-api-key": key,
            "content-type": "application/json",
            "x-igflow-signature": sign_push("whsec-test", body, int(time.time())),
        },
    )
    assert signed.status_code == 202, signed.text
    # The write-latency SLI, per tenant: the mutation, the push and the signed push.
    written = re.search(
        rf'^igflow_api_request_duration_seconds_count{{kind="write",tenant_id="{a}"}} (\S+)$',
        server.metrics(),
        re.MULTILINE,
    )
    assert written is not None and float(written.group(1)) >= 3
    decoded = {}
    with SchemaRegistryClient(settings.kafka.registry_config()) as registry:
        deserialize = AvroDeserializer(registry)
        for msg in read_topic(settings, settings.kafka.topic):
            ctx = SerializationContext(msg.topic(), MessageField.VALUE)
            record = deserialize(msg.value(), ctx)
            decoded[record["signal_id"]] = (record, dict(msg.headers()), msg.value())
    assert set(decoded) >= {"gql-1", "rest-1", "hook-1"}
    record, headers, value = decoded["rest-1"]
    assert record["selectors"] == ["x"] and record["weight"] == 2.0 and record["tenant_id"] == a
    assert hashlib.sha256(value).hexdigest() == rest.json()["inputHash"]
    assert headers["igflow.ingest.via"] == b"rest"
    assert headers["igflow.ingest.request_sha256"] == hashlib.sha256(body_rest).hexdigest().encode()
    assert decoded["hook-1"][1]["igflow.ingest.via"] == b"webhook"
    assert decoded["gql-1"][1]["igflow.ingest.via"] == b"graphql"


def test_publish_refusals_carry_reason_codes(server: ApiServer, tenants: tuple[str, str]) -> None:
    a, b = tenants
    settings = server.settings
    write_a = mint_token(settings, a, WRITE)
    cases = [
        (_signal_input(a, value=1.5), write_a, "FIELD_INVALID"),
        (_signal_input(a, ts="2020-01-01T00:00:00+00:00"), write_a, "TS_OUT_OF_RANGE"),
        (_signal_input(a, ts="2026-11-21T00:00:00"), write_a, "FIELD_INVALID"),  # naive
        (_signal_input(b), write_a, "TENANT_FORBIDDEN"),
        (_signal_input(a), mint_token(settings, a, READ), "SCOPE_MISSING"),
    ]
    for data, token, code in cases:
        got = server.graphql({"query": PUBLISH, "variables": {"input": data}}, token)
        assert _errors(got) == [code], (data, got.text)
        assert got.json()["data"] is None
    ghost = f"api-ghost-{uuid.uuid4().hex[:6]}"
    got = server.graphql(
        {"query": PUBLISH, "variables": {"input": _signal_input(ghost)}},
        mint_token(settings, ghost, WRITE),
    )
    assert _errors(got) == ["TENANT_UNKNOWN"]


def test_rest_errors_are_problem_documents(server: ApiServer, tenants: tuple[str, str]) -> None:
    a, _b = tenants
    settings = server.settings
    headers = {"authorization": f"Bearer {mint_token(settings, a, WRITE)}"}
    cases = [
        ({}, _signal_input(a), 401, "AUTH_MISSING"),
        (headers, {**_signal_input(a), "value": "high"}, 422, "FIELD_INVALID"),
        (headers, {**_signal_input(a), "extra": 1}, 422, "FIELD_INVALID"),
        (headers, _signal_input(a, value=-0.1), 422, "FIELD_INVALID"),
        (headers, _signal_input(f"{a}-x"), 403, "TENANT_FORBIDDEN"),
    ]
    for hdrs, data, status, code in cases:
        got = server.client.post("/v1/coherence/signals", json=data, headers=hdrs)
        assert got.status_code == status, (data, got.text)
        assert got.headers["content-type"] == "application/problem+json"
        assert got.json()["code"] == code
    bad_sig = server.client.post(
        "/v1/coherence/signals",
        json=_signal_input(a),
        headers={**headers, "x-igflow-signature": f"t={int(time.time())},v1=00"},
    )
    assert (bad_sig.status_code, bad_sig.json()["code"]) == (401, "SIGNATURE_INVALID")
    not_json = server.client.post(
        "/v1/coherence/signals",
        content=b"{",
        headers={**headers, "content-type": "application/json"},
    )
    assert (not_json.status_code, not_json.json()["code"]) == (400, "BAD_REQUEST")
    huge = b"[" + b"0," * (1 << 20) + b"0]"  # past api.max_body_bytes (1 MiB)
    too_big = server.client.post(
        "/v1/coherence/signals",
        content=huge,
        headers={**headers, "content-type": "application/json"},
    )
    assert (too_big.status_code, too_big.json()["code"]) == (413, "BAD_REQUEST")
    too_big = server.client.post("/graphql", content=huge, headers=headers)
    assert (too_big.status_code, _errors(too_big)) == (400, ["BAD_REQUEST"])


# --- persisted queries and the cost limit ----------------------------------------------------


def test_development_mode_runs_apq_and_enforces_the_cost_limit(
    server: ApiServer, tenants: tuple[str, str]
) -> None:
    a, _b = tenants
    token = mint_token(server.settings, a, READ)
    query = "query Mine($tenantId: ID!) { tenantCoherence(tenantId: $tenantId) { score } }"
    apq = {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(query)}}
    variables = {"tenantId": a}
    miss = server.graphql({"extensions": apq, "variables": variables}, token)
    assert _errors(miss) == ["PERSISTED_QUERY_NOT_FOUND"]
    register = server.graphql({"query": query, "extensions": apq, "variables": variables}, token)
    assert "score" in register.json()["data"]["tenantCoherence"]
    hit = server.graphql({"extensions": apq, "variables": variables}, token)
    assert hit.json() == register.json()
    aliases = " ".join(
        f"a{i}: tenantCoherence(tenantId: $tenantId) {{ score status }}" for i in range(80)
    )
    costly = server.graphql(
        {"query": f"query Many($tenantId: ID!) {{ {aliases} }}", "variables": variables}, token
    )
    assert _errors(costly) == ["QUERY_TOO_COSTLY"]


def test_production_mode_runs_only_allowlisted_operations(
    stack: Settings, tenants: tuple[str, str]
) -> None:
    a, _b = tenants
    from api.jwt_keys import dev_keys_dir

    jwks = str(dev_keys_dir(stack) / "jwks.json")
    with serve(stack, IGFLOW_API_MODE="production", IGFLOW_API_JWT_KEYS=jwks) as prod:
        _write_scores(prod.settings, _change(a, 500, 0.77))
        token = mint_token(prod.settings, a, READ)
        variables = {"tenantId": a}
        adhoc = "query Mine($tenantId: ID!) { tenantCoherence(tenantId: $tenantId) { score } }"
        refused = prod.graphql({"query": adhoc, "variables": variables}, token)
        assert refused.status_code == 403
        assert _errors(refused) == ["QUERY_NOT_ALLOWED"]
        introspection = prod.graphql({"query": "{ __schema { types { name } } }"}, token)
        assert _errors(introspection) == ["QUERY_NOT_ALLOWED"]
        unknown = prod.graphql({"id": "pq_drop_everything_v1"}, token)
        assert _errors(unknown) == ["QUERY_NOT_ALLOWED"]
        register = prod.graphql(
            {
                "query": adhoc,
                "extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(adhoc)}},
                "variables": variables,
            },
            token,
        )
        assert _errors(register) == ["QUERY_NOT_ALLOWED"]
        by_id = prod.graphql({"id": "pq_tenant_coherence_v1", "variables": variables}, token)
        assert by_id.json()["data"]["tenantCoherence"]["score"] == 0.77
        document = prod.client.get("/openapi.json")  # served in every mode
        assert document.status_code == 200
        from api.persisted import PersistedQueries

        allowlisted = PersistedQueries.load("", production=True).by_id["pq_tenant_coherence_v1"]
        by_hash = prod.graphql(
            {
                "extensions": {
                    "persistedQuery": {"version": 1, "sha256Hash": sha256_hex(allowlisted)}
                },
                "variables": variables,
            },
            token,
        )
        assert by_hash.json() == by_id.json()
        # The full text of an allowlisted document runs as well.
        full = prod.graphql({"query": allowlisted, "variables": variables}, token)
        assert full.json() == by_id.json()


# --- rate limit ------------------------------------------------------------------------------


def test_one_tenants_flood_is_limited_and_does_not_refuse_another_tenant(
    stack: Settings, tenants: tuple[str, str]
) -> None:
    import concurrent.futures

    import httpx

    a, b = tenants
    with serve(stack, IGFLOW_API_RATE_LIMIT_RPS="20", IGFLOW_API_RATE_LIMIT_BURST="20") as small:
        _write_scores(small.settings, _change(a, 600, 0.7), _change(b, 600, 0.8))
        flood_token = mint_token(small.settings, a, READ)
        read_token = mint_token(small.settings, b, READ)

        def flood() -> tuple[list[httpx.Response], float]:
            with httpx.Client(base_url=small.url, timeout=10, verify=small.verify) as client:
                started = time.monotonic()
                responses = [
                    client.post(
                        "/graphql",
                        json={"query": SCORE_QUERY, "variables": {"tenantId": a}},
                        headers={"authorization": f"Bearer {flood_token}"},
                    )
                    for _ in range(150)
                ]
                return responses, time.monotonic() - started

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            flooding = pool.submit(flood)
            reads = []
            for _ in range(15):  # within b's own bucket
                reads.append(
                    small.graphql({"query": SCORE_QUERY, "variables": {"tenantId": b}}, read_token)
                )
                time.sleep(0.02)
            flooded, elapsed = flooding.result()
    limited = [r for r in flooded if r.status_code == 429]
    admitted = [r for r in flooded if r.status_code == 200]
    assert len(limited) + len(admitted) == 150
    # The token-bucket law: at most burst + rate x elapsed requests get through.
    assert 20 <= len(admitted) <= 20 + 20 * elapsed + 1, (len(admitted), elapsed)
    assert all(_errors(r) == ["RATE_LIMITED"] for r in limited)
    assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
    assert [r.status_code for r in reads] == [200] * 15
    assert all(r.json()["data"]["tenantCoherence"]["score"] == 0.8 for r in reads)


# --- service endpoints -----------------------------------------------------------------------


def test_health_ready_metrics_and_openapi(server: ApiServer) -> None:
    assert server.client.get("/health").json() == {"status": "ok"}
    ready = server.client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {
        "redis": "ok",
        "postgres": "ok",
        "kafka": "ok",
        "schema_registry": "ok",
    }
    metrics = server.metrics()
    for name in (
        "graphql_request_duration_seconds",
        "graphql_requests_total",
        "subscription_fanout_latency_ms",
    ):
        assert name in metrics
    document = server.client.get("/openapi.json").json()
    assert "/v1/coherence/signals" in document["paths"]


def test_metrics_are_served_only_on_the_loopback_metrics_port(
    server: ApiServer, tenants: tuple[str, str]
) -> None:
    """Metrics name tenants (``igflow_api_rate_limited_total{tenant_id=...}``): the API's own port
    has no ``/metrics``, and the metrics port listens on loopback alone."""
    import psutil

    a, _b = tenants
    token = mint_token(server.settings, a, READ)
    server.graphql({"query": SCORE_QUERY, "variables": {"tenantId": a}}, token)
    public = server.client.get("/metrics")
    assert public.status_code == 404
    assert "graphql_requests_total" not in public.text and a not in public.text
    exposed = server.metrics()
    assert "graphql_requests_total" in exposed
    # The read-latency SLI, per tenant (core/slo.py): this query counted under its tenant.
    assert f'igflow_api_request_duration_seconds_count{{kind="read",tenant_id="{a}"}}' in exposed
    port = server.settings.api.metrics_port
    listening = [
        c.laddr
        for c in psutil.Process(server.proc.pid).net_connections("inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]
    assert [addr.ip for addr in listening] == ["127.0.0.1"], listening


# --- end to end: the API publishes, the flow scores, the API serves --------------------------


def test_published_signals_come_back_as_the_flows_score_live_and_on_query(
    it_settings: Settings, scratch: Scratch
) -> None:
    from fractions import Fraction

    from tests.integration.conftest import finish, igflow

    tenant = scratch.tenant("api-e2e")
    settings = it_settings.with_changes("stores", sinks="redis,postgres")
    values = [(0.25 + (i % 7) / 10, 1.0 + (i % 3)) for i in range(40)]
    start = datetime.now(UTC) - timedelta(minutes=5)
    with serve(settings) as server:
        headers = {"authorization": f"Bearer {mint_token(settings, tenant, WRITE + READ)}"}
        for i, (value, weight) in enumerate(values):
            ts = (start + timedelta(seconds=i)).isoformat()
            body = _signal_input(tenant, value=value, weight=weight, ts=ts, signalId=f"e2e-{i}")
            got = server.client.post("/v1/coherence/signals", json=body, headers=headers)
            assert got.status_code == 202, got.text
        auth = {"Authorization": headers["authorization"]}
        with subscribe(server, SCORE_SUB, {"tenantId": tenant}, auth) as (ws, _op_id):
            _wait_subscribers(server, 1)
            finish(igflow(settings, "run"))
            last = None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    message = json.loads(ws.recv(timeout=1))
                except TimeoutError:
                    break
                last = message["payload"]["data"]["coherenceScoreChanged"]
        expected = sum(Fraction(v) * Fraction(w) for v, w in values) / sum(
            Fraction(w) for _v, w in values
        )
        assert last is not None, "no score event reached the subscriber"
        assert last["score"] == float(expected)
        got = server.graphql(
            {"query": SCORE_QUERY, "variables": {"tenantId": tenant}}, headers["authorization"][7:]
        )
        assert got.json()["data"]["tenantCoherence"]["score"] == float(expected)
        assert (
            got.json()["data"]["tenantCoherence"]["updatedAt"]
            == (start + timedelta(seconds=len(values) - 1)).isoformat()
        )


def test_many_subscribers_share_a_window_and_each_gets_its_own_selection(
    server: ApiServer, tenants: tuple[str, str]
) -> None:
    import contextlib

    a, _b = tenants
    settings = server.settings
    auth = {"Authorization": f"Bearer {mint_token(settings, a, READ)}"}
    narrow = (
        "subscription Narrow($tenantId: ID!) { coherenceScoreChanged(tenantId: $tenantId) "
        "{ score } }"
    )
    with contextlib.ExitStack() as stack:
        wide = [
            stack.enter_context(subscribe(server, SCORE_SUB, {"tenantId": a}, auth))
            for _ in range(20)
        ]
        thin = [
            stack.enter_context(subscribe(server, narrow, {"tenantId": a}, auth)) for _ in range(5)
        ]
        _wait_subscribers(server, 25)
        _write_scores(settings, _change(a, 700, 0.61))
        for ws, op_id in wide:
            message = json.loads(ws.recv(timeout=5))
            assert message["id"] == op_id
            assert message["payload"]["data"]["coherenceScoreChanged"] == {
                "tenantId": a,
                "score": 0.61,
                "status": "WARN",
                "updatedAt": "2026-11-21T00:11:40+00:00",
            }
        for ws, op_id in thin:
            message = json.loads(ws.recv(timeout=5))
            assert message == {
                "type": "next",
                "id": op_id,
                "payload": {"data": {"coherenceScoreChanged": {"score": 0.61}}},
            }
        # A client's `complete` ends only its own subscription.
        ws, op_id = wide[0]
        ws.send(json.dumps({"id": op_id, "type": "complete"}))
        _write_scores(settings, _change(a, 701, 0.62))
        for ws, _op_id in wide[1:]:
            assert (
                json.loads(ws.recv(timeout=5))["payload"]["data"]["coherenceScoreChanged"]["score"]
                == 0.62
            )
        with pytest.raises(TimeoutError):
            wide[0][0].recv(timeout=0.5)
