"""dedupe: verdicts, laws over random input (idempotence, order, accounting, memory, recovery),
and the operator in the real engine, resumed from a recovery snapshot."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import hypothesis.strategies as st
import pytest
from bytewax.dataflow import Dataflow, Stream
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given, settings
from prometheus_client import REGISTRY

from core.reasons import ReasonCode
from core.records import Decoded, Provenance, RawRecord, Rejected, Signal
from core.settings import DedupeSettings
from operators.batching import flatten
from operators.dedupe import TenantDedupe, Verdict, dedupe, late_reject
from tests.runs import random_runs

START = datetime(2026, 1, 1, tzinfo=UTC)
TTL = 60.0


def _decoded(
    t: float, sid: str = "s", source: str = "a", offset: int = 0, tenant: str = "t0"
) -> Decoded:
    """A decoded signal at ``START + t`` seconds; ``offset`` tells re-sends apart."""
    signal = Signal(tenant, sid, "latency", 0.5, None, source, START + timedelta(seconds=t))
    raw = RawRecord("coherence.signals.v1", 0, offset, b"k", b"payload-%d" % offset)
    return Decoded(signal, Provenance(raw.topic, 0, offset, 1, "h"), None, raw)


# A record: (seconds after START, source, signal id). Few ids and sources make duplicates likely.
_record = st.tuples(
    st.integers(0, 300),
    st.sampled_from(["a", "b"]),
    st.sampled_from([f"s{i}" for i in range(6)]),
)


def _items(records: list[tuple[int, str, str]]) -> list[Decoded]:
    return [_decoded(t, sid, src, offset=i) for i, (t, src, sid) in enumerate(records)]


def _landed(items: list[Decoded], ttl: float = TTL) -> list[Decoded]:
    state = TenantDedupe(ttl)
    return [item for item in items if state.check(item) is Verdict.NEW]


def _reference(items: list[Decoded], ttl: float) -> list[Verdict]:
    """The verdicts from scratch, remembering every landed key forever (no eviction)."""
    ttl_delta = timedelta(seconds=ttl)
    newest: datetime | None = None
    landed: set[tuple[str, str, str, datetime]] = set()
    out = []
    for item in items:
        s = item.signal
        newest = s.ts if newest is None else max(newest, s.ts)
        if s.ts < newest - ttl_delta:
            out.append(Verdict.LATE)
        elif s.key in landed:
            out.append(Verdict.DUPLICATE)
        else:
            landed.add(s.key)
            out.append(Verdict.NEW)
    return out


def test_new_then_duplicate_then_late() -> None:
    state = TenantDedupe(TTL)
    assert state.check(_decoded(100, offset=0)) is Verdict.NEW
    assert state.check(_decoded(100, offset=1)) is Verdict.DUPLICATE
    assert state.check(_decoded(100, sid="other", offset=2)) is Verdict.NEW
    assert state.check(_decoded(40, sid="x", offset=3)) is Verdict.NEW  # exactly at the horizon
    assert state.check(_decoded(39.999999, sid="y", offset=4)) is Verdict.LATE
    assert state.check(_decoded(200, sid="z", offset=5)) is Verdict.NEW
    # The first key was evicted (100 < 200 - 60); a re-send of it is late, never landed again.
    assert state.check(_decoded(100, offset=6)) is Verdict.LATE
    assert len(state) == 1
    assert (state.seen, state.duplicates) == (7, 1)
    assert state.dedupe_rate == pytest.approx(1 / 7)


def test_the_key_is_tenant_source_signal_and_ts() -> None:
    state = TenantDedupe(TTL)
    assert state.check(_decoded(10, source="a")) is Verdict.NEW
    assert state.check(_decoded(10, source="b")) is Verdict.NEW
    assert state.check(_decoded(10.000001, source="a")) is Verdict.NEW
    with pytest.raises(ValueError, match="one tenant"):
        state.check(_decoded(10, tenant="t1"))


def test_a_shorter_or_longer_ttl_never_moves_the_horizon_back() -> None:
    state = TenantDedupe(TTL)
    state.check(_decoded(100))
    state.set_ttl(10)
    assert state.horizon == START + timedelta(seconds=90)
    state.set_ttl(1000)
    assert state.horizon == START + timedelta(seconds=90)
    assert state.check(_decoded(50, sid="old")) is Verdict.LATE
    state.check(_decoded(2000, sid="later"))
    assert state.horizon == START + timedelta(seconds=1000)


@settings(max_examples=300, deadline=None)
@given(st.lists(_record, max_size=60), st.sampled_from([0.0, 30.0, TTL, 200.0]))
def test_verdicts_equal_a_reference_that_never_forgets(
    records: list[tuple[int, str, str]], ttl: float
) -> None:
    # Eviction is invisible: an evicted key could only come back late.
    items = _items(records)
    state = TenantDedupe(ttl)
    verdicts = []
    for item in items:
        verdicts.append(state.check(item))
        horizon = state.horizon
        assert horizon is not None
        held = {i.signal.key for i, v in zip(items, verdicts, strict=False) if v is Verdict.NEW}
        assert len(state) == sum(1 for key in held if key[3] >= horizon)
    assert verdicts == _reference(items, ttl)
    # Every input is accounted for exactly once.
    assert state.seen == len(items)
    assert state.duplicates == verdicts.count(Verdict.DUPLICATE)


@settings(max_examples=300, deadline=None)
@given(st.lists(_record, max_size=60))
def test_dedupe_is_idempotent(records: list[tuple[int, str, str]]) -> None:
    once = _landed(_items(records))
    assert _landed(once) == once


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, int(TTL)), _record.map(lambda r: r[1:])), max_size=60))
def test_permuting_within_the_ttl_lands_the_same_keys(
    records: list[tuple[int, tuple[str, str]]],
) -> None:
    items = _items([(t, src, sid) for t, (src, sid) in records])
    shuffled = items.copy()
    random.Random(len(items)).shuffle(shuffled)
    landed, landed_shuffled = _landed(items), _landed(shuffled)
    assert len(landed) == len(landed_shuffled) == len({i.signal.key for i in items})
    assert {i.signal.key for i in landed} == {i.signal.key for i in landed_shuffled}


@settings(max_examples=200, deadline=None)
@given(st.lists(_record, max_size=60), st.integers(0, 60), st.booleans())
def test_a_snapshot_resumes_as_if_uninterrupted(
    records: list[tuple[int, str, str]], cut: int, pickled: bool
) -> None:
    items = _items(records)
    cut = min(cut, len(items))
    uninterrupted = TenantDedupe(TTL)
    expected = [uninterrupted.check(item) for item in items]
    state = TenantDedupe(TTL)
    verdicts = [state.check(item) for item in items[:cut]]
    resumed = pickle.loads(pickle.dumps(state)) if pickled else copy.deepcopy(state)
    del state  # the crash
    verdicts += [resumed.check(item) for item in items[cut:]]
    assert verdicts == expected
    assert (len(resumed), resumed.seen, resumed.duplicates) == (
        len(uninterrupted),
        uninterrupted.seen,
        uninterrupted.duplicates,
    )


def test_memory_is_bounded_by_the_keys_inside_the_ttl() -> None:
    # 20,000 records over 10 TTLs, ts jittered back by up to half a TTL, 5 % exact re-sends.
    rng = random.Random(3)
    state = TenantDedupe(TTL)
    ttl_ms = int(TTL * 1000)
    seen_ms: list[int] = []
    previous = (0, "s0")
    for i in range(20_000):
        ms, sid = (
            previous if rng.random() < 0.05 else (i * 30 - rng.randint(0, ttl_ms // 2), f"s{i}")
        )
        state.check(_decoded(ms / 1000, sid=sid, offset=i))
        seen_ms.append(ms)
        previous = (ms, sid)
        if i % 500 == 499:
            newest = max(seen_ms)
            assert len(state) <= sum(1 for x in seen_ms if x >= newest - ttl_ms)
    assert len(state) <= 20_000 / 10


def test_a_late_record_leaves_with_its_original_bytes() -> None:
    state = TenantDedupe(TTL)
    state.check(_decoded(1000))
    item = _decoded(10, offset=7)
    assert state.check(item) is Verdict.LATE
    rejected = late_reject(item, state)
    assert rejected.reason is ReasonCode.TOO_LATE
    assert (rejected.stage, rejected.tenant_id, rejected.schema_version) == ("dedupe", "t0", 1)
    assert rejected.record is item.raw
    assert "930 s before the dedupe horizon" in rejected.detail
    # Without the raw record, the provenance still says where it came from.
    bare = Decoded(item.signal, item.provenance, 1_767_225_600_000)
    record = late_reject(bare, state).record
    assert (record.partition, record.offset, record.value) == (0, 7, None)


def _metric(name: str, tenant: str) -> float:
    return REGISTRY.get_sample_value(name, {"tenant_id": tenant}) or 0.0


def _flow(items: list[Any], unique: list[Decoded], late: list[Rejected]) -> Dataflow:
    """``items``: decoded records, perhaps with a ``TestingSource.ABORT()`` among them."""
    flow = Dataflow("dedupe_test")
    up: Stream[Decoded] = op.input("in", flow, TestingSource(items, batch_size=4))
    runs = random_runs("by_tenant", up, lambda d: d.signal.tenant_id, seed=len(items))
    out = dedupe("dedupe", runs, DedupeSettings(TTL))
    op.output("unique", flatten("unkey", out.unique), TestingSink(unique))
    op.output("late", out.late, TestingSink(late))
    return flow


def _workload(tenants: list[str]) -> list[Decoded]:
    """Interleaved tenants, 10 s apart; every fifth signal re-sent, the first tenant's first
    signal re-sent long after its TTL (three times)."""
    rows: list[tuple[float, str, str]] = []
    for i in range(60):
        for n, tenant in enumerate(tenants):
            rows.append((i * 10, f"s{i}", tenant))
            if i % 5 == 4:
                rows.append(((i - 1) * 10, f"s{i - 1}", tenant))
            if i % 20 == 19 and n == 0:
                rows.append((0, "s0", tenant))
    return [_decoded(t, sid, tenant=tenant, offset=k) for k, (t, sid, tenant) in enumerate(rows)]


def test_the_operator_in_the_engine() -> None:
    tenants = ["op-a", "op-b"]
    items = _workload(tenants)
    before = {t: _metric("igflow_duplicates_total", t) for t in tenants}
    unique: list[Decoded] = []
    late: list[Rejected] = []
    run_main(_flow(list(items), unique, late))

    late_offsets = []
    for tenant in tenants:
        mine = [i for i in items if i.signal.tenant_id == tenant]
        verdicts = _reference(mine, TTL)
        expected = [i for i, v in zip(mine, verdicts, strict=True) if v is Verdict.NEW]
        # Each tenant's records keep their order.
        assert [u for u in unique if u.signal.tenant_id == tenant] == expected
        dups = verdicts.count(Verdict.DUPLICATE)
        assert _metric("igflow_duplicates_total", tenant) - before[tenant] == dups
        assert _metric("ingest_dedupe_rate", tenant) == pytest.approx(dups / len(mine))
        assert _metric("igflow_dedupe_keys", tenant) == 7  # ts 530 … 590: the last TTL
        late_offsets += [
            i.provenance.kafka_offset
            for i, v in zip(mine, verdicts, strict=True)
            if v is Verdict.LATE
        ]
    assert len(late_offsets) == 3
    assert sorted(r.record.offset for r in late) == sorted(late_offsets)
    assert all(r.reason is ReasonCode.TOO_LATE and r.stage == "dedupe" for r in late)


def test_a_resumed_run_lands_what_an_uninterrupted_one_does(tmp_path: Path) -> None:
    items = _workload(["rec-a", "rec-b"])
    # Re-sends right after the crash of records landed before it: only a restored state
    # recognises them.
    resends = [dataclasses.replace(i, raw=None) for i in items[96:100]]
    expected: list[Decoded] = []
    run_main(_flow([*items[:100], *resends, *items[100:]], expected, []))

    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path), timedelta(0))
    crashing = [*items[:100], TestingSource.ABORT(), *resends, *items[100:]]
    unique: list[Decoded] = []
    # The ABORT stops the first execution there, as a crash would (run_main returns).
    run_main(_flow(crashing, unique, []), epoch_interval=timedelta(0), recovery_config=recovery)
    first = unique.copy()
    run_main(_flow(crashing, unique, []), epoch_interval=timedelta(0), recovery_config=recovery)
    resumed = unique[len(first) :]
    assert first
    assert resumed
    # With an epoch per batch the resume starts where the snapshot was taken: exactly once,
    # and each tenant's records in order.
    assert sorted(u.provenance.kafka_offset for u in unique) == sorted(
        e.provenance.kafka_offset for e in expected
    )
    assert not any(u.raw is None for u in unique)
    for tenant in ("rec-a", "rec-b"):
        mine = [u for u in unique if u.signal.tenant_id == tenant]
        assert mine == [e for e in expected if e.signal.tenant_id == tenant]
