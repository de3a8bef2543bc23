"""Manifest compaction as the flow goes (sinks/lake_manifests.py): the manifests stay few, and
every reader of the lineage (ledger, replay plan, history digests, settings history, marks) and
the data read the same as a twin table that never compacts."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import EqualTo
from pyiceberg.manifest import ManifestFile
from pyiceberg.table import Table

import sinks.iceberg as iceberg
from core.records import Tagged
from replay.verify import digest_history, digest_table
from sinks import lake_manifests, lake_retention
from sinks.iceberg import IcebergAppender, ensure_table, ledger
from sinks.lake_manifests import compact_manifests, data_manifests
from sinks.lake_plan import CommitPlan
from sinks.lake_tables import SIGNALS
from sinks.ledger_format import CHECKPOINT_KEY, properties_ledger
from sinks.ledger_history import read_history
from sinks.settings_record import settings_history
from tests.unit.test_iceberg_sink import _item, _keys
from tests.unit.test_ledger_format import _batches, _reference
from tests.unit.test_ledger_history import _plan_key, _walk


def _fresh(catalog: Catalog, namespace: str = "coherence") -> Table:
    return catalog.load_table(f"{namespace}.signals")


def _rows(table: Table, snapshot_id: int | None = None) -> pa.Table:
    rows = table.scan(snapshot_id=snapshot_id).to_arrow()
    return rows.sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")])


def _replaces(table: Table) -> list[int]:
    return [c.snapshot_id for c in read_history(table).commits if c.operation == "replace"]


def _same_readers(fresh: Table, whole: Table, sent: list[Tagged]) -> None:
    """``fresh`` (compacting) reads what ``whole`` (its twin that never compacts nor expires)
    reads, the twin read as the readers walked snapshots before the history chain."""
    changes = []
    for commit in reversed(_walk(whole)):
        entry = properties_ledger(whole, commit.properties)
        if entry is not None:
            changes.append((commit.snapshot_id, *entry))
    plan, reference = CommitPlan.from_table(fresh), CommitPlan.from_changes(changes)
    assert len(plan) == len(reference)
    assert _plan_key(plan, sent) == _plan_key(reference, sent)
    assert digest_history(fresh, "signals") == digest_table(fresh, "signals")
    assert digest_history(fresh, "signals") == digest_history(whole, "signals")
    assert [s.spans for s in settings_history(fresh)] == [s.spans for s in settings_history(whole)]
    assert ledger(fresh) == ledger(whole) == _reference(sent)
    assert _rows(fresh).equals(_rows(whole))


def test_compacting_as_it_goes_keeps_the_manifests_few_and_every_reader_exact(
    catalog: Catalog,
) -> None:
    whole_table = ensure_table(catalog, "kept", SIGNALS)
    table = ensure_table(catalog, "coherence", SIGNALS)
    keeper = IcebergAppender(whole_table, SIGNALS, checkpoint_every=3)
    compacting = IcebergAppender(
        table, SIGNALS, checkpoint_every=3, snapshots_kept=7, manifests_kept=3
    )
    sent: list[Tagged] = []
    most = 0
    for batch in _batches(tenants=4, commits=40, per_commit=3):
        keeper.append(batch)
        compacting.append(batch)
        sent.extend(batch)
        most = max(most, len(data_manifests(table)))
    assert most <= 3
    assert len(data_manifests(whole_table)) == 40
    fresh, whole = _fresh(catalog), _fresh(catalog, "kept")
    replaces = _replaces(fresh)
    assert len(replaces) >= 5
    # The history lists each rewrite, with no igflow property, between the appends.
    commits = read_history(fresh).commits
    assert all(not c.properties for c in commits if c.operation == "replace")
    assert [c.operation for c in commits].count("append") == 40
    _same_readers(fresh, whole, sent)

    def same(table: Table) -> list[dict[str, str]]:  # a checkpoint's path names its table
        return [
            {k: v for k, v in c.properties.items() if k != CHECKPOINT_KEY}
            for c in read_history(table).commits
            if c.operation == "append"
        ]

    assert same(fresh) == same(whole)


def test_a_rewrite_changes_no_data_and_time_travel_reads_before_it(catalog: Catalog) -> None:
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS)  # never compacts by itself
    for batch in _batches(tenants=3, commits=6, per_commit=4):
        appender.append(batch)
    before = table.current_snapshot()
    assert before is not None
    result = compact_manifests(table, 2)
    assert result is not None and (result.before, result.after) == (6, 1)
    assert result.entries == sum(m.existing_files_count or 0 for m in data_manifests(table))
    after = table.current_snapshot()
    assert after is not None and after.parent_snapshot_id == before.snapshot_id
    assert after.summary is not None and after.summary.operation.value == "replace"
    for key in ("total-data-files", "total-records", "total-files-size"):
        assert after.summary[key] == before.summary[key]  # type: ignore[index]
    assert _rows(table).equals(_rows(table, before.snapshot_id))
    files = {t.file.file_path for t in table.scan().plan_files()}
    assert files == {
        t.file.file_path for t in table.scan(snapshot_id=before.snapshot_id).plan_files()
    }
    # Each entry keeps the snapshot that added it and its sequence numbers.
    old = {
        e.data_file.file_path: (e.snapshot_id, e.sequence_number, e.file_sequence_number)
        for m in before.manifests(table.io)
        for e in m.fetch_manifest_entry(table.io)
    }
    new = {
        e.data_file.file_path: (e.snapshot_id, e.sequence_number, e.file_sequence_number)
        for m in after.manifests(table.io)
        for e in m.fetch_manifest_entry(table.io)
    }
    assert new == old
    assert compact_manifests(table, 2) is None  # one manifest: nothing to do


def test_manifests_merge_by_size_tier_so_each_file_is_rewritten_a_few_times(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over many appends the manifests stay at most ``manifests_kept`` and a data file is
    rewritten a few times per size tier it climbs, not at every compaction."""
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, manifests_kept=4)
    rewritten = 0
    real = lake_manifests.compact_manifests

    def counted(table: Table, kept: int) -> Any:
        nonlocal rewritten
        result = real(table, kept)
        if result is not None:
            rewritten += result.entries
        return result

    monkeypatch.setattr("sinks.iceberg.compact_manifests", counted)
    for batch in _batches(tenants=1, commits=120, per_commit=1):
        appender.append(batch)
        assert len(data_manifests(table)) <= 4
    files = len(list(table.scan().plan_files()))
    assert files == 120
    # Tiers of 8: a file climbs tiers 0 -> 1 -> 2 here, rewritten at most twice within each
    # (a merge of up to 5 manifests of a tier may stay in it); merging everything at every
    # compaction would rewrite ~120 * 120 / 2 / 4 = 1,800 (measured here: 553).
    assert rewritten <= 2 * 3 * files


def test_a_compaction_that_loses_a_race_is_logged_and_done_after_the_next_commit(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another writer's append between the compaction's read and its commit: the rewrite does
    not land (its requirement is the snapshot it read) and leaves no manifest behind; the
    appender logs it (INFO) and compacts after its next commit; nothing is lost."""
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, checkpoint_every=2, manifests_kept=3)
    other = IcebergAppender(_fresh(catalog), SIGNALS)
    sent: list[Tagged] = []
    for n in range(3):
        batch = [_item(0, n, "tenant-00")]
        appender.append(batch)
        sent.extend(batch)
    real = lake_manifests._bins
    raced: list[int] = []

    def racing(table: Table, manifests: list[ManifestFile]) -> Any:
        if not raced:
            raced.append(1)
            batch = [_item(1, 0, "tenant-01")]
            other.append(batch)  # between the compaction's read and its commit
            sent.extend(batch)
        return real(table, manifests)

    monkeypatch.setattr(lake_manifests, "_bins", racing)
    location = table.metadata.location.removeprefix("file://")
    with caplog.at_level(logging.INFO, logger="sinks.iceberg"):
        batch = [_item(0, 3, "tenant-00")]
        appender.append(batch)
        sent.extend(batch)
    assert raced and "manifest compaction on signals lost a commit race" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    fresh = _fresh(catalog)
    assert not _replaces(fresh)
    referenced = {
        m.manifest_path.removeprefix("file://")
        for s in fresh.metadata.snapshots
        for m in s.manifests(fresh.io)
    }
    on_disk = {str(p) for p in Path(location).rglob("*-m*.avro")}
    assert on_disk == referenced  # the lost rewrite's manifest was deleted
    batch = [_item(0, 4, "tenant-00")]
    appender.append(batch)
    sent.extend(batch)
    fresh = _fresh(catalog)
    assert len(_replaces(fresh)) == 1 and len(data_manifests(fresh)) <= 3
    assert ledger(fresh) == _reference(sent)
    assert sorted(_keys(catalog)) == sorted(
        (i.provenance.kafka_partition, i.provenance.kafka_offset) for i in sent
    )
    assert digest_history(fresh, "signals") == digest_table(fresh, "signals")


def test_an_append_that_loses_to_a_compaction_retries_and_lands_once(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, checkpoint_every=2)
    sent: list[Tagged] = []
    for n in range(4):
        batch = [_item(0, n, "tenant-00")]
        appender.append(batch)
        sent.extend(batch)
    raced: list[int] = []
    append = iceberg.lake_write.append

    def racing(*args: Any, **kwargs: Any) -> None:
        if not raced:
            raced.append(1)
            assert compact_manifests(_fresh(catalog), 2) is not None  # another process's
        append(*args, **kwargs)

    monkeypatch.setattr(iceberg.lake_write, "append", racing)
    batch = [_item(0, 4, "tenant-00")]
    result = appender.append(batch)
    sent.extend(batch)
    assert result.attempts == 2 and result.appended == 1
    fresh = _fresh(catalog)
    assert len(_replaces(fresh)) == 1
    assert ledger(fresh) == _reference(sent)
    assert sorted(_keys(catalog)) == [(0, n) for n in range(5)]
    assert digest_history(fresh, "signals") == digest_table(fresh, "signals")


def test_a_failed_compaction_is_logged_and_the_flow_goes_on(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise OSError("disk gone")

    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, manifests_kept=2)
    monkeypatch.setattr("sinks.iceberg.compact_manifests", broken)
    sent: list[Tagged] = []
    with caplog.at_level(logging.WARNING, logger="sinks.iceberg"):
        for batch in _batches(tenants=2, commits=5, per_commit=2):
            assert appender.append(batch).appended == 2
            sent.extend(batch)
    assert "manifest compaction on signals failed" in caplog.text
    assert len(data_manifests(_fresh(catalog))) == 5
    assert ledger(_fresh(catalog)) == _reference(sent)


def test_two_writers_racing_and_compacting_keep_every_commit(catalog: Catalog) -> None:
    ensure_table(catalog, "coherence", SIGNALS)
    errors: list[BaseException] = []
    sent: list[list[Tagged]] = [[], []]
    commits = [0, 0]

    def writer(partition: int) -> None:
        appender = IcebergAppender(
            _fresh(catalog),
            SIGNALS,
            attempts=60,
            checkpoint_every=3,
            snapshots_kept=5,
            manifests_kept=2,
        )
        try:
            for start in range(0, 40, 5):
                batch = [
                    _item(partition, o, f"tenant-{o % 6:02d}") for o in range(start, start + 5)
                ]
                overlap = [_item(partition, o, f"tenant-{o % 6:02d}") for o in range(start)][-2:]
                if appender.append(overlap + batch).appended:
                    commits[partition] += 1
                sent[partition].extend(batch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    fresh = _fresh(catalog)
    assert sorted(_keys(catalog)) == sorted({(p, o) for p in range(2) for o in range(40)})
    assert ledger(fresh) == _reference(sent[0] + sent[1])
    history = read_history(fresh).commits
    appends = [c.snapshot_id for c in history if c.operation == "append"]
    assert len(appends) == len(set(appends)) == sum(commits) == 16
    assert _replaces(fresh)
    assert len(CommitPlan.from_table(fresh)) == 16
    assert digest_history(fresh, "signals") == digest_table(fresh, "signals")
    plan = CommitPlan.from_table(fresh)
    for p in range(2):
        at = [plan.commit_of("topic", p, f"signals:tenant-{o % 6:02d}", o)[0] for o in range(40)]
        assert at == sorted(at) and min(at) >= 0


def test_expiry_after_compactions_deletes_exactly_the_files_no_kept_snapshot_holds(
    catalog: Catalog,
) -> None:
    """The expiry reads only the kept manifests that may hold a doomed manifest's files
    (written at or after its oldest sequence number): the same files as reading them all, with
    retention's copy-on-write deletes (which do drop data files) between the compactions."""
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, checkpoint_every=2, manifests_kept=3)
    for n, batch in enumerate(_batches(tenants=3, commits=16, per_commit=3)):
        appender.append(batch)
        if n in (5, 11):
            tenant = f"tenant-{n % 3:02d}"
            with table.transaction() as tx:
                tx.delete(EqualTo("tenant_id", tenant))
    snapshots = table.metadata.snapshots
    doomed, kept = snapshots[:-4], snapshots[-4:]

    def everything(of: list[Any]) -> set[str]:
        manifests = lake_retention._manifests(table, of)
        return (
            lake_retention._data_files(table, manifests.values())
            | set(manifests)
            | {s.manifest_list for s in of}
        )

    reference = everything(doomed) - everything(kept)
    assert lake_retention._only(table, doomed, kept) == reference
    assert any(p.endswith(".parquet") for p in reference)  # the deletes dropped some


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    every=st.integers(1, 3),
    kept=st.integers(0, 5),
    manifests=st.integers(1, 4),
    sends=st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 2), st.integers(0, 10), st.integers(1, 5)),
        min_size=8,
        max_size=24,
    ),
)
def test_any_sends_read_the_same_with_and_without_compaction(
    catalog: Catalog, every: int, kept: int, manifests: int, sends: list[tuple[int, int, int, int]]
) -> None:
    """Law: whatever the sends (re-sends, new processes), checkpoint interval, snapshots kept
    and manifests kept, a table compacting as it goes reads the same plan (offset by offset),
    history digests, settings spans, ledger and rows as its twin that never compacts."""
    for namespace in ("kept", "coherence"):
        ensure_table(catalog, namespace, SIGNALS)
        catalog.purge_table(f"{namespace}.signals")
    twin = IcebergAppender(ensure_table(catalog, "kept", SIGNALS), SIGNALS, checkpoint_every=every)

    def compacting(table: Table) -> IcebergAppender[Tagged]:
        return IcebergAppender(
            table,
            SIGNALS,
            checkpoint_every=every,
            snapshots_kept=kept,
            manifests_kept=manifests,
        )

    appender = compacting(ensure_table(catalog, "coherence", SIGNALS))
    sent: list[Tagged] = []
    for partition, tenant, start, length in sends:
        if tenant == 2:  # a new process
            appender = compacting(_fresh(catalog))
        batch = [
            _item(partition, 2 * n + tenant % 2, f"tenant-{tenant % 2:02d}")
            for n in range(start, start + length)
        ]
        twin.append(batch)
        appender.append(batch)
        sent.extend(batch)
        # At most ``manifests`` after a compaction, unless every one is of another size tier
        # (here files 1-7, 8-63, 64+).
        assert len(data_manifests(appender.table)) <= max(manifests, 3)
    _same_readers(_fresh(catalog), _fresh(catalog, "kept"), sent)


def test_a_rewrite_retried_on_top_of_another_rewrite_refuses_instead_of_listing_twice(
    catalog: Catalog,
) -> None:
    """Our tables refuse pyiceberg's commit retry; on a table that allows it, a rewrite whose
    manifests another rewrite replaced meanwhile fails rather than list their files twice."""
    table = ensure_table(catalog, "coherence", SIGNALS)
    with table.transaction() as tx:
        tx.set_properties({"commit.retry.num-retries": "2", "commit.retry.min-wait-ms": "1"})
    appender = IcebergAppender(table, SIGNALS)
    for batch in _batches(tenants=2, commits=5, per_commit=2):
        appender.append(batch)
    stale = _fresh(catalog)
    assert compact_manifests(_fresh(catalog), 2) is not None  # another process's
    with pytest.raises(CommitFailedException, match="manifests changed"):
        compact_manifests(stale, 2)
    fresh = _fresh(catalog)
    assert len(_replaces(fresh)) == 1
    paths = [t.file.file_path for t in fresh.scan().plan_files()]
    assert len(paths) == len(set(paths)) == 5  # a file a commit: one day, one residency
