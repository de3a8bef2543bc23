"""The Postgres caches (``tenancy/cached_table.py``) on the real server: their refresher thread
and their one kept connection.

Each cache (the switch board here; the tenant and source registries share the code) opens one
connection on its first read and keeps it for every refresh, which a thread of its own runs. A
backend terminated under it (``pg_terminate_backend``: what a restarted server does to every
client) costs the next refresh one reconnect, not a stale copy; a SIGSTOPped server never makes
an ask wait (the last copy is answered, a warning logged once, the age metric grows) and the
copy is refreshed after SIGCONT; the thread and the connection end when the cache goes away or
the interpreter exits, without a ``ResourceWarning``.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY

from core.settings import Settings
from core.switches import SwitchKind
from tenancy.cached_table import KEPT_TIMEOUT_S, CachedTable
from tenancy.registry import PostgresTenants
from tenancy.switches import PostgresSwitches, set_switch
from tests.integration.conftest import backend_alive, eventually, fresh_schema, paused

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dsn(stack: Settings) -> Iterator[str]:
    """A DSN whose tables (migrations applied, demo tenants seeded) live in a fresh schema."""
    with fresh_schema(stack.stores.postgres_dsn, "it_cached", 3) as scoped:
        yield scoped


def _backend_pid(board: PostgresSwitches) -> int:
    conn = board._table._state.link.conn
    assert conn is not None and not conn.closed
    return conn.info.backend_pid


def test_refreshes_share_one_connection_and_see_every_change(dsn: str) -> None:
    board = PostgresSwitches(dsn, refresh_seconds=0.05)
    assert not board.is_off(SwitchKind.SOURCE, "feed-a")
    pid = _backend_pid(board)
    for enabled in (False, True, False):
        set_switch(dsn, "source", "feed-a", enabled=enabled, actor="test")
        # autocommit: no transaction left open between reads, so each refresh sees the change
        assert eventually(lambda e=enabled: board.is_off(SwitchKind.SOURCE, "feed-a") is not e)
    assert board._table.connections_opened == 1
    assert _backend_pid(board) == pid


def test_the_kept_connection_gives_up_on_a_silent_peer(dsn: str) -> None:
    # A partitioned server: libpq's keepalives and TCP user timeout end a read on a connection
    # kept for hours after seconds, not the kernel's ~15 min of retransmissions.
    board = PostgresSwitches(dsn, refresh_seconds=3600)  # no refresh while we look
    assert not board.is_off(SwitchKind.SOURCE, "feed-a")
    conn = board._table._state.link.conn
    assert conn is not None
    params = conn.info.get_parameters()
    assert params["tcp_user_timeout"] == str(KEPT_TIMEOUT_S * 1000)
    assert params["keepalives"] == "1"
    assert int(params["keepalives_idle"]) <= KEPT_TIMEOUT_S


def test_a_terminated_backend_costs_one_reconnect_not_a_stale_copy(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    board = PostgresSwitches(dsn, refresh_seconds=0.1)
    tenants = PostgresTenants(dsn, refresh_seconds=0.1)
    assert not board.is_off(SwitchKind.TENANT, "tenant-01")
    assert tenants.get("tenant-01") is not None
    victims = [_backend_pid(board), tenants._table._state.link.conn.info.backend_pid]  # type: ignore[union-attr]
    with psycopg.connect(dsn, autocommit=True) as admin:
        for pid in victims:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    for pid in victims:
        assert not backend_alive(dsn, pid)
    set_switch(dsn, "tenant", "tenant-01", enabled=False, actor="test")
    with caplog.at_level("WARNING", logger="tenancy.cached_table"):
        # the new state, read on a new connection
        assert eventually(lambda: board.is_off(SwitchKind.TENANT, "tenant-01"))
        assert eventually(lambda: tenants._table.connections_opened == 2)
        assert tenants.get("tenant-01") is not None
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
    assert board._table.connections_opened == 2
    assert _backend_pid(board) not in victims


def test_a_refresh_that_cannot_reconnect_keeps_the_copy_and_recovers(dsn: str) -> None:
    board = PostgresSwitches(dsn, refresh_seconds=0.1)
    set_switch(dsn, "source", "feed-b", enabled=False, actor="test")
    assert board.is_off(SwitchKind.SOURCE, "feed-b")
    # The kept connection gone and the database unreachable: the last copy stays.
    link = board._table._state.link
    link.dsn = "postgresql://igflow:igflow@127.0.0.1:1/igflow?connect_timeout=1"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (_backend_pid(board),))
    assert eventually(lambda: board._table._state.failures > 0)
    assert board.is_off(SwitchKind.SOURCE, "feed-b")
    assert link.conn is None  # nothing half-open kept
    link.dsn = dsn  # reachable again: the next refresh reconnects
    set_switch(dsn, "source", "feed-b", enabled=True, actor="test")
    assert eventually(lambda: not board.is_off(SwitchKind.SOURCE, "feed-b"))


def test_the_connection_and_thread_end_when_the_cache_goes(dsn: str) -> None:
    board = PostgresSwitches(dsn, refresh_seconds=0.05)
    board.off()
    pid = _backend_pid(board)
    refresher = board._table.refresher
    assert refresher is not None and refresher.is_alive()
    del board
    gc.collect()
    assert not refresher.is_alive()  # joined by the finalizer
    assert not backend_alive(dsn, pid)


def test_a_paused_server_never_holds_an_ask_and_the_copy_recovers(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    board = PostgresSwitches(dsn, refresh_seconds=0.2)
    assert not board.is_off(SwitchKind.SOURCE, "feed-p")  # the first load, synchronous
    answers: list[bool] = []

    def ask_past_refreshes() -> None:
        until = time.monotonic() + 1.0  # five refresh intervals
        while time.monotonic() < until:
            answers.append(board.is_off(SwitchKind.SOURCE, "feed-p"))
            time.sleep(0.01)

    with caplog.at_level("WARNING", logger="tenancy.cached_table"):
        with paused("postgres", 0.0):
            asker = threading.Thread(target=ask_past_refreshes, daemon=True)
            asker.start()
            # Not a timing assertion: a bound far beyond the asks' one second, which an ask
            # that waits on the paused server (a refresh on the asking thread) never meets.
            asker.join(30.0)
            assert not asker.is_alive(), "an ask waited on the paused Postgres"
            assert answers and not any(answers)  # the last copy, every time
            # The hung refresh is cut at its deadline, logged once, and the copy ages.
            assert eventually(lambda: "switch board refresh failed" in caplog.text, 20.0)
            age = REGISTRY.get_sample_value("igflow_cache_age_seconds", {"cache": "switches"})
            assert age is not None and age >= KEPT_TIMEOUT_S
            assert board._table.age_seconds >= KEPT_TIMEOUT_S
        assert caplog.text.count("switch board refresh failed") == 1
        # Resumed: the next refresh reads the change made meanwhile.
        set_switch(dsn, "source", "feed-p", enabled=False, actor="test")
        assert eventually(lambda: board.is_off(SwitchKind.SOURCE, "feed-p"), 30.0)
        assert board._table.age_seconds < KEPT_TIMEOUT_S
        assert eventually(lambda: "switch board refreshed again" in caplog.text)
    board._table.close()
    refresher = board._table.refresher
    assert refresher is not None and not refresher.is_alive()


def test_no_resource_warning_or_open_connection_at_exit(dsn: str) -> None:
    script = (
        "import sys\n"
        "from core.switches import SwitchKind\n"
        "from tenancy.switches import PostgresSwitches\n"
        "board = PostgresSwitches(sys.argv[1], refresh_seconds=0.01)\n"
        "board.is_off(SwitchKind.SOURCE, 'x'); board.is_off(SwitchKind.SOURCE, 'x')\n"
        "print(board._table._state.link.conn.info.backend_pid)\n"
        "import time; time.sleep(0.2)  # refreshes under way at exit\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "always::ResourceWarning", "-c", script, dsn],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "ResourceWarning" not in done.stderr, done.stderr
    assert "did not stop" not in done.stderr, done.stderr
    assert not backend_alive(dsn, int(done.stdout.strip()))


def test_close_stops_the_refresher_and_leaves_no_thread(dsn: str) -> None:
    board = PostgresSwitches(dsn, refresh_seconds=0.01)
    board.off()
    refresher = board._table.refresher
    assert refresher is not None and refresher.name == "igflow-cache-switches"
    pid = _backend_pid(board)
    board._table.close()
    assert not refresher.is_alive()
    assert refresher not in threading.enumerate()
    assert board.off() == frozenset()  # still answers, from the last copy
    assert not backend_alive(dsn, pid)


def test_a_copy_the_loader_refuses_is_a_failed_refresh_not_a_dead_thread(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    refuse = threading.Event()

    def load(conn: psycopg.Connection[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        rows = conn.execute("SELECT kind, name FROM switches").fetchall()
        if refuse.is_set():
            msg = "a row this engine cannot read"
            raise ValueError(msg)
        return rows

    table = CachedTable("test cache", "switches", load, dsn, 0.05)
    first = table.current()
    with caplog.at_level("WARNING", logger="tenancy.cached_table"):
        refuse.set()
        assert eventually(lambda: "test cache refresh failed" in caplog.text)
        assert "ValueError: a row this engine cannot read" in caplog.text
        assert table.current() is first
        refuse.clear()
        assert eventually(lambda: "test cache refreshed again" in caplog.text)
    refresher = table.refresher
    assert refresher is not None and refresher.is_alive()
    table.close()
    assert not refresher.is_alive()
