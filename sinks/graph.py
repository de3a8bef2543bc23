"""Graph serving store over Bolt (Neo4j 5): signals, provenance and each tenant's current
coherence score.

Model (``ts`` and ``updated_at`` are integer microseconds since the epoch, ``*_iso`` the same
instant as ISO 8601 UTC with six decimals: exact and comparable, and the same on FalkorDB)::

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

Exactly-once effect over Bytewax's at-least-once delivery: every node is ``MERGE``\\ d on its key,
and an edge is created only with a signal node this transaction created (it had none), else
``MERGE``\\ d between the nodes just matched (:data:`~sinks.graph_model.SIGNALS_QUERY`), so a
replayed batch creates and sets nothing; a signal or provenance node keeps the properties it was
created with. A score node
takes a change only if the change's ``seq`` (the tenant's deterministic change number, from 1) is
greater than the one it holds, so an older change arriving late is a no-op. A batch is one
``UNWIND`` query per kind (signals, score changes) in one transaction. The sink writes the score
changes on a lane of their own (:class:`GraphSink`), so on Neo4j a tenant's signals and its
changes may be written concurrently: they share only the ``Tenant`` node, merged on its
constraint, and a stored score's change only reads it and its ``HAS_SCORE`` edge (Neo4j 5.26,
measured: a change written while a signal transaction of its tenant was open took 8 ms).

Every ``MERGE`` key is a uniqueness constraint (``CREATE CONSTRAINT … IF NOT EXISTS … IS
UNIQUE``, :meth:`GraphWriter.ensure_schema`), so concurrent writers of one key cannot create it
twice; a batch's statements run in one transaction, so a failed batch leaves nothing behind and
its retry starts clean. Values go as Bolt parameters.

FalkorDB, the local stand-in, has neither constraints, working transactions nor usable Bolt
parameters: with ``stores.graph_compat = "falkordb"`` the writer goes through
:mod:`sinks.falkordb_compat` (exact literals in a ``CYPHER`` header, requests of at most 64 KB,
per-property indexes, throw-away handshakes before connecting); there, writes must stay
serialized per tenant, which the flow does (it keys the stream by tenant upstream, so a tenant's
items reach one worker's sink partition, which writes them on one lane, one batch at a time: no
score lane there).

Timeouts: a new connection gets 5 s for its TCP connect and Bolt handshake; every read within a
transaction gets ``timeout_s`` (:func:`~sinks.bolt.bound_reads`), so a paused server fails the
write in flight (``ServiceUnavailable``) instead of hanging the sink; the cached driver works
again at once when the server resumes. The driver retries nothing itself:
:func:`~core.retry.write_with_retry` owns retries. A write cut at its deadline may still be
applied when the server resumes; the ``MERGE`` keys and the ``seq`` guard make that harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from neo4j import ManagedTransaction
from neo4j import exceptions as nx

from core.errors import FatalSinkError
from core.records import ScoreChange, Tagged
from core.settings import StoreSettings
from sinks import falkordb_compat
from sinks.bolt import bound_reads, server_for
from sinks.dlq import SinkDeadLetters
from sinks.graph_model import (
    EDGE_TYPES,
    INDEXES,
    LOOKUP_INDEXES,
    NODE_LABELS,
    SCORES_QUERY,
    SIGNALS_QUERY,
    SIGNALS_ROWS_QUERY,
    UNIQUE_KEYS,
    epoch_micros,
    relabel,
    schema_name,
    score_row,
    signal_key,
    signal_rows,
    signals_param,
    storable,
)
from sinks.serving import PipelinedPartition, ServingSink

__all__ = [
    "EDGE_TYPES",
    "NODE_LABELS",
    "GraphSink",
    "GraphWriter",
    "epoch_micros",
    "relabel",
    "signal_key",
    "storable",
    "transient",
]

log = logging.getLogger(__name__)


class Rows(list[Any]):
    """A list parameter whose ``repr`` is its length, not its contents.

    The driver formats every ``RUN`` for its debug log before it knows whether anything logs
    at that level (``" ".join(map(repr, fields))`` in ``neo4j/_sync/io/_bolt/_bolt5.py``): the
    ``repr`` of a batch's parameters, measured at 6.2 µs per item on the writer thread, more
    than packing them (3.3-5.3). Bolt packs a list subclass exactly as a list (the same bytes,
    ``tests/unit/test_graph_model.py``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{len(self)} rows>"


class Storable(list[Tagged | ScoreChange]):
    """Items each checked :func:`storable` (by the sink's prepare step), which
    :meth:`GraphWriter.write` then does not check again."""

    __slots__ = ()


#: Nodes deleted per transaction by :meth:`GraphWriter.delete_tenants` (bounds its memory).
_DELETE_CHUNK = 10_000
#: The order :meth:`GraphWriter.delete_tenants` and :meth:`~GraphWriter.drop_scratch` delete the
#: labels in: the leaves first, so a chunk's ``DETACH DELETE`` takes at most two edges a node
#: along. A ``Tenant`` holds an ``EMITS`` edge per signal: deleted first, a chunk of ten tenants
#: of 20,000 signals each took 200,000 edges in one transaction, past Neo4j's transaction memory
#: at the stack's heap (``MemoryPoolOutOfMemoryError``), and no scratch graph that size was ever
#: dropped.
_DELETE_ORDER = ("Signal", "Provenance", "CoherenceScore", "Tenant")

#: Neo4j's answers when another writer created the same constraint or index meanwhile.
_SCHEMA_EXISTS = frozenset(
    {
        "Neo.ClientError.Schema.EquivalentSchemaRuleAlreadyExists",
        "Neo.ClientError.Schema.ConstraintAlreadyExists",
    }
)
#: The ``graph_compat`` values :class:`GraphWriter` knows.
COMPAT = ("", "falkordb")


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
    takes its own session).
    """

    def __init__(
        self,
        uri: str,
        user: str,
        password: str,
        *,
        timeout_s: float = 30.0,
        label_prefix: str = "",
        compat: str = "",
        ca_file: str = "",
        row_merges: bool = False,
    ) -> None:
        """``timeout_s``: the longest any one read of a transaction may wait on the server
        before the connection is dropped and the call raises ``ServiceUnavailable``.
        ``label_prefix``: prepended to every node label of every query this writer runs (a
        replay's scratch labels; see :func:`relabel`, which checks it). ``compat``:
        ``"falkordb"`` to talk to the FalkorDB stand-in (:mod:`sinks.falkordb_compat`).
        ``ca_file``: encrypt, and verify the server's certificate against this CA.
        ``row_merges``: write signals with the per-row ``MERGE``\\ s of
        :data:`~sinks.graph_model.SIGNALS_ROWS_QUERY` (always so on FalkorDB), the same graph at
        more server cost: the baseline of ``benchmarks/sink_graph.py``."""
        relabel("", label_prefix)  # refuse a bad prefix now, not at the first write
        if compat not in COMPAT:
            msg = f"graph compat {compat!r}: one of {COMPAT}"
            raise ValueError(msg)
        self._falkordb = compat == "falkordb"
        self._row_merges = row_merges or self._falkordb
        hook = falkordb_compat.absorb if self._falkordb else None
        self._server = server_for(uri, user, password, before_connect=hook, ca_file=ca_file)
        self._timeout_s = timeout_s
        self._prefix = label_prefix
        self._relabelled: dict[str, str] = {}
        self._sends = 0

    @classmethod
    def for_stores(
        cls, stores: StoreSettings, *, timeout_s: float = 30.0, label_prefix: str | None = None
    ) -> GraphWriter:
        """A writer for the stores section's server, credentials and compat mode, with its
        ``graph_label_prefix`` unless ``label_prefix`` is given."""
        return cls(
            stores.neo4j_uri,
            stores.neo4j_user,
            stores.neo4j_password,
            timeout_s=timeout_s,
            label_prefix=stores.graph_label_prefix if label_prefix is None else label_prefix,
            compat=stores.graph_compat,
            ca_file=stores.neo4j_ca_file,
        )

    @property
    def label_prefix(self) -> str:
        """The prefix of this writer's node labels ("" for the real ones)."""
        return self._prefix

    def ensure_schema(self) -> list[str]:
        """Create the uniqueness constraints of the ``MERGE`` keys and the lookup indexes that
        are missing; returns the ones created (``Label(prop, ...)``).

        Safe to run concurrently and repeatedly (``IF NOT EXISTS``; a rule another process
        created meanwhile counts as success).
        """
        if self._falkordb:
            created = falkordb_compat.ensure_indexes(self._run, INDEXES, self._prefix)
        else:
            self._drop_plain_key_indexes()
            statements = [
                (
                    f"CREATE CONSTRAINT {schema_name(self._prefix + label, (prop,))} "
                    f"IF NOT EXISTS FOR (n:{label}) REQUIRE n.{prop} IS UNIQUE",
                    f"{self._prefix}{label}({prop})",
                )
                for label, prop in UNIQUE_KEYS
            ]
            statements += [
                (
                    f"CREATE INDEX {schema_name(self._prefix + label, props)} IF NOT EXISTS "
                    f"FOR (n:{label}) ON ({', '.join(f'n.{p}' for p in props)})",
                    f"{self._prefix}{label}({', '.join(props)})",
                )
                for label, props in LOOKUP_INDEXES
            ]
            created = [name for query, name in statements if self._schema(query)]
        if created:
            log.info("graph: created %s", created, extra={"op": "sink.graph.schema"})
        return created

    def _drop_plain_key_indexes(self) -> None:
        """Drop plain indexes on a ``MERGE`` key, which releases before this one created (a
        constraint cannot be created beside an index on the same label and property)."""
        rows = self.read(
            "SHOW INDEXES YIELD name, labelsOrTypes, properties, owningConstraint, entityType "
            "WHERE owningConstraint IS NULL AND entityType = 'NODE' "
            "RETURN name, labelsOrTypes AS labels, properties"
        )
        keys = {(self._prefix + label, prop) for label, prop in UNIQUE_KEYS}
        for row in rows:
            labels, props = row["labels"] or [], row["properties"] or []
            if len(labels) == 1 and len(props) == 1 and (labels[0], props[0]) in keys:
                log.info("graph: dropping index %s for its constraint", row["name"])
                self._schema(f"DROP INDEX `{row['name']}` IF EXISTS")

    def _schema(self, query: str) -> bool:
        """Run one schema command in its own transaction; whether it created anything."""
        with self._server.driver.session() as session:
            try:
                summary = session.run(self._label(query)).consume()
            except nx.Neo4jError as exc:
                if exc.code in _SCHEMA_EXISTS:
                    return False
                raise
        counters = summary.counters
        return bool(counters.constraints_added or counters.indexes_added)

    def write(self, batch: Sequence[Tagged | ScoreChange]) -> None:
        """Write ``batch`` in one transaction: one query for its signals (with their tenant,
        provenance and edges), one for its score changes (only the highest ``seq`` per tenant is
        sent). A no-op for an empty batch.

        Raises the driver's exceptions (see :func:`transient`); ``ValueError`` for an item that
        is not :func:`storable`. Writing the same batch again is always safe.
        """
        signals: dict[tuple[str, str], dict[str, Any]] = {}
        newest: dict[str, ScoreChange] = {}
        tagged: list[Tagged] = []
        checked = isinstance(batch, Storable)  # the sink's prepare step checked each item
        for item in batch:
            if not checked and isinstance(item, Tagged | ScoreChange) and not storable(item):
                msg = "graph: a string to store contains a NUL character"
                raise ValueError(msg)
            if isinstance(item, ScoreChange):
                held = newest.get(item.tenant_id)
                if held is None or item.seq > held.seq:
                    newest[item.tenant_id] = item
            elif isinstance(item, Tagged):
                tagged.append(item)
            else:
                msg = f"graph sink: cannot write a {type(item).__name__}"
                raise TypeError(msg)
        for row in signal_rows(tagged):
            signals.setdefault((row["key"], row["provenance_id"]), row)
        statements: list[tuple[str, dict[str, Any]]] = []
        if signals and self._row_merges:
            statements.append((SIGNALS_ROWS_QUERY, {"rows": list(signals.values())}))
        elif signals:
            statements.append((SIGNALS_QUERY, {"tenants": Rows(signals_param(signals.values()))}))
        if newest:
            rows = [score_row(newest[tenant]) for tenant in sorted(newest)]
            if not self._falkordb:  # its literal renderer takes exact types only
                rows = Rows(rows)
            statements.append((SCORES_QUERY, {"rows": rows}))
        if statements:
            try:
                self._run(True, statements)
            finally:
                _release(statements)

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
        """The records of a read-only query, as dicts. ``params`` go as Bolt parameters (on
        FalkorDB, as a ``CYPHER`` header): never paste values into ``query``."""
        return self._run(False, [(query, params)])[0]

    def delete_chunked(self, query: str, **params: Any) -> int:
        """Run a deleting write query until it deletes fewer than a chunk; returns the total.

        ``query`` must take ``$limit``, delete at most that many nodes a run and return their
        number as ``c`` (one transaction a run, as :meth:`delete_tenants`)."""
        deleted = 0
        while True:
            rows = self._run(True, [(query, {**params, "limit": _DELETE_CHUNK})])[0]
            count = int(rows[0]["c"]) if rows else 0
            deleted += count
            if count < _DELETE_CHUNK:
                return deleted

    def delete_tenants(self, prefix: str) -> int:
        """Delete every node (and its edges) of the tenants whose id starts with ``prefix``, in
        chunks; returns the nodes deleted. For tests and benchmarks: the prefix must not be empty.
        """
        if not prefix:
            msg = "delete_tenants needs a non-empty prefix"
            raise ValueError(msg)
        return self._delete("WHERE n.tenant_id STARTS WITH $prefix", prefix=prefix)

    def drop_scratch(self) -> int:
        """Delete every node of this writer's prefixed labels (with their edges) and drop their
        indexes; returns the nodes deleted. Only for a writer with a label prefix (a replay's
        scratch graph, once it has been compared): ``ValueError`` without one."""
        if not self._prefix:
            msg = "drop_scratch needs a label prefix: it would delete the real graph"
            raise ValueError(msg)
        deleted = self._delete("")
        if self._falkordb:
            falkordb_compat.drop_indexes(self._run, INDEXES, self._prefix)
        else:
            for label, prop in UNIQUE_KEYS:
                name = schema_name(self._prefix + label, (prop,))
                self._schema(f"DROP CONSTRAINT {name} IF EXISTS")
            for label, props in LOOKUP_INDEXES:
                self._schema(f"DROP INDEX {schema_name(self._prefix + label, props)} IF EXISTS")
        return deleted

    def _delete(self, where: str, **params: Any) -> int:
        """Delete the nodes of every label matching ``where`` (with their edges), in chunks of
        ``_DELETE_CHUNK`` a transaction; returns how many."""
        deleted = 0
        for label in _DELETE_ORDER:
            match = f"MATCH (n:{label}) {where}".rstrip()
            query = f"{match} WITH n LIMIT $limit DETACH DELETE n RETURN count(n) AS c"
            while True:
                rows = self._run(True, [(query, {**params, "limit": _DELETE_CHUNK})])[0]
                count = int(rows[0]["c"]) if rows else 0
                deleted += count
                if count < _DELETE_CHUNK:
                    break
        return deleted

    def _run(
        self, write: bool, statements: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[list[dict[str, Any]]]:
        if self._prefix:
            statements = [(self._label(query), params) for query, params in statements]
        return self._send(write, statements)

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
        self, write: bool, statements: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[list[dict[str, Any]]]:
        """Run the statements in one managed transaction; the records of each, as dicts."""
        start = time.perf_counter()
        # Each statement is one request with Bolt parameters; on FalkorDB, header-rendered
        # texts split to fit its request cap, padded differently on each attempt.
        self._sends += 1
        pad = " " * (self._sends % 8)
        requests = [
            falkordb_compat.header_requests(query, params, pad)
            if self._falkordb and params
            else [(query, params)]
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


def _release(statements: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Empty the row lists of ``statements``, which :meth:`GraphWriter.write` built, once their
    transaction is over.

    The Bolt driver keeps each transaction's parameters (in its ``Result``'s metadata) inside
    a reference cycle of its transaction objects, which only Python's full collection frees;
    with the rows still in them, a flow with every store held ~1 KB a signal until then
    (docs/performance.md, "Session 26"). Emptied, the rows are freed as the write returns and
    the cycle left to the collector is the driver's own few objects."""
    for _, params in statements:
        for value in params.values():
            if isinstance(value, list):
                value.clear()


# --- the Bytewax sink ------------------------------------------------------------------------


def _storable_only(
    items: list[Tagged | ScoreChange], dead_letter: SinkDeadLetters
) -> list[Tagged | ScoreChange]:
    # An item the graph cannot hold would fail its batch on every replay; it goes to the DLQ
    # on its own instead, and the rest are written.
    accepted: Storable = Storable()
    rejected: list[Tagged | ScoreChange] = []
    for item in items:
        (accepted if storable(item) else rejected).append(item)
    if rejected:
        msg = "graph: a string to store contains a NUL character"
        dead_letter(rejected, FatalSinkError(msg))
    return accepted


_SCHEMA_DONE: set[tuple[str, str, str, str]] = set()
_SCHEMA_LOCK = threading.Lock()


class GraphSink(ServingSink[Tagged | ScoreChange]):
    """Bytewax sink of tagged signals and score changes into the graph.

    The first partition built in a process creates the indexes (:meth:`GraphWriter.ensure_schema`,
    once per process and server). Its partition writes the signals on ``stores.graph_writers``
    writer threads (:class:`~sinks.serving.PipelinedPartition`), each with its own connection
    and its share of the tenants, and the score changes on one more (their lane: a change waits
    for the changes before it, not for a batch of signals; none on FalkorDB), in chunks of
    ``stores.batch_size`` items, each with :func:`~core.retry.write_with_retry` under the
    ``stores.retry_*`` policy; a chunk that still fails goes to the DLQ topic
    (``SINK_UNAVAILABLE``) and the flow goes on. Feed it with
    :func:`~sinks.serving.serve` (keyed by tenant): a tenant's items all reach one partition
    and one of its threads, which writes one chunk at a time (see the module docstring).
    """

    def build_part(
        self, step_id: str, for_part: str, resume_state: list[Tagged | ScoreChange] | None
    ) -> PipelinedPartition[Tagged | ScoreChange]:
        stores = self._stores
        writer = GraphWriter.for_stores(stores)
        done = (stores.neo4j_uri, stores.neo4j_user, stores.graph_label_prefix, stores.graph_compat)
        with _SCHEMA_LOCK:
            if done not in _SCHEMA_DONE:
                writer.ensure_schema()
                _SCHEMA_DONE.add(done)
        # No close: the driver is shared by the process and closed at exit (module docstring).
        return PipelinedPartition(
            "graph",
            writer,
            stores,
            self._dead_letters,
            transient=transient,
            prepare=_storable_only,
            resume=resume_state,
            tenant_writers=[
                GraphWriter.for_stores(stores) for _ in range(stores.graph_writers - 1)
            ],
            # FalkorDB (no constraints) keeps a tenant's items on one lane (module docstring).
            scores=None if stores.graph_compat else GraphWriter.for_stores(stores),
        )
