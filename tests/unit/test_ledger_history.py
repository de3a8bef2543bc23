"""A table's commit history outside its metadata (sinks/ledger_history.py), and the appender's
expiry as it goes: the replay plan, the history digests and the settings history read the same
after expiry as before it, across lost races, two writers and lakes of the format before."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

import sinks.iceberg as iceberg
from core.records import Tagged
from replay.verify import HistoryUnavailable, digest_history, digest_table
from sinks import lake_retention
from sinks.iceberg import IcebergAppender, ensure_table, ledger
from sinks.lake_plan import CommitPlan
from sinks.lake_tables import SIGNALS
from sinks.ledger_format import CHECKPOINT_KEY, Ledger, LedgerUnavailable, properties_ledger
from sinks.ledger_history import HISTORY_KEY, Commit, read_history
from sinks.settings_record import settings_history
from tests.unit.test_iceberg_sink import _item, _keys
from tests.unit.test_ledger_format import _batches, _old_append, _reference


def _fresh(catalog: Catalog) -> Table:
    return catalog.load_table("coherence.signals")


def _walk(table: Table) -> tuple[Commit, ...]:
    """The reference: the lineage's snapshots as the readers walked them before the chain."""
    out = []
    for s in ancestors_of(table.current_snapshot(), table.metadata):
        props: dict[str, Any] = s.summary.additional_properties if s.summary else {}
        kept = {k: str(v) for k, v in props.items() if k.startswith("igflow.")}
        kept.pop(HISTORY_KEY, None)
        out.append(Commit(s.snapshot_id, s.summary.operation.value if s.summary else None, kept))
    return tuple(out)


def _plan_key(plan: CommitPlan, items: list[Tagged]) -> list[tuple[int, bool]]:
    return [
        plan.commit_of(
            i.provenance.topic,
            i.provenance.kafka_partition,
            f"signals:{i.signal.tenant_id}",
            i.provenance.kafka_offset,
        )
        for i in items
    ]


def _readers(table: Table) -> tuple[Any, ...]:
    return (
        read_history(table).commits,
        CommitPlan.from_table(table).commits,
        digest_history(table, "signals"),
        list(settings_history(table)),
    )


def test_the_history_is_the_lineage_while_every_snapshot_is_kept(catalog: Catalog) -> None:
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, checkpoint_every=3)
    for n, batch in enumerate(_batches(tenants=5, commits=11, per_commit=4)):
        appender.append(batch)
        fresh = _fresh(catalog)
        assert read_history(fresh).commits == _walk(fresh)
        assert not read_history(fresh).cut
        chained = [
            s for s in fresh.metadata.snapshots if HISTORY_KEY in s.summary.additional_properties
        ]
        # The 3rd, 6th and 9th commits write a checkpoint; the first commit's has no history
        # before it (an empty table), the others do.
        assert len(chained) == (n + 1) // 3
    ninth = _fresh(catalog).metadata.snapshots[8].summary
    pointer = json.loads(ninth.additional_properties[HISTORY_KEY])  # type: ignore[union-attr]
    assert pointer["commits"] == 3  # the 6th (chained), the 7th and the 8th
    assert Path(pointer["path"].removeprefix("file://")).name.startswith("igflow-history-")


def test_expiry_keeps_the_plan_the_digests_and_the_settings_history(catalog: Catalog) -> None:
    table = ensure_table(catalog, "coherence", SIGNALS)
    keeper = IcebergAppender(table, SIGNALS, checkpoint_every=4)  # never expires
    sent: list[Tagged] = []
    for batch in _batches(tenants=6, commits=30, per_commit=5):
        keeper.append(batch)
        sent.extend(batch)
    before = _readers(_fresh(catalog))
    plan_before = _plan_key(CommitPlan.from_table(_fresh(catalog)), sent)
    assert len(_fresh(catalog).metadata.snapshots) == 30
    expirer = IcebergAppender(_fresh(catalog), SIGNALS, checkpoint_every=4, snapshots_kept=10)
    result = expirer.expire()
    assert result is not None and result.expired
    after_table = _fresh(catalog)
    # Back to the 28th commit (the newest chained one, also the ledger's base).
    assert len(after_table.metadata.snapshots) == 3
    assert _readers(after_table) == before
    assert _plan_key(CommitPlan.from_table(after_table), sent) == plan_before
    assert digest_history(after_table, "signals") == digest_table(after_table, "signals")
    assert ledger(after_table) == _reference(sent)


def test_an_appender_expiring_as_it_goes_keeps_every_reader_exact(catalog: Catalog) -> None:
    """Two tables land the same commits, one expiring as it goes: the same plan (offset by
    offset), the same history digests, the same ledger, and a bounded number of snapshots."""
    kept_table = ensure_table(catalog, "kept", SIGNALS)
    table = ensure_table(catalog, "coherence", SIGNALS)
    keeper = IcebergAppender(kept_table, SIGNALS, checkpoint_every=3)
    expiring = IcebergAppender(table, SIGNALS, checkpoint_every=3, snapshots_kept=7)
    sent: list[Tagged] = []
    most = 0
    for batch in _batches(tenants=4, commits=40, per_commit=3):
        keeper.append(batch)
        expiring.append(batch)
        sent.extend(batch)
        most = max(most, len(table.metadata.snapshots))
    assert most <= 8 and len(kept_table.metadata.snapshots) == 40
    fresh, whole = _fresh(catalog), catalog.load_table("kept.signals")
    assert len(CommitPlan.from_table(fresh)) == len(CommitPlan.from_table(whole)) == 40
    assert _plan_key(CommitPlan.from_table(fresh), sent) == _plan_key(
        CommitPlan.from_table(whole), sent
    )
    assert digest_history(fresh, "signals") == digest_history(whole, "signals")
    assert digest_history(fresh, "signals") == digest_table(fresh, "signals")
    assert ledger(fresh) == ledger(whole) == _reference(sent)

    def same(table: Table) -> list[dict[str, str]]:  # a checkpoint's path names its table
        return [
            {k: v for k, v in c.properties.items() if k != CHECKPOINT_KEY}
            for c in read_history(table).commits
        ]

    assert same(fresh) == same(whole)


def test_a_lost_race_leaves_its_history_file_unreferenced(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The winner's commit lands between the loser's history file and its commit: the retry
    writes the file of the lineage it lands on, the winner's commit in it."""
    table = ensure_table(catalog, "coherence", SIGNALS)
    loser = IcebergAppender(table, SIGNALS, checkpoint_every=2, snapshots_kept=3)
    winner = IcebergAppender(_fresh(catalog), SIGNALS, checkpoint_every=1000)
    loser.append([_item(0, 0, "tenant-00")])
    real = iceberg.lake_write.append
    raced: list[int] = []

    def racing(*args: Any, **kwargs: Any) -> None:
        if not raced:
            raced.append(1)
            winner.append([_item(1, 0, "tenant-01")])
        real(*args, **kwargs)

    monkeypatch.setattr(iceberg.lake_write, "append", racing)
    result = loser.append([_item(0, 1, "tenant-00")])
    assert result.attempts == 2
    monkeypatch.setattr(iceberg.lake_write, "append", real)
    files = sorted(Path(table.metadata.location.removeprefix("file://")).rglob("igflow-history-*"))
    assert len(files) == 2  # the lost attempt's, unreferenced, and the winner's
    for n in range(2, 8):
        loser.append([_item(0, n, "tenant-00")])
    fresh = _fresh(catalog)
    assert len(fresh.metadata.snapshots) < 8
    history = read_history(fresh).commits
    assert len(history) == 9
    assert CommitPlan.from_table(fresh).commit_of("topic", 1, "signals:tenant-01", 0) == (1, True)
    assert digest_history(fresh, "signals") == digest_table(fresh, "signals")


def test_two_writers_racing_and_expiring_keep_every_commit_in_the_chain(catalog: Catalog) -> None:
    ensure_table(catalog, "coherence", SIGNALS)
    errors: list[BaseException] = []
    sent: list[list[Tagged]] = [[], []]
    commits = [0, 0]

    def writer(partition: int) -> None:
        appender = IcebergAppender(
            _fresh(catalog), SIGNALS, attempts=60, checkpoint_every=3, snapshots_kept=5
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
    ids = [c.snapshot_id for c in history]
    assert len(ids) == len(set(ids)) == sum(commits) == 16
    assert len(CommitPlan.from_table(fresh)) == 16
    assert digest_history(fresh, "signals") == digest_table(fresh, "signals")
    # Each lane's marks rise commit after commit along the chain (lineage order).
    plan = CommitPlan.from_table(fresh)
    for p in range(2):
        at = [plan.commit_of("topic", p, f"signals:tenant-{o % 6:02d}", o)[0] for o in range(40)]
        assert at == sorted(at) and min(at) >= 0


def test_an_old_format_lake_chains_its_old_commits_too(catalog: Catalog) -> None:
    table = ensure_table(catalog, "coherence", SIGNALS)
    sent: list[Tagged] = []
    wholes: list[Ledger] = []
    for o in range(4):
        batch = [_item(p, o, f"tenant-{p:02d}") for p in range(2)]
        sent.extend(batch)
        _old_append(table, batch, _reference(sent))
        wholes.append(_reference(sent))
    appender = IcebergAppender(_fresh(catalog), SIGNALS, checkpoint_every=2, snapshots_kept=3)
    for o in range(4, 12):
        batch = [_item(p, o, f"tenant-{p:02d}") for p in range(2)]
        appender.append(batch)
        sent.extend(batch)
        wholes.append(_reference(sent))
    fresh = _fresh(catalog)
    assert len(fresh.metadata.snapshots) <= 4
    ids = [c.snapshot_id for c in reversed(read_history(fresh).commits)]
    assert len(ids) == 12
    assert CommitPlan.from_table(fresh).commits == (
        CommitPlan.from_ledgers(zip(ids, wholes, strict=True)).commits
    )
    assert digest_history(fresh, "signals") == digest_table(fresh, "signals")
    assert ledger(fresh) == _reference(sent)


def test_an_old_format_lake_without_a_chain_reads_as_before(catalog: Catalog) -> None:
    table = ensure_table(catalog, "coherence", SIGNALS)
    sent: list[Tagged] = []
    for o in range(3):
        batch = [_item(0, o, "tenant-00")]
        sent.extend(batch)
        _old_append(table, batch, _reference(sent))
    fresh = _fresh(catalog)
    assert read_history(fresh).commits == _walk(fresh)
    fresh.maintenance.expire_snapshots().by_id(fresh.metadata.snapshots[0].snapshot_id).commit()
    cut = _fresh(catalog)
    assert read_history(cut).cut
    with pytest.raises(HistoryUnavailable, match="expired"):
        digest_history(cut, "signals")


def test_a_damaged_history_file_is_refused_not_guessed(catalog: Catalog) -> None:
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, checkpoint_every=2)
    for batch in _batches(tenants=2, commits=5, per_commit=2):
        appender.append(batch)
    for path in Path(table.metadata.location.removeprefix("file://")).rglob("igflow-history-*"):
        path.write_text("{}")
    with pytest.raises(LedgerUnavailable, match="history file"):
        CommitPlan.from_table(_fresh(catalog))
    with pytest.raises(HistoryUnavailable, match="history file"):
        digest_history(_fresh(catalog), "signals")


def test_a_failed_expiry_is_logged_and_the_flow_goes_on(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise OSError("disk gone")

    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, checkpoint_every=2, snapshots_kept=2)
    monkeypatch.setattr(iceberg, "expire_snapshots", broken)
    sent: list[Tagged] = []
    with caplog.at_level(logging.WARNING, logger="sinks.iceberg"):
        for batch in _batches(tenants=2, commits=5, per_commit=2):
            assert appender.append(batch).appended == 2
            sent.extend(batch)
    assert "snapshot expiry on signals failed" in caplog.text
    assert all(r.levelno == logging.WARNING for r in caplog.records if "expiry" in r.message)
    assert len(_fresh(catalog).metadata.snapshots) == 5
    assert ledger(_fresh(catalog)) == _reference(sent)


def test_an_expiry_racing_an_append_or_losing_a_race_stays_exact(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another writer's append between the expiry's read and its commit: the catalog applies
    the expiry on top of it (pyiceberg asserts no snapshot for it), which is safe, since an
    append only moves what the ledger and the chain need forward. An expiry that does lose its
    commit (``CommitFailedException``) is logged and done after the next commit."""
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, checkpoint_every=2, snapshots_kept=3)
    other = IcebergAppender(_fresh(catalog), SIGNALS, checkpoint_every=1000)
    for n in range(3):
        appender.append([_item(0, n, "tenant-00")])
    real = lake_retention._expiry
    calls: list[int] = []

    def raced(table: Table) -> Any:
        calls.append(1)
        if len(calls) == 1:
            other.append([_item(1, 0, "tenant-01")])  # between the expiry's read and commit
            return real(table)
        raise CommitFailedException("another writer won")

    monkeypatch.setattr(lake_retention, "_expiry", raced)
    appender.append([_item(0, 3, "tenant-00")])
    fresh = _fresh(catalog)
    assert len(fresh.metadata.snapshots) == 2  # the 4th (chained) and the other's
    assert len(read_history(fresh).commits) == 5
    assert digest_history(fresh, "signals") == digest_table(fresh, "signals")
    for n in range(4, 6):
        appender.append([_item(0, n, "tenant-00")])  # the 6th commit is past 3: an expiry
    with caplog.at_level(logging.INFO, logger="sinks.iceberg"):
        appender.append([_item(0, 6, "tenant-00")])
    assert "lost a commit race" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(_fresh(catalog).metadata.snapshots) == 5  # nothing expired
    monkeypatch.setattr(lake_retention, "_expiry", real)
    appender.append([_item(0, 7, "tenant-00")])
    fresh = _fresh(catalog)
    assert len(fresh.metadata.snapshots) < 6
    assert len(read_history(fresh).commits) == 9
    assert CommitPlan.from_table(fresh).commit_of("topic", 1, "signals:tenant-01", 0) == (4, True)
    assert ledger(fresh) == {
        ("topic", 0, "signals:tenant-00"): 7,
        ("topic", 1, "signals:tenant-01"): 0,
    }


def test_retention_expiry_keeps_the_chained_snapshot(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`igflow retention apply`'s expiry keeps the lineage back to the newest chained snapshot
    even when the ledger's base is newer (a checkpoint without a history file, as retention's
    delete writes)."""
    from sinks.lake_retention import expire_snapshots

    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, checkpoint_every=3)
    sent: list[Tagged] = []
    for batch in _batches(tenants=3, commits=8, per_commit=2):
        appender.append(batch)
        sent.extend(batch)
    monkeypatch.setattr(iceberg, "write_history", lambda _table: None)
    appender.append([_item(0, 100, "tenant-00")])  # the 9th: a checkpoint, no history file
    fresh = _fresh(catalog)
    props = fresh.current_snapshot().summary.additional_properties  # type: ignore[union-attr]
    assert CHECKPOINT_KEY in props and HISTORY_KEY not in props
    before = _readers(fresh)
    result = expire_snapshots(fresh, None)
    assert len(result.expired) == 5  # the 1st to the 5th; the 6th is the newest chained
    assert _readers(_fresh(catalog)) == before


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    every=st.integers(1, 3),
    kept=st.integers(1, 6),
    sends=st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 2), st.integers(0, 10), st.integers(1, 5)),
        min_size=8,
        max_size=24,
    ),
)
def test_any_sends_read_the_same_with_and_without_expiry(
    catalog: Catalog, every: int, kept: int, sends: list[tuple[int, int, int, int]]
) -> None:
    """Law: whatever the sends (re-sends, new processes), checkpoint interval and snapshots
    kept, a table expiring as it goes reads the same plan (offset by offset), history digests,
    settings spans and ledger as its twin that keeps every snapshot."""
    for namespace in ("kept", "coherence"):
        ensure_table(catalog, namespace, SIGNALS)
        catalog.purge_table(f"{namespace}.signals")
    twin = IcebergAppender(ensure_table(catalog, "kept", SIGNALS), SIGNALS, checkpoint_every=every)
    appender = IcebergAppender(
        ensure_table(catalog, "coherence", SIGNALS),
        SIGNALS,
        checkpoint_every=every,
        snapshots_kept=kept,
    )
    sent: list[Tagged] = []
    for partition, tenant, start, length in sends:
        if tenant == 2:  # a new process
            appender = IcebergAppender(
                _fresh(catalog), SIGNALS, checkpoint_every=every, snapshots_kept=kept
            )
        batch = [
            _item(partition, 2 * n + tenant % 2, f"tenant-{tenant % 2:02d}")
            for n in range(start, start + length)
        ]
        twin.append(batch)
        appender.append(batch)
        sent.extend(batch)
    fresh, whole = _fresh(catalog), catalog.load_table("kept.signals")
    # The references read the twin's snapshots as the readers did before the chain.
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
    assert ledger(fresh) == ledger(whole)
