"""The graph's idempotency key: the documented hash of the documented canonical JSON."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from core.records import Decoded, PolicyTags, Provenance, Signal, Tagged
from sinks.graph_model import epoch_micros, signal_key

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
