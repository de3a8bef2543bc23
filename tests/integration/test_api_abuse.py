"""Hostile callers of a real ``igflow serve`` (uvicorn on loopback, the local stack): replayed
webhook pushes and malformed signature headers (issue 12)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from api.jwt_keys import mint_token
from api.webhooks import sign
from igflow.settings import Settings
from tenancy.registry import upsert_tenant
from tests.integration.api_server import ApiServer, serve

pytestmark = pytest.mark.integration

WRITE = ["coherence:write"]
SECRET = "whsec-abuse"
PUSH = "/v1/coherence/signals"


@pytest.fixture(scope="module")
def tenant(stack: Settings) -> str:
    tenant_id = f"abuse-{uuid.uuid4().hex[:8]}"
    upsert_tenant(stack.stores.postgres_dsn, tenant_id)
    return tenant_id


@pytest.fixture(scope="module")
def servers(stack: Settings) -> Iterator[tuple[ApiServer, ApiServer]]:
    """Two ``igflow serve`` processes over one Redis, Postgres and topic (two replicas)."""
    from igflow.admin import create_topics

    tag = uuid.uuid4().hex[:10]
    settings = stack.with_changes("kafka", topic=f"it.{tag}.abuse", dlq_topic=f"it.{tag}.dlq")
    create_topics(settings)
    with (
        serve(settings, IGFLOW_API_WEBHOOK_SECRET=SECRET) as one,
        serve(settings, IGFLOW_API_WEBHOOK_SECRET=SECRET) as two,
    ):
        yield one, two


def _body(tenant: str) -> bytes:
    signal = {
        "tenantId": tenant,
        "signalId": f"hook-{uuid.uuid4().hex[:8]}",
        "type": "latency",
        "value": 0.5,
        "source": "sensor-a",
        "ts": datetime.now(UTC).isoformat(),
    }
    return json.dumps(signal).encode()


def _push(server: ApiServer, token: str, body: bytes, signature: str | bytes) -> Any:
    return server.client.post(
        PUSH,
        content=body,
        headers={
            "authorization": f"Bearer {token}",
            "content-type": "application/json",
            "x-igflow-signature": signature,
        },
    )


def test_a_replayed_webhook_push_is_refused_by_every_replica(
    servers: tuple[ApiServer, ApiServer], tenant: str
) -> None:
    one, two = servers
    token = mint_token(one.settings, tenant, WRITE)
    body = _body(tenant)
    signature = sign(SECRET, body, int(time.time()))
    first = _push(one, token, body, signature)
    assert first.status_code == 202, first.text
    # The same bytes and signature again, well within the 300 s window, to either process.
    for server in (one, two, one):
        again = _push(server, token, body, signature)
        assert again.status_code == 409, again.text
        assert again.headers["content-type"] == "application/problem+json"
        assert again.json()["code"] == "SIGNATURE_REPLAYED"
    # A fresh signature (a new timestamp) of the same body is a new push, on the other replica.
    resigned = sign(SECRET, body, int(time.time()) - 1)
    assert _push(two, token, body, resigned).status_code == 202


def test_a_signature_header_that_is_not_ascii_is_a_problem_not_a_crash(
    servers: tuple[ApiServer, ApiServer], tenant: str
) -> None:
    one, _two = servers
    token = mint_token(one.settings, tenant, WRITE)
    body = _body(tenant)
    good = sign(SECRET, body, int(time.time()))
    mac = good.partition(",v1=")[2]
    for header in (
        good.encode() + "é".encode(),  # UTF-8 bytes after the MAC
        f"t={int(time.time())},v1={mac[:-1]}".encode() + b"\xe9",  # Latin-1 in the MAC
        "t=١٢٣,v1=00".encode(),  # digits of another script
        b"t=" + b"9" * 5000 + b",v1=00",
    ):
        got = _push(one, token, body, header)
        assert got.status_code == 401, (header[:40], got.status_code, got.text[:200])
        assert got.headers["content-type"] == "application/problem+json"
        assert got.json()["code"] == "SIGNATURE_INVALID"
    assert _push(one, token, body, good).status_code == 202  # the server is still well
