"""The graph sink against the local stack's graph database over Bolt (Neo4j, or the FalkorDB
stand-in with ``IGFLOW_STORES_GRAPH_COMPAT=falkordb``): uniqueness constraints, transactions,
idempotent signals, the seq guard of the score node, exact values, a paused server mid-stream,
the dead-letter path and the Bytewax sink.

The graph is the server's default database; it is shared, so every test writes under its own
tenant prefix (``g-<uuid>-``) and deletes it afterwards. One driver serves the whole session
(:mod:`sinks.graph` caches it per process).
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import bytewax.operators as op
import hypothesis.strategies as st
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from hypothesis import given, settings
from neo4j.exceptions import ConstraintError, Neo4jError

from core.records import Decoded, PolicyTags, Provenance, ScoreChange, Signal, Tagged
from core.retry import RetryPolicy, write_with_retry
from core.settings import Settings
from dev import stack as dev_stack
from dev.config import StackConfig
from sinks.dlq import DeadLetterTarget
from sinks.graph import (
    EDGE_TYPES,
    NODE_LABELS,
    GraphSink,
    GraphWriter,
    epoch_micros,
    signal_key,
    storable,
    transient,
)
from sinks.graph_model import SIGNALS_ROWS_QUERY, signal_row
from sinks.serving import serve, tenant_of
from tests.integration.conftest import bolt_driver, read_topic
from tests.ports import free_port
from tests.runs import random_runs

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TOPIC = "coherence.signals.v1"
Item = Tagged | ScoreChange


def _signal(tenant: str, n: int, *, signal_id: str | None = None, value: float = 0.5) -> Tagged:
    sig = Signal(
        tenant,
        f"s-{n}" if signal_id is None else signal_id,
        "latency",
        value,
        None if n % 2 else 2.0,
        "src",
        T0 + timedelta(seconds=n, microseconds=7),
    )
    decoded = Decoded(sig, Provenance(TOPIC, n % 4, n, 3, f"{n:064x}"))
    tags = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")
    return Tagged(
        decoded, tags, "p" * 64, hashlib.sha256(f"{tenant}|{n}".encode()).hexdigest()[:32]
    )


def _change(tenant: str, seq: int, score: float = 0.8) -> ScoreChange:
    status = "HEALTHY" if score >= 0.75 else "WARN" if score >= 0.5 else "CRITICAL"
    return ScoreChange(
        tenant_id=tenant,
        score=score,
        status=status,
        updated_at=T0 + timedelta(seconds=seq),
        window_count=seq,
        window_weight=float(seq),
        provenance_id=f"prov-{tenant}-{seq}",
        provenance=Provenance(TOPIC, 0, seq, 3, f"{seq:064x}"),
        score_2dp=Decimal(str(round(score, 2))),
        seq=seq,
    )


def _expected(signals: int, tenants: int, scored: int = 0) -> dict[str, int]:
    return {
        "Tenant": tenants,
        "Signal": signals,
        "Provenance": signals,
        "CoherenceScore": scored,
        "EMITS": signals,
        "HAS_PROVENANCE": signals,
        "HAS_SCORE": scored,
    }


@pytest.fixture(scope="module")
def writer(stack: Settings) -> GraphWriter:
    stores = stack.stores
    w = GraphWriter.for_stores(stores)
    w.ensure_schema()
    return w


@pytest.fixture
def prefix(writer: GraphWriter) -> Iterator[str]:
    """This test's tenant prefix; its nodes are deleted afterwards."""
    tag = f"g-{uuid.uuid4().hex[:12]}-"
    yield tag
    writer.delete_tenants(tag)
    assert set(writer.counts(tag).values()) == {0}


def test_schema_creation_is_idempotent(writer: GraphWriter, stack: Settings) -> None:
    assert writer.ensure_schema() == []
    if stack.stores.graph_compat == "falkordb":
        rows = writer.read("CALL db.indexes()")
        indexed = {(r["label"], p) for r in rows for p in r["properties"]}
        wanted = {
            ("Signal", "key"),
            ("Signal", "signal_id"),
            ("Signal", "tenant_id"),
            ("Signal", "ts"),
            ("Provenance", "provenance_id"),
            ("Tenant", "tenant_id"),
            ("CoherenceScore", "tenant_id"),
        }
        assert wanted <= indexed
        return
    rows = writer.read(
        "SHOW CONSTRAINTS YIELD type, labelsOrTypes, properties RETURN type, labelsOrTypes AS l, "
        "properties AS p"
    )
    unique = {(r["l"][0], tuple(r["p"])) for r in rows if r["type"] == "UNIQUENESS"}
    assert {
        ("Signal", ("key",)),
        ("Provenance", ("provenance_id",)),
        ("Tenant", ("tenant_id",)),
        ("CoherenceScore", ("tenant_id",)),
    } <= unique
    rows = writer.read(
        "SHOW INDEXES YIELD name, labelsOrTypes, properties, state "
        "RETURN name, labelsOrTypes AS l, properties AS p, state"
    )
    lookups = {(r["l"][0], tuple(r["p"]), r["state"]) for r in rows if r["l"]}
    assert ("Signal", ("signal_id",), "ONLINE") in lookups
    assert ("Signal", ("tenant_id", "ts"), "ONLINE") in lookups


def test_a_failed_batch_leaves_nothing_behind(
    writer: GraphWriter, prefix: str, stack: Settings
) -> None:
    """A batch is one transaction: when its score statement fails, its signals are rolled back."""
    if stack.stores.graph_compat == "falkordb":
        pytest.skip("FalkorDB acknowledges BEGIN/COMMIT but applies each query on its own")
    bad = dataclasses.replace(_change(f"{prefix}t", 1), provenance_id=["mixed", 1])  # type: ignore[arg-type]
    with pytest.raises(Neo4jError):
        writer.write([_signal(f"{prefix}t", 1), bad])
    assert set(writer.counts(prefix).values()) == {0}
    writer.write([_signal(f"{prefix}t", 1), _change(f"{prefix}t", 1)])
    assert writer.counts(prefix) == _expected(1, 1, scored=1)


def test_the_key_is_unique_whatever_writes_it(writer: GraphWriter, stack: Settings) -> None:
    """The constraint, not only the writer's MERGE, keeps a signal key unique."""
    if stack.stores.graph_compat == "falkordb":
        pytest.skip("FalkorDB has no uniqueness constraints")
    tenant = f"g-{uuid.uuid4().hex[:12]}-u"
    item = _signal(tenant, 1)
    stores = stack.stores
    try:
        writer.write([item])
        with (
            bolt_driver(stores) as driver,
            pytest.raises(ConstraintError),
        ):
            driver.execute_query(
                "CREATE (:Signal {key: $key, tenant_id: $t})", key=signal_key(item), t=tenant
            )
    finally:
        writer.delete_tenants(tenant)


def test_signals_land_once_however_often_they_are_written(writer: GraphWriter, prefix: str) -> None:
    tenants = [f"{prefix}{i}" for i in range(3)]
    first = [_signal(t, n) for t in tenants for n in range(20)]
    writer.write([*first, *first[:5]])  # duplicates within the batch, too
    assert writer.counts(prefix) == _expected(60, 3)

    writer.write(first)
    assert writer.counts(prefix) == _expected(60, 3)

    overlapping = [_signal(t, n) for t in tenants for n in range(10, 30)]
    writer.write(overlapping)
    assert writer.counts(prefix) == _expected(90, 3)
    assert writer.counts()["Signal"] >= 90  # every tenant's


def _graph_of(writer: GraphWriter, prefix: str) -> list[tuple[object, ...]]:
    """Every signal of the prefix's tenants with its tenant and provenances, as stored."""
    rows = writer.read(
        "MATCH (t:Tenant)-[:EMITS]->(s:Signal) WHERE t.tenant_id STARTS WITH $prefix "
        "OPTIONAL MATCH (s)-[:HAS_PROVENANCE]->(p:Provenance) "
        "WITH t, s, p ORDER BY p.provenance_id "
        "RETURN t.tenant_id AS t, properties(s) AS s, collect(properties(p)) AS p",
        prefix=prefix,
    )
    return sorted((r["t"], json.dumps(r["s"], sort_keys=True), json.dumps(r["p"])) for r in rows)


def test_the_batch_query_stores_what_merging_every_row_stores(
    writer: GraphWriter, prefix: str, stack: Settings
) -> None:
    # SIGNALS_QUERY creates the edges of the signals it creates instead of merging them: the
    # graph must be the one the row-by-row MERGEs of SIGNALS_ROWS_QUERY build, batch by batch,
    # with a key twice in a batch (first properties win), a second provenance for a stored
    # signal, and replays.
    if stack.stores.graph_compat == "falkordb":
        pytest.skip("FalkorDB is written with SIGNALS_ROWS_QUERY itself")
    tenants = [f"{prefix}{i}" for i in range(3)]
    first = [_signal(t, n) for t in tenants for n in range(6)]
    again = dataclasses.replace(first[0], provenance_id="another-provenance")
    # The key of first[8] with another value and provenance: first[8]'s value is kept.
    changed = dataclasses.replace(_signal(tenants[1], 2, value=0.25), provenance_id="changed")
    batches = [
        [*first, first[2], changed, again],
        [again, first[4], *(_signal(t, n) for t in tenants for n in range(4, 9))],
        [dataclasses.replace(first[5], provenance_id="third-provenance"), *first[:3]],
    ]
    driver = bolt_driver(stack.stores)
    graphs = []
    try:
        for use_writer in (False, True):
            for batch in batches:
                if use_writer:
                    writer.write(batch)
                    continue
                rows: dict[tuple[str, str], dict[str, object]] = {}
                for row in map(signal_row, batch):  # as the writer: the first of a pair wins
                    rows.setdefault((row["key"], row["provenance_id"]), row)
                with driver.session() as session:
                    session.execute_write(
                        lambda tx, rows=rows: tx.run(
                            SIGNALS_ROWS_QUERY, rows=[*rows.values()]
                        ).consume()
                    )
            graphs.append((_graph_of(writer, prefix), writer.counts(prefix)))
            writer.delete_tenants(prefix)
    finally:
        driver.close()
    assert graphs[0][1] == graphs[1][1]
    assert graphs[0][0] == graphs[1][0]
    assert graphs[1][1] == {**_expected(27, 3), "Provenance": 30, "HAS_PROVENANCE": 30}


def test_a_signal_node_holds_the_contract(writer: GraphWriter, prefix: str) -> None:
    item = _signal(f"{prefix}a", 1)
    writer.write([item])
    rows = writer.read(
        "MATCH (t:Tenant)-[:EMITS]->(s:Signal {key: $key})-[:HAS_PROVENANCE]->(p:Provenance) "
        "RETURN t.tenant_id AS tenant, properties(s) AS s, properties(p) AS p",
        key=signal_key(item),
    )
    assert len(rows) == 1
    assert rows[0]["tenant"] == f"{prefix}a"
    assert rows[0]["s"] == {
        "key": signal_key(item),
        "signal_id": "s-1",
        "tenant_id": f"{prefix}a",
        "type": "latency",
        "value": 0.5,
        "weight": 1.0,  # null in the record: the contract's default
        "source": "src",
        "ts": epoch_micros(T0) + 1_000_007,
        "ts_iso": "2026-01-01T00:00:01.000007+00:00",
    }
    assert rows[0]["p"] == {
        "provenance_id": item.provenance_id,
        "tenant_id": f"{prefix}a",
        "policy_version": "p" * 64,
        "schema_version": 3,
        "input_hash": f"{1:064x}",
        "kafka_topic": TOPIC,
        "kafka_partition": 1,
        "kafka_offset": 1,
        "purpose": "benchmarking",
        "retention": "standard-365d",
        "license": "Restricted-TOS",
        "residency": "US",
    }


def test_the_key_is_the_documented_hash() -> None:
    item = _signal("t", 3)
    canonical = json.dumps(["t", "src", "s-3", epoch_micros(item.signal.ts)], separators=(",", ":"))
    assert signal_key(item) == hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize(
    "text",
    [
        "it's",
        'say "hi"',
        "back\\slash\\",
        "\\'",
        "line\nbreak\r\n\ttab\b\f",
        "ctl \x01\x1f\x7f",
        "ünï € 🎉 \u2028",
        "x'}) MATCH (n) DETACH DELETE n //",
        "$rows CYPHER a=1",
        "",
    ],
)
def test_strings_and_floats_come_back_exactly(writer: GraphWriter, prefix: str, text: str) -> None:
    # Exact through Bolt parameters (FalkorDB's own would break on a quote and round floats).
    item = _signal(f"{prefix}{text}", 1, signal_id=text, value=0.1234567890123456)
    writer.write([item])
    rows = writer.read(
        "MATCH (s:Signal {key: $key}) RETURN s.signal_id AS id, s.tenant_id AS t, s.value AS v",
        key=signal_key(item),
    )
    assert rows == [{"id": text, "t": f"{prefix}{text}", "v": 0.1234567890123456}]


@settings(max_examples=40, deadline=None)
@given(
    # No surrogates: they are not text (no UTF-8 encoding; Avro never decodes one).
    text=st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=30),
    value=st.floats(0.0, 1.0),
)
def test_any_text_and_value_round_trip(writer: GraphWriter, text: str, value: float) -> None:
    prefix = f"g-{uuid.uuid4().hex[:12]}-"
    item = _signal(f"{prefix}{text}", 1, signal_id=text, value=value)
    try:
        writer.write([item])
        rows = writer.read(
            "MATCH (s:Signal {key: $key}) RETURN s.signal_id AS id, s.value AS v",
            key=signal_key(item),
        )
        assert rows == [{"id": text, "v": value}]
    finally:
        writer.delete_tenants(prefix)


def test_a_large_batch_is_split_and_lands_whole(writer: GraphWriter, prefix: str) -> None:
    # About 1.6 MB of parameters in one transaction (FalkorDB gets requests of at most 64 KB).
    tenants = [f"{prefix}{i}" for i in range(10)]
    items: list[Item] = [_signal(t, n) for t in tenants for n in range(200)]
    items += [_change(t, 1) for t in tenants]
    writer.write(items)
    assert writer.counts(prefix) == _expected(2000, 10, scored=10)


def _rows_of(prefix: str) -> int:
    """Objects the collector tracks that are a written row of the prefix's tenants: a signal's
    (``{signal, provenance(s)}``) or a score's (``{tenant_id, seq, score}``)."""
    count = 0
    for obj in gc.get_objects():
        if type(obj) is dict and str(obj.get("tenant_id", "")).startswith(prefix):
            count += "seq" in obj and "score" in obj
        elif type(obj) is dict and isinstance(held := obj.get("signal"), dict):
            count += str(held.get("tenant_id", "")).startswith(prefix)
    return count


def test_a_write_leaves_no_row_to_the_collector(writer: GraphWriter, prefix: str) -> None:
    # Regression (session 26): the driver keeps a transaction's parameters in a reference cycle
    # that only a full collection frees; with the rows in them, a flow with every store held
    # ~1 KB a signal until then. The rows are gone when `write` returns, whatever the driver
    # keeps.
    tenants = [f"{prefix}{i}" for i in range(3)]
    items: list[Item] = [_signal(t, n) for t in tenants for n in range(50)]
    items += [_change(t, 1) for t in tenants]
    gc.collect()
    gc.disable()
    try:
        writer.write(items)
        left = _rows_of(prefix)
    finally:
        gc.enable()
    assert writer.counts(prefix) == _expected(150, 3, scored=3)
    assert left == 0


def test_a_nul_character_is_refused(writer: GraphWriter, prefix: str) -> None:
    item = _signal(f"{prefix}a", 1, signal_id="bad\x00id")
    assert not storable(item)
    assert storable(_signal(f"{prefix}a", 1))
    with pytest.raises(ValueError, match="NUL"):
        writer.write([item])
    assert writer.counts(prefix)["Signal"] == 0


def test_the_score_keeps_the_highest_seq(writer: GraphWriter, prefix: str) -> None:
    tenant = f"{prefix}a"
    for seq in range(1, 6):
        writer.write([_change(tenant, seq, seq / 10)])
    writer.write([_change(tenant, 3, 0.99)])  # an older change, late
    score = writer.score(tenant)
    assert score is not None
    assert (score["seq"], score["score"], score["status"]) == (5, 0.5, "WARN")

    # Within one batch, the highest seq wins whatever the order.
    writer.write([_change(tenant, 7, 0.9), _change(tenant, 6, 0.1), _signal(tenant, 1)])
    assert writer.score(tenant) == {
        "tenant_id": tenant,
        "score": 0.9,
        "score_2dp": "0.9",
        "status": "HEALTHY",
        "updated_at": epoch_micros(T0) + 7_000_000,
        "updated_at_iso": "2026-01-01T00:00:07.000000+00:00",
        "seq": 7,
        "provenance_id": f"prov-{tenant}-7",
    }
    assert writer.counts(prefix) == _expected(1, 1, scored=1)


def _graph_pid() -> int:
    cfg = StackConfig.from_env(os.environ)
    pid = dev_stack.our_pid(cfg, dev_stack.select([cfg.graph], cfg)[0])
    assert pid is not None, f"the stack's {cfg.graph} is not running"
    return pid


@pytest.mark.slow
def test_a_paused_server_mid_stream_loses_and_duplicates_nothing(
    stack: Settings, prefix: str
) -> None:
    stores = stack.stores
    # Short read deadline: writes in flight during the pause fail and are retried.
    writer = GraphWriter.for_stores(stores, timeout_s=2.0)
    tenants = [f"{prefix}{i}" for i in range(3)]
    batches: list[list[Item]] = []
    for i in range(50):
        batch: list[Item] = []
        for tenant in tenants:
            batch += [_signal(tenant, 2 * i), _signal(tenant, 2 * i + 1), _change(tenant, i + 1)]
        batch += [_signal(tenants[0], 2 * i)]  # an at-least-once repeat
        batches.append(batch)

    failures: list[BaseException] = []
    dead: list[Sequence[Item]] = []
    errors: list[BaseException] = []
    written = 0

    def write(batch: Sequence[Item]) -> None:
        try:
            writer.write(batch)
        except Exception as exc:
            failures.append(exc)
            raise

    def stream() -> None:
        nonlocal written
        try:
            for batch in batches:
                assert write_with_retry(
                    "graph",
                    batch,
                    write,
                    transient=transient,
                    dead_letter=lambda b, exc: dead.append(b),
                    policy=RetryPolicy(attempts=30, base_seconds=0.2, cap_seconds=1.0),
                )
                written += 1
                time.sleep(0.05)
        except BaseException as exc:
            errors.append(exc)

    pid = _graph_pid()
    worker = threading.Thread(target=stream)
    try:
        worker.start()
        while written < 10 and worker.is_alive():
            time.sleep(0.01)
        os.kill(pid, signal.SIGSTOP)
        at_pause = written
        time.sleep(10)
    finally:
        os.kill(pid, signal.SIGCONT)
        worker.join(timeout=180)
    assert not worker.is_alive()
    assert errors == []
    assert 10 <= at_pause < 50, "the pause came mid-stream …"
    assert failures, "… and the writer felt it"
    assert all(transient(f) for f in failures)
    assert dead == []
    assert written == 50
    assert writer.counts(prefix) == _expected(300, 3, scored=3)
    for tenant in tenants:
        score = writer.score(tenant)
        assert score is not None
        assert (score["seq"], score["provenance_id"]) == (50, f"prov-{tenant}-50")


def test_a_batch_that_keeps_failing_is_dead_lettered() -> None:
    # Nothing listens there.
    writer = GraphWriter(f"bolt://127.0.0.1:{free_port()}", "neo4j", "unused-password")
    batch: list[Item] = [_signal("g-nowhere", 1), _change("g-nowhere", 1)]
    attempts: list[BaseException] = []
    dead: list[tuple[Sequence[Item], BaseException]] = []

    def write(b: Sequence[Item]) -> None:
        try:
            writer.write(b)
        except Exception as exc:
            attempts.append(exc)
            raise

    ok = write_with_retry(
        "graph",
        batch,
        write,
        transient=transient,
        dead_letter=lambda b, exc: dead.append((b, exc)),
        policy=RetryPolicy(attempts=3, base_seconds=0.01, cap_seconds=0.01),
        sleep=lambda s: None,
    )
    assert not ok
    assert len(attempts) == 3
    assert all(transient(exc) for exc in attempts)
    assert len(dead) == 1
    assert list(dead[0][0]) == batch
    assert dead[0][1] is attempts[-1]


def test_the_bytewax_sink_writes_every_chunk(
    stack: Settings, writer: GraphWriter, prefix: str
) -> None:
    settings = stack.with_changes("stores", batch_size=3)
    a, b = f"{prefix}a", f"{prefix}b"
    items: list[Item] = []
    for i in range(10):
        items += [_signal(a, i), _change(a, i + 1, i / 10), _signal(b, i)]
    items += items[:7]  # an at-least-once redelivery
    flow = Dataflow("graph_sink_test")
    serve(
        "graph",
        random_runs("runs", op.input("in", flow, TestingSource(items, batch_size=4)), tenant_of, 4),
        GraphSink(settings.stores, DeadLetterTarget.of(settings.kafka)),
    )
    run_main(flow)
    assert writer.counts(prefix) == _expected(20, 2, scored=1)
    score = writer.score(a)
    assert score is not None
    assert (score["seq"], score["score"]) == (10, 0.9)


def test_counts_cover_every_label_and_type(writer: GraphWriter, prefix: str) -> None:
    assert tuple(writer.counts(prefix)) == (*NODE_LABELS, *EDGE_TYPES)


def test_the_sink_dead_letters_what_the_graph_cannot_hold(
    it_settings: Settings, writer: GraphWriter, prefix: str
) -> None:
    bad = _signal(f"{prefix}a", 2, signal_id="nul\x00id")
    items: list[Item] = [_signal(f"{prefix}a", 1), bad, _change(f"{prefix}a", 1)]
    flow = Dataflow("graph_sink_dlq_test")
    serve(
        "graph",
        random_runs("runs", op.input("in", flow, TestingSource(items)), tenant_of, 1),
        GraphSink(it_settings.stores, DeadLetterTarget.of(it_settings.kafka)),
    )
    run_main(flow)
    assert writer.counts(prefix) == _expected(1, 1, scored=1)
    [message] = read_topic(it_settings, it_settings.kafka.dlq_topic)
    headers = dict(message.headers())
    assert headers["igflow.sink"] == b"graph"
    assert headers["igflow.reason"] == b"SINK_UNAVAILABLE"
    assert headers["igflow.source.offset"] == b"2"
