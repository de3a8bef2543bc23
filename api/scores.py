"""Reading a tenant's score: the Redis hot store first, the Postgres read model on a miss.

Both stores are written by the flow's sinks (:mod:`sinks.redis`, :mod:`sinks.postgres`); the API
only reads them. Redis holds the newest change (``tenant:<t>:score``) until its TTL; Postgres
holds it for good, so a cold or expired key still answers. A store that fails or does not answer
within ``timeout_s`` raises :class:`StoreUnavailable`; a Redis outage falls back to Postgres
(the read model has the same change, or an older one while its sink retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from datetime import datetime

import psycopg
import redis.asyncio as aioredis
import redis.exceptions as rx

from api.tenant_redis import StoreForbidden, TenantRedisUsers, refused_login
from core.errors import IgflowError
from core.redis_tls import async_pool
from core.store_keys import score_key

__all__ = ["Score", "ScoreReader", "StoreUnavailable"]

log = logging.getLogger(__name__)

_SELECT = "SELECT score_exact, status, updated_at FROM coherence_scores WHERE tenant_id = %s"
#: For one transaction: the row-security role, and the caller's tenant it may see.
_AS_READER = "SET LOCAL ROLE igflow_tenant_reader"
_AS_TENANT = "SELECT set_config('igflow.tenant_id', %s, true)"


class StoreUnavailable(IgflowError):
    """Neither store answered."""


@dataclasses.dataclass(frozen=True, slots=True)
class Score:
    """A tenant's score as served (the GraphQL ``CoherenceScore``); ``store`` says which one."""

    tenant_id: str
    score: float
    status: str
    updated_at: datetime
    store: str


class ScoreReader:
    """Reads scores; one Redis connection pool and one Postgres connection per process."""

    def __init__(
        self,
        redis_url: str,
        postgres_dsn: str,
        timeout_s: float = 2.0,
        pool_size: int = 64,
        users: TenantRedisUsers | None = None,
    ) -> None:
        # A blocking pool: past its size a read waits (up to the timeout) for a connection
        # instead of failing with "Too many connections", which read as Redis being down and
        # sent the overflow to the slower Postgres path, feeding the overload.
        pool = async_pool(
            redis_url,
            aioredis.BlockingConnectionPool,
            max_connections=pool_size,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        #: Read Redis as the caller's tenant user (``None``: as the URL's user).
        self._users = users
        self._dsn = postgres_dsn
        self._timeout = timeout_s
        self._pg: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._pg_lock = asyncio.Lock()

    async def get(self, tenant_id: str, caller: str | None = None) -> Score | None:
        """The tenant's score, or ``None`` if neither store has one. ``caller`` is the tenant of
        the principal asking (default: ``tenant_id``): Postgres shows it its own rows only."""
        caller = tenant_id if caller is None else caller
        redis_failed = False
        try:
            fields = await self.hot(tenant_id, caller)
        except StoreForbidden as exc:
            # Only a read the policy check let through wrongly gets here; Postgres's row
            # security answers it alike (no row), so the caller learns nothing.
            log.warning("redis refused %s: %s", caller, exc)
            fields = {}
        except (rx.RedisError, OSError) as exc:
            log.warning("redis read failed, falling back to postgres: %s", exc)
            redis_failed = True
            fields = {}
        if fields:
            text = {_text(k): _text(v) for k, v in fields.items()}
            return Score(
                tenant_id,
                float(text["score"]),
                text["status"],
                datetime.fromisoformat(text["updated_at"]),
                "redis",
            )
        try:
            row = await asyncio.wait_for(self._postgres(tenant_id, caller), self._timeout)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await self._drop_pg()
            what = "redis and postgres" if redis_failed else "postgres"
            msg = f"{what} unavailable: {type(exc).__name__}"
            raise StoreUnavailable(msg) from exc
        if row is None:
            return None
        score, status, updated_at = row
        assert isinstance(score, float) and isinstance(status, str)
        assert isinstance(updated_at, datetime)
        return Score(tenant_id, score, status, updated_at, "postgres")

    async def hot(self, tenant_id: str, caller: str) -> dict[bytes | str, bytes | str]:
        """The fields of ``tenant_id``'s score hash in Redis, read as ``caller``'s tenant user:
        the login and the read go as one pipeline on a pooled connection. Raises
        :class:`StoreForbidden` when Redis refuses that user the key."""
        key = score_key(tenant_id)
        if self._users is None:
            fields: dict[bytes | str, bytes | str] = await self._redis.hgetall(key)
            return fields
        for attempt in range(2):
            user, password = await self._users.login(caller)
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.execute_command("AUTH", user, password)
                    pipe.hgetall(key)
                    login, read = await pipe.execute(raise_on_error=False)
            except rx.ConnectionError:
                # Redis closes the connections of a user it deletes (or it restarted): the
                # pool connects afresh, once.
                if attempt:
                    raise
                self._users.forget(caller)
                continue
            if refused_login(login):
                self._users.forget(caller)  # Redis lost the user: provision it again
                continue
            if isinstance(login, Exception):
                raise login
            if isinstance(read, rx.NoPermissionError):
                raise StoreForbidden(str(read))
            if isinstance(read, Exception):
                raise read
            return dict(read)
        msg = f"redis refused the login of {caller}'s user twice"
        raise rx.AuthenticationError(msg)

    async def _postgres(self, tenant_id: str, caller: str) -> tuple[object, ...] | None:
        """The read model's row of ``tenant_id``, read as ``caller``: under row-level security
        (migration 0006) the role ``igflow_tenant_reader`` sees only the rows of the tenant in
        ``igflow.tenant_id``, set for this transaction only, so a read of another tenant's row
        finds nothing whatever the code above asked."""
        async with self._pg_lock:
            if self._pg is None or self._pg.closed:
                self._pg = await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True, connect_timeout=max(1, round(self._timeout))
                )
            async with self._pg.transaction(), self._pg.pipeline():
                await self._pg.execute(_AS_READER)
                await self._pg.execute(_AS_TENANT, (caller,))
                cur = await self._pg.execute(_SELECT, (tenant_id,))
            return await cur.fetchone()

    async def _drop_pg(self) -> None:
        pg, self._pg = self._pg, None
        if pg is not None:
            with contextlib.suppress(psycopg.Error, OSError, TimeoutError):
                await asyncio.wait_for(pg.close(), 1.0)

    async def ping(self) -> dict[str, str]:
        """Each store's state for ``/ready``: ``ok`` or the error's type."""
        out: dict[str, str] = {}
        try:
            await asyncio.wait_for(self._redis.ping(), self._timeout)
            out["redis"] = "ok"
        except (rx.RedisError, OSError, TimeoutError) as exc:
            out["redis"] = type(exc).__name__
        try:
            await asyncio.wait_for(self._postgres("", ""), self._timeout)
            out["postgres"] = "ok"
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await self._drop_pg()
            out["postgres"] = type(exc).__name__
        return out

    async def close(self) -> None:
        await self._redis.aclose()
        # The client does not close a pool it was handed: its sockets would outlive the loop.
        await self._redis.connection_pool.disconnect()
        await self._drop_pg()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
