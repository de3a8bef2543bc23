"""Drift statistics: binning, PSI and KS against hand-computed values, KS against brute force,
the batch/window decision, and baseline files."""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import math
import pickle
import random
import sys
import tracemalloc
from bisect import bisect_left, bisect_right
from fractions import Fraction
from itertools import chain
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

import operators.drift_stats as drift_stats
from core import _native
from core.errors import ConfigError
from operators.drift_stats import (
    SMOOTHING,
    Baseline,
    BatchCheck,
    Reference,
    check_batch,
    drifted_check,
    ks_critical,
    ks_statistic,
    load_baseline,
    psi,
)


def test_reference_bins_at_equal_mass_quantiles() -> None:
    ref = Reference.from_values([9, 3, 1, 0, 2, 5, 4, 8, 6, 7], 5)
    assert ref.values == tuple(float(v) for v in range(10))
    assert ref.edges == (2.0, 4.0, 6.0, 8.0)
    assert ref.counts == (2, 2, 2, 2, 2)
    assert ref.proportions == pytest.approx([0.2] * 5)
    assert math.fsum(ref.proportions) == pytest.approx(1.0)


def test_tied_edges_collapse() -> None:
    ref = Reference.from_values([0, 0, 0, 0, 0, 0, 1, 2, 3, 4], 5)
    # Cut points sorted[2], [4], [6], [8] = 0, 0, 1, 3: the two zeros become one edge.
    assert ref.edges == (0.0, 1.0, 3.0)
    assert ref.counts == (0, 6, 2, 2)


def test_constant_data_gives_two_bins_and_smoothed_shares() -> None:
    ref = Reference.from_values([0.5] * 10, 4)
    assert ref.edges == (0.5,)
    assert ref.counts == (0, 10)
    total = 10 + 2 * SMOOTHING
    assert ref.proportions == (SMOOTHING / total, (10 + SMOOTHING) / total)
    assert psi(ref, [0.5] * 10) == 0.0
    assert psi(ref, [0.1] * 10) > 1.0  # all of the sample where the reference has nothing


def test_reference_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Reference.from_values([], 3)
    with pytest.raises(ValueError, match="bins"):
        Reference.from_values([1.0], 0)
    with pytest.raises(ValueError, match="finite"):
        Reference.from_values([1.0, math.inf], 2)


def test_psi_by_hand() -> None:
    ref = Reference.from_values([0, 1, 2, 3], 2)  # edge 2: bins {0, 1} and {2, 3}
    # Smoothed shares: reference (2.5/5, 2.5/5) = (0.5, 0.5); sample (3.5/5, 1.5/5) = (0.7, 0.3).
    # PSI = 0.2 ln(0.7/0.5) + (-0.2) ln(0.3/0.5) = 0.2 ln(7/3).
    assert psi(ref, [3, 0, 0, 0]) == pytest.approx(0.2 * math.log(7 / 3), rel=1e-12)
    assert psi(ref, [0, 1, 2, 3]) == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        psi(ref, [])


def test_psi_is_order_independent_and_non_negative() -> None:
    ref = Reference.from_values([i / 100 for i in range(100)], 10)
    sample = [0.93, 0.12, 0.5, 0.5, 0.77, 0.01]
    assert psi(ref, sample) == psi(ref, sorted(sample)) >= 0.0


def test_ks_by_hand() -> None:
    assert ks_statistic([1, 2, 3], [2, 3, 4]) == pytest.approx(1 / 3)
    # Ties across and within samples: a step-by-step merge would report 2/3 at the two 1s.
    assert ks_statistic([1, 1, 2], [1, 2, 2]) == pytest.approx(1 / 3)
    assert ks_statistic([1, 2, 3, 4], [2.5]) == 0.5
    assert ks_statistic([1, 2], [3, 4, 5]) == 1.0
    assert ks_statistic([1, 2, 2, 3], [1, 2, 2, 3]) == 0.0
    assert ks_statistic([5.0], [5.0]) == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        ks_statistic([], [1.0])


def _ks_brute(a: list[float], b: list[float]) -> float:
    """``max |F_a - F_b|`` over every point of both samples, exactly, in O(n * m)."""
    n, m = len(a), len(b)
    best = Fraction(0)
    for x in a + b:
        fa = Fraction(sum(1 for v in a if v <= x), n)
        fb = Fraction(sum(1 for v in b if v <= x), m)
        best = max(best, abs(fa - fb))
    return float(best)


# Few distinct values, so ties within and across the samples are the common case.
_SAMPLE = st.lists(st.integers(0, 6).map(lambda i: i / 4), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(_SAMPLE, _SAMPLE)
def test_ks_equals_brute_force(a: list[float], b: list[float]) -> None:
    a.sort()
    b.sort()
    d = ks_statistic(a, b)
    assert d == _ks_brute(a, b)
    assert d == ks_statistic(b, a)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=60), st.lists(st.floats(0, 1), min_size=1))
def test_ks_equals_brute_force_on_continuous_values(a: list[float], b: list[float]) -> None:
    a.sort()
    b.sort()
    assert ks_statistic(a, b) == _ks_brute(a, b)


_LARGE = st.lists(
    st.integers(0, 12).map(lambda i: i / 8) | st.floats(0, 1), min_size=32, max_size=120
)


@settings(max_examples=150, deadline=None)
@given(_LARGE, _LARGE | _SAMPLE)
def test_ks_by_arrays_equals_brute_force_and_the_bisections(a: list[float], b: list[float]) -> None:
    """From 32 values on the counts come from numpy's searchsorted: the same D, to the bit, as
    the bisections and the exact fractions, ties included (and a cached reference array)."""
    from operators import drift_stats

    a.sort()
    b.sort()
    ref = tuple(a)
    d = ks_statistic(ref, b)
    assert d == ks_statistic(ref, b)  # the cached array
    assert d == _ks_brute(a, b) == ks_statistic(b, ref)
    big, small = (ref, b) if len(ref) >= len(b) else (b, ref)
    bisected = max(
        drift_stats._scaled_gap(big, small, len(small), len(big), bisect)
        for bisect in (bisect_left, bisect_right)
    ) / (len(a) * len(b))
    assert d == bisected


def test_ks_leaves_nan_and_large_ints_to_the_bisections() -> None:
    from operators import drift_stats

    values = [i / 40 for i in range(40)]
    assert drift_stats._scaled_gap_arrays(values, [*values[:-1], math.nan], 40, 40) is None
    assert drift_stats._scaled_gap_arrays([*values, 2**60], values, 40, 41) is None
    assert ks_statistic(values, values) == 0.0


def test_ks_critical() -> None:
    assert ks_critical(100, 100, 0.05) == pytest.approx(1.3581 * math.sqrt(0.02), rel=1e-4)
    assert ks_critical(1000, 200, 0.01) == pytest.approx(
        math.sqrt(-math.log(0.005) / 2) * math.sqrt(1200 / 200_000)
    )
    assert ks_critical(1, 1, 0.01) > 1.0  # one value against one can never be significant
    with pytest.raises(ValueError, match="alpha"):
        ks_critical(10, 10, 1.0)
    with pytest.raises(ValueError, match="sizes"):
        ks_critical(0, 10, 0.01)


_GRID = [(i + 0.5) / 1000 for i in range(1000)]  # the uniform distribution, deterministically


def _uniform(n: int, low: float = 0.0, high: float = 1.0) -> list[float]:
    return [low + (high - low) * (i + 0.5) / n for i in range(n)]


def test_check_batch_needs_both_tests() -> None:
    ref = Reference.from_values(_GRID, 10)
    same = check_batch(ref, _uniform(200), psi_threshold=0.2, ks_alpha=0.01)
    assert not same.drifted
    assert same.psi < 0.01
    assert same.window_psi == same.psi  # no passed batches: the window is the batch
    assert same.ks is same.window_ks is None  # not needed: the PSI did not reach the threshold
    shifted = check_batch(ref, _uniform(200, 0.3, 1.0), psi_threshold=0.2, ks_alpha=0.01)
    assert shifted.drifted
    assert shifted.psi >= 0.2
    assert shifted.ks > ks_critical(1000, 200, 0.01)
    assert shifted.window_ks == shifted.ks
    # The same shift, but a PSI threshold it does not reach: KS alone does not quarantine.
    assert not check_batch(ref, _uniform(200, 0.3, 1.0), psi_threshold=5.0, ks_alpha=0.01).drifted


def test_the_window_catches_a_shift_too_small_for_one_batch() -> None:
    ref = Reference.from_values(_GRID, 10)
    # A small batch cannot reach the KS critical value of 20 values (0.37 at alpha 0.01) ...
    batch = _uniform(20, 0.25, 1.0)
    alone = check_batch(ref, batch, psi_threshold=0.2, ks_alpha=0.01)
    assert not alone.drifted
    assert alone.psi >= 0.2  # PSI alone does not quarantine either
    assert alone.ks is not None and alone.ks < ks_critical(1000, 20, 0.01)
    # ... but five such batches before it make a window of 120, where it is significant.
    window = [sorted(_uniform(20, 0.25 + k / 1000, 1.0)) for k in range(5)]
    pooled = check_batch(ref, batch, window, psi_threshold=0.2, ks_alpha=0.01)
    assert pooled.drifted
    assert (pooled.psi, pooled.ks) == (alone.psi, alone.ks)
    assert pooled.window_ks is not None and pooled.window_ks > ks_critical(1000, 120, 0.01)
    assert pooled.window_psi >= 0.2


def test_a_drifted_batch_reports_every_statistic() -> None:
    ref = Reference.from_values(_GRID, 10)
    window = [sorted(_uniform(20, 0.25 + k / 1000, 1.0)) for k in range(5)]
    # A batch like the reference, in a window that drifted: the window fires, the batch not.
    check = check_batch(ref, _uniform(20), window, psi_threshold=0.2, ks_alpha=0.01)
    assert check.drifted
    assert check.psi < 0.2
    assert check.ks is not None and check.window_ks is not None


def _write(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "baseline.json"
    path.write_text(content, encoding="utf-8")
    return path


def test_load_baseline_resolves_with_wildcards(tmp_path: Path) -> None:
    data = {
        "tenant-a": {"latency": [0.1, 0.2, 0.3], "*": [0.4, 0.5]},
        "*": {"latency": [0.9, 1], "*": [0, 0.5, 1]},
    }
    baseline = load_baseline(_write(tmp_path, json.dumps(data)), 2)
    assert len(baseline) == 4
    ref = baseline.reference("tenant-a", "latency")
    assert ref is not None
    assert ref.values == (0.1, 0.2, 0.3)
    assert ref.edges == (0.2,)

    def values(tenant: str, kind: str) -> tuple[float, ...] | None:
        found = baseline.reference(tenant, kind)
        return None if found is None else found.values

    assert values("tenant-a", "freshness") == (0.4, 0.5)
    assert values("tenant-b", "latency") == (0.9, 1.0)
    assert values("tenant-b", "freshness") == (0.0, 0.5, 1.0)
    only_b = baseline.for_tenant("tenant-b")
    assert set(only_b) == {("*", "latency"), ("*", "*")}
    assert Baseline({}).reference("t", "x") is None
    restored = pickle.loads(pickle.dumps(baseline))
    assert dict(restored) == dict(baseline)
    assert copy.deepcopy(baseline) is baseline  # immutable: shared by a snapshot


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "top level must be an object"),
        ('{"t": [0.5]}', "must map to an object of types"),
        ('{"t": {"x": []}}', "non-empty list"),
        ('{"t": {"x": 0.5}}', "non-empty list"),
        ('{"t": {"x": [0.5, "high"]}}', "non-number"),
        ('{"t": {"x": [true]}}', "non-number"),
        ('{"t": {"x": [1.5]}}', "outside"),
        ('{"t": {"x": [NaN]}}', "outside"),
    ],
)
def test_a_malformed_baseline_is_a_config_error(tmp_path: Path, content: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_baseline(_write(tmp_path, content), 10)


def test_a_missing_baseline_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read drift baseline file"):
        load_baseline(tmp_path / "absent.json", 10)


# --- check_batch's pooled counts (issue 15) -------------------------------------------------


def _check_batch_merging(
    reference: Reference,
    batch: list[float],
    window: list[tuple[float, ...]],
    *,
    psi_threshold: float,
    ks_alpha: float,
    batch_alone: bool,
) -> BatchCheck:
    """check_batch as it was before the window's counts were summed: the pooled sample merged
    and binned on every call (the reference of the test below)."""
    values = reference.values
    ordered = sorted(batch)
    batch_psi = psi(reference, ordered)
    pooled = sorted(chain(ordered, *window)) if window else ordered
    window_psi = psi(reference, pooled) if window else batch_psi

    def ks_if_needed(sample: list[float], sample_psi: float) -> tuple[float | None, bool]:
        if sample_psi < psi_threshold:
            return None, False
        d = ks_statistic(values, sample)
        return d, d > ks_critical(len(values), len(sample), ks_alpha)

    batch_ks, fires = ks_if_needed(ordered, batch_psi) if batch_alone else (None, False)
    if window:
        window_ks, window_fires = ks_if_needed(pooled, window_psi)
    else:
        window_ks, window_fires = batch_ks, fires
    if window_fires and not batch_alone:
        assert window_ks is not None
        window_fires = window_ks > ks_statistic(values, sorted(chain(*window)))
    drifted = fires or window_fires
    if drifted:
        if batch_ks is None:
            batch_ks = ks_statistic(values, ordered)
        if window_ks is None:
            window_ks = ks_statistic(values, pooled)
    return BatchCheck(batch_psi, batch_ks, window_psi, window_ks, drifted)


#: Values with many ties (on the reference's edges too) and continuous ones, -0.0 and 0.0.
_VALUE = st.sampled_from([0.0, -0.0, 0.25, 0.5, 0.75, 1.0]) | st.floats(0, 1)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_VALUE, min_size=1, max_size=80),
    st.integers(1, 12),
    st.lists(_VALUE, min_size=1, max_size=40),
    st.lists(st.lists(_VALUE, min_size=1, max_size=40), max_size=5),
    st.sampled_from([0.0, 0.05, 0.2, 1.0]),
    st.sampled_from([0.001, 0.5, 0.99]),
    st.booleans(),
    st.booleans(),
    st.sampled_from([0, 200, 1 << 30]),
)
def test_check_batch_sums_the_windows_counts_as_the_merged_sample_gives(
    ref_values: list[float],
    bins: int,
    batch: list[float],
    window_values: list[list[float]],
    psi_threshold: float,
    ks_alpha: float,
    batch_alone: bool,
    again: bool,
    merge_max: int,
) -> None:
    """Every statistic and the decision, bit for bit, against the merged computation; the
    window's samples as the drift step keeps them (sorted tuples), judged twice (``again``:
    their cached counts); every window summed (``merge_max`` 0), merged, or as sized."""
    kept, drift_stats._MERGE_MAX = drift_stats._MERGE_MAX, merge_max
    try:
        _check_against_merging(
            ref_values, bins, batch, window_values, psi_threshold, ks_alpha, batch_alone, again
        )
    finally:
        drift_stats._MERGE_MAX = kept


def _check_against_merging(
    ref_values: list[float],
    bins: int,
    batch: list[float],
    window_values: list[list[float]],
    psi_threshold: float,
    ks_alpha: float,
    batch_alone: bool,
    again: bool,
) -> None:
    reference = Reference.from_values(ref_values, bins)
    window = [tuple(sorted(w)) for w in window_values]
    if not batch_alone and not window:
        batch_alone = True
    kwargs = {"psi_threshold": psi_threshold, "ks_alpha": ks_alpha, "batch_alone": batch_alone}
    expected = _check_batch_merging(reference, batch, window, **kwargs)  # type: ignore[arg-type]
    for _ in range(2 if again else 1):
        got = check_batch(reference, batch, window, **kwargs)  # type: ignore[arg-type]
        assert repr(got) == repr(expected)
        assert got == expected
        # The drift step's decision-only form: the same decision, every statistic if drifted.
        decided = drifted_check(reference, batch, window, **kwargs)  # type: ignore[arg-type]
        assert repr(decided) == repr(expected if expected.drifted else None)


# --- the drift step's decision-only check (issue 15) ----------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_VALUE, min_size=1, max_size=200),
    st.integers(1, 12),
    st.lists(_VALUE, min_size=1, max_size=120),
)
def test_psi_of_sums_the_textbook_terms_bit_for_bit(
    ref_values: list[float], bins: int, sample: list[float]
) -> None:
    """_psi_of through ``map`` is ``fsum`` of ``(s - p) * ln(s / p)`` over the smoothed shares,
    the same float operations: the same bits."""
    reference = Reference.from_values(ref_values, bins)
    ordered = sorted(sample)
    cuts = drift_stats._cuts(ordered, reference.edges)
    shares = drift_stats._smoothed(drift_stats._counts(cuts, len(ordered)), len(ordered))
    terms = [(s - p) * math.log(s / p) for s, p in zip(shares, reference.proportions, strict=True)]
    got = drift_stats._psi_of(reference, cuts, len(ordered))
    assert repr(got) == repr(math.fsum(terms))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 2**32),
    st.integers(20, 1200),
    st.integers(1, 12),
    st.integers(1, 120),
    st.floats(0.0, 0.3),
    st.sampled_from([0.001, 0.05, 0.5]),
    st.booleans(),
)
def test_the_bin_count_bound_never_hides_a_firing_ks(
    seed: int, n: int, bins: int, m: int, shift: float, alpha: float, ties: bool
) -> None:
    """When _ks_cannot_fire says so, the exact KS ``D`` is at most its critical value: on
    samples like the drift step's (a reference of up to 1,200 values, samples of up to 120,
    shifted or not, with ties on a grid or continuous)."""
    rng = random.Random(seed)

    def draw(k: int, by: float) -> list[float]:
        out = [min(1.0, rng.betavariate(8, 2) + by) for _ in range(k)]
        return [round(v, 1) for v in out] if ties else out

    reference = Reference.from_values(draw(n, 0.0), bins)
    sample = sorted(draw(m, shift))
    cuts = drift_stats._cuts(sample, reference.edges)
    if drift_stats._ks_cannot_fire(reference, cuts, m, alpha):
        d = ks_statistic(reference.values, sample)
        assert d <= ks_critical(n, m, alpha)


def test_the_bound_skips_most_ks_of_clean_small_samples_and_none_of_a_drift() -> None:
    """What the bound is for: a clean sample of 54 (a batch of 9 and its window) against a
    reference of 1,000 is cleared by its bin counts in most draws, at the default alpha; a
    shifted one never is (and it fires)."""
    rng = random.Random(7)
    reference = Reference.from_values([rng.betavariate(8, 2) for _ in range(1000)], 10)
    cleared = 0
    for _ in range(200):
        sample = sorted(rng.betavariate(8, 2) for _ in range(54))
        cuts = drift_stats._cuts(sample, reference.edges)
        cleared += drift_stats._ks_cannot_fire(reference, cuts, 54, 0.001)
    assert cleared >= 150
    shifted = sorted(min(1.0, rng.betavariate(8, 2) + 0.2) for _ in range(54))
    cuts = drift_stats._cuts(shifted, reference.edges)
    assert not drift_stats._ks_cannot_fire(reference, cuts, 54, 0.001)
    assert drifted_check(reference, shifted, psi_threshold=0.2, ks_alpha=0.001) == check_batch(
        reference, shifted, psi_threshold=0.2, ks_alpha=0.001
    )


def test_no_bound_with_a_nan_and_drifted_check_decides_as_check_batch() -> None:
    """A NaN in the sample or the reference: no order, so no bound (_orderable); the decision
    is still check_batch's."""
    reference = Reference.from_values([i / 100 for i in range(100)], 10)
    assert not drift_stats._orderable(([0.5, math.nan],))
    assert not drift_stats._orderable(([math.inf, -math.inf],))
    assert not drift_stats._orderable(([1e308, 10**400],))  # no float sum: no bound
    assert drift_stats._orderable(([10**400, 3],))  # ints order (and sum) exactly
    assert drift_stats._orderable(([0.5, 1], (0.25,)))
    for sample in ([0.1, math.nan, 0.9] * 20, [math.nan] * 60, [0.99] * 59 + [math.nan]):
        for alone in (True, False):
            window = [tuple(sorted([0.98] * 40))]
            kwargs: dict[str, Any] = {"psi_threshold": 0.0, "ks_alpha": 0.5, "batch_alone": alone}
            expected = check_batch(reference, sample, window, **kwargs)
            got = drifted_check(reference, sample, window, **kwargs)
            assert repr(got) == repr(expected if expected.drifted else None)
    with_nan = Reference(
        (0.1, math.nan, 0.9), (0.5,), reference.counts[:2], reference.proportions[:2]
    )
    assert not drift_stats._ks_cannot_fire(with_nan, [1], 3, 0.001)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_VALUE | st.floats(-1e300, 1e300), min_size=1, max_size=300),
    st.integers(1, 40),
    st.lists(_VALUE | st.floats(allow_nan=True), min_size=1, max_size=300),
)
def test_the_c_psi_and_ks_bound_equal_their_python_references(
    ref_values: list[float], bins: int, sample: list[float]
) -> None:
    """core._native.psi_terms and ks_bound (the drift check's bin arithmetic in C) give the
    bits and the integers of _psi_of_python and _ks_bound_python, whatever the values (NaNs
    in the sample included), and _psi_of and _ks_cannot_fire take them."""
    reference = Reference.from_values(ref_values, bins)
    ordered = sorted(sample)
    m = len(ordered)
    cuts = drift_stats._cuts(ordered, reference.edges)
    proportions = reference.proportions
    total = m + drift_stats.SMOOTHING * len(proportions)
    native = _native.psi_terms(proportions, cuts, m, total, drift_stats.SMOOTHING)
    assert native is not None  # (smoothing keeps every share and log finite)
    expected = drift_stats._psi_of_python(reference, cuts, m)
    assert repr(native) == repr(expected)
    assert repr(drift_stats._psi_of(reference, cuts, m)) == repr(expected)
    n = len(reference.values)
    below = [0, *drift_stats._cuts(reference.values, reference.edges), n]
    bound = _native.ks_bound(below, cuts, m, n)
    assert bound is not None
    assert bound == drift_stats._ks_bound_python(below, cuts, m, n)


def test_the_c_bin_arithmetic_leaves_the_unusual_to_python() -> None:
    """What the C paths do not accept comes back ``None`` (the reference decides): other
    types, ints past int64, products that would overflow, a zero proportion, too many bins;
    and _psi_of / _ks_cannot_fire still answer (or raise) as their references do."""
    p = (0.5, 0.5)
    assert _native.psi_terms(p, [1], 2, 3.0, 0.5) is not None
    assert _native.psi_terms(list(p), [1], 2, 3.0, 0.5) is None  # not a tuple
    assert _native.psi_terms(p, (1,), 2, 3.0, 0.5) is None  # not a list
    assert _native.psi_terms(p, [1.0], 2, 3.0, 0.5) is None  # a float cut
    assert _native.psi_terms(p, [True], 2, 3.0, 0.5) is None  # a bool is no plain int
    assert _native.psi_terms(p, [2**70], 2, 3.0, 0.5) is None
    assert _native.psi_terms(p, [1], 2**70, 3.0, 0.5) is None
    assert _native.psi_terms(p, [1], 2, 3, 0.5) is None  # an int total
    assert _native.psi_terms(p, [1], 2, 0.0, 0.5) is None
    assert _native.psi_terms((0.0, 1.0), [1], 2, 3.0, 0.5) is None  # Python: ZeroDivisionError
    assert _native.psi_terms((0.5, 0.5), [5], 2, 3.0, 0.5) is None  # a negative count: log(<0)
    assert _native.psi_terms(p, [1, 1], 2, 3.0, 0.5) is None  # other bins
    with pytest.raises(TypeError):
        _native.psi_terms(p, [1], 2, 3.0)  # type: ignore[call-arg]
    assert _native.ks_bound([0, 1, 2], [1], 2, 2) == drift_stats._ks_bound_python(
        [0, 1, 2], [1], 2, 2
    )
    assert _native.ks_bound([0, 2**62, 2**62], [1], 4, 2**62) is None  # 2**64: past int64
    assert drift_stats._ks_bound_python([0, 2**62, 2**62], [1], 4, 2**62) == 2**64
    assert _native.ks_bound([0, 1, 2], [1.0], 2, 2) is None
    assert _native.ks_bound([0, *range(300), 300], list(range(299)), 2, 300) is None
    assert _native.ks_bound([], [1], 2, 2) is None
    with pytest.raises(TypeError):
        _native.ks_bound([0, 1, 2], [1], 2)  # type: ignore[call-arg]
    reference = Reference.from_values([0.1, 0.2, 0.3, 0.4], 2)
    with pytest.raises(ValueError, match="other bins"):
        drift_stats._psi_of(reference, [1, 2], 3)
    # A tuple of cuts (not a list) goes to the reference, the same answer.
    assert drift_stats._psi_of(reference, (1,), 3) == drift_stats._psi_of_python(reference, (1,), 3)
    assert drift_stats._ks_cannot_fire(reference, (1,), 3, 0.001) == drift_stats._ks_cannot_fire(
        reference, [1], 3, 0.001
    )


def test_the_c_bin_arithmetic_leaks_nothing() -> None:
    """Neither psi_terms nor ks_bound keeps what it builds or a reference to what it reads."""
    reference = Reference.from_values([random.Random(7).random() for _ in range(1000)], 10)
    sample = sorted(random.Random(8).random() for _ in range(54))
    cuts = drift_stats._cuts(sample, reference.edges)
    n = len(reference.values)
    below = [0, *drift_stats._cuts(reference.values, reference.edges), n]
    proportions = reference.proportions
    args = (proportions, cuts, 54, 54 + drift_stats.SMOOTHING * 10, drift_stats.SMOOTHING)
    tracemalloc.start()
    try:
        for rounds in (200, 2000):
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(rounds):
                _native.psi_terms(*args)
                _native.ks_bound(below, cuts, 54, n)
                _native.psi_terms(proportions, [*cuts[:-1], 2**70], 54, 59.0, 0.5)  # -> None
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        assert grown < 16_000, grown
    finally:
        tracemalloc.stop()
    held = [proportions, cuts, below, *proportions, *cuts, *below]
    counts = [sys.getrefcount(x) for x in held]
    for _ in range(100):
        _native.psi_terms(*args)
        _native.ks_bound(below, cuts, 54, n)
    assert [sys.getrefcount(x) for x in held] == counts


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_VALUE | st.floats(-1e300, 1e300), min_size=1, max_size=300),
    st.integers(1, 40),
    st.lists(st.lists(_VALUE | st.floats(allow_nan=False), max_size=60), max_size=7),
    st.booleans(),
)
def test_the_c_pooled_cuts_equal_the_merged_samples_bisections(
    ref_values: list[float], bins: int, samples: list[list[float]], nan: bool
) -> None:
    """core._native.cuts_below gives _cuts of the merged, sorted samples (what drifted_check
    computed, and the sum of the parts' cuts of its large-window path) whenever no value is a
    NaN (infinities, -0.0 and ties included); with a NaN anywhere, None."""
    reference = Reference.from_values(ref_values, bins)
    parts = tuple(tuple(sorted(s)) if i % 2 else sorted(s) for i, s in enumerate(samples))
    merged = sorted(chain(*parts))
    expected = drift_stats._cuts(merged, reference.edges)
    assert _native.cuts_below(reference.edges, parts) == expected
    part_cuts = [drift_stats._cuts(p, reference.edges) for p in parts]
    summed = [sum(c) for c in zip(*part_cuts, strict=True)]
    assert not parts or not reference.edges or summed == expected
    if nan and parts:
        with_nan = (*parts[:-1], [*parts[-1], math.nan])
        assert _native.cuts_below(reference.edges, with_nan) is None


def test_the_c_pooled_cuts_leave_the_unusual_to_python() -> None:
    assert _native.cuts_below((0.5,), ([0.25, 0.75],)) == [1]
    assert _native.cuts_below((0.5,), ([0.25, 1],)) is None  # an int value
    assert _native.cuts_below((1,), ([0.25],)) is None  # an int edge
    assert _native.cuts_below((0.5, 0.5), ([0.25],)) is None  # edges not increasing
    assert _native.cuts_below((math.nan,), ([0.25],)) is None
    assert _native.cuts_below([0.5], ([0.25],)) is None  # type: ignore[arg-type]
    assert _native.cuts_below((0.5,), [[0.25]]) is None  # type: ignore[arg-type]
    assert _native.cuts_below((0.5,), (iter([0.25]),)) is None  # type: ignore[arg-type]
    assert _native.cuts_below(tuple(float(i) for i in range(300)), ([0.5],)) is None
    with pytest.raises(TypeError):
        _native.cuts_below((0.5,))  # type: ignore[call-arg]
    sample = [random.Random(3).random() for _ in range(50)]
    edges = tuple(sorted(random.Random(4).random() for _ in range(9)))
    tracemalloc.start()
    try:
        for rounds in (200, 2000):
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(rounds):
                _native.cuts_below(edges, (sample, sample))
                _native.cuts_below(edges, (sample, [math.nan]))
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        assert grown < 16_000, grown
    finally:
        tracemalloc.stop()
    counts = [sys.getrefcount(x) for x in (sample, edges, *sample, *edges)]
    for _ in range(100):
        _native.cuts_below(edges, (sample, sample))
    assert [sys.getrefcount(x) for x in (sample, edges, *sample, *edges)] == counts


@dataclasses.dataclass(frozen=True)
class _Check:
    """One drift check's arguments, asked of core._native.drift_passes and of the reference."""

    reference: Reference
    batch: list[Any]
    window: tuple[tuple[float, ...], ...]
    psi_threshold: float
    alpha: float
    alone: bool

    def native(self) -> bool | None:
        return _native.drift_passes(
            self.reference.proportions,
            self.reference.edges,
            drift_stats._ref_below(self.reference),
            len(self.reference.values),
            self.batch,
            self.window,
            self.psi_threshold,
            self.alpha,
            self.alone,
            SMOOTHING,
        )

    def checked(self) -> BatchCheck | None:
        """drifted_check, its C passes included."""
        return drifted_check(
            self.reference,
            self.batch,
            self.window,
            psi_threshold=self.psi_threshold,
            ks_alpha=self.alpha,
            batch_alone=self.alone,
        )

    def reference_check(self) -> tuple[BatchCheck | None, bool]:
        """drifted_check without its C passes, and whether it computed a KS statistic."""
        computed: list[int] = []
        statistic = drift_stats.ks_statistic

        def counted(a: Any, b: Any) -> float:
            computed.append(1)
            return statistic(a, b)

        saved = drift_stats._DRIFT_PASSES
        drift_stats._DRIFT_PASSES = None
        drift_stats.ks_statistic = counted  # type: ignore[assignment]
        try:
            got = self.checked()
        finally:
            drift_stats._DRIFT_PASSES = saved
            drift_stats.ks_statistic = statistic  # type: ignore[assignment]
        return got, bool(computed)


_FINITE = st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False)
_NEAR = st.floats(0.0, 1.0) | st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])


@settings(max_examples=600, deadline=None)
@given(
    st.lists(_NEAR, min_size=1, max_size=200),
    st.integers(1, 20),
    st.lists(_NEAR | _FINITE, min_size=1, max_size=40),
    st.lists(st.lists(_NEAR, min_size=1, max_size=40), max_size=5),
    st.floats(0.0, 2.0),
    st.floats(1e-6, 0.999),
    st.booleans(),
)
def test_the_c_passes_exactly_where_the_reference_passes_without_a_ks_statistic(
    ref_values: list[float],
    bins: int,
    batch: list[float],
    windows: list[list[float]],
    psi_threshold: float,
    alpha: float,
    alone: bool,
) -> None:
    """core._native.drift_passes says "passed" (True) for finite floats exactly where
    drifted_check's reference returns None without computing a KS statistic (by its PSI and
    its KS bound), and nothing (None) everywhere else: a drift, a KS statistic to compute, or
    the reference's error (a batch judged through an empty window)."""
    window = tuple(tuple(sorted(w)) for w in windows)
    check = _Check(
        Reference.from_values(ref_values, bins), batch, window, psi_threshold, alpha, alone
    )
    native = check.native()
    assert native is True or native is None
    if not alone and not window:
        assert native is None
        with pytest.raises(ValueError, match="needs a window"):
            check.reference_check()
        return
    got, computed = check.reference_check()
    assert native is (True if got is None and not computed else None)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_NEAR, min_size=1, max_size=100),
    st.lists(
        _NEAR | st.floats(allow_nan=True) | st.integers(-(2**70), 2**70), min_size=1, max_size=30
    ),
    st.lists(st.lists(_NEAR | st.floats(allow_nan=True), min_size=1, max_size=20), max_size=3),
    st.booleans(),
)
def test_the_c_never_passes_where_the_reference_does_not(
    ref_values: list[float], batch: list[Any], windows: list[list[float]], alone: bool
) -> None:
    """Whatever the values (NaNs, infinities, huge ints), "passed" from C only where the
    reference passes too; the check's answer with the C path on is the reference's."""
    reference = Reference.from_values(ref_values, 10)
    window = tuple(tuple(w) for w in windows)
    for psi_threshold, alpha in ((0.0, 0.5), (0.1, 0.01), (0.25, 0.001)):
        check = _Check(reference, batch, window, psi_threshold, alpha, alone)
        native = check.native()
        try:
            got, _computed = check.reference_check()
        except (ValueError, TypeError):
            assert native is None
            continue
        if native is True:
            assert got is None
        assert repr(check.checked()) == repr(got)


def test_the_c_passes_most_clean_checks_and_never_a_shifted_one() -> None:
    """What it is for: a clean batch of 9 with its window of 5 passed batches against a
    reference of 1,000 is passed in C in most draws; a shifted one never is (it drifts)."""
    rng = random.Random(11)
    reference = Reference.from_values([rng.betavariate(8, 2) for _ in range(1000)], 10)
    passed = 0
    for _ in range(200):
        window = tuple(tuple(sorted(rng.betavariate(8, 2) for _ in range(9))) for _ in range(5))
        batch = [rng.betavariate(8, 2) for _ in range(9)]
        passed += _Check(reference, batch, window, 0.2, 0.001, False).native() is True
    assert passed >= 150
    window = tuple(
        tuple(sorted(min(1.0, rng.betavariate(8, 2) + 0.3) for _ in range(9))) for _ in range(5)
    )
    shifted = [min(1.0, rng.betavariate(8, 2) + 0.3) for _ in range(9)]
    drifting = _Check(reference, shifted, window, 0.2, 0.001, False)
    assert drifting.native() is None
    assert drifting.checked() is not None
