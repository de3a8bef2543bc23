"""The tests' blocking WebSocket client (tests/ws_client.py) over TLS: many connections in a row
to a uvicorn server with the stack's kind of certificate, none lost or hung.

websockets' own blocking client hung in 2 of 3 runs of 300 such connections on this machine
(its reading thread blocked in ``SSL_read`` while the opening request was written from the
caller's thread); that is what stopped ``test_api.py``'s 25 WSS subscribers with TLS on.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from websockets.exceptions import ConnectionClosed

from dev import tls
from tests.ports import free_port
from tests.ws_client import WebSocket, connect


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app that accepts a WebSocket and sends every text message back; the text
    ``close`` is answered with close code 4000."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept", "subprotocol": next(iter(scope["subprotocols"]), None)})
    while (message := await receive())["type"] == "websocket.receive":
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 4000, "reason": "asked"})
            return
        await send({"type": "websocket.send", "text": message.get("text")})


@pytest.fixture(scope="module")
def wss(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ssl.SSLContext]]:
    """A TLS echo server on loopback (the stack's CA and server certificate, made for the
    test) and a context that verifies it."""
    directory = tls.ensure(Path(tmp_path_factory.mktemp("tls")))
    port = free_port()
    config = uvicorn.Config(
        _echo,
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(directory / tls.CERT_FILE),
        ssl_keyfile=str(directory / tls.KEY_FILE),
        ws="websockets-sansio",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the echo server did not start"
        time.sleep(0.02)
    yield f"wss://127.0.0.1:{port}/", ssl.create_default_context(cafile=directory / tls.CA_FILE)
    server.should_exit = True
    thread.join(timeout=10)


def test_many_wss_connections_in_a_row_each_open_echo_and_close(
    wss: tuple[str, ssl.SSLContext],
) -> None:
    url, context = wss
    opened = 0
    for _group in range(8):
        group: list[WebSocket] = []
        try:
            for _ in range(25):  # as many as test_api.py's subscribers, open together
                ws = connect(url, subprotocols=["graphql-transport-ws"], ssl=context)
                group.append(ws)
                ws.send(json.dumps({"n": opened}))
                assert json.loads(ws.recv(timeout=10)) == {"n": opened}
                opened += 1
        finally:
            for ws in group:
                ws.close()
    assert opened == 200
    with connect(url, ssl=context) as ws:
        ssl_object = ws.connection.transport.get_extra_info("ssl_object")
        assert ssl_object.version() == "TLSv1.3"  # session tickets after the handshake


def test_recv_times_out_the_connection_stays_usable_and_a_close_is_reported(
    wss: tuple[str, ssl.SSLContext],
) -> None:
    url, context = wss
    with connect(url, ssl=context) as ws:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)
        ws.send("after the timeout")
        assert ws.recv(timeout=10) == "after the timeout"
        ws.send("close")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "asked")
    ws.close()  # idempotent


def test_a_client_that_does_not_trust_the_ca_is_refused(
    wss: tuple[str, ssl.SSLContext],
) -> None:
    url, _context = wss
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(url, ssl=ssl.create_default_context())
