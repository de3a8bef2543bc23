"""``core.collector``: the flow's garbage-collector tuning (``run.gc_oldest_threshold``).

Each case runs in a fresh interpreter: freezing is process-wide and would reach into the test
process's own objects."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.settings import Settings

_PROBE = """
import gc, json, sys
from core.collector import tune_for_flow
before = gc.get_threshold()
kept = [[i] for i in range(1000)]  # start-up objects the freeze must take
after = tune_for_flow(int(sys.argv[1]))
print(json.dumps({"before": before, "after": after, "frozen": gc.get_freeze_count(),
                  "in_force": gc.get_threshold()}))
"""


def _probe(threshold: int) -> dict[str, list[int] | int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(threshold)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_the_oldest_generation_is_collected_rarely_and_start_up_is_frozen() -> None:
    seen = _probe(1000)
    before = seen["before"]
    assert isinstance(before, list)
    assert seen["after"] == seen["in_force"] == [before[0], before[1], 1000]
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 1000


def test_zero_leaves_the_collector_as_the_interpreter_set_it() -> None:
    seen = _probe(0)
    assert seen["after"] == seen["in_force"] == seen["before"]
    assert seen["frozen"] == 0


def test_the_setting_defaults_to_1000_and_reads_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().run.gc_oldest_threshold == 1000
    monkeypatch.setenv("IGFLOW_RUN_GC_OLDEST_THRESHOLD", "0")
    assert Settings.load().run.gc_oldest_threshold == 0
