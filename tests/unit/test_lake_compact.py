"""Data-file compaction (sinks/lake_compact.py) on lake tables the real flow wrote (in process, a
SQLite catalog, small commits: many small files): fewer files, the same rows and digests, the
same ledger and commit plan, a ``replace`` snapshot; a lost race is committed again on top, and a
group whose files another compaction replaced meanwhile is dropped with its new files."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation

from core.settings import Settings
from igflow.workload import WorkloadSpec, generate
from replay.verify import compare, digest_table
from sinks import lake_compact
from sinks.lake_compact import SMALL, compact_table, plan_compaction, size_tier, small_files
from sinks.lake_plan import CommitPlan, load_plans
from sinks.lake_retention import expire_snapshots
from sinks.lake_tables import QUARANTINE, SCORES, SIGNALS
from sinks.ledger_format import read_ledger
from tests.conftest import SIGNAL_V1, V1_ID, DictSchemas, kafka_messages
from tests.unit.test_replay_plan import _land

TARGET = 1 << 20


@pytest.fixture
def landed(lake_settings: Settings, catalog: Catalog, schemas: DictSchemas) -> str:
    spec = WorkloadSpec(tenants=4, count=150, duplicates=0.05, invalid=0.02, seed=3)
    records = kafka_messages(list(generate(spec, V1_ID, SIGNAL_V1.parsed)), 2)
    _land(lake_settings, schemas, records, "compact", 50, 20)
    return "compact"


def _state(table: Table, name: str) -> tuple[Any, ...]:
    return (
        digest_table(table, name),
        read_ledger(table).ledger,
        [c.snapshot_id for c in CommitPlan.from_table(table).commits],
        table.scan().to_arrow().num_rows,
    )


def test_compaction_rewrites_small_files_and_changes_no_row(catalog: Catalog, landed: str) -> None:
    for name in (SIGNALS.name, SCORES.name):
        table = catalog.load_table((landed, name))
        before = _state(table, name)
        files, small = small_files(table, TARGET)
        assert files == small >= 4, (name, files)
        groups = plan_compaction(table, TARGET)
        assert groups and all(len(g.files) >= 2 for g in groups)
        seen: list[lake_compact.CompactionCommit] = []
        commits = compact_table(
            table,
            lambda n=name: catalog.load_table((landed, n)),
            target_bytes=TARGET,
            progress=seen.append,
        )
        assert commits == seen and len(commits) == 1
        table = catalog.load_table((landed, name))
        assert commits[0].replaced == sum(len(g.files) for g in groups)
        assert commits[0].added == len(groups)  # one file per group at this size
        after_files, _ = small_files(table, TARGET)
        assert after_files == files - commits[0].replaced + commits[0].added
        # Every file of a partition in one group here: one file per partition left.
        assert after_files == len({f.partition for _s, f in lake_compact._live(table)})
        after = _state(table, name)
        assert compare(before[0], after[0]).identical, name
        assert after[1:] == before[1:], name
        snapshot = table.current_snapshot()
        assert snapshot is not None and snapshot.summary is not None
        assert snapshot.summary.operation == Operation.REPLACE
        props = snapshot.summary.additional_properties
        assert not any(k.startswith("igflow.") for k in props)
        assert props["total-records"] == str(before[3])
        assert props["total-data-files"] == str(after_files)
        # Nothing left to do.
        assert plan_compaction(table, TARGET) == []
        assert compact_table(table, lambda t=table: t, target_bytes=TARGET) == []


def test_a_lost_race_lands_on_top_and_gone_files_drop_their_group(
    catalog: Catalog, landed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = SIGNALS.name

    def load() -> Table:
        return catalog.load_table((landed, name))

    table = load()
    before = _state(table, name)
    rows = table.scan().to_arrow().slice(0, 3)
    real = lake_compact._commit
    calls: list[int] = []

    def append_first(t: Table, groups: Any, added: Any) -> int:
        calls.append(len(added))
        if len(calls) == 1:  # another writer lands between the rewrite and the commit
            load().append(rows)
        return real(t, groups, added)

    monkeypatch.setattr(lake_compact, "_commit", append_first)
    (commit,) = compact_table(table, load, target_bytes=TARGET)
    assert commit.attempts == 2 and commit.dropped == 0 and len(calls) == 2
    table = load()
    assert table.scan().to_arrow().num_rows == before[3] + 3

    # A second compaction plans on a stale read; a third replaces its files first.
    stale = load()
    table.append(rows)
    table.append(rows)
    monkeypatch.setattr(lake_compact, "_commit", real)
    written: list[str] = []
    rewrite = lake_compact._rewrite

    def rewrite_and_race(t: Table, group: lake_compact.Group, *rest: Any) -> Any:
        out = rewrite(t, group, *rest)
        if not written:  # once: another compaction (its own rewrites) lands first
            monkeypatch.setattr(lake_compact, "_rewrite", rewrite)
            assert compact_table(load(), load, target_bytes=TARGET)
            monkeypatch.setattr(lake_compact, "_rewrite", rewrite_and_race)
        written.extend(f.file_path for f in out)
        return out

    monkeypatch.setattr(lake_compact, "_rewrite", rewrite_and_race)
    assert compact_table(stale, load, target_bytes=TARGET) == []
    assert written and not any(Path(p.removeprefix("file://")).exists() for p in written)
    assert load().scan().to_arrow().num_rows == before[3] + 9


def test_lost_races_in_a_row_give_up_and_delete_the_new_files(
    catalog: Catalog, landed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = catalog.load_table((landed, SCORES.name))
    written: list[str] = []
    rewrite = lake_compact._rewrite

    def keep(t: Table, group: lake_compact.Group, *rest: Any) -> Any:
        out = rewrite(t, group, *rest)
        written.extend(f.file_path for f in out)
        return out

    def lose(*_args: Any) -> int:
        raise CommitFailedException("another commit landed")

    monkeypatch.setattr(lake_compact, "_rewrite", keep)
    monkeypatch.setattr(lake_compact, "_commit", lose)
    monkeypatch.setattr(lake_compact.time, "sleep", lambda _s: None)
    with pytest.raises(CommitFailedException, match="lost 3 commit races"):
        compact_table(table, lambda: table, target_bytes=TARGET, attempts=3)
    assert written and not any(Path(p.removeprefix("file://")).exists() for p in written)


def test_a_failed_rewrite_leaves_no_new_file_and_no_commit(
    catalog: Catalog, landed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = catalog.load_table((landed, SIGNALS.name))
    before = table.current_snapshot()
    # A target of about two files: several groups, so the rewrite fails after others are done.
    target = int(max(f.file_size_in_bytes for _s, f in lake_compact._live(table)) * 2.2)
    assert len(plan_compaction(table, target)) >= 3
    written: list[str] = []
    rewrite = lake_compact._rewrite

    def fail_third(t: Table, group: lake_compact.Group, *rest: Any) -> Any:
        if len(written) >= 2:
            raise OSError("disk full")
        out = rewrite(t, group, *rest)
        written.extend(f.file_path for f in out)
        return out

    monkeypatch.setattr(lake_compact, "_rewrite", fail_third)
    with pytest.raises(OSError, match="disk full"):
        compact_table(table, lambda t=table: t, target_bytes=target)
    assert len(written) == 2
    assert not any(Path(p.removeprefix("file://")).exists() for p in written)
    after = catalog.load_table((landed, SIGNALS.name)).current_snapshot()
    assert before is not None and after is not None
    assert after.snapshot_id == before.snapshot_id


def test_a_rewritten_file_holds_its_rows_by_tenant_in_small_row_groups(
    catalog: Catalog, landed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lake_compact, "ROW_GROUP_ROWS", 50)
    table = catalog.load_table((landed, SIGNALS.name))
    tenant = "tenant-02"
    want = table.scan(row_filter=f"tenant_id = '{tenant}'").to_arrow()
    (commit,) = compact_table(table, lambda t=table: t, target_bytes=TARGET)
    table = catalog.load_table((landed, SIGNALS.name))
    for _s, data_file in lake_compact._live(table):
        parquet = pq.ParquetFile(data_file.file_path.removeprefix("file://"))
        rows = parquet.read()
        assert rows.equals(lake_compact.clustered(rows))
        key = list(zip(*(rows[c].to_pylist() for c in lake_compact.CLUSTER_BY), strict=True))
        assert key == sorted(key)
        sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
        assert max(sizes) <= 50 and sum(sizes) == data_file.record_count
    got = table.scan(row_filter=f"tenant_id = '{tenant}'").to_arrow()
    assert sorted(got.to_pylist(), key=repr) == sorted(want.to_pylist(), key=repr)
    assert commit.rows == table.scan().to_arrow().num_rows


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--target-mb", "0"], "--target-mb must be > 0"),
        (["--min-files", "1"], "--min-files must be >= 2"),
        (["--every", "0"], "--every must be > 0"),
        (["--fanout", "-1"], "--fanout must be >= 0"),
    ],
)
def test_the_command_refuses_bad_options_with_a_reason(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from igflow import cli

    assert cli.main(["compact", *args]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_the_command_compacts_and_reports_json_lines(
    lake_settings: Settings,
    landed: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from igflow import cli

    lake = lake_settings.lake
    monkeypatch.setenv("IGFLOW_LAKE_CATALOG_URI", lake.catalog_uri)
    monkeypatch.setenv("IGFLOW_LAKE_WAREHOUSE", lake_settings.warehouse)
    monkeypatch.setenv("IGFLOW_LAKE_NAMESPACE", landed)
    assert cli.main(["compact", "--table", "signals", "--dry-run"]) == 0
    (plan,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert plan["dry_run"] and plan["would_rewrite"] == plan["files"] > plan["into"] >= 1
    assert cli.main(["compact", "--table", "signals"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["commit"] for x in lines[:-1]] and lines[-1]["files_after"] == plan["into"]
    assert lines[-1]["rewritten"] == plan["would_rewrite"]


def test_a_replay_of_a_compacted_original_digests_alike_and_replays_its_commits(
    lake_settings: Settings, catalog: Catalog, schemas: DictSchemas, landed: str
) -> None:
    """The plans read from a compacted original are its commits (the replace snapshots are in
    none), and a replay with them digests like the original, table for table; each replayed
    snapshot is one of the original's commits, so the replay writes the files the original wrote
    before compaction, not the compacted ones."""
    before = load_plans(catalog, landed, lake_settings.kafka.topic)
    for name in (SIGNALS.name, SCORES.name, QUARANTINE.name):
        table = catalog.load_table((landed, name))
        compact_table(table, lambda n=name: catalog.load_table((landed, n)), target_bytes=TARGET)
    plans = load_plans(catalog, landed, lake_settings.kafka.topic)
    assert {k: [c.snapshot_id for c in p.commits] for k, p in plans.items()} == {
        k: [c.snapshot_id for c in p.commits] for k, p in before.items()
    }
    spec = WorkloadSpec(tenants=4, count=150, duplicates=0.05, invalid=0.02, seed=3)
    records = kafka_messages(list(generate(spec, V1_ID, SIGNAL_V1.parsed)), 2)
    _land(lake_settings, schemas, records, "compact_replay", 23, 60, plans)
    for name in (SIGNALS.name, SCORES.name, QUARANTINE.name):
        original = catalog.load_table((landed, name))
        replayed = catalog.load_table(("compact_replay", name))
        assert compare(digest_table(original, name), digest_table(replayed, name)).identical
        appends = [
            s
            for s in replayed.snapshots()
            if s.summary is not None and s.summary.operation == Operation.APPEND
        ]
        assert len(appends) == len(plans[name])


def test_expiry_after_a_compaction_deletes_the_replaced_files_and_no_other(
    lake_settings: Settings, catalog: Catalog, schemas: DictSchemas
) -> None:
    """The small files stay while a kept snapshot names them (time travel), and go with the
    last such snapshot's expiry once the flow has gone on; a file a kept snapshot names is
    never deleted."""
    # A checkpoint every other commit: the ledger's lineage is short, so expiry has work.
    spec = WorkloadSpec(tenants=4, count=150, duplicates=0.05, invalid=0.02, seed=3)
    records = kafka_messages(list(generate(spec, V1_ID, SIGNAL_V1.parsed)), 2)
    settings = lake_settings.with_changes("lake", checkpoint_every=2, snapshots_kept=0)
    _land(settings, schemas, records, "compact_expiry", 50, 20)
    table = catalog.load_table(("compact_expiry", SIGNALS.name))
    replaced = {f.file_path for _s, f in lake_compact._live(table)}
    (commit,) = compact_table(table, lambda t=table: t, target_bytes=TARGET)
    # The flow goes on (a second workload, later offsets): checkpoints after the compaction.
    later = WorkloadSpec(tenants=4, count=60, seed=4)
    more = [
        dataclasses.replace(r, offset=r.offset + 100_000)
        for r in kafka_messages(list(generate(later, V1_ID, SIGNAL_V1.parsed)), 2)
    ]
    _land(settings, schemas, more, "compact_expiry", 50, 20)
    table = catalog.load_table(("compact_expiry", SIGNALS.name))
    rows = table.scan().to_arrow().num_rows
    expire_snapshots(table, None)
    table = catalog.load_table(("compact_expiry", SIGNALS.name))
    named = {
        entry.data_file.file_path
        for snapshot in table.snapshots()
        for manifest in snapshot.manifests(table.io)
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
    }
    assert all(Path(p.removeprefix("file://")).exists() for p in named)
    gone = {p for p in replaced if not Path(p.removeprefix("file://")).exists()}
    assert gone == replaced - named
    assert gone, "nothing expired: the check would hold vacuously"
    assert table.scan().to_arrow().num_rows == rows > commit.rows


def test_compaction_by_tiers_converges_and_changes_no_row(catalog: Catalog, landed: str) -> None:
    """Scheduled rounds by size tier on a real table: no group mixes tiers, each round leaves
    rows, digests, ledger and commit plan as they were, and the rounds come to rest."""
    name = SIGNALS.name
    table = catalog.load_table((landed, name))
    before = _state(table, name)
    rewritten = []
    for _round in range(12):
        groups = plan_compaction(table, TARGET, min_files=2, fanout=2)
        for group in groups:
            tiers = {size_tier(f.file_size_in_bytes, SMALL * TARGET, 2) for f in group.files}
            assert len(tiers) == 1, tiers
        commits = compact_table(
            table,
            lambda: catalog.load_table((landed, name)),
            target_bytes=TARGET,
            min_files=2,
            fanout=2,
        )
        table = catalog.load_table((landed, name))
        rewritten.append(sum(c.replaced for c in commits))
        after = _state(table, name)
        assert compare(before[0], after[0]).identical
        assert after[1:] == before[1:]
        if not commits:
            break
    assert rewritten[0] > 0 and rewritten[-1] == 0, rewritten


def test_a_stop_commits_the_groups_rewritten_and_leaves_the_rest(
    catalog: Catalog, landed: str
) -> None:
    table = catalog.load_table((landed, SIGNALS.name))
    groups = plan_compaction(table, TARGET, min_files=2, fanout=2)
    assert len(groups) >= 2
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 1  # after the first group

    (commit,) = compact_table(
        table,
        lambda: catalog.load_table((landed, SIGNALS.name)),
        target_bytes=TARGET,
        min_files=2,
        fanout=2,
        stop=stop,
    )
    assert commit.replaced == len(groups[0].files) and commit.added == 1
    table = catalog.load_table((landed, SIGNALS.name))
    assert plan_compaction(table, TARGET, min_files=2, fanout=2)  # the rest is still there


def test_the_command_every_n_seconds_runs_rounds_until_sigterm(
    lake_settings: Settings, landed: str
) -> None:
    lake = lake_settings.lake
    env = {
        **os.environ,
        "IGFLOW_LAKE_CATALOG_URI": lake.catalog_uri,
        "IGFLOW_LAKE_WAREHOUSE": lake_settings.warehouse,
        "IGFLOW_LAKE_NAMESPACE": landed,
        "IGFLOW_STACK_DIR": lake_settings.stack_dir,
    }
    argv = ["compact", "--every", "0.2", "--fanout", "2", "--min-files", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "igflow.cli", *argv, "--table", "signals", "--table", "scores"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        rounds: list[dict[str, Any]] = []
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            entry = json.loads(line)
            if "seconds" in entry:
                rounds.append(entry)
                quiet = all(t["rewritten"] == 0 for t in entry["tables"].values())
                if quiet and len(rounds) >= 2:
                    break
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))
    assert sum(r["tables"]["signals"]["rewritten"] for r in rounds) > 0
    assert set(rounds[0]["tables"]) == {"signals", "scores"}
