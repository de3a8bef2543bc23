"""A flow that expires its lake snapshots as it goes (``lake.snapshots_kept``, a history chain:
sinks/ledger_history.py), and compacts its manifests (``lake.manifests_kept``:
sinks/lake_manifests.py), on the real local stack: its replay lands the same rows and
``igflow verify --from-history`` still reads every commit."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from core.catalog import catalog
from core.settings import Settings
from igflow.workload import WorkloadSpec
from sinks.lake_plan import CommitPlan
from sinks.lake_tables import QUARANTINE, SCORES, SIGNALS
from sinks.ledger_history import read_history
from tests.integration.conftest import finish, igflow, json_lines, produce_workload

pytestmark = pytest.mark.integration


def _rows(settings: Settings, namespace: str, name: str) -> list[dict[str, Any]]:
    table = catalog(settings).load_table(f"{namespace}.{name}")
    rows: list[dict[str, Any]] = table.scan().to_arrow().to_pylist()
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=repr))


def _file_hashes(settings: Settings, namespace: str, name: str) -> list[str]:
    table = catalog(settings).load_table(f"{namespace}.{name}")
    return sorted(
        hashlib.sha256(table.io.new_input(task.file.file_path).open().read()).hexdigest()
        for task in table.scan().plan_files()
    )


def _appends(table: Any) -> int:
    return sum(c.operation == "append" for c in read_history(table).commits)


@pytest.mark.parametrize("manifests_kept", ["0", "2"])
def test_a_flow_expiring_its_snapshots_replays_and_verifies_from_history(
    it_settings: Settings, manifests_kept: str
) -> None:
    settings = it_settings
    # A checkpoint (and history file) every 2 commits, expiry past 4 snapshots; with "2", a
    # manifest compaction whenever a table lists more than 2 manifests (0: never).
    small = {
        "IGFLOW_LAKE_CHECKPOINT_EVERY": "2",
        "IGFLOW_LAKE_SNAPSHOTS_KEPT": "4",
        "IGFLOW_LAKE_MANIFESTS_KEPT": manifests_kept,
    }
    # A run commits each table once or twice: eight runs over a growing topic, each landing
    # what the ones before had not (each round's workload is the previous one's, whose signals
    # come again as duplicates, and more).
    expiries = compactions = 0
    for k in range(8):
        produce_workload(settings, WorkloadSpec(tenants=3, count=40 * (k + 1), invalid=0.05))
        _out, err = finish(igflow(settings, "run", **small))
        expiries += sum(line.get("op") == "lake.expire" for line in json_lines(err))
        compactions += sum(line.get("op") == "lake.compact" for line in json_lines(err))
    assert expiries
    assert bool(compactions) == (manifests_kept != "0")
    ends = {
        line["kafka_partition"]: line["kafka_offset"]
        for line in json_lines(err)
        if line.get("op") == "source.end"
    }
    assert ends
    original = settings.lake.namespace
    signals = catalog(settings).load_table(f"{original}.{SIGNALS.name}")
    commits = len(read_history(signals).commits)
    assert len(signals.metadata.snapshots) < commits  # expired, and the chain holds them all
    # Every append is a planned commit (a manifest compaction's ``replace`` is none).
    appends = _appends(signals)
    assert len(CommitPlan.from_table(signals)) == appends
    if manifests_kept != "0":
        assert appends < commits
        current = signals.current_snapshot()
        assert current is not None and len(current.manifests(signals.io)) <= 3

    scratch = f"{original}_replay"
    to = ",".join(f"{p}:{o}" for p, o in sorted(ends.items()))
    frm = ",".join(f"{p}:0" for p in sorted(ends))
    finish(
        igflow(
            settings, "replay", "--from", frm, "--to", to, "--into", scratch, "--lake-only", **small
        )
    )
    for table in (SIGNALS, SCORES, QUARANTINE):
        before = _rows(settings, original, table.name)
        assert before, f"{table.name} is empty"
        assert _rows(settings, scratch, table.name) == before, f"{table.name} differs"
        # The original's commits one for one: its data files byte for byte.
        assert _file_hashes(settings, scratch, table.name) == _file_hashes(
            settings, original, table.name
        )
    # The replay followed the original's commits one for one (its plan from the chain).
    replayed = catalog(settings).load_table(f"{scratch}.{SIGNALS.name}")
    assert _appends(replayed) == appends
    out, _err = finish(igflow(settings, "verify", "--against", scratch, "--from-history"))
    assert "IDENTICAL" in out
    out, _err = finish(igflow(settings, "verify", "--against", scratch))
    assert "IDENTICAL" in out
