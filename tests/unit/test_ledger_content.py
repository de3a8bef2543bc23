"""The ledger's content marks: a record at a mark that is gone or different stops the append."""

from __future__ import annotations

import pytest
from pyiceberg.catalog import Catalog

from core.records import Tagged
from sinks.iceberg import IcebergAppender, ensure_table, ledger
from sinks.lake_tables import SIGNALS
from sinks.ledger_content import (
    MARKS_KEY,
    ContentCheck,
    LedgerContentChanged,
    Missing,
    Unverifiable,
    recorded_marks,
)
from tests.unit.test_iceberg_sink import _item


class _Log:
    """An honest in-memory log: input hash by (topic, partition, offset); counts reads."""

    def __init__(self) -> None:
        self.hashes: dict[tuple[str, int, int], str] = {}
        self.reads: list[tuple[str, int, int]] = []

    def __call__(self, topic: str, partition: int, offset: int) -> str | Missing:
        self.reads.append((topic, partition, offset))
        found = self.hashes.get((topic, partition, offset))
        return Missing("the log ends before it") if found is None else found


def _land(catalog: Catalog, log: _Log) -> IcebergAppender[Tagged]:
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, content=ContentCheck(log))
    items = [_item(0, o) for o in range(5)] + [_item(1, o) for o in range(3)]
    for item in items:
        p = item.provenance
        log.hashes[(p.topic, p.kafka_partition, p.kafka_offset)] = p.input_hash
    assert appender.append(items).appended == 8
    return appender


def test_each_append_records_the_highest_offset_per_partition_and_its_hash(
    catalog: Catalog,
) -> None:
    log = _Log()
    appender = _land(catalog, log)
    assert recorded_marks(appender.table) == {
        ("topic", 0): (4, "0" * 64),
        ("topic", 1): (2, "0" * 64),
    }
    summary = appender.table.current_snapshot().summary  # type: ignore[union-attr]
    # Deterministic bytes: a replay of the same rows writes the same summary.
    assert summary.additional_properties[MARKS_KEY] == (  # type: ignore[union-attr]
        '{"topic":{"0":[4,"' + "0" * 64 + '"],"1":[2,"' + "0" * 64 + '"]}}'
    )
    # A fresh table had no marks: nothing was read.
    assert log.reads == []


def test_a_resume_over_the_same_log_reads_each_mark_once_and_lands(catalog: Catalog) -> None:
    log = _Log()
    _land(catalog, log)
    # A new process (a new appender) resumes: the marks still hold their records.
    resumed = IcebergAppender(
        catalog.load_table("coherence.signals"), SIGNALS, content=ContentCheck(log)
    )
    assert resumed.append([_item(0, o) for o in range(3, 7)]).appended == 2
    assert resumed.append([_item(0, 7), _item(1, 3)]).appended == 2
    assert log.reads == [("topic", 0, 4), ("topic", 1, 2)]  # once per partition and process
    assert recorded_marks(resumed.table) == {
        ("topic", 0): (7, "0" * 64),
        ("topic", 1): (3, "0" * 64),
    }


def test_a_different_record_at_a_mark_stops_the_append(catalog: Catalog) -> None:
    log = _Log()
    before = ledger(_land(catalog, log).table)
    log.hashes[("topic", 0, 4)] = "f" * 64  # the broker lost data; offset 4 is another record
    resumed = IcebergAppender(
        catalog.load_table("coherence.signals"), SIGNALS, content=ContentCheck(log)
    )
    with pytest.raises(LedgerContentChanged) as caught:
        resumed.append([_item(0, o) for o in range(3, 9)])
    text = str(caught.value)
    assert "topic topic partition 0 offset 4" in text
    assert "another record" in text
    assert "IGFLOW_LAKE_NAMESPACE" in text
    assert ledger(resumed.table) == before  # nothing landed


def test_a_missing_record_at_a_mark_stops_the_append(catalog: Catalog) -> None:
    log = _Log()
    _land(catalog, log)
    del log.hashes[("topic", 1, 2)]
    resumed = IcebergAppender(
        catalog.load_table("coherence.signals"), SIGNALS, content=ContentCheck(log)
    )
    with pytest.raises(LedgerContentChanged, match=r"offset 2, .* is gone"):
        resumed.append([_item(1, 3)])


def test_a_changed_mark_stops_even_an_append_whose_items_are_all_at_or_below_it(
    catalog: Catalog,
) -> None:
    # The lost log hands out offsets 0..4 again: every item would be skipped as landed.
    log = _Log()
    _land(catalog, log)
    log.hashes[("topic", 0, 4)] = "e" * 64
    resumed = IcebergAppender(
        catalog.load_table("coherence.signals"), SIGNALS, content=ContentCheck(log)
    )
    with pytest.raises(LedgerContentChanged, match="another record"):
        resumed.append([_item(0, o) for o in range(5)])


def test_a_log_that_starts_after_a_mark_is_no_loss() -> None:
    """Retention or DeleteRecords moved the log start past the mark: logged, not a stop."""
    changed = ContentCheck(lambda _t, _p, _o: Unverifiable("the log starts at offset 9"))
    changed("coherence.signals", {("t", 0): (4, "h")}, [("t", 0)])  # no raise
