"""The Postgres read model enforces the tenant itself: as the API reads it (row-level security,
migration 0006), a caller sees its own tenant's rows only, whatever the query asks for."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import psycopg
import pytest

from api.scores import ScoreReader
from core.settings import Settings
from tests.integration.scratch import Scratch


def _insert(dsn: str, tenant: str, score: float) -> None:
    """A read-model row, written as the flow's sink writes (the owner)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO coherence_scores (tenant_id, score, status, updated_at, seq,"
            " score_exact, window_count, provenance) VALUES (%s, %s, 'HEALTHY', %s, 1, %s, 1, %s)",
            (tenant, round(score, 2), datetime(2026, 12, 1, tzinfo=UTC), score, json.dumps({})),
        )


def _as_reader(
    dsn: str, caller: str | None, query: str, *params: object
) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute("SET LOCAL ROLE igflow_tenant_reader")
        if caller is not None:
            conn.execute("SELECT set_config('igflow.tenant_id', %s, true)", (caller,))
        return conn.execute(query, params).fetchall()


def test_a_caller_sees_its_own_rows_only(it_settings: Settings, scratch: Scratch) -> None:
    dsn = it_settings.stores.postgres_dsn
    a, b = scratch.tenant("rls-a"), scratch.tenant("rls-b")
    _insert(dsn, a, 0.9)
    _insert(dsn, b, 0.4)
    mine = "SELECT tenant_id FROM coherence_scores WHERE tenant_id = ANY(%s)"
    assert _as_reader(dsn, a, mine, [a, b]) == [(a,)]
    assert (
        _as_reader(dsn, a, "SELECT tenant_id FROM coherence_scores WHERE tenant_id = %s", b) == []
    )
    # Every row the role can see at all, asked for without a filter: the caller's.
    assert _as_reader(dsn, a, "SELECT DISTINCT tenant_id FROM coherence_scores") == [(a,)]
    assert _as_reader(dsn, None, "SELECT tenant_id FROM coherence_scores") == []  # no tenant set
    assert _as_reader(dsn, "", "SELECT tenant_id FROM coherence_scores") == []
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _as_reader(dsn, a, "UPDATE coherence_scores SET score = 0 WHERE tenant_id = %s", a)
    # The owner (the flow's sinks, migrations) is not restricted.
    with psycopg.connect(dsn) as conn:
        both = conn.execute(mine, ([a, b],)).fetchall()
    assert sorted(both) == sorted([(a,), (b,)])


def test_the_score_reader_reads_postgres_as_its_caller(
    it_settings: Settings, scratch: Scratch
) -> None:
    dsn = it_settings.stores.postgres_dsn
    a, b = scratch.tenant("rls-a"), scratch.tenant("rls-b")
    _insert(dsn, a, 0.9)
    _insert(dsn, b, 0.4)

    async def read() -> tuple[object, object, object]:
        # Neither tenant has a Redis entry: every read below goes to Postgres.
        reader = ScoreReader(it_settings.stores.redis_url, dsn)
        try:
            own = await reader.get(a, caller=a)
            other = await reader.get(b, caller=a)  # a resolver that skipped the policy check
            default = await reader.get(b)
            return own, other, default
        finally:
            await reader.close()

    own, other, default = asyncio.run(read())
    assert own is not None and own.score == 0.9 and own.store == "postgres"  # type: ignore[attr-defined]
    assert other is None
    assert default is not None and default.tenant_id == b  # type: ignore[attr-defined]
