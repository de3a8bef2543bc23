"""The tenant registry on the local Postgres: migrations, the cached directory, the CLI.

Every test works in a scratch schema of its own (the DSN's ``search_path``), dropped afterwards,
so the real ``public`` tables are never touched.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from core.canary import CANARY_SOURCE
from core.errors import ConfigError
from core.migrations import apply, discover
from core.settings import Settings
from igflow.workload import seed_demo_tenants, tenant_ids
from tenancy.registry import (
    PostgresTenants,
    TenantEntry,
    list_tenants,
    remove_tenant,
    upsert_tenant,
)
from tests.integration.conftest import REPO, env_for, eventually

pytestmark = pytest.mark.integration


def _in_schema(dsn: str, schema: str) -> str:
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="module")
def pg() -> Settings:
    """Settings of the local stack (started if it is not up); only its Postgres is used, so these
    tests need no ``igflow setup``."""
    subprocess.run([sys.executable, "-m", "dev", "start"], cwd=REPO, check=True)
    return Settings.load()


@pytest.fixture
def scratch(pg: Settings) -> Iterator[str]:
    """A DSN whose tables live in a fresh schema, dropped after the test."""
    base = pg.stores.postgres_dsn
    schema = f"it_tenants_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield _in_schema(base, schema)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def _ledger(dsn: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY 1")
        return [(v, n, c) for v, n, c in rows]


@pytest.fixture
def migration_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """An importable package of our own migrations: its dotted name and folder."""
    name = f"it_migrations_{uuid.uuid4().hex[:10]}"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text("", encoding="utf-8")
    (folder / "0001_things.sql").write_text("CREATE TABLE things (id INT);\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name, folder


def test_the_project_migrations_apply_once(scratch: str) -> None:
    labels = [m.label for m in discover()]
    assert labels[:2] == ["0001_tenant_registry", "0002_coherence_scores"]
    assert apply(scratch) == labels
    assert apply(scratch) == []
    assert _ledger(scratch) == [(m.version, m.name, m.checksum) for m in discover()]
    assert list_tenants(scratch) == []


def test_two_concurrent_runs_apply_once(scratch: str) -> None:
    barrier = threading.Barrier(4)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(apply(scratch))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    labels = [m.label for m in discover()]
    assert sorted(results) == [[], [], [], labels]
    assert len(_ledger(scratch)) == len(labels)


def test_a_changed_migration_is_refused(scratch: str, migration_package: tuple[str, Path]) -> None:
    package, folder = migration_package
    assert apply(scratch, package) == ["0001_things"]
    (folder / "0001_things.sql").write_text("CREATE TABLE things (id BIGINT);\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="0001_things changed after it was applied"):
        apply(scratch, package)


def test_new_migrations_apply_in_order_and_all_or_nothing(
    scratch: str, migration_package: tuple[str, Path]
) -> None:
    package, folder = migration_package
    assert apply(scratch, package) == ["0001_things"]
    (folder / "0002_more.sql").write_text(
        "ALTER TABLE things ADD COLUMN name TEXT;\nINSERT INTO things VALUES (1, 'a');\n",
        encoding="utf-8",
    )
    (folder / "0003_broken.sql").write_text("ALTER TABLE nowhere ADD x INT;\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="0003_broken failed"):
        apply(scratch, package)
    assert [v for v, _, _ in _ledger(scratch)] == [1]  # 0002 rolled back with 0003
    (folder / "0003_broken.sql").unlink()
    assert apply(scratch, package) == ["0002_more"]
    # a file that sorts before an applied one is refused
    (folder / "0000_early.sql").write_text("SELECT 1;\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="0000_early is new but 0002 is already applied"):
        apply(scratch, package)


def test_a_misnamed_migration_file_is_refused(migration_package: tuple[str, Path]) -> None:
    package, folder = migration_package
    (folder / "2_oops.sql").write_text("SELECT 1;\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"not named NNNN_name\.sql"):
        discover(package)


def test_admin_functions(scratch: str) -> None:
    apply(scratch)
    assert seed_demo_tenants(scratch, 3) == tenant_ids(3)
    assert upsert_tenant(scratch, "tenant-01", active=False) == TenantEntry("tenant-01", False)
    # seeding again adds what is missing and overwrites nothing
    assert seed_demo_tenants(scratch, 4) == ["tenant-03"]
    entries = {e.tenant_id: e for e in list_tenants(scratch)}
    assert list(entries) == tenant_ids(4)
    assert entries["tenant-01"] == TenantEntry("tenant-01", False, None)
    # The demo's sources, and the probe's canaries (igflow probe).
    assert entries["tenant-00"].sources == frozenset(
        {"sensor-a", "sensor-b", "feed-c", CANARY_SOURCE}
    )
    assert remove_tenant(scratch, "tenant-03")
    assert not remove_tenant(scratch, "tenant-03")
    with pytest.raises(ConfigError, match="blank"):
        upsert_tenant(scratch, "  ")


def test_the_directory_sees_changes_after_its_refresh_interval(
    scratch: str, caplog: pytest.LogCaptureFixture
) -> None:
    apply(scratch)
    upsert_tenant(scratch, "tenant-a", ["sensor-a"])
    tenants = PostgresTenants(scratch, refresh_seconds=0.5)
    assert tenants.get("tenant-a") == TenantEntry("tenant-a", True, frozenset({"sensor-a"}))
    upsert_tenant(scratch, "tenant-b")
    upsert_tenant(scratch, "tenant-a", active=False)
    assert tenants.get("tenant-b") is None  # the cached copy, until the interval has passed
    assert eventually(lambda: tenants.get("tenant-b") is not None)
    assert tenants.get("tenant-a") == TenantEntry("tenant-a", False, None)

    # A refresh that fails keeps the last good copy.
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute("DROP TABLE tenants")
    with caplog.at_level(logging.WARNING, logger="tenancy.cached_table"):
        assert eventually(lambda: "tenant registry refresh failed" in caplog.text)
        assert tenants.get("tenant-b") == TenantEntry("tenant-b", True, None)


def test_the_directory_connects_lazily_and_fails_clearly(scratch: str) -> None:
    nowhere = PostgresTenants(
        "postgresql://igflow:igflow@127.0.0.1:1/igflow"
    )  # connects to nothing
    with pytest.raises(ConfigError, match="tenant registry unavailable"):
        nowhere.get("tenant-00")
    unmigrated = PostgresTenants(scratch)
    with pytest.raises(ConfigError, match="run igflow setup"):
        unmigrated.get("tenant-00")


def _igflow(dsn: str, settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "igflow.cli", "tenants", *args],
        cwd=REPO,
        env=env_for(settings, IGFLOW_POSTGRES_DSN=dsn),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli(scratch: str, pg: Settings) -> None:
    failed = _igflow(scratch, pg, "list")
    assert failed.returncode == 2
    assert "run igflow setup" in failed.stderr
    apply(scratch)

    added = _igflow(scratch, pg, "add", "tenant-x", "--source", "feed-c", "--source", "s-2")
    assert added.returncode == 0, added.stderr
    assert "tenant-x" in added.stdout
    assert _igflow(scratch, pg, "add", "tenant-y", "--inactive").returncode == 0
    seeded = _igflow(scratch, pg, "seed", "--count", "2")
    assert json.loads(seeded.stdout) == {"registered": ["tenant-00", "tenant-01"]}

    listed = _igflow(scratch, pg, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["tenant_id"]: r for r in json.loads(listed.stdout)}
    assert rows["tenant-x"] == {
        "tenant_id": "tenant-x",
        "active": True,
        "sources": ["feed-c", "s-2"],
    }
    assert rows["tenant-y"] == {"tenant_id": "tenant-y", "active": False, "sources": None}
    table = _igflow(scratch, pg, "list").stdout
    assert "tenant-x" in table
    assert "4 tenant(s)" in table

    assert _igflow(scratch, pg, "remove", "tenant-x").returncode == 0
    assert _igflow(scratch, pg, "remove", "tenant-x").returncode == 1
    assert "tenant-x" not in {e.tenant_id for e in list_tenants(scratch)}
