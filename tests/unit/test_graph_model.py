"""The graph's idempotency key (the documented hash of the documented canonical JSON), and its
rows as the C path builds them (and the Redis operations' C path leaking nothing)."""

from __future__ import annotations

import hashlib
import io
import json
import sys
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from neo4j._codec.packstream.v1 import Packer, _rust_pack

from core import _native
from core.records import Decoded, PolicyTags, Provenance, Signal, Tagged
from sinks.graph import Rows
from sinks.graph_model import epoch_micros, signal_key, signal_row, signal_rows, storable
from sinks.redis import _Batch
from tests.leaks import traced_growth
from tests.unit.test_redis_batch import _TEXT as _STRINGS
from tests.unit.test_redis_batch import _TIME, _Tagged

_T0 = datetime(1970, 1, 1, tzinfo=UTC)


def _item(tenant: str, source: str, signal_id: str, micros: int) -> Tagged:
    signal = Signal(
        tenant, signal_id, "latency", 0.5, None, source, _T0 + timedelta(microseconds=micros)
    )
    provenance = Provenance("topic", 0, 0, 1, "0" * 64)
    tags = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")
    return Tagged(Decoded(signal, provenance), tags, "p" * 64, "0" * 32)


@given(
    st.text(),
    st.text(),
    st.text(),
    st.integers(min_value=-(2**55), max_value=2**57),  # years 829 to 6537
)
def test_the_key_hashes_json_dumps_of_the_identity(
    tenant: str, source: str, signal_id: str, micros: int
) -> None:
    # Any text: quotes, backslashes, control characters, non-ASCII, lone surrogates.
    item = _item(tenant, source, signal_id, micros)
    canonical = json.dumps(
        [tenant, source, signal_id, epoch_micros(item.signal.ts)],
        separators=(",", ":"),
        ensure_ascii=True,
    )
    assert signal_key(item) == hashlib.sha256(canonical.encode("ascii")).hexdigest()


def test_a_known_key_is_unchanged() -> None:
    # Keys already in graphs must match: this one was computed by the json.dumps version.
    item = _item('t"\\é', "src", "s-1\n", 1_700_000_000_123_456)
    canonical = '["t\\"\\\\\\u00e9","src","s-1\\n",1700000000123456]'
    assert signal_key(item) == hashlib.sha256(canonical.encode()).hexdigest()


_TEXT = st.text(alphabet=st.sampled_from(["a", "é", "\x00", "\n", "\\"]), max_size=4)


@given(st.lists(_TEXT, min_size=12, max_size=12))
def test_storable_is_true_exactly_when_no_string_holds_a_nul(texts: list[str]) -> None:
    # The joined search against the reference: one search per stored string.
    tenant, source, signal_id, type_, provenance_id, policy, topic, input_hash, *tags = texts
    signal = Signal(tenant, signal_id, type_, 0.5, None, source, _T0)
    item = Tagged(
        Decoded(signal, Provenance(topic, 0, 0, 1, input_hash)),
        PolicyTags(*tags),
        policy,
        provenance_id,
    )
    assert storable(item) == (not any("\x00" in text for text in texts))


def _pack(value: object, *, rust: bool) -> bytes:
    hooks = Packer._inject_hooks()
    if rust:
        assert _rust_pack is not None, "neo4j-rust-ext is a pinned dependency"
        return bytes(_rust_pack(value, hooks))
    buffer = io.BytesIO()
    Packer(buffer)._py_pack(value, hooks)
    return buffer.getvalue()


def test_rows_pack_as_the_list_they_hold_and_print_short() -> None:
    # The writer's parameters are Rows so the driver's eager debug formatting stays cheap;
    # Bolt must see exactly the list (both packers: the Rust extension and the driver's own).
    rows = [{"key": "k", "value": 0.5, "ts": 2**40, "tags": ["a", None]}, {"n": -1}]
    for rust in (True, False):
        assert _pack({"rows": Rows(rows)}, rust=rust) == _pack({"rows": rows}, rust=rust)
    assert repr(Rows(rows)) == "<2 rows>"


@st.composite
def _signals(draw: st.DrawFn) -> Tagged:
    signal = Signal(
        draw(_STRINGS),
        draw(_STRINGS),
        draw(_STRINGS),
        draw(st.floats() | st.integers(-(2**63), 2**63 - 1)),
        draw(st.none() | st.floats()),
        draw(_STRINGS),
        draw(_TIME),
    )
    provenance = Provenance(
        draw(_STRINGS), draw(st.integers(0, 2**40)), draw(st.integers(0, 2**63 - 1)), 1, "0" * 64
    )
    tags = PolicyTags("benchmarking", draw(_STRINGS), "Restricted-TOS", "US")
    cls = draw(st.sampled_from([Tagged, Tagged, Tagged, _Tagged]))
    return cls(Decoded(signal, provenance), tags, draw(_STRINGS), draw(_STRINGS))


def _packed(value: object) -> bytes:
    stream = io.BytesIO()
    Packer(stream).pack(value)  # the driver's PackStream: the bytes Bolt sends
    return stream.getvalue()


@given(st.lists(_signals(), max_size=20))
def test_the_c_rows_are_the_reference_rows(items: list[Tagged]) -> None:
    """``signal_rows`` (``core._native.graph_rows`` with ``signal_row`` for what it leaves)
    against ``signal_row`` item by item: equal rows, the same key order, the same Bolt bytes."""
    built = signal_rows(items)
    reference = [signal_row(item) for item in items]
    assert built == reference
    for mine, theirs in zip(built, reference, strict=True):
        assert list(mine) == list(theirs)
        assert list(mine["signal"]) == list(theirs["signal"])
        assert list(mine["provenance"]) == list(theirs["provenance"])
        assert all(type(mine["signal"][k]) is type(theirs["signal"][k]) for k in theirs["signal"])
    assert _packed(built) == _packed(reference)


def test_the_c_rows_take_the_common_signal() -> None:
    """A plain signal's row is built in C (a C path that left every record to the reference
    would not be caught by the equality above): its dicts hold the record's own strings."""
    item = _item("t1", "src", "s-1", 1_700_000_000_123_456)
    (row,) = signal_rows([item])
    assert row == signal_row(item)
    assert row["signal"]["ts_iso"] == "2023-11-14T22:13:20.123456+00:00"
    assert row["signal"]["signal_id"] is item.signal.signal_id


def test_the_c_rows_leak_nothing() -> None:
    """Rows built and dropped give their memory back (``tracemalloc``), and the record's
    strings are held only while a row holds them (``sys.getrefcount``); the Redis sink's C
    operations too."""
    tenant = "".join(["tenant-", "of-this-test"])  # made here: no other holder
    items = [_item(tenant, "src", f"s-{i}", 1_700_000_000_000_000 + i) for i in range(50)]
    held = [items[0].signal.signal_id, items[0].signal.tenant_id, items[0].provenance_id]
    counts = [sys.getrefcount(x) for x in held]

    def run(rounds: int) -> None:
        for _ in range(rounds):
            signal_rows(items)
            redis_batch = _Batch(1000, 7_000, "")
            redis_batch.signals(items)
            redis_batch.args()

    grown = traced_growth(run, (20, 200))
    assert grown < 16_000, grown
    assert [sys.getrefcount(x) for x in held] == counts
    with pytest.raises(TypeError):
        _native.graph_rows(items, 0, (), [])
    with pytest.raises(TypeError):
        _native.redis_signals(items, 0, (), {}, str, {}, str, [])
