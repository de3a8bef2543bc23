"""dedupe's clean path in C (``core/_native.c`` ``dedupe_run``) against its Python references:
the same outputs, counts and state, down to the pickles, for any input and batching; nothing
kept, errors passed on, and every unusual batch left to Python untouched."""

from __future__ import annotations

import copy
import dataclasses
import gc
import pickle
import sys
import zoneinfo
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from core.records import Decoded, Provenance, RawRecord, Signal
from operators import dedupe as dedupe_module
from operators.dedupe import (
    TenantDedupe,
    _dedupe_columns,
    _dedupe_native,
    _dedupe_records,
    _micros,
    dedupe_batch,
)
from tests.leaks import traced_growth
from tests.unit.test_batch_equivalence import chunks

START = datetime(2026, 1, 1, tzinfo=UTC)
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def _item(ts: datetime, sid: str, source: str, offset: int, tenant: str = "t0") -> Decoded:
    signal = Signal(tenant, sid, "latency", 0.5, None, source, ts)
    raw = RawRecord("coherence.signals.v1", 0, offset, b"k", b"payload-%d" % offset)
    return Decoded(signal, Provenance(raw.topic, 0, offset, 1, "h"), None, raw)


# Event times: mostly the decoder's (datetime.UTC), near each other so that keys repeat and
# records fall late; microsecond edges; the oldest and newest a datetime holds; other zones
# (fixed offsets down to the microsecond, a DST zone with fold, zoneinfo's UTC) that the C path
# converts through the reference's _micros.
_offsets = st.sampled_from(
    [
        timezone(timedelta(hours=2)),
        timezone(timedelta(hours=-5, minutes=-30)),
        timezone(timedelta(seconds=1, microseconds=1)),
        timezone(timedelta(hours=23, minutes=59, seconds=59, microseconds=999999)),
        zoneinfo.ZoneInfo("UTC"),
        BERLIN,
    ]
)
_near = st.builds(
    lambda s, us: START + timedelta(seconds=s, microseconds=us),
    st.integers(0, 300),
    st.sampled_from([0, 0, 0, 1, 999_999, 500_000]),
)
_ts = st.one_of(
    _near,
    _near,
    _near,
    st.builds(lambda t, z: t.astimezone(z), _near, _offsets),
    st.builds(lambda t, z: t.replace(tzinfo=z), _near, _offsets),
    st.builds(lambda t, f: t.replace(fold=f), _near, st.integers(0, 1)),
    st.builds(  # an ambiguous Berlin hour, either fold
        lambda m, f: datetime(2026, 10, 25, 2, m, tzinfo=BERLIN, fold=f),
        st.integers(0, 59),
        st.integers(0, 1),
    ),
    st.sampled_from(
        [
            datetime.min.replace(tzinfo=UTC),
            datetime.max.replace(tzinfo=UTC),
            datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
            datetime(1970, 1, 1, tzinfo=UTC),
            datetime(2000, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC),
            datetime(1600, 3, 1, tzinfo=UTC),
        ]
    ),
)
_records = st.lists(
    st.tuples(
        _ts, st.sampled_from(["src-a", "src-b"]), st.sampled_from([f"s{i}" for i in range(5)])
    ),
    max_size=60,
)
# TTLs in seconds: none, short, the flow's, and one whose microseconds exceed the C path's 62 bits.
_ttls = st.sampled_from([0.0, 5.0, 60.0, 86400.0, 1e13])


def _items(records: list[tuple[datetime, str, str]]) -> list[Decoded]:
    # Fresh strs per record (not the literals' interned objects), as decoding makes them.
    return [
        _item(ts, "".join(list(sid)), "".join(list(source)), offset=i)
        for i, (ts, source, sid) in enumerate(records)
    ]


def _same_state(a: TenantDedupe, b: TenantDedupe) -> None:
    assert pickle.dumps(a) == pickle.dumps(b)
    assert a.__getstate__() == b.__getstate__()
    assert a._keys == b._keys and list(a._keys) == list(b._keys)
    assert pickle.dumps(copy.deepcopy(a)) == pickle.dumps(b)


@settings(max_examples=400, deadline=None)
@given(
    _records,
    _ttls,
    st.lists(st.integers(0, 60), max_size=10),
    st.lists(st.tuples(st.integers(0, 10), _ttls), max_size=3),
    st.integers(0, 10),
)
def test_the_c_path_equals_the_python_references_for_any_batching(
    records: list[tuple[datetime, str, str]],
    ttl: float,
    cuts: list[int],
    ttl_changes: list[tuple[int, float]],
    resume_after: int,
) -> None:
    items = _items(records)
    batches = chunks(items, cuts)
    native, columns, per_record = TenantDedupe(ttl), TenantDedupe(ttl), TenantDedupe(ttl)
    taken = 0
    for n, batch in enumerate(batches):
        for at, new_ttl in ttl_changes:
            if at == n:
                for state in (native, columns, per_record):
                    state.set_ttl(new_ttl)
        if n == resume_after:  # a snapshot between batches (each: a loaded str is not interned)
            native, columns, per_record = (
                pickle.loads(pickle.dumps(copy.deepcopy(state)))
                for state in (native, columns, per_record)
            )
        before = pickle.dumps(native)
        fast = _dedupe_native(native, batch)
        if fast is None:
            assert pickle.dumps(native) == before  # nothing changed
            fast = dedupe_batch(native, batch)
        else:
            taken += 1
        reference = _dedupe_columns(columns, batch)
        assert reference is not None
        slow = _dedupe_records(per_record, batch)
        # The same records, rejects (their details name the horizon at their record) and counts.
        assert pickle.dumps(fast) == pickle.dumps(reference) == pickle.dumps(slow)
        assert [repr(x) for x in fast[0]] == [repr(x) for x in slow[0]]
        _same_state(native, columns)
        _same_state(native, per_record)
    # The C path took every batch of the decoder's times while the state fits its 62 bits.
    if ttl < 1e13 and not ttl_changes and all(ts.tzinfo is UTC for ts, _, _ in records):
        assert taken == len(batches)


@pytest.mark.parametrize(
    "ts",
    [
        START + timedelta(microseconds=1),
        START - timedelta(microseconds=1),
        datetime.min.replace(tzinfo=UTC),
        datetime.max.replace(tzinfo=UTC),
        datetime(2024, 2, 29, 12, tzinfo=UTC),
        datetime(1900, 3, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC, fold=1),
    ],
)
def test_a_utc_time_converts_to_the_references_integer(ts: datetime) -> None:
    state = TenantDedupe(1e9)
    assert _dedupe_native(state, [_item(ts, "s", "a", 0)]) is not None
    assert state._newest == _micros(ts)
    assert type(state._newest) is int


def _workload() -> list[list[Decoded]]:
    """Batches with new keys, duplicates, late records and evictions."""
    items = [
        _item(START + timedelta(seconds=t // 2), f"s{t % 7}", ("src-a", "src-b")[t % 2][:], t)
        for t in range(60)
    ]
    late = [_item(START, "s1", "a", 99)]
    return [items[:30], items[20:], late, items[40:] + late + items[:5]]


def test_the_c_path_keeps_nothing() -> None:
    batches = _workload()

    def rounds(n: int) -> None:
        for _ in range(n):
            state = TenantDedupe(3.0)
            for batch in batches:
                assert _dedupe_native(state, batch) is not None
            del state

    grown = traced_growth(rounds, (20, 200))
    assert grown < 16_000, grown
    # Nor a reference to what a record holds (it would keep the runs alive).
    first = batches[0][0]
    s = first.signal
    held = [first, s, s.source, s.signal_id, s.tenant_id, s.ts, batches[0], batches[2][0]]
    counts = [sys.getrefcount(x) for x in held]
    rounds(50)
    gc.collect()
    assert [sys.getrefcount(x) for x in held] == counts


class _Failing(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise ValueError("no offset")


def test_the_c_path_passes_errors_on_as_the_python_path_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch = _workload()[0] + _workload()[2]
    # A late reject that fails: both paths raise at that record and leave the same state.
    monkeypatch.setattr(dedupe_module, "late_reject", lambda item, state: 1 / 0)
    native, columns = TenantDedupe(3.0), TenantDedupe(3.0)
    with pytest.raises(ZeroDivisionError):
        _dedupe_native(native, batch)
    with pytest.raises(ZeroDivisionError):
        _dedupe_columns(columns, batch)
    _same_state(native, columns)
    monkeypatch.undo()
    # A time zone that fails: raised before anything changes.
    odd = [*batch[:3], _item(START.replace(tzinfo=_Failing()), "x", "a", 7)]
    native = TenantDedupe(3.0)
    with pytest.raises(ValueError, match="no offset"):
        _dedupe_native(native, odd)
    _same_state(native, TenantDedupe(3.0))
    # Not a list of records, or wrong descriptors: a TypeError, not a crash.
    with pytest.raises(TypeError):
        dedupe_module._native.dedupe_run(native, tuple(batch), _micros, None, Decoded, Signal, ())
    with pytest.raises(TypeError):
        dedupe_module._native.dedupe_run(
            native, batch, _micros, None, Decoded, Signal, (Decoded.__dict__["signal"],) * 6
        )


class _Str(str):
    pass


def _unusual() -> list[tuple[TenantDedupe, list[Any]]]:
    items = _workload()[0][:5]
    first, s = items[0], items[0].signal
    traced = dataclasses.replace(first, trace="00-" + "1" * 32 + "-" + "2" * 16 + "-01")
    other = dataclasses.replace(first, signal=dataclasses.replace(s, tenant_id="t1"))
    naive = dataclasses.replace(first, signal=dataclasses.replace(s, ts=START.replace(tzinfo=None)))
    text = dataclasses.replace(first, signal=dataclasses.replace(s, ts="2026-01-01"))  # type: ignore[arg-type]
    sub = dataclasses.replace(first, signal=dataclasses.replace(s, source=_Str("a")))
    number = dataclasses.replace(first, signal=dataclasses.replace(s, signal_id=7))  # type: ignore[arg-type]
    odd_tenant = TenantDedupe(3.0)
    odd_tenant._tenant = "t1"
    no_horizon = TenantDedupe(3.0)
    no_horizon._newest = 5
    huge = TenantDedupe(3.0)
    huge._newest = huge._horizon = 2**63
    return [
        (TenantDedupe(3.0), [*items, traced]),
        (TenantDedupe(3.0), [*items, other]),
        (TenantDedupe(3.0), [*items, naive]),
        (TenantDedupe(3.0), [*items, text]),
        (TenantDedupe(3.0), [*items, sub]),
        (TenantDedupe(3.0), [*items, number]),
        (TenantDedupe(3.0), [*items, object()]),
        (odd_tenant, items),
        (no_horizon, items),
        (huge, items),
        (TenantDedupe(1e13), items),
    ]


@pytest.mark.parametrize("case", range(len(_unusual())))
def test_an_unusual_batch_is_left_to_python_untouched(case: int) -> None:
    state, batch = _unusual()[case]
    before = pickle.dumps(state)
    assert _dedupe_native(state, batch) is None
    assert pickle.dumps(state) == before


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 40),  # seconds: many keys within the TTL, many of one second
            st.sampled_from(["src-a", "src-b", "src-c"]),
            st.integers(0, 40).map(lambda i: f"s{i}"),
        ),
        min_size=20,
        max_size=200,
    ),
    st.sampled_from([1.0, 3.0, 10.0, 20.0]),
    st.lists(st.integers(0, 200), max_size=8),
)
def test_the_c_heap_evicts_in_heapqs_order(
    records: list[tuple[int, str, str]], ttl: float, cuts: list[int]
) -> None:
    """Large heaps and long evictions: the heap list itself is heapq's (ties on ts ordered by
    source and id, as tuples compare)."""
    items = _items([(START + timedelta(seconds=t), src, sid) for t, src, sid in records])
    native, per_record = TenantDedupe(ttl), TenantDedupe(ttl)
    for batch in chunks(items, cuts):
        fast = _dedupe_native(native, batch)
        assert fast is not None
        assert pickle.dumps(fast) == pickle.dumps(_dedupe_records(per_record, batch))
        assert native._heap == per_record._heap
        _same_state(native, per_record)
