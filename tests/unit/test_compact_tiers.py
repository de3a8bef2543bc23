"""Compaction by size tier (sinks/lake_compact.py, "Tiers"): on a schedule, a row is rewritten
about once per tier, not once per run.

The planner is a pure function of the live files (``plan_files``), so a schedule is simulated
here: each round the flow adds small files, the planner picks groups, and each group becomes one
file whose size is the sum of its files' (the model: real Parquet merges a little smaller).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.typedef import Record

from sinks.lake_compact import SMALL, plan_files, size_tier

TARGET = 64 * 1024 * 1024
THRESHOLD = SMALL * TARGET


def _file(path: str, size: int, day: int) -> DataFile:
    data_file = DataFile.from_args(
        content=DataFileContent.DATA,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=Record(day),
        record_count=max(1, size // 40),
        file_size_in_bytes=size,
    )
    data_file.spec_id = 0
    return data_file


@dataclass
class _Table:
    """Live files with their sequence numbers, and what the compactions rewrote."""

    live: list[tuple[int, DataFile]] = field(default_factory=list)
    sequence: int = 0
    names: int = 0
    rewritten: int = 0
    merges: int = 0

    def add(self, size: int, day: int = 0) -> None:
        self.sequence += 1
        self.names += 1
        self.live.append((self.sequence, _file(f"f{self.names}", size, day)))

    def compact(self, *, min_files: int, fanout: int) -> int:
        """One scheduled round: each planned group replaced by one file of its total size."""
        groups = plan_files(self.live, 0, TARGET, min_files=min_files, fanout=fanout)
        for group in groups:
            gone = {f.file_path for f in group.files}
            self.live = [(s, f) for s, f in self.live if f.file_path not in gone]
            self.rewritten += group.bytes
            self.merges += 1
            (day,) = group.partition
            self.add(group.bytes, int(str(day)))
        return len(groups)


def test_tiers_are_factors_of_the_fanout_below_the_threshold() -> None:
    assert size_tier(int(THRESHOLD) - 1, THRESHOLD, 8) == 0
    assert size_tier(math.ceil(THRESHOLD / 8), THRESHOLD, 8) == 0
    assert size_tier(math.floor(THRESHOLD / 8) - 1, THRESHOLD, 8) == 1
    assert size_tier(math.ceil(THRESHOLD / 64), THRESHOLD, 8) == 1
    assert size_tier(math.floor(THRESHOLD / 64) - 1, THRESHOLD, 8) == 2
    assert size_tier(1, THRESHOLD, 8) == 8  # 36 MiB / 8**8 < 1 byte < 36 MiB / 8**7 ... 8 tiers
    assert size_tier(1, THRESHOLD, 0) == size_tier(1, THRESHOLD, 1) == 0


@settings(max_examples=60, deadline=None)
@given(
    rounds=st.lists(
        st.lists(
            st.tuples(st.integers(200, 4_000_000), st.integers(0, 1)), min_size=0, max_size=12
        ),
        min_size=1,
        max_size=40,
    ),
    fanout=st.integers(2, 10),
    extra=st.integers(0, 4),
)
def test_a_row_is_rewritten_at_most_once_per_tier(
    rounds: list[list[tuple[int, int]]], fanout: int, extra: int
) -> None:
    min_files = fanout + extra
    table = _Table()
    bound = 0.0
    for added in rounds:
        for size, day in added:
            table.add(size, day)
            bound += (size_tier(size, THRESHOLD, fanout) + 1) * size
        before = {f.file_path: (f.partition, f.file_size_in_bytes) for _s, f in table.live}
        for group in plan_files(table.live, 0, TARGET, min_files=min_files, fanout=fanout):
            tiers = {size_tier(f.file_size_in_bytes, THRESHOLD, fanout) for f in group.files}
            assert len(tiers) == 1, "a group mixes tiers"
            assert len(group.files) >= min_files
            assert group.bytes <= TARGET
            assert {before[f.file_path][0] for f in group.files} == {Record(*group.partition)}
        table.compact(min_files=min_files, fanout=fanout)
    assert table.rewritten <= bound


def test_a_schedule_by_tiers_rewrites_a_few_times_where_one_tier_rewrites_every_run() -> None:
    # The flow's files at 100 events/s and 0.5 s commits (~2 KB each, 120 a minute), a round a
    # minute for 6 hours: by one tier, every round reads and writes the day's growing file again.
    tiered, flat = _Table(), _Table()
    ingested = 0
    for _minute in range(360):
        for _ in range(120):
            tiered.add(2_000)
            flat.add(2_000)
            ingested += 2_000
        tiered.compact(min_files=8, fanout=8)
        flat.compact(min_files=2, fanout=0)
    tiers = size_tier(2_000, THRESHOLD, 8) + 1
    assert tiered.rewritten <= tiers * ingested  # 2.9x, 17 files live at the end
    assert flat.rewritten > 50 * ingested  # 93x: the defect tiers remove
    # and tiers keep few files live: a handful per tier
    assert len(tiered.live) <= 8 * tiers
