"""The SQL catalog's database through the DB-API: psycopg for Postgres, ``sqlite3`` for SQLite.

pyiceberg's ``SqlCatalog`` reaches its two tables (``iceberg_tables``,
``iceberg_namespace_properties``) through SQLAlchemy's ORM, and importing it costs every command
~0.26 s of CPU (``pyiceberg.catalog.sql`` with SQLAlchemy's ORM 0.22 s, the Postgres dialect and
``psycopg2`` 0.045 s; measured in session 29, ~5% of a 200,000-signal lake-only run, ~13% of a
verify). :class:`core.catalog.LakeSqlCatalog` runs the same statements on the same rows through
this module instead, on the psycopg the flow imports anyway (the tenants' and switches' caches).

:func:`database_of` reads a catalog URI as SQLAlchemy would name it (``postgresql://``,
``postgresql+psycopg2://``, ``postgresql+psycopg://``, ``sqlite:///path``, ``sqlite://``);
any other URI gives ``None`` and opens as pyiceberg's own ``SqlCatalog``
(:func:`core.catalog.catalog`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import urlsplit

__all__ = ["CatalogDatabase", "Cursor", "database_of", "dialect_of"]

#: Idle Postgres connections a catalog keeps (one per writer thread at most: a flow's lake
#: tables each commit from a thread of their own).
IDLE_KEPT = 8

#: Postgres URI schemes (SQLAlchemy's ``dialect+driver``) read with psycopg.
_POSTGRES = frozenset({"postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"})


class Cursor(Protocol):
    """What the catalog uses of a DB-API cursor."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: Any, params: Sequence[Any] = ..., /) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class CatalogDatabase:
    """Connections to one catalog database (thread-safe): :meth:`transaction`. Statements are
    written with ``?`` placeholders (``%s`` for psycopg: a statement holds no other ``?`` or
    ``%``: values, LIKE patterns included, are parameters)."""

    #: What a row the database refuses (a primary key taken) raises.
    integrity_error: type[Exception]
    #: What a statement on a missing table or column raises (or adding a column another client
    #: added meanwhile).
    schema_errors: tuple[type[Exception], ...]

    def transaction(self, together: bool = True) -> Any:  # a context manager of a Cursor
        """A cursor whose statements commit together when the block ends, or roll back if it
        raises; ``together=False`` for a block of one statement, or of statements that only
        read: on Postgres each then commits on its own (autocommit: one round trip, no
        ``BEGIN`` and ``COMMIT``)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _Postgres(CatalogDatabase):
    """A pool of autocommit connections, opened when needed, up to :data:`IDLE_KEPT` kept idle
    (no statement or connect timeout of its own: libpq's, from the URI, as with psycopg2)."""

    def __init__(self, conninfo: str) -> None:
        import psycopg  # the flow imports it anyway (tenancy.registry); here when first used

        self._psycopg = psycopg
        self._conninfo = conninfo
        self.integrity_error = psycopg.IntegrityError
        self.schema_errors = (
            psycopg.errors.UndefinedTable,
            psycopg.errors.UndefinedColumn,
            psycopg.errors.DuplicateColumn,
        )
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def _take(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._psycopg.connect(self._conninfo, autocommit=True)

    def _give_back(self, connection: Any) -> None:
        idle = self._psycopg.pq.TransactionStatus.IDLE
        with self._lock:
            if (
                not self._closed
                and not connection.closed
                and connection.info.transaction_status == idle
                and len(self._idle) < IDLE_KEPT
            ):
                self._idle.append(connection)
                return
        connection.close()

    @contextmanager
    def transaction(self, together: bool = True) -> Iterator[Cursor]:
        connection = self._take()
        try:
            if together:
                with connection.transaction(), connection.cursor() as cursor:
                    yield _Placeholders(cursor)
            else:  # each statement on its own (autocommit): one round trip, no BEGIN / COMMIT
                with connection.cursor() as cursor:
                    yield _Placeholders(cursor)
        except self._psycopg.OperationalError:
            # A connection lost (a restarted server) is not handed out again, nor are the idle
            # ones from before it (as SQLAlchemy's pool invalidates itself on a disconnect).
            connection.close()
            with self._lock:
                idle, self._idle = self._idle, []
            for other in idle:
                other.close()
            raise
        finally:
            if not connection.closed:
                self._give_back(connection)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def __del__(self) -> None:
        # A catalog dropped without close(): its idle connections close with it (psycopg warns
        # of a connection collected open; SQLAlchemy's pool closed psycopg2's silently).
        for connection in getattr(self, "_idle", ()):
            connection.close()


class _Placeholders:
    """A psycopg cursor taking the catalog's ``?`` placeholders."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Any:
        return self._cursor.execute(sql.replace("?", "%s"), params)

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())


class _Sqlite(CatalogDatabase):
    """One connection shared by the catalog's threads, a transaction at a time (as SQLite writes
    one at a time anyway); ``:memory:`` is one database for all of them."""

    integrity_error = sqlite3.IntegrityError
    schema_errors = (sqlite3.OperationalError,)

    def __init__(self, path: str) -> None:
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self, together: bool = True) -> Iterator[Cursor]:  # always together
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN")
            try:
                yield cursor
            except BaseException:
                self._connection.rollback()
                raise
            else:
                cursor.execute("COMMIT")
            finally:
                cursor.close()

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def _target(uri: str) -> tuple[str, str] | None:
    """``(dialect, what to connect to)`` of a catalog URI this module reads, else ``None``."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return None
    scheme = scheme.lower()
    if scheme in _POSTGRES:
        return "postgresql", f"postgresql://{rest}"  # libpq reads SQLAlchemy's URL (same parts)
    if scheme == "sqlite" and "?" not in rest and not urlsplit(uri).netloc:
        path = rest.removeprefix("/")  # sqlite:///rel/path, sqlite:////abs/path, sqlite://
        return "sqlite", path or ":memory:"
    return None


def dialect_of(uri: str) -> str | None:
    """``"postgresql"`` or ``"sqlite"`` for a catalog URI :func:`database_of` reads, else
    ``None`` (nothing opened)."""
    target = _target(uri)
    return None if target is None else target[0]


def database_of(uri: str) -> CatalogDatabase | None:
    """The catalog database SQLAlchemy's URI ``uri`` names, or ``None`` for a kind this module
    does not read (another database or driver, a SQLite URI with options): pyiceberg's
    ``SqlCatalog`` opens those. A Postgres database is connected at its first statement."""
    target = _target(uri)
    if target is None:
        return None
    dialect, where = target
    return _Postgres(where) if dialect == "postgresql" else _Sqlite(where)
