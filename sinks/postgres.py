"""Postgres read model: each tenant's newest coherence score in ``coherence_scores``.

The table (migration ``0002_coherence_scores``) holds one row per tenant. A batch of
:class:`~core.records.ScoreChange` values lands as one upsert guarded by event time::

    ON CONFLICT (tenant_id) DO UPDATE ... WHERE (EXCLUDED.updated_at, EXCLUDED.seq)
                                              > (coherence_scores.updated_at, coherence_scores.seq)

so an older change, or one already applied, never overwrites what a row holds: a batch replayed
after a crash, or retried after a lost ``COMMIT`` acknowledgement, is a no-op, and the effect is
exactly once despite Bytewax's at-least-once sinks. Before writing, a batch collapses to each
tenant's newest change (the others would lose to it anyway), in tenant order, so that two writers
touching the same tenants lock their rows in the same order and cannot deadlock.

A replay into the serving stores (``igflow replay --into NS``) writes a scratch copy of the
table instead: ``<schema>.coherence_scores`` (``stores.postgres_schema``, ``replay_NS``), created
``LIKE`` the migrated table (columns, constraints, primary key), so it is the same table in
another schema. The default schema is empty: the migrated table, exactly as above.

The batch goes over as one ``INSERT ... SELECT FROM unnest(<one array per column>)``: a single
statement, hence a single transaction, and one round trip. Its parameters are sent in binary:
psycopg's text dumping of arrays cost more than the server's whole upsert (measured: 55 ms of
Python per 1,000 rows in text, 6 ms in binary, against 17 ms of execution), and the provenance
JSON is built by the server, which saved another 7 ms of ``json.dumps``. ``executemany`` in
pipeline mode, the alternative, upserted about half as many rows a second at 1,000 rows a batch
(``benchmarks/sink_postgres.py``: ~33,000 against ~17,000 on 2 shared cores).

A server that stops answering (a paused or hung process, a network partition) must not stall the
flow forever, and neither the server's ``statement_timeout`` (it is the server that no longer
runs) nor TCP keepalives (on a live host the kernel still acknowledges every packet) detect it:
measured, a write to a SIGSTOPped Postgres blocked indefinitely with both, and so did one after
``cancel_safe``, whose own request found the postmaster stopped too. So every write runs under a
client-side deadline (``timeout_s``, default 10 s; :class:`core.socket_deadline.SocketDeadline`):
a watchdog timer shuts the connection's socket down, the blocked read sees end-of-file and
psycopg raises ``OperationalError`` ("server closed the connection unexpectedly") at the
deadline. Connecting has its own bound
(``connect_timeout``, 5 s: a paused postmaster accepts the TCP connection but never answers).
The server's ``statement_timeout`` (half the deadline) fires first when the server is alive but
slow, e.g. behind a lock, so that case cancels cleanly on the server instead. Measured against a
SIGSTOPped server with the defaults: the stalled write raised at 10.00 s, the reconnect at 5.00 s,
and the first write after SIGCONT succeeded; a write behind another transaction's row lock was
cancelled by the server at 5.00 s. A write cut at its deadline may still be applied when the
paused server resumes (the statement sat in its socket buffer); the guard makes that harmless,
whichever of it and the retry lands first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from core.errors import ConfigError
from core.migrations import apply
from core.records import ScoreChange
from core.retry import retrying
from core.socket_deadline import SocketDeadline
from sinks.serving import PipelinedPartition, ServingSink, retry_policy

__all__ = ["PostgresSink", "PostgresWriter", "newest_per_tenant", "scratch_rows", "transient"]

#: Seconds to wait for a connection; libpq's resolution is whole seconds, at least 2.
_CONNECT_TIMEOUT_S = 5

_APPLICATION_NAME = "igflow-sink-postgres"

#: The read model's table; in a scratch schema it is ``<schema>.coherence_scores``.
_TABLE = "coherence_scores"

#: Creates a scratch copy of the migrated table (run under an advisory lock: concurrent
#: ``IF NOT EXISTS`` statements can still collide in the catalog).
_SCRATCH = (
    "CREATE SCHEMA IF NOT EXISTS {schema}",
    "CREATE TABLE IF NOT EXISTS {table} (LIKE coherence_scores INCLUDING ALL)",
)

_UPSERT = """
INSERT INTO {table} AS held
    (tenant_id, score, status, updated_at, seq, score_exact, window_count, provenance)
SELECT tenant_id, score, status, updated_at, seq, score_exact, window_count,
    jsonb_build_object(
        'provenance_id', provenance_id, 'topic', topic, 'partition', kafka_partition,
        'offset', kafka_offset, 'schema_version', schema_version, 'input_hash', input_hash
    )
FROM unnest(
    %b::text[], %b::numeric[], %b::text[], %b::timestamptz[], %b::bigint[], %b::float8[],
    %b::bigint[], %b::text[], %b::text[], %b::integer[], %b::bigint[], %b::integer[], %b::text[]
) AS batch (
    tenant_id, score, status, updated_at, seq, score_exact, window_count,
    provenance_id, topic, kafka_partition, kafka_offset, schema_version, input_hash
)
ON CONFLICT (tenant_id) DO UPDATE SET
    score = EXCLUDED.score,
    status = EXCLUDED.status,
    updated_at = EXCLUDED.updated_at,
    seq = EXCLUDED.seq,
    score_exact = EXCLUDED.score_exact,
    window_count = EXCLUDED.window_count,
    provenance = EXCLUDED.provenance
WHERE (EXCLUDED.updated_at, EXCLUDED.seq) > (held.updated_at, held.seq)
"""


def transient(exc: BaseException) -> bool:
    """Whether retrying the same write may succeed.

    ``True`` for every :class:`psycopg.OperationalError`: connection refused, lost or timed out
    (the write deadline too), ``AdminShutdown`` (a restarting server), ``QueryCanceled`` (the
    statement timeout), ``SerializationFailure`` and ``DeadlockDetected``, and the rest of the
    operator-intervention and resource classes. A wrong password is an ``OperationalError`` as
    well (libpq gives connection failures no SQLSTATE to tell it apart); it is caught at start-up,
    where :meth:`PostgresWriter.ensure_schema` fails instead of retrying. Anything else (a
    missing table, a constraint violation, a bug) is permanent.
    """
    return isinstance(exc, psycopg.OperationalError)


def _timed_out(exc: BaseException) -> bool:
    """Setting up the schema failed only because the server did not answer in time."""
    return isinstance(exc, ConfigError) and isinstance(
        exc.__cause__, psycopg.errors.ConnectionTimeout
    )


#: Advisory lock serialising the creation of scratch copies (first 8 bytes of
#: sha256("igflow.scratch"), as :mod:`core.migrations` derives its own).
_SCRATCH_LOCK = int.from_bytes(hashlib.sha256(b"igflow.scratch").digest()[:8], "big", signed=True)


def _table(schema: str) -> sql.Identifier:
    return sql.Identifier(schema, _TABLE) if schema else sql.Identifier(_TABLE)


def scratch_rows(dsn: str, schema: str) -> int:
    """Rows in ``<schema>.coherence_scores``; 0 when the schema or the table does not exist.

    A replay refuses a scratch schema that holds rows. ``ValueError`` for an empty ``schema``
    (that would be the real read model).
    """
    if not schema:
        msg = "scratch_rows needs a schema"
        raise ValueError(msg)
    with psycopg.connect(dsn, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
        found = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL",
            (sql.Identifier(schema, _TABLE).as_string(conn),),
        ).fetchone()
        if not found or not found[0]:
            return 0
        count = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, _TABLE))
        ).fetchone()
    return int(count[0]) if count else 0


def newest_per_tenant(changes: Iterable[ScoreChange]) -> list[ScoreChange]:
    """Each tenant's newest change by ``(updated_at, seq)``, the upsert's own order; by tenant."""
    newest: dict[str, ScoreChange] = {}
    for change in changes:
        held = newest.get(change.tenant_id)
        if held is None or (change.updated_at, change.seq) > (held.updated_at, held.seq):
            newest[change.tenant_id] = change
    return [newest[tenant] for tenant in sorted(newest)]


def _columns(rows: Sequence[ScoreChange]) -> list[list[Any]]:
    """The upsert's parameters: one array per column (the server builds the provenance JSON)."""
    return [
        [r.tenant_id for r in rows],
        [r.score_2dp for r in rows],
        [r.status for r in rows],
        [r.updated_at for r in rows],
        [r.seq for r in rows],
        [r.score for r in rows],
        [r.window_count for r in rows],
        [r.provenance_id for r in rows],
        [r.provenance.topic for r in rows],
        [r.provenance.kafka_partition for r in rows],
        [r.provenance.kafka_offset for r in rows],
        [r.provenance.schema_version for r in rows],
        [r.provenance.input_hash for r in rows],
    ]


class PostgresWriter:
    """Writes score changes to ``coherence_scores``; engine-independent.

    One connection, opened by the first :meth:`write` and re-opened by the first write after it
    broke. Not thread-safe: one writer per Bytewax worker. ``dsn`` may carry its own ``options``
    (a ``search_path``), to which the writer adds its ``statement_timeout``, and its own
    ``application_name`` (default ``igflow-sink-postgres``).
    """

    def __init__(self, dsn: str, *, timeout_s: float = 10.0, schema: str = "") -> None:
        """``timeout_s``: the longest one :meth:`write` may wait on the server (connecting
        aside, which is bounded by a 5 s ``connect_timeout``) before its connection is cut.
        ``schema``: write ``<schema>.coherence_scores`` (a replay's scratch copy) instead of
        the migrated table."""
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._schema = schema
        self._upsert = sql.SQL(_UPSERT).format(table=_table(schema))
        params = conninfo_to_dict(dsn)
        statement_ms = max(1, int(timeout_s * 500))
        self._options = f"{params.get('options') or ''} -c statement_timeout={statement_ms}".strip()
        self._application_name = str(params.get("application_name") or _APPLICATION_NAME)
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def ensure_schema(self) -> list[str]:
        """Apply the project's pending migrations; returns their labels (see
        :func:`core.migrations.apply`, which raises ``ConfigError`` when it cannot). With a
        scratch schema, then create it and its copy of the table if missing (safe concurrently).
        """
        applied = apply(self._dsn)
        if self._schema:
            with psycopg.connect(self._dsn, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCRATCH_LOCK,))
                for statement in _SCRATCH:
                    conn.execute(
                        sql.SQL(statement).format(
                            schema=sql.Identifier(self._schema), table=_table(self._schema)
                        )
                    )
        return applied

    def write(self, batch: Sequence[ScoreChange]) -> None:
        """Upsert each tenant's newest change in ``batch``, atomically; a no-op for an empty one.

        Raises the driver's :class:`psycopg.Error` (see :func:`transient`). The statement is
        atomic, but a failed write may have been applied all the same (a lost acknowledgement, or
        a paused server that resumes after the deadline cut its connection); writing the batch
        again is always safe.
        """
        rows = newest_per_tenant(batch)
        if not rows:
            return
        conn = self._connection()
        try:
            with SocketDeadline(conn.fileno(), self._timeout_s) as deadline:
                conn.execute(self._upsert, _columns(rows))
        except psycopg.Error:
            if conn.broken or conn.closed:
                self._drop()
            raise
        if deadline.fired:
            self._drop()

    def close(self) -> None:
        """Close the connection, if open; the writer may still be used (it reconnects)."""
        self._drop()

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn = self._conn
        if conn is None or conn.closed:
            # Autocommit: the upsert is one statement, hence its own transaction; no BEGIN and
            # COMMIT round trips around it.
            conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=_CONNECT_TIMEOUT_S,
                options=self._options,
                application_name=self._application_name,
            )
            self._conn = conn
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _newest(items: list[ScoreChange], _dead_letter: object) -> list[ScoreChange]:
    # Collapsing first: a change superseded in this call would lose to its tenant's newer one
    # anyway, so only the newest per tenant is written (and dead-lettered, if it comes to it).
    return newest_per_tenant(items)


class PostgresSink(ServingSink[ScoreChange]):
    """Bytewax sink of :class:`ScoreChange` values into the ``coherence_scores`` read model.

    Its partition builds its own writer (and applies the migrations, which is safe
    concurrently) and writes on a writer thread (:class:`~sinks.serving.PipelinedPartition`):
    each chunk of ``stores.batch_size`` changes collapses to each tenant's newest change and is
    written with :func:`~core.retry.write_with_retry` under the ``stores.retry_*`` policy; a
    chunk that still fails goes to the DLQ topic (``SINK_UNAVAILABLE``) and the flow goes on.
    """

    def build_part(
        self, step_id: str, for_part: str, resume_state: list[ScoreChange] | None
    ) -> PipelinedPartition[ScoreChange]:
        stores = self._stores
        writer = PostgresWriter(stores.postgres_dsn, schema=stores.postgres_schema)
        # Bytewax may build the partition mid-run (its first item, a resume), when the server
        # may be paused: a connection that timed out is retried under the stores' policy; any
        # other failure (a wrong password, a refused connection) still stops the flow at once.
        retrying(
            lambda _attempt: writer.ensure_schema(),
            retry_policy(stores),
            transient=_timed_out,
        )
        return PipelinedPartition(
            "postgres",
            writer,
            stores,
            self._dead_letters,
            transient=transient,
            prepare=_newest,
            close=writer.close,
            resume=resume_state,
        )
