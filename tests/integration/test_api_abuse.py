"""Hostile callers of a real ``igflow serve`` (uvicorn on loopback, the local stack): floods of
bad credentials, replayed webhook pushes and malformed signature headers (issue 12)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from api.jwt_keys import mint_token
from api.webhooks import sign
from core.settings import Settings
from tests.integration.api_server import ApiServer, serve
from tests.integration.conftest import tagged_topics
from tests.integration.scratch import Scratch
from tests.integration.test_api import SCORE_QUERY, _change, _write_scores

pytestmark = pytest.mark.integration

READ, WRITE = ["coherence:read"], ["coherence:write"]
SECRET = "whsec-abuse"
PUSH = "/v1/coherence/signals"


@pytest.fixture(scope="module")
def tenant(module_scratch: Scratch) -> str:
    return module_scratch.tenant("abuse")


@pytest.fixture(scope="module")
def servers(stack: Settings, module_scratch: Scratch) -> Iterator[tuple[ApiServer, ApiServer]]:
    """Two ``igflow serve`` processes over one Redis, Postgres and topic (two replicas)."""
    settings = tagged_topics(stack, module_scratch, "abuse")
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
    signed_at = int(time.time())
    signature = sign(SECRET, body, signed_at)
    first = _push(one, token, body, signature)
    assert first.status_code == 202, first.text
    # The same bytes and signature again, well within the 300 s window, to either process.
    for server in (one, two, one):
        again = _push(server, token, body, signature)
        assert again.status_code == 409, again.text
        assert again.headers["content-type"] == "application/problem+json"
        assert again.json()["code"] == "SIGNATURE_REPLAYED"
    # A fresh signature (a new timestamp) of the same body is a new push, on the other replica.
    # (From the first's timestamp: time.time() - 1 equals it once a second has passed.)
    resigned = sign(SECRET, body, signed_at - 1)
    assert _push(two, token, body, resigned).status_code == 202


def test_a_push_the_server_failed_may_be_retried_with_its_signature(
    stack: Settings, tenant: str
) -> None:
    """Kafka does not acknowledge (nothing listens at its address): 503, and the same signed
    request sent again is tried again (503 again), not refused as a replay."""
    with serve(
        stack,
        IGFLOW_API_WEBHOOK_SECRET=SECRET,
        IGFLOW_KAFKA_BOOTSTRAP="127.0.0.1:1",
        IGFLOW_API_PUBLISH_TIMEOUT_SECONDS="1",
    ) as server:
        token = mint_token(server.settings, tenant, WRITE)
        body = _body(tenant)
        signature = sign(SECRET, body, int(time.time()))
        for _ in range(2):
            got = _push(server, token, body, signature)
            assert (got.status_code, got.json()["code"]) == (503, "KAFKA_UNAVAILABLE"), got.text


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


# --- failed authentication, per client address ----------------------------------------------

#: A flood from another process (so that its threads do not hold this process's GIL while it
#: times the good tenant's reads): 4 keep-alive connections, closed loop, for SECONDS, half with
#: random API keys (each a Postgres lookup if it got that far), half with garbage bearer tokens,
#: all from one address (uvicorn takes X-Forwarded-For from a loopback peer). It goes on past
#: SECONDS until it has sent 1,000 requests (over TLS on the loaded 2-core VM, 4 s gave 935).
FLOOD = textwrap.dedent(
    """
    import collections, json, secrets, sys, threading, time
    import httpx
    url, seconds, address = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    import ssl
    verify = ssl.create_default_context(cafile=sys.argv[4]) if sys.argv[4] else True
    seen = collections.Counter()
    lock = threading.Lock()
    sent = [0]
    def flood(n):
        body = {"query": "{ __typename }"}
        with httpx.Client(base_url=url, timeout=10, verify=verify) as client:
            end = time.monotonic() + seconds
            while time.monotonic() < end or sent[0] < 1000:
                if n % 2:
                    key = f"igk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
                    headers = {"x-api-key": key}
                else:
                    headers = {"authorization": "Bearer " + secrets.token_urlsafe(40)}
                headers["x-forwarded-for"] = address
                r = client.post("/graphql", json=body, headers=headers)
                key = (r.status_code, r.headers.get("x-igflow-code"), "retry-after" in r.headers,
                       r.headers.get("content-type"))
                with lock:
                    seen[key] += 1
                    sent[0] += 1
    started = time.monotonic()
    threads = [threading.Thread(target=flood, args=(n,)) for n in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    print(json.dumps({"elapsed": time.monotonic() - started,
                      "answers": [[*k, v] for k, v in seen.items()]}))
    """
)


def _metric(server: ApiServer, name: str) -> float:
    for line in server.metrics().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def _read_ms(server: ApiServer, token: str, tenant: str, **headers: str) -> float:
    started = time.perf_counter()
    got = server.graphql(
        {"query": SCORE_QUERY, "variables": {"tenantId": tenant}}, token, **headers
    )
    assert got.status_code == 200, got.text
    assert got.json()["data"]["tenantCoherence"]["score"] == 0.8
    return (time.perf_counter() - started) * 1000


def test_a_flood_of_bad_credentials_is_cut_off_by_address_before_any_lookup(
    stack: Settings, tenant: str
) -> None:
    # A slow refill (one failure per 10 s) keeps the address cut off for the whole test, so the
    # fresh token below is refused for sure rather than when no refill happens to be due.
    seconds, burst, rate = 4.0, 20, 0.1
    with serve(
        stack,
        IGFLOW_API_AUTH_FAILURE_BURST=str(burst),
        IGFLOW_API_AUTH_FAILURE_RPS=str(rate),
        IGFLOW_RUN_LOG_LEVEL="WARNING",
    ) as server:
        _write_scores(server.settings, _change(tenant, 700, 0.8))
        token = mint_token(server.settings, tenant, READ)
        # A client of the flooding address whose token this server verified before the flood.
        neighbour = mint_token(server.settings, tenant, READ)
        _read_ms(server, neighbour, tenant, **{"x-forwarded-for": "203.0.113.9"})
        alone = [_read_ms(server, token, tenant) for _ in range(50)]
        lookups = _metric(server, "igflow_api_key_lookups_total")
        ca = str(server.settings.tls_ca_file) if server.settings.tls.enabled else ""
        flood = subprocess.Popen(
            [sys.executable, "-c", FLOOD, server.url, str(seconds), "203.0.113.9", ca],
            stdout=subprocess.PIPE,
        )
        # The flood under way: its address's bucket ran dry (a refusal was counted). A fixed
        # 0.5 s was too short over TLS: the flood's interpreter start and four handshakes had
        # not spent the burst yet, and the fresh token below was answered 200.
        deadline = time.monotonic() + 30
        while _metric(server, "igflow_api_auth_throttled_total") == 0:
            assert time.monotonic() < deadline, "the flood was not throttled within 30 s"
            time.sleep(0.05)
        # A good token not yet verified here, from the cut-off address: it waits like the rest;
        # the neighbour's, verified before, still reads.
        fresh = server.graphql(
            {"query": SCORE_QUERY, "variables": {"tenantId": tenant}},
            mint_token(server.settings, tenant, READ, ttl_seconds=600),
            **{"x-forwarded-for": "203.0.113.9"},
        )
        assert _read_ms(server, neighbour, tenant, **{"x-forwarded-for": "203.0.113.9"}) > 0
        during = []
        while flood.poll() is None and len(during) < 300:
            during.append(_read_ms(server, token, tenant))
            time.sleep(0.01)
        out, _ = flood.communicate(timeout=60)
        looked_up = _metric(server, "igflow_api_key_lookups_total") - lookups
        throttled = _metric(server, "igflow_api_auth_throttled_total")
    report = json.loads(out)
    answers = {(s, c, r, t): n for s, c, r, t, n in report["answers"]}
    sent = sum(answers.values())
    refused = answers.get((429, "AUTH_RATE_LIMITED", True, "application/problem+json"), 0)
    failed = sum(n for (s, c, _r, _t), n in answers.items() if s == 401 and c == "AUTH_INVALID")
    assert refused + failed == sent, answers
    # The token-bucket law: at most burst + rate x elapsed failures got through to a check,
    # plus the requests in flight (4) when the bucket ran dry: they passed the gate before the
    # failures ahead of them were counted.
    assert failed <= burst + rate * report["elapsed"] + 4, (failed, report)
    # Every refusal the flood saw, and the fresh token's, counted by the server. Under heavy
    # load the server counted one more than the clients saw (twice, in other runs), and once
    # one fewer (2,712 of 2,712 with the fresh token's: the counter and the answers are not
    # read at one instant); the cause is not pinned down, so the flood's concurrency (4) is
    # allowed either way.
    assert sent >= 1000 and refused <= throttled <= refused + 1 + 4, (sent, refused, throttled)
    # Half of the checks were API keys: at most that many Postgres lookups, not one per request.
    assert looked_up <= failed, (looked_up, failed)
    assert (fresh.status_code, fresh.headers.get("x-igflow-code")) == (429, "AUTH_RATE_LIMITED")
    assert int(fresh.headers["retry-after"]) >= 1
    alone_ms, during_ms = statistics.median(alone), statistics.median(during)
    print(
        f"{sent:,} bad requests in {report['elapsed']:.1f} s ({sent / report['elapsed']:,.0f}/s),"
        f" {failed} checked ({looked_up:.0f} key lookups), {refused:,} refused unread;"
        f" the good tenant's read median {alone_ms:.2f} ms alone, {during_ms:.2f} ms during"
        f" (p95 {statistics.quantiles(during, n=20)[-1]:.2f} ms, {len(during)} reads)"
    )
    # The good tenant kept reading while the flood ran (each read answered 200, _read_ms checks);
    # how fast is a benchmark's question (benchmarks/api.py --hostile-only), not a timed test's.
    assert len(during) >= 10, (len(during), during_ms)


def test_websocket_logins_count_against_the_address_too(stack: Settings, tenant: str) -> None:
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    with serve(
        stack, IGFLOW_API_AUTH_FAILURE_BURST="3", IGFLOW_API_AUTH_FAILURE_RPS="0.1"
    ) as server:
        here = {"x-forwarded-for": "198.51.100.4"}
        for _ in range(3):
            with server.connect_ws(here) as ws:
                ws.send(json.dumps({"type": "connection_init", "payload": {"X-API-Key": "igk_x"}}))
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        with pytest.raises(InvalidStatus) as refused:
            server.connect_ws(here)
        response = refused.value.response
        assert response.status_code == 429
        assert response.headers["x-igflow-code"] == "AUTH_RATE_LIMITED"
        assert int(response.headers["retry-after"]) >= 1
        # Another address (this one, 127.0.0.1) is not cut off.
        with server.connect_ws() as ws:
            token = mint_token(server.settings, tenant, READ)
            ws.send(
                json.dumps(
                    {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
                )
            )
            assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
