"""The graph's idempotency key: the documented hash of the documented canonical JSON."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from neo4j._codec.packstream.v1 import Packer, _rust_pack

from core.records import Decoded, PolicyTags, Provenance, Signal, Tagged
from sinks.graph import Rows
from sinks.graph_model import epoch_micros, signal_key, storable

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
