"""The records the native paths build are left out of the cyclic collector's lists
(``core/_native.c`` ``build``): immutable, set once to values older than themselves, they cannot
be in a reference cycle, and traversing them in every young and middle collection while the
flow held them cost ~0.2 s of a 200,000-signal run (session 30). The same records built in
Python stay tracked; both kinds are freed by their reference counts alike."""

from __future__ import annotations

import gc
import pickle
import tracemalloc
from datetime import UTC, datetime

from core._native import with_horizon
from core.records import Decoded, Records, ScoreChange, Tagged
from core.settings import ScoreSettings
from operators.decode import SignalDecoder
from operators.drift import _DECODED_SLOTS
from operators.score import TickScore
from operators.tenancy import TenancyPolicy, tag_run
from tests.unit import hotpath_golden
from tests.unit.test_score_native import _clean


def _decoded() -> list[Decoded]:
    decoder = SignalDecoder(hotpath_golden.SCHEMAS.get, hotpath_golden.V2.parsed)
    out = decoder.decode_many(hotpath_golden.raw_records())
    return [d for d in out if isinstance(d, Decoded)]


def test_decode_tag_score_exchange_and_drifts_copy_build_untracked_records() -> None:
    decoded = _decoded()
    native = [d for d in decoded if not gc.is_tracked(d)]
    assert len(native) > len(decoded) // 2, "the clean records are decoded in C"
    assert not any(gc.is_tracked(d.signal) or gc.is_tracked(d.provenance) for d in native)
    policy = TenancyPolicy.load(hotpath_golden.POLICIES)
    tagged = tag_run(native, policy)
    assert tagged and not any(gc.is_tracked(t) for t in tagged)

    changes = TickScore(ScoreSettings(window_seconds=10.0, tick_seconds=1.0)).add(_clean())
    assert changes and all(type(c) is ScoreChange and not gc.is_tracked(c) for c in changes)

    back = pickle.loads(pickle.dumps(Records(tagged)))
    assert back == tagged and not any(gc.is_tracked(t) for t in back)

    copy = with_horizon(native[0], datetime(2026, 1, 1, tzinfo=UTC), Decoded, _DECODED_SLOTS)
    assert not gc.is_tracked(copy)

    # The references' records, as Python builds them, stay tracked.
    d = native[0]
    python_built = Tagged(Decoded(d.signal, d.provenance), tagged[0].tags, "v", "p")
    assert gc.is_tracked(python_built)


def test_untracked_records_are_freed_by_their_reference_counts() -> None:
    tracemalloc.start()
    try:
        sizes = []
        for _ in range(40):
            batch = _decoded()
            assert batch
            del batch
            gc.collect()  # each round's new decoder: its compiled readers' closures are cycles
            sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    # Past the first rounds (caches filled), 20 more rounds of ~100 records each keep nothing.
    grown = sizes[-1] - sizes[19]
    assert grown < 16_000, (grown, sizes[::5])
