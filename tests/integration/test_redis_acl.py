"""Redis enforces the tenant itself: the API reads each caller's data as that caller's tenant
ACL user (tenancy/redis_acl.py, api/tenant_redis.py), which Redis lets read that tenant's keys
and channel only. So a resolver that skipped the policy check still gets nothing of another
tenant from Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.exceptions as rx

from api.events import EventHub, SubscriptionEnded
from api.scores import ScoreReader
from api.tenant_redis import StoreForbidden, TenantRedisUsers
from core.reasons import ReasonCode
from core.settings import Settings
from core.store_keys import events_channel, score_key, signals_key
from tenancy.redis_acl import acl_password, acl_username, load_secret
from tests.integration.scratch import Scratch

_SCORE = {"score": "0.9", "status": "HEALTHY", "updated_at": "2026-12-01T00:00:00+00:00"}


@pytest.fixture
def secret(tmp_path: Path) -> bytes:
    return load_secret(tmp_path / "acl.secret")


@pytest.fixture
def admin(it_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(it_settings.stores.redis_url)
    yield client
    client.close()


def _as_tenant(settings: Settings, secret: bytes, tenant: str) -> redis.Redis:
    return redis.Redis.from_url(
        settings.stores.redis_url,
        username=acl_username(tenant),
        password=acl_password(secret, tenant),
    )


def test_a_tenant_user_reads_its_own_keys_and_nothing_else(
    it_settings: Settings, scratch: Scratch, secret: bytes, admin: redis.Redis
) -> None:
    a, b = scratch.tenant("acl-a"), scratch.tenant("acl-b")
    # A tenant id with Redis glob characters must not widen its patterns.
    star = scratch.tenant("acl-") + "*"
    scratch.tenants.add(star)
    for tenant in (a, b):
        admin.hset(score_key(tenant), mapping=_SCORE)
        admin.xadd(signals_key(tenant), {"s": "1"})

    async def provision() -> None:
        users = TenantRedisUsers(it_settings.stores.redis_url, secret)
        try:
            for tenant in (a, star):
                await users.login(tenant)
        finally:
            await users.close()

    asyncio.run(provision())
    mine = _as_tenant(it_settings, secret, a)
    try:
        assert mine.hgetall(score_key(a))[b"status"] == b"HEALTHY"
        assert mine.xlen(signals_key(a)) == 1
        for refused in (
            lambda: mine.hgetall(score_key(b)),
            lambda: mine.xrange(signals_key(b)),
            lambda: mine.hset(score_key(a), "score", "0"),  # no writes, own keys included
            lambda: mine.delete(score_key(a)),
            lambda: mine.keys("*"),
            lambda: mine.publish(events_channel(a), "x"),
            lambda: mine.acl_list(),
            lambda: mine.config_get("*"),
        ):
            with pytest.raises(rx.NoPermissionError):
                refused()
        pubsub = mine.pubsub()
        pubsub.subscribe(events_channel(b))  # the refusal is the reply, read next
        with pytest.raises(rx.NoPermissionError):
            pubsub.get_message(timeout=5)
        pubsub.close()
    finally:
        mine.close()
    starry = _as_tenant(it_settings, secret, star)
    try:
        with pytest.raises(rx.NoPermissionError):
            starry.hgetall(score_key(a))  # "tenant:acl-…*:" is literal, not a pattern
    finally:
        starry.close()
    with pytest.raises(rx.AuthenticationError):  # a wrong secret logs in as nobody
        _as_tenant(it_settings, b"x" * 32, a).ping()


def test_the_score_reader_reads_redis_as_its_caller(
    it_settings: Settings, scratch: Scratch, secret: bytes, admin: redis.Redis
) -> None:
    a, b = scratch.tenant("acl-a"), scratch.tenant("acl-b")
    for tenant in (a, b):
        admin.hset(score_key(tenant), mapping=_SCORE)

    async def read() -> tuple[object, ...]:
        users = TenantRedisUsers(it_settings.stores.redis_url, secret)
        reader = ScoreReader(
            it_settings.stores.redis_url, it_settings.stores.postgres_dsn, users=users
        )
        try:
            own = await reader.get(a, caller=a)
            with pytest.raises(StoreForbidden):
                await reader.hot(b, caller=a)  # a resolver that skipped the policy check
            other = await reader.get(b, caller=a)  # Postgres's row security: no row either
            # Redis restarted and forgot the user: the next read provisions it again.
            admin.acl_deluser(acl_username(a))
            again = await reader.get(a, caller=a)
            return own, other, again
        finally:
            await reader.close()
            await users.close()

    own, other, again = asyncio.run(read())
    assert own is not None and own.store == "redis"  # type: ignore[attr-defined]
    assert other is None
    assert again is not None and again.store == "redis"  # type: ignore[attr-defined]


def test_event_subscriptions_log_in_as_the_caller(
    it_settings: Settings, scratch: Scratch, secret: bytes, admin: redis.Redis
) -> None:
    a, b = scratch.tenant("acl-a"), scratch.tenant("acl-b")

    async def run() -> tuple[list[object], SubscriptionEnded]:
        users = TenantRedisUsers(it_settings.stores.redis_url, secret)
        hub = EventHub(it_settings.stores.redis_url, coalesce_ms=10, users=users)
        try:
            own = hub.subscribe(a, caller=a)
            first = asyncio.ensure_future(anext(own))
            while hub.subscribers < 1 or admin.pubsub_numsub(events_channel(a))[0][1] < 1:
                await asyncio.sleep(0.02)
            admin.publish(events_channel(a), '{"kind": "signal", "n": 1}')
            batch = await asyncio.wait_for(first, 10)
            await own.aclose()
            other = hub.subscribe(b, caller=a)
            with pytest.raises(SubscriptionEnded) as refused:
                await asyncio.wait_for(anext(other), 10)
            return list(batch.signals), refused.value
        finally:
            await hub.close()
            await users.close()

    signals, refused = asyncio.run(run())
    assert signals == [{"kind": "signal", "n": 1}]
    assert refused.reason == ReasonCode.STORE_FORBIDDEN
