"""The Redis hot store against the real server of the local stack: guards, TTLs, stream cap,
events published once per applied change, the Bytewax sink, and a paused server mid-stream.

Every test uses its own tenant prefix (db 0 is shared) and deletes its keys afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any

import bytewax.operators as op
import pytest
import redis
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

import sinks.redis as redis_sink
from core.records import Decoded, PolicyTags, Provenance, ScoreChange, Signal, Tagged
from core.retry import RetryPolicy, write_with_retry
from core.settings import Settings
from core.store_keys import applied_key, events_channel, score_key, signals_key
from dev import stack as dev_stack
from dev.config import StackConfig
from sinks.dlq import DeadLetterTarget
from sinks.redis import RedisSink, RedisWriter, transient
from sinks.serving import serve, tenant_of
from tests.runs import random_runs

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TOPIC = "coherence.signals.v1"
TTL = 3600.0


def _change(tenant: str, seq: int, score: float = 0.8, offset: int | None = None) -> ScoreChange:
    status = "HEALTHY" if score >= 0.75 else "WARN" if score >= 0.5 else "CRITICAL"
    provenance = Provenance(TOPIC, 0, seq if offset is None else offset, 1, f"{seq:064x}")
    return ScoreChange(
        tenant_id=tenant,
        score=score,
        status=status,
        updated_at=T0 + timedelta(seconds=seq),
        window_count=seq,
        window_weight=float(seq),
        provenance_id=f"prov-{tenant}-{seq}",
        provenance=provenance,
        score_2dp=Decimal(str(round(score, 2))),
        seq=seq,
    )


def _signal(
    tenant: str, offset: int, partition: int = 0, retention: str = "standard-365d"
) -> Tagged:
    signal_id = f"s-{partition}-{offset}"
    value = (offset % 100) / 100
    weight = None if offset % 2 else 2.0
    sig = Signal(tenant, signal_id, "latency", value, weight, "src", T0 + timedelta(seconds=offset))
    decoded = Decoded(sig, Provenance(TOPIC, partition, offset, 1, f"{offset:064x}"))
    tags = PolicyTags("benchmarking", retention, "Restricted-TOS", "US")
    return Tagged(decoded, tags, "p" * 64, f"prov-{tenant}-{signal_id}")


class Events:
    """What is published on the channels of the tenants under one prefix (a pattern
    subscription, confirmed before the constructor returns, so nothing later is missed)."""

    def __init__(self, url: str, prefix: str) -> None:
        self._client = redis.Redis.from_url(url, decode_responses=True)
        self._pubsub = self._client.pubsub()
        self._pubsub.psubscribe(events_channel(f"{prefix}*"))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            msg = self._pubsub.get_message(timeout=0.5)
            if msg is not None and msg["type"] == "psubscribe":
                return
        self.close()
        pytest.fail("no psubscribe confirmation")

    def drain(self, quiet: float = 0.3) -> list[tuple[str, dict[str, Any]]]:
        """(channel, event) of every message until none arrives for ``quiet`` seconds."""
        out: list[tuple[str, dict[str, Any]]] = []
        while True:
            msg = self._pubsub.get_message(timeout=quiet)
            if msg is None:
                return out
            if msg["type"] == "pmessage":
                out.append((msg["channel"], json.loads(msg["data"])))

    def close(self) -> None:
        self._pubsub.close()
        self._client.close()

    def __enter__(self) -> Events:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@pytest.fixture
def url(stack: Settings) -> str:
    return stack.stores.redis_url


@pytest.fixture
def client(url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(url, decode_responses=True)
    yield c
    c.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    """This test's tenant prefix; its keys are deleted afterwards."""
    tag = f"t-{uuid.uuid4().hex[:12]}"
    yield tag
    keys = list(client.scan_iter(match=f"tenant:{tag}*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def writer(url: str) -> Iterator[RedisWriter]:
    w = RedisWriter(url, stream_max=1000, ttl_seconds=TTL)
    yield w
    w.close()


def _entries(client: redis.Redis, tenant: str) -> list[dict[str, str]]:
    entries: list[tuple[str, dict[str, str]]] = client.xrange(signals_key(tenant))  # type: ignore[assignment]
    return [fields for _id, fields in entries]


def test_score_changes_land_and_a_replayed_batch_changes_and_publishes_nothing(
    url: str, client: redis.Redis, prefix: str, writer: RedisWriter
) -> None:
    a, b = f"{prefix}-a", f"{prefix}-b"
    batch = [_change(a, 1, 0.9), _change(b, 1, 0.3), _change(a, 2, 0.6), _change(a, 3, 0.1 + 0.2)]
    with Events(url, prefix) as events:
        writer.write(batch)
        published = events.drain()
        stored = {t: client.hgetall(score_key(t)) for t in (a, b)}
        writer.write(batch)
        writer.write(batch[2:])
        assert events.drain() == []
    assert {t: client.hgetall(score_key(t)) for t in (a, b)} == stored

    assert stored[a] == {
        "score": "0.30000000000000004",  # the double, not a rounding of it
        "score_2dp": "0.3",
        "status": "CRITICAL",
        "updated_at": "2026-01-01T00:00:03+00:00",
        "seq": "3",
        "provenance_id": f"prov-{a}-3",
        "provenance": json.dumps(
            {
                "topic": TOPIC,
                "partition": 0,
                "offset": 3,
                "schema_version": 1,
                "input_hash": f"{3:064x}",
            },
            separators=(",", ":"),
        ),
    }
    assert stored[b]["seq"] == "1"
    assert stored[b]["status"] == "CRITICAL"

    assert [(ch, e["seq"]) for ch, e in published] == [
        (events_channel(a), 1),
        (events_channel(b), 1),
        (events_channel(a), 2),
        (events_channel(a), 3),
    ]
    assert published[-1][1] == {
        "kind": "score",
        "tenantId": a,
        "score": 0.30000000000000004,
        "status": "CRITICAL",
        "updatedAt": "2026-01-01T00:00:03+00:00",
        "seq": 3,
    }
    for tenant in (a, b):
        assert TTL - 10 < client.pttl(score_key(tenant)) / 1000 <= TTL


def test_an_older_or_equal_seq_never_overwrites_a_newer_one(
    url: str, client: redis.Redis, prefix: str, writer: RedisWriter
) -> None:
    tenant = f"{prefix}-a"
    writer.write([_change(tenant, 5, 0.9)])
    with Events(url, prefix) as events:
        writer.write([_change(tenant, 4, 0.1)])
        writer.write([_change(tenant, 5, 0.2)])  # same number, other value: still the first
        writer.write([_change(tenant, 3, 0.1), _change(tenant, 6, 0.7), _change(tenant, 2, 0.1)])
        published = events.drain()
    stored = client.hgetall(score_key(tenant))
    assert (stored["seq"], stored["score"], stored["status"]) == ("6", "0.7", "WARN")
    assert [e["seq"] for _ch, e in published] == [6]


def test_signals_land_once_across_repeated_and_overlapping_batches(
    url: str, client: redis.Redis, prefix: str, writer: RedisWriter
) -> None:
    tenant = f"{prefix}-a"
    first = [_signal(tenant, o, retention="standard-90d") for o in range(10)]
    second = [_signal(tenant, o, retention="standard-90d") for o in range(5, 15)]
    other_partition = [_signal(tenant, o, partition=1, retention="standard-90d") for o in range(3)]
    with Events(url, prefix) as events:
        writer.write(first)
        writer.write(first)
        writer.write(second + other_partition)
        writer.write(first + other_partition)
        published = events.drain()

    expected = [f"s-0-{o}" for o in range(15)] + [f"s-1-{o}" for o in range(3)]
    entries = _entries(client, tenant)
    assert [e["signal_id"] for e in entries] == expected
    assert entries[1] == {
        "signal_id": "s-0-1",
        "type": "latency",
        "value": "0.01",
        "weight": "1.0",  # null weight: the contract's default
        "source": "src",
        "ts": "2026-01-01T00:00:01+00:00",
        "provenance_id": f"prov-{tenant}-s-0-1",
    }
    assert client.hgetall(applied_key(tenant)) == {f"{TOPIC}/0": "14", f"{TOPIC}/1": "2"}

    assert [e["id"] for _ch, e in published] == expected
    assert {ch for ch, _e in published} == {events_channel(tenant)}
    assert published[2][1] == {
        "kind": "signal",
        "id": "s-0-2",
        "type": "latency",
        "value": 0.02,
        "weight": 2.0,
        "source": "src",
        "ts": "2026-01-01T00:00:02+00:00",
    }

    ninety_days = 90 * 86400
    for key in (signals_key(tenant), applied_key(tenant)):
        assert ninety_days - 10 < client.ttl(key) <= ninety_days


def test_the_stream_is_capped_near_stream_max(url: str, client: redis.Redis, prefix: str) -> None:
    tenant = f"{prefix}-a"
    node_max = int(str(client.config_get("stream-node-max-entries")["stream-node-max-entries"]))
    writer = RedisWriter(url, stream_max=10, ttl_seconds=TTL)
    try:
        items = [_signal(tenant, o) for o in range(3 * node_max)]
        for start in range(0, len(items), 50):
            writer.write(items[start : start + 50])
    finally:
        writer.close()
    length = client.xlen(signals_key(tenant))
    # MAXLEN ~ trims whole radix-tree nodes only: at least stream_max stay, at most a node more.
    assert 10 <= length <= 10 + node_max
    assert _entries(client, tenant)[-1]["signal_id"] == f"s-0-{3 * node_max - 1}"


def test_a_script_cache_miss_falls_back_to_eval(
    url: str, client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A digest the server has never seen stands in for a flushed script cache (SCRIPT FLUSH
    # would disturb other users of the shared server).
    monkeypatch.setattr(redis_sink, "_SHA", "0" * 40)
    tenant = f"{prefix}-a"
    writer = RedisWriter(url, stream_max=100, ttl_seconds=TTL)
    try:
        writer.write([_change(tenant, 1)])  # EVAL
        writer.write([_change(tenant, 2)])  # EVALSHA -> NOSCRIPT -> EVAL
    finally:
        writer.close()
    assert client.hget(score_key(tenant), "seq") == "2"


def test_the_bytewax_sink_writes_every_chunk(
    stack: Settings, client: redis.Redis, prefix: str
) -> None:
    settings = stack.with_changes("stores", batch_size=3, redis_stream_max=100)
    a, b = f"{prefix}-a", f"{prefix}-b"
    items: list[ScoreChange | Tagged] = []
    for i in range(10):
        items += [_signal(a, i), _change(a, i + 1, i / 10), _signal(b, i)]
    items += items[:7]  # an at-least-once redelivery
    flow = Dataflow("redis_sink_test")
    serve(
        "redis",
        random_runs("runs", op.input("in", flow, TestingSource(items, batch_size=4)), tenant_of, 4),
        RedisSink(settings.stores, DeadLetterTarget.of(settings.kafka)),
    )
    run_main(flow)
    assert client.hget(score_key(a), "seq") == "10"
    assert [e["signal_id"] for e in _entries(client, a)] == [f"s-0-{i}" for i in range(10)]
    assert [e["signal_id"] for e in _entries(client, b)] == [f"s-0-{i}" for i in range(10)]


def _redis_pid() -> int:
    cfg = StackConfig.from_env(os.environ)
    pid = dev_stack.our_pid(cfg, dev_stack.select(["redis"], cfg)[0])
    assert pid is not None, "the stack's redis is not running"
    return pid


@pytest.mark.slow
def test_a_paused_server_mid_stream_loses_and_duplicates_nothing(
    url: str, client: redis.Redis, prefix: str
) -> None:
    tenants = [f"{prefix}-{i}" for i in range(3)]
    batches: list[list[ScoreChange | Tagged]] = []
    for i in range(50):
        batch: list[ScoreChange | Tagged] = []
        for tenant in tenants:
            batch += [
                _signal(tenant, i, partition=0),
                _change(tenant, i + 1, (i % 10) / 10, offset=i),
                _signal(tenant, i, partition=1),
            ]
        batches.append(batch)

    # Short socket timeouts: several attempts time out during the pause, each leaving a copy of
    # the batch queued in the stopped server, which runs them all when it resumes.
    writer = RedisWriter(url, stream_max=10_000, ttl_seconds=TTL, socket_timeout=1.0)
    failures: list[BaseException] = []
    dead: list[Sequence[ScoreChange | Tagged]] = []
    results: list[bool] = []
    crashed: list[BaseException] = []
    tenth = threading.Event()

    def write(batch: Sequence[ScoreChange | Tagged]) -> None:
        try:
            writer.write(batch)
        except Exception as exc:
            failures.append(exc)
            raise

    def run() -> None:
        try:
            for i, batch in enumerate(batches):
                results.append(
                    write_with_retry(
                        "redis",
                        batch,
                        write,
                        transient=transient,
                        dead_letter=lambda b, _exc: dead.append(b),
                        policy=RetryPolicy(attempts=60, base_seconds=0.05, cap_seconds=0.5),
                    )
                )
                if i == 9:
                    tenth.set()
                time.sleep(0.05)
        except BaseException as exc:
            crashed.append(exc)
            tenth.set()

    pid = _redis_pid()
    thread = threading.Thread(target=run, name="redis-writer")
    with Events(url, prefix) as events:
        thread.start()
        assert tenth.wait(30)
        # A backstop in its own process: resumes the server even if this process dies.
        watchdog = subprocess.Popen(
            ["sh", "-c", f"sleep 30; kill -CONT {pid} 2>/dev/null"], start_new_session=True
        )
        try:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(10)
        finally:
            os.kill(pid, signal.SIGCONT)
            os.killpg(watchdog.pid, signal.SIGKILL)
            watchdog.wait()
        thread.join(120)
        writer.close()
        assert not thread.is_alive()
        published = events.drain(quiet=1.0)

    assert crashed == []
    assert results == [True] * 50
    assert dead == []
    assert failures, "the pause was never noticed"
    assert all(transient(exc) for exc in failures)
    for tenant in tenants:
        last = batches[-1][3 * tenants.index(tenant) + 1]
        assert isinstance(last, ScoreChange)
        stored = client.hgetall(score_key(tenant))
        assert (stored["seq"], stored["score"]) == ("50", repr(last.score))
        expected = [f"s-{p}-{i}" for i in range(50) for p in (0, 1)]
        assert [e["signal_id"] for e in _entries(client, tenant)] == expected
        mine = [e for ch, e in published if ch == events_channel(tenant)]
        assert [e["seq"] for e in mine if e["kind"] == "score"] == list(range(1, 51))
        assert [e["id"] for e in mine if e["kind"] == "signal"] == expected
