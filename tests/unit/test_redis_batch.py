"""The Redis script's arguments: the batch's build equals the per-row reference, and the compact
JSON encoder built once equals ``json.dumps`` with the same separators."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from core.records import Decoded, PolicyTags, Provenance, ScoreChange, Signal, Tagged
from core.store_keys import applied_key, events_channel, score_key, signals_key
from sinks.redis import _Batch, _iso, _json, retention_seconds

T0 = datetime(2026, 1, 1, tzinfo=UTC)

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and the infinities too: json.dumps writes NaN, Infinity
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(_JSON)
def test_the_encoder_writes_what_json_dumps_writes(value: object) -> None:
    assert _json(value) == json.dumps(value, separators=(",", ":"))


def _reference_signal_op(batch: _Batch, item: Tagged, stream_max_ttl_ms: int, prefix: str) -> None:
    """The per-row build before the per-tenant names were kept (each key named per signal)."""
    s, p = item.signal, item.provenance
    ttl_ms = str(round(retention_seconds(item.tags.retention, stream_max_ttl_ms / 1000) * 1000))
    weight = 1.0 if s.weight is None else s.weight
    ts = _iso(s.ts)
    event = {
        "kind": "signal",
        "id": s.signal_id,
        "type": s.type,
        "value": s.value,
        "weight": weight,
        "source": s.source,
        "ts": ts,
    }
    batch.ops.append(
        [
            "g",
            batch._key(signals_key(s.tenant_id, prefix=prefix)),
            batch._key(applied_key(s.tenant_id, prefix=prefix)),
            f"{p.topic}/{p.kafka_partition}",
            str(p.kafka_offset),
            ttl_ms,
            events_channel(s.tenant_id, prefix=prefix),
            json.dumps(event, separators=(",", ":")),
            *("signal_id", s.signal_id),
            *("type", s.type),
            *("value", repr(s.value)),
            *("weight", repr(weight)),
            *("source", s.source),
            *("ts", ts),
            *("provenance_id", item.provenance_id),
        ]
    )


def _signal(tenant: str, offset: int, value: float, weight: float | None, text: str) -> Tagged:
    at = T0 + timedelta(seconds=offset)
    sig = Signal(tenant, f"s-{text}", "latency", value, weight, text, at)
    decoded = Decoded(sig, Provenance("topic", offset % 3, offset, 1, "0" * 64))
    tags = PolicyTags("b", ["standard-365d", "standard-90d", "x"][offset % 3], "l", "US")
    return Tagged(decoded, tags, "p" * 64, f"prov-{offset}")


def _change(tenant: str, seq: int) -> ScoreChange:
    return ScoreChange(
        tenant, 0.8, "HEALTHY", T0, 1, 1.0, "prov", Provenance("topic", 0, seq, 1, "0" * 64), seq
    )


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["t1", "t2", 'q"é\\', "t1:x"]),
            st.booleans(),  # a score change rather than a signal
            st.floats(allow_nan=False, allow_infinity=False),
            st.none() | st.floats(min_value=0, max_value=10),
            st.text(max_size=5),
        ),
        max_size=30,
    ),
    st.sampled_from(["", "replay:ns:"]),
)
def test_a_batch_builds_the_arguments_of_the_per_row_reference(
    rows: list[tuple[str, bool, float, float | None, str]], prefix: str
) -> None:
    built = _Batch(1000, 7_000, prefix)
    reference = _Batch(1000, 7_000, prefix)
    for offset, (tenant, is_score, value, weight, text) in enumerate(rows):
        if is_score:
            built.score(_change(tenant, offset))
            reference.score(_change(tenant, offset))
            continue
        item = _signal(tenant, offset, value, weight, text)
        built.signal(item)
        _reference_signal_op(reference, item, 7_000, prefix)
    assert built.args() == reference.args()
    assert list(built.keys) == list(reference.keys)
    # every key the script is told about, and only those (a score key named once)
    assert len(set(built.keys)) == len(built.keys)
    assert all(
        name.startswith(prefix) and name in built.keys
        for tenant, is_score, *_ in rows
        for name in ([score_key(tenant, prefix=prefix)] if is_score else [])
    )
