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
                  "in_force": gc.get_threshold(), "enabled": gc.isenabled()}))
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
    assert seen["enabled"]


def test_the_setting_defaults_to_1000_and_reads_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().run.gc_oldest_threshold == 1000
    monkeypatch.setenv("IGFLOW_RUN_GC_OLDEST_THRESHOLD", "0")
    assert Settings.load().run.gc_oldest_threshold == 0


_STARTING = """
import gc, json
from core.collector import starting, tune_for_flow
seen = {}
with starting():
    seen["paused"] = not gc.isenabled()
seen["restored"] = gc.isenabled()
with starting():
    seen["tuned"] = tune_for_flow(1000)[2] == 1000 and gc.isenabled()
seen["on_after"] = gc.isenabled()
try:
    with starting():
        raise RuntimeError("start-up failed")
except RuntimeError:
    seen["on_after_failure"] = gc.isenabled()
gc.disable()
with starting():
    pass
seen["left_off"] = not gc.isenabled()
print(json.dumps(seen))
"""


def test_start_up_pauses_the_collector_until_the_flow_is_tuned() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _STARTING], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == {
        "paused": True,
        "restored": True,
        "tuned": True,
        "on_after": True,
        "on_after_failure": True,
        "left_off": True,
    }


_CLI = """
import gc, json, sys
import igflow.runner
from core.collector import tune_for_flow
seen = []
def fake_run(settings, cluster=None):
    seen.append(("start-up paused", not gc.isenabled()))
    tune_for_flow(settings.run.gc_oldest_threshold)
    seen.append(("flow collected", gc.isenabled()))
    if sys.argv[1] == "fail":
        raise SystemExit(3)
    return 0
igflow.runner.run = fake_run
from igflow.cli import main
try:
    main(["run"])
except SystemExit:
    pass
seen.append(("after", gc.isenabled()))
print(json.dumps(seen))
"""


@pytest.mark.parametrize("outcome", ["ok", "fail"])
def test_igflow_run_starts_up_paused_and_runs_its_flow_collected(outcome: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CLI, outcome], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.splitlines()[-1]) == [
        ["start-up paused", True],
        ["flow collected", True],
        ["after", True],
    ]
