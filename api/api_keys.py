"""API keys for machine producers, stored only as their SHA-256.

A key reads ``igk_<key_id>_<secret>``: ``key_id`` (16 hex digits) names it in listings and
revocations, ``secret`` is 256 bits from :mod:`secrets`. The plaintext is returned once, by
:meth:`ApiKeyStore.create`, and never stored or logged: the ``api_keys`` table (migration
``0003``) holds ``key_hash``, the hex SHA-256 of the whole key, and a lookup hashes the presented
key and asks for that hash. A plain, unsalted hash is enough here (unlike for passwords): the key
has 256 bits of entropy, so there is nothing to guess.

The API asks :meth:`ApiKeyStore.lookup` (async, psycopg 3) on every request that carries a key;
answers, known key or not, are remembered, so a hot client costs a dict lookup. Each API process
also listens (:meth:`ApiKeyStore.listen`, its own connection) on the channel ``igflow_api_keys``,
where a trigger (migration ``0004``) announces the hash of every key created, revoked or deleted:
the process drops that answer when the change commits, so a revocation holds at once on every
process. While the listener is connected, answers are kept ``cache_ttl_seconds``; while it is not
(Postgres restarting, the connection lost, the trigger missing), only ``fallback_ttl_seconds``, and
the cache is emptied whenever the listener goes down or comes back, since changes may have been
missed in between. A lookup that saw a change announced while it queried keeps its answer only
the fallback time (it may have read the row from before the change). The listener checks its
connection every :data:`HEARTBEAT_S` seconds, so a silently dead one is noticed within twice
that. The admin methods (``igflow apikeys``) are synchronous.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import secrets
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors

from api.metrics import KEY_LISTENER_UP, KEY_LOOKUPS
from core.errors import ConfigError, IgflowError

__all__ = [
    "CHANNEL",
    "HEARTBEAT_S",
    "KEY_PREFIX",
    "ApiKey",
    "ApiKeyStore",
    "KeyStoreUnavailable",
    "NewApiKey",
    "hash_key",
]

log = logging.getLogger(__name__)

#: The Postgres channel on which every change of a key is announced (payload: its hash).
CHANNEL = "igflow_api_keys"
#: Seconds between the listener's checks that its connection is alive.
HEARTBEAT_S = 5.0
#: Every key starts so; anything else is refused without a database round trip.
KEY_PREFIX = "igk_"
#: Longer presented keys are refused unread (ours are 64 characters).
_MAX_KEY_LENGTH = 256
_CONNECT_TIMEOUT_S = 5
_COLUMNS = "key_id, tenant_id, scopes, label, created_at, revoked_at"


class KeyStoreUnavailable(IgflowError):
    """The API key table cannot be read (Postgres down, migrations not applied)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ApiKey:
    """What is known of a key: never the key itself."""

    key_id: str
    tenant_id: str
    scopes: frozenset[str]
    label: str | None
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclasses.dataclass(frozen=True, slots=True)
class NewApiKey:
    """A key just created: the plaintext, shown once, and its record."""

    key: str = dataclasses.field(repr=False)
    info: ApiKey


def hash_key(key: str) -> str:
    """The stored form of ``key``: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _record(row: tuple[Any, ...]) -> ApiKey:
    key_id, tenant_id, scopes, label, created_at, revoked_at = row
    return ApiKey(key_id, tenant_id, frozenset(scopes), label, created_at, revoked_at)


def _unavailable(exc: psycopg.Error) -> KeyStoreUnavailable:
    msg = f"API key store unavailable: {_explain(exc)}"
    return KeyStoreUnavailable(msg)


def _explain(exc: psycopg.Error) -> str:
    if isinstance(exc, errors.UndefinedTable):
        return "no table 'api_keys' (run igflow setup to apply the migrations)"
    return str(exc).strip() or type(exc).__name__


class ApiKeyStore:
    """The ``api_keys`` table of the Postgres at ``dsn``.

    Constructing it connects to nothing. :meth:`lookup` keeps one async connection (opened on
    first use, in the running event loop) and serialises its cache misses on it, so a flood of
    unknown keys queues behind one query at a time instead of opening connections.
    """

    def __init__(
        self,
        dsn: str,
        cache_ttl_seconds: float = 30.0,
        cache_size: int = 100_000,
        fallback_ttl_seconds: float = 1.0,
    ) -> None:
        self._dsn = dsn
        self._ttl = cache_ttl_seconds
        self._fallback_ttl = min(fallback_ttl_seconds, cache_ttl_seconds)
        self._cache_size = cache_size
        #: key hash -> (record or None for unknown/revoked, monotonic expiry)
        self._cache: dict[str, tuple[ApiKey | None, float]] = {}
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        #: Whether the listener is connected and listening (the cache hears every change).
        self._listening = False
        #: Bumped by every announced change and every listener state change.
        self._changes = 0
        self._listener: asyncio.Task[None] | None = None
        #: The listener's Postgres backend pid while it is connected (for operators and tests).
        self.listener_pid: int | None = None
        #: Lookups that went to the database (cache misses), for metrics and tests.
        self.db_lookups = 0

    # -- admin (igflow apikeys) --------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self._dsn, connect_timeout=_CONNECT_TIMEOUT_S)

    def create(self, tenant_id: str, scopes: Iterable[str], label: str | None = None) -> NewApiKey:
        """Create a key for ``tenant_id`` with ``scopes``; the result holds the plaintext, which
        nothing keeps. ``ConfigError`` for a blank tenant, no scope or a blank or spaced one, or
        when the table cannot be reached."""
        wanted = sorted(set(scopes))
        if not tenant_id.strip():
            msg = "an API key needs a tenant"
            raise ConfigError(msg)
        if not wanted or any(not s or s != "".join(s.split()) for s in wanted):
            msg = "an API key needs one scope or more, none blank or holding spaces"
            raise ConfigError(msg)
        for _attempt in range(3):  # a key_id collision (64 bits) is not going to happen twice
            key_id = secrets.token_hex(8)
            key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            try:
                with self._connect() as conn:
                    row = conn.execute(
                        "INSERT INTO api_keys (key_hash, key_id, tenant_id, scopes, label)"
                        f" VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                        (hash_key(key), key_id, tenant_id, wanted, label),
                    ).fetchone()
            except errors.UniqueViolation:
                continue
            except psycopg.Error as exc:
                msg = f"API key store unavailable: {_explain(exc)}"
                raise ConfigError(msg) from exc
            assert row is not None  # RETURNING always yields the row
            return NewApiKey(key, _record(row))
        msg = "could not draw a fresh API key id"
        raise ConfigError(msg)

    def list_keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        """Every key (of ``tenant_id``, if given), revoked ones too, oldest first."""
        where, params = ("WHERE tenant_id = %s", (tenant_id,)) if tenant_id else ("", ())
        try:
            with self._connect() as conn:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM api_keys {where} ORDER BY created_at, key_id", params
                ).fetchall()
        except psycopg.Error as exc:
            msg = f"API key store unavailable: {_explain(exc)}"
            raise ConfigError(msg) from exc
        return [_record(r) for r in rows]

    def revoke(self, key_id: str) -> bool:
        """Revoke the key ``key_id``; ``False`` if no active key has that id. This store's
        :meth:`lookup` refuses it at once, and so does every listening process's once the
        trigger's notification reaches it (a process that is not listening: within its
        ``fallback_ttl_seconds``)."""
        try:
            with self._connect() as conn:
                cur = conn.execute(
                    "UPDATE api_keys SET revoked_at = now()"
                    " WHERE key_id = %s AND revoked_at IS NULL",
                    (key_id,),
                )
                revoked = cur.rowcount > 0
        except psycopg.Error as exc:
            msg = f"API key store unavailable: {_explain(exc)}"
            raise ConfigError(msg) from exc
        for digest, (record, _expiry) in list(self._cache.items()):
            if record is not None and record.key_id == key_id:
                self._cache.pop(digest, None)
        return revoked

    # -- the API's path ----------------------------------------------------------------------

    async def lookup(self, key: str) -> ApiKey | None:
        """The active key ``key`` is, or ``None`` (unknown, revoked, or not a key's shape).

        ``KeyStoreUnavailable`` when the table cannot be read (nothing is cached then).
        """
        if not key.startswith(KEY_PREFIX) or len(key) > _MAX_KEY_LENGTH:
            return None
        digest = hash_key(key)
        hit = self._cached(digest)
        if hit is not None:
            return hit[0]
        async with self._serialised():
            # Another request may have fetched this key while we waited.
            hit = self._cached(digest)
            if hit is not None:
                return hit[0]
            changes = self._changes
            record = await self._fetch(digest)
            # Kept long only if the listener heard nothing the whole time: a change announced
            # during the query may postdate the row it returned.
            self._remember(digest, record, settled=self._listening and changes == self._changes)
            return record

    def cached(self, key: str) -> ApiKey | None:
        """The active key ``key`` is if this process remembers it as such; never a query."""
        if not key.startswith(KEY_PREFIX) or len(key) > _MAX_KEY_LENGTH:
            return None
        hit = self._cached(hash_key(key))
        return None if hit is None else hit[0]

    def _cached(self, digest: str) -> tuple[ApiKey | None] | None:
        """A 1-tuple holding the remembered answer for ``digest``, or ``None`` if there is none
        (or it is older than the TTL)."""
        entry = self._cache.get(digest)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            self._cache.pop(digest, None)
            return None
        return (entry[0],)

    def _remember(self, digest: str, record: ApiKey | None, *, settled: bool) -> None:
        while len(self._cache) >= self._cache_size:
            self._cache.pop(next(iter(self._cache)))  # the oldest entry
        ttl = self._ttl if settled else self._fallback_ttl
        self._cache[digest] = (record, time.monotonic() + ttl)

    # -- hearing about changes ---------------------------------------------------------------

    def start_listening(self) -> None:
        """Run :meth:`listen` in the background of the running event loop (once)."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self.listen())

    async def listen(self) -> None:
        """Hear every key change until cancelled, reconnecting (0.5 s to 5 s apart) when the
        connection is lost; meanwhile the cache keeps answers only the fallback time."""
        delay = 0.5
        while True:
            try:
                await self._listen_once()
                delay = 0.5  # it listened, then lost the connection: retry soon
            except psycopg.Error as exc:
                log.warning("API key listener: %s", _explain(exc))
            except Exception:
                # Not the connection: still no reason to stop hearing revocations for good.
                log.exception("API key listener failed")
            finally:
                self._set_listening(False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _listen_once(self) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=_CONNECT_TIMEOUT_S,
            application_name="igflow-api-keys-listener",
        )
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
            cur = await conn.execute(
                "SELECT count(*) FROM pg_trigger"
                " WHERE tgname = 'api_keys_notify' AND tgrelid = to_regclass('api_keys')"
            )
            row = await cur.fetchone()
            if not row or not row[0]:
                log.warning(
                    "API key listener: no trigger api_keys_notify (run igflow setup); API keys"
                    " are cached %s s only",
                    self._fallback_ttl,
                )
                await asyncio.sleep(60)
                return
            self.listener_pid = conn.info.backend_pid
            # Listening from here: whatever was cached before may have missed a change.
            self._set_listening(True)
            while True:
                async for notice in conn.notifies(timeout=HEARTBEAT_S):
                    self._cache.pop(notice.payload, None)
                    self._changes += 1
                async with asyncio.timeout(HEARTBEAT_S):
                    await conn.execute("SELECT 1")
        except TimeoutError:
            log.warning("API key listener: the connection stopped answering")
        finally:
            self.listener_pid = None
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    def _set_listening(self, listening: bool) -> None:
        if listening == self._listening:
            return
        self._listening = listening
        self._changes += 1
        self._cache.clear()
        KEY_LISTENER_UP.set(1 if listening else 0)

    def _serialised(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._lock is None:
            # A connection belongs to the loop that opened it; a new loop starts afresh.
            self._loop, self._lock, self._conn = loop, asyncio.Lock(), None
        return self._lock

    async def _fetch(self, digest: str) -> ApiKey | None:
        reused = self._conn is not None and not self._conn.closed
        try:
            return await self._query(digest)
        except psycopg.Error as exc:
            await self._drop_connection()
            if not (reused and isinstance(exc, psycopg.OperationalError)):
                raise _unavailable(exc) from exc
        # The connection kept from earlier had gone stale (Postgres restarted, say): one more
        # try on a new one before calling the store unavailable.
        try:
            return await self._query(digest)
        except psycopg.Error as exc:
            await self._drop_connection()
            raise _unavailable(exc) from exc

    async def _query(self, digest: str) -> ApiKey | None:
        self.db_lookups += 1
        KEY_LOOKUPS.inc()
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S
            )
        cur = await self._conn.execute(
            f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL",
            (digest,),
        )
        row = await cur.fetchone()
        return None if row is None else _record(row)

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def close(self) -> None:
        """Stop listening and close the lookup connection (a later :meth:`lookup` opens a new
        one)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        if self._loop is asyncio.get_running_loop():
            await self._drop_connection()
        self._conn = None
