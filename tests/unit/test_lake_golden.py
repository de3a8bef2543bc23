"""The lake sink writes what it wrote before it went columnar (issue 15).

``tests/data/lake_golden.json`` was written by ``tests/unit/lake_golden.py`` from the code as it
was before: the SHA-256 of every data file of every append to the signals, scores, quarantine and
deconfliction tables over fixed batches (partitions interleaved, tenants shuffled, an item twice
in a batch, resumes re-delivering what landed), each append's ``igflow.*`` snapshot properties
(ledger delta, checkpoints, digests) and its result. Equal bytes are what keeps a replay of a
table written by the code before byte-identical, and its ledger and digests verifiable.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.lake_golden import GOLDEN, TABLES, compute


@pytest.fixture(scope="module")
def now() -> dict[str, Any]:
    return compute()


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(GOLDEN.read_text(encoding="ascii"))
    return data


@pytest.mark.parametrize("table", [key for key, _table, _seed in TABLES])
def test_appends_write_the_bytes_recorded_before(
    now: dict[str, Any], golden: dict[str, Any], table: str
) -> None:
    assert len(golden[table]) > 5
    assert json.loads(json.dumps(now[table])) == golden[table]
