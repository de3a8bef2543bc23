"""validate's C loop (``core/_native.c`` validate_run, behind ``validate_batch``) against its
Python reference (``validate_batch(..., native=False)``): the same results, down to the pickles,
the same holds asked in the same order, the same metrics, for random records with every reason
code and the odd values and types a record may carry; and nothing kept or leaked."""

from __future__ import annotations

import dataclasses
import gc
import math
import pickle
import sys
import tracemalloc
import types
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

import operators.validate as validate_module
from core.metrics import REJECTED
from core.reasons import ReasonCode
from core.records import Decoded, Provenance, RawRecord, Rejected, Signal
from core.settings import ValidateSettings
from operators.validate import StaticTenants, TenantEntry, validate_batch

KAFKA_TS = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
KAFKA_MS = int(KAFKA_TS.timestamp() * 1000)
SETTINGS = ValidateSettings(max_future_skew_seconds=300.0, max_age_seconds=3600.0)
SMALL = ValidateSettings(
    max_future_skew_seconds=300.0,
    max_age_seconds=3600.0,
    max_id_bytes=8,
    max_type_bytes=4,
    max_source_bytes=8,
    max_selectors=2,
    max_selector_bytes=5,
)
TENANTS = StaticTenants(
    [
        TenantEntry("tenant-00", True, frozenset({"sensor-a", "sensor-b"})),
        TenantEntry("tenant-01", True, None),
        TenantEntry("tenant-02", False, None),
        TenantEntry("tenant-03", True, {"sensor-a"}),  # type: ignore[arg-type]  (a set)
        TenantEntry("tenant-04", True, ["sensor-a"]),  # type: ignore[arg-type]  (another type)
        TenantEntry("é日", True, None),
    ]
)
TRACE = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"


class _Str(str):
    """A ``str`` subclass: the C loop takes exact types only, the reference decides others."""


class _Float(float):
    pass


_texts = st.sampled_from(
    [
        *("a", "ab", "é", "日本", "\u2003", " x", "x ", "\x00", "a\x00", "é\x00", "", "abcdefgh"),
        "abcdefghi",
        "é" * 2,
        "é" * 4,
        "é" * 5,
        "x" * 41,
        "\U0001f600",
        "\u3000a",
        "\x85",
    ]
) | st.text(max_size=6)
_tenants = st.sampled_from(
    ["tenant-00", "tenant-01", "tenant-02", "tenant-03", "tenant-04", "tenant-99", "é日"]
)
_sources = st.sampled_from(["sensor-a", "sensor-b", "feed-c"])
_numbers = (
    st.floats()
    | st.floats(-0.5, 1.5)
    | st.sampled_from([0.0, -0.0, 1.0, 0.5, 1.0 + 1e-16, 5e-324, -5e-324, math.inf, -math.inf])
    | st.sampled_from([0, 1, 2, True, False])
    | st.builds(_Float, st.floats(0, 1))
)
_zones = st.sampled_from(
    [UTC, UTC, UTC, timezone(timedelta(0)), timezone(timedelta(hours=2)), None]
)
_BOUND_US = st.sampled_from([-1000, -1, 0, 1, 999, 1000, 1001])
_FIRST_DAY = datetime(1, 1, 2, tzinfo=UTC)
_LAST_DAY = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
_stamps = st.sampled_from([None, None, None, True, 2**70, -(2**70), 4 * 10**15 + 1, KAFKA_MS * 1.0])


def _odd(draw: st.DrawFn) -> bool:
    """Whether one aspect of a record is odd: 1 in 8, so that most odd records have one."""
    return draw(st.integers(0, 7)) == 0


@st.composite
def _batch(draw: st.DrawFn) -> list[Decoded]:
    """Mostly valid records, each aspect now and then odd: a field at or past a rule's
    boundary or of another type, an event time a µs around a bound or far off, a time zone, no
    or an odd Kafka timestamp, a traced record, unknown, inactive and source-restricted
    tenants; now and then a record the reference raises for."""
    out = []
    for i in range(draw(st.integers(0, 40))):
        fields: dict[str, Any] = {
            "tenant_id": draw(_tenants) if _odd(draw) else "tenant-00",
            "signal_id": draw(_texts | st.builds(_Str, _texts)) if _odd(draw) else f"s-{i}",
            "type": draw(_texts) if _odd(draw) else "latency",
            "value": draw(_numbers) if _odd(draw) else 0.5,
            "weight": draw(_numbers | st.none()) if _odd(draw) else None,
            "source": draw(_sources | _texts | st.builds(_Str, _sources))
            if _odd(draw)
            else "sensor-a",
            "selectors": draw(
                st.lists(_texts, max_size=3).map(tuple)
                | st.sampled_from([["a"], None, (_Str("a"),), ("a\x00",), ("a",) * 3])
            )
            if _odd(draw)
            else (),
        }
        ts = KAFKA_TS - timedelta(seconds=1)
        if _odd(draw):  # at a bound, to the microsecond, or far off
            skew = draw(st.sampled_from([300, -3600])) * 1_000_000 + draw(_BOUND_US)
            ts = KAFKA_TS + timedelta(microseconds=skew)
        if _odd(draw):
            ts = draw(st.sampled_from([_FIRST_DAY, _LAST_DAY]))
        if _odd(draw):
            zone = draw(_zones)
            ts = ts.astimezone(zone) if zone is not None else ts.replace(tzinfo=None)
        stamp: Any = draw(_stamps) if _odd(draw) else KAFKA_MS
        trace = TRACE if _odd(draw) else None
        signal = Signal(**{**fields, "ts": ts})
        provenance = Provenance("t", 1, i, 7, "ab" * 32)
        raw = RawRecord("t", 1, i, b"k", b"v", KAFKA_MS) if i % 3 else None
        out.append(Decoded(signal, provenance, stamp, raw, (), trace))
    if out and draw(st.integers(0, 9)) == 0:  # now and then a record the reference raises for
        i = draw(st.integers(0, len(out) - 1))
        odd = draw(st.sampled_from([{"value": "0.5"}, {"weight": "1"}, {"selectors": ("a", 1)}]))
        out[i] = dataclasses.replace(out[i], signal=dataclasses.replace(out[i].signal, **odd))
    return out


class _Holds:
    """Holds records by offset (a verdict for every ``every``-th one), logging each call."""

    def __init__(self, name: str, every: int, reason: ReasonCode, log: list[Any]) -> None:
        self.name, self.every, self.reason, self.log = name, every, reason, log

    def gate(self) -> Any:
        return self.held

    def held(self, item: Decoded) -> tuple[ReasonCode, str] | None:
        offset = item.provenance.kafka_offset
        self.log.append((self.name, offset))
        if self.every and offset % self.every == self.every - 1:
            return self.reason, f"{self.name} holds {offset}"
        return None


def _hold(check: Callable[[Decoded], Any]) -> Any:
    """A hold that asks ``check`` of every record."""
    return types.SimpleNamespace(held=check, gate=lambda: check)


def _rejected() -> dict[tuple[str, ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for metric in REJECTED.collect()
        for s in metric.samples
        if s.name == "igflow_rejected_total" and s.labels.get("stage") == "validate"
    }


def _outcome(
    items: list[Decoded], limits: Any, every: tuple[int, int], *, native: bool
) -> tuple[list[Any], list[Any], dict[tuple[str, ...], float]]:
    log: list[Any] = []
    sources = _Holds("sources", every[0], ReasonCode.SOURCE_UNREGISTERED, log)
    switches = _Holds("switches", every[1], ReasonCode.SOURCE_DISABLED, log)
    step = validate_batch(TENANTS, limits, switches, sources, native=native)
    before = _rejected()
    try:
        out: list[Any] = step(list(items))
    except Exception as e:  # (both sides must fail alike)
        out = [type(e)]
    after = _rejected()
    counted = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    return out, log, counted


def _same(items: list[Decoded], limits: Any, every: tuple[int, int] = (0, 0)) -> None:
    native, native_log, native_counts = _outcome(items, limits, every, native=True)
    python, python_log, python_counts = _outcome(items, limits, every, native=False)
    assert [repr(x) for x in native] == [repr(x) for x in python]
    if not (len(python) == 1 and isinstance(python[0], type)):  # (unless it raised)
        assert [pickle.dumps(x) for x in native] == [pickle.dumps(x) for x in python]
        for got, item in zip(native, items, strict=True):
            if isinstance(got, Decoded):
                assert got is item  # a record that passes is itself
        # the holds, asked in the same order, and the rejects counted (where a record makes
        # the reference raise, its check_batch raises before any hold is asked; the C loop has
        # asked and counted the records before it: the step fails either way)
        assert native_log == python_log
        assert native_counts == python_counts


_limits = st.builds(
    types.SimpleNamespace,
    max_future_skew_seconds=st.sampled_from([300.0, 0.0, 1e-6, 1e300, -1e300, math.inf, 0.5e-6]),
    max_age_seconds=st.sampled_from([3600.0, 0.0, 1e300, math.nan, 3600]),
    max_id_bytes=st.sampled_from([1, 3, 4, 8, 9, 2**70]),
    max_type_bytes=st.sampled_from([1, 4, 7, 128]),
    max_source_bytes=st.sampled_from([8, 256, 2**63]),
    max_selectors=st.sampled_from([0, 1, 2, 1000]),
    max_selector_bytes=st.sampled_from([1, 4, 5, 256]),
)


@settings(max_examples=400, deadline=None)
@given(items=_batch(), every=st.tuples(st.integers(0, 4), st.integers(0, 4)))
def test_the_c_loop_gives_what_its_python_reference_gives(
    items: list[Decoded], every: tuple[int, int]
) -> None:
    _same(items, SETTINGS, every)
    _same(items, SMALL, every)


@settings(max_examples=200, deadline=None)
@given(items=_batch(), limits=_limits)
def test_the_c_loop_equals_the_reference_under_any_limits(
    items: list[Decoded], limits: types.SimpleNamespace
) -> None:
    _same(items, limits, (3, 0))


def _clean(n: int) -> list[Decoded]:
    return [
        Decoded(
            Signal(
                f"tenant-0{i % 2}",
                f"s-{i}",
                "latency",
                0.25,
                None if i % 2 else 2.0,
                "sensor-a",
                KAFKA_TS - timedelta(seconds=i),
                ("a", "b") if i % 3 else (),
            ),
            Provenance("t", 1, i, 7, "ab" * 32),
            KAFKA_MS if i % 4 else None,
            RawRecord("t", 1, i, b"k", b"v", KAFKA_MS),
        )
        for i in range(n)
    ]


def test_the_c_loop_decides_the_common_record_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record that breaks no rule and is not held never reaches the Python rules (else the
    C loop would only add a call); one at an exact bound does, and passes."""
    checked: list[Decoded] = []
    real = validate_module.check

    def spy(item: Decoded, tenants: Any, limits: Any) -> Any:
        checked.append(item)
        return real(item, tenants, limits)

    monkeypatch.setattr(validate_module, "check", spy)
    items = _clean(40)
    at_bound = dataclasses.replace(
        items[5], signal=dataclasses.replace(items[5].signal, ts=KAFKA_TS + timedelta(seconds=300))
    )
    items[5] = at_bound
    assert validate_batch(TENANTS, SETTINGS)(items) == items
    assert checked == []  # the bound is inclusive, and the C loop's µs are exact
    past = dataclasses.replace(
        at_bound,
        signal=dataclasses.replace(at_bound.signal, ts=at_bound.signal.ts + _MICROSECOND),
    )
    out = validate_batch(TENANTS, SETTINGS)([*items[:5], past, *items[6:]])
    assert checked == [past]
    assert isinstance(out[5], Rejected)
    assert out[5].reason is ReasonCode.TS_OUT_OF_RANGE


_MICROSECOND = timedelta(microseconds=1)


def _run_many(step: Callable[[list[Decoded]], list[Any]], items: list[Decoded], n: int) -> None:
    for _ in range(n):
        step(items)


def test_the_c_loop_keeps_nothing_and_passes_errors_on() -> None:
    items = _clean(30)
    # Every path: cleared, held by a gate (refused), left to the reference (a reject, a traced).
    items[3] = dataclasses.replace(items[3], signal=dataclasses.replace(items[3].signal, value=2.0))
    items[4] = dataclasses.replace(items[4], trace=TRACE)
    log: list[Any] = []
    step = validate_batch(
        TENANTS, SETTINGS, _Holds("switches", 5, ReasonCode.SOURCE_DISABLED, log), None
    )
    tracemalloc.start()
    try:
        for rounds in (20, 200):
            gc.collect()
            log.clear()
            before = tracemalloc.get_traced_memory()[0]
            _run_many(step, items, rounds)
            log.clear()
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        assert grown < 64_000, grown
    finally:
        tracemalloc.stop()
    # Nor a reference to what a record holds (that would keep every batch alive), nor to a
    # tenant's sources or a hold's verdict.
    first = items[1]
    s = first.signal
    verdict = (ReasonCode.SOURCE_DISABLED, "held")
    held = [first, s, s.tenant_id, s.source, s.ts, s.value, s.selectors, verdict]
    entry = TENANTS.get("tenant-00")
    held += [entry, entry.sources]  # type: ignore[union-attr]
    counts = [sys.getrefcount(x) for x in held]
    always = validate_batch(TENANTS, SETTINGS, _hold(lambda item: verdict))
    for _ in range(50):
        step(items)
        always(items)
    log.clear()
    assert [sys.getrefcount(x) for x in held] == counts


def test_the_c_loop_passes_errors_on_and_keeps_nothing_then() -> None:
    items = _clean(20)
    s = items[7].signal
    held = [items[7], s, s.tenant_id, s.source]
    counts = [sys.getrefcount(x) for x in held]

    def failing_hold(item: Decoded) -> None:
        if item.provenance.kafka_offset == 7:
            raise ZeroDivisionError
        return None

    def failing_get(tenant: str) -> None:
        raise ZeroDivisionError

    def bad_verdict(item: Decoded) -> Any:
        return None if item.provenance.kafka_offset != 7 else ("not", "a", "verdict")

    def fail_all() -> None:
        with pytest.raises(ZeroDivisionError):
            validate_batch(TENANTS, SETTINGS, _hold(failing_hold))(items)
        with pytest.raises(ZeroDivisionError):
            validate_batch(types.SimpleNamespace(get=failing_get), SETTINGS)(items)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unpack"):  # as hold() unpacking it
            validate_batch(TENANTS, SETTINGS, _hold(bad_verdict))(items)
        with pytest.raises(AttributeError):  # not a record: the reference's error
            validate_batch(TENANTS, SETTINGS)([*items[:3], object()])  # type: ignore[list-item]

    tracemalloc.start()
    try:
        for rounds in (20, 200):
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(rounds):
                fail_all()
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        assert grown < 64_000, grown
    finally:
        tracemalloc.stop()
    assert [sys.getrefcount(x) for x in held] == counts


@pytest.mark.parametrize("odd", [Signal.tenant_id, Signal.key, None])
def test_the_c_loop_refuses_slots_it_cannot_read(odd: Any) -> None:
    from core import _native

    with pytest.raises(TypeError, match="slot"):
        _native.validate_run(
            [],
            (Decoded.signal, Decoded.kafka_timestamp_ms, odd),
            validate_module._SIGNAL_SLOTS,
            (1,) * 7,
            UTC,
            TENANTS.get,
            (),
            print,
            print,
        )
