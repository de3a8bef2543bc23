"""The API's first line against hostile input, without a server: request JSON, the shape of
graphql-transport-ws messages, and the application's edge (no exception escapes it)."""

from __future__ import annotations

import json

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from api.http_errors import EXCEPTION_HANDLERS, App
from api.request_json import BadJson, loads
from api.ws_messages import protocol_message


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (b"[" * 5_000 + b"]" * 5_000, "nests too deeply"),
        (b'{"type": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"\\udfff": 1}', "lone UTF-16 surrogate"),  # in a key too
        (b'{"type": "\xed\xa0\x80"}', "not UTF-8"),  # an encoded surrogate
        ('{"type": "x"}'.encode("utf-16"), "not UTF-8"),
        (b"\xef\xbb\xbf{}", "not JSON"),  # a byte-order mark
        (b"{", "not JSON"),
        (b"1" * 5_000, "not JSON"),  # past Python's int digits limit
    ],
)
def test_json_the_stores_cannot_hold_is_refused(text: bytes, why: str) -> None:
    with pytest.raises(BadJson) as refused:
        loads(text)
    assert why in refused.value.detail


def test_a_surrogate_pair_and_a_big_integer_are_json() -> None:
    assert loads(b'{"t": "\\ud83d\\ude00"}') == {"t": "\U0001f600"}
    assert loads('["\\uD83D\\uDE00"]') == ["\U0001f600"]
    assert loads(b"[" + b"9" * 400 + b"]") == [int("9" * 400)]  # the fields refuse it (422)


@pytest.mark.parametrize(
    ("event", "valid"),
    [
        ({"text": '{"type": "connection_init"}'}, True),
        ({"text": '{"type": "connection_init", "payload": {"Authorization": 1}}'}, True),
        ({"text": '{"type": "connection_init", "payload": []}'}, False),
        ({"bytes": b'{"type": "connection_init"}'}, False),
        ({"text": "not json"}, False),
        ({"text": "[]"}, False),
        ({"text": '{"type": null}'}, False),
        ({"text": '{"type": "ping"}'}, True),
        ({"text": '{"type": "complete"}'}, False),
        ({"text": '{"type": "complete", "id": "1"}'}, True),
        ({"text": '{"type": "subscribe", "id": "1", "payload": {"query": "{ x }"}}'}, True),
        ({"text": '{"type": "subscribe", "id": "1", "payload": {"id": "pq_x"}}'}, True),
        ({"text": '{"type": "subscribe", "id": "", "payload": {}}'}, False),
        ({"text": '{"type": "subscribe", "id": "1", "payload": {"variables": []}}'}, False),
        ({"text": '{"type": "subscribe", "id": "1", "payload": {"query": 1}}'}, False),
        ({"text": '{"type": "subscribe", "id": "1", "payload": {"operationName": {}}}'}, False),
        ({"text": '{"type": "subscribe", "id": "1", "payload": {"extensions": "x"}}'}, False),
        ({"text": '{"type": "subscribe", "id": "1"}'}, False),
    ],
)
def test_only_the_protocols_messages_pass(event: dict[str, object], valid: bool) -> None:
    message = protocol_message({"type": "websocket.receive", **event})
    assert isinstance(message, dict) is valid, message


async def _fails(_request: Request) -> Response:
    msg = "password=hunter2"
    raise RuntimeError(msg)


def test_the_application_answers_every_failure_with_a_problem_and_raises_nothing() -> None:
    app = App(
        routes=[Route("/fails", _fails, methods=["GET"])],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    # The test client re-raises whatever escapes the application: nothing may.
    with TestClient(app, raise_server_exceptions=True) as client:
        failed = client.get("/fails")
        missing = client.get("/nowhere")
        wrong = client.post("/fails")
    assert failed.status_code == 500
    assert failed.headers["content-type"] == "application/problem+json"
    assert failed.headers["connection"] == "close"
    assert failed.json()["code"] == "INTERNAL_SERVER_ERROR"
    assert "hunter2" not in failed.text
    assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")
    assert (wrong.status_code, wrong.json()["code"]) == (405, "METHOD_NOT_ALLOWED")
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert json.loads(missing.text)["instance"] == "/nowhere"
