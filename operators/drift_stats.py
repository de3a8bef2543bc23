"""The statistics of the drift check: reference distributions, PSI, two-sample KS, the decision.

Pure functions over floats: no engine, no clock, no randomness. The same inputs always give
bit-identical outputs (sums run in a fixed order), so a replay reproduces every verdict.

- :class:`Reference`: the sorted reference values, equal-mass bin edges from its quantiles and
  the per-bin proportions.
- :func:`psi`: the Population Stability Index of a sample against a reference.
- :func:`ks_statistic` / :func:`ks_critical`: the exact two-sample Kolmogorov-Smirnov ``D`` and
  its asymptotic critical value.
- :func:`check_batch`: the decision for one micro-batch and its trailing window;
  :func:`drifted_check` the same decision, the statistics only of a drifted batch (cheaper).
- :class:`Baseline` / :func:`load_baseline`: references given by a JSON file instead of learned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain, repeat
from operator import add, mul, sub, truediv
from typing import Any

import numpy as np

from core import _native
from core.errors import ConfigError

__all__ = [
    "SMOOTHING",
    "Baseline",
    "BatchCheck",
    "Reference",
    "baseline_bytes",
    "check_batch",
    "drifted_check",
    "ks_critical",
    "ks_statistic",
    "load_baseline",
    "parse_baseline",
    "psi",
]

#: Added to every bin count, of the reference and of the sample, before proportions are taken,
#: so an empty bin has a small non-zero share and the PSI stays finite (the ``+0.5`` of a
#: Jeffreys prior). Its effect on a bin with ``c`` of ``n`` values is ``O(1/n)``.
SMOOTHING = 0.5

#: The fallback key of a baseline file, for any tenant or any type.
WILDCARD = "*"


@dataclasses.dataclass(frozen=True, slots=True)
class Reference:
    """A reference distribution, binned for the PSI.

    ``edges`` are the interior bin boundaries, strictly increasing: a value ``x`` falls in bin
    ``bisect_right(edges, x)``, so bin ``j`` is ``[edges[j-1], edges[j])`` and the outer bins are
    open to ``-inf`` and ``+inf`` (values outside the reference range still land in a bin).
    """

    #: The reference values, sorted ascending.
    values: tuple[float, ...]
    edges: tuple[float, ...]
    #: Reference values per bin (``len(edges) + 1`` bins).
    counts: tuple[int, ...]
    #: Per-bin share of the reference, smoothed by :data:`SMOOTHING` (never zero; sums to 1).
    proportions: tuple[float, ...]

    @classmethod
    def from_values(cls, values: Iterable[float], bins: int) -> Reference:
        """Bin ``values`` into ``bins`` equal-mass bins cut at their quantiles.

        Edge ``j`` (``1 <= j < bins``) is the order statistic ``sorted[j * n // bins]``. Tied or
        constant data gives repeated edges; they collapse into one, so there may be fewer bins
        than asked (constant data gives two: below the constant, and from it up). Raises
        ``ValueError`` for no values, a non-finite value or ``bins < 1``.
        """
        ordered = tuple(sorted(map(float, values)))
        n = len(ordered)
        if n == 0:
            msg = "a reference needs at least one value"
            raise ValueError(msg)
        if bins < 1:
            msg = f"bins must be >= 1, got {bins}"
            raise ValueError(msg)
        if not (math.isfinite(ordered[0]) and math.isfinite(ordered[-1])):
            msg = "reference values must be finite"
            raise ValueError(msg)
        edges: list[float] = []
        for j in range(1, bins):
            edge = ordered[j * n // bins]
            if not edges or edge > edges[-1]:
                edges.append(edge)
        counts = _bin_counts(ordered, edges)
        return cls(ordered, tuple(edges), counts, _smoothed(counts, n))

    def __deepcopy__(self, memo: dict[int, object]) -> Reference:
        # Immutable: Bytewax deep-copies the drift state every epoch; share, do not walk it.
        return self

    def __len__(self) -> int:
        return len(self.values)


def _bin_counts(ordered: Sequence[float], edges: Sequence[float]) -> tuple[int, ...]:
    """Values of the sorted ``ordered`` per bin: ``O(bins * log n)``, by bisection at each edge."""
    return _counts(_cuts(ordered, edges), len(ordered))


def _cuts(ordered: Sequence[float], edges: Sequence[float]) -> list[int]:
    """Per edge, the values of the sorted ``ordered`` below it (``bisect_left``). Additive: the
    cuts of a union of samples are the sums of their cuts (a count of values ``< edge``)."""
    return list(map(bisect_left, repeat(ordered), edges))


def _counts(cuts: Sequence[int], n: int) -> tuple[int, ...]:
    """Values per bin of a sample of ``n`` values with these :func:`_cuts`."""
    bounds = [0, *cuts, n]
    return tuple(map(sub, bounds[1:], bounds))


def _smoothed(counts: Sequence[int], n: int) -> tuple[float, ...]:
    total = n + SMOOTHING * len(counts)
    # (c + SMOOTHING) / total per bin, at C speed (the same operations, in the same order)
    return tuple(map(truediv, map(add, counts, repeat(SMOOTHING)), repeat(total)))


def psi(reference: Reference, sample: Iterable[float]) -> float:
    """Population Stability Index of ``sample`` against ``reference``, in the reference's bins.

    ``sum over bins (p_s - p_r) * ln(p_s / p_r)``, both proportions smoothed by
    :data:`SMOOTHING`. Always ``>= 0``; ``0`` only when the smoothed shares agree. Rules of
    thumb: below 0.1 stable, 0.1 to 0.25 moderate shift, above 0.25 major shift. Raises
    ``ValueError`` for an empty sample.
    """
    ordered = sorted(sample)  # already-sorted input (a merged window) sorts in linear time
    if not ordered:
        msg = "psi needs a non-empty sample"
        raise ValueError(msg)
    return _psi_of(reference, _cuts(ordered, reference.edges), len(ordered))


def _psi_of(reference: Reference, cuts: Sequence[int], n: int) -> float:
    """:func:`psi` of a sample of ``n >= 1`` values given by its :func:`_cuts` in the
    reference's edges (the same operations on the same counts, so the same value).

    In C (``core._native.psi_terms``: the terms of :func:`_psi_of_python`, its reference, in
    the same float operations, then ``math.fsum``; 4-5 -> under 1 µs a call at 10 bins); the
    reference decides whatever the C path does not accept (it returns ``None``)."""
    proportions = reference.proportions
    if len(cuts) + 1 != len(proportions):
        msg = "a sample binned in other bins than its reference's"
        raise ValueError(msg)
    got: float | None = _native.psi_terms(
        proportions, cuts, n, n + SMOOTHING * len(proportions), SMOOTHING
    )
    return _psi_of_python(reference, cuts, n) if got is None else got


def _psi_of_python(reference: Reference, cuts: Sequence[int], n: int) -> float:
    """:func:`_psi_of`'s reference, in Python.

    Without the intermediate tuples of :func:`_counts` and :func:`_smoothed`, through ``map``:
    per bin the share ``(count + SMOOTHING) / total`` and the term ``(share - p) * ln(share /
    p)``, the same float operations in the same order; ``fsum`` of the terms is exact, so the
    same PSI bit for bit (``tests/unit/test_drift_stats.py``)."""
    proportions = reference.proportions
    if len(cuts) + 1 != len(proportions):
        msg = "a sample binned in other bins than its reference's"
        raise ValueError(msg)
    total = n + SMOOTHING * len(proportions)
    # Per bin, at C speed: count = cut - cut before (ints), share = (count + SMOOTHING) / total,
    # term = (share - p) * ln(share / p): the same float operations in the same order.
    counts = map(sub, chain(cuts, (n,)), chain((0,), cuts))
    shares = list(map(truediv, map(add, counts, repeat(SMOOTHING)), repeat(total)))
    logs = map(math.log, map(truediv, shares, proportions))
    return math.fsum(map(mul, map(sub, shares, proportions), logs))


def ks_statistic(a_sorted: Sequence[float], b_sorted: Sequence[float]) -> float:
    """The exact two-sample Kolmogorov-Smirnov statistic ``D = sup |F_a(x) - F_b(x)|``.

    Both inputs must be sorted ascending and non-empty (``ValueError`` otherwise). Ties, within
    and across the samples, are handled exactly: the empirical CDFs are compared only after
    every copy of a value has been counted. ``O(min(n, m) * log(n + m))``: for every value of
    the smaller sample, four C-level bisections and integer arithmetic through ``map``, which is
    several times faster than a Python-level ``O(n + m)`` merge for the shapes of the drift check
    (a batch of 200 against a reference of 1,000). Counts are compared as integers, so ``D`` is
    the correctly rounded ``k / (n * m)``.
    """
    n, m = len(a_sorted), len(b_sorted)
    if n == 0 or m == 0:
        msg = "ks_statistic needs two non-empty samples"
        raise ValueError(msg)
    big, small, nb, ns = (a_sorted, b_sorted, n, m) if n >= m else (b_sorted, a_sorted, m, n)
    # Between two consecutive distinct values u < v of `small`, F_small is constant and F_big
    # only grows, so |F_big - F_small| peaks at an end: at u (all copies of u counted) or just
    # before v (no copy of v counted). Both ends are checked at every value of `small` (a tied
    # value just repeats its terms); before the first one F_small is 0 (the "just before" term
    # of the first value covers it) and after the last one it is 1, so the gap only shrinks.
    if ns >= _VECTOR_MIN and n * m < _EXACT_INT64:
        gap = _scaled_gap_arrays(big, small, ns, nb)
        if gap is not None:
            return gap / (n * m)
    below = _scaled_gap(big, small, ns, nb, bisect_left)
    upto = _scaled_gap(big, small, ns, nb, bisect_right)
    return max(below, upto) / (n * m)


#: From this many values in the smaller sample on, the KS counts are taken with numpy's
#: ``searchsorted`` (measured: 60 values against 1,000, 38 µs by bisection against 12 µs; 9
#: values, 6 against 8 µs).
_VECTOR_MIN = 32

#: Below this ``n * m`` every scaled count fits an int64 with room to spare.
_EXACT_INT64 = 1 << 62

#: Float arrays of immutable sorted samples (references, passed batches), by ``id``: each entry
#: holds its tuple, so an id is not reused while it is cached; the oldest goes first.
_ARRAYS: dict[int, tuple[tuple[float, ...], Any, bool]] = {}
_ARRAYS_MAX = 512


#: Up to this many values a batch and its window are merged to be binned; above, the window's
#: samples' cached cuts are summed (measured: 5 samples cost about as much to sum as ~200
#: values to merge).
_MERGE_MAX = 200

#: :func:`_cuts` of the window's samples (immutable sorted tuples: a passed batch is judged
#: against up to ``window_batches`` times), by ``id`` as :data:`_ARRAYS`, with the edges they
#: were cut at: ``id -> (sample, edges, cuts)``.
_CUTS: dict[int, tuple[Sequence[float], tuple[float, ...], list[int]]] = {}
_CUTS_MAX = 4096


def _sample_cuts(sample: Sequence[float], edges: tuple[float, ...]) -> list[int]:
    """:func:`_cuts` of a sorted window ``sample``; cached for a tuple (see :data:`_CUTS`)."""
    if not isinstance(sample, tuple):
        return _cuts(sample, edges)
    held = _CUTS.get(id(sample))
    if held is not None and held[0] is sample and held[1] is edges:
        return held[2]
    cuts = _cuts(sample, edges)
    if len(_CUTS) >= _CUTS_MAX:
        # Workers are threads of one process: another may change the dict meanwhile.
        with contextlib.suppress(RuntimeError, KeyError, StopIteration):
            del _CUTS[next(iter(_CUTS))]
    _CUTS[id(sample)] = (sample, edges, cuts)
    return cuts


def _as_array(values: Sequence[float]) -> tuple[Any, bool]:
    """``values`` as a float64 array, and whether it holds a NaN; those of a tuple are cached
    (see :data:`_ARRAYS`: a reference is checked against many samples)."""
    if isinstance(values, tuple):
        held = _ARRAYS.get(id(values))
        if held is not None and held[0] is values:
            return held[1], held[2]
        array = np.array(values, dtype=np.float64)
        nan = bool(np.isnan(array).any())
        if len(_ARRAYS) >= _ARRAYS_MAX:
            # Workers are threads of one process: another may change the dict meanwhile.
            with contextlib.suppress(RuntimeError, KeyError, StopIteration):
                del _ARRAYS[next(iter(_ARRAYS))]
        _ARRAYS[id(values)] = (values, array, nan)
        return array, nan
    array = np.array(values, dtype=np.float64)
    return array, bool(np.isnan(array).any())


def _scaled_gap_arrays(
    big: Sequence[float], small: Sequence[float], ns: int, nb: int
) -> int | None:
    """:func:`_scaled_gap` for both bisections at once, with numpy: the same integer counts
    (``searchsorted`` on float64 is ``bisect`` on Python floats), so the same ``D``. ``None``
    for values a float64 array does not hold exactly as Python compares them (not all floats
    or ints of at most 53 bits, or a NaN): the bisection decides those. (Array methods, not
    the ``np.`` functions: each of those dispatches through a wrapper first.)"""
    if not (_plain(big) and _plain(small)):
        return None
    b, b_nan = _as_array(big)
    if b_nan:
        return None
    s, s_nan = _as_array(small)
    if s_nan:
        return None
    gap = 0
    for side in ("left", "right"):
        in_big = b.searchsorted(s, side) * ns
        in_big -= s.searchsorted(s, side) * nb
        gap = max(gap, int(np.abs(in_big, out=in_big).max()))
    return gap


def _plain(values: Sequence[float]) -> bool:
    """Whether ``values`` are exactly representable as float64 (floats, or small ints): their
    ends' types stand for a reference's or a sorted sample's (built from floats)."""
    first, last = values[0], values[-1]
    return (type(first) is float or (type(first) is int and abs(first) < 1 << 53)) and (
        type(last) is float or (type(last) is int and abs(last) < 1 << 53)
    )


def _scaled_gap(
    big: Sequence[float],
    small: Sequence[float],
    ns: int,
    nb: int,
    count: Callable[[Sequence[float], float], int],
) -> int:
    """``max over x in small of |count(big, x) * ns - count(small, x) * nb|``, at C speed."""
    in_big = map(mul, map(count, repeat(big), small), repeat(ns))
    in_small = map(mul, map(count, repeat(small), small), repeat(nb))
    gap: int = max(map(abs, map(sub, in_big, in_small)))
    return gap


def ks_critical(n: int, m: int, alpha: float) -> float:
    """The asymptotic critical value of the two-sample KS ``D`` at significance ``alpha``.

    ``c(alpha) * sqrt((n + m) / (n * m))`` with ``c(alpha) = sqrt(-ln(alpha / 2) / 2)``
    (1.358 at 0.05, 1.628 at 0.01). Under the null hypothesis (both samples from one continuous
    distribution) ``D`` exceeds it with probability about ``alpha``; with ties the test is
    conservative. Raises ``ValueError`` unless ``n, m >= 1`` and ``0 < alpha < 1``.
    """
    if n < 1 or m < 1:
        msg = f"sample sizes must be >= 1, got {n} and {m}"
        raise ValueError(msg)
    if not 0.0 < alpha < 1.0:
        msg = f"alpha must lie in (0, 1), got {alpha}"
        raise ValueError(msg)
    c = math.sqrt(-math.log(alpha / 2.0) / 2.0)
    return c * math.sqrt((n + m) / (n * m))


@dataclasses.dataclass(frozen=True, slots=True)
class BatchCheck:
    """The statistics of one batch and its trailing window, and the decision.

    A KS statistic is ``None`` when it could not change the decision: the batch passed and the
    PSI of that sample stayed below the threshold. A drifted batch has all four.
    """

    psi: float
    ks: float | None
    window_psi: float
    window_ks: float | None
    drifted: bool


def check_batch(
    reference: Reference,
    batch: Sequence[float],
    window: Sequence[Sequence[float]] = (),
    *,
    psi_threshold: float,
    ks_alpha: float,
    batch_alone: bool = True,
) -> BatchCheck:
    """Decide whether ``batch`` drifted from ``reference``.

    ``window`` holds the values of the recent *passed* batches (each sorted ascending); the
    trailing window is those plus ``batch``. A test *fires* on a sample when its PSI is at least
    ``psi_threshold`` **and** its KS ``D`` exceeds :func:`ks_critical` at ``ks_alpha``. The batch
    drifted iff the test fires on the batch or on the trailing window: the batch catches an
    abrupt shift, the window a gradual one too small to fire on any single batch.

    Why both statistics: the PSI of a small sample is biased upward (about ``(bins - 1) *
    (1/n + 1/m)`` under no drift) and has no calibrated threshold, while KS has a known false
    positive rate but flags shifts too small to matter on large samples. Requiring both keeps
    false positives at most the KS level (at most ``2 * ks_alpha`` per batch over the two
    samples, far less when the PSI threshold is not reached by chance) and ignores negligible
    shifts. ``batch`` must be non-empty.

    ``batch_alone=False``: the batch is too small to be judged on its own (a short hold closed
    it with fewer than ``drift.min_batch_size`` values), so only the trailing window can fire;
    the batch's own statistics are still computed for the record. ``window`` must then be
    non-empty, and the window fires only if this batch also raised its KS ``D`` (the pooled
    sample is further from the reference than the passed batches alone). False positives are
    then at most ``ks_alpha`` per batch.

    Cost: the PSI is ``O(bins * log n)`` on sorted data; a KS statistic costs about 1 us per
    reference value, so it is computed only when its PSI reached the threshold (or, to complete
    the record, when the batch drifted). Without drift that is almost never.
    """
    if not batch_alone and not window:
        msg = "a batch judged through its window alone needs a window"
        raise ValueError(msg)
    values = reference.values
    edges = reference.edges
    ordered = sorted(batch)
    if not ordered:
        msg = "psi needs a non-empty sample"
        raise ValueError(msg)
    cuts = _cuts(ordered, edges)
    batch_psi = _psi_of(reference, cuts, len(ordered))
    merged: list[Sequence[float]] = []
    if window:
        pooled_n = len(ordered) + sum(map(len, window))
        if pooled_n > _MERGE_MAX:
            # The pooled sample's bin counts are the sums of its parts' (a passed batch's cuts
            # are cached while it stays in the window): no merge of a large window per batch.
            # The merged sample is then built only for a KS statistic (rare: "Cost" above).
            for sample in window:
                cuts = list(map(add, cuts, _sample_cuts(sample, edges)))
        else:  # merging a small window costs less than summing its parts' cuts
            merged.append(sorted(chain(ordered, *window)))
            cuts = _cuts(merged[0], edges)
        window_psi = _psi_of(reference, cuts, pooled_n)
    else:
        window_psi = batch_psi

    def pooled() -> Sequence[float]:
        if not merged:
            # Each part is sorted, so timsort merges the runs in about linear time.
            merged.append(sorted(chain(ordered, *window)) if window else ordered)
        return merged[0]

    def ks_if_needed(
        sample: Callable[[], Sequence[float]], sample_psi: float
    ) -> tuple[float | None, bool]:
        if sample_psi < psi_threshold:
            return None, False
        taken = sample()
        d = ks_statistic(values, taken)
        return d, d > ks_critical(len(values), len(taken), ks_alpha)

    if batch_alone:
        batch_ks, fires = ks_if_needed(lambda: ordered, batch_psi)
    else:  # too few values to support a verdict of their own
        batch_ks, fires = None, False
    if window:
        window_ks, window_fires = ks_if_needed(pooled, window_psi)
    else:  # the window is this batch alone
        window_ks, window_fires = batch_ks, fires
    if window_fires and not batch_alone:
        # Only if this batch moved the window away from the reference: a window that is off by
        # chance would otherwise quarantine every small batch after it (a quarantined batch
        # never joins the window, so the window would not move on).
        assert window_ks is not None
        window_fires = window_ks > ks_statistic(values, sorted(chain(*window)))
    drifted = fires or window_fires
    if drifted:  # the quarantine record shows every statistic
        if batch_ks is None:
            batch_ks = ks_statistic(values, ordered)
        if window_ks is None:
            window_ks = ks_statistic(values, pooled())
    return BatchCheck(batch_psi, batch_ks, window_psi, window_ks, drifted)


def drifted_check(
    reference: Reference,
    batch: Sequence[float],
    window: Sequence[Sequence[float]] = (),
    *,
    psi_threshold: float,
    ks_alpha: float,
    batch_alone: bool = True,
) -> BatchCheck | None:
    """:func:`check_batch` for a caller that needs a passed batch's decision only (the drift
    step: a passed record carries no statistics): ``None`` when the batch passed, else
    :func:`check_batch`'s result, every statistic. The same decision for the same arguments
    (``tests/unit/test_drift_stats.py``) and the same errors.

    Cheaper on a passed batch: the batch's own PSI is not computed when only its window can
    fire (``batch_alone=False``), and a KS ``D`` is not computed when the sample's bin counts
    already bound it at most at its critical value (:func:`_ks_cannot_fire`): without drift,
    most samples whose PSI reached the threshold (small ones, often) end there.

    Those passes are first tried in C (``core._native.drift_passes``: the steps below up to the
    KS bound, on the same numbers: the bin counts, :func:`_psi_of`'s terms and ``fsum``, the
    bound's integers and :func:`ks_critical`'s float operations; 7.5 -> 2.6 µs a check). It
    answers only "passed"; anything else (a drift, a KS statistic to compute, an error to
    raise, a value it does not take: not a float, not finite, past 1e300) it leaves to the code
    below, its reference (``tests/unit/test_drift_stats.py``: never "passed" where the
    reference is not)."""
    if _DRIFT_PASSES is not None and (
        _DRIFT_PASSES(
            reference.proportions,
            reference.edges,
            _ref_below(reference),
            len(reference.values),
            batch,
            tuple(window),
            psi_threshold,
            ks_alpha,
            batch_alone,
            SMOOTHING,
        )
        is True
    ):
        return None  # passed, by the steps below up to their KS bound (in C: see the docstring)
    if not batch_alone and not window:
        msg = "a batch judged through its window alone needs a window"
        raise ValueError(msg)
    edges = reference.edges
    ordered = sorted(batch)
    if not ordered:
        msg = "psi needs a non-empty sample"
        raise ValueError(msg)

    def drifted() -> BatchCheck:
        return check_batch(
            reference,
            batch,
            window,
            psi_threshold=psi_threshold,
            ks_alpha=ks_alpha,
            batch_alone=batch_alone,
        )

    cuts: list[int] | None = None
    if batch_alone:
        # (_native.cuts_below: the same counts in C when no value is a NaN, else None)
        cuts = _native.cuts_below(edges, (ordered,)) or _cuts(ordered, edges)
        n = len(ordered)
        if _psi_of(reference, cuts, n) >= psi_threshold and _ks_fires(
            reference, ordered, cuts, ks_alpha
        ):
            return drifted()
        if not window:
            return None  # the window is this batch alone
    pooled_n = len(ordered) + sum(map(len, window))
    merged: Sequence[float] | None = None
    # Without a NaN, the pooled sample's values below each edge, in C: what either way below
    # gives (a merged sample's bisect_left, or the sum of its parts'), without the merge.
    pooled_cuts = _native.cuts_below(edges, (ordered, *window))
    if pooled_cuts is not None:
        cuts = pooled_cuts
    elif pooled_n > _MERGE_MAX:  # as check_batch: its parts' counts summed (cached for tuples)
        if cuts is None:
            cuts = _cuts(ordered, edges)
        for sample in window:
            cuts = list(map(add, cuts, _sample_cuts(sample, edges)))
    else:
        merged = sorted(chain(ordered, *window))
        cuts = _cuts(merged, edges)
    if _psi_of(reference, cuts, pooled_n) < psi_threshold:
        return None
    if _orderable((ordered, *window)) and _ks_cannot_fire(reference, cuts, pooled_n, ks_alpha):
        return None
    if merged is None:
        merged = sorted(chain(ordered, *window))
    values = reference.values
    window_ks = ks_statistic(values, merged)
    if window_ks <= ks_critical(len(values), pooled_n, ks_alpha):
        return None
    if not batch_alone and not window_ks > ks_statistic(values, sorted(chain(*window))):
        return None  # this batch did not move the window away (check_batch)
    return drifted()


def _ks_fires(
    reference: Reference, ordered: Sequence[float], cuts: list[int], alpha: float
) -> bool:
    """Whether the KS ``D`` of the sorted sample ``ordered`` (its :func:`_cuts` given) exceeds
    its critical value, as :func:`check_batch` decides it."""
    n = len(ordered)
    if _orderable((ordered,)) and _ks_cannot_fire(reference, cuts, n, alpha):
        return False
    values = reference.values
    return ks_statistic(values, ordered) > ks_critical(len(values), n, alpha)


def _ks_cannot_fire(reference: Reference, cuts: Sequence[int], m: int, alpha: float) -> bool:
    """Whether the bin counts alone show that the KS ``D`` of a sample of ``m`` values with
    these :func:`_cuts` against ``reference`` is at most its critical value (``False``: they
    do not; then only ``D`` itself can tell).

    The bound: with ``R_j`` and ``P_j`` the reference's and the sample's values below edge
    ``j`` (``R_0 = P_0 = 0`` below the first bin, ``n`` and ``m`` above the last), for any
    ``x`` in bin ``j`` (``e_j <= x < e_j+1``) the counts of values ``<= x`` lie in ``[R_j,
    R_j+1]`` and ``[P_j, P_j+1]``, so ``n * m * |F_ref(x) - F_s(x)| <= max(R_j+1 * m - P_j *
    n, P_j+1 * n - R_j * m)``, in integers. ``D``'s scaled count is at most that, and a
    correctly rounded division keeps the order, so ``bound / (n * m) <= critical`` means ``D
    <= critical``: the test does not fire. Needs the values totally ordered: the caller checks
    the sample's (:func:`_orderable`), this the reference's (cached)."""
    n = len(reference.values)
    below = _ref_below(reference)
    if below is None:
        return False
    # In C (``core._native.ks_bound``, the same integers; ``None``: it does not accept the
    # input, e.g. a product past int64), else :func:`_ks_bound_python`, its reference.
    bound: int | None = _native.ks_bound(below, cuts, m, n)
    if bound is None:
        bound = _ks_bound_python(below, cuts, m, n)
    return bound / (n * m) <= ks_critical(n, m, alpha)


def _ks_bound_python(below: list[int], cuts: Sequence[int], m: int, n: int) -> int:
    """:func:`_ks_cannot_fire`'s integer bound from the reference's values below each edge
    (``[0, R_1, ..., n]``) and the sample's :func:`_cuts` (``m`` values)."""
    sample_below = [0, *cuts, m]
    above = below[1:]
    bound: int = max(
        max(map(sub, map(mul, above, repeat(m)), map(mul, sample_below, repeat(n)))),
        max(map(sub, map(mul, sample_below[1:], repeat(n)), map(mul, below, repeat(m)))),
    )
    return bound


#: Per reference (by ``id``, holding it, as :data:`_ARRAYS`): its values below each edge, from
#: 0 below the first bin to ``n`` (``[0, R_1, ..., n]``), or ``None`` if it holds a NaN.
_REF_CUTS: dict[int, tuple[Reference, list[int] | None]] = {}


def _ref_below(reference: Reference) -> list[int] | None:
    """The reference's values below each edge, ``[0, R_1, ..., n]`` (cached, see
    :data:`_REF_CUTS`); ``None`` if they have no order (a NaN)."""
    ref_cuts = _REF_CUTS.get(id(reference))
    if ref_cuts is None or ref_cuts[0] is not reference:
        values = reference.values
        ordered = _orderable((values,))
        below = [0, *_cuts(values, reference.edges), len(values)] if ordered else None
        ref_cuts = (reference, below)
        if len(_REF_CUTS) >= _ARRAYS_MAX:
            # Workers are threads of one process: another may change the dict meanwhile.
            with contextlib.suppress(RuntimeError, KeyError, StopIteration):
                del _REF_CUTS[next(iter(_REF_CUTS))]
        _REF_CUTS[id(reference)] = ref_cuts
    return ref_cuts[1]


#: ``core._native.drift_passes`` (:func:`drifted_check`'s passes in C), ``None`` where the
#: extension lacks it (tests set it to ``None`` to run the reference alone).
_DRIFT_PASSES: Callable[..., bool | None] | None = getattr(_native, "drift_passes", None)


def _orderable(samples: Iterable[Sequence[float]]) -> bool:
    """Whether no value of ``samples`` is a NaN (which no order places), through their sum:
    ``False`` also for one holding both infinities, or too large an int for a float (no
    bound then, only lost time)."""
    try:
        total = sum(map(sum, samples))
    except (OverflowError, TypeError):
        return False
    return bool(total == total)


class Baseline(Mapping[tuple[str, str], Reference]):
    """References given up front, by ``(tenant, type)``; ``"*"`` stands for any tenant or type.

    Immutable. :meth:`reference` resolves, first match wins: ``(tenant, type)``,
    ``(tenant, "*")``, ``("*", type)``, ``("*", "*")``.
    """

    __slots__ = ("_refs",)

    def __init__(self, refs: Mapping[tuple[str, str], Reference]) -> None:
        self._refs: dict[tuple[str, str], Reference] = dict(refs)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Mapping[str, Iterable[float]]], bins: int) -> Baseline:
        """Bin ``{tenant: {type: [values]}}`` into references (``ValueError`` if one is empty)."""
        return cls(
            {
                (tenant, kind): Reference.from_values(values, bins)
                for tenant, types in data.items()
                for kind, values in types.items()
            }
        )

    def reference(self, tenant_id: str, type: str) -> Reference | None:
        """The reference of ``(tenant_id, type)``, falling back on ``"*"``; ``None`` if none."""
        refs = self._refs
        for key in (
            (tenant_id, type),
            (tenant_id, WILDCARD),
            (WILDCARD, type),
            (WILDCARD, WILDCARD),
        ):
            found = refs.get(key)
            if found is not None:
                return found
        return None

    def for_tenant(self, tenant_id: str) -> Baseline:
        """The part of this baseline that can apply to ``tenant_id`` (its entries and ``"*"``)."""
        return Baseline({k: v for k, v in self._refs.items() if k[0] in (tenant_id, WILDCARD)})

    def __getitem__(self, key: tuple[str, str]) -> Reference:
        return self._refs[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"Baseline({sorted(self._refs)!r})"

    def __deepcopy__(self, memo: dict[int, object]) -> Baseline:
        return self

    def __getstate__(self) -> dict[tuple[str, str], Reference]:
        return self._refs

    def __setstate__(self, state: dict[tuple[str, str], Reference]) -> None:
        self._refs = state


def load_baseline(path: str | os.PathLike[str], bins: int) -> Baseline:
    """Read a baseline file: JSON ``{"<tenant or *>": {"<type or *>": [values, ...]}}``.

    Every list must hold at least one finite number in [0, 1] (a signal's ``value`` range).
    Each list is binned into ``bins`` equal-mass bins. A file that cannot be read, is not JSON,
    or does not have this shape raises :class:`~core.errors.ConfigError` naming the problem.
    """
    return parse_baseline(baseline_bytes(path), bins, path)


def baseline_bytes(path: str | os.PathLike[str]) -> bytes:
    """A baseline file's bytes (for a caller that also hashes them: one read for both);
    :class:`~core.errors.ConfigError` when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        msg = f"cannot read drift baseline file {os.fspath(path)}: {exc.strerror or exc}"
        raise ConfigError(msg) from exc


def parse_baseline(raw: bytes, bins: int, path: str | os.PathLike[str]) -> Baseline:
    """:func:`load_baseline` of a file's bytes ``raw``, read from ``path`` (named in errors)."""
    try:
        data: Any = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        msg = f"drift baseline file {os.fspath(path)} is not valid JSON: {exc}"
        raise ConfigError(msg) from exc
    where = f"drift baseline file {os.fspath(path)}"
    if not isinstance(data, dict):
        msg = f"{where}: the top level must be an object of tenants"
        raise ConfigError(msg)
    parsed: dict[str, dict[str, list[float]]] = {}
    for tenant, types in data.items():
        if not isinstance(types, dict):
            msg = f"{where}: tenant {tenant!r} must map to an object of types"
            raise ConfigError(msg)
        parsed[tenant] = {}
        for kind, values in types.items():
            parsed[tenant][kind] = _values(values, f"{where}: [{tenant!r}][{kind!r}]")
    if bins < 1:
        msg = f"{where}: bins must be >= 1, got {bins}"
        raise ConfigError(msg)
    return Baseline.from_mapping(parsed, bins)


def _values(raw: Any, where: str) -> list[float]:
    if not isinstance(raw, list) or not raw:
        msg = f"{where} must be a non-empty list of numbers"
        raise ConfigError(msg)
    out: list[float] = []
    for v in raw:
        # bool is an int in Python, but `true` in a list of values is a mistake.
        if isinstance(v, bool) or not isinstance(v, int | float):
            msg = f"{where} holds a non-number: {v!r}"
            raise ConfigError(msg)
        value = float(v)
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            msg = f"{where} holds {v!r}, outside [0, 1]"
            raise ConfigError(msg)
        out.append(value)
    return out
