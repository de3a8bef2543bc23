"""Kill switches in Postgres (tables ``switches``, ``switch_audit``, ``switch_releases``,
migration ``0007``): the cached board the flow and the API read, and the admin functions of
``igflow switch``.

:class:`PostgresSwitches` caches the switches that are off and re-reads them every
``switches.refresh_seconds``, so a running flow and every ``igflow serve`` honour a change within
that many seconds. :func:`set_switch` changes a switch and writes its audit row in one
transaction. :func:`released_positions` and :func:`record_released` keep the ledger of held
records already re-sent (see :mod:`igflow.switch_release`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg

from core.errors import ConfigError
from core.switches import OPERATIONS, StaticSwitches, Switchboard, SwitchKind
from tenancy.cached_table import CachedTable, connect, explain

__all__ = [
    "AuditEntry",
    "PostgresSwitches",
    "StaticSwitches",
    "SwitchState",
    "Switchboard",
    "audit_log",
    "list_switches",
    "record_released",
    "released_positions",
    "set_switch",
]

#: The flows a ``flow`` switch can name.
_FLOWS = ("coherence",)


@dataclasses.dataclass(frozen=True, slots=True)
class SwitchState:
    """One switch as stored (only switches someone set are stored; the others are on)."""

    kind: SwitchKind
    name: str
    enabled: bool
    note: str | None
    updated_by: str
    updated_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change of a switch."""

    kind: SwitchKind
    name: str
    #: ``None``: the switch had never been set (so it was on).
    was_enabled: bool | None
    enabled: bool
    actor: str
    note: str | None
    at: datetime


class PostgresSwitches:
    """A :class:`~core.switches.Switchboard` over the ``switches`` table, cached in memory.

    Constructing it connects to nothing. The first :meth:`is_off` loads the switches that are
    off; a failure there raises :class:`~core.errors.ConfigError` ("switch board unavailable"):
    a flow that cannot tell whether a source is switched off must not land its records. After
    that a background thread re-reads the table every ``refresh_seconds`` and :meth:`is_off`
    answers from the last good copy without waiting on Postgres; a refresh that fails or hangs
    keeps that copy, logs a warning once per failure streak and is retried ``refresh_seconds``
    later (:mod:`tenancy.cached_table`). Thread-safe. Pickling keeps only the DSN and the
    interval.
    """

    def __init__(self, dsn: str, refresh_seconds: float = 2.0) -> None:
        self._dsn = dsn
        self._refresh_seconds = refresh_seconds
        self._table = CachedTable(_WHAT, "switches", _load_off, dsn, refresh_seconds)

    def __reduce__(self) -> tuple[type[PostgresSwitches], tuple[str, float]]:
        return (PostgresSwitches, (self._dsn, self._refresh_seconds))

    def off(self) -> frozenset[tuple[SwitchKind, str]]:
        return self._table.current()

    def is_off(self, kind: SwitchKind, name: str) -> bool:
        return (kind, name) in self._table.current()

    @property
    def due(self) -> bool:
        """Whether the next :meth:`is_off` may read Postgres (only before the first copy)."""
        return self._table.due


_WHAT = "switch board"


def _connect(dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    return connect(dsn)


def _unavailable(exc: psycopg.Error) -> ConfigError:
    msg = f"{_WHAT} unavailable: {explain(exc, 'switches')}"
    return ConfigError(msg)


def _load_off(conn: psycopg.Connection[tuple[Any, ...]]) -> frozenset[tuple[SwitchKind, str]]:
    rows = conn.execute("SELECT kind, name FROM switches WHERE NOT enabled").fetchall()
    return frozenset((SwitchKind(kind), name) for kind, name in rows)


def _checked(kind: str, name: str) -> SwitchKind:
    try:
        k = SwitchKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in SwitchKind)
        msg = f"unknown switch kind {kind!r}; known: {known}"
        raise ConfigError(msg) from None
    if not name.strip():
        msg = "a switch name must not be blank"
        raise ConfigError(msg)
    if k is SwitchKind.OPERATION and name not in OPERATIONS:
        msg = f"unknown API operation {name!r}; known: {', '.join(OPERATIONS)}"
        raise ConfigError(msg)
    if k is SwitchKind.FLOW and name not in _FLOWS:
        msg = f"unknown flow {name!r}; known: {', '.join(_FLOWS)}"
        raise ConfigError(msg)
    return k


def set_switch(
    dsn: str, kind: str, name: str, *, enabled: bool, actor: str, note: str | None = None
) -> AuditEntry:
    """Switch ``(kind, name)`` on or off and audit it, in one transaction; returns the audit row.

    A change to the state it already has is still audited (who confirmed it, and why).
    ``ConfigError`` for an unknown kind, operation or flow, a blank name, or no database.
    """
    k = _checked(kind, name)
    try:
        with _connect(dsn) as conn, conn.transaction():
            before = conn.execute(
                "SELECT enabled FROM switches WHERE kind = %s AND name = %s FOR UPDATE",
                (k.value, name),
            ).fetchone()
            conn.execute(
                "INSERT INTO switches (kind, name, enabled, note, updated_by)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (kind, name) DO UPDATE SET"
                " enabled = EXCLUDED.enabled, note = EXCLUDED.note,"
                " updated_by = EXCLUDED.updated_by, updated_at = now()",
                (k.value, name, enabled, note, actor),
            )
            row = conn.execute(
                "INSERT INTO switch_audit (kind, name, was_enabled, enabled, actor, note)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING at",
                (k.value, name, None if before is None else before[0], enabled, actor, note),
            ).fetchone()
    except psycopg.Error as exc:
        raise _unavailable(exc) from exc
    assert row is not None  # RETURNING always yields the row
    was = None if before is None else bool(before[0])
    return AuditEntry(k, name, was, enabled, actor, note, row[0])


def list_switches(dsn: str) -> list[SwitchState]:
    """Every switch someone set, by kind and name."""
    try:
        with _connect(dsn) as conn:
            rows = conn.execute(
                "SELECT kind, name, enabled, note, updated_by, updated_at FROM switches"
                " ORDER BY kind, name"
            ).fetchall()
    except psycopg.Error as exc:
        raise _unavailable(exc) from exc
    return [SwitchState(SwitchKind(r[0]), r[1], bool(r[2]), r[3], r[4], r[5]) for r in rows]


def audit_log(
    dsn: str, kind: str | None = None, name: str | None = None, limit: int = 100
) -> list[AuditEntry]:
    """The latest changes (newest first), optionally of one switch."""
    where, params = "", []
    if kind is not None and name is not None:
        where, params = " WHERE kind = %s AND name = %s", [_checked(kind, name).value, name]
    try:
        with _connect(dsn) as conn:
            rows = conn.execute(
                "SELECT kind, name, was_enabled, enabled, actor, note, at FROM switch_audit"
                + where
                + " ORDER BY id DESC LIMIT %s",
                (*params, limit),
            ).fetchall()
    except psycopg.Error as exc:
        raise _unavailable(exc) from exc
    return [AuditEntry(SwitchKind(r[0]), r[1], r[2], bool(r[3]), r[4], r[5], r[6]) for r in rows]


def released_positions(dsn: str, topic: str) -> set[tuple[int, int]]:
    """The ``(partition, offset)`` of every held record of ``topic`` already re-sent."""
    try:
        with _connect(dsn) as conn:
            rows = conn.execute(
                "SELECT kafka_partition, kafka_offset FROM switch_releases WHERE kafka_topic = %s",
                (topic,),
            ).fetchall()
    except psycopg.Error as exc:
        raise _unavailable(exc) from exc
    return {(int(p), int(o)) for p, o in rows}


def record_released(
    dsn: str, label: str, name: str, sent: Iterable[tuple[str, int, int, int, int]]
) -> int:
    """Remember re-sent records: ``(topic, partition, offset, sent_partition, sent_offset)``
    each, one already remembered kept as it was; ``label`` names what held them (a switch kind,
    or ``residency``), ``name`` which one. Returns how many rows were new."""
    rows = [(t, p, o, label, name, sp, so) for t, p, o, sp, so in sent]
    if not rows:
        return 0
    try:
        with _connect(dsn) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO switch_releases (kafka_topic, kafka_partition, kafka_offset,"
                " kind, name, sent_partition, sent_offset) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                rows,
            )
            return max(cur.rowcount, 0)
    except psycopg.Error as exc:
        raise _unavailable(exc) from exc
