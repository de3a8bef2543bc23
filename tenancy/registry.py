"""The tenant registry: which tenants exist, whether they are active, which sources they accept.

The registry lives in Postgres (table ``tenants``, created by migration ``0001``). The flow reads
it through a :class:`TenantDirectory`: :class:`PostgresTenants` caches the whole table and
re-reads it every ``refresh_seconds``; :class:`StaticTenants` is the in-memory stand-in for tests.
Operators change it with the admin functions here (``igflow tenants ...``).

A tenant's ``sources`` is ``None`` when it accepts any source; otherwise only the sources named
(an empty set accepts none).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import errors

from core.errors import ConfigError
from core.tenants import StaticTenants, TenantDirectory, TenantEntry

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

log = logging.getLogger(__name__)

#: Seconds to wait for a connection; a registry that does not answer must not stall a worker.
_CONNECT_TIMEOUT_S = 5


class PostgresTenants:
    """A :class:`TenantDirectory` over the ``tenants`` table, cached in memory.

    Constructing it connects to nothing. The first :meth:`get` loads the whole table; a failure
    there raises :class:`~core.errors.ConfigError` ("tenant registry unavailable"), which stops
    the flow: without the registry every record would be misfiled as ``TENANT_UNKNOWN``. After
    that the table is re-read when the copy is older than ``refresh_seconds`` (monotonic wall
    clock). A refresh that fails keeps the last good copy, logs a warning and is retried
    ``refresh_seconds`` later. Thread-safe: the Bytewax workers of one process share an
    instance; while one worker refreshes, the others go on with the previous copy.

    Pickling keeps only the DSN and the interval (the cache and lock are rebuilt).
    """

    def __init__(self, dsn: str, refresh_seconds: float = 30.0) -> None:
        self._dsn = dsn
        self._refresh_seconds = refresh_seconds
        self._entries: Mapping[str, TenantEntry] | None = None
        self._due = 0.0
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[type[PostgresTenants], tuple[str, float]]:
        return (PostgresTenants, (self._dsn, self._refresh_seconds))

    def get(self, tenant_id: str) -> TenantEntry | None:
        return self._current().get(tenant_id)

    def _current(self) -> Mapping[str, TenantEntry]:
        entries = self._entries
        if entries is None:
            return self._first_load()
        if time.monotonic() >= self._due and self._lock.acquire(blocking=False):
            try:
                if time.monotonic() >= self._due:
                    entries = self._refresh(entries)
            finally:
                self._lock.release()
        return entries

    def _first_load(self) -> Mapping[str, TenantEntry]:
        with self._lock:  # every worker waits for the first copy
            entries = self._entries
            if entries is None:
                try:
                    entries = _load(self._dsn)
                except psycopg.Error as exc:
                    raise _unavailable(exc) from exc
                self._store(entries)
            return entries

    def _refresh(self, last: Mapping[str, TenantEntry]) -> Mapping[str, TenantEntry]:
        try:
            entries = _load(self._dsn)
        except psycopg.Error as exc:
            # Registrations change rarely: a slightly stale copy beats stopping the flow.
            self._due = time.monotonic() + self._refresh_seconds
            log.warning("tenant registry refresh failed, keeping the last copy: %s", _explain(exc))
            return last
        self._store(entries)
        return entries

    def _store(self, entries: Mapping[str, TenantEntry]) -> None:
        self._entries = entries
        self._due = time.monotonic() + self._refresh_seconds


def _connect(dsn: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(dsn, connect_timeout=_CONNECT_TIMEOUT_S, autocommit=autocommit)


def _explain(exc: psycopg.Error) -> str:
    if isinstance(exc, errors.UndefinedTable):
        return "no table 'tenants' (run igflow setup to apply the migrations)"
    return str(exc).strip() or type(exc).__name__


def _entry(row: tuple[Any, ...]) -> TenantEntry:
    tenant_id, active, sources = row
    return TenantEntry(tenant_id, bool(active), None if sources is None else frozenset(sources))


def _load(dsn: str) -> dict[str, TenantEntry]:
    with _connect(dsn) as conn:
        rows = conn.execute("SELECT tenant_id, active, sources FROM tenants").fetchall()
    return {row[0]: _entry(row) for row in rows}


def _unavailable(exc: psycopg.Error) -> ConfigError:
    msg = f"tenant registry unavailable: {_explain(exc)}"
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
        return sorted(_load(dsn).values(), key=lambda e: e.tenant_id)
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
