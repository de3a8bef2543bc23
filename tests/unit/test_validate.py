"""validate: each rule and its boundaries, the rule order, and laws over random records."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import bytewax.operators as op
import hypothesis.strategies as st
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given, settings
from prometheus_client import REGISTRY

from core.errors import ConfigError
from core.reasons import ReasonCode
from core.records import Decoded, Provenance, RawRecord, Rejected, Signal
from core.settings import ValidateSettings
from operators.validate import StaticTenants, TenantEntry, check, check_settings, validate

KAFKA_TS = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
KAFKA_MS = int(KAFKA_TS.timestamp() * 1000)
SETTINGS = ValidateSettings(max_future_skew_seconds=300.0, max_age_seconds=3600.0)
TENANTS = StaticTenants(
    [
        TenantEntry("tenant-00", True, frozenset({"sensor-a", "sensor-b"})),
        TenantEntry("tenant-01", True, None),
        TenantEntry("tenant-02", False, None),
    ]
)
SIGNAL = Signal(
    tenant_id="tenant-00",
    signal_id="s-1",
    type="latency",
    value=0.5,
    weight=None,
    source="sensor-a",
    ts=KAFKA_TS - timedelta(seconds=1),
)


def decoded(
    *, offset: int = 0, kafka_ms: int | None = KAFKA_MS, raw: bool = True, **fields: Any
) -> Decoded:
    signal = dataclasses.replace(SIGNAL, **fields)
    provenance = Provenance("t", 1, offset, 7, "ab" * 32)
    record = RawRecord("t", 1, offset, b"k", b"payload", kafka_ms) if raw else None
    return Decoded(signal, provenance, kafka_ms, record)


def outcome(item: Decoded) -> ReasonCode | None:
    out = check(item, TENANTS, SETTINGS)
    if isinstance(out, Decoded):
        assert out is item  # a valid record passes unchanged
        return None
    return out.reason


def test_a_valid_record_passes_unchanged() -> None:
    item = decoded()
    assert check(item, TENANTS, SETTINGS) is item


@pytest.mark.parametrize(
    "fields",
    [
        {"tenant_id": ""},
        {"tenant_id": "  "},
        {"signal_id": ""},
        {"signal_id": "\t\n"},
        {"type": ""},
        {"type": " "},
        {"source": ""},
        {"source": "   "},
        {"value": math.nan},
        {"value": math.inf},
        {"value": -math.inf},
        {"value": -1e-12},
        {"value": math.nextafter(1.0, 2.0)},
        {"value": 2.0},
        {"weight": math.nan},
        {"weight": math.inf},
        {"weight": -math.inf},
        {"weight": -1e-300},
        {"ts": datetime(2026, 1, 1, 12)},  # noqa: DTZ001 (the naive datetime is the input under test)
    ],
    ids=repr,
)
def test_field_rules_reject(fields: dict[str, Any]) -> None:
    assert outcome(decoded(**fields)) is ReasonCode.FIELD_INVALID


@pytest.mark.parametrize(
    "fields",
    [
        {"value": 0.0},
        {"value": -0.0},
        {"value": 1.0},
        {"weight": None},
        {"weight": 0.0},
        {"weight": -0.0},
        {"weight": 1e300},
        {"ts": (KAFKA_TS - timedelta(minutes=1)).astimezone(timezone(timedelta(hours=5)))},
    ],
    ids=repr,
)
def test_field_boundaries_pass(fields: dict[str, Any]) -> None:
    assert outcome(decoded(**fields)) is None


def test_event_time_bounds_are_inclusive_to_the_microsecond() -> None:
    skew = timedelta(seconds=SETTINGS.max_future_skew_seconds)
    age = timedelta(seconds=SETTINGS.max_age_seconds)
    tick = timedelta(microseconds=1)
    assert outcome(decoded(ts=KAFKA_TS + skew)) is None
    assert outcome(decoded(ts=KAFKA_TS + skew + tick)) is ReasonCode.TS_OUT_OF_RANGE
    assert outcome(decoded(ts=KAFKA_TS - age)) is None
    assert outcome(decoded(ts=KAFKA_TS - age - tick)) is ReasonCode.TS_OUT_OF_RANGE


def test_without_a_kafka_timestamp_the_time_rule_is_skipped() -> None:
    far = KAFKA_TS + timedelta(days=3650)
    assert outcome(decoded(ts=far, kafka_ms=None)) is None
    assert outcome(decoded(ts=far)) is ReasonCode.TS_OUT_OF_RANGE


def test_tenant_rules() -> None:
    assert outcome(decoded(tenant_id="tenant-99")) is ReasonCode.TENANT_UNKNOWN
    assert outcome(decoded(tenant_id="tenant-02")) is ReasonCode.TENANT_UNKNOWN  # inactive
    # Ids are matched exactly: no trimming or case folding into another tenant's id.
    assert outcome(decoded(tenant_id="tenant-00 ")) is ReasonCode.TENANT_UNKNOWN
    assert outcome(decoded(tenant_id="TENANT-00")) is ReasonCode.TENANT_UNKNOWN


def test_source_rules() -> None:
    assert outcome(decoded(source="sensor-b")) is None
    assert outcome(decoded(source="feed-c")) is ReasonCode.SOURCE_NOT_ALLOWED
    assert outcome(decoded(tenant_id="tenant-01", source="anything")) is None  # any source
    no_sources = StaticTenants([TenantEntry("tenant-00", True, frozenset())])
    out = check(decoded(), no_sources, SETTINGS)
    assert isinstance(out, Rejected)
    assert out.reason is ReasonCode.SOURCE_NOT_ALLOWED


def test_rules_run_in_a_fixed_order() -> None:
    late = KAFKA_TS - timedelta(days=1)
    # fields before time, time before tenant, tenant before source
    assert outcome(decoded(value=2.0, ts=late, tenant_id="x")) is ReasonCode.FIELD_INVALID
    assert outcome(decoded(ts=late, tenant_id="x")) is ReasonCode.TS_OUT_OF_RANGE
    assert outcome(decoded(tenant_id="tenant-02", source="nope")) is ReasonCode.TENANT_UNKNOWN
    # within the fields, the contract's order
    assert _detail(decoded(tenant_id="", value=math.nan)) == "tenant_id is blank"
    assert _detail(decoded(value=math.nan, source="")) == "value is not finite"


def _detail(item: Decoded) -> str:
    out = check(item, TENANTS, SETTINGS)
    assert isinstance(out, Rejected)
    return out.detail


def test_a_reject_carries_its_context_but_no_data_in_the_detail() -> None:
    item = decoded(value=1.5, offset=5)
    out = check(item, TENANTS, SETTINGS)
    assert isinstance(out, Rejected)
    assert out.reason is ReasonCode.FIELD_INVALID
    assert out.detail == "value out of [0, 1]"
    assert out.stage == "validate"
    assert out.record is item.raw
    assert out.tenant_id == "tenant-00"
    assert out.schema_version == 7

    secret = "tenant-secret-42"
    for bad in (
        decoded(tenant_id=secret, value=1.5),
        decoded(tenant_id=secret, weight=-3.25),
        decoded(tenant_id=secret, ts=KAFKA_TS + timedelta(days=2)),
        decoded(tenant_id=secret),
        decoded(source="source-secret-42"),
    ):
        out = check(bad, TENANTS, SETTINGS)
        assert isinstance(out, Rejected)
        for data in (secret, "source-secret-42", "1.5", "3.25", "2026"):
            assert data not in out.detail


def test_a_reject_without_a_raw_record_gets_one_from_its_provenance() -> None:
    out = check(decoded(raw=False, tenant_id="", offset=9), TENANTS, SETTINGS)
    assert isinstance(out, Rejected)
    assert out.tenant_id is None  # a blank id is no tenant
    assert (out.record.topic, out.record.partition, out.record.offset) == ("t", 1, 9)
    assert out.record.value is None
    assert out.record.timestamp_ms == KAFKA_MS


# -- the Bytewax operator --------------------------------------------------------------------


def _run(items: list[Decoded]) -> tuple[list[Decoded], list[Rejected]]:
    oks: list[Decoded] = []
    errs: list[Rejected] = []
    flow = Dataflow("validate_test")
    up = op.input("in", flow, TestingSource(items))
    out = validate("validate", up, TENANTS, SETTINGS)
    op.output("oks", out.oks, TestingSink(oks))
    op.output("errs", out.errs, TestingSink(errs))
    run_main(flow)
    return oks, errs


def _rejected_count(reason: ReasonCode, tenant: str) -> float:
    labels = {"stage": "validate", "reason": reason.value, "tenant_id": tenant}
    return REGISTRY.get_sample_value("igflow_rejected_total", labels) or 0.0


def test_the_operator_splits_and_counts() -> None:
    items = [
        decoded(offset=0),
        decoded(offset=1, value=-1.0),
        decoded(offset=2, tenant_id="who-knows"),
        decoded(offset=3, source="feed-c"),
        decoded(offset=4, tenant_id="tenant-01", source="feed-c"),
    ]
    before_unknown = _rejected_count(ReasonCode.TENANT_UNKNOWN, "(unregistered)")
    before_source = _rejected_count(ReasonCode.SOURCE_NOT_ALLOWED, "tenant-00")
    oks, errs = _run(items)
    assert [d.provenance.kafka_offset for d in oks] == [0, 4]
    assert [(e.record.offset, e.reason) for e in errs] == [
        (1, ReasonCode.FIELD_INVALID),
        (2, ReasonCode.TENANT_UNKNOWN),
        (3, ReasonCode.SOURCE_NOT_ALLOWED),
    ]
    # An id the registry does not know never becomes a label value.
    assert _rejected_count(ReasonCode.TENANT_UNKNOWN, "(unregistered)") == before_unknown + 1
    assert _rejected_count(ReasonCode.TENANT_UNKNOWN, "who-knows") == 0.0
    assert _rejected_count(ReasonCode.SOURCE_NOT_ALLOWED, "tenant-00") == before_source + 1


# -- laws ------------------------------------------------------------------------------------

_ids = st.sampled_from(["tenant-00", "tenant-01", "tenant-02", "tenant-99", "", " "])
_signals = st.builds(
    Signal,
    tenant_id=_ids,
    signal_id=st.text(max_size=3),
    type=st.sampled_from(["latency", "", "\t"]),
    value=st.floats() | st.sampled_from([0.0, -0.0, 1.0]),
    weight=st.none() | st.floats(),
    source=st.sampled_from(["sensor-a", "sensor-b", "feed-c", "", "x"]),
    ts=st.datetimes(
        min_value=datetime(2025, 12, 31),  # noqa: DTZ001 (hypothesis wants naive bounds)
        max_value=datetime(2026, 1, 2),  # noqa: DTZ001
        timezones=st.sampled_from([UTC]),
    ),
)
_kafka_ms = st.none() | st.integers(KAFKA_MS - 7_200_000, KAFKA_MS + 7_200_000)


@st.composite
def _batches(draw: st.DrawFn) -> list[Decoded]:
    signals = draw(st.lists(_signals, max_size=30))
    return [
        Decoded(
            s,
            Provenance("t", 0, i, 1, "00" * 32),
            stamp := draw(_kafka_ms),
            RawRecord("t", 0, i, None, b"v", stamp),
        )
        for i, s in enumerate(signals)
    ]


@settings(max_examples=40, deadline=None)
@given(items=_batches())
def test_every_record_comes_out_exactly_once(items: list[Decoded]) -> None:
    oks, errs = _run(items)
    seen = sorted([d.provenance.kafka_offset for d in oks] + [e.record.offset for e in errs])
    assert seen == list(range(len(items)))
    # ... and on the side check() decides
    for d in oks:
        assert check(d, TENANTS, SETTINGS) is d


@given(items=_batches())
def test_check_is_a_pure_function(items: list[Decoded]) -> None:
    for item in items:
        first = check(item, TENANTS, SETTINGS)
        again = check(item, TENANTS, SETTINGS)
        copy = check(dataclasses.replace(item), TENANTS, SETTINGS)
        if isinstance(first, Decoded):
            assert again is item
            assert isinstance(copy, Decoded)
        else:
            assert isinstance(again, Rejected)
            assert isinstance(copy, Rejected)
            assert (first.reason, first.detail) == (again.reason, again.detail)
            assert (first.reason, first.detail) == (copy.reason, copy.detail)


@pytest.mark.parametrize("field", ["tenant_id", "signal_id", "type", "source"])
def test_a_nul_character_in_a_string_field_is_invalid(field: str) -> None:
    item = decoded(**{field: "a\x00b"})
    out = check(item, TENANTS, SETTINGS)
    assert isinstance(out, Rejected) and out.reason is ReasonCode.FIELD_INVALID
    assert out.detail == f"{field} contains NUL"


def test_a_nul_character_in_a_selector_is_invalid() -> None:
    out = check(decoded(selectors=("ok", "a\x00")), TENANTS, SETTINGS)
    assert isinstance(out, Rejected) and out.detail == "a selector contains NUL"


LIMITS = ValidateSettings(
    max_future_skew_seconds=300.0,
    max_age_seconds=3600.0,
    max_id_bytes=16,
    max_type_bytes=8,
    max_source_bytes=12,
    max_selectors=3,
    max_selector_bytes=10,
)


def _limited(**fields: Any) -> Rejected | None:
    out = check(decoded(**fields), TENANTS, LIMITS)
    return out if isinstance(out, Rejected) else None


def test_field_sizes_are_bounded_in_utf8_bytes_at_the_limit_inclusive() -> None:
    # Exactly at each limit passes; one byte more is FIELD_INVALID naming field and setting.
    assert _limited(signal_id="s" * 16, type="t" * 8, selectors=("x" * 10,) * 3) is None
    for fields, setting in (
        ({"tenant_id": "t" * 17}, "max_id_bytes"),
        ({"signal_id": "s" * 17}, "max_id_bytes"),
        ({"type": "t" * 9}, "max_type_bytes"),
        ({"source": "sensor-a" + "b" * 5}, "max_source_bytes"),
        ({"selectors": ("a",) * 4}, "max_selectors"),
        ({"selectors": ("a", "x" * 11)}, "max_selector_bytes"),
        # Bytes, not code points: 5 x 2-byte "é" is 10 bytes (passes), 3 x 4-byte emoji is 12.
        ({"signal_id": "\U0001f600" * 5}, "max_id_bytes"),
        ({"selectors": ("\U0001f600" * 3,)}, "max_selector_bytes"),
    ):
        out = _limited(**fields)
        assert out is not None and out.reason is ReasonCode.FIELD_INVALID, fields
        assert setting in out.detail and "\U0001f600" not in out.detail
    assert _limited(selectors=("é" * 5,)) is None
    # A lone surrogate (possible in a Python str) is counted, not a crash.
    assert _limited(signal_id="\ud800" * 6) is not None


def test_default_limits_refuse_the_issues_megabyte_fields() -> None:
    for fields in (
        {"signal_id": "s" * (1 << 20)},
        {"type": "t" * (1 << 20)},
        {"selectors": ("x" * (1 << 20),)},
        {"selectors": tuple(f"sel-{i}" for i in range(100_000))},
    ):
        out = check(decoded(**fields), TENANTS, ValidateSettings())
        assert isinstance(out, Rejected) and out.reason is ReasonCode.FIELD_INVALID
    at_limit = decoded(selectors=tuple(f"{i:0256d}" for i in range(1000)))
    assert check(at_limit, TENANTS, ValidateSettings()) is at_limit


def test_size_limits_below_one_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="max_selectors must be >= 1"):
        check_settings(dataclasses.replace(ValidateSettings(), max_selectors=0))


# -- the batch path (issue 15): check_batch == check, record by record -----------------------

_SMALL = ValidateSettings(
    max_future_skew_seconds=300.0,
    max_age_seconds=3600.0,
    max_id_bytes=40,  # a quarter holds "tenant-00"
    max_type_bytes=28,  # ... "latency"
    max_source_bytes=32,  # ... "sensor-a"
    max_selectors=2,
    max_selector_bytes=5,
)
_BOUND = st.sampled_from([-1, 0, 1, 999, 1000, 1001])
_texts = st.sampled_from(
    ["a", "ab", "é", "日本", "\u2003", " x", "\x00", "", "abcdefgh", "é" * 14, "x" * 41, "é" * 21]
)
_zones = st.sampled_from([UTC, UTC, UTC, timezone(timedelta(hours=2)), None])


@st.composite
def _column_batch(draw: st.DrawFn) -> list[Decoded]:
    """Mostly valid records (so the columns clear most of a batch), each field now and then
    at or past a rule's boundary: sizes at the byte limits, blank and Unicode white space,
    NUL, NaN and infinities, ints, naive and non-UTC times, event times within a µs of a
    bound, no Kafka timestamp, unknown, inactive and source-restricted tenants."""
    n = draw(st.integers(16, 60) | st.integers(0, 15))  # 16: check_batch's columnar minimum
    out = []
    for i in range(n):
        odd = draw(st.integers(0, 4)) == 0
        fields: dict[str, Any] = {}
        if odd:
            fields = draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "tenant_id": st.sampled_from(["tenant-99", "tenant-02", "tenant-01"])
                        | _texts,
                        "signal_id": _texts,
                        "type": _texts,
                        "source": st.sampled_from(["feed-c", "sensor-b"]) | _texts,
                        "value": st.floats()
                        | st.sampled_from([0, 1, 2, -0.0, 1.0 + 1e-16, 5e-324]),
                        "weight": st.none() | st.floats() | st.sampled_from([0, -0.0, 3]),
                        "selectors": (
                            st.lists(_texts, max_size=3) | st.lists(st.just("a"), max_size=3)
                        ).map(tuple),
                    },
                )
            )
            zone = draw(_zones)
            base = KAFKA_TS.replace(tzinfo=None)
            if draw(st.booleans()):  # at a bound, to the microsecond
                skew = draw(st.sampled_from([300, -3600])) * 1_000_000 + draw(_BOUND) * (
                    1 if draw(st.booleans()) else -1
                )
                base += timedelta(microseconds=skew)
            ts = base.replace(tzinfo=UTC)
            fields["ts"] = ts.astimezone(zone) if zone is not None else base
        item = decoded(offset=i, **fields)
        if odd and draw(st.integers(0, 3)) == 0:
            item = dataclasses.replace(item, kafka_timestamp_ms=None)
        out.append(item)
    return out


def _same_results(items: list[Decoded], directory: Any, limits: ValidateSettings) -> None:
    from core.signal_rules import check_batch

    batch = check_batch(items, directory, limits)
    reference = [check(item, directory, limits) for item in items]
    assert len(batch) == len(reference)
    for got, want, item in zip(batch, reference, items, strict=True):
        if isinstance(want, Decoded):
            assert got is item
        else:
            assert isinstance(got, Rejected)
            assert (got.reason, got.detail, repr(got)) == (want.reason, want.detail, repr(want))


@settings(max_examples=300, deadline=None)
@given(items=_column_batch())
def test_check_batch_equals_check_record_by_record(items: list[Decoded]) -> None:
    _same_results(items, TENANTS, SETTINGS)
    _same_results(items, TENANTS, _SMALL)


@settings(max_examples=60, deadline=None)
@given(items=_batches())
def test_check_batch_equals_check_on_random_records(items: list[Decoded]) -> None:
    _same_results(items, TENANTS, SETTINGS)
    _same_results(items * 2, TENANTS, SETTINGS)


def test_check_batch_leaves_a_value_that_is_not_a_number_to_the_reference() -> None:
    from core.signal_rules import check_batch

    items = [decoded(offset=i) for i in range(20)]
    odd = dataclasses.replace(items[3], signal=dataclasses.replace(SIGNAL, value="0.5"))
    items[3] = odd
    with pytest.raises(TypeError):  # what check itself does with it
        check(odd, TENANTS, SETTINGS)
    with pytest.raises(TypeError):
        check_batch(items, TENANTS, SETTINGS)
