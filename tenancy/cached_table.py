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
"""

from __future__ import annotations

import logging
import threading
import time
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


def connect(dsn: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection to ``dsn`` that gives up after :data:`CONNECT_TIMEOUT_S`."""
    return psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=autocommit)


def explain(exc: psycopg.Error, table: str) -> str:
    """What went wrong, in one line; a missing ``table`` names the command that creates it."""
    if isinstance(exc, errors.UndefinedTable):
        return f"no table '{table}' (run igflow setup to apply the migrations)"
    return str(exc).strip() or type(exc).__name__


class CachedTable(Generic[T]):
    """``load(dsn)``'s result, cached for ``refresh_seconds`` (see the module's docstring).

    ``what`` names the cache in errors and warnings ("tenant registry"); ``table`` is the table
    whose absence the error explains.
    """

    def __init__(
        self,
        what: str,
        table: str,
        load: Callable[[str], T],
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

    @property
    def due(self) -> bool:
        """Whether the next :meth:`current` may read Postgres (no copy yet, or an old one)."""
        return self._copy is None or time.monotonic() >= self._due

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

    def _first_load(self) -> T:
        with self._lock:  # every thread waits for the first copy
            copy = self._copy
            if copy is None:
                try:
                    copy = self._load(self._dsn)
                except psycopg.Error as exc:
                    msg = f"{self._what} unavailable: {explain(exc, self._table)}"
                    raise ConfigError(msg) from exc
                self._store(copy)
            return copy

    def _refresh(self, last: T) -> T:
        try:
            copy = self._load(self._dsn)
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
