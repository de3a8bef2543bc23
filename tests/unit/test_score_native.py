"""The score step's clean path in C (``core/_native.c`` ``score_run``, :meth:`TickScore.add`)
against its Python reference (:meth:`TickScore.add_python`): the same changes and the same
state, down to the pickles, for any input and batching; errors passed on with the state the
reference leaves; every unusual batch left to Python untouched; nothing kept."""

from __future__ import annotations

import copy
import gc
import itertools
import pickle
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from unittest import mock

import hypothesis.strategies as st
import pytest
from hypothesis import example, given, settings

from core import _native
from core.records import Decoded, PolicyTags, Provenance, ScoreChange, Signal, Tagged
from core.settings import ScoreSettings
from operators import score as score_module
from operators.score import TickScore

START = datetime(2026, 1, 1, tzinfo=UTC)
TAGS = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")
TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _tagged(
    ms: int,
    value: float,
    weight: float | None,
    offset: int,
    horizon_ms: int | None = None,
    trace: str | None = None,
) -> Tagged:
    signal = Signal("t0", f"s{offset}", "latency", value, weight, "a", START + _ms(ms))
    provenance = Provenance("coherence.signals.v1", 0, offset, 1, "h")
    horizon = None if horizon_ms is None else START + _ms(horizon_ms)
    decoded = Decoded(signal, provenance, None, None, (), trace, horizon)
    return Tagged(decoded, TAGS, "policy-v", f"prov-{offset}")


def _ms(ms: int) -> timedelta:
    return timedelta(milliseconds=ms)


# Values: mostly scores in [0, 1] (two-place ties among them), and any finite double: zeros of
# both signs, subnormals, the largest, negative ones (validate lets any finite value through).
_value = (
    st.sampled_from([0.0, -0.0, 1.0, 0.5, 0.165, 0.745, 0.75, 0.49, 0.005])
    | st.floats(0, 1)
    | st.sampled_from([5e-324, 2.2250738585072014e-308, 1e308, -1e308, -0.25, 3.0, 2.0**60])
    | st.floats(allow_nan=False, allow_infinity=False)
)
# Weights: None (1.0), 0 (a zero-weight window scores unweighted), subnormal, huge exponents.
_weight = (
    st.none()
    | st.sampled_from([0.0, 1.0, 3.0, 0.5, 5e-324, 2.2250738585072014e-308, 1e308, 2.0**-1074])
    | st.floats(0, 1e3)
    | st.floats(0, 1.7976931348623157e308)
)
# (ms after START: ties, out of order, late; value; weight; horizon ms ahead or none; traced)
_signal = st.tuples(
    st.integers(0, 400_000).map(lambda ms: ms - ms % 250),
    _value,
    _weight,
    st.none() | st.integers(0, 3_000).map(lambda ms: ms - ms % 125),
    st.integers(0, 19).map(lambda k: k == 0),
)
_settings = st.builds(
    lambda window, tick, close_on: ScoreSettings(
        window_seconds=window, tick_seconds=tick, close_on=close_on
    ),
    st.sampled_from([100.0, 1.0, 0.25]),
    st.sampled_from([0.0, 0.25, 1.0, 7.5, 60.0]),
    st.sampled_from(["horizon", "signal"]),
)


def _items(signals: list[tuple[int, float, float | None, int | None, bool]]) -> list[Tagged]:
    out = []
    newest = 0
    for n, (ms, value, weight, ahead, traced) in enumerate(signals):
        newest = max(newest, ms)
        horizon = None if ahead is None else newest + ahead
        out.append(_tagged(ms, value, weight, n, horizon, TRACE if traced else None))
    return out


def _chunks(items: list[Tagged], cuts: list[int]) -> list[list[Tagged]]:
    bounds = sorted({0, len(items), *(c % (len(items) + 1) for c in cuts)})
    return [items[a:b] for a, b in itertools.pairwise(bounds)]


class _Spy:
    """``core._native.score_run``, counting the batches it took and left."""

    def __init__(self) -> None:
        self.taken = self.left = 0
        self._real = _native.score_run

    def __call__(self, *args: Any) -> Any:
        got = self._real(*args)
        if got is None:
            self.left += 1
        else:
            self.taken += 1
        return got


@settings(max_examples=500, deadline=None)
@given(
    st.lists(_signal, max_size=60),
    _settings,
    st.lists(st.integers(0, 60), max_size=8),
    st.integers(0, 60),
)
def test_the_c_path_gives_the_references_changes_and_state_for_any_batching(
    signals: list[tuple[int, float, float | None, int | None, bool]],
    score_settings: ScoreSettings,
    cuts: list[int],
    resume_at: int,
) -> None:
    items = _items(signals)
    fast, slow = TickScore(score_settings), TickScore(score_settings)
    spy = _Spy()
    with mock.patch.object(_native, "score_run", spy):
        for k, chunk in enumerate(_chunks(items, cuts)):
            # Left to Python: a traced batch, or one after a traced change still pending.
            left = any(i.decoded.trace for i in chunk) or fast._pending_trace is not None
            taken_before = spy.taken
            got, expected = fast.add(chunk), slow.add_python(chunk)
            assert spy.taken == taken_before + (not left)
            assert got == expected
            assert pickle.dumps(got) == pickle.dumps(expected)  # floats, Decimals, identities
            assert pickle.dumps(fast) == pickle.dumps(slow)
            assert pickle.dumps(copy.deepcopy(fast)) == pickle.dumps(slow)
            if k == resume_at:  # a recovery snapshot in between, resumed
                fast = TickScore.resume(pickle.loads(pickle.dumps(fast)), score_settings)
                slow = TickScore.resume(pickle.loads(pickle.dumps(slow)), score_settings)
    assert fast.flush() == slow.flush()
    assert pickle.dumps(fast) == pickle.dumps(slow)


# Integers of every size score_run's sums can be: small, around 2**63 and around the machine
# integers' 2**126 limit (where a value becomes a Python int), far beyond it; either sign.
_edges = [0, 1, 2**53 - 1, 2**63 - 1, 2**63, 2**64 + 1, 2**125, 2**126 - 1, 2**126, 2**127]
_int = (
    st.sampled_from([*_edges, *(-e for e in _edges)])
    | st.integers(-(2**130), 2**130)
    | st.integers(-(2**70), 2**70)
    | st.integers(0, 2**126).map(lambda x: x | (1 << 125))  # operands whose products carry
    | st.integers(-(2**300), 2**300)
)


@settings(max_examples=2000, deadline=None)
@given(_int, _int, _int, _int, st.integers(0, 130), st.integers(0, 1100))
@example(2**126 - 1, -(2**126 - 1), 1, 1, 1, 0)  # a shift to just below 2**127, then more
@example(-(2**125), 2**126 - 1, 1, 1, 1, 0)
@example(2**100 + 2**47, 0, 0, 0, 0, 60)  # the weight: a tie at its 53rd bit, to even (down)
@example(2**100 + 2**48 + 2**47, 0, 0, 0, 0, 60)  # (up)
def test_the_machine_integers_give_pythons_results(
    a: int, b: int, c: int, d: int, shift: int, ew: int
) -> None:
    # score_run keeps its exact sums as 128-bit integers while they are small enough and as
    # Python ints beyond: each operation it uses, chained, equals Python's int arithmetic.
    try:
        weight = abs(a) / (1 << ew)  # (_score_change's window weight)
    except OverflowError:
        weight = sys.float_info.max
    expected = (a + b + b, (a << shift) - b, a * b * c, a * b != c * d, a * b >= c * d)
    assert _native._score_hints(a, b, c, d, shift, ew) == (*expected, a * b - c * d, weight)


def _bits(n: int) -> st.SearchStrategy[int]:
    """Integers of at most n bits, their bits from random bytes (so that the 64-bit halves'
    partial products carry, as random operands' do 69% of the time)."""
    return st.binary(min_size=n // 8, max_size=n // 8).map(lambda b: int.from_bytes(b) or 1)


@settings(max_examples=1000, deadline=None)
@given(
    _bits(100),
    _bits(100),
    _bits(24),
    st.sampled_from([-1, 0, 1]),
    st.sampled_from([(1, 1), (-1, 1), (1, -1), (-1, -1)]),
)
def test_equal_and_adjacent_products_of_other_factors_compare_as_pythons(
    x: int, y: int, k: int, off: int, signs: tuple[int, int]
) -> None:
    # a * b against c * d where the products are equal or 1 apart though the factors differ:
    # (x k) y against x (y k + off): the comparison's 256 bits, carries included, must be exact.
    a, b, c, d = signs[0] * x * k, y, signs[1] * x, y * k + off
    got = _native._score_hints(a, b, c, d, 0, 0)
    assert got[3:6] == (a * b != c * d, a * b >= c * d, a * b - c * d)


def _clean() -> list[Tagged]:
    """Signals 400 ms apart, a horizon on every third: ticks close by signal and by horizon."""
    return [
        _tagged(400 * k, (k % 13) / 13, None if k % 4 else 1.5, k, 400 * k if k % 3 == 0 else None)
        for k in range(300)
    ]


def _run(state: TickScore, items: list[Tagged]) -> Any:
    return _native.score_run(
        state,
        items,
        score_module._NATIVE_CLASSES,
        score_module._NATIVE_SLOTS,
        score_module._NATIVE_EXTRAS,
    )


def test_a_clean_batch_runs_in_c() -> None:
    state = TickScore(ScoreSettings(window_seconds=10.0, tick_seconds=1.0))
    got = _run(state, _clean())
    assert got is not None and got[1] is None
    assert len(got[0]) > 100


class _Sub(Tagged):
    __slots__ = ()


def _unusual(kind: str) -> tuple[TickScore, list[Tagged]]:
    state = TickScore(ScoreSettings(window_seconds=10.0, tick_seconds=1.0))
    state.add_python(_clean()[:5])  # something held: a window, a pending change
    items = _clean()[5:10]
    first = items[0]
    signal = first.decoded.signal
    if kind == "traced":
        items[2] = _tagged(2_400, 0.5, None, 99, trace=TRACE)
    elif kind == "other zone":
        ts = signal.ts.astimezone(timezone(timedelta(hours=2)))
        items[0] = Tagged(
            Decoded(Signal("t0", "x", "latency", 0.5, None, "a", ts), first.decoded.provenance),
            TAGS,
            "policy-v",
            "p",
        )
    elif kind in ("int value", "negative weight", "nan weight", "int weight"):
        value, weight = {
            "int value": (1, None),
            "negative weight": (0.5, -1.0),
            "nan weight": (0.5, float("nan")),
            "int weight": (0.5, 2),
        }[kind]
        bad = Signal("t0", "x", "latency", value, weight, "a", signal.ts)  # type: ignore[arg-type]
        items[1] = Tagged(Decoded(bad, first.decoded.provenance), TAGS, "policy-v", "p")
    elif kind == "subclass":
        items[3] = _Sub(first.decoded, TAGS, "policy-v", "p")
    elif kind == "pending trace":
        state._pending_trace = TRACE
    elif kind == "heap not a list":
        state._score._heap = tuple(state._score._heap)  # type: ignore[assignment]
    elif kind == "odd horizon":  # a horizon in another zone
        horizon = START.astimezone(timezone(timedelta(hours=1)))
        odd = Decoded(first.decoded.signal, first.decoded.provenance, horizon=horizon)
        items[4] = Tagged(odd, TAGS, "policy-v", "p")
    else:
        raise AssertionError(kind)
    return state, items


@pytest.mark.parametrize(
    "kind",
    [
        "traced",
        "other zone",
        "int value",
        "negative weight",
        "nan weight",
        "int weight",
        "subclass",
        "pending trace",
        "heap not a list",
        "odd horizon",
    ],
)
def test_an_unusual_batch_is_left_to_python_unchanged(kind: str) -> None:
    state, items = _unusual(kind)
    before = pickle.dumps(state)
    assert _run(state, items) is None
    assert pickle.dumps(state) == before


def test_a_negative_weight_still_raises_as_the_reference_does() -> None:
    state, items = _unusual("negative weight")
    with pytest.raises(ValueError, match="weight must be >= 0"):
        state.add(items)


def test_an_error_part_way_leaves_the_references_state_and_is_raised() -> None:
    """A publication that raises (here ``_round_ratio``, at a two-place tie: 0.165) stops the
    call where the reference stops, with the state the reference's ``finally`` writes."""

    def refuse(num: int, den: int, places: int) -> Any:
        raise ArithmeticError("refused")

    items = [_tagged(0, 0.5, None, 0), _tagged(1_000, 0.5, None, 1), _tagged(2_000, 0.165, None, 2)]
    items += [_tagged(3_000, 0.165, 1.0, 3), _tagged(4_000, 0.9, None, 4)]
    s = ScoreSettings(window_seconds=1.5, tick_seconds=0.5)
    fast, slow = TickScore(s), TickScore(s)
    extras = (*score_module._NATIVE_EXTRAS[:4], refuse)
    with (
        mock.patch.object(score_module, "_NATIVE_EXTRAS", extras),
        mock.patch.object(score_module, "_round_ratio", refuse),
    ):
        with pytest.raises(ArithmeticError, match="refused"):
            fast.add(items)
        with pytest.raises(ArithmeticError, match="refused"):
            slow.add_python(items)
    assert pickle.dumps(fast) == pickle.dumps(slow)
    # It stopped at the fifth signal, folded but not yet counted: publishing the fourth's change
    # (0.165, the tie) raised.
    assert (fast._score._seq, fast._score.updated_at) == (3, START + _ms(4_000))
    assert fast.add(items[4:]) + fast.flush() == slow.add_python(items[4:]) + slow.flush()


def test_nothing_is_kept_tracemalloc() -> None:
    """What the C path builds is released with the state and the changes."""
    items = _clean()
    s = ScoreSettings(window_seconds=10.0, tick_seconds=0.0)  # every change published

    def once() -> None:
        state = TickScore(s)
        changes = state.add(items)
        assert len(changes) > 100
        del state, changes

    for _ in range(3):
        once()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(30):
            once()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
    assert grown < 16_000, grown  # (30 x 300 signals: a leak per signal is >= 200 KB)


def test_nothing_is_kept_refcounts() -> None:
    """What the C path reads is not kept: every field's reference count is back once the state
    and the changes are gone."""
    items = _clean()
    s = ScoreSettings(window_seconds=10.0, tick_seconds=1.0)

    def fields(item: Tagged) -> list[object]:
        d = item.decoded
        sig = d.signal
        return [item, d, sig, d.provenance, item.provenance_id, sig.tenant_id, sig.ts]

    watched = [f for item in items for f in fields(item)] + [*score_module._NATIVE_EXTRAS[2]]
    TickScore(s).add(items)  # (a first run: whatever a first call caches)
    gc.collect()
    before = [sys.getrefcount(o) for o in watched]
    state = TickScore(s)
    changes = state.add(items)
    assert changes and state._pending is not None
    del state, changes
    gc.collect()
    assert [sys.getrefcount(o) for o in watched] == before


def test_published_changes_are_plain_score_changes() -> None:
    state = TickScore(ScoreSettings(window_seconds=10.0, tick_seconds=0.0))
    [change] = state.add([_tagged(0, 0.125, None, 0)])
    assert type(change) is ScoreChange
    provenance = Provenance("coherence.signals.v1", 0, 0, 1, "h")
    expected = ScoreChange(
        "t0", 0.125, "CRITICAL", START, 1, 1.0, "prov-0", provenance, Decimal("0.12"), 1
    )
    assert change == expected
    assert pickle.dumps(change) == pickle.dumps(expected)
    assert str(change.score_2dp) == "0.12"  # a tie, half-even (the exact integers' rounding)
    with pytest.raises(AttributeError):
        change.seq = 2  # type: ignore[misc]
