"""The Redis script's arguments: the batch's build equals the per-row reference, and the compact
JSON encoder built once equals ``json.dumps`` with the same separators."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

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


def _reference_signal_op(
    batch: _Batch, ops: list[list[str]], item: Tagged, stream_max_ttl_ms: int, prefix: str
) -> None:
    """The per-row build before the per-tenant names were kept (each key named per signal):
    its operation appended to ``ops``, its keys named in ``batch``."""
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
    ops.append(
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
    ops: list[list[str]] = []
    for offset, (tenant, is_score, value, weight, text) in enumerate(rows):
        if is_score:
            built.score(_change(tenant, offset))
            reference.score(_change(tenant, offset))
            ops.append(json.loads(reference.parts.pop()))
            continue
        item = _signal(tenant, offset, value, weight, text)
        built.signal(item)
        _reference_signal_op(reference, ops, item, 7_000, prefix)
    assert built.args() == [*reference.keys, "1000", json.dumps(ops, separators=(",", ":"))]
    assert list(built.keys) == list(reference.keys)
    # every key the script is told about, and only those (a score key named once)
    assert len(set(built.keys)) == len(built.keys)
    assert all(
        name.startswith(prefix) and name in built.keys
        for tenant, is_score, *_ in rows
        for name in ([score_key(tenant, prefix=prefix)] if is_score else [])
    )


class _Tagged(Tagged):
    """A Tagged subclass whose ``provenance_id`` reads otherwise than its slot (the references,
    the Redis and the graph sink's, read the attribute): the C paths leave it to them."""

    __slots__ = ()

    @property
    def provenance_id(self) -> str:
        return "read through the subclass"


class _Float(float):
    """A float subclass with a repr of its own (the reference's ``repr`` calls it, JSON does
    not): the C path leaves it to the reference."""

    def __repr__(self) -> str:
        return f"_Float({float(self)!r})"


#: Strings JSON writes as themselves, and others (quotes, backslashes, controls, DEL, non-ASCII).
_TEXT = st.sampled_from(["", "a", "sensor-7", "x y"]) | st.text(max_size=4)
#: Times in UTC (with microseconds or none, early years) and in another zone.
_TIME = st.datetimes(timezones=st.just(UTC)) | st.sampled_from(
    [
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(999, 3, 4, 5, 6, 7, 8, tzinfo=UTC),
        datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=2))),
    ]
)
_FLOAT = st.floats() | st.sampled_from([0.0, -0.0, 1e16, 1.5e-7, 1e300]) | st.builds(_Float)


@st.composite
def _signals(draw: st.DrawFn) -> Tagged | ScoreChange:
    if draw(st.integers(0, 9)) == 0:
        return _change(draw(st.sampled_from(["t1", "t2"])), draw(st.integers(0, 10**6)))
    tenant = draw(st.sampled_from(["t1", "t2", 'q"', "é", "t1:x"]))
    sig = Signal(
        tenant,
        draw(_TEXT),
        draw(_TEXT),
        draw(_FLOAT),
        draw(st.none() | _FLOAT),
        draw(_TEXT),
        draw(_TIME),
    )
    topic = draw(st.sampled_from(["topic", "t/ö", 'a"b']))
    offset = draw(st.integers(0, 2**70))
    provenance = Provenance(topic, draw(st.integers(0, 2**40)), offset, 1, "0" * 64)
    tags = PolicyTags(
        "b", draw(st.sampled_from(["standard-365d", "standard-90d", "x", "ü"])), "l", "US"
    )
    cls = draw(st.sampled_from([Tagged, Tagged, Tagged, _Tagged]))
    return cls(Decoded(sig, provenance), tags, "p" * 64, draw(_TEXT))


@given(st.lists(_signals(), max_size=25), st.sampled_from(["", "replay:ns:", 'q"']))
def test_the_c_path_writes_what_the_reference_writes(
    items: list[Tagged | ScoreChange], prefix: str
) -> None:
    """``_Batch.signals`` (``core._native.redis_signals`` with the reference for what it
    leaves) against ``_Batch.signal`` item by item: the same keys in the same order and the
    same JSON, whatever the strings, floats, times and offsets."""
    built = _Batch(1000, 7_000, prefix)
    reference = _Batch(1000, 7_000, prefix)
    run: list[Tagged] = []
    for item in items:
        if isinstance(item, ScoreChange):
            built.signals(run)
            run = []
            built.score(item)
            reference.score(item)
        else:
            run.append(item)
            reference.signal(item)
    built.signals(run)
    assert built.args() == reference.args()
    assert list(built.keys.items()) == list(reference.keys.items())


def test_the_c_path_takes_the_common_signal() -> None:
    """A plain signal is written in C: one text for the run (the reference writes one per
    signal), so a C path that left every record to the reference fails here."""
    batch = _Batch(1000, 7_000, "")
    batch.signals([_signal("t1", offset, 0.5, None, "s") for offset in range(3)])
    assert len(batch.parts) == 1
    assert len(json.loads(batch.args()[-1])) == 3
