"""A replay computes with the settings the original recorded, not with its own environment's."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any

import pytest

from core.catalog import catalog
from core.settings import Settings
from igflow.producer import produce
from igflow.workload import WorkloadSpec
from sinks.lake_tables import SCORES
from sinks.settings_record import read_settings, settings_history
from tests.integration.conftest import finish, igflow, json_lines, produce_workload, recent

pytestmark = pytest.mark.integration

#: The original's deciding settings, neither of them the default (0.1 s ticks, a 24 h window).
#: Score settings other than the defaults (close_on "signal": the derivation below is exact
#: only with ticks closed by signals, see replay/derive.py).
ORIGINAL = {
    "IGFLOW_SCORE_TICK_SECONDS": "1",
    "IGFLOW_SCORE_WINDOW_SECONDS": "5",
    "IGFLOW_SCORE_CLOSE_ON": "signal",
}


def _ends(err: str) -> dict[int, int]:
    ends = {
        line["kafka_partition"]: line["kafka_offset"]
        for line in json_lines(err)
        if line.get("op") == "source.end"
    }
    assert ends, "no source.end log lines"
    return ends


def _offsets(offsets: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(offsets.items()))


def _report(out: str) -> dict[str, object]:
    report: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return report


def _rows(settings: Settings, namespace: str, name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (
        catalog(settings).load_table(f"{namespace}.{name}").scan().to_arrow().to_pylist()
    )
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=repr))


def _verify(settings: Settings, scratch: str) -> tuple[int, str]:
    proc = igflow(settings, "verify", "--against", scratch)
    out, _err = proc.communicate(timeout=240)
    return proc.returncode, out.decode()


def test_a_replay_in_a_default_environment_reproduces_a_run_with_other_settings(
    it_settings: Settings,
) -> None:
    # Signals 0.1 s apart over 4 tenants: several per 1 s tick of a tenant, some 5 s windows.
    spec = WorkloadSpec(
        tenants=4, count=120, duplicates=0.05, invalid=0.02, seed=7, step=timedelta(seconds=0.1)
    )
    produce_workload(it_settings, spec)
    _out, err = finish(igflow(it_settings, "run", **ORIGINAL))
    ends = _ends(err)
    frm, to = _offsets(dict.fromkeys(ends, 0)), _offsets(ends)
    original = it_settings.lake.namespace

    # The environment is the default one: the replay takes the original's record.
    scratch = f"{original}_rec"
    out, err = finish(
        igflow(it_settings, "replay", "--from", frm, "--to", to, "--into", scratch, "--lake-only")
    )
    used = _report(out)["settings"]
    assert isinstance(used, dict)
    assert used["source"] == "original"
    assert len(used["records"]) == 1
    assert used["differences"] == [
        "score.close_on: 'signal' recorded, 'horizon' here",
        "score.tick_seconds: 1.0 recorded, 0.1 here",
        "score.window_seconds: 5.0 recorded, 86400.0 here",
    ]
    assert "replaying with the original's settings" in err
    code, verified = _verify(it_settings, scratch)
    assert code == 0, verified
    assert "IDENTICAL" in verified
    # Every data file of the original has a byte-identical twin in the replay.
    assert verified.count("(all)") >= 3, verified

    # The operator's override computes with the environment's settings and says how they
    # differ: its scores are not the original's (so the record above is what made them equal).
    own = f"{original}_own"
    out, err = finish(
        igflow(
            it_settings,
            "replay",
            *("--from", frm, "--to", to, "--into", own, "--lake-only", "--settings", "current"),
        )
    )
    used = _report(out)["settings"]
    assert isinstance(used, dict)
    assert used["source"] == "current"
    assert "score.tick_seconds: 1.0 recorded, 0.1 here" in used["differences"]
    assert "--settings current" in err
    code, verified = _verify(it_settings, own)
    assert code != 0
    assert "scores" in verified

    # The --source iceberg derivation takes the score settings recorded by the source too.
    derived = f"{original}_der"
    out, _err = finish(
        igflow(
            it_settings,
            "replay",
            *("--source", "iceberg", "--from-namespace", original, "--into", derived),
        )
    )
    used = _report(out)["settings"]
    assert isinstance(used, dict)
    assert used["source"] == "original"
    assert "score.tick_seconds: 1.0 recorded, 0.1 here" in used["differences"]
    assert _rows(it_settings, derived, SCORES.name) == _rows(it_settings, original, SCORES.name)
    # Its own commits name what they computed with.
    table = catalog(it_settings).load_table(f"{derived}.{SCORES.name}")
    shas = {commit.sha256 for commit in settings_history(table)}
    assert len(shas) == 1
    sha = shas.pop()
    assert sha is not None
    assert read_settings(table, sha).values["score"]["tick_seconds"] == 1.0
    assert read_settings(table, sha).values["score"]["close_on"] == "signal"


def test_a_range_across_a_change_of_settings_is_refused_and_each_part_replays(
    it_settings: Settings,
) -> None:
    step = timedelta(seconds=0.1)
    produce_workload(it_settings, WorkloadSpec(tenants=3, count=60, seed=31, step=step))
    _out, err = finish(igflow(it_settings, "run", **ORIGINAL))
    first = _ends(err)
    # Later signals (the same ids an hour on: not duplicates of the first ones).
    later = recent(WorkloadSpec(tenants=3, count=60, seed=32, step=step))
    produce(it_settings, dataclasses.replace(later, start=later.start + timedelta(hours=1)))
    _out, err = finish(igflow(it_settings, "run"))  # the defaults, from here on
    second = _ends(err)
    assert all(second[p] >= first.get(p, 0) for p in second)
    assert any(second[p] > first.get(p, 0) for p in second)
    original = it_settings.lake.namespace

    whole = ("--from", _offsets(dict.fromkeys(second, 0)), "--to", _offsets(second))
    proc = igflow(it_settings, "replay", *whole, "--into", f"{original}_all", "--lake-only")
    _o, e = proc.communicate(timeout=240)
    assert proc.returncode == 2
    message = e.decode()
    assert "REPLAY_SETTINGS_CHANGED" in message
    assert "different settings" in message
    assert "Traceback" not in message

    # Each part on its own: the first with the first run's settings, the second with the
    # defaults (its record differs from this environment in nothing).
    part = ("--from", _offsets(dict.fromkeys(first, 0)), "--to", _offsets(first))
    out, _err = finish(
        igflow(it_settings, "replay", *part, "--into", f"{original}_one", "--lake-only")
    )
    one = _report(out)["settings"]
    assert isinstance(one, dict)
    assert one["source"] == "original"
    assert "score.tick_seconds: 1.0 recorded, 0.1 here" in one["differences"]
    rest = {p: first.get(p, 0) for p in second}
    part = ("--from", _offsets(rest), "--to", _offsets(second))
    out, _err = finish(
        igflow(it_settings, "replay", *part, "--into", f"{original}_two", "--lake-only")
    )
    two = _report(out)["settings"]
    assert isinstance(two, dict)
    assert two["source"] == "original"
    assert two["differences"] == []
    assert two["records"] != one["records"]

    # The override replays the whole range, and reports both records.
    out, _err = finish(
        igflow(
            it_settings,
            "replay",
            *whole,
            *("--into", f"{original}_cur", "--lake-only", "--settings", "current"),
        )
    )
    current = _report(out)["settings"]
    assert isinstance(current, dict)
    assert current["source"] == "current"
    assert len(current["records"]) == 2
