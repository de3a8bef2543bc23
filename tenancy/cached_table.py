"""A Postgres table read into memory and re-read every ``refresh_seconds``: the one cache behind
the tenant registry, the kill-switch board and the source registry.

:class:`CachedTable` connects to nothing when built. The first :meth:`~CachedTable.current`
loads the table; a failure there raises :class:`~core.errors.ConfigError` ("<what>
unavailable"), because a flow that cannot read the table must not decide records without it.
After that the table is re-read when the copy is older than ``refresh_seconds`` (monotonic
clock). A refresh that fails keeps the last good copy, logs a warning and is retried
``refresh_seconds`` later: these tables change rarely, and a slightly stale copy beats stopping
the flow. Thread-safe: the Bytewax workers of one process share an instance; while one thread
refreshes, the others go on with the previous copy. The copy is asked for per record, so the
path of a fresh copy takes no lock.

One connection per cache, opened by the first read and kept (autocommit: each read is one
statement): a new one per refresh cost a TLS handshake every ``refresh_seconds`` on the worker's
thread (17.8 ms wall, 3.6 ms CPU with ``verify-full``). A read that fails on the kept connection
(a restarted server, a terminated backend) closes it and is tried once more on a new one; a
read that fails on a new one fails as above. The connection is closed when the cache is
collected or the interpreter exits (:func:`weakref.finalize`), or by :meth:`CachedTable.close`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import errors

from core.errors import ConfigError

__all__ = ["CachedTable", "connect", "explain"]

log = logging.getLogger(__name__)

#: Seconds to wait for a connection; a table that does not answer must not stall a worker.
CONNECT_TIMEOUT_S = 5

T = TypeVar("T")


#: A kept connection's bound on a peer that stops answering (libpq's TCP keepalives and
#: ``tcp_user_timeout``, seconds).
KEPT_TIMEOUT_S = 5
_KEPT: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": KEPT_TIMEOUT_S,
    "keepalives_interval": 1,
    "keepalives_count": 3,
    "tcp_user_timeout": KEPT_TIMEOUT_S * 1000,
}


def connect(
    dsn: str, *, autocommit: bool = False, **params: Any
) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection to ``dsn`` that gives up after :data:`CONNECT_TIMEOUT_S`; ``params``: more
    libpq connection parameters."""
    return psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=autocommit, **params)


def explain(exc: psycopg.Error, table: str) -> str:
    """What went wrong, in one line; a missing ``table`` names the command that creates it."""
    if isinstance(exc, errors.UndefinedTable):
        return f"no table '{table}' (run igflow setup to apply the migrations)"
    return str(exc).strip() or type(exc).__name__


class _Link:
    """The cache's one connection: ``None`` until the first read, and after a failure."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: psycopg.Connection[tuple[Any, ...]] | None = None
        #: Connections opened, for tests and the start-up's count.
        self.opened = 0

    def open(self) -> psycopg.Connection[tuple[Any, ...]]:
        self.close()
        # Kept for long: a server that stops answering (a network partition: data sent and not
        # acknowledged, or a silent peer) fails the read after about KEPT_TIMEOUT_S instead of
        # the kernel's ~15 min of retransmissions, and the last copy is kept as for any failure.
        self.conn = connect(self.dsn, autocommit=True, **_KEPT)
        self.opened += 1
        return self.conn

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


class CachedTable(Generic[T]):
    """``load(connection)``'s result, cached for ``refresh_seconds`` (see the module's
    docstring).

    ``what`` names the cache in errors and warnings ("tenant registry"); ``table`` is the table
    whose absence the error explains.
    """

    def __init__(
        self,
        what: str,
        table: str,
        load: Callable[[psycopg.Connection[tuple[Any, ...]]], T],
        dsn: str,
        refresh_seconds: float,
    ) -> None:
        self._what = what
        self._table = table
        self._load = load
        self._dsn = dsn
        self._refresh_seconds = refresh_seconds
        self._copy: T | None = None
        self._due = 0.0
        self._lock = threading.Lock()
        self._link = _Link(dsn)
        self._closer = weakref.finalize(self, self._link.close)

    @property
    def due(self) -> bool:
        """Whether the next :meth:`current` may read Postgres (no copy yet, or an old one)."""
        return self._copy is None or time.monotonic() >= self._due

    @property
    def connections_opened(self) -> int:
        """How many connections this cache has opened so far."""
        return self._link.opened

    def close(self) -> None:
        """Close the kept connection (the next read opens a new one)."""
        with self._lock:
            self._link.close()

    def current(self) -> T:
        """The cached copy, loaded or refreshed first when it is due."""
        copy = self._copy
        if copy is not None and time.monotonic() < self._due:
            return copy
        if copy is None:
            return self._first_load()
        if self._lock.acquire(blocking=False):
            try:
                if time.monotonic() >= self._due:
                    copy = self._refresh(copy)
            finally:
                self._lock.release()
        return copy

    def _read(self) -> T:
        """``load`` on the kept connection; once more on a new one if that one fails. Called
        under the lock."""
        link = self._link
        conn = link.conn
        if conn is None or conn.closed:
            conn = link.open()
        else:
            try:
                return self._load(conn)
            except psycopg.Error as exc:
                log.info("%s: the kept connection failed (%s), reconnecting", self._what, exc)
                conn = link.open()
        try:
            return self._load(conn)
        except psycopg.Error:
            link.close()
            raise

    def _first_load(self) -> T:
        with self._lock:  # every thread waits for the first copy
            copy = self._copy
            if copy is None:
                try:
                    copy = self._read()
                except psycopg.Error as exc:
                    msg = f"{self._what} unavailable: {explain(exc, self._table)}"
                    raise ConfigError(msg) from exc
                self._store(copy)
            return copy

    def _refresh(self, last: T) -> T:
        try:
            copy = self._read()
        except psycopg.Error as exc:
            self._due = time.monotonic() + self._refresh_seconds
            log.warning(
                "%s refresh failed, keeping the last copy: %s",
                self._what,
                explain(exc, self._table),
            )
            return last
        self._store(copy)
        return copy

    def _store(self, copy: T) -> None:
        self._copy = copy
        self._due = time.monotonic() + self._refresh_seconds
