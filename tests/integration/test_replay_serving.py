"""The issue's replay test, on the real local stack, with every store.

A workload with duplicates, invalid and bad records and a drifting tenant runs through the flow
into the lake, Redis, the graph and Postgres. ``igflow replay`` of the same offsets into a
scratch namespace writes scratch Redis keys, graph labels and a Postgres schema: each equals the
original, and the originals are untouched. ``igflow verify`` (the CLI) reports identical digests
for every table that has rows and byte-identical data files; after one row of the scratch copy is
changed through pyiceberg, it reports exactly that mismatch, with the differing row, and exits 1.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import redis
from psycopg import sql
from pyiceberg.expressions import And, EqualTo

from core.catalog import catalog
from core.settings import Settings
from core.store_keys import applied_key, score_key, signals_key
from igflow.workload import SOURCES, WorkloadSpec, tenant_ids
from sinks.graph import GraphWriter
from sinks.lake_tables import QUARANTINE, SCORES, SIGNALS
from tenancy.registry import upsert_tenant
from tests.integration.conftest import finish, igflow, json_lines, produce_workload
from tests.integration.scratch import Scratch

pytestmark = pytest.mark.integration

TENANTS = 4
#: Drift as tests/integration/test_stages.py produces it: 100 s event-time batches, a reference
#: of 2, so the drifting tenant's shift half-way is held in quarantine.
STAGE_ENV = {
    "IGFLOW_DRIFT_BATCH_SIZE": "10000",
    "IGFLOW_DRIFT_BATCH_SECONDS": "100",
    "IGFLOW_DRIFT_REFERENCE_BATCHES": "2",
    "IGFLOW_DRIFT_REFERENCE_VALUES": "0",
    "IGFLOW_DRIFT_KS_ALPHA": "0.0001",
}


@pytest.fixture
def tenants(it_settings: Settings, scratch: Scratch) -> tuple[str, list[str]]:
    prefix = f"r{uuid.uuid4().hex[:8]}"
    ids = tenant_ids(TENANTS, prefix)
    scratch.tenant_prefixes.add(f"{prefix}-")
    for tenant in ids:
        upsert_tenant(it_settings.stores.postgres_dsn, tenant, sources=SOURCES)
    return prefix, ids


def _graph(settings: Settings, label_prefix: str = "") -> GraphWriter:
    return GraphWriter.for_stores(settings.stores, label_prefix=label_prefix)


def _serving(settings: Settings, ids: list[str], names: dict[str, str]) -> dict[str, Any]:
    """What the serving stores hold for ``ids`` under the given names (``{}``: the real ones):
    Redis hashes and stream contents (entry ids are server clock, so fields only), graph counts
    and score nodes, Postgres rows."""
    key_prefix = names.get("redis", "")
    client = redis.Redis.from_url(settings.stores.redis_url, decode_responses=True)
    try:
        hot = {
            t: (
                client.hgetall(score_key(t, prefix=key_prefix)),
                [f for _id, f in client.xrange(signals_key(t, prefix=key_prefix))],
                client.hgetall(applied_key(t, prefix=key_prefix)),
            )
            for t in ids
        }
    finally:
        client.close()
    graph = _graph(settings, names.get("graph", ""))
    tenant_prefix = ids[0].rsplit("-", 1)[0]
    nodes = (graph.counts(tenant_prefix), {t: graph.score(t) for t in ids})
    schema = names.get("postgres", "").removesuffix(".coherence_scores")
    table = (
        sql.Identifier(schema, "coherence_scores") if schema else sql.Identifier("coherence_scores")
    )
    with psycopg.connect(settings.stores.postgres_dsn) as conn:
        rows = conn.execute(
            sql.SQL("SELECT * FROM {} WHERE tenant_id = ANY(%s) ORDER BY tenant_id").format(table),
            (ids,),
        ).fetchall()
    return {"redis": hot, "graph": nodes, "postgres": rows}


def _verify(settings: Settings, against: str) -> tuple[int, str]:
    proc = igflow(settings, "verify", "--against", against)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode in (0, 1), err.decode()[-3000:]
    return proc.returncode, out.decode()


def _per_table(out: str) -> dict[str, tuple[str, str]]:
    """The verify report's per-table lines: table -> (groups "n of m", files "n of m")."""
    lines = out.split("per table", 1)[1].splitlines()[1:]
    parsed: dict[str, tuple[str, str]] = {}
    for line in lines:
        words = line.split()
        if len(words) >= 7 and words[2] == "of" and words[5] == "of":
            parsed[words[0]] = (" ".join(words[1:4]), " ".join(words[4:7]))
    return parsed


def test_replay_into_the_serving_stores_verifies_identical_and_a_changed_row_is_caught(
    it_settings: Settings, scratch: Scratch, tenants: tuple[str, list[str]]
) -> None:
    prefix, ids = tenants
    settings = it_settings.with_changes("stores", sinks="redis,graph,postgres").with_changes(
        "kafka", batch_size=200
    )
    spec = WorkloadSpec(
        tenants=TENANTS,
        count=600,
        duplicates=0.05,
        invalid=0.02,
        bad=3,
        drift_tenant=1,
        seed=23,
        tenant_prefix=prefix,
    )
    produce_workload(settings, spec)
    original = settings.lake.namespace
    into = f"{original}_r"
    taken = f"{original}_t"
    scratch.replay_into(into)
    scratch.replay_into(taken)
    _out, err = finish(igflow(settings, "run", **STAGE_ENV))
    ends = {
        line["kafka_partition"]: line["kafka_offset"]
        for line in json_lines(err)
        if line.get("op") == "source.end"
    }
    assert ends and sum(ends.values()) > 0, "no source.end log lines"
    # The workload did what it should: drift held, invalid and bad records rejected.
    quarantine = catalog(settings).load_table(f"{original}.{QUARANTINE.name}")
    reasons = set(quarantine.scan().to_arrow().column("reason").to_pylist())
    assert {"DRIFT_DETECTED", "FIELD_INVALID", "DECODE_FAILED"} <= reasons, reasons
    before = _serving(settings, ids, {})
    assert all(score and stream for score, stream, _marks in before["redis"].values())
    assert len(before["postgres"]) == TENANTS

    frm = ",".join(f"{p}:0" for p in sorted(ends))
    to = ",".join(f"{p}:{o}" for p, o in sorted(ends.items()))
    out, _err = finish(
        igflow(settings, "replay", "--from", frm, "--to", to, "--into", into, **STAGE_ENV)
    )
    report = json.loads(out.strip().splitlines()[-1])
    names = report["stores"]
    assert names == {
        "redis": f"replay:{into}:",
        "graph": f"replay_{into}_",
        "postgres": f"replay_{into}.coherence_scores",
    }
    assert report["rows"] == sum(ends.values())
    assert set(report["planned_commits"]) >= {SIGNALS.name, SCORES.name, QUARANTINE.name}

    # The scratch stores hold what the originals hold; the originals are untouched.
    assert _serving(settings, ids, names) == before
    assert _serving(settings, ids, {}) == before

    # Every table with rows: identical digests, and byte-identical data files.
    code, out = _verify(settings, into)
    assert code == 0 and "IDENTICAL" in out, out
    print(out.split("per table", 1)[1])  # the measure: shown with pytest -s
    per_table = _per_table(out)
    for name in (SIGNALS.name, SCORES.name, QUARANTINE.name):
        groups, files = per_table[name]
        matching, _of, total = groups.split()
        assert matching == total != "0", f"{name}: {groups}"
        same, _of, count = files.split()
        assert same == count != "0", f"{name}: {files} data files byte-identical"

    # A scratch namespace or scratch stores that hold data are refused.
    proc = igflow(settings, "replay", "--from", frm, "--to", to, "--into", into)
    _o, e = proc.communicate(timeout=120)
    assert proc.returncode == 2 and b"already has tables" in e
    client = redis.Redis.from_url(settings.stores.redis_url)
    client.set(f"replay:{taken}:tenant:x:score", "1")
    try:
        proc = igflow(settings, "replay", "--from", frm, "--to", to, "--into", taken)
        _o, e = proc.communicate(timeout=120)
    finally:
        client.delete(f"replay:{taken}:tenant:x:score")
        client.close()
    assert proc.returncode == 2 and b"already hold data" in e, e.decode()[-2000:]
    assert not catalog(settings).namespace_exists(taken), "a refused replay created tables"

    # Change one row of the scratch signals table: exactly that mismatch, exit 1.
    changed = _change_one_signal(settings, into)
    code, out = _verify(settings, into)
    assert code == 1 and "DIFFERENT" in out, out
    mismatched = [line for line in out.splitlines() if line.endswith(" mismatch")]
    assert len(mismatched) == 1, out
    table, tenant, partition = mismatched[0].split()[:3]
    assert (table, tenant, int(partition)) == (
        SIGNALS.name,
        changed["tenant_id"],
        changed["kafka_partition"],
    )
    removed = [line for line in out.splitlines() if line.startswith("  - only in original:")]
    added = [line for line in out.splitlines() if line.startswith("  + only in other:")]
    assert len(removed) == len(added) == 1, out
    assert f"'signal_id': '{changed['signal_id']}'" in removed[0]
    assert f"'value': {changed['old']!r}" in removed[0]
    assert f"'value': {changed['new']!r}" in added[0]
    assert f"'signal_id': '{changed['signal_id']}'" in added[0]


def _change_one_signal(settings: Settings, namespace: str) -> dict[str, Any]:
    """Overwrite one row of ``namespace``'s signals with a different ``value`` (pyiceberg's
    filtered overwrite: the row's file is rewritten without it, the changed row appended);
    returns what identifies the row, and its old and new value."""
    table = catalog(settings).load_table(f"{namespace}.{SIGNALS.name}")
    data = table.scan().to_arrow()
    row = data.slice(0, 1)
    old = row.column("value")[0].as_py()
    new = 0.123456 if old != 0.123456 else 0.654321
    index = row.schema.get_field_index("value")
    changed = row.set_column(index, row.schema.field(index), pa.array([new], pa.float64()))
    partition, offset = row.column("kafka_partition")[0].as_py(), row.column("kafka_offset")[0]
    table.overwrite(
        changed,
        overwrite_filter=And(
            EqualTo("kafka_partition", partition), EqualTo("kafka_offset", offset.as_py())
        ),
    )
    assert pc.sum(pc.equal(table.scan().to_arrow().column("value"), new)).as_py() >= 1
    return {
        "tenant_id": row.column("tenant_id")[0].as_py(),
        "kafka_partition": partition,
        "signal_id": row.column("signal_id")[0].as_py(),
        "old": old,
        "new": new,
    }
