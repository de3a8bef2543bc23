"""The Postgres read model on the local Postgres: the guarded upsert, a paused server, dead letters.

Every test works in a scratch schema of its own (the DSN's ``search_path``), dropped afterwards,
so the real ``public`` tables are never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import psycopg
import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from psycopg import sql

from core.migrations import discover
from core.records import Provenance, ScoreChange
from core.retry import RetryPolicy, write_with_retry
from core.settings import Settings
from dev.config import StackConfig
from operators.score import round_half_even
from sinks.dlq import DeadLetterTarget
from sinks.postgres import PostgresSink, PostgresWriter, newest_per_tenant, transient
from sinks.serving import serve, tenant_of
from tests.integration.conftest import REPO
from tests.runs import random_runs

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _in_schema(dsn: str, schema: str, application_name: str = "") -> str:
    sep = "&" if "?" in dsn else "?"
    out = f"{dsn}{sep}options=-csearch_path%3D{schema}"
    return f"{out}&application_name={application_name}" if application_name else out


@pytest.fixture(scope="module")
def pg() -> Settings:
    """Settings of the local stack (started if it is not up); only its Postgres is used."""
    subprocess.run([sys.executable, "-m", "dev", "start"], cwd=REPO, check=True)
    return Settings.load()


@pytest.fixture
def scratch(pg: Settings) -> Iterator[str]:
    """A DSN whose tables live in a fresh schema, dropped after the test; its connections are
    named after the schema (``application_name``), so a test can find their backends."""
    base = pg.stores.postgres_dsn
    schema = f"it_pgsink_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield _in_schema(base, schema, application_name=schema)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def writer(scratch: str) -> Iterator[PostgresWriter]:
    """A writer on the scratch schema, its migrations applied."""
    w = PostgresWriter(scratch)
    w.ensure_schema()
    try:
        yield w
    finally:
        w.close()


def change(
    tenant: str, seq: int, score: Fraction = Fraction(1, 2), *, at: datetime | None = None
) -> ScoreChange:
    """Tenant ``tenant``'s change number ``seq``; its event time ``seq`` minutes after T0."""
    status = (
        "HEALTHY" if score >= Fraction(3, 4) else "WARN" if score >= Fraction(1, 2) else "CRITICAL"
    )
    return ScoreChange(
        tenant_id=tenant,
        score=float(score),
        status=status,
        updated_at=at or T0 + timedelta(minutes=seq),
        window_count=seq,
        window_weight=float(seq),
        provenance_id=f"prov-{tenant}-{seq}",
        provenance=Provenance("coherence.signals.v1", seq % 4, 1000 + seq, 7, f"{seq:064x}"),
        score_2dp=round_half_even(score),
        seq=seq,
    )


def rows(dsn: str) -> dict[str, tuple[Any, ...]]:
    """tenant -> (score, status, updated_at, seq, score_exact, window_count, provenance, xmin)."""
    with psycopg.connect(dsn) as conn:
        found = conn.execute(
            "SELECT tenant_id, score, status, updated_at, seq, score_exact, window_count,"
            " provenance, xmin::text FROM coherence_scores"
        ).fetchall()
    return {r[0]: tuple(r[1:]) for r in found}


def expected(c: ScoreChange) -> tuple[Any, ...]:
    """The row of change ``c``, as :func:`rows` reads it (without ``xmin``)."""
    p = c.provenance
    provenance = {
        "provenance_id": c.provenance_id,
        "topic": p.topic,
        "partition": p.kafka_partition,
        "offset": p.kafka_offset,
        "schema_version": p.schema_version,
        "input_hash": p.input_hash,
    }
    return (c.score_2dp, c.status, c.updated_at, c.seq, c.score, c.window_count, provenance)


def assert_holds(dsn: str, newest: Sequence[ScoreChange]) -> None:
    """The table holds exactly one row per tenant of ``newest``, equal to that change."""
    found = rows(dsn)
    assert {t: r[:-1] for t, r in found.items()} == {c.tenant_id: expected(c) for c in newest}


def test_the_migrations_create_the_table(scratch: str) -> None:
    w = PostgresWriter(scratch)
    applied = w.ensure_schema()
    # Every project migration, in order (a list written out here went stale at 0005).
    assert applied == [m.label for m in discover()]
    assert applied[:2] == ["0001_tenant_registry", "0002_coherence_scores"]
    assert w.ensure_schema() == []
    with psycopg.connect(scratch) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, numeric_precision, numeric_scale, is_nullable"
            " FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = 'coherence_scores'"
            " ORDER BY ordinal_position"
        ).fetchall()
        bad = (
            "INSERT INTO coherence_scores VALUES ('t', 0.5, 'FINE', now(), 1, 0.5, 1, '{}'::jsonb)"
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(bad)
    assert columns == [
        ("tenant_id", "text", None, None, "NO"),
        ("score", "numeric", 5, 2, "NO"),
        ("status", "text", None, None, "NO"),
        ("updated_at", "timestamp with time zone", None, None, "NO"),
        ("seq", "bigint", 64, 0, "NO"),
        ("score_exact", "double precision", 53, None, "NO"),
        ("window_count", "bigint", 64, 0, "NO"),
        ("provenance", "jsonb", None, None, "NO"),
    ]


def test_several_batches_leave_each_tenant_its_last_change(
    writer: PostgresWriter, scratch: str
) -> None:
    tenants = ["acme", "globex", "initech"]
    last: dict[str, ScoreChange] = {}
    for batch_no in range(5):
        batch = [change(t, batch_no + 1, Fraction(batch_no + i, 10)) for i, t in enumerate(tenants)]
        writer.write(batch)
        last.update((c.tenant_id, c) for c in batch)
    assert_holds(scratch, list(last.values()))


def test_the_same_batch_twice_changes_nothing(writer: PostgresWriter, scratch: str) -> None:
    batch = [change("acme", 3), change("globex", 4, Fraction(9, 10))]
    writer.write(batch)
    before = rows(scratch)
    writer.write(batch)
    # Same xmin: the guard rejected the update, not even a new row version was written.
    assert rows(scratch) == before
    assert_holds(scratch, batch)


def test_an_older_change_does_not_overwrite_a_newer_one(
    writer: PostgresWriter, scratch: str
) -> None:
    newer = change("acme", 5, Fraction(9, 10))
    writer.write([newer])
    writer.write([change("acme", 4, Fraction(1, 10))])  # older seq and event time
    # Same event time, older seq (a late signal changed the score without moving the clock).
    writer.write([change("acme", 3, Fraction(2, 10), at=newer.updated_at)])
    assert_holds(scratch, [newer])
    # Same event time and a newer seq does win.
    newest = change("acme", 6, Fraction(3, 10), at=newer.updated_at)
    writer.write([newest])
    assert_holds(scratch, [newest])


def test_within_a_batch_the_newest_change_per_tenant_wins(
    writer: PostgresWriter, scratch: str
) -> None:
    batch = [
        change("acme", 9, Fraction(9, 10)),
        change("acme", 2, Fraction(2, 10)),
        change("globex", 1),
        change("acme", 7),
        change("globex", 3, Fraction(1, 10)),
    ]
    assert [(c.tenant_id, c.seq) for c in newest_per_tenant(batch)] == [("acme", 9), ("globex", 3)]
    writer.write(batch)
    assert_holds(scratch, [batch[0], batch[4]])


def test_numeric_5_2_holds_score_2dp_exactly(writer: PostgresWriter, scratch: str) -> None:
    # Exact decimal ties: half-even goes to the even digit, where Postgres's own numeric
    # rounding (half away from zero) would give 0.17 and 0.01.
    scores = {
        "tie-down": Fraction(165, 1000),
        "tie-up": Fraction(175, 1000),
        "tiny": Fraction(5, 1000),
        "third": Fraction(1, 3),
        "one": Fraction(1),
    }
    batch = [change(t, 1, s) for t, s in scores.items()]
    writer.write(batch)
    stored = {t: r[0] for t, r in rows(scratch).items()}
    assert stored == {
        "tie-down": Decimal("0.16"),
        "tie-up": Decimal("0.18"),
        "tiny": Decimal("0.00"),
        "third": Decimal("0.33"),
        "one": Decimal("1.00"),
    }
    assert {t: r[4] for t, r in rows(scratch).items()}["tie-down"] == 0.165


def test_a_permanent_error_is_not_retried(writer: PostgresWriter, scratch: str) -> None:
    bad = dataclasses.replace(change("acme", 1), status="FINE")
    attempts: list[int] = []

    def write(batch: Sequence[ScoreChange]) -> None:
        attempts.append(len(batch))
        writer.write(batch)

    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        write_with_retry(
            "postgres",
            [bad],
            write,
            transient=transient,
            dead_letter=lambda batch, exc: pytest.fail("dead-lettered"),
            sleep=lambda s: None,
        )
    assert not transient(caught.value)
    assert attempts == [1]
    writer.write([change("acme", 2)])  # the connection survived the error
    assert_holds(scratch, [change("acme", 2)])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_a_batch_that_keeps_failing_is_dead_lettered() -> None:
    w = PostgresWriter(f"postgresql://igflow:igflow@127.0.0.1:{_closed_port()}/igflow")
    dead: list[tuple[list[ScoreChange], BaseException]] = []
    attempts = 0

    def write(batch: Sequence[ScoreChange]) -> None:
        nonlocal attempts
        attempts += 1
        w.write(batch)

    batch = [change("acme", 1), change("globex", 1)]
    try:
        ok = write_with_retry(
            "postgres",
            batch,
            write,
            transient=transient,
            dead_letter=lambda b, exc: dead.append((list(b), exc)),
            policy=RetryPolicy(attempts=3, base_seconds=0.01, cap_seconds=0.01),
            sleep=lambda s: None,
        )
    finally:
        w.close()
    assert not ok
    assert attempts == 3
    ((lettered, error),) = dead
    assert lettered == batch
    assert isinstance(error, psycopg.OperationalError)
    assert transient(error)


def test_the_bytewax_sink_lands_each_tenants_newest_change(pg: Settings, scratch: str) -> None:
    settings = pg.with_changes("stores", postgres_dsn=scratch, batch_size=7)
    changes = [change(f"t{i % 5}", i // 5 + 1, Fraction(i % 10, 10)) for i in range(60)]
    flow = Dataflow("pg_sink")
    up = random_runs(
        "runs", op.input("in", flow, TestingSource(changes, batch_size=9)), tenant_of, 9
    )
    serve("out", up, PostgresSink(settings.stores, DeadLetterTarget.of(settings.kafka)))
    run_main(flow)
    run_main(flow)  # a replay of everything is a no-op
    assert_holds(scratch, newest_per_tenant(changes))


def _backend(dsn: str, application_name: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchone()
    assert row is not None
    pid: int = row[0]
    return pid


def test_a_write_to_a_stopped_backend_fails_at_the_deadline(scratch: str) -> None:
    """Only this writer's backend is paused: the rest of the server keeps serving."""
    w = PostgresWriter(scratch, timeout_s=1.0)
    w.ensure_schema()
    try:
        w.write([change("acme", 1)])
        name = psycopg.conninfo.conninfo_to_dict(scratch)["application_name"]
        assert isinstance(name, str)
        backend = _backend(scratch, name)
        os.kill(backend, signal.SIGSTOP)
        try:
            start = time.monotonic()
            # Over TLS libpq reports the same end of the connection as an SSL EOF.
            closed = "closed the connection|SSL error: unexpected eof"
            with pytest.raises(psycopg.OperationalError, match=closed):
                w.write([change("acme", 2)])
            waited = time.monotonic() - start
        finally:
            os.kill(backend, signal.SIGCONT)
        assert 0.9 <= waited < 3.0
        w.write([change("acme", 3)])  # reconnects
    finally:
        w.close()
    assert_holds(scratch, [change("acme", 3)])


def _cluster_pids(postmaster: int) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True)
    return {postmaster, *map(int, found.stdout.split())}


@pytest.mark.slow
def test_a_paused_server_loses_and_duplicates_nothing(pg: Settings, scratch: str) -> None:
    pid_file = StackConfig.from_env(os.environ).data_dir("postgres") / "data" / "postmaster.pid"
    postmaster = int(Path(pid_file).read_text().split()[0])
    tenants = [f"t{i:02d}" for i in range(20)]
    batches = [
        [
            change(t, 2 * b + k + 1, Fraction((b + i + k) % 11, 10))
            for i, t in enumerate(tenants)
            for k in (0, 1)
        ]
        for b in range(50)
    ]
    # A deadline shorter than the pause, so the stalled write fails and is retried (with the
    # default 10 s the write would simply wait the pause out).
    w = PostgresWriter(scratch, timeout_s=3.0)
    w.ensure_schema()
    dead: list[Sequence[ScoreChange]] = []
    failures: list[BaseException] = []
    written = 0
    errors: list[BaseException] = []

    def write(batch: Sequence[ScoreChange]) -> None:
        try:
            w.write(batch)
        except BaseException as exc:
            failures.append(exc)
            raise

    def stream() -> None:
        nonlocal written
        try:
            for batch in batches:
                assert write_with_retry(
                    "postgres",
                    batch,
                    write,
                    transient=transient,
                    dead_letter=lambda b, exc: dead.append(b),
                    policy=RetryPolicy(attempts=20, base_seconds=0.2, cap_seconds=2.0),
                )
                written += 1
                time.sleep(0.1)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=stream)
    stopped: set[int] = set()
    try:
        worker.start()
        while written < 10 and worker.is_alive():
            time.sleep(0.01)
        # The postmaster first, so that it forks no new backend while its children are stopped;
        # then its children, twice, to catch one forked just before.
        for _round in range(2):
            for pid in sorted(_cluster_pids(postmaster) - stopped):
                # A backend listed but gone before its signal (it ended between pgrep and kill,
                # as one did in CI) needs no stopping.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.add(pid)
        at_pause = written
        time.sleep(10)
    finally:
        for pid in sorted(stopped | _cluster_pids(postmaster)):
            with contextlib.suppress(ProcessLookupError):  # a backend that exited meanwhile
                os.kill(pid, signal.SIGCONT)
        worker.join(timeout=120)
        w.close()
    assert not worker.is_alive()
    assert errors == []
    assert 10 <= at_pause < 50  # the pause came mid-stream …
    assert failures, "… and the writer felt it"
    assert all(transient(f) for f in failures)
    assert dead == []
    assert written == 50
    assert_holds(scratch, newest_per_tenant(c for batch in batches for c in batch))
