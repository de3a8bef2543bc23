"""score: the exact windowed mean against a brute force from scratch, rounding, thresholds,
recovery, and the operator in the real engine."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import bytewax.operators as op
import hypothesis.strategies as st
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given, settings
from prometheus_client import REGISTRY

from core.records import Decoded, PolicyTags, Provenance, ScoreChange, Signal, Tagged
from core.settings import ScoreSettings
from operators.score import Status, TenantScore, round_half_even, score, score_decimal
from tests.runs import pairs, random_runs
from tests.score_ticks import last_of_each_tick

START = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW = 100.0
SETTINGS = ScoreSettings(window_seconds=WINDOW)
TAGS = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")


def _tagged(
    t: float, value: float, weight: float | None = 1.0, offset: int = 0, tenant: str = "t0"
) -> Tagged:
    """A tagged signal at ``START + t`` seconds."""
    signal = Signal(
        tenant, f"s{offset}", "latency", value, weight, "a", START + timedelta(seconds=t)
    )
    provenance = Provenance("coherence.signals.v1", 0, offset, 1, "h")
    return Tagged(Decoded(signal, provenance), TAGS, "policy-v", f"prov-{offset}")


def _brute(items: list[Tagged], window: float = WINDOW) -> Fraction:
    """The score from scratch: the weighted mean over ``(W - window, W]`` with Fractions."""
    newest = max(i.signal.ts for i in items)
    inside = [i.signal for i in items if i.signal.ts > newest - timedelta(seconds=window)]
    weights = [Fraction(1 if s.weight is None else s.weight) for s in inside]
    values = [Fraction(s.value) for s in inside]
    total = sum(weights, Fraction(0))
    if total == 0:
        return sum(values, Fraction(0)) / len(values)
    return sum((v * w for v, w in zip(values, weights, strict=True)), Fraction(0)) / total


def _status(exact: Fraction, s: ScoreSettings = SETTINGS) -> str:
    if exact >= Fraction(str(s.healthy_at)):
        return "HEALTHY"
    return "WARN" if exact >= Fraction(str(s.warn_at)) else "CRITICAL"


_value = st.sampled_from([0.0, 1.0, 0.5, 0.1, 0.75]) | st.floats(0, 1)
_weight = st.none() | st.sampled_from([0.0, 1.0, 0.5, 3.0]) | st.floats(0, 1e6)
# (seconds after START, value, weight): spans four windows, out of order.
_signal = st.tuples(st.integers(0, 400), _value, _weight)


@settings(max_examples=400, deadline=None)
@given(st.lists(_signal, min_size=1, max_size=40))
def test_the_exact_score_is_the_brute_force_mean(
    signals: list[tuple[int, float, float | None]],
) -> None:
    state = TenantScore(SETTINGS)
    items: list[Tagged] = []
    last: tuple[Fraction, str] | None = None
    for n, (t, value, weight) in enumerate(signals):
        item = _tagged(t, value, weight, offset=n)
        items.append(item)
        change = state.add(item)
        brute = _brute(items)
        assert state.exact == brute
        assert state.status == _status(brute)
        if change is None:
            assert last == (brute, _status(brute))
            continue
        last = (brute, change.status)
        assert change.score == float(brute)
        assert change.status == _status(brute)
        newest = max(i.signal.ts for i in items)
        inside = [i.signal for i in items if i.signal.ts > newest - timedelta(seconds=WINDOW)]
        assert change.updated_at == newest
        assert change.window_count == len(state) == len(inside)
        assert change.window_weight == float(
            sum((Fraction(1 if s.weight is None else s.weight) for s in inside), Fraction(0))
        )
        assert (change.provenance_id, change.provenance) == (item.provenance_id, item.provenance)


def test_a_late_signal_changes_nothing() -> None:
    state = TenantScore(SETTINGS)
    assert state.add(_tagged(200, 1.0)) is not None
    assert state.add(_tagged(100, 0.0, offset=1)) is None  # exactly W - window: outside
    assert state.add(_tagged(100.000001, 0.0, offset=2)) is not None  # just inside
    assert len(state) == 2


def test_a_signal_that_keeps_the_score_emits_nothing() -> None:
    state = TenantScore(SETTINGS)
    state.add(_tagged(0, 0.5))
    assert state.add(_tagged(1, 0.5, weight=None, offset=1)) is None
    assert len(state) == 2


def test_eviction_as_event_time_advances() -> None:
    state = TenantScore(SETTINGS)
    state.add(_tagged(0, 0.0, weight=3.0))
    state.add(_tagged(50, 1.0, offset=1))
    change = state.add(_tagged(100, 1.0, offset=2))  # the first leaves: (0, 100] is empty of it
    assert change is not None
    assert (change.score, change.status, change.window_count) == (1.0, "HEALTHY", 2)


def test_all_zero_weights_give_the_unweighted_mean() -> None:
    state = TenantScore(SETTINGS)
    state.add(_tagged(0, 0.25, weight=0.0))
    change = state.add(_tagged(1, 1.0, weight=0.0, offset=1))
    assert change is not None
    assert (change.score, change.window_weight, change.status) == (0.625, 0.0, "WARN")
    # One weighted signal and the zero weights count for nothing.
    change = state.add(_tagged(2, 0.125, weight=2.0, offset=2))
    assert change is not None
    assert (change.score, change.status) == (0.125, "CRITICAL")


def _two(v1: float, w1: float, v2: float, w2: float, s: ScoreSettings = SETTINGS) -> TenantScore:
    state = TenantScore(s)
    state.add(_tagged(0, v1, w1))
    state.add(_tagged(1, v2, w2, offset=1))
    return state


def test_thresholds_are_inclusive_and_exact() -> None:
    assert _two(1.0, 3.0, 0.0, 1.0).status is Status.HEALTHY  # exactly 3/4
    assert _two(1.0, 1.0, 0.0, 1.0).status is Status.WARN  # exactly 1/2
    assert _two(1.0, 74999.0, 0.0, 25001.0).status is Status.WARN  # 0.74999
    assert _two(1.0, 49999.0, 0.0, 50001.0).status is Status.CRITICAL  # 0.49999
    # A threshold is the decimal it is written as: the double 0.1 lies above 1/10, the exact
    # score 1/10 still reaches it.
    tenth = ScoreSettings(window_seconds=WINDOW, healthy_at=0.75, warn_at=0.1)
    state = _two(1.0, 1.0, 0.0, 9.0, tenth)
    assert state.exact == Fraction(1, 10) < Fraction(0.1)
    assert state.status is Status.WARN


def test_round_half_even_from_the_exact_value() -> None:
    assert round_half_even(Fraction(1, 8)) == Decimal("0.12")
    assert round_half_even(Fraction(3, 8)) == Decimal("0.38")
    assert round_half_even(Fraction(27, 200)) == Decimal("0.14")  # 0.135
    assert round_half_even(Fraction(33, 200)) == Decimal("0.16")  # 0.165
    assert round_half_even(Fraction(33, 200) + Fraction(1, 10**30)) == Decimal("0.17")
    assert round_half_even(Fraction(1)) == Decimal("1.00")
    assert str(round_half_even(Fraction(0))) == "0.00"
    assert round_half_even(Fraction(-1, 8)) == Decimal("-0.12")
    assert round_half_even(Fraction(5, 2), places=0) == Decimal("2")


def test_score_decimal_of_the_exact_score_and_of_the_double() -> None:
    # Weights 33 and 167 on values 1 and 0: exactly 0.165, a decimal tie.
    state = TenantScore(SETTINGS)
    state.add(_tagged(0, 1.0, 33.0))
    change = state.add(_tagged(1, 0.0, 167.0, offset=1))
    assert change is not None
    exact = state.exact
    assert exact == Fraction(33, 200)
    assert score_decimal(exact) == Decimal("0.16")
    # The double nearest to it lies above the tie: rounding it would give 0.17, so a
    # ScoreChange carries the exactly rounded value.
    assert change.score == 0.165
    assert Fraction(change.score) > exact
    assert score_decimal(Fraction(change.score)) == Decimal("0.17")
    assert change.score_2dp == score_decimal(change) == Decimal("0.16")
    # Where the double is the exact value (1/8), both agree.
    eighth = _two(1.0, 1.0, 0.0, 7.0).exact
    assert eighth is not None
    assert score_decimal(eighth) == score_decimal(Fraction(0.125)) == Decimal("0.12")


def test_invalid_settings_and_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="window_seconds"):
        TenantScore(ScoreSettings(window_seconds=0))
    with pytest.raises(ValueError, match="weight"):
        TenantScore(SETTINGS).add(_tagged(0, 0.5, weight=-1.0))


@settings(max_examples=200, deadline=None)
@given(st.lists(_signal, max_size=40), st.integers(0, 40), st.booleans())
def test_a_snapshot_resumes_as_if_uninterrupted(
    signals: list[tuple[int, float, float | None]], cut: int, pickled: bool
) -> None:
    items = [_tagged(t, v, w, offset=n) for n, (t, v, w) in enumerate(signals)]
    uninterrupted = TenantScore(SETTINGS)
    expected = [uninterrupted.add(i) for i in items]
    state = TenantScore(SETTINGS)
    changes = [state.add(i) for i in items[: min(cut, len(items))]]
    resumed = pickle.loads(pickle.dumps(state)) if pickled else copy.deepcopy(state)
    del state  # the crash
    changes += [resumed.add(i) for i in items[min(cut, len(items)) :]]
    assert changes == expected
    assert resumed.exact == uninterrupted.exact


@pytest.mark.parametrize("tick", [0.0, 1.0, 10.0])
def test_the_operator_in_the_engine(tick: float) -> None:
    """The operator emits the last change of each tick of the per-record reference (tick 0:
    every change); the end of the input publishes the open tick."""
    settings_ = dataclasses.replace(SETTINGS, tick_seconds=tick)
    tenants = ["score-a", "score-b"]
    items = [
        _tagged(n * 7 % 130, (n % 11) / 10, None if n % 3 else 2.0, offset=n, tenant=tenants[n % 2])
        for n in range(120)
    ]
    before = {
        (t, s): REGISTRY.get_sample_value(
            "igflow_score_changes_total", {"tenant_id": t, "status": s}
        )
        or 0.0
        for t in tenants
        for s in Status
    }
    out: list[tuple[str, ScoreChange]] = []
    flow = Dataflow("score_test")
    up = op.input("in", flow, TestingSource(items, batch_size=8))
    keyed = random_runs("by_tenant", up, lambda i: i.signal.tenant_id, seed=len(items))
    op.output("out", pairs("out_pairs", score("score", keyed, settings_)), TestingSink(out))
    run_main(flow)

    for tenant in tenants:
        state = TenantScore(SETTINGS)
        every = [c for i in items if i.signal.tenant_id == tenant if (c := state.add(i))]
        expected = last_of_each_tick(every, tick)
        assert [c for k, c in out if k == tenant] == expected
        assert expected
        assert (len(expected) < len(every)) == (tick > 0)
        for s in Status:
            now = REGISTRY.get_sample_value(
                "igflow_score_changes_total", {"tenant_id": tenant, "status": s.value}
            )
            assert (now or 0.0) - before[tenant, s] == sum(1 for c in expected if c.status == s)


def test_changes_are_numbered_per_tenant_and_the_numbers_survive_a_snapshot() -> None:
    state = TenantScore(SETTINGS)
    first = state.add(_tagged(0, 0.5, 1.0))
    assert first is not None and first.seq == 1
    assert state.add(_tagged(1, 0.5, 1.0, offset=1)) is None  # no change: no number used
    resumed = copy.deepcopy(state)
    second = resumed.add(_tagged(2, 0.9, 1.0, offset=2))
    assert second is not None and second.seq == 2


def test_weights_whose_sum_is_no_double_still_score() -> None:
    # Found by the Kafka fuzz test (issue 12): two valid weights of 1e308 made the reported
    # window weight overflow (OverflowError), which stopped the flow at that record.
    state = TenantScore(SETTINGS)
    state.add(_tagged(0, 0.25, weight=1e308))
    change = state.add(_tagged(1, 0.75, weight=1e308, offset=1))
    assert change is not None
    assert change.score == 0.5 and change.status == "WARN"
    assert change.window_weight == sys.float_info.max
