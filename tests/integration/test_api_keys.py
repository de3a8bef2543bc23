"""API keys against the local Postgres: created once, stored only hashed, revoked at once on every
serving process (LISTEN/NOTIFY), or within the fallback TTL while a process cannot listen."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from api.api_keys import KEY_PREFIX, ApiKeyStore, hash_key
from api.auth import Authenticator, AuthFailure, Principal
from core.errors import ConfigError
from core.migrations import apply as apply_migrations
from core.reasons import ReasonCode
from core.settings import Settings
from tests.integration.api_server import ApiServer, serve
from tests.integration.conftest import REPO, env_for

pytestmark = pytest.mark.integration

READ, WRITE = "coherence:read", "coherence:write"
TTL = 0.5
LISTENER_UP, LOOKUPS = "igflow_api_key_listener_up", "igflow_api_key_lookups_total"


@pytest.fixture(scope="module")
def dsn(stack: Settings) -> str:
    apply_migrations(stack.stores.postgres_dsn)  # 0003_api_keys, if igflow setup has not yet
    return stack.stores.postgres_dsn


@pytest.fixture
def tenant(dsn: str) -> Iterator[str]:
    """A tenant of this test alone; its keys are deleted afterwards."""
    tenant_id = f"it-keys-{uuid.uuid4().hex[:10]}"
    yield tenant_id
    with psycopg.connect(dsn) as conn:
        conn.execute("DELETE FROM api_keys WHERE tenant_id = %s", (tenant_id,))


def authenticator(stack: Settings, store: ApiKeyStore) -> Authenticator:
    return Authenticator.from_settings(stack, api_keys=store)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def stored_rows(dsn: str, tenant_id: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM api_keys WHERE tenant_id = %s", (tenant_id,))
        return list(cur.fetchall())


def test_a_created_key_authenticates_as_its_tenant(stack: Settings, dsn: str, tenant: str) -> None:
    store = ApiKeyStore(dsn, cache_ttl_seconds=TTL)
    new = store.create(tenant, [WRITE, READ, WRITE], label="sensor fleet")
    assert new.key.startswith(f"{KEY_PREFIX}{new.info.key_id}_") and len(new.key) >= 60
    assert new.key not in repr(new)
    assert (new.info.tenant_id, new.info.scopes, new.info.label) == (
        tenant,
        frozenset({READ, WRITE}),
        "sensor fleet",
    )

    async def scenario() -> list[Principal]:
        auth = authenticator(stack, store)
        try:
            return [await auth.authenticate(None, new.key) for _ in range(3)]
        finally:
            await auth.close()

    principals = run(scenario())
    want = Principal(f"apikey:{new.info.key_id}", tenant, frozenset({READ, WRITE}), "api_key")
    assert principals == [want] * 3


def test_only_the_hash_is_stored(dsn: str, tenant: str) -> None:
    new = ApiKeyStore(dsn).create(tenant, [READ])
    # The secret is base64url, which may itself hold "_": cut after the known prefix.
    secret = new.key.removeprefix(f"{KEY_PREFIX}{new.info.key_id}_")
    assert len(secret) >= 32
    (row,) = stored_rows(dsn, tenant)
    assert row["key_hash"] == hashlib.sha256(new.key.encode()).hexdigest() == hash_key(new.key)
    assert row["key_id"] == new.info.key_id and row["revoked_at"] is None
    for value in row.values():
        assert new.key not in str(value) and secret not in str(value)
    with psycopg.connect(dsn) as conn:
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'api_keys' AND table_schema = current_schema()"
        ).fetchall()
    assert {c for (c,) in columns} == {
        "key_hash",
        "key_id",
        "tenant_id",
        "scopes",
        "label",
        "created_at",
        "revoked_at",
    }


def test_a_store_that_is_not_listening_refuses_a_revoked_key_within_the_fallback_ttl(
    stack: Settings, dsn: str, tenant: str
) -> None:
    # The API process's store, never listening: its answers are kept the fallback time only.
    api_store = ApiKeyStore(dsn, cache_ttl_seconds=60, fallback_ttl_seconds=TTL)
    admin = ApiKeyStore(dsn)  # igflow apikeys revoke, another process
    new = admin.create(tenant, [READ])

    async def scenario() -> tuple[str, ReasonCode, float]:
        auth = authenticator(stack, api_store)
        try:
            assert (await auth.authenticate(None, new.key)).tenant_id == tenant
            assert admin.revoke(new.info.key_id)
            revoked_at = time.monotonic()
            # Still cached: without the listener, the revocation reaches this process only when
            # the entry expires.
            cached = (await auth.authenticate(None, new.key)).tenant_id
            while True:
                try:
                    await auth.authenticate(None, new.key)
                except AuthFailure as failure:
                    return cached, failure.reason, time.monotonic() - revoked_at
                assert time.monotonic() - revoked_at < TTL + 1.0, "still accepted after the TTL"
                await asyncio.sleep(0.02)
        finally:
            await auth.close()

    cached, reason, after = run(scenario())
    assert cached == tenant
    assert reason is ReasonCode.AUTH_INVALID
    assert after <= TTL + 0.2
    assert not admin.revoke(new.info.key_id)  # already revoked
    (listed,) = admin.list_keys(tenant)
    assert not listed.active and listed.revoked_at is not None


def test_a_revocation_through_the_same_store_is_immediate(
    stack: Settings, dsn: str, tenant: str
) -> None:
    store = ApiKeyStore(dsn, cache_ttl_seconds=60)
    new = store.create(tenant, [READ])

    async def scenario() -> ReasonCode:
        auth = authenticator(stack, store)
        try:
            await auth.authenticate(None, new.key)
            store.revoke(new.info.key_id)
            with pytest.raises(AuthFailure) as caught:
                await auth.authenticate(None, new.key)
            return caught.value.reason
        finally:
            await auth.close()

    assert run(scenario()) is ReasonCode.AUTH_INVALID


def _wait(what: str, ok: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.02)


def _metric(server: ApiServer, name: str) -> float:
    for line in server.metrics().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def test_a_revocation_holds_at_once_on_every_serving_process(
    stack: Settings, dsn: str, tenant: str
) -> None:
    """Two ``igflow serve`` processes have used (and cached, for 30 s) a key; it is revoked by
    another process; the very next request on each is refused."""
    admin = ApiKeyStore(dsn)
    new = admin.create(tenant, [READ])
    query = {
        "query": "query Q($t: ID!) { tenantCoherence(tenantId: $t) { score } }",
        "variables": {"t": tenant},
    }
    headers = {"x-api-key": new.key}
    with serve(stack) as one, serve(stack) as two:
        for server in (one, two):
            _wait("the key listener", lambda s=server: _metric(s, LISTENER_UP) == 1)
            first = server.client.post("/graphql", json=query, headers=headers)
            assert first.status_code == 200, first.text  # authenticated (NOT_FOUND: no score)
            lookups = _metric(server, LOOKUPS)
            assert server.client.post("/graphql", json=query, headers=headers).status_code == 200
            assert _metric(server, LOOKUPS) == lookups  # the second use came from the cache
        assert admin.revoke(new.info.key_id)
        revoked = time.perf_counter()
        # NOTIFY is delivered asynchronously (the listener's backend sends it after the commit,
        # usually before the revoking client hears back): allow it milliseconds, not the 30 s
        # the cached answer would otherwise live.
        after = []
        for server in (one, two):
            while True:
                got = server.client.post("/graphql", json=query, headers=headers)
                if got.status_code != 200:
                    break
                assert time.perf_counter() - revoked < 0.5, "still accepted 500 ms after"
            after.append(1000 * (time.perf_counter() - revoked))
            assert got.status_code == 401, got.text
            assert got.json()["errors"][0]["extensions"]["code"] == "AUTH_INVALID"
            again = server.client.post("/graphql", json=query, headers=headers)
            assert again.status_code == 401
        print(f"refused by the two processes {after[0]:.1f} and {after[1]:.1f} ms after")


def test_a_listener_that_loses_its_connection_comes_back_and_misses_nothing(
    stack: Settings, dsn: str, tenant: str
) -> None:
    """The listener's backend is killed: the cache is emptied (a change may be missed while it
    is down), the listener reconnects, and a key revoked in the gap is refused."""
    store = ApiKeyStore(dsn, cache_ttl_seconds=60, fallback_ttl_seconds=60)
    admin = ApiKeyStore(dsn)
    keep, drop = admin.create(tenant, [READ]), admin.create(tenant, [READ])

    async def scenario() -> tuple[int, int]:
        store.start_listening()
        try:
            while store.listener_pid is None:
                await asyncio.sleep(0.01)
            first_pid = store.listener_pid
            assert await store.lookup(keep.key) is not None
            assert await store.lookup(drop.key) is not None
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
                # Revoked while the listener is down (or coming back): its notice may be lost.
                conn.execute(
                    "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s", (drop.info.key_id,)
                )
            while store.listener_pid in (None, first_pid):
                await asyncio.sleep(0.01)
            assert await store.lookup(drop.key) is None  # not the 60 s old answer
            assert await store.lookup(keep.key) is not None
            # Listening again: the next revocation is heard at once.
            admin.revoke(keep.info.key_id)
            deadline = time.monotonic() + 2
            while await store.lookup(keep.key) is not None:
                assert time.monotonic() < deadline, "the revocation was not heard"
                await asyncio.sleep(0.005)
            return first_pid, store.listener_pid or 0
        finally:
            await store.close()

    first_pid, second_pid = run(scenario())
    assert second_pid not in (0, first_pid)


@pytest.mark.parametrize(
    "key",
    [
        f"{KEY_PREFIX}0123456789abcdef_{'A' * 43}",  # the right shape, never issued
        "not-a-key",
        KEY_PREFIX + "x" * 300,
    ],
    ids=["unknown", "wrong-shape", "too-long"],
)
def test_unknown_keys_are_invalid(stack: Settings, dsn: str, key: str) -> None:
    async def scenario() -> AuthFailure:
        auth = authenticator(stack, ApiKeyStore(dsn, cache_ttl_seconds=TTL))
        try:
            with pytest.raises(AuthFailure) as caught:
                await auth.authenticate(None, key)
            return caught.value
        finally:
            await auth.close()

    failure = run(scenario())
    assert failure.reason is ReasonCode.AUTH_INVALID and key not in str(failure)


def test_concurrent_lookups_of_a_key_read_it_once(stack: Settings, dsn: str, tenant: str) -> None:
    store = ApiKeyStore(dsn, cache_ttl_seconds=TTL)
    keys = [store.create(tenant, [READ], label=str(i)) for i in range(5)]

    async def scenario() -> list[str]:
        auth = authenticator(stack, store)
        try:
            found = await asyncio.gather(
                *(auth.authenticate(None, k.key) for k in keys for _ in range(20))
            )
            return [p.subject for p in found]
        finally:
            await auth.close()

    subjects = run(scenario())
    assert subjects == [f"apikey:{k.info.key_id}" for k in keys for _ in range(20)]
    # 100 concurrent requests, 5 keys: each key read once, the others waited for its answer.
    assert store.db_lookups == 5


def test_an_unreachable_store_is_store_unavailable(stack: Settings) -> None:
    # A port nothing listens on: a real refused connection, not a stand-in.
    store = ApiKeyStore("postgresql://igflow:igflow@127.0.0.1:1/igflow")

    async def scenario() -> ReasonCode:
        auth = authenticator(stack, store)
        with pytest.raises(AuthFailure) as caught:
            await auth.authenticate(None, f"{KEY_PREFIX}0123456789abcdef_{'A' * 43}")
        await auth.close()
        return caught.value.reason

    assert run(scenario()) is ReasonCode.STORE_UNAVAILABLE


def test_list_filters_by_tenant_and_never_shows_a_key(dsn: str, tenant: str) -> None:
    store = ApiKeyStore(dsn)
    made = [store.create(tenant, [READ], label=f"k{i}") for i in range(3)]
    listed = store.list_keys(tenant)
    assert [k.key_id for k in listed] == [m.info.key_id for m in made]
    assert all(not hasattr(k, "key") for k in listed)
    assert {k.tenant_id for k in store.list_keys()} >= {tenant}


def test_bad_creations_are_refused(dsn: str, tenant: str) -> None:
    store = ApiKeyStore(dsn)
    for tenant_id, scopes in (("  ", [READ]), (tenant, []), (tenant, [""]), (tenant, ["a b"])):
        with pytest.raises(ConfigError, match="API key needs"):
            store.create(tenant_id, scopes)
    assert stored_rows(dsn, tenant) == []


def igflow(stack: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "igflow.cli", *args],
        cwd=REPO,
        env=env_for(stack),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_apikeys_commands(stack: Settings, dsn: str, tenant: str) -> None:
    created = igflow(
        stack, "apikeys", "create", "--tenant", tenant, "--scope", WRITE, "--label", "cli"
    )
    assert created.returncode == 0, created.stderr
    printed = json.loads(created.stdout)
    assert set(printed) == {
        "key",
        "key_id",
        "tenant_id",
        "scopes",
        "label",
        "created_at",
        "revoked_at",
    }
    assert (printed["tenant_id"], printed["scopes"], printed["label"]) == (tenant, [WRITE], "cli")
    assert stored_rows(dsn, tenant)[0]["key_hash"] == hash_key(printed["key"])

    listed = igflow(stack, "apikeys", "list", "--tenant", tenant, "--json")
    assert listed.returncode == 0, listed.stderr
    assert printed["key"] not in listed.stdout
    (entry,) = json.loads(listed.stdout)
    assert entry["key_id"] == printed["key_id"] and entry["revoked_at"] is None
    table = igflow(stack, "apikeys", "list", "--tenant", tenant)
    assert printed["key_id"] in table.stdout and "active" in table.stdout
    assert printed["key"] not in table.stdout

    assert igflow(stack, "apikeys", "revoke", printed["key_id"]).returncode == 0
    again = igflow(stack, "apikeys", "revoke", printed["key_id"])
    assert again.returncode == 1 and "no active API key" in again.stdout
    (entry,) = json.loads(igflow(stack, "apikeys", "list", "--tenant", tenant, "--json").stdout)
    assert entry["revoked_at"] is not None

    unreachable = env_for(stack, IGFLOW_POSTGRES_DSN="postgresql://igflow:igflow@127.0.0.1:1/x")
    down = subprocess.run(
        [sys.executable, "-m", "igflow.cli", "apikeys", "list"],
        cwd=REPO,
        env=unreachable,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 2 and "API key store unavailable" in down.stderr
