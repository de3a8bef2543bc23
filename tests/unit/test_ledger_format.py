"""The ledger's storage: a delta per commit, checkpoint files, and lakes of the format before.

Every ledger read here is also checked against the *reference*: the highest offset landed per
(topic, partition, lane), computed from the items the test sent.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from core.digest import DIGEST_KEY, digest_arrow, dump_summary
from core.records import Tagged
from replay.verify import HistoryUnavailable, digest_history, digest_table
from sinks.iceberg import IcebergAppender, ensure_table, ledger
from sinks.lake_plan import CommitPlan
from sinks.lake_tables import SIGNALS
from sinks.ledger_format import (
    CHECKPOINT_KEY,
    DELTA_KEY,
    FILE_SUFFIX,
    LEDGER_KEY,
    Ledger,
    LedgerUnavailable,
    dump_ledger,
    parse_ledger,
    read_ledger,
    snapshot_ledger,
)
from tests.unit.test_iceberg_sink import _item, _keys


def _lane(tenant: str) -> str:
    return f"signals:{tenant}"


def _reference(items: list[Tagged]) -> Ledger:
    out: Ledger = {}
    for item in items:
        p = item.provenance
        key = (p.topic, p.kafka_partition, _lane(item.signal.tenant_id))
        out[key] = max(out.get(key, -1), p.kafka_offset)
    return out


def _batches(tenants: int, commits: int, per_commit: int) -> list[list[Tagged]]:
    """Commits of rows over ``tenants`` tenants in turn and 2 partitions, offsets rising."""
    offsets = [0, 0]
    out = []
    n = 0
    for _c in range(commits):
        batch = []
        for _r in range(per_commit):
            partition = n % 2
            batch.append(_item(partition, offsets[partition], f"tenant-{n % tenants:02d}"))
            offsets[partition] += 1
            n += 1
        out.append(batch)
    return out


def _fresh(catalog: Catalog) -> Table:
    return catalog.load_table("coherence.signals")


def _old_append(table: Table, items: list[Tagged], whole: Ledger) -> None:
    """An append as the release before this format wrote it: the whole ledger in the summary."""
    data = SIGNALS.to_arrow(items)
    table.append(
        data,
        snapshot_properties={
            LEDGER_KEY: dump_ledger(whole),
            "igflow.flow": "coherence",
            "igflow.rows": str(len(items)),
            DIGEST_KEY: dump_summary(digest_arrow("signals", data)),
        },
    )


def test_each_commit_stores_only_the_lanes_it_raised(catalog: Catalog) -> None:
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, checkpoint_every=1000)
    first = [_item(0, o, f"tenant-{o:02d}") for o in range(20)]  # 20 lanes
    appender.append(first)
    appender.append([_item(0, 20, "tenant-03"), _item(1, 0, "tenant-03")])
    props = table.current_snapshot().summary.additional_properties  # type: ignore[union-attr]
    assert LEDGER_KEY not in props and CHECKPOINT_KEY not in props
    assert parse_ledger(props[DELTA_KEY]) == {
        ("topic", 0, _lane("tenant-03")): 20,
        ("topic", 1, _lane("tenant-03")): 0,
    }
    expected = _reference([*first, _item(0, 20, "tenant-03"), _item(1, 0, "tenant-03")])
    assert ledger(_fresh(catalog)) == expected


def test_a_checkpoint_every_k_commits_bounds_the_walk_and_is_exact(catalog: Catalog) -> None:
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, checkpoint_every=4)
    sent: list[Tagged] = []
    for batch in _batches(tenants=7, commits=10, per_commit=5):
        appender.append(batch)
        sent.extend(batch)
        state = read_ledger(_fresh(catalog))  # a new process: no cache
        assert state.ledger == _reference(sent)
        assert state.depth < 4
    checkpoints = [
        s.snapshot_id
        for s in table.metadata.snapshots
        if CHECKPOINT_KEY in (s.summary.additional_properties if s.summary else {})
    ]
    assert len(checkpoints) == 2  # the 4th and the 8th commit
    pointer = json.loads(
        table.metadata.snapshot_by_id(checkpoints[-1]).summary.additional_properties[  # type: ignore[union-attr]
            CHECKPOINT_KEY
        ]
    )
    assert pointer["lanes"] == 14 and Path(pointer["path"].removeprefix("file://")).exists()


def test_a_lost_or_damaged_checkpoint_is_walked_past(catalog: Catalog) -> None:
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, checkpoint_every=3)
    batches = _batches(tenants=5, commits=9, per_commit=4)
    sent: list[Tagged] = []
    for batch in batches[:8]:
        appender.append(batch)
        sent.extend(batch)
    files = sorted(Path(table.metadata.location.removeprefix("file://")).rglob("igflow-ledger-*"))
    assert len(files) == 2
    files[-1].write_text('{"topic":{}}')  # damaged: its hash no longer matches
    assert ledger(_fresh(catalog)) == _reference(sent)
    files[0].unlink()  # gone (an orphan-file clean-up): the walk reaches the lineage's start
    assert ledger(_fresh(catalog)) == _reference(sent)
    # And a new process resumes exactly: the re-sent rows are skipped, the new one lands.
    resumed = IcebergAppender(_fresh(catalog), SIGNALS, checkpoint_every=3)
    result = resumed.append(batches[6] + batches[7] + batches[8])
    assert (result.appended, result.skipped) == (4, 8)
    sent.extend(batches[8])
    assert ledger(_fresh(catalog)) == _reference(sent)
    keys = _keys(catalog)
    assert len(keys) == len(set(keys)) == len(sent)


def test_a_lake_of_the_old_format_reads_and_continues_exactly(catalog: Catalog) -> None:
    table = ensure_table(catalog, "coherence", SIGNALS)
    batches = _batches(tenants=3, commits=6, per_commit=6)
    sent: list[Tagged] = []
    for batch in batches[:3]:  # three commits by the release before
        sent.extend(batch)
        _old_append(table, batch, _reference(sent))
    assert ledger(_fresh(catalog)) == _reference(sent)
    appender = IcebergAppender(_fresh(catalog), SIGNALS, checkpoint_every=2)
    # A resume re-sends the last old commit with the next: only the new rows land.
    result = appender.append(batches[2] + batches[3])
    assert (result.appended, result.skipped) == (6, 6)
    sent.extend(batches[3])
    for batch in batches[4:]:
        appender.append(batch)
        sent.extend(batch)
    assert ledger(_fresh(catalog)) == _reference(sent)
    keys = _keys(catalog)
    assert len(keys) == len(set(keys)) == len(sent)
    # Mixed history: whole ledgers, then deltas (and a checkpoint).
    kinds = [
        entry[1]
        for s in _fresh(catalog).metadata.snapshots
        if (entry := snapshot_ledger(_fresh(catalog), s)) is not None  # oldest first
    ]
    assert kinds == [False, False, False, True, True, True]
    # verify --from-history sums the digests of both formats.
    assert digest_history(_fresh(catalog), "signals") == digest_table(_fresh(catalog), "signals")


def test_the_plan_of_a_mixed_history_is_the_plan_of_its_whole_ledgers(catalog: Catalog) -> None:
    table = ensure_table(catalog, "coherence", SIGNALS)
    batches = _batches(tenants=4, commits=7, per_commit=5)
    sent: list[Tagged] = []
    wholes: list[Ledger] = []
    for batch in batches[:3]:
        sent.extend(batch)
        _old_append(table, batch, _reference(sent))
        wholes.append(_reference(sent))
    appender = IcebergAppender(_fresh(catalog), SIGNALS, checkpoint_every=2)
    for batch in batches[3:]:
        appender.append(batch)
        sent.extend(batch)
        wholes.append(_reference(sent))
    table = _fresh(catalog)
    ids = [s.snapshot_id for s in table.metadata.snapshots]
    expected = CommitPlan.from_ledgers(zip(ids, wholes, strict=True))
    plan = CommitPlan.from_table(table)
    assert plan.commits == expected.commits
    for item in sent:
        p = item.provenance
        args = (p.topic, p.kafka_partition, _lane(item.signal.tenant_id), p.kafka_offset)
        assert plan.commit_of(*args) == expected.commit_of(*args)
    assert len(plan) == 7


def test_two_writers_racing_keep_the_ledger_exact(catalog: Catalog) -> None:
    """Two writers (own table handles, own caches, short checkpoint interval) append at once:
    they lose races, re-read the ledger (walking back to their cached snapshot, or to a
    checkpoint the other wrote) and land every row once."""
    ensure_table(catalog, "coherence", SIGNALS)
    errors: list[BaseException] = []
    sent: list[list[Tagged]] = [[], []]

    def writer(partition: int) -> None:
        appender = IcebergAppender(_fresh(catalog), SIGNALS, attempts=60, checkpoint_every=3)
        try:
            for start in range(0, 40, 5):
                batch = [
                    _item(partition, o, f"tenant-{o % 6:02d}") for o in range(start, start + 5)
                ]
                # A resume overlaps what landed: the first rows are re-sent.
                overlap = [_item(partition, o, f"tenant-{o % 6:02d}") for o in range(start)][-2:]
                appender.append(overlap + batch)
                sent[partition].extend(batch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    keys = _keys(catalog)
    assert sorted(keys) == sorted({(p, o) for p in range(2) for o in range(40)})
    assert ledger(_fresh(catalog)) == _reference(sent[0] + sent[1])


def test_a_commit_over_many_lanes_keeps_its_delta_and_digest_in_files(catalog: Catalog) -> None:
    """500 tenants in one commit: the summary holds pointers (and a checkpoint), not 500
    lanes and 500 digest groups; the ledger, the plan and verify --from-history read the files."""
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS)
    wide = [_item(0, o, f"tenant-{o:03d}") for o in range(500)]
    appender.append(wide)
    narrow = [_item(0, 500, "tenant-007"), _item(1, 0, "tenant-007")]
    appender.append(narrow)
    snapshots = _fresh(catalog).metadata.snapshots
    props = snapshots[0].summary.additional_properties  # type: ignore[union-attr]
    assert DELTA_KEY not in props and DIGEST_KEY not in props
    assert {DELTA_KEY + FILE_SUFFIX, DIGEST_KEY + FILE_SUFFIX, CHECKPOINT_KEY} <= set(props)
    assert len(json.dumps(props)) < 2000
    assert DELTA_KEY in snapshots[1].summary.additional_properties  # type: ignore[union-attr]
    assert ledger(_fresh(catalog)) == _reference(wide + narrow)
    assert digest_history(_fresh(catalog), "signals") == digest_table(_fresh(catalog), "signals")
    ids = [s.snapshot_id for s in snapshots]
    expected = CommitPlan.from_ledgers(
        zip(ids, [_reference(wide), _reference(wide + narrow)], strict=True)
    )
    plan = CommitPlan.from_table(_fresh(catalog))
    assert plan.commits == expected.commits
    assert plan.commit_of("topic", 0, _lane("tenant-123"), 123) == (0, True)
    # The digest file gone: history can no longer vouch; verify by scan instead.
    digest_file = json.loads(props[DIGEST_KEY + FILE_SUFFIX])["path"]
    Path(digest_file.removeprefix("file://")).unlink()
    with pytest.raises(HistoryUnavailable, match="gone or damaged"):
        digest_history(_fresh(catalog), "signals")
    # The delta file gone: the ledger reads from the checkpoint; the plan refuses to guess.
    Path(json.loads(props[DELTA_KEY + FILE_SUFFIX])["path"].removeprefix("file://")).unlink()
    assert ledger(_fresh(catalog)) == _reference(wide + narrow)
    with pytest.raises(LedgerUnavailable):
        CommitPlan.from_table(_fresh(catalog))


def test_a_history_cut_before_any_base_is_refused(catalog: Catalog) -> None:
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, checkpoint_every=100)
    for batch in _batches(tenants=2, commits=3, per_commit=2):
        appender.append(batch)
    # Drop the oldest snapshot from the metadata (as snapshot expiry does).
    table = _fresh(catalog)
    oldest = table.metadata.snapshots[0].snapshot_id
    metadata = table.metadata.model_copy(
        update={"snapshots": [s for s in table.metadata.snapshots if s.snapshot_id != oldest]}
    )
    cut = Table(table.name(), metadata, table.metadata_location, table.io, table.catalog)
    with pytest.raises(LedgerUnavailable, match="expired"):
        read_ledger(cut)


def test_a_history_cut_by_pyicebergs_own_expiry_is_refused(catalog: Catalog) -> None:
    """pyiceberg's expiry clears the parent id of the snapshot it orphans: the cut still shows
    (a lineage starting past sequence number 1), so the ledger is refused, never read short."""
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, checkpoint_every=100)
    for batch in _batches(tenants=2, commits=3, per_commit=2):
        appender.append(batch)
    table = _fresh(catalog)
    table.maintenance.expire_snapshots().by_id(table.metadata.snapshots[0].snapshot_id).commit()
    table = _fresh(catalog)
    assert all(s.parent_snapshot_id is not None for s in table.metadata.snapshots[1:])
    assert table.metadata.snapshots[0].parent_snapshot_id is None
    with pytest.raises(LedgerUnavailable, match="expired"):
        read_ledger(table)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    old=st.integers(0, 3),
    every=st.integers(1, 4),
    sends=st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 3), st.integers(0, 12), st.integers(1, 6)),
        min_size=1,
        max_size=8,
    ),
    damage=st.booleans(),
)
def test_any_mix_of_formats_resends_and_processes_reads_exactly(
    catalog: Catalog, old: int, every: int, sends: list, damage: bool
) -> None:
    """Law: after ``old`` commits of the old format, any re-sends through appenders of new
    processes (or the same one), with any checkpoint interval and a damaged checkpoint, land
    each offset once; the ledger read cold equals the reference, and the replay plan equals the
    plan of the whole ledgers."""
    ensure_table(catalog, "coherence", SIGNALS)
    catalog.purge_table("coherence.signals")
    table = ensure_table(catalog, "coherence", SIGNALS)
    sent: list[Tagged] = []
    wholes: list[Ledger] = []
    for o in range(old):
        # Lane (partition p, tenant p) at offsets 4 * o + p: the scheme of the sends below.
        batch = [_item(p, 4 * o + p, f"tenant-{p:02d}") for p in range(2)]
        sent.extend(batch)
        _old_append(table, batch, _reference(sent))
        wholes.append(_reference(sent))
    appender = IcebergAppender(_fresh(catalog), SIGNALS, checkpoint_every=every)
    for partition, tenant, start, length in sends:
        if tenant == 3:  # a new process
            appender = IcebergAppender(_fresh(catalog), SIGNALS, checkpoint_every=every)
        # Each (partition, tenant) lane owns offsets = 4 * n + tenant: in order per lane.
        batch = [
            _item(partition, 4 * n + tenant % 3, f"tenant-{tenant % 3:02d}")
            for n in range(start, start + length)
        ]
        before = _reference(sent)
        result = appender.append(batch)
        fresh = [
            i
            for i in batch
            if i.provenance.kafka_offset
            > before.get(("topic", partition, _lane(i.signal.tenant_id)), -1)
        ]
        assert result.appended == len(fresh)
        if fresh:
            sent.extend(fresh)
            wholes.append(_reference(sent))
        if damage:
            for path in Path(table.metadata.location.removeprefix("file://")).rglob(
                "igflow-ledger-*"
            ):
                path.write_text("{}")
    assert ledger(_fresh(catalog)) == _reference(sent)
    keys = _keys(catalog)
    assert len(keys) == len(set(keys)) == len(sent)
    ids = [s.snapshot_id for s in _fresh(catalog).metadata.snapshots]
    assert CommitPlan.from_table(_fresh(catalog)).commits == (
        CommitPlan.from_ledgers(zip(ids, wholes, strict=True)).commits
    )
