"""Fuzzing the API's HTTP side (issue 12): hostile JSON bodies to ``POST /v1/coherence/signals``
and hostile GraphQL documents and variables to ``POST /graphql``, against a real ``igflow serve``
on the local stack.

Every input is accounted for: a REST push is ``202`` (then it is on the topic) or a problem
document with a reason code; a GraphQL request is answered with data or with errors that each
carry ``extensions.code``. Never a 5xx, never a traceback in the server's log, and the server
answers ``/health`` and a real query afterwards.

The inputs come from a seeded generator (``IGFLOW_FUZZ_SEED``, default 12; ``IGFLOW_FUZZ_CASES``
per path, default 3,000: about 20 s here), so a failure names the seed and case to replay.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.jwt_keys import mint_token
from api.persisted import sha256_hex
from core.settings import Settings
from tests.integration.api_server import ApiServer, serve
from tests.integration.conftest import tagged_topics
from tests.integration.scratch import Scratch
from tests.integration.test_api import PUBLISH, SCORE_QUERY

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("IGFLOW_FUZZ_SEED", "12"))
CASES = int(os.environ.get("IGFLOW_FUZZ_CASES", "3000"))

SUBSCRIBE = "subscription S($tenantId: ID!) { coherenceEvents(tenantId: $tenantId) { id } }"
FIELDS = ("tenantId", "signalId", "type", "value", "weight", "source", "ts", "selectors")


@pytest.fixture(scope="module")
def fuzz_server(
    stack: Settings, module_scratch: Scratch
) -> Iterator[tuple[ApiServer, str, dict[str, str]]]:
    tenant = module_scratch.tenant("fuzz")
    settings = tagged_topics(stack, module_scratch, "fuzz")
    with serve(settings, IGFLOW_API_WEBHOOK_SECRET="whsec-fuzz") as server:
        token = mint_token(settings, tenant, ["coherence:read", "coherence:write"])
        yield server, tenant, {"authorization": f"Bearer {token}"}


# --- hostile values ----------------------------------------------------------------------------


def deep(rng: random.Random) -> str:
    """A placeholder that :func:`encode` replaces with arrays and objects nested up to just under
    the server's JSON limit (so the data gets past the parser), written as text: the test's own
    ``json.dumps`` would run out of stack first."""
    return f"\x01deep{rng.choice([5, 100, 900, 990])}\x01"


_DEEP = re.compile(rb'"\\u0001deep(\d+)\\u0001"')


def _nested(match: re.Match[bytes]) -> bytes:
    depth = int(match.group(1))
    return b'{"a":[' * (depth // 2) + b"0" + b"]}" * (depth // 2)


def hostile_value(rng: random.Random) -> Any:
    """A JSON value chosen to break a parser, a coercion, an encoder or a store."""
    pool: list[Callable[[], Any]] = [
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.choice([0, -1, 1, 2**63, -(2**63) - 1, 2**64, 10**400, -(10**400)]),
        lambda: rng.choice([0.0, -0.0, 1e-320, 1e308, -1e308, 0.5, 1.0000000000000002]),
        lambda: rng.choice([float("nan"), float("inf"), float("-inf")]),
        lambda: "",
        lambda: "x" * rng.choice([1, 255, 256, 257, 1024, 70_000, 300_000]),
        lambda: rng.choice(["\ud800", "\udfff", "a\udbff", "\ud83d\ude00", "\udc00\ud800"]),
        lambda: rng.choice(["\x00", "a\x00b", "\u202e", "\ufeff", "\uffff", "\U0010ffff"]),
        lambda: rng.choice(["%s%n%x", "'; DROP TABLE x; --", "../../etc/passwd", "${jndi:x}"]),
        lambda: rng.choice(["tenant:*", "*", "tenant:a:score", "\r\nX-Injected: 1", "<script>"]),
        lambda: "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(1, 50))),
        lambda: [],
        lambda: {},
        lambda: deep(rng),
        lambda: ["s"] * rng.choice([2, 1000, 1001, 50_000]),
        lambda: [rng.choice(["x", 1, None, [], "\ud800"]) for _ in range(rng.randrange(1, 5))],
        lambda: rng.choice(
            [
                "2026-13-45T00:00:00+00:00",
                "9999-12-31T23:59:59+00:00",
                "0001-01-01T00:00:00+00:00",
                "2026-12-04T00:00:00+25:00",
                "2026-12-04",
                "2026-12-04T00:00:00",
                "2026-12-04T00:00:00.123456789+00:00",
                "now",
            ]
        ),
    ]
    return rng.choice(pool)()


def valid_signal(rng: random.Random, tenant: str) -> dict[str, Any]:
    ts = datetime.now(UTC) - timedelta(seconds=rng.randrange(0, 3600))
    return {
        "tenantId": tenant,
        "signalId": f"fz-{rng.getrandbits(48):x}",
        "type": rng.choice(["latency", "error_rate", "ok"]),
        "value": rng.random(),
        "weight": rng.choice([None, 0.0, 1.0, 2.5]),
        "source": "fuzz",
        "ts": ts.isoformat(),
        "selectors": ["a", "b"][: rng.randrange(3)],
    }


def mutate_object(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    for _ in range(rng.randrange(1, 4)):
        choice = rng.random()
        if choice < 0.6:
            data[rng.choice(list(data) or ["x"])] = hostile_value(rng)
        elif choice < 0.8 and data:
            del data[rng.choice(list(data))]
        else:
            data[rng.choice(["extra", "__proto__", "tenantid", "", "\ud800"])] = hostile_value(rng)
    return data


def encode(rng: random.Random, data: Any) -> bytes:
    """JSON text of ``data`` (NaN, lone surrogates and all), sometimes damaged on the way."""
    text = json.dumps(data, ensure_ascii=rng.random() < 0.7).encode("utf-8", "surrogatepass")
    text = _DEEP.sub(_nested, text)
    damage = rng.random()
    if damage < 0.08:
        return text[: rng.randrange(len(text) + 1)]  # truncated
    if damage < 0.12:
        cut = rng.randrange(len(text) + 1)
        return (
            text[:cut] + bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 8))) + text[cut:]
        )
    if damage < 0.14:
        return b"\xef\xbb\xbf" + text  # a byte-order mark
    if damage < 0.16:
        return text.replace(b"{", b"{" + b'"tenantId": "other", ', 1)  # a duplicate key
    return text


def whole_body(rng: random.Random) -> bytes:
    """Bodies that are not a signal object at all."""
    return rng.choice(
        [
            b"",
            b"null",
            b"[]",
            b"0",
            b'"x"',
            b"[" * 10_000 + b"]" * 10_000,
            b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
            bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 2000))),
            b"\xff\xfe{\x00}\x00",
            b'{"value": 1' + b"0" * 5000 + b"}",
            b'{"value": 1e99999}',
            b"{" + b'"k": 1,' * 50_000 + b'"z": 0}',
            b"[" + b"0," * 600_000 + b"0]",  # past api.max_body_bytes: 413
        ]
    )


# --- hostile GraphQL documents -----------------------------------------------------------------

_TOKENS = [
    "{", "}", "(", ")", "[", "]", ":", "=", "@", "$", "!", "...", "|", "&",
    "query", "mutation", "subscription", "fragment", "on", "Query", "tenantCoherence",
    "tenantId", "score", "__typename", "__schema", "types", "name", "F", "x", '"s"', '"""b"""',
    "1", "-0", "1e400", "true", "null", "ID", "String", "@include(if: true)", "@skip(if: $v)",
    '"\\uD800"', '"\\u{110000}"', "#", "\n", "\ufeff", "\x00",
]  # fmt: skip


def hostile_document(rng: random.Random, tenant: str) -> tuple[str, Any]:
    """A GraphQL text and its variables."""
    kind = rng.randrange(14)
    variables: Any = {"tenantId": tenant}
    if kind == 0:  # random tokens
        text = " ".join(rng.choice(_TOKENS) for _ in range(rng.randrange(1, 300)))
    elif kind == 1:  # a valid document cut anywhere
        full = rng.choice([SCORE_QUERY, PUBLISH, SUBSCRIBE])
        text = full[: rng.randrange(len(full) + 1)]
    elif kind == 2:  # tokens dropped or swapped into a valid document
        words = rng.choice([SCORE_QUERY, PUBLISH]).split(" ")
        for _ in range(rng.randrange(1, 4)):
            words[rng.randrange(len(words))] = rng.choice(_TOKENS)
        text = " ".join(words)
    elif kind == 3:  # nested fragment spreads
        levels, fan = rng.randrange(2, 10), rng.randrange(2, 12)
        text = f"query {{ ...F{levels} }} fragment F0 on Query {{ __typename }} "
        text += " ".join(
            f"fragment F{i} on Query {{{f' ...F{i - 1}' * fan} }}" for i in range(1, levels + 1)
        )
    elif kind == 4:  # fragment cycles and unknown fragments
        text = rng.choice(
            [
                "query { ...A } fragment A on Query { ...B } fragment B on Query { ...A }",
                "query { ...A } fragment A on Query { ...A }",
                "query { ...Nope }",
                "fragment A on Query { __typename }",
            ]
        )
    elif kind == 5:  # aliases, around and far past the limits
        count = rng.choice([10, 150, 201, 700, 5_000, 40_000])
        text = "{ " + " ".join(f"a{i}: __typename" for i in range(count)) + " }"
    elif kind == 6:  # nesting
        depth = rng.choice([10, 100, 300, 3_000])
        text = "{" + "tenantCoherence(tenantId: $t) {" * depth + "score" + "}" * (depth + 1)
    elif kind == 7:  # introspection, deep or wide
        text = "{ __schema { types { fields { type { ofType { ofType { name } } } } } } }"
    elif kind == 8:  # the valid documents with hostile variables
        text = rng.choice([SCORE_QUERY, PUBLISH])
        variables = (
            {"tenantId": hostile_value(rng)}
            if text == SCORE_QUERY
            else {"input": mutate_object(rng, valid_signal(rng, tenant))}
        )
    elif kind == 9:  # variables that are not an object
        text, variables = SCORE_QUERY, hostile_value(rng)
    elif kind == 10:  # a subscription or two operations over HTTP
        text = rng.choice([SUBSCRIBE, SCORE_QUERY + " " + PUBLISH, "query A { x } query A { y }"])
    elif kind == 11:  # string literals
        literal = rng.choice(['"\\uD800"', '"\\uDBFF\\uDFFF"', '"' + "x" * 200_000 + '"'])
        text = f"{{ tenantCoherence(tenantId: {literal}) {{ score }} }}"
    elif kind == 12:  # directives and arguments
        text = (
            "query Q($v: Boolean!) { tenantCoherence(tenantId: $tenantId, extra: 1) "
            "@include(if: $v) @skip(if: 1) @nope { score @deprecated } }"
        )
    else:  # the publish input inline, with hostile literals
        value = rng.choice(["1e400", "-1", '"0.5"', "null", "[1]", "{a: 1}", "NaN"])
        text = (
            f'mutation {{ publishCoherenceSignal(input: {{tenantId: "{tenant}", type: "t", '
            f'value: {value}, source: "s", ts: "2026-01-01T00:00:00+00:00"}}) }}'
        )
    return text, variables


def graphql_body(rng: random.Random, tenant: str) -> bytes:
    text, variables = hostile_document(rng, tenant)
    request: dict[str, Any] = {"query": text, "variables": variables}
    extra = rng.random()
    if extra < 0.1:
        request["operationName"] = hostile_value(rng)
    elif extra < 0.2:
        request["extensions"] = {
            "persistedQuery": {"version": hostile_value(rng), "sha256Hash": sha256_hex(text)}
        }
    elif extra < 0.25:
        request = {"id": hostile_value(rng)}
    elif extra < 0.3:
        request = mutate_object(rng, request)
    return encode(rng, request) if rng.random() < 0.9 else whole_body(rng)


# --- the checks --------------------------------------------------------------------------------


def check_rest(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, what
    if response.status_code == 202:
        assert response.json()["accepted"] is True, what
        return
    assert response.headers["content-type"] == "application/problem+json", what
    problem = response.json()
    assert isinstance(problem["code"], str) and problem["code"], what
    assert problem["status"] == response.status_code, what


def check_graphql(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, what
    assert response.headers["content-type"] == "application/json", what
    result = response.json()
    assert "data" in result or result.get("errors"), what
    for error in result.get("errors") or []:
        assert isinstance(error["extensions"]["code"], str), what
        assert error["extensions"]["code"] != "INTERNAL_SERVER_ERROR", what


def test_fuzzed_rest_and_graphql_requests_are_answered_with_codes_and_never_a_5xx(
    fuzz_server: tuple[ApiServer, str, dict[str, str]],
) -> None:
    server, tenant, auth = fuzz_server
    rng = random.Random(SEED)
    statuses: dict[str, dict[int, int]] = {"rest": {}, "graphql": {}}
    started = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=30, verify=server.verify) as client:
        for case in range(CASES):
            what = f"seed {SEED}, case {case}"
            roll = rng.random()
            if roll < 0.1:
                body = whole_body(rng)
            else:
                signal = valid_signal(rng, tenant)
                body = encode(rng, signal if roll < 0.2 else mutate_object(rng, signal))
            headers = {b"authorization": auth["authorization"].encode()}
            headers[b"content-type"] = b"application/json"
            if rng.random() < 0.03:
                headers[b"content-type"] = rng.choice(
                    [b"text/plain", b'application/json; x="', b""]
                )
            if rng.random() < 0.01:  # credentials that are not (the caller's are kept verified)
                headers[b"authorization"] = rng.choice(
                    [
                        b"Bearer",
                        b"Bearer \xff\xfe",
                        b"Basic eA==",
                        b"Bearer a.b.c",
                        b"Bearer \xc3\xa9",
                    ]
                )
            response = client.post("/v1/coherence/signals", content=body, headers=headers)
            check_rest(response, f"REST {what}: {body[:300]!r} -> {response.text[:300]}")
            statuses["rest"][response.status_code] = (
                statuses["rest"].get(response.status_code, 0) + 1
            )

            body = graphql_body(rng, tenant)
            response = client.post("/graphql", content=body, headers=auth)
            check_graphql(response, f"GraphQL {what}: {body[:300]!r} -> {response.text[:300]}")
            counts = statuses["graphql"]
            counts[response.status_code] = counts.get(response.status_code, 0) + 1
        elapsed = time.monotonic() - started
        # Still serving, and still right.
        assert client.get("/health").json() == {"status": "ok"}
        got = client.post("/graphql", json={"query": "{ __typename }"}, headers=auth)
        assert got.json() == {"data": {"__typename": "Query"}}
    print(f"\nfuzz seed {SEED}: {CASES} cases per path in {elapsed:.1f} s; statuses {statuses}")
    # Each kind of input got through to the checks behind the parsers at least sometimes.
    assert statuses["rest"].get(202, 0) > 0 and statuses["rest"].get(422, 0) > 0, statuses
    assert statuses["graphql"].get(200, 0) > 0 and statuses["graphql"].get(400, 0) > 0, statuses
    log = server.log()
    assert "Traceback" not in log, log[log.find("Traceback") - 500 :][:3000]


WS_CASES = max(1, CASES // 10)


def test_fuzzed_websocket_subscribes_are_answered_with_codes_and_never_drop_the_socket(
    fuzz_server: tuple[ApiServer, str, dict[str, str]],
) -> None:
    from websockets.exceptions import ConnectionClosed

    server, tenant, auth = fuzz_server
    rng = random.Random(SEED)
    init = json.dumps(
        {"type": "connection_init", "payload": {"Authorization": auth["authorization"]}}
    )
    outcomes: dict[str, int] = {}
    for case in range(WS_CASES):
        text, variables = hostile_document(rng, tenant)
        payload: dict[str, Any] = {"query": text}
        if isinstance(variables, dict):
            payload["variables"] = variables
        if rng.random() < 0.2:
            payload["operationName"] = rng.choice(["S", "Nope", "A"])
        if rng.random() < 0.1:
            payload = {"id": rng.choice(["pq_coherence_events_v1", "pq_publish_signal_v1", "x"])}
            payload["variables"] = {"tenantId": tenant}
        what = f"WebSocket seed {SEED}, case {case}: {json.dumps(payload)[:300]}"
        with server.connect_ws() as ws:
            ws.send(init)
            assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack", what
            try:
                ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
                ws.send(json.dumps({"type": "ping"}))  # answered once the subscribe is handled
                while (message := json.loads(ws.recv(timeout=30)))["type"] != "pong":
                    kind = message["type"]
                    if kind == "error":
                        codes = [e["extensions"]["code"] for e in message["payload"]]
                        assert codes and "INTERNAL_SERVER_ERROR" not in codes, what
                    outcomes[kind] = outcomes.get(kind, 0) + 1
            except ConnectionClosed as closed:
                # Only the protocol's own closes (4400, 1009, ...), never a drop or 1011.
                assert closed.rcvd is not None and closed.rcvd.code not in (1006, 1011), what
                outcomes["closed"] = outcomes.get("closed", 0) + 1
    print(f"\nWebSocket fuzz seed {SEED}: {WS_CASES} subscribes; {outcomes}")
    assert outcomes.get("error", 0) > 0 and outcomes.get("next", 0) > 0, outcomes
    log = server.log()
    assert "Traceback" not in log, log[log.find("Traceback") - 500 :][:3000]
