"""The tenant registry: which tenants exist, whether they are active, which sources they accept.

The registry lives in Postgres (table ``tenants``, created by migration ``0001``). The flow reads
it through a :class:`TenantDirectory`: :class:`PostgresTenants` caches the whole table and
re-reads it every ``refresh_seconds`` on a background thread; :class:`StaticTenants` is the
in-memory stand-in for tests.
Operators change it with the admin functions here (``igflow tenants ...``).

A tenant's ``sources`` is ``None`` when it accepts any source; otherwise only the sources named
(an empty set accepts none).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from core.errors import ConfigError
from core.tenants import StaticTenants, TenantDirectory, TenantEntry
from tenancy.cached_table import CachedTable, connect, explain

__all__ = [
    "PostgresTenants",
    "StaticTenants",
    "TenantDirectory",
    "TenantEntry",
    "list_tenants",
    "remove_tenant",
    "seed_tenants",
    "upsert_tenant",
]


class PostgresTenants:
    """A :class:`TenantDirectory` over the ``tenants`` table, cached in memory.

    Constructing it connects to nothing. The first :meth:`get` loads the whole table; a failure
    there raises :class:`~core.errors.ConfigError` ("tenant registry unavailable"), which stops
    the flow: without the registry every record would be misfiled as ``TENANT_UNKNOWN``. After
    that a background thread re-reads the table every ``refresh_seconds`` and :meth:`get`
    answers from the last good copy without waiting on Postgres; a refresh that fails or hangs
    keeps that copy, logs a warning once per failure streak and is retried ``refresh_seconds``
    later (:mod:`tenancy.cached_table`). Thread-safe: the Bytewax workers of one process share
    an instance.

    Pickling keeps only the DSN and the interval (the cache and lock are rebuilt).
    """

    def __init__(self, dsn: str, refresh_seconds: float = 30.0) -> None:
        self._dsn = dsn
        self._refresh_seconds = refresh_seconds
        self._table = CachedTable(_WHAT, "tenants", _load, dsn, refresh_seconds)

    def __reduce__(self) -> tuple[type[PostgresTenants], tuple[str, float]]:
        return (PostgresTenants, (self._dsn, self._refresh_seconds))

    def get(self, tenant_id: str) -> TenantEntry | None:
        return self._table.current().get(tenant_id)


_WHAT = "tenant registry"


def _connect(dsn: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[Any, ...]]:
    return connect(dsn, autocommit=autocommit)


def _entry(row: tuple[Any, ...]) -> TenantEntry:
    tenant_id, active, sources = row
    return TenantEntry(tenant_id, bool(active), None if sources is None else frozenset(sources))


def _load(conn: psycopg.Connection[tuple[Any, ...]]) -> dict[str, TenantEntry]:
    rows = conn.execute("SELECT tenant_id, active, sources FROM tenants").fetchall()
    return {row[0]: _entry(row) for row in rows}


def _unavailable(exc: psycopg.Error) -> ConfigError:
    msg = f"{_WHAT} unavailable: {explain(exc, 'tenants')}"
    return ConfigError(msg)


def upsert_tenant(
    dsn: str, tenant_id: str, sources: Iterable[str] | None = None, active: bool = True
) -> TenantEntry:
    """Register ``tenant_id`` or replace its settings; returns the entry as stored.

    ``ConfigError`` for a blank id or source, or when the registry cannot be reached.
    """
    allowed = None if sources is None else sorted(set(sources))
    if not tenant_id.strip() or (allowed is not None and not all(s.strip() for s in allowed)):
        msg = "tenant ids and sources must not be blank"
        raise ConfigError(msg)
    try:
        with _connect(dsn) as conn:
            row = conn.execute(
                "INSERT INTO tenants (tenant_id, active, sources) VALUES (%s, %s, %s)"
                " ON CONFLICT (tenant_id) DO UPDATE SET active = EXCLUDED.active,"
                " sources = EXCLUDED.sources, updated_at = now()"
                " RETURNING tenant_id, active, sources",
                (tenant_id, active, allowed),
            ).fetchone()
    except psycopg.Error as exc:
        raise _unavailable(exc) from exc
    assert row is not None  # RETURNING always yields the row
    return _entry(row)


def list_tenants(dsn: str) -> list[TenantEntry]:
    """Every registered tenant, by id."""
    try:
        with _connect(dsn) as conn:
            return sorted(_load(conn).values(), key=lambda e: e.tenant_id)
    except psycopg.Error as exc:
        raise _unavailable(exc) from exc


def remove_tenant(dsn: str, tenant_id: str) -> bool:
    """Delete ``tenant_id``; ``False`` if it was not registered."""
    try:
        with _connect(dsn) as conn:
            cur = conn.execute("DELETE FROM tenants WHERE tenant_id = %s", (tenant_id,))
            return cur.rowcount > 0
    except psycopg.Error as exc:
        raise _unavailable(exc) from exc


def seed_tenants(dsn: str, tenant_ids: Iterable[str], sources: Iterable[str]) -> list[str]:
    """Register ``tenant_ids``, each active and accepting ``sources``; returns the ids newly
    registered.

    Idempotent, and it never overwrites: a tenant an operator has changed (deactivated, or given
    other sources) keeps those changes when this runs again.
    """
    try:
        with _connect(dsn) as conn:
            rows = conn.execute(
                "INSERT INTO tenants (tenant_id, active, sources)"
                " SELECT t, TRUE, %s::text[] FROM unnest(%s::text[]) AS t"
                " ON CONFLICT (tenant_id) DO NOTHING RETURNING tenant_id",
                (sorted(sources), list(tenant_ids)),
            ).fetchall()
    except psycopg.Error as exc:
        raise _unavailable(exc) from exc
    return sorted(row[0] for row in rows)
