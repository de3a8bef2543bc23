"""The Iceberg appender: ledger in the snapshot summary, skip-what-is-committed, lost races."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema

from core.records import Decoded, PolicyTags, Provenance, Signal, Tagged
from sinks.iceberg import LEDGER_KEY, IcebergAppender, ensure_table, ledger
from sinks.lake_tables import SIGNALS

T0 = datetime(2026, 1, 1, tzinfo=UTC)


TAGS = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")
#: The ledger lane of tenant-00's signals.
L = "signals:tenant-00"


def _item(partition: int, offset: int, tenant: str = "tenant-00") -> Tagged:
    signal = Signal(
        tenant,
        f"s-{partition}-{offset}",
        "latency",
        0.5,
        None,
        "src",
        T0 + timedelta(seconds=offset),
    )
    decoded = Decoded(signal, Provenance("topic", partition, offset, 1, "0" * 64))
    return Tagged(decoded, TAGS, "p" * 64, f"prov-{partition}-{offset}")


def _keys(catalog: Catalog) -> list[tuple[int, int]]:
    rows = catalog.load_table("coherence.signals").scan().to_arrow()
    return list(
        zip(
            rows.column("kafka_partition").to_pylist(),
            rows.column("kafka_offset").to_pylist(),
            strict=True,
        )
    )


def test_the_ledger_records_the_high_water_mark_per_partition(catalog: Catalog) -> None:
    appender = IcebergAppender(ensure_table(catalog, "coherence", SIGNALS), SIGNALS)
    first = appender.append([_item(0, o) for o in range(5)] + [_item(1, o) for o in range(3)])
    assert (first.appended, first.skipped) == (8, 0)
    assert ledger(appender.table) == {("topic", 0, L): 4, ("topic", 1, L): 2}
    # A resume re-sends 3..7 of partition 0: only 5..7 are new.
    second = appender.append([_item(0, o) for o in range(3, 8)])
    assert (second.appended, second.skipped) == (3, 2)
    assert ledger(appender.table) == {("topic", 0, L): 7, ("topic", 1, L): 2}
    assert sorted(_keys(catalog)) == sorted([(0, o) for o in range(8)] + [(1, o) for o in range(3)])
    # Everything already committed: no snapshot at all.
    before = len(appender.table.metadata.snapshots)
    assert appender.append([_item(1, 0)]).appended == 0
    assert len(appender.table.metadata.snapshots) == before


def test_snapshots_without_a_ledger_are_skipped_when_reading_it(catalog: Catalog) -> None:
    table = ensure_table(catalog, "coherence", SIGNALS)
    IcebergAppender(table, SIGNALS).append([_item(0, 0)])
    # Another tool appends without our property (say, a backfill by an analyst).
    table.append(SIGNALS.to_arrow([_item(3, 99)]))
    assert LEDGER_KEY not in table.current_snapshot().summary.additional_properties  # type: ignore[union-attr]
    assert ledger(table) == {("topic", 0, L): 0}


def test_concurrent_writers_lose_races_but_no_row(catalog: Catalog) -> None:
    """Four writers (one per partition) on separate table handles, committing at once."""
    ensure_table(catalog, "coherence", SIGNALS)
    results: list = []
    errors: list[BaseException] = []

    def writer(partition: int) -> None:
        table = catalog.load_table("coherence.signals")
        appender = IcebergAppender(table, SIGNALS, attempts=50)
        try:
            for start in range(0, 50, 10):
                results.append(
                    appender.append([_item(partition, o) for o in range(start, start + 10)])
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    keys = _keys(catalog)
    assert len(keys) == 200
    assert set(keys) == {(p, o) for p in range(4) for o in range(50)}
    table = catalog.load_table("coherence.signals")
    assert ledger(table) == {("topic", p, L): 49 for p in range(4)}


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 30), st.integers(1, 15)), min_size=1, max_size=8
    )
)
def test_any_replay_pattern_lands_each_offset_once(catalog: Catalog, batches: list) -> None:
    """Law: whatever overlapping re-sends arrive, the table holds each offset seen exactly once."""
    table = ensure_table(catalog, "coherence", SIGNALS)
    catalog.purge_table("coherence.signals")
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS)
    expected: dict[int, int] = {}
    for partition, start, length in batches:
        # In-order delivery per partition, possibly replaying from an earlier offset.
        appender.append([_item(partition, o) for o in range(start, start + length)])
        expected[partition] = max(expected.get(partition, -1), start + length - 1)
    keys = _keys(catalog)
    assert len(keys) == len(set(keys))
    assert ledger(table) == {("topic", p, L): hi for p, hi in expected.items()}


def test_workers_starting_together_all_get_the_table(catalog: Catalog) -> None:
    """Every worker ensures the table at start; losing the creation race is not an error."""
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def start_worker() -> None:
        barrier.wait()
        try:
            ensure_table(catalog, "racing", SIGNALS)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start_worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    table = catalog.load_table("racing.signals")
    assert table.properties["commit.retry.num-retries"] == "0"


def test_lanes_keep_separate_marks_so_interleaved_tenants_all_land(catalog: Catalog) -> None:
    # One partition, two tenants whose records reach the sink in tenant order but not in
    # partition order (the keyed stages do that): a single mark per partition would drop some.
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS)
    a = [_item(0, o, "tenant-a") for o in (0, 2, 4, 6)]
    b = [_item(0, o, "tenant-b") for o in (1, 3, 5, 7)]
    appender.append(a + b[:1])  # tenant-a up to offset 6 before tenant-b's offset 1
    appender.append(a[2:] + b)  # a resume re-sends some of a, and b's 1, then the rest of b
    assert sorted(o for _p, o in _keys(catalog)) == list(range(8))
    assert ledger(table) == {
        ("topic", 0, "signals:tenant-a"): 6,
        ("topic", 0, "signals:tenant-b"): 7,
    }


def test_a_ledger_written_before_lanes_reads_as_the_empty_lane() -> None:
    from sinks.iceberg import parse_ledger

    assert parse_ledger('{"t":{"0":5,"1":{"x":3}}}') == {("t", 0, ""): 5, ("t", 1, "x"): 3}


def test_an_existing_table_is_loaded_and_leaves_no_metadata_file_behind(catalog: Catalog) -> None:
    # pyiceberg's create_table_if_not_exists writes a table's metadata file before the catalog
    # refuses the duplicate row: each start of each worker left one that no table names.
    created = ensure_table(catalog, "coherence", SIGNALS)
    metadata = Path(created.location().removeprefix("file://")) / "metadata"
    files = sorted(metadata.iterdir())
    again = [ensure_table(catalog, "coherence", SIGNALS) for _ in range(3)]
    assert sorted(metadata.iterdir()) == files
    assert {t.metadata_location for t in again} == {created.metadata_location}
    assert all(t.properties == created.properties for t in again)


def test_an_existing_table_of_an_older_release_gets_its_columns_and_properties(
    catalog: Catalog,
) -> None:
    # Loaded, not created: the columns it lacks are added (optional) and the ledger's
    # properties set, as when the create attempt was refused.
    catalog.create_namespace("coherence")
    older = Schema(*SIGNALS.schema.fields[:-2])
    catalog.create_table(("coherence", SIGNALS.name), schema=older)
    table = ensure_table(catalog, "coherence", SIGNALS)
    added = SIGNALS.schema.fields[-2:]
    assert [f.name for f in table.schema().fields] == [f.name for f in SIGNALS.schema.fields]
    assert all(not table.schema().find_field(f.name).required for f in added)
    assert table.properties["commit.retry.num-retries"] == "0"
    assert catalog.load_table(("coherence", SIGNALS.name)).schema() == table.schema()
