"""A blocking WebSocket client for the tests that is safe over TLS (``wss://``).

websockets' own blocking client (``websockets.sync.client``) reads the socket in a thread of
its own while the caller writes from another, so over TLS two threads enter one OpenSSL
session at once, which OpenSSL forbids. On this machine that showed up two ways: ``[SSL]
internal error`` on a send, and a hang: the reading thread had consumed the server's TLS 1.3
session tickets and sat blocked in ``SSL_read`` while the opening request, written
concurrently, never reached the server; the handshake timed out and the client then waited
for that thread without a timeout, forever (``test_api.py``'s 25 subscribers stopped there
for 11 minutes; 2 of 3 runs of 300 connections to a TLS echo server hung the same way).

This client keeps the blocking interface the tests use (``send``, ``recv(timeout=...)``,
``close``, a context manager; the same ``ConnectionClosed`` and ``InvalidStatus``
exceptions) over websockets' asyncio client, run on an event loop thread of its own per
connection: asyncio does TLS through memory buffers on that one thread, so one session is
only ever entered by one thread.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import threading
from collections.abc import Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as _connect
from websockets.typing import Data, Subprotocol

__all__ = ["WebSocket", "connect"]

_T = TypeVar("_T")


class WebSocket:
    """One open connection; every call blocks the caller until its loop has done the work."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self._loop = loop
        self._thread = thread
        self._conn: ClientConnection | None = None

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def connection(self) -> ClientConnection:
        """The asyncio connection (its ``response``, ``close_code``, ...)."""
        assert self._conn is not None, "not connected"
        return self._conn

    def send(self, message: Data) -> None:
        """Send one text (``str``) or binary (``bytes``) message."""
        self._run(self.connection.send(message))

    def recv(self, timeout: float | None = None) -> Data:
        """The next message; ``TimeoutError`` after ``timeout`` seconds (the message is not
        lost: websockets' ``recv`` may be cancelled), ``ConnectionClosed`` once closed."""
        return self._run(asyncio.wait_for(self.connection.recv(), timeout))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (the closing handshake, bounded by websockets' close timeout)
        and stop its loop. Idempotent."""
        if self._loop.is_closed():
            return
        try:
            if self._conn is not None:
                self._run(self._conn.close(code, reason))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(
    url: str,
    *,
    subprotocols: Sequence[str] = (),
    ssl: ssl_module.SSLContext | None = None,
    additional_headers: Mapping[str, str] | None = None,
    open_timeout: float = 10.0,
) -> WebSocket:
    """Open ``url`` (``ws://`` or ``wss://``; ``ssl`` is the context that verifies the server,
    the system's CAs when ``None``). Raises what websockets raises (``InvalidStatus`` for a
    refused upgrade, with its ``response``)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="ws-client", daemon=True)
    thread.start()
    ws = WebSocket(loop, thread)
    options: dict[str, Any] = {
        "subprotocols": [Subprotocol(p) for p in subprotocols] or None,
        "additional_headers": dict(additional_headers or {}),
        "open_timeout": open_timeout,
    }
    if ssl is not None:
        options["ssl"] = ssl

    async def _open() -> ClientConnection:
        return await _connect(url, **options)

    try:
        ws._conn = ws._run(_open())
    except BaseException:
        ws.close()
        raise
    return ws
