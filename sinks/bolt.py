"""Bolt plumbing for the graph sink: one driver per process, read deadlines, and the exact
Cypher literals FalkorDB needs instead of Bolt parameters.

Why each piece exists (all measured on FalkorDB 4.16.3, see :mod:`sinks.graph` and DEVELOPERS.md):
a ``GOODBYE`` leaves a descriptor the server never serves again (hence one cached driver per
process, closed at exit, and :func:`absorb` before each new connection); the driver has no public
read timeout (hence :func:`bound_reads`); FalkorDB's Bolt parameters are unsafe and large
requests drop the connection (hence :func:`header_requests`, exact literals in a ``CYPHER``
header, at most :data:`MAX_REQUEST_BYTES` a request).
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from neo4j import Driver, GraphDatabase, ManagedTransaction

__all__ = [
    "HEADER_PROBE",
    "MAX_REQUEST_BYTES",
    "Server",
    "absorb",
    "bound_reads",
    "cypher_literal",
    "header_requests",
    "server_for",
]

log = logging.getLogger(__name__)

#: TCP connect and Bolt handshake of a new connection (the driver bounds the handshake by the
#: acquisition timeout, not by ``connection_timeout``).
_CONNECT_TIMEOUT_S = 5.0
#: Sending one request (on Neo4j, a 10,000-signal batch is one request of about 8 MB).
_SEND_TIMEOUT_S = 30.0
#: Raw handshakes tried before a new connection (see :func:`absorb`), and how long each waits.
_ABSORB_TRIES = 4
_ABSORB_TIMEOUT_S = 0.5
#: Bolt magic, then one version proposal (5.4, with a range of four minors) and three empty ones.
_BOLT_HANDSHAKE = bytes.fromhex("6060b01700040405000000000000000000000000")
#: Largest request sent to FalkorDB (bytes of query text). Its Bolt reader drops the connection
#: when the bytes pending on the socket end exactly on a 4 KiB chunk of its read buffer, which TCP
#: flow control brings about once a request outgrows the receive window. Measured as the first
#: request of a fresh connection: 4 MB failed 7 times in 8, 1 MB 5 in 8, 512 KB 1 in 8, 256 KB
#: and less never (0 in 32). 64 KB stays within the initial window (``tcp_rmem`` 128 KiB, half
#: of it for data); larger batches are split over several requests.
MAX_REQUEST_BYTES = 64_000
#: Set by the probe: the server takes a ``CYPHER name=value`` parameter header (FalkorDB).
HEADER_PROBE = "CYPHER igflow_probe=1 RETURN $igflow_probe AS v"


_ESCAPES = str.maketrans(
    {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
)


def cypher_literal(value: object) -> str:
    """``value`` as a Cypher literal, exactly: ``None``, ``bool``, ``int``, finite ``float``
    (``repr``, which round-trips), ``str`` (single-quoted), ``list``/``tuple`` and ``dict`` (keys
    must be plain identifiers); exact types only, subclasses are refused.

    Strings escape ``\\``, ``'`` and the control characters that have an escape; other characters
    go as they are (FalkorDB knows no ``\\u`` escape). Raises ``ValueError`` for a NUL character
    or a non-finite float, ``TypeError`` for any other type. Checked against FalkorDB: every such
    value, sent as a ``CYPHER v=...`` header, came back equal.
    """
    render = _RENDERERS.get(type(value))
    if render is None:
        msg = f"no Cypher literal for a {type(value).__name__}"
        raise TypeError(msg)
    return render(value)


def _float_literal(value: float) -> str:
    if not math.isfinite(value):
        msg = f"no Cypher literal for {value!r}"
        raise ValueError(msg)
    return repr(value)


def _string_literal(value: str) -> str:
    if "\x00" in value:
        msg = "a NUL character has no Cypher literal"
        raise ValueError(msg)
    return "'" + value.translate(_ESCAPES) + "'"


def _map_literal(value: Mapping[str, object]) -> str:
    return "{" + ",".join(f"{k}:{cypher_literal(v)}" for k, v in value.items()) + "}"


def _list_literal(value: Sequence[object]) -> str:
    return "[" + ",".join(map(cypher_literal, value)) + "]"


#: By exact type: one dictionary look-up per value keeps a 10,000-row batch cheap to encode, and
#: ``type(True) is bool``, so booleans never pass for integers.
_RENDERERS: dict[type, Callable[[Any], str]] = {
    type(None): lambda _: "null",
    bool: lambda v: "true" if v else "false",
    int: int.__repr__,
    float: _float_literal,
    str: _string_literal,
    dict: _map_literal,
    list: _list_literal,
    tuple: _list_literal,
}


def absorb(host: str, port: int) -> None:
    """Make sure the server's next descriptor answers Bolt, absorbing any that do not.

    Each try opens a raw connection and sends the Bolt handshake (magic, then a 5.x proposal);
    an answer means the descriptor is healthy, and the connection is dropped without a message
    (which leaves no trace). No answer within half a second means it landed on a descriptor
    FalkorDB left registered after someone's ``GOODBYE``: that connection is never served, and
    keeps the descriptor out of circulation, so the next try gets another one. Several such
    descriptors may be pending, and not necessarily the lowest free ones, hence a handful of
    tries. Harmless to Neo4j; a refused or reset connection ends it (the driver reports those).
    """
    for _ in range(_ABSORB_TRIES):
        try:
            with socket.create_connection((host, port), timeout=_ABSORB_TIMEOUT_S) as sock:
                sock.sendall(_BOLT_HANDSHAKE)
                if len(sock.recv(4)) == 4:
                    return
        except TimeoutError:
            continue
        except OSError:
            return


@dataclasses.dataclass
class Server:
    driver: Driver
    #: Whether the server takes a ``CYPHER name=value`` header (FalkorDB); ``None``: not probed.
    header: bool | None = None
    #: Address of the last connection opened.
    address: tuple[str, int] | None = None


_SERVERS: dict[tuple[str, str], Server] = {}
_SERVERS_LOCK = threading.Lock()


def server_for(uri: str, user: str, password: str) -> Server:
    """The process's driver for ``(uri, user)``, created on first use and closed at exit only.

    Drivers are never opened per batch or per test: closing one says ``GOODBYE`` on each of its
    connections, which on FalkorDB stalls the next client (see the module docstring).
    """
    with _SERVERS_LOCK:
        held = _SERVERS.get((uri, user))
        if held is not None:
            return held

        def resolve(address: Any) -> list[Any]:
            # Called by the driver before each new connection: the one place to absorb a
            # descriptor left behind by someone's GOODBYE before our handshake lands on it.
            host, port = str(address[0]), int(address[1])
            absorb(host, port)
            server.address = (host, port)
            return [address]

        driver = GraphDatabase.driver(
            uri,
            auth=(user, password),
            connection_timeout=_CONNECT_TIMEOUT_S,
            connection_acquisition_timeout=_CONNECT_TIMEOUT_S,
            connection_write_timeout=_SEND_TIMEOUT_S,
            max_transaction_retry_time=0.0,
            resolver=resolve,
        )
        server = Server(driver)
        _SERVERS[(uri, user)] = server
        return server


@atexit.register
def _close_servers() -> None:
    """Close every driver at exit, then absorb the descriptors its ``GOODBYE``\\ s left behind
    (best effort: :func:`absorb` stops at the first answered handshake), so that the next
    process's first connection is answered even if it does not absorb."""
    with _SERVERS_LOCK:
        servers = list(_SERVERS.values())
        _SERVERS.clear()
    for server in servers:
        server.driver.close()
    if servers:
        time.sleep(0.05)  # let the server read the GOODBYEs before the descriptors are absorbed
    for server in servers:
        if server.address is not None:
            absorb(*server.address)


def bound_reads(tx: ManagedTransaction, seconds: float) -> None:
    """Give the transaction's connection a read deadline.

    The driver sets one only when the server hints ``connection.recv_timeout_seconds`` (Neo4j
    does, FalkorDB does not), through the same socket method used here; there is no public
    option. If a driver release renames it, reads go unbounded again and this logs once.
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


def header_requests(
    query: str, params: Mapping[str, Any], pad: str
) -> list[tuple[str, dict[str, Any]]]:
    """``query`` with ``params`` rendered as a ``CYPHER`` header, for FalkorDB; a ``rows`` list is
    split over as many requests as it takes to keep each under :data:`MAX_REQUEST_BYTES`.

    ``pad`` (a few spaces, different on each attempt) changes the request's length: FalkorDB
    drops a connection whose pending bytes end exactly on a 4 KiB boundary of its read buffer,
    and a retry of the same bytes would meet the same fate.
    """
    rows = params.get("rows")
    fixed = " ".join(f"{k}={cypher_literal(v)}" for k, v in params.items() if k != "rows")
    if not isinstance(rows, list):
        return [(f"CYPHER {fixed} {query}{pad}", {})]
    budget = MAX_REQUEST_BYTES - len(query.encode()) - len(fixed.encode()) - 32
    out: list[tuple[str, dict[str, Any]]] = []
    chunk: list[str] = []
    size = 0
    for row in rows:
        text = cypher_literal(row)
        length = len(text.encode()) + 1
        if chunk and size + length > budget:
            out.append((f"CYPHER {fixed} rows=[{','.join(chunk)}] {query}{pad}", {}))
            chunk, size = [], 0
        chunk.append(text)
        size += length
    out.append((f"CYPHER {fixed} rows=[{','.join(chunk)}] {query}{pad}", {}))
    return out
