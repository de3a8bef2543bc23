"""Redaction on the local stack (issue 18, point 4): a tenant with rules in
``policies/redaction.json`` has its signals redacted in the stream, before any store: its raw
signal ids, sources and types reach neither the lake, Redis, the graph, Postgres nor the DLQ; the
hashes are its own key's; each landed row's provenance id is the manifest naming the rules. A
tenant without rules, in the same run, lands as before (the control: the checks can fail). A
replay of the run lands byte-identical files."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from core.catalog import catalog
from core.resources import policies_dir
from core.settings import Settings
from igflow.producer import produce
from igflow.workload import SOURCES, WorkloadSpec, generate, tenant_ids
from operators.redact import RedactionPolicy, keyed_hash, mask, tenant_mac
from operators.tenancy import provenance_id
from sinks.graph import GraphWriter
from sinks.lake_tables import QUARANTINE, SCORES
from tenancy.keys import tenant_keys
from tenancy.registry import upsert_tenant
from tests.integration.conftest import (
    SIGNAL_V1,
    finish,
    igflow,
    json_lines,
    lake_rows,
    read_topic,
    recent,
)
from tests.integration.scratch import Scratch

pytestmark = pytest.mark.integration

COUNT = 300
RULES = {"signal_id": "hash", "source": "hash", "type": "mask"}


@pytest.fixture
def tenants(it_settings: Settings, scratch: Scratch) -> tuple[str, list[str]]:
    prefix = f"rd{uuid.uuid4().hex[:8]}"
    ids = tenant_ids(2, prefix)
    scratch.tenant_prefixes.add(f"{prefix}-")
    for tenant in ids:
        upsert_tenant(it_settings.stores.postgres_dsn, tenant, sources=SOURCES)
    return prefix, ids


def _policies(tmp_path: Path, redacted: str) -> Path:
    folder = Path(shutil.copytree(policies_dir(), tmp_path / "policies"))
    document = {"redaction": {"tenants": {redacted: RULES}}}
    (folder / "redaction.json").write_text(json.dumps(document))
    return folder


def _redis_dump(settings: Settings, tenant: str) -> str:
    """Every key and value of the tenant's key space, as text."""
    client = redis.Redis.from_url(settings.stores.redis_url, decode_responses=True)
    parts: list[str] = []
    try:
        for key in client.scan_iter(match=f"tenant:{tenant}:*"):
            kind = client.type(key)
            value: Any
            if kind == "hash":
                value = client.hgetall(key)
            elif kind == "stream":
                value = client.xrange(key)
            elif kind == "string":
                value = client.get(key)
            elif kind == "zset":
                value = client.zrange(key, 0, -1, withscores=True)
            elif kind == "set":
                value = sorted(client.smembers(key))
            else:
                value = client.lrange(key, 0, -1)
            parts.append(f"{key}={value!r}")
    finally:
        client.close()
    assert parts, f"nothing in Redis for {tenant}"
    return "\n".join(parts)


def _graph_dump(settings: Settings, tenant: str) -> str:
    rows = GraphWriter.for_stores(settings.stores).read(
        "MATCH (n) WHERE n.tenant_id = $t RETURN properties(n) AS p", t=tenant
    )
    assert rows, f"nothing in the graph for {tenant}"
    return "\n".join(repr(r["p"]) for r in rows)


def _postgres_dump(settings: Settings, tenant: str) -> str:
    with psycopg.connect(settings.stores.postgres_dsn) as conn:
        rows = conn.execute(
            "SELECT row_to_json(c)::text FROM coherence_scores c WHERE tenant_id = %s", (tenant,)
        ).fetchall()
    assert rows, f"no score row for {tenant}"
    return "\n".join(r[0] for r in rows)


def _dlq_dump(settings: Settings) -> str:
    messages = read_topic(settings, settings.kafka.dlq_topic, timeout_s=10)
    return "\n".join(repr((m.key(), m.value(), m.headers())) for m in messages)


def _table_dump(settings: Settings, name: str) -> str:
    table = catalog(settings).load_table(f"{settings.lake.namespace}.{name}")
    return repr(table.scan().to_arrow().to_pylist())


def test_a_tenant_with_rules_never_lands_its_raw_values(
    it_settings: Settings, tenants: tuple[str, list[str]], tmp_path: Path
) -> None:
    _prefix, (redacted, plain) = tenants
    settings = it_settings.with_changes("stores", sinks="redis,graph,postgres")
    folder = _policies(tmp_path, redacted)
    spec = recent(
        WorkloadSpec(tenants=2, count=COUNT, duplicates=0.05, seed=11, tenant_prefix=_prefix)
    )
    assert produce(settings, spec).total > 0  # (this spec: the records below are these)
    sent = [m.record for m in generate(spec, 1, SIGNAL_V1.parsed) if m.record is not None]
    env = {"IGFLOW_TENANCY_POLICIES_DIR": str(folder), "IGFLOW_SCORE_TICK_SECONDS": "0"}
    _out, err = finish(igflow(settings, "run", **env))

    rows = lake_rows(settings)
    mine = [r for r in rows if r["tenant_id"] == redacted]
    theirs = [r for r in rows if r["tenant_id"] == plain]
    assert len(mine) == len(theirs) == COUNT  # nothing lost, duplicates dropped

    # The raw values of the redacted tenant, nowhere.
    secrets = {r["signal_id"] for r in sent if r["tenant_id"] == redacted}
    assert len(secrets) == COUNT
    dumps = {
        "lake.signals": repr(mine),
        "lake.scores": _table_dump(settings, SCORES.name),
        "lake.quarantine": _table_dump(settings, QUARANTINE.name),
        "redis": _redis_dump(settings, redacted),
        "graph": _graph_dump(settings, redacted),
        "postgres": _postgres_dump(settings, redacted),
        "dlq": _dlq_dump(settings),
    }
    for store, text in dumps.items():
        leaked = [s for s in secrets if s in text]
        assert leaked == [], f"{store} holds raw signal ids of {redacted}: {leaked[:3]}"
    for store in ("lake.signals", "redis", "graph"):
        for source in SOURCES:
            assert repr(source) not in dumps[store] and f"'{source}" not in dumps[store], store
    # The control: the other tenant's raw values are where they were (so the check can fail).
    assert {r["signal_id"] for r in theirs} == {
        r["signal_id"] for r in sent if r["tenant_id"] == plain
    }
    assert any(s in _redis_dump(settings, plain) for s in {r["signal_id"] for r in theirs})
    assert any(s in _graph_dump(settings, plain) for s in {r["signal_id"] for r in theirs})

    # The hashes are the tenant's own key's (scope "redaction", in Postgres, as the flow's),
    # by event time; types masked.
    mac = tenant_mac(lambda: tenant_keys(settings))
    by_hash = {
        keyed_hash(mac, redacted, r["ts"], "signal_id", r["signal_id"]): r
        for r in sent
        if r["tenant_id"] == redacted
    }
    some = sent[0]
    assert keyed_hash(mac, plain, some["ts"], "source", some["source"]) != keyed_hash(
        mac, redacted, some["ts"], "source", some["source"]
    )  # two tenants' keys: the same value hashes apart
    for row in mine:
        original = by_hash[row["signal_id"]]
        assert row["source"] == keyed_hash(mac, redacted, row["ts"], "source", original["source"])
        assert row["type"] == mask(original["type"])
        assert row["value"] == original["value"]

    # The provenance id names the rules and the redaction policy's version; the other tenant's
    # id is the plain manifest's.
    policy = RedactionPolicy.load(folder)
    for row, rules in ((mine[0], policy.rules(redacted)), (theirs[0], ())):
        stamped = {
            "tenant_id": row["tenant_id"],
            "policy_version": row["policy_version"],
            "schema_version": row["schema_version"],
            "input_hash": row["input_hash"],
            "kafka_topic": row["kafka_topic"],
            "kafka_partition": row["kafka_partition"],
            "kafka_offset": row["kafka_offset"],
        }
        if rules:
            stamped["redaction"] = {"policy": policy.version, "rules": dict(rules)}
        assert row["provenance_id"] == provenance_id(stamped)

    # A replay redacts alike: the lake's files are byte-identical (igflow verify).
    ends = {
        line["kafka_partition"]: line["kafka_offset"]
        for line in json_lines(err)
        if line.get("op") == "source.end"
    }
    into = f"{settings.lake.namespace}_replay"
    frm = ",".join(f"{p}:0" for p in sorted(ends))
    to = ",".join(f"{p}:{o}" for p, o in sorted(ends.items()))
    finish(
        igflow(settings, "replay", "--from", frm, "--to", to, "--into", into, "--lake-only", **env)
    )
    out, _err = finish(igflow(settings, "verify", "--against", into, **env))
    assert "IDENTICAL" in out
