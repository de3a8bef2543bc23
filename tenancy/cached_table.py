"""A Postgres table read into memory and re-read every ``refresh_seconds`` off the asking
thread: the one cache behind the tenant registry, the kill-switch board and the source registry.

:class:`CachedTable` connects to nothing when built. The first :meth:`~CachedTable.current`
loads the table on the asking thread (every other thread waits for it); a failure there raises
:class:`~core.errors.ConfigError` ("<what> unavailable"), because a flow that cannot read the
table must not decide records without it. From then on :meth:`~CachedTable.current` never
touches Postgres: it returns the last good copy, without a lock or a clock (it is asked per
record on the flow's workers). A daemon thread per cache (``igflow-cache-<table>``) re-reads the
table every ``refresh_seconds`` and swaps the new copy in with one attribute assignment (atomic
under the GIL: an asker sees the old copy or the new one, never a mix).

Why a thread: a refresh on the worker's thread held the whole flow (the lake included) for as
long as Postgres did not answer, and a SIGSTOPped server is not detected by TCP (its kernel
still acknowledges every byte, so neither keepalives nor ``tcp_user_timeout`` fire): measured
with the previous code, an ask past a refresh waited until SIGCONT
(``tests/integration/test_cached_table.py``). Now a refresh that fails or hangs only ages the
copy. Each read runs under a client-side deadline (``timeout_s``, default :data:`KEPT_TIMEOUT_S`;
:class:`~core.socket_deadline.SocketDeadline` shuts the socket down), so a hung refresh fails
like any other; a failure keeps the last copy, logs one warning per failure streak (and one
line when a refresh succeeds again), and is retried ``refresh_seconds`` later. The copy's age is
the metric ``igflow_cache_age_seconds{cache=<table>}`` (the oldest live copy of that table in
the process), so an operator sees a stale directory.

Determinism: the copy decides holds (switches), source terms and validation (tenants). Before,
a new copy was taken at a record boundary on the worker when the wall clock said it was due;
now it appears between two asks at a moment set by the refresher thread's wall clock. In both
cases which record is the first to see a change depends on timing, not on the input alone, so
this is no less deterministic than before (and no more: a change made while a flow runs takes
effect at a wall-clock moment, as it always did).

One connection per cache (:class:`KeptConnection`, which the tenant key store's reads use too),
opened by the first read and kept (autocommit: each read is one statement): a new one per
refresh cost a TLS handshake every ``refresh_seconds`` (17.8 ms wall, 3.6 ms CPU with
``verify-full``). A read that fails on the kept connection (a restarted server,
a terminated backend) closes it and is tried once more on a new one, unless its deadline cut it
(a server that does not answer would not answer a new one either); a read that fails on a new
one fails as above. The refresher is stopped and the connection closed when the cache is
collected or the interpreter exits (:func:`weakref.finalize`), or by :meth:`CachedTable.close`:
a refresh in flight is cut at once, the thread joined, so no thread and no ``ResourceWarning``
is left.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import errors

from core.errors import ConfigError
from core.metrics import CACHE_AGE
from core.socket_deadline import SocketDeadline

__all__ = ["KEPT_TIMEOUT_S", "CachedTable", "Cut", "KeptConnection", "connect", "explain"]

log = logging.getLogger(__name__)

#: Seconds to wait for a connection; a table that does not answer must not stall a worker.
CONNECT_TIMEOUT_S = 5

T = TypeVar("T")


#: A kept connection's bound on a peer that stops answering (libpq's TCP keepalives and
#: ``tcp_user_timeout``, seconds), and the default deadline of one read.
KEPT_TIMEOUT_S = 5
_KEPT: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": KEPT_TIMEOUT_S,
    "keepalives_interval": 1,
    "keepalives_count": 3,
    "tcp_user_timeout": KEPT_TIMEOUT_S * 1000,
}

#: How long :meth:`CachedTable.close` waits for the refresher: a read is cut at once, but a
#: connection attempt to a paused postmaster ends only at its ``connect_timeout``.
_JOIN_TIMEOUT_S = CONNECT_TIMEOUT_S + 1.0


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


class Cut(psycopg.OperationalError):
    """A read cut by its deadline (or because its :class:`KeptConnection` was stopped)."""


class KeptConnection:
    """One autocommit connection to ``dsn``, opened by the first :meth:`read` and kept (libpq's
    keepalives and ``tcp_user_timeout`` from :data:`KEPT_TIMEOUT_S`), each read bounded by
    ``timeout_s`` (:class:`~core.socket_deadline.SocketDeadline`). A read that fails on the kept
    connection for another reason than its deadline (a restarted server, a terminated backend)
    closes it and is tried once more on a new one; a read that fails on a new one, or is cut,
    raises (:class:`Cut` for a cut read). One reader at a time: the caller serialises reads.
    ``what`` names it in the log."""

    def __init__(self, dsn: str, what: str, timeout_s: float = KEPT_TIMEOUT_S) -> None:
        self.dsn = dsn
        self.what = what
        self.timeout_s = timeout_s
        self.conn: psycopg.Connection[tuple[Any, ...]] | None = None
        #: Connections opened, for tests and the start-up's count.
        self.opened = 0
        self._guard = threading.Lock()  # the read in flight's deadline, against stop()
        self._deadline: SocketDeadline | None = None
        self._stopped = False

    def read(self, load: Callable[[psycopg.Connection[tuple[Any, ...]]], T]) -> T:
        """``load`` on the kept connection; once more on a new one if that one fails for
        another reason than its deadline."""
        conn = self.conn
        if conn is None or conn.closed:
            conn = self._open()
        else:
            try:
                return self._load_on(conn, load)
            except Cut:
                raise
            except psycopg.Error as exc:
                log.info("%s: the kept connection failed (%s), reconnecting", self.what, exc)
                conn = self._open()
        return self._load_on(conn, load)

    def _load_on(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        load: Callable[[psycopg.Connection[tuple[Any, ...]]], T],
    ) -> T:
        with self._guard:
            if self._stopped:
                msg = f"{self.what}: stopped"
                raise Cut(msg)
            deadline = self._deadline = SocketDeadline(conn.fileno(), self.timeout_s)
        try:
            with deadline:
                result = load(conn)
        except psycopg.Error as exc:
            self.close()
            if deadline.fired:
                msg = f"no answer within {self.timeout_s:g} s ({exc})"
                raise Cut(msg) from exc
            raise
        finally:
            with self._guard:
                self._deadline = None
        if deadline.fired:  # cut just after the answer: the result is good, the socket is not
            self.close()
        return result

    def _open(self) -> psycopg.Connection[tuple[Any, ...]]:
        self.close()
        # Kept for long: a partitioned server (data sent and not acknowledged) fails the read
        # after about KEPT_TIMEOUT_S instead of the kernel's ~15 min of retransmissions; a
        # paused one (data acknowledged, never answered) is cut by the read's deadline.
        self.conn = connect(self.dsn, autocommit=True, **_KEPT)
        self.opened += 1
        return self.conn

    def stop(self) -> None:
        """Cut the read in flight at once (from any thread) and refuse every read after it."""
        with self._guard:
            self._stopped = True
            deadline = self._deadline
        if deadline is not None:
            deadline.cut()

    def close(self) -> None:
        """Close the kept connection (the next read opens a new one)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


class _State(Generic[T]):
    """What the asking threads and the refresher share. It holds no reference to the
    :class:`CachedTable`, so that the cache can be collected while its refresher runs."""

    def __init__(
        self,
        what: str,
        table: str,
        load: Callable[[psycopg.Connection[tuple[Any, ...]]], T],
        dsn: str,
        refresh_seconds: float,
        timeout_s: float,
    ) -> None:
        self.what = what
        self.table = table
        self.load = load
        self.refresh_seconds = refresh_seconds
        self.link = KeptConnection(dsn, what, timeout_s)
        #: The last good copy (``None`` until the first load) and when it was read (monotonic).
        self.copy: T | None = None
        self.loaded_at = 0.0
        #: Refreshes failed in a row.
        self.failures = 0
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    # -- reading (the first load on an asking thread, then only the refresher) --

    def read(self) -> T:
        """``load`` on the kept connection (:meth:`KeptConnection.read`)."""
        return self.link.read(self.load)

    def store(self, copy: T) -> None:
        self.copy = copy  # one assignment: the swap the askers see
        self.loaded_at = time.monotonic()

    # -- the refresher thread --

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self._run, name=f"igflow-cache-{self.table}", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.wait(self.refresh_seconds):
                self.refresh()
        finally:
            self.link.close()

    def refresh(self) -> None:
        """Read a new copy and swap it in; on failure keep the last one."""
        try:
            copy = self.read()
        except Exception as exc:  # a row load() refuses must not end the thread either
            if self.stop.is_set():
                return
            self.failures += 1
            if self.failures == 1:  # once per streak: a stale copy is news once
                log.warning(
                    "%s refresh failed, keeping the last copy (%.1f s old) and retrying every"
                    " %g s: %s",
                    self.what,
                    self.age(),
                    self.refresh_seconds,
                    explain(exc, self.table)
                    if isinstance(exc, psycopg.Error)
                    else f"{type(exc).__name__}: {exc}",
                )
            else:
                log.debug("%s refresh failed again (%d in a row)", self.what, self.failures)
            return
        self.store(copy)
        if self.failures:
            log.warning("%s refreshed again after %d failures", self.what, self.failures)
            self.failures = 0

    def age(self) -> float:
        return time.monotonic() - self.loaded_at

    def close(self) -> None:
        """Stop the refresher (cutting a read in flight), wait for it, close the connection."""
        self.stop.set()
        thread = self.thread
        if thread is not None:  # started after the first copy: later reads would be refreshes
            self.link.stop()
        if thread is None or thread is threading.current_thread():
            if thread is None:
                self.link.close()
            return  # the thread closes the connection as it ends
        thread.join(_JOIN_TIMEOUT_S)
        if thread.is_alive():
            log.warning("%s: the refresher did not stop within %g s", self.what, _JOIN_TIMEOUT_S)


#: The live caches of each table, for ``igflow_cache_age_seconds``.
_LIVE: dict[str, weakref.WeakSet[_State[Any]]] = {}
_LIVE_LOCK = threading.Lock()


def _track(state: _State[Any]) -> None:
    with _LIVE_LOCK:
        table = state.table
        live = _LIVE.get(table)
        if live is None:
            live = _LIVE[table] = weakref.WeakSet()
            CACHE_AGE.labels(cache=table).set_function(lambda: _oldest(table))
        live.add(state)


def _oldest(table: str) -> float:
    """Seconds since the oldest live copy of ``table`` was read; NaN when there is none."""
    with _LIVE_LOCK:
        ages = [s.age() for s in _LIVE[table] if s.copy is not None and not s.stop.is_set()]
    return max(ages) if ages else math.nan


class CachedTable(Generic[T]):
    """``load(connection)``'s result, re-read every ``refresh_seconds`` by a background thread
    (see the module's docstring).

    ``what`` names the cache in errors and warnings ("tenant registry"); ``table`` is the table
    whose absence the error explains, and the metric's ``cache`` label. ``timeout_s`` bounds
    one read on a server that does not answer.
    """

    def __init__(
        self,
        what: str,
        table: str,
        load: Callable[[psycopg.Connection[tuple[Any, ...]]], T],
        dsn: str,
        refresh_seconds: float,
        *,
        timeout_s: float = KEPT_TIMEOUT_S,
    ) -> None:
        if refresh_seconds <= 0 or timeout_s <= 0:
            msg = "refresh_seconds and timeout_s must be positive"
            raise ValueError(msg)
        self._state: _State[T] = _State(what, table, load, dsn, refresh_seconds, timeout_s)
        self._lock = threading.Lock()
        self._closer = weakref.finalize(self, self._state.close)

    @property
    def due(self) -> bool:
        """Whether the next :meth:`current` may read Postgres: only before the first copy."""
        return self._state.copy is None

    @property
    def connections_opened(self) -> int:
        """How many connections this cache has opened so far."""
        return self._state.link.opened

    @property
    def age_seconds(self) -> float:
        """Seconds since the copy was read (NaN before the first load)."""
        return self._state.age() if self._state.copy is not None else math.nan

    @property
    def refresher(self) -> threading.Thread | None:
        """The refresher thread (``None`` before the first load)."""
        return self._state.thread

    def close(self) -> None:
        """Stop the refresher and close the kept connection; :meth:`current` then keeps
        answering with the last copy. Idempotent."""
        self._closer()

    def current(self) -> T:
        """The last good copy; the first call loads it (and starts the refresher)."""
        copy = self._state.copy
        if copy is not None:
            return copy
        return self._first_load()

    def _first_load(self) -> T:
        state = self._state
        with self._lock:  # every thread waits for the first copy
            copy = state.copy
            if copy is None:
                try:
                    copy = state.read()
                except psycopg.Error as exc:
                    msg = f"{state.what} unavailable: {explain(exc, state.table)}"
                    raise ConfigError(msg) from exc
                state.store(copy)
                _track(state)
                if not state.stop.is_set():
                    state.start()
            return copy
