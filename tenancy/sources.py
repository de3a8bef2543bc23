"""The source registry in Postgres (table ``source_revisions``, view ``sources``, migration
``0008``): the cached registry the flow reads, and the admin functions of ``igflow sources``.

Every change (``add``, ``set``, ``remove``) is a new row, written with its actor and note, so the
table is the audit. A change applies from ``effective_from`` = the database's ``now()`` plus
``sources.grace_seconds`` (never before the source's previous revision), and
:class:`PostgresSources` answers by a record's Kafka timestamp (:func:`core.sources.as_of`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from core.errors import ConfigError
from core.sources import Revision, SourceEntry, StaticSources, check_entry
from tenancy.cached_table import CachedTable, connect, explain

__all__ = [
    "PostgresSources",
    "SourceRevision",
    "add_source",
    "list_sources",
    "remove_source",
    "revisions",
    "set_source",
]

_COLUMNS = "name, owners, transports, license, tos, retention, residency, sla_seconds"


@dataclasses.dataclass(frozen=True, slots=True)
class SourceRevision:
    """One row of ``source_revisions``: a change, who made it and from when it applies."""

    id: int
    action: str
    #: ``None`` for a removal.
    entry: SourceEntry | None
    name: str
    actor: str
    note: str | None
    at: datetime
    effective_from: datetime


_WHAT = "source registry"


def _connect(dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    return connect(dsn)


def _unavailable(exc: psycopg.Error) -> ConfigError:
    msg = f"{_WHAT} unavailable: {explain(exc, 'source_revisions')}"
    return ConfigError(msg)


def _entry(row: Sequence[Any]) -> SourceEntry:
    name, owners, transports, license_, tos, retention, residency, sla = row
    return SourceEntry(
        name,
        tuple(owners),
        tuple(transports),
        license_,
        tos,
        retention,
        residency,
        None if sla is None else float(sla),
    )


_SELECT = f"SELECT id, action, actor, note, at, effective_from, {_COLUMNS} FROM source_revisions"


def _revision(row: Sequence[Any]) -> SourceRevision:
    rid, action, actor, note, at, effective_from = row[:6]
    entry = None if action == "remove" else _entry(row[6:])
    return SourceRevision(rid, action, entry, row[6], actor, note, at, effective_from)


def revisions(dsn: str, name: str | None = None, limit: int | None = None) -> list[SourceRevision]:
    """Every change (of source ``name``), oldest first; ``limit``: only the newest that many."""
    where = "" if name is None else " WHERE name = %s"
    params: list[object] = [] if name is None else [name]
    order = " ORDER BY id" if limit is None else " ORDER BY id DESC LIMIT %s"
    if limit is not None:
        params.append(limit)
    try:
        with _connect(dsn) as conn:
            rows = conn.execute(_SELECT + where + order, params).fetchall()
    except psycopg.Error as exc:
        raise _unavailable(exc) from exc
    out = [_revision(r) for r in rows]
    return out if limit is None else out[::-1]


def list_sources(dsn: str) -> list[SourceRevision]:
    """The newest revision of every registered source (removed ones left out), by name."""
    try:
        with _connect(dsn) as conn:
            rows = conn.execute(
                "SELECT id, action, actor, note, at, effective_from, "
                f"{_COLUMNS} FROM sources WHERE action <> 'remove' ORDER BY name"
            ).fetchall()
    except psycopg.Error as exc:
        raise _unavailable(exc) from exc
    return [_revision(r) for r in rows]


def _write(
    dsn: str,
    name: str,
    action: str,
    change: Any,
    *,
    actor: str,
    note: str | None,
    grace_seconds: float,
) -> SourceRevision:
    """Lock the source's name, read its newest revision, let ``change(current)`` give the new
    entry (or ``None`` to remove), and insert it; one transaction."""
    try:
        with _connect(dsn) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('igflow-source:' || %s))", (name,))
            last = conn.execute(
                f"SELECT action, effective_from, {_COLUMNS} FROM source_revisions"
                " WHERE name = %s ORDER BY id DESC LIMIT 1",
                (name,),
            ).fetchone()
            current = None if last is None or last[0] == "remove" else _entry(last[2:])
            entry = change(current)
            values = (
                ("", [], [], "", "", "", "", None)
                if entry is None
                else (
                    name,
                    list(entry.owners),
                    list(entry.transports),
                    entry.license,
                    entry.tos,
                    entry.retention,
                    entry.residency,
                    entry.sla_seconds,
                )
            )
            row = conn.execute(
                "INSERT INTO source_revisions (name, action, owners, transports, license, tos,"
                " retention, residency, sla_seconds, actor, note, effective_from)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " greatest(now() + make_interval(secs => %s), %s))"
                " RETURNING id, at, effective_from",
                (
                    name,
                    action,
                    *values[1:],
                    actor,
                    note,
                    grace_seconds,
                    None if last is None else last[1],
                ),
            ).fetchone()
    except psycopg.Error as exc:
        raise _unavailable(exc) from exc
    assert row is not None  # RETURNING always yields the row
    return SourceRevision(row[0], action, entry, name, actor, note, row[1], row[2])


def add_source(
    dsn: str, entry: SourceEntry, *, actor: str, note: str | None = None, grace_seconds: float
) -> SourceRevision:
    """Register ``entry``; ``ConfigError`` if it is invalid or already registered."""
    check_entry(entry)

    def change(current: SourceEntry | None) -> SourceEntry:
        if current is not None:
            msg = f"source {entry.name!r} is already registered (use igflow sources set)"
            raise ConfigError(msg)
        return entry

    return _write(
        dsn, entry.name, "add", change, actor=actor, note=note, grace_seconds=grace_seconds
    )


def set_source(
    dsn: str,
    name: str,
    changes: dict[str, Any],
    *,
    actor: str,
    note: str | None = None,
    grace_seconds: float,
) -> SourceRevision:
    """Change fields of a registered source (``changes``: field -> value); ``ConfigError`` if it
    is not registered or the result is invalid."""
    unknown = set(changes) - {f.name for f in dataclasses.fields(SourceEntry)} | (
        {"name"} & set(changes)
    )
    if unknown:
        msg = f"cannot set {sorted(unknown)} of a source"
        raise ConfigError(msg)

    def change(current: SourceEntry | None) -> SourceEntry:
        if current is None:
            msg = f"source {name!r} is not registered (use igflow sources add)"
            raise ConfigError(msg)
        return check_entry(dataclasses.replace(current, **changes))

    return _write(dsn, name, "set", change, actor=actor, note=note, grace_seconds=grace_seconds)


def remove_source(
    dsn: str, name: str, *, actor: str, note: str | None = None, grace_seconds: float
) -> SourceRevision:
    """Unregister a source (its history stays); ``ConfigError`` if it is not registered."""

    def change(current: SourceEntry | None) -> None:
        if current is None:
            msg = f"source {name!r} is not registered"
            raise ConfigError(msg)

    return _write(dsn, name, "remove", change, actor=actor, note=note, grace_seconds=grace_seconds)


def _load(conn: psycopg.Connection[tuple[Any, ...]]) -> StaticSources:
    rows = conn.execute(
        "SELECT id, action, actor, note, at, effective_from, "
        f"{_COLUMNS} FROM source_revisions ORDER BY id"
    ).fetchall()
    history: dict[str, list[Revision]] = {}
    for r in rows:
        rev = _revision(r)
        ms = int(rev.effective_from.timestamp() * 1000)
        history.setdefault(rev.name, []).append(Revision(ms, rev.entry))
    return StaticSources(revisions=history)


class PostgresSources:
    """A :class:`~core.sources.SourceRegistry` over ``source_revisions``, cached in memory.

    Constructing it connects to nothing. The first :meth:`entry` loads every revision; a failure
    there raises :class:`~core.errors.ConfigError` ("source registry unavailable"): a flow that
    cannot tell a source's terms must not land its records. Then a background thread re-reads
    the table every ``refresh_seconds`` and :meth:`entry` answers from the last good copy; a
    refresh that fails or hangs keeps it and is retried ``refresh_seconds`` later
    (:mod:`tenancy.cached_table`). Thread-safe; pickling keeps only the DSN and the interval.
    """

    def __init__(self, dsn: str, refresh_seconds: float = 2.0) -> None:
        self._dsn = dsn
        self._refresh_seconds = refresh_seconds
        self._table = CachedTable(_WHAT, "source_revisions", _load, dsn, refresh_seconds)

    def __reduce__(self) -> tuple[type[PostgresSources], tuple[str, float]]:
        return (PostgresSources, (self._dsn, self._refresh_seconds))

    def entry(self, name: str, at_ms: int | None) -> SourceEntry | None:
        return self._table.current().entry(name, at_ms)
