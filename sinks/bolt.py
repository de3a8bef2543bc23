"""Bolt plumbing for the graph sink: one driver per process, and read deadlines.

One cached driver per ``(uri, user)`` and process, closed at exit: the sink's partitions, the
replay's checks and the tests share its connection pool. ``before_connect`` (FalkorDB's
:func:`sinks.falkordb_compat.absorb`) runs before each new connection and once more after the
drivers close at exit; Neo4j needs none.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from neo4j import Driver, GraphDatabase, ManagedTransaction, TrustCustomCAs

__all__ = ["Server", "bound_reads", "server_for"]

log = logging.getLogger(__name__)

#: TCP connect and Bolt handshake of a new connection (the driver bounds the handshake by the
#: acquisition timeout, not by ``connection_timeout``).
_CONNECT_TIMEOUT_S = 5.0
#: Sending one request (a 10,000-signal batch is one request of about 8 MB).
_SEND_TIMEOUT_S = 30.0

#: Called with (host, port) before each new connection.
BeforeConnect = Callable[[str, int], None]


@dataclasses.dataclass
class Server:
    driver: Driver
    before_connect: BeforeConnect | None = None
    #: Address of the last connection opened (known only with a ``before_connect`` hook).
    address: tuple[str, int] | None = None


_SERVERS: dict[tuple[str, str, bool, str], Server] = {}
_SERVERS_LOCK = threading.Lock()


def server_for(
    uri: str,
    user: str,
    password: str,
    *,
    before_connect: BeforeConnect | None = None,
    ca_file: str = "",
) -> Server:
    """The process's driver for ``(uri, user)`` (and hook), created on first use, closed at exit.

    ``ca_file``: encrypt the connections and verify the server's certificate (chain and host
    name) against this CA, for a ``bolt://`` or ``neo4j://`` URI (a ``+s`` scheme names its
    own trust and takes no CA).

    The driver retries nothing itself (``max_transaction_retry_time=0``):
    :func:`~core.retry.write_with_retry` owns retries, so one attempt is one attempt.
    """
    key = (uri, user, before_connect is not None, ca_file)
    with _SERVERS_LOCK:
        held = _SERVERS.get(key)
        if held is not None:
            return held
        options: dict[str, Any] = {}
        if ca_file:
            options["encrypted"] = True
            options["trusted_certificates"] = TrustCustomCAs(ca_file)
        if before_connect is not None:

            def resolve(address: Any) -> list[Any]:
                host, port = str(address[0]), int(address[1])
                before_connect(host, port)
                server.address = (host, port)
                return [address]

            options["resolver"] = resolve
        driver = GraphDatabase.driver(
            uri,
            auth=(user, password),
            connection_timeout=_CONNECT_TIMEOUT_S,
            connection_acquisition_timeout=_CONNECT_TIMEOUT_S,
            connection_write_timeout=_SEND_TIMEOUT_S,
            max_transaction_retry_time=0.0,
            **options,
        )
        server = Server(driver, before_connect)
        _SERVERS[key] = server
        return server


@atexit.register
def _close_servers() -> None:
    """Close every driver at exit, then run each ``before_connect`` hook once more."""
    with _SERVERS_LOCK:
        servers = list(_SERVERS.values())
        _SERVERS.clear()
    for server in servers:
        server.driver.close()
    hooked = [s for s in servers if s.before_connect is not None and s.address is not None]
    if hooked:
        time.sleep(0.05)  # let the server read the GOODBYEs first
    for server in hooked:
        if server.before_connect is not None and server.address is not None:
            server.before_connect(*server.address)


def bound_reads(tx: ManagedTransaction, seconds: float) -> None:
    """Give the transaction's connection a read deadline, so that a paused or hung server fails
    the write (``ServiceUnavailable``, retried) instead of blocking the sink for good.

    The driver sets one only when the server hints ``connection.recv_timeout_seconds`` (Neo4j
    does only when configured to), through the same socket method used here; there is no
    public option. If a driver release renames it, reads go unbounded again and this logs once.
    """
    connection = getattr(tx, "_connection", None)
    setter = getattr(getattr(connection, "socket", None), "set_read_timeout", None)
    if callable(setter):
        setter(seconds)
    else:
        _warn_unbounded()


@functools.cache
def _warn_unbounded() -> None:
    log.warning("graph: cannot bound Bolt reads with this neo4j driver; a paused server hangs")
