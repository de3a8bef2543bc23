"""Hostile requests against a real ``igflow serve`` (uvicorn, the local stack): documents that
would hold the event loop, JSON and values the stdlib accepts but the stores cannot hold,
malformed WebSocket traffic, and keep-alive connections after an error (issue 12, points 7, 8,
10 and 14).

Every refusal is a problem document or a GraphQL error with a code, or a WebSocket close with
the protocol's code; none is a 5xx, and the server logs no traceback for any of them.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from api.jwt_keys import mint_token
from core.settings import Settings
from tests.integration.api_server import ApiServer, serve
from tests.integration.conftest import tagged_topics
from tests.integration.hostile_documents import aliases, nested_fragments
from tests.integration.scratch import Scratch
from tests.integration.test_api import PUBLISH
from tests.ws_client import WebSocket

pytestmark = pytest.mark.integration

SCOPES = ["coherence:read", "coherence:write"]
SCORE_SUB = (
    "subscription S($tenantId: ID!) { coherenceScoreChanged(tenantId: $tenantId) { score } }"
)
#: The server's limits in this module (small, so the tests are quick).
INIT_TIMEOUT_S = 1.0
MAX_SUBSCRIPTIONS = 5


@pytest.fixture(scope="module")
def tenant(module_scratch: Scratch) -> str:
    return module_scratch.tenant("hostile")


@pytest.fixture(scope="module")
def server(stack: Settings, module_scratch: Scratch) -> Iterator[ApiServer]:
    settings = tagged_topics(stack, module_scratch, "hostile")
    with serve(
        settings,
        IGFLOW_API_WS_INIT_TIMEOUT_SECONDS=str(INIT_TIMEOUT_S),
        IGFLOW_API_WS_MAX_SUBSCRIPTIONS=str(MAX_SUBSCRIPTIONS),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def auth(server: ApiServer, tenant: str) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_token(server.settings, tenant, SCOPES)}"}


def signal_body(tenant: str, **changes: Any) -> dict[str, Any]:
    body = {
        "tenantId": tenant,
        "type": "latency",
        "value": 0.5,
        "source": "sensor-a",
        "ts": datetime.now(UTC).isoformat(),
    }
    body.update(changes)
    return body


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.text
    assert response.json()["code"] == code, response.text
    assert response.json()["status"] == status


def graphql_codes(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"] == "application/json", response.text
    return [e["extensions"]["code"] for e in response.json()["errors"]]


def no_traceback(server: ApiServer) -> None:
    log = server.log()
    assert "Traceback" not in log, log[log.find("Traceback") - 500 :][:3000]


@contextlib.contextmanager
def health_latency(server: ApiServer) -> Iterator[list[float]]:
    """``GET /health`` on its own keep-alive connection every 5 ms while the block runs; yields
    the list the latencies (seconds) are appended to."""
    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=server.url, timeout=30, verify=server.verify) as client:
            while not stop.is_set():
                started = time.perf_counter()
                assert client.get("/health").status_code == 200
                latencies.append(time.perf_counter() - started)
                stop.wait(0.005)

    prober = threading.Thread(target=probe)
    prober.start()
    time.sleep(0.2)
    try:
        yield latencies
    finally:
        time.sleep(0.1)
        stop.set()
        prober.join()


# --- point 7: no request holds the event loop ------------------------------------------------


def test_hostile_documents_never_hold_the_event_loop(
    server: ApiServer, auth: dict[str, str]
) -> None:
    fragments = nested_fragments(7)
    assert len(fragments) < 700  # the 654-byte document took 4.5-7.7 s to cost
    many = aliases(50_000)
    assert 800_000 < len(many) < server.settings.api.max_body_bytes  # 3.1 s before
    answers = []
    with health_latency(server) as latencies:
        for text in (fragments, many):
            for variant in range(3):  # new texts: not answered from the document cache
                started = time.perf_counter()
                got = server.client.post(
                    "/graphql", json={"query": text + " " * variant}, headers=auth
                )
                answers.append((time.perf_counter() - started, graphql_codes(got)))
        with server.connect_ws() as ws:
            ws.send(json.dumps({"type": "connection_init", "payload": auth}))
            assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
            ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": many}}))
            refused = json.loads(ws.recv(timeout=10))
            # A message longer than a request body may be (the 9 MiB document that held the
            # loop 12.4 s): the socket is closed with 1009, message too big.
            ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": {"query": many * 11}}))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
    assert refused["type"] == "error" and refused["id"] == "1"
    assert [e["extensions"]["code"] for e in refused["payload"]] == ["QUERY_TOO_COSTLY"]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert all(codes == ["QUERY_TOO_COSTLY"] for _s, codes in answers), answers
    assert max(seconds for seconds, _c in answers) < 1.0, answers
    # The loop answered /health all along (before: blocked for seconds at a time). The bound
    # leaves room for this shared 2-core machine's noise (~20 ms with no hostile traffic).
    assert len(latencies) > 20
    assert max(latencies) < 0.25, sorted(latencies)[-5:]
    no_traceback(server)


# --- point 8: malformed JSON and unencodable values are 400/422 with a code -------------------


def test_json_and_values_the_stores_cannot_hold_are_client_errors_with_codes(
    server: ApiServer, tenant: str, auth: dict[str, str]
) -> None:
    json_headers = {**auth, "content-type": "application/json"}
    deep = b"[" * 10_000 + b"]" * 10_000
    for path in ("/v1/coherence/signals", "/graphql"):
        got = server.client.post(path, content=deep, headers=json_headers)
        if path == "/graphql":
            assert (got.status_code, graphql_codes(got)) == (400, ["BAD_REQUEST"])
        else:
            assert_problem(got, 400, "BAD_REQUEST")
    big = 10**400
    lone = "\ud800"
    rest_cases = [
        (signal_body(tenant, value=big), 422, "FIELD_INVALID"),
        (signal_body(tenant, weight=big), 422, "FIELD_INVALID"),
        (signal_body(tenant, weight=-big), 422, "FIELD_INVALID"),
        (signal_body(tenant, type=lone), 400, "BAD_REQUEST"),
        (signal_body(tenant, signalId="a" + lone), 400, "BAD_REQUEST"),
        (signal_body(tenant, selectors=["x", lone]), 400, "BAD_REQUEST"),
        (signal_body(tenant, source="\udfff"), 400, "BAD_REQUEST"),
    ]
    for body, status, code in rest_cases:
        got = server.client.post(
            "/v1/coherence/signals", content=json.dumps(body), headers=json_headers
        )
        assert_problem(got, status, code)
    # The same surrogate encoded in the bytes themselves (not valid UTF-8; json.loads decodes
    # bytes with "surrogatepass"), and a body in UTF-16: found by the fuzz test.
    raw = json.dumps(signal_body(tenant, type="X"), ensure_ascii=False).encode()
    for not_utf8 in (raw.replace(b'"X"', b'"\xed\xa0\x80"'), raw.decode().encode("utf-16")):
        got = server.client.post("/v1/coherence/signals", content=not_utf8, headers=json_headers)
        assert_problem(got, 400, "BAD_REQUEST")
        got = server.client.post("/graphql", content=not_utf8, headers=json_headers)
        assert (got.status_code, graphql_codes(got)) == (400, ["BAD_REQUEST"])
    # A surrogate pair is Unicode (one character): accepted.
    paired = server.client.post(
        "/v1/coherence/signals",
        content=json.dumps(signal_body(tenant, type="\ud83d\ude00")),
        headers=json_headers,
    )
    assert paired.status_code == 202, paired.text
    for changes in ({"value": big}, {"weight": big}, {"type": lone}, {"selectors": [lone]}):
        got = server.client.post(
            "/graphql",
            content=json.dumps(
                {"query": PUBLISH, "variables": {"input": signal_body(tenant, **changes)}}
            ),
            headers=json_headers,
        )
        assert got.status_code < 500 and graphql_codes(got) == ["BAD_REQUEST"], got.text
    assert_problem(server.client.get("/no/such/path"), 404, "NOT_FOUND")
    wrong_method = server.client.get("/v1/coherence/signals")
    assert_problem(wrong_method, 405, "METHOD_NOT_ALLOWED")
    assert wrong_method.headers["allow"] == "POST"
    assert_problem(server.client.delete("/health"), 405, "METHOD_NOT_ALLOWED")
    no_traceback(server)


# --- point 10: WebSocket errors close with the protocol's codes -------------------------------


def _socket(server: ApiServer) -> WebSocket:
    return server.connect_ws()


def _close_code(ws: WebSocket) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None, "no close frame (1006)"
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_websocket_errors_close_with_the_protocols_codes(
    server: ApiServer, tenant: str, auth: dict[str, str]
) -> None:
    def init(payload: Any) -> str:
        return json.dumps({"type": "connection_init", "payload": payload})

    forbidden, invalid = (4403, "AUTH_INVALID"), (4400, "BAD_REQUEST")
    init_cases: list[tuple[str | bytes, tuple[int, str]]] = [
        (init({"Authorization": 123}), forbidden),
        (init({"Authorization": ["Bearer x"]}), forbidden),
        (init({"authorization": {"a": 1}}), forbidden),
        (init({"X-API-Key": 7}), forbidden),
        (init([1, 2]), invalid),
        ("this is not JSON", invalid),
        (json.dumps([{"type": "connection_init"}]), invalid),
        (json.dumps({"type": 5}), invalid),
        (json.dumps({"type": "no_such_type"}), invalid),
        (b'{"type": "connection_init"}', invalid),  # a binary frame
        ("[" * 20_000 + "]" * 20_000, invalid),
        ('{"type": "connection_init", "payload": {"x": "\\ud800"}}', invalid),
    ]
    for frame, expected in init_cases:
        with _socket(server) as ws:
            ws.send(frame)
            assert _close_code(ws) == expected, frame[:80]
    authenticate = init({"Authorization": auth["authorization"]})
    subscribe_cases: list[dict[str, Any]] = [
        {"id": "1", "type": "subscribe", "payload": {"query": SCORE_SUB, "variables": [tenant]}},
        {"id": "1", "type": "subscribe", "payload": {"query": 42}},
        {"id": "1", "type": "subscribe", "payload": [SCORE_SUB]},
        {"id": 1, "type": "subscribe", "payload": {"query": SCORE_SUB}},
        {"type": "subscribe", "payload": {"query": SCORE_SUB}},
        {"id": "1", "type": "subscribe", "payload": {"query": SCORE_SUB, "extensions": "x"}},
    ]  # fmt: skip
    for message in subscribe_cases:
        with _socket(server) as ws:
            ws.send(authenticate)
            assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
            ws.send(json.dumps(message))
            assert _close_code(ws) == (4400, "BAD_REQUEST"), message
    # Silence after connecting: closed with 4408 once api.ws_init_timeout_seconds pass.
    with _socket(server) as ws:
        started = time.monotonic()
        assert _close_code(ws)[0] == 4408
        # The server's clock starts at its accept, a little before the client's handshake ends.
        assert INIT_TIMEOUT_S - 0.2 <= time.monotonic() - started < INIT_TIMEOUT_S + 2
    # At most api.ws_max_subscriptions at once on one socket; the next is refused, the socket
    # and its subscriptions stay.
    with _socket(server) as ws:
        ws.send(authenticate)
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        for k in range(MAX_SUBSCRIPTIONS + 1):
            payload = {"query": SCORE_SUB, "variables": {"tenantId": tenant}}
            ws.send(json.dumps({"id": f"s{k}", "type": "subscribe", "payload": payload}))
        refused = json.loads(ws.recv(timeout=10))
        assert refused["type"] == "error" and refused["id"] == f"s{MAX_SUBSCRIPTIONS}"
        assert [e["extensions"]["code"] for e in refused["payload"]] == ["TOO_MANY_SUBSCRIPTIONS"]
        ws.send(json.dumps({"id": "s0", "type": "complete"}))
        payload = {"query": SCORE_SUB, "variables": {"tenantId": tenant}}
        ws.send(json.dumps({"id": "again", "type": "subscribe", "payload": payload}))
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=10)) == {"type": "pong"}  # no error for "again"
    no_traceback(server)


# --- point 14: keep-alive connections after an error response ---------------------------------


def _read_response(conn: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length from ``conn``; the rest stays in ``buffer``."""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            msg = f"connection closed before a response; got {bytes(buffer)[:200]!r}"
            raise ConnectionError(msg)
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            msg = "connection closed inside a response body"
            raise ConnectionError(msg)
        rest += chunk
    buffer[:] = rest[length:]
    return status, headers, rest[:length]


def _closed(conn: socket.socket) -> bool:
    conn.settimeout(5)
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return False  # reset, not closed cleanly


def test_keep_alive_connections_survive_error_responses(
    server: ApiServer, auth: dict[str, str]
) -> None:
    token = auth["authorization"]

    def request(path: str, body: bytes, *, method: str = "POST", chunked: bool = False) -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: {token}\r\n"
        head += "Content-Type: application/json\r\n"
        if chunked:
            chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
            framed = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
            return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + framed
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    health = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
    huge = b"[" + b"0," * (1 << 20) + b"0]"
    errors = [
        ("deep JSON, REST", request("/v1/coherence/signals", b"[" * 10_000 + b"]" * 10_000)),
        ("deep JSON, GraphQL", request("/graphql", b"{" * 10_000)),
        ("413 by Content-Length", request("/v1/coherence/signals", huge)),
        ("413, chunked", request("/v1/coherence/signals", huge, chunked=True)),
        ("too large, GraphQL", request("/graphql", huge)),
        ("not JSON", request("/v1/coherence/signals", b"{")),
        ("404", request("/nowhere", b"{}")),
        ("405", request("/health", b"{}")),
    ]
    for name, sent in errors:
        with server.open_socket() as conn:
            buffer = bytearray()
            conn.sendall(sent)
            status, headers, _body = _read_response(conn, buffer)
            assert 400 <= status < 500, (name, status)
            if headers.get("connection", "").lower() == "close":
                assert _closed(conn), name  # closed cleanly, as announced
                continue
            for _ in range(2):  # the same connection keeps serving
                conn.sendall(health)
                status, _headers, body = _read_response(conn, buffer)
                assert (status, json.loads(body)) == (200, {"status": "ok"}), name
    no_traceback(server)


def test_a_client_leaving_mid_body_is_no_server_error(
    server: ApiServer, auth: dict[str, str]
) -> None:
    for path in ("/v1/coherence/signals", "/graphql"):
        with server.open_socket() as conn:
            conn.sendall(
                f"POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: {auth['authorization']}\r\n"
                'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"a":'.encode()
            )
            time.sleep(0.2)  # the server is reading the body when the client goes
    deadline = time.monotonic() + 5
    while server.log().count("client left mid-request") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.log().count("client left mid-request") >= 2
    assert server.client.get("/health").status_code == 200
    no_traceback(server)  # was an "unhandled exception" with its traceback (ClientDisconnect)
