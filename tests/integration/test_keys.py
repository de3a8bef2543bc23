"""Tenant-scoped keys on the stack's Postgres (tenancy/keys.py): rotation keeps old data readable
and moves new data to new keys; offboarding crypto-shreds one tenant and no other; the AWS KMS
adapter works against a KMS-compatible server (moto's)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import psycopg
import pytest
from psycopg import sql

from core.envelope import DecryptError, FieldCipher, Kms, LocalKms, key_version_of
from core.errors import ConfigError
from core.settings import Settings
from tenancy.aws_kms import AwsKms
from tenancy.cached_table import KEPT_TIMEOUT_S
from tenancy.keys import KeysDestroyed, TenantKeys
from tenancy.registry import list_tenants
from tests.integration.conftest import (
    REPO,
    backend_alive,
    env_for,
    fresh_schema,
    in_schema,
    paused,
)
from tests.integration.scratch import Scratch
from tests.ports import free_port

T0 = datetime(2026, 12, 1, tzinfo=UTC)
SCOPES = ("lake.signals", "redis", "dlq")


def _row(i: int) -> str:
    return f"coherence.signals/0/{i}"


def _seal(keys: TenantKeys, tenant: str, ts: datetime, n: int = 3) -> list[tuple[str, str, bytes]]:
    """``n`` fields per scope of ``tenant`` at event time ``ts``: (scope, row, ciphertext)."""
    return [
        (
            scope,
            _row(i),
            keys.encrypt_field(tenant, scope, "selectors", _row(i), ts, f"sel-{i}".encode()),
        )
        for scope in SCOPES
        for i in range(n)
    ]


def _opened(keys: TenantKeys, tenant: str, sealed: list[tuple[str, str, bytes]]) -> list[bytes]:
    return [keys.decrypt_field(tenant, scope, "selectors", row, c) for scope, row, c in sealed]


def _exercise(settings: Settings, scratch: Scratch, kms_of: Callable[[], Kms]) -> None:
    dsn = settings.stores.postgres_dsn
    keys = TenantKeys(dsn, kms_of(), refresh_seconds=3600, rotation_grace_seconds=60)
    a, b = scratch.tenant("keys-a"), scratch.tenant("keys-b")
    old_a, old_b = _seal(keys, a, T0), _seal(keys, b, T0)
    plain = [f"sel-{i}".encode() for _ in SCOPES for i in range(3)]
    assert _opened(keys, a, old_a) == plain
    # Another tenant's ciphertext under this tenant's keys: refused.
    with pytest.raises(DecryptError):
        keys.decrypt_field(b, old_a[0][0], "selectors", old_a[0][1], old_a[0][2])

    now = datetime.now(UTC)
    rotation = keys.rotate(a, now=now)
    assert rotation.kek_version == 2 and rotation.rewrapped == len(SCOPES)
    assert {k.scope for k in rotation.new_data_keys} == set(SCOPES)
    assert all(k.effective_from == now + timedelta(seconds=60) for k in rotation.new_data_keys)
    fresh = TenantKeys(dsn, kms_of(), refresh_seconds=3600)  # another process: re-reads
    assert _opened(fresh, a, old_a) == plain  # old data: re-wrapped keys, still readable
    later = now + timedelta(seconds=120)
    new_a = _seal(fresh, a, later)
    assert {key_version_of(c) for _s, _r, c in new_a} == {2}  # new data: new keys
    assert {key_version_of(c) for _s, _r, c in _seal(fresh, a, T0)} == {1}  # by event time
    assert _seal(fresh, a, T0) == old_a  # the same record encrypts alike: replays match
    assert _opened(keys, a, new_a) == plain  # the rotating process too
    with psycopg.connect(dsn) as conn:
        keks = conn.execute("SELECT version FROM tenant_keks WHERE tenant_id = %s", (a,)).fetchall()
    assert keks == [(2,)]  # the old KEK is destroyed

    # Offboarding a: its fields are unreadable everywhere; b is untouched.
    destroyed = fresh.offboard(a, note="test")
    assert destroyed == {"data_keys": 2 * len(SCOPES), "keks": 1}
    for reader in (fresh, TenantKeys(dsn, kms_of(), refresh_seconds=3600)):
        for scope, row, sealed in old_a + new_a:
            with pytest.raises(KeysDestroyed):
                reader.decrypt_field(a, scope, "selectors", row, sealed)
        with pytest.raises(KeysDestroyed):
            reader.encrypt_field(a, "lake.signals", "selectors", _row(0), T0, b"x")
        assert _opened(reader, b, old_b) == plain
    actions = [action for _at, action, _d in fresh.audit(a)]
    assert actions[0] == "kek_created" and actions[-2:] == ["rotated", "offboarded"]
    assert actions.count("data_key_created") == 2 * len(SCOPES)


def test_rotation_and_offboarding_with_the_local_kms(
    it_settings: Settings, scratch: Scratch, tmp_path: Path
) -> None:
    root = tmp_path / "root.key"
    _exercise(it_settings, scratch, lambda: LocalKms(root))


def test_concurrent_first_use_agrees_on_one_key(
    it_settings: Settings, scratch: Scratch, tmp_path: Path
) -> None:
    tenant = scratch.tenant("keys-race")
    root = tmp_path / "root.key"
    LocalKms(root)
    out: list[bytes] = []
    barrier = threading.Barrier(4)

    def first() -> None:
        keys = TenantKeys(it_settings.stores.postgres_dsn, LocalKms(root))
        barrier.wait()
        out.append(keys.encrypt_field(tenant, "redis", "selectors", _row(1), T0, b"sel-1"))

    threads = [threading.Thread(target=first) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(out) == 4 and len(set(out)) == 1  # one data key, so one ciphertext


def _backend(keys: TenantKeys) -> int:
    conn = keys._reads.conn
    assert conn is not None and not conn.closed
    return conn.info.backend_pid


def test_reads_share_one_kept_connection_and_survive_a_terminated_backend(
    it_settings: Settings, scratch: Scratch, tmp_path: Path
) -> None:
    # Each (tenant, scope) read its keys on a new connection (TLS and SCRAM) at first use and at
    # every refresh: one connection now, and a backend dropped under it (what a restarted
    # server does) costs the next read a reconnect, not a failed seal.
    dsn = it_settings.stores.postgres_dsn
    root = tmp_path / "root.key"
    keys = TenantKeys(dsn, LocalKms(root), refresh_seconds=0.0)  # every use re-reads
    tenants = [scratch.tenant(f"keys-kept-{i}") for i in range(3)]
    sealed = {t: _seal(keys, t, T0) for t in tenants}
    assert keys._reads.opened == 1
    victim = _backend(keys)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (victim,))
    assert not backend_alive(dsn, victim)
    for t in tenants:
        assert _seal(keys, t, T0) == sealed[t]  # the same keys, checked again
    assert keys._reads.opened == 2 and _backend(keys) != victim
    kept = _backend(keys)
    keys.close()
    assert keys._reads.conn is None and not backend_alive(dsn, kept)


def test_a_paused_key_store_bounds_the_read_and_the_grace_keeps_sealing(
    it_settings: Settings, scratch: Scratch, tmp_path: Path
) -> None:
    # A read on the kept connection to a SIGSTOPped Postgres is answered by nobody and the
    # kernel still acknowledges it: without its deadline a refresh held the sealing thread
    # until SIGCONT. Cut after KEPT_TIMEOUT_S, it is an unreachable store: keys read less than
    # the rotation grace ago keep sealing.
    tenant = scratch.tenant("keys-paused")
    clock = [0.0]
    keys = TenantKeys(
        it_settings.stores.postgres_dsn,
        LocalKms(tmp_path / "root.key"),
        refresh_seconds=30,
        rotation_grace_seconds=600,
        clock=lambda: clock[0],
    )
    before = _seal(keys, tenant, T0, n=1)
    clock[0] = 31.0  # past the refresh: the next seal asks the store
    out: list[object] = []
    with paused("postgres", 0.0):
        sealer = threading.Thread(target=lambda: out.append(_seal(keys, tenant, T0, n=1)))
        sealer.start()
        # Not a timing assertion: a bound far beyond the read's deadline.
        sealer.join(KEPT_TIMEOUT_S + 25.0)
        assert not sealer.is_alive(), "a key read waited on the paused Postgres"
    assert out == [before]
    assert keys._reads.conn is None  # the cut connection is not kept
    keys.close()


def test_past_the_refresh_only_a_changed_tenants_keys_are_read_again(
    it_settings: Settings, scratch: Scratch, tmp_path: Path
) -> None:
    # key_epoch and tenant_key_epochs (migration 0010) move with every change of the key tables,
    # made by any process: one read of them a refresh keeps the unchanged tenants' keys, and a
    # rotation or an offboarding made elsewhere is seen past the refresh as before.
    dsn = it_settings.stores.postgres_dsn
    root = tmp_path / "root.key"
    clock = [0.0]
    loads: list[tuple[str, str]] = []

    class Counting(TenantKeys):
        def _load(self, tenant_id: str, scope: str) -> list[tuple[datetime, FieldCipher]]:
            loads.append((tenant_id, scope))
            return super()._load(tenant_id, scope)

    mine = Counting(dsn, LocalKms(root), refresh_seconds=30, clock=lambda: clock[0])
    other = TenantKeys(dsn, LocalKms(root))  # another process
    a, b = scratch.tenant("keys-epoch-a"), scratch.tenant("keys-epoch-b")
    sealed = {t: _seal(mine, t, T0) for t in (a, b)}
    # A tenant's later first keys changed it: its keys read before them are read once more.
    clock[0] = 31.0
    assert {t: _seal(mine, t, T0) for t in (a, b)} == sealed
    del loads[:]
    clock[0] = 62.0
    assert {t: _seal(mine, t, T0) for t in (a, b)} == sealed
    assert loads == []  # found unchanged, not read again
    now = datetime.now(UTC)
    other.rotate(a, now=now)
    later = now + timedelta(seconds=120)
    assert {key_version_of(c) for _s, _r, c in _seal(mine, a, later)} == {1}  # not yet
    clock[0] = 93.0
    assert {key_version_of(c) for _s, _r, c in _seal(mine, a, later)} == {2}  # seen
    assert _seal(mine, b, T0) == sealed[b]
    assert sorted(loads) == sorted((a, scope) for scope in SCOPES)  # a's, not b's
    other.offboard(b, note="test")
    clock[0] = 124.0
    with pytest.raises(KeysDestroyed):
        mine.encrypt_field(b, "redis", "selectors", _row(0), T0, b"x")
    mine.close()
    other.close()


def test_the_key_tables_record_each_change_for_its_tenant(stack: Settings, tmp_path: Path) -> None:
    # The triggers, plain SQL included: a row's change moves the counter and records it for its
    # tenant; a statement that changes no row moves nothing; a TRUNCATE records every tenant ('').
    with fresh_schema(stack.stores.postgres_dsn, "it_keyepoch", 0) as dsn:
        keys = TenantKeys(dsn, LocalKms(tmp_path / "root.key"))
        keys.encrypt_field("tenant-x", "dlq", "value", _row(0), T0, b"x")
        keys.close()
        with psycopg.connect(dsn, autocommit=True) as conn:

            def counter() -> int:
                row = conn.execute("SELECT epoch FROM key_epoch").fetchone()
                assert row is not None
                return int(row[0])

            def epochs() -> dict[str, int]:
                return dict(conn.execute("SELECT tenant_id, epoch FROM tenant_key_epochs"))

            start = counter()
            assert start == 2 and epochs() == {"tenant-x": 2}  # its KEK, then its data key
            conn.execute("UPDATE tenant_data_keys SET created_at = now() WHERE tenant_id = 'x'")
            assert counter() == start
            conn.execute("DELETE FROM tenant_data_keys WHERE tenant_id = 'tenant-x'")
            assert epochs() == {"tenant-x": start + 1}
            conn.execute("TRUNCATE tenant_data_keys, tenant_keks")
            assert epochs()[""] > start + 1


def test_a_database_without_the_key_tables_says_to_run_setup(
    it_settings: Settings, tmp_path: Path
) -> None:
    base = it_settings.stores.postgres_dsn
    schema = f"it_nokeys_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        keys = TenantKeys(in_schema(base, schema), LocalKms(tmp_path / "root.key"))
        with pytest.raises(ConfigError, match="run igflow setup"):
            keys.encrypt_field("tenant-01", "dlq", "value", _row(0), T0, b"x")
        keys.close()
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_the_commands_rotate_list_audit_and_offboard(
    it_settings: Settings, scratch: Scratch, tmp_path: Path
) -> None:
    tenant = scratch.tenant("keys-cli")
    env = env_for(it_settings, IGFLOW_KEYS_ROOT_KEY_FILE=str(tmp_path / "root.key"))
    keys = TenantKeys(it_settings.stores.postgres_dsn, LocalKms(tmp_path / "root.key"))
    sealed = _seal(keys, tenant, T0, n=1)

    def igflow(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "igflow.cli", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        return done.stdout

    rotated = json.loads(igflow("keys", "rotate", "--tenant", tenant))
    assert rotated["kek_version"] == 2 and rotated["rewrapped_data_keys"] == len(SCOPES)
    listed = json.loads(igflow("keys", "list", "--tenant", tenant, "--json"))
    assert sorted((k["scope"], k["version"]) for k in listed) == sorted(
        (s, v) for s in SCOPES for v in (1, 2)
    )
    keys.refresh()
    assert _opened(keys, tenant, sealed) == [b"sel-0"] * len(SCOPES)
    gone = json.loads(igflow("tenants", "offboard", tenant, "--note", "contract ended"))
    assert gone == {
        "tenant_id": tenant,
        "destroyed": {"data_keys": 2 * len(SCOPES), "keks": 1},
        "deactivated": True,
    }
    (entry,) = [e for e in list_tenants(it_settings.stores.postgres_dsn) if e.tenant_id == tenant]
    assert not entry.active
    keys.refresh()
    with pytest.raises(KeysDestroyed):
        _opened(keys, tenant, sealed)
    audit = [json.loads(line) for line in igflow("keys", "audit", "--tenant", tenant).splitlines()]
    assert audit[-1]["action"] == "offboarded" and audit[-1]["note"] == "contract ended"


# ------------------------------------------------------------------------------- AWS KMS


@pytest.fixture(scope="module")
def kms_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's server: a KMS-compatible HTTP endpoint (Encrypt/Decrypt with encryption context)."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def test_rotation_and_offboarding_with_aws_kms(
    it_settings: Settings, scratch: Scratch, kms_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    client = boto3.client("kms", region_name="us-east-1", endpoint_url=kms_server)
    key_id = client.create_key(Description="igflow test root")["KeyMetadata"]["Arn"]
    _exercise(it_settings, scratch, lambda: AwsKms(key_id, "us-east-1", kms_server))
    kms = AwsKms(key_id, "us-east-1", kms_server)
    blob = kms.wrap(bytes(32), {"tenant_id": "a"})
    with pytest.raises(DecryptError):
        kms.unwrap(blob, {"tenant_id": "b"})
