"""Sealed fields on the real stack (issue 16, point 2): the flow runs with ``seal.enabled``, v2
signals carrying selectors, invalid records of known and unknown tenants, and a PSI partner.

- No store holds a sensitive field in the clear: every Parquet data file of the namespace (raw
  bytes, and every value once decompressed), the tenants' Redis values, their graph nodes'
  properties, their Postgres rows and every DLQ message are scanned for the workload's
  selectors (the same scan finds them in the signal topic, which holds them as produced).
- The analyst's helper opens the sealed columns to exactly what was produced and matched.
- A corpus of misuses (wrong tenant, swapped rows, swapped columns, replayed) opens 0 times.
- A replay of the lake is IDENTICAL (sealing is deterministic).
- Offboarding one tenant makes its sealed fields unreadable in the lake and the DLQ; the other
  tenants' still open.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from core.catalog import catalog
from core.contracts import signal_contracts
from core.envelope import DecryptError
from core.records import Decoded, PolicyTags, Provenance, RawRecord, Signal, Tagged
from core.sealing import (
    DLQ_SEALED_HEADER,
    SCOPE_DECONFLICTION,
    SCOPE_DLQ,
    SCOPE_QUARANTINE,
    SEALED_TEXT_PREFIX,
    element_column,
    is_sealed,
    is_sealed_text,
    kafka_row,
    keyholder,
    window_row,
)
from core.settings import Settings
from igflow.admin import create_topics
from igflow.dlq_reader import open_dead_letter, sealed_binding
from igflow.lake_reader import open_sealed
from igflow.producer import produce
from igflow.quarantine import QuarantineError, opened_payloads
from igflow.workload import SOURCES, WorkloadSpec, generate
from sinks.dlq import DeadLetterTarget
from tenancy.keys import KeysDestroyed
from tenancy.registry import upsert_tenant
from tenancy.sealing import sealer_of
from tests.integration.conftest import (
    bolt_driver,
    env_for,
    finish,
    igflow,
    json_lines,
    read_topic,
    recent,
    tagged_settings,
    tagged_topics,
)
from tests.integration.scratch import Scratch
from tests.integration.test_psi_cli import serving
from tests.needles import found
from tests.unit.test_psi_commands import write_csv
from tests.unit.test_sealing import cross_tenant_attempts

pytestmark = pytest.mark.integration

WINDOW = 300
TOPIC = "coherence.signals.v1"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
PARTNER = [f"sel-{i:05d}" for i in range(0, 10_000, 2)]


def _needles(spec: WorkloadSpec) -> set[bytes]:
    """Every selector the workload sends (each is a sensitive field's plaintext)."""
    out: set[bytes] = set()
    for m in generate(spec, 2, signal_contracts()[1].parsed):
        if m.record is not None:
            out |= {s.encode() for s in m.record.get("selectors") or ()}
    return out


def _values(table: pa.Table) -> Iterable[bytes]:
    """Every value of a decompressed Parquet table, as bytes."""
    for column in table.columns:
        for value in column.to_pylist():
            if isinstance(value, bytes):
                yield value
            elif value is not None:
                yield json.dumps(value, default=str).encode()


def _parquet_blobs(settings: Settings) -> list[bytes]:
    blobs: list[bytes] = []
    cat = catalog(settings)
    for ident in cat.list_tables(settings.lake.namespace):
        table = cat.load_table(ident)
        for task in table.scan().plan_files():
            path = task.file.file_path.removeprefix("file://")
            blobs.append(Path(path).read_bytes())  # raw (compressed) bytes
            blobs.extend(_values(pq.read_table(path)))  # and every value, decompressed
    assert blobs, "no data files"
    return blobs


def _redis_blobs(settings: Settings, prefix: str) -> list[bytes]:
    client = redis.Redis.from_url(settings.stores.redis_url)
    blobs: list[bytes] = []
    try:
        for key in client.scan_iter(match=f"tenant:{prefix}*", count=1000):
            kind = client.type(key)
            if kind == b"hash":
                blobs += [k + b"=" + v for k, v in client.hgetall(key).items()]
            elif kind == b"stream":
                for _id, fields in client.xrange(key):
                    blobs += [k + b"=" + v for k, v in fields.items()]
            elif kind == b"string":
                blobs.append(client.get(key) or b"")
            else:
                blobs.append(json.dumps([kind.decode(), key.decode()]).encode())
    finally:
        client.close()
    assert blobs, "no Redis values"
    return blobs


def _graph_blobs(settings: Settings, prefix: str) -> list[bytes]:
    stores = settings.stores
    query = (
        "MATCH (t:Tenant) WHERE t.tenant_id STARTS WITH $p "
        "OPTIONAL MATCH (t)-[*1..2]->(n) RETURN properties(t) AS t, collect(properties(n)) AS ns"
    )
    with bolt_driver(stores) as d:
        records, _summary, _keys = d.execute_query(query, p=prefix)
    blobs = [json.dumps([r["t"], r["ns"]], default=str).encode() for r in records]
    assert blobs, "no graph nodes"
    return blobs


def _postgres_blobs(settings: Settings, prefix: str) -> list[bytes]:
    with psycopg.connect(settings.stores.postgres_dsn) as conn:
        rows = conn.execute(
            "SELECT row_to_json(c)::text FROM coherence_scores c WHERE tenant_id LIKE %s"
            " UNION ALL SELECT row_to_json(a)::text FROM key_audit a WHERE tenant_id LIKE %s",
            (prefix + "%", prefix + "%"),
        ).fetchall()
    blobs = [r[0].encode() for r in rows]
    assert blobs, "no Postgres rows"
    return blobs


def _sealed_dlq(messages: list[Any]) -> list[tuple[str, str, str, str, bytes]]:
    """Each sealed DLQ message's binding (its headers name it) and value."""
    out = []
    for m in messages:
        binding = sealed_binding(m.key(), m.headers())
        if binding is None:
            continue
        headers = {k: (v or b"").decode() for k, v in m.headers() or []}
        holder = keyholder((m.key() or b"").decode(), headers["igflow.reason"])
        where = kafka_row(
            headers["igflow.source.topic"],
            int(headers["igflow.source.partition"]),
            int(headers["igflow.source.offset"]),
        )
        assert binding == (holder, SCOPE_DLQ, "value", where) and is_sealed(m.value())
        out.append((*binding, m.value()))
    return out


def test_sealed_fields_hold_no_plaintext_open_with_the_key_and_shred_on_offboarding(
    stack: Settings, scratch: Scratch, tmp_path: Path
) -> None:
    prefix = f"seal{uuid.uuid4().hex[:6]}"
    scratch.tenant_prefixes.add(prefix)
    settings = tagged_settings(stack, scratch).with_changes("stores", sinks="redis,graph,postgres")
    create_topics(settings)
    spec = dataclasses.replace(
        recent(WorkloadSpec(tenants=3, count=600, seed=61, invalid=0.06)),
        selectors=True,
        tenant_prefix=prefix,
    )
    for i in range(spec.tenants):
        upsert_tenant(settings.stores.postgres_dsn, f"{prefix}-{i:02d}", SOURCES)
    produce(settings, spec, schema_version=2)
    needles = _needles(spec)
    assert len(needles) > 100
    # The scan finds them where they are in the clear: the signal topic, as produced.
    source = [m.value() for m in read_topic(settings, settings.kafka.topic)]
    assert found(source, needles) == needles

    csv = write_csv(tmp_path / "partner.csv", ["selector"], [[s] for s in PARTNER])
    env = env_for(settings)
    seal = {"IGFLOW_PSI_WINDOW_SECONDS": str(WINDOW)}  # sealing is on by default
    into = f"{settings.lake.namespace}_replay"
    scratch.replay_into(into)
    with serving(tmp_path / "psi.log", env, "--csv", str(csv), "--partner", "partner") as started:
        seal["IGFLOW_PSI_SERVER_URL"] = started["url"]
        finish(igflow(settings, "run", **seal))
        # Sealing is deterministic: a replay lands byte-identical files.
        finish(igflow(settings, "replay", "--into", into, "--lake-only", **seal))
    out, _err = finish(igflow(settings, "verify", "--against", into, **seal))
    assert "IDENTICAL" in out, out

    # 1. No plaintext of a sensitive field in any store.
    dlq = read_topic(settings, settings.kafka.dlq_topic)
    stores = {
        "parquet": _parquet_blobs(settings),
        "redis": _redis_blobs(settings, prefix),
        "graph": _graph_blobs(settings, prefix),
        "postgres": _postgres_blobs(settings, prefix),
        "dlq": [
            b"".join([m.value() or b"", *(v or b"" for _k, v in m.headers() or [])]) for m in dlq
        ],
    }
    assert {name: found(blobs, needles) for name, blobs in stores.items()} == {
        name: set() for name in stores
    }

    # 2. The helper opens the sealed columns to what was produced and matched.
    sealer = sealer_of(settings)
    cat = catalog(settings)
    quarantine = cat.load_table(f"{settings.lake.namespace}.quarantine").scan().to_arrow()
    deconfliction = cat.load_table(f"{settings.lake.namespace}.deconfliction").scan().to_arrow()
    assert quarantine.num_rows > 10 and deconfliction.num_rows > 3
    assert all(is_sealed(p) for p in quarantine.column("payload").to_pylist())
    produced = {
        (m.topic(), m.partition(), m.offset()): m.value()
        for m in read_topic(settings, settings.kafka.topic)
    }
    opened_q = open_sealed(quarantine, "quarantine", sealer).to_pylist()
    assert all(
        r["payload"] == produced[(r["kafka_topic"], r["kafka_partition"], r["kafka_offset"])]
        for r in opened_q
    )
    matched = [m for row in deconfliction.column("matched").to_pylist() for m in row]
    assert matched and all(is_sealed_text(m) for m in matched)
    opened_d = open_sealed(deconfliction, "deconfliction", sealer).to_pylist()
    assert all(
        set(r["matched"]) <= set(PARTNER) and len(r["matched"]) == r["count"] for r in opened_d
    )
    sealed_dlq = _sealed_dlq(dlq)
    assert len(sealed_dlq) == quarantine.num_rows  # every reject carried a tenant
    for holder, scope, column, row, value in sealed_dlq:
        assert sealer.open(holder, scope, column, row, value) in produced.values()
    opened_dlq = {
        (m.topic(), m.partition(), m.offset()): open_dead_letter(
            sealer, m.key(), m.value(), m.headers()
        )
        for m in dlq
    }
    assert all(v in produced.values() for v in opened_dlq.values())

    # 3. Misuses of the real keys open nothing.
    corpus = (
        [
            (
                keyholder(r["tenant_id"], r["reason"]) or "",
                SCOPE_QUARANTINE,
                "payload",
                kafka_row(r["kafka_topic"], r["kafka_partition"], r["kafka_offset"]),
                r["payload"],
            )
            for r in quarantine.to_pylist()
        ]
        + [
            (
                r["tenant_id"],
                SCOPE_DECONFLICTION,
                element_column("matched", i),
                window_row(r["window_start"]),
                _raw_text(m),
            )
            for r in deconfliction.to_pylist()
            for i, m in enumerate(r["matched"])
        ]
        + sealed_dlq
    )
    # A few values of each (keyholder, store): misuses of each against every other place. A
    # tenant without a key in a scope costs a key-table read per attempt, so not all of them.
    sample: dict[tuple[str, str, str], list[tuple[str, str, str, str, bytes]]] = {}
    for entry in corpus:
        group = sample.setdefault((entry[0], entry[1], entry[2].split("[")[0]), [])
        if len(group) < 3:
            group.append(entry)
    attempts = cross_tenant_attempts([e for group in sample.values() for e in group])
    assert {k for k, _ in attempts} == {
        "wrong tenant",
        "swapped rows",
        "swapped columns",
        "replayed",
    }
    opened = 0
    for _kind, (tenant, scope, column, row, value) in attempts:
        try:
            sealer.open(tenant, scope, column, row, value)
        except (DecryptError, KeysDestroyed):
            continue
        opened += 1
    assert opened == 0, f"{opened} of {len(attempts)} misuses opened"

    # 4. Offboarding shreds one tenant's sealed fields everywhere; the others' still open.
    gone = f"{prefix}-00"
    finish(igflow(settings, "tenants", "offboard", gone, "--note", "sealing test"))
    after = sealer_of(settings)
    shredded = open_sealed(quarantine, "quarantine", after, on_error="null").to_pylist()
    assert {r["tenant_id"] for r in shredded if r["payload"] is None} == {gone}
    assert any(r["payload"] is not None for r in shredded)
    for holder, scope, column, row, value in sealed_dlq:
        if holder == gone:
            with pytest.raises(KeysDestroyed):
                after.open(holder, scope, column, row, value)
        else:
            after.open(holder, scope, column, row, value)
    # The CLI shows an operator the originals, and says which were shredded.
    shown = list(
        json_lines(finish(igflow(settings, "dlq", "show", "--json", "--timeout", "30"))[0])
    )
    assert len(shown) == len(dlq)
    gone_rows = {(h, r) for h, _s, _c, r, _v in sealed_dlq if h == gone}
    assert gone_rows
    for entry in shown:
        if (entry["sealed_tenant"], entry["sealed_row"]) in gone_rows:
            assert entry["value"] is None and entry["status"] == "shredded"
        else:
            assert entry["status"] in {"opened", "plain"}
            assert base64.b64decode(entry["value"]) in produced.values()
    rows_gone = [r for r in deconfliction.to_pylist() if r["tenant_id"] == gone and r["matched"]]
    assert rows_gone
    opened_gone = open_sealed(
        pa.Table.from_pylist(rows_gone, deconfliction.schema),
        "deconfliction",
        after,
        on_error="null",
    )
    assert opened_gone.column("matched").to_pylist() == [None] * len(rows_gone)


def _raw_text(text: str) -> bytes:
    """The ciphertext inside a sealed text element (what a copied element carries)."""
    return base64.b64decode(text.removeprefix(SEALED_TEXT_PREFIX))


def test_a_release_opens_sealed_payloads_before_re_sending_them(
    stack: Settings, scratch: Scratch
) -> None:
    """``igflow quarantine release`` and the switch release re-send ``opened_payloads``: the
    bytes that were read, whether the row was sealed or landed before sealing was on."""
    tenant = scratch.tenant("seal-release")
    sealer = sealer_of(stack)
    ts = datetime(2026, 3, 1, tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    originals = []
    for i in range(4):
        original = b"\x00\x00\x00\x00\x02" + f"{tenant}|sel-secret-{i}".encode()
        where = kafka_row("coherence.signals.v1", 0, i)
        sealed = sealer.seal(tenant, SCOPE_QUARANTINE, "payload", where, ts, original)
        assert sealed is not None and is_sealed(sealed)
        rows.append(
            {
                "tenant_id": tenant,
                "reason": "SOURCE_DISABLED",
                "kafka_topic": "coherence.signals.v1",
                "kafka_partition": 0,
                "kafka_offset": i,
                "payload": sealed if i % 2 == 0 else original,  # older rows: never sealed
            }
        )
        originals.append(original)
    assert opened_payloads(stack, rows) == originals
    swapped = [dict(rows[0], payload=rows[2]["payload"]), *rows[1:]]
    with pytest.raises(QuarantineError, match="does not open"):
        opened_payloads(stack, swapped)


def test_a_serving_stores_dead_letters_are_sealed(stack: Settings, scratch: Scratch) -> None:
    """A batch a serving store could not write goes to the DLQ as JSON (``SINK_UNAVAILABLE``):
    with a sealer, sealed for its tenant (the item holds the record's bytes and selectors)."""
    settings = tagged_topics(stack, scratch)
    tenant = scratch.tenant("seal-dead")
    secret = f"sel-secret-{uuid.uuid4().hex[:8]}"
    raw = RawRecord(TOPIC, 1, 7, tenant.encode(), b"\x00\x00\x00\x00\x02" + secret.encode())
    signal = Signal(tenant, "s-7", "latency", 0.5, None, "src", T0, (secret,))
    item = Tagged(
        Decoded(signal, Provenance(TOPIC, 1, 7, 2, "h" * 64), raw=raw),
        PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US"),
        "p" * 64,
        "q" * 32,
    )
    target = DeadLetterTarget.of(settings.kafka, sealer_of(settings))
    target.for_sink("redis")([item], ConnectionError("redis is down"))
    (msg,) = read_topic(settings, settings.kafka.dlq_topic)
    headers = dict(msg.headers())
    assert headers[DLQ_SEALED_HEADER] == b"dlq/redis"
    assert is_sealed(msg.value()) and secret.encode() not in msg.value()
    where = f"{kafka_row(TOPIC, 1, 7)}/Tagged"
    opened = json.loads(sealer_of(settings).open(tenant, SCOPE_DLQ, "redis", where, msg.value()))
    assert opened["decoded"]["signal"]["selectors"] == [secret]
