"""Retention enforced on the local stack (issue 18, point 5).

A flow lands four tenants' signals into the lake, a scratch graph (its own label prefix) and a
scratch Postgres schema (the migrations applied there, so ``retention_runs`` too); tenant-03's
policy keeps data 90 days, the others 365. ``igflow retention`` runs at ``--now`` 200 days
ahead (the validate step refuses event times far from the producer's clock, so the signals
cannot be old: the reference time is moved instead): the dry run changes nothing; apply deletes
tenant-03's rows from every store and nothing else, audits it, and ``retention verify`` proves
nothing past retention remains (and fails at 400 days, when the others are past theirs).
``igflow verify`` counts the removed rows as landed. The flow then resumes exactly once: new
records land once, and a run that re-reads the whole topic lands nothing again (the ledger
survived the delete and the snapshot expiry).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from pyiceberg.exceptions import NoSuchTableError

from core.catalog import catalog
from core.migrations import apply
from core.settings import Settings
from igflow.admin import create_topics
from igflow.producer import produce
from igflow.workload import WorkloadSpec, generate, recent_start, seed_demo_tenants
from sinks.graph import GraphWriter
from tests.conftest import SIGNAL_V1
from tests.integration.conftest import (
    QUICK_IDLE_FLUSH,
    env_for,
    finish,
    igflow,
    json_lines,
    kill,
    produce_workload,
    recent,
    tagged_settings,
)
from tests.integration.scratch import Scratch
from tests.integration.test_pipeline import _v1_id

pytestmark = pytest.mark.integration

SHORT = "tenant-03"  # policies/tenancy.json: standard-90d


@pytest.fixture
def dsn(stack: Settings) -> Iterator[str]:
    """A DSN whose tables (migrations applied, demo tenants seeded) live in a fresh schema."""
    base = stack.stores.postgres_dsn
    schema = f"it_retention_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    sep = "&" if "?" in base else "?"
    scoped = f"{base}{sep}options=-csearch_path%3D{schema}"
    try:
        apply(scoped)
        seed_demo_tenants(scoped, 10)
        yield scoped
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def _signals(settings: Settings) -> list[tuple[str, str, datetime]]:
    try:
        table = catalog(settings).load_table(f"{settings.lake.namespace}.signals")
    except NoSuchTableError:  # a tailing flow that has not made its tables yet: nothing landed
        return []
    rows = table.scan(selected_fields=("tenant_id", "signal_id", "ts")).to_arrow().to_pylist()
    return [(r["tenant_id"], r["signal_id"], r["ts"]) for r in rows]


def _expected(spec: WorkloadSpec, schema_id: int) -> set[tuple[str, str, datetime]]:
    """(tenant, signal id, event time) of the workload's valid records, tenant-03's left out."""
    return {
        (m.record["tenant_id"], m.record["signal_id"], m.record["ts"])
        for m in generate(spec, schema_id, SIGNAL_V1.parsed)
        if m.record is not None and m.record["tenant_id"] != SHORT
    }


def _scores(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT tenant_id FROM coherence_scores")}


def _graph_tenants(writer: GraphWriter) -> Counter[str]:
    rows = writer.read("MATCH (s:Signal) RETURN s.tenant_id AS t, count(s) AS c")
    return Counter({r["t"]: int(r["c"]) for r in rows})


def _retention(settings: Settings, *args: str, **env: str) -> tuple[int, list[dict[str, object]]]:
    proc = igflow(settings, "retention", *args, **env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, 1), err.decode()[-3000:]
    return proc.returncode, list(json_lines(out.decode()))


def test_retention_deletes_past_the_tag_everywhere_audits_and_the_flow_goes_on(
    stack: Settings, scratch: Scratch, dsn: str, tmp_path: Path
) -> None:
    prefix = f"it_ret_{uuid.uuid4().hex[:8]}_"
    scratch.graph_label_prefixes.add(prefix)
    settings = (
        tagged_settings(stack, scratch)
        .with_changes("stores", sinks="graph,postgres", graph_label_prefix=prefix)
        .with_changes("stores", postgres_dsn=dsn)
    )
    create_topics(settings)
    env = {
        "IGFLOW_POSTGRES_DSN": dsn,
        "IGFLOW_STORES_GRAPH_LABEL_PREFIX": prefix,
        "IGFLOW_SCORE_TICK_SECONDS": "0",
        # Expire every snapshot a run may expire (the ledger's lineage is kept).
        "IGFLOW_RETENTION_SNAPSHOT_MAX_AGE_DAYS": "0",
    }
    assert env_for(settings)["IGFLOW_STORES_SINKS"] == "graph,postgres"
    recovery = str(tmp_path / "recovery")
    produce_workload(settings, WorkloadSpec(tenants=4, count=40, seed=18))
    finish(igflow(settings, "run", "-r", recovery, **env))

    before = _signals(settings)
    per_tenant = Counter(t for t, _i, _ts in before)
    assert set(per_tenant) == {"tenant-00", "tenant-01", "tenant-02", SHORT}
    writer = GraphWriter.for_stores(settings.stores)
    assert _graph_tenants(writer) == per_tenant
    assert _scores(dsn) == set(per_tenant)
    future = (datetime.now(UTC) + timedelta(days=200)).isoformat()

    # The dry run: what would go (tenant-03's, in every store), and nothing changes.
    code, lines = _retention(settings, "apply", "--dry-run", "--now", future, **env)
    assert code == 0 and lines[0]["dry_run"] is True
    by_target = {(str(x["store"]), str(x["target"])): x for x in lines[1:]}
    assert by_target[("lake", "signals")]["per_tenant"] == {SHORT: per_tenant[SHORT]}
    assert by_target[("graph", "Signal")]["per_tenant"] == {SHORT: per_tenant[SHORT]}
    assert by_target[("graph", "CoherenceScore")]["per_tenant"] == {SHORT: 1}
    assert by_target[("postgres", "coherence_scores")]["per_tenant"] == {SHORT: 1}
    assert sorted(_signals(settings)) == sorted(before)

    # Apply: tenant-03's rows go from the lake, the graph and Postgres; nothing else does.
    code, lines = _retention(settings, "apply", "--now", future, "--actor", "it", **env)
    assert code == 0
    run_id = lines[0]["run_id"]
    done = {(str(x["store"]), str(x["target"])): x for x in lines[1:]}
    assert done[("lake", "signals")]["deleted"] == per_tenant[SHORT]
    assert done[("lake", "signals")]["snapshot_ids"]
    assert done[("lake", "signals")]["expired_snapshots"]
    assert done[("lake", "scores")]["per_tenant"] == {SHORT: done[("lake", "scores")]["deleted"]}
    assert done[("graph", "Signal")]["deleted"] == per_tenant[SHORT]
    assert done[("postgres", "coherence_scores")]["deleted"] == 1
    after = _signals(settings)
    assert sorted(after) == sorted(x for x in before if x[0] != SHORT)
    assert SHORT not in _graph_tenants(writer) and _graph_tenants(writer) == Counter(
        {t: n for t, n in per_tenant.items() if t != SHORT}
    )
    assert _scores(dsn) == set(per_tenant) - {SHORT}
    scores = catalog(settings).load_table(f"{settings.lake.namespace}.scores").scan().to_arrow()
    assert SHORT not in set(scores.column("tenant_id").to_pylist())

    # Audited, and verifiable: nothing past retention at that time; at 400 days the others are.
    code, audit = _retention(settings, "audit", "--run", str(run_id), **env)
    assert code == 0
    assert {(a["store"], a["target"]) for a in audit} >= {
        ("lake", "signals"),
        ("graph", "Signal"),
        ("postgres", "coherence_scores"),
    }
    assert all(a["actor"] == "it" for a in audit)
    code, lines = _retention(settings, "verify", "--now", future, **env)
    assert code == 0 and lines[-1]["ok"] is True
    later = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    code, lines = _retention(settings, "verify", "--now", later, **env)
    assert code == 1 and int(str(lines[-1]["past_retention"])) > 0

    # igflow verify: history against a scan, the removed rows counted as landed (the history
    # before the delete expired: the scan against a replay is what stays meaningful).
    into = f"{settings.lake.namespace}_replay"
    scratch.replay_into(into)
    finish(igflow(settings, "replay", "--into", into, "--lake-only", **env))
    out, _err = finish(igflow(settings, "verify", "--against", into, **env))
    assert "IDENTICAL" in out
    assert "rows removed by igflow retention" in out

    # The flow resumes exactly once: new records land once each...
    later_start = recent_start(datetime.now(UTC)) + timedelta(hours=1)
    assert produce(settings, WorkloadSpec(tenants=4, count=10, seed=19, start=later_start)).total
    finish(igflow(settings, "run", "-r", recovery, **env))
    resumed = Counter(_signals(settings))
    assert set(resumed.values()) == {1}
    assert len(resumed) == len(after) + 40
    # ...and a run that reads the whole topic again (no recovery store) lands nothing again:
    # not even tenant-03's deleted rows (the ledger survived the delete and the expiry).
    finish(igflow(settings.with_changes("stores", sinks=""), "run", **env))
    assert Counter(_signals(settings)) == resumed


def test_retention_racing_a_running_flow_keeps_it_exactly_once(it_settings: Settings) -> None:
    """``retention apply`` runs again and again while a tailing flow lands two workloads into
    the same tables: the deletes and the flow's appends race for commits. Every record of the
    365-day tenants lands exactly once; tenant-03's are gone after a last run; a bounded run
    that re-reads the whole topic afterwards lands nothing."""
    settings = it_settings
    env = {"IGFLOW_SCORE_TICK_SECONDS": "0", "IGFLOW_RETENTION_SNAPSHOT_MAX_AGE_DAYS": "0"}
    first = WorkloadSpec(tenants=4, count=300, seed=21)
    produce_workload(settings, first)
    flow = igflow(settings, "run", "--tail", **env, **QUICK_IDLE_FLUSH)
    future = (datetime.now(UTC) + timedelta(days=200)).isoformat()
    later_start = recent_start(datetime.now(UTC)) + timedelta(hours=1)
    second = WorkloadSpec(tenants=4, count=300, seed=22, start=later_start)
    schema_id = _v1_id(settings)
    # Both workloads use the same signal ids (at other event times): rows are told by all three.
    wanted = _expected(recent(first), schema_id) | _expected(second, schema_id)
    runs = 0
    deleted = 0
    deadline = time.monotonic() + 240
    produced_second = False
    while time.monotonic() < deadline:
        code, lines = _retention(settings, "apply", "--now", future, **env)
        assert code == 0
        runs += 1
        deleted += sum(int(str(x.get("deleted", 0))) for x in lines[1:])
        if not produced_second:
            assert produce(settings, second).total
            produced_second = True
        landed = {row for row in _signals(settings) if row[0] != SHORT}
        if runs >= 3 and landed == wanted:
            break
    assert flow.poll() is None, "the flow stopped"
    kill(flow)
    _code, _lines = _retention(settings, "apply", "--now", future, **env)
    rows = Counter((t, i, ts) for t, i, ts in _signals(settings))
    assert set(rows.values()) == {1}
    assert set(rows) == wanted
    assert runs >= 3 and deleted > 0
    # Re-read everything: nothing lands again, tenant-03's deleted records included.
    finish(igflow(settings, "run", **env))
    assert Counter(_signals(settings)) == rows
    code, lines = _retention(settings, "verify", "--now", future, **env)
    assert code == 0
