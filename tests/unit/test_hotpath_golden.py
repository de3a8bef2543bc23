"""The hot path's outputs are those recorded before its per-record cost was cut (issue 15).

``tests/data/hotpath_golden.json`` was written by ``tests/unit/hotpath_golden.py`` from the code
as it was before: decode (rows, reason codes, details, unknown fields), validate, dedupe,
tenant-tag (provenance ids, tags, policy version) and score (every field of every change, the
exact 2-place rounding, the seq) over a fixed workload with edge cases, and a SHA-256 over the
pickles of every output (what Bytewax snapshots and moves between workers).
"""

from __future__ import annotations

import json

import pytest

from tests.unit.hotpath_golden import GOLDEN, compute


@pytest.fixture(scope="module")
def now() -> dict[str, object]:
    return compute()


@pytest.fixture(scope="module")
def golden() -> dict[str, object]:
    data: dict[str, object] = json.loads(GOLDEN.read_text(encoding="ascii"))
    return data


@pytest.mark.parametrize(
    "part", ["records", "decode", "validate", "dedupe", "dedupe_state", "tag", "score"]
)
def test_outputs_are_those_recorded_before(
    now: dict[str, object], golden: dict[str, object], part: str
) -> None:
    # JSON round trip: the fixture holds lists where the computation has tuples.
    assert json.loads(json.dumps(now[part])) == golden[part]


def test_pickles_are_those_recorded_before(
    now: dict[str, object], golden: dict[str, object]
) -> None:
    assert now["pickles_sha256"] == golden["pickles_sha256"]
