"""Retention: tags, cut-offs, and the lake's deletes and expiry on a SQLite catalog.

The lake's laws checked here: only rows past their tag's cut-off go; the ledger reads the same
after a delete (so a resumed flow skips what landed, deleted or not); snapshots before the delete
may then expire without cutting the ledger; the rows removed stay accounted for by ``verify``.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from core.digest import digest_arrow
from core.errors import ConfigError
from core.reasons import ReasonCode
from core.records import Decoded, PolicyTags, Provenance, Signal, Tagged
from core.retention import RetentionTagInvalid, cutoff, cutoffs, retention_days
from core.settings import Settings
from igflow.retention import apply
from replay.verify import HistoryUnavailable, digest_history, digest_table, verify
from sinks.iceberg import IcebergAppender, ensure_table, ledger
from sinks.lake_retention import (
    REMOVED_KEY,
    apply_table,
    expire_snapshots,
    plan_rows,
    plan_table,
    removed_digests,
)
from sinks.lake_tables import SIGNALS
from sinks.ledger_format import read_ledger

NOW = datetime(2026, 6, 1, tzinfo=UTC)
TAGS = {"short": "standard-90d", "long": "standard-365d"}


def test_tags_parse_to_days() -> None:
    assert retention_days("standard-365d") == 365
    assert retention_days("standard-90d") == 90
    assert retention_days("x1-1d") == 1
    for bad in ("standard", "standard-0d", "standard-90", "Standard-90d", "-90d", "a-99999d", ""):
        with pytest.raises(RetentionTagInvalid) as caught:
            retention_days(bad)
        assert caught.value.reason is ReasonCode.RETENTION_TAG_INVALID


def test_cutoff_is_now_minus_the_days_and_needs_an_aware_now() -> None:
    assert cutoff("standard-90d", NOW) == NOW - timedelta(days=90)
    with pytest.raises(ValueError, match="timezone-aware"):
        cutoff("standard-90d", NOW.replace(tzinfo=None))
    found = cutoffs(["standard-90d", "bad", "standard-90d"], NOW)
    assert dict(found.by_tag) == {"standard-90d": NOW - timedelta(days=90)}
    assert found.invalid == frozenset({"bad"})
    assert found.of("bad") is None


def _row(tenant: str, offset: int, age_days: float, retention: str) -> Tagged:
    tags = PolicyTags("benchmarking", retention, "Restricted-TOS", "US")
    signal = Signal(
        tenant, f"s-{offset}", "latency", 0.5, None, "src", NOW - timedelta(days=age_days)
    )
    decoded = Decoded(signal, Provenance("topic", 0, offset, 1, "0" * 64))
    return Tagged(decoded, tags, "p" * 64, f"prov-{offset}")


def _land(catalog: Catalog) -> tuple[IcebergAppender[Tagged], list[Tagged]]:
    """tenant-a (90 days) and tenant-b (365 days), each with rows 10, 100 and 400 days old, and
    one row with a tag that does not parse."""
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, checkpoint_every=1000)
    items = []
    offset = 0
    for tenant, tag in (("tenant-a", "standard-90d"), ("tenant-b", "standard-365d")):
        for age in (10, 100, 400):
            items.append(_row(tenant, offset, age, tag))
            offset += 1
    items.append(_row("tenant-c", offset, 4000, "forever"))
    for item in items:  # one commit each: a lineage of several appends
        appender.append([item])
    return appender, items


def _tag_of(_tenant: str) -> str:
    raise AssertionError("signals carry their own tag")


def _ids(table: Table) -> list[str]:
    table.refresh()
    return sorted(table.scan(selected_fields=("signal_id",)).to_arrow().column(0).to_pylist())


def test_a_plan_finds_only_rows_past_their_tag(catalog: Catalog) -> None:
    appender, _items = _land(catalog)
    plan = plan_table(appender.table, "signals", NOW, _tag_of)
    # tenant-a: 100 and 400 days (> 90); tenant-b: 400 days (> 365); tenant-c's tag is invalid.
    assert dict(plan.expired) == {"tenant-a": 2, "tenant-b": 1}
    assert plan.unaged == 1
    assert plan.invalid_tags == frozenset({"forever"})


def test_apply_deletes_them_and_keeps_the_ledger(catalog: Catalog) -> None:
    appender, items = _land(catalog)
    table = appender.table
    before = ledger(table)
    result = apply_table(table, "signals", NOW, _tag_of, run_id="run-1")
    assert result.deleted == 3
    assert result.snapshot_ids
    assert _ids(table) == ["s-0", "s-3", "s-4", "s-6"]
    assert ledger(table) == before
    # A resumed flow re-sends everything: the ledger skips it all, the deleted rows included.
    again = appender.append(items)
    assert (again.appended, again.skipped) == (0, len(items))
    assert _ids(table) == ["s-0", "s-3", "s-4", "s-6"]
    # A second run at the same time finds nothing.
    assert apply_table(table, "signals", NOW, _tag_of, run_id="run-2").deleted == 0


def test_a_flow_appending_concurrently_stays_exactly_once(catalog: Catalog) -> None:
    """A writer thread appends (re-sending each batch twice, as a resume would) while retention
    runs again and again on its own table object: commits race for real (SQLite catalog).
    Afterwards every recent row is there once, no old row is, and the ledger is the reference."""
    appender, _items = _land(catalog)
    table = appender.table
    batches = [
        [
            _row("tenant-a", 100 + 2 * i, 500, "standard-90d"),
            _row("tenant-a", 101 + 2 * i, 1, "standard-90d"),
        ]
        for i in range(15)
    ]
    failures: list[BaseException] = []

    def write() -> None:
        try:
            for batch in batches:
                appender.append(batch)
                appender.append(batch)
        except BaseException as exc:  # reported below
            failures.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    runner = catalog.load_table("coherence.signals")
    attempts = []
    while writer.is_alive():
        attempts.append(apply_table(runner, "signals", NOW, _tag_of, run_id="r").attempts)
    writer.join()
    assert not failures
    apply_table(runner, "signals", NOW, _tag_of, run_id="last")
    recent = [f"s-{101 + 2 * i}" for i in range(15)]
    assert _ids(table) == sorted(["s-0", "s-3", "s-4", "s-6", *recent])
    assert read_ledger(table).ledger[("topic", 0, "signals:tenant-a")] == 129
    assert attempts  # retention ran while the writer did


def test_expiry_keeps_the_ledger_readable_and_removes_the_old_files(catalog: Catalog) -> None:
    appender, items = _land(catalog)
    table = appender.table
    before = ledger(table)
    apply_table(table, "signals", NOW, _tag_of, run_id="run-1")
    old_files = {
        t.file.file_path
        for t in table.scan(snapshot_id=table.metadata.snapshots[0].snapshot_id).plan_files()
    }
    result = expire_snapshots(table, datetime.now(UTC) + timedelta(seconds=1))
    assert result.expired  # every append before the delete
    assert result.files_deleted > 0
    table.refresh()
    assert ledger(table) == before
    live = {t.file.file_path for t in table.scan().plan_files()}
    for path in old_files - live:
        with pytest.raises(FileNotFoundError):
            table.io.new_input(path).open()
    # The flow goes on, exactly once, over the cut lineage.
    more = [_row("tenant-a", 50, 1, "standard-90d")]
    assert appender.append(items + more).appended == 1
    assert len(_ids(table)) == 5


def test_verify_accounts_for_rows_retention_removed(catalog: Catalog) -> None:
    appender, _items = _land(catalog)
    table = appender.table
    history = digest_history(table, "signals")
    apply_table(table, "signals", NOW, _tag_of, run_id="run-1")
    table.refresh()
    removed = removed_digests(table)
    assert sum(g.count for g in removed.values()) == 3
    scanned = digest_table(table, "signals")
    total = dict(scanned)
    for key, group in removed.items():
        total[key] = group if key not in total else total[key] + group
    assert total == history
    # A second run adds to the running total.
    apply_table(table, "signals", NOW + timedelta(days=300), _tag_of, run_id="run-2")
    table.refresh()
    assert sum(g.count for g in removed_digests(table).values()) == 5
    assert any(
        REMOVED_KEY in (s.summary.additional_properties if s.summary else {})
        for s in table.metadata.snapshots
    )
    assert digest_arrow("signals", table.scan().to_arrow()) == digest_table(table, "signals")


def test_igflow_verify_counts_removed_rows_as_landed(
    catalog: Catalog, lake_settings: Settings
) -> None:
    appender, _items = _land(catalog)
    apply_table(appender.table, "signals", NOW, _tag_of, run_id="run-1")
    report = verify(lake_settings, "coherence", None, tables=["signals"])
    assert report.identical
    assert report.retention_removed == {"signals": (0, 3)}
    expire_snapshots(appender.table, datetime.now(UTC) + timedelta(seconds=1))
    with pytest.raises(HistoryUnavailable, match="expired"):
        verify(lake_settings, "coherence", None, tables=["signals"])


def test_tables_without_a_tag_column_take_the_tenants_tag_and_unaged_rows_stay() -> None:
    """Scores age by their tenant's tag now; quarantined records without a tenant or an event
    time (they did not decode) and a tenant whose tag does not parse are never deleted."""
    old, recent = NOW - timedelta(days=200), NOW - timedelta(days=10)
    tags = {"tenant-a": "standard-90d", "tenant-b": "standard-365d", "tenant-x": "forever"}
    data = pa.table(
        {
            "tenant_id": ["tenant-a", "tenant-a", "tenant-b", "tenant-x", None, "tenant-a"],
            "ts": [old, recent, old, old, old, None],
        }
    )
    plan = plan_rows("quarantine", data, NOW, tags.__getitem__, 1)
    assert dict(plan.expired) == {"tenant-a": 1}
    assert plan.unaged == 3  # tenant-x (invalid tag), no tenant, no event time
    assert plan.invalid_tags == frozenset({"forever"})
    assert plan.where is not None
    scores = pa.table({"tenant_id": ["tenant-a", "tenant-b"], "updated_at": [old, old]})
    plan = plan_rows("scores", scores, NOW, tags.__getitem__, 1)
    assert dict(plan.expired) == {"tenant-a": 1}
    # Nothing with a valid tag: no filter at all (never an empty Or).
    nothing = plan_rows("scores", scores.slice(0, 0), NOW, tags.__getitem__, 1)
    assert nothing.where is None and nothing.rows == 0


def test_apply_refuses_to_delete_what_it_could_not_audit(lake_settings: Settings) -> None:
    """No reachable audit table: ``apply`` stops before touching any store (exit 2 in the CLI)."""
    settings = lake_settings.with_changes(
        "stores", postgres_dsn="postgresql://igflow:igflow@127.0.0.1:1/igflow"
    )
    with pytest.raises(ConfigError, match="audit database"):
        apply(settings, NOW, "test")
