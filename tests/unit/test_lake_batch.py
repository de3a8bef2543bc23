"""The columnar lake batch decides what the per-item reference decides, for any batch and ledger.

:meth:`sinks.lake_batch.LakeBatch.select` (Arrow) against :func:`sinks.lake_batch.select_rows`
(the sink's per-item code before): the same items in the same row order, the same ledger, raised
lanes, content marks, partitions seen and per-tenant counts; and ``TableDef.to_arrow`` built
column-wise equals ``rows_to_arrow``, one row at a time.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import hypothesis.strategies as st
import pyarrow as pa
import pytest
from hypothesis import given, settings

from sinks.lake_batch import LakeBatch, select_rows
from sinks.lake_tables import DECONFLICTION, QUARANTINE, SCORES, SIGNALS, TableDef, column_array
from tests.unit.lake_golden import MAKERS, TOPICS

TABLES = {t.name: t for t in (SIGNALS, SCORES, QUARANTINE, DECONFLICTION)}


def _items(table: TableDef[Any], seed: int, size: int) -> list[Any]:
    """``size`` items in any delivery order: offsets repeat, lanes and partitions interleave."""
    rng = random.Random(seed)
    make = MAKERS[table.name]
    items = [
        make(rng, rng.choice(TOPICS), rng.randrange(3), rng.randrange(30)) for _ in range(size)
    ]
    if items and rng.random() < 0.5:
        items += rng.sample(items, k=min(len(items), rng.randrange(1, 5)))  # the same item twice
    rng.shuffle(items)
    return items


def _ledger(table: TableDef[Any], items: list[Any], seed: int) -> dict[tuple[str, int, str], int]:
    """A ledger holding some of the items' lanes at some marks, and lanes they do not have."""
    rng = random.Random(seed)
    ledger: dict[tuple[str, int, str], int] = {("elsewhere", 0, "x:"): 5}
    for item in items:
        p = table.provenance(item)
        if rng.random() < 0.3:
            ledger[(p.topic, p.kafka_partition, table.lane(item))] = rng.randrange(-1, 31)
    return ledger


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(TABLES)),
    seed=st.integers(0, 2**32),
    size=st.integers(0, 120),
)
def test_select_equals_the_per_item_reference(name: str, seed: int, size: int) -> None:
    table = TABLES[name]
    items = _items(table, seed, size)
    committed = _ledger(table, items, seed)
    fresh, merged, raised, landed, seen = select_rows(table, items, committed)
    batch = LakeBatch(table, items)
    chosen = batch.select(committed)
    assert [items[i] for i in chosen.order.to_pylist()] == fresh
    assert chosen.merged == merged
    assert chosen.raised == raised
    assert chosen.landed == landed
    assert chosen.seen == seen
    counts: dict[str, int] = {}
    for item in fresh:
        counts[table.tenant(item)] = counts.get(table.tenant(item), 0) + 1
    assert chosen.per_tenant == counts
    # The rows themselves: those of the reference's order, one row at a time.
    assert batch.data(chosen.order).equals(table.rows_to_arrow(fresh))


@pytest.mark.parametrize("name", ["signals", "scores"])
def test_columns_build_the_table_rows_build(name: str) -> None:
    table = TABLES[name]
    assert table.columnar()
    for seed in range(20):
        items = _items(table, seed, seed * 7)
        columnar = table.to_arrow(items)
        assert columnar.equals(table.rows_to_arrow(items))
        assert columnar.schema == table.schema.as_arrow()


_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-11)), None]
)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.none() | st.datetimes(timezones=_ZONES), max_size=20),
    unit=st.sampled_from(["us", "ms", "s"]),
)
def test_column_array_converts_as_pa_array(values: list[datetime | None], unit: str) -> None:
    """``column_array``'s path for aware datetimes gives what ``pa.array`` gives (nulls, naive
    values, other zones, other units: by ``pa.array`` itself), or fails as it does."""
    kind = pa.timestamp(unit, tz="UTC")
    try:
        expected = pa.array(values, kind)
    except (TypeError, ValueError, OverflowError) as error:
        with pytest.raises(type(error)):
            column_array(values, kind)
    else:
        assert column_array(values, kind).equals(expected)


_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    value=_TEXT | st.none() | st.integers() | st.binary(max_size=3),
    others=st.lists(_TEXT | st.none() | st.integers(), max_size=3),
    size=st.integers(0, 40),
    data=st.data(),
    large=st.booleans(),
)
def test_column_array_converts_strings_as_pa_array(
    value: Any, others: list[Any], size: int, data: st.DataObject, large: bool
) -> None:
    """A string column of one value repeated (the same object, or equal copies), with or without
    other values (other text, nulls, non-strings) at any places: what ``pa.array`` gives, or
    the error it raises (unicode of every category, surrogates included)."""
    values = [value if data.draw(st.booleans()) else _copy(value) for _ in range(size)]
    for other in others:
        values.insert(data.draw(st.integers(0, len(values))), other)
    kind = pa.large_string() if large else pa.string()
    try:
        expected = pa.array(values, kind)
    except (TypeError, ValueError, OverflowError, pa.ArrowException) as error:
        with pytest.raises(type(error)):
            column_array(values, kind)
    else:
        got = column_array(values, kind)
        assert got.equals(expected)
        assert got.type == expected.type and got.null_count == expected.null_count


def _copy(value: Any) -> Any:
    """An equal value that is another object (a string decoded twice)."""
    return "".join(value) if isinstance(value, str) and len(value) > 1 else value


def test_oldest_stamps_per_tenant_are_those_of_the_items() -> None:
    items = _items(SIGNALS, 3, 200)
    oldest: dict[str, int] = {}
    for item in items:
        stamp = item.decoded.kafka_timestamp_ms
        if stamp is not None:
            tenant = item.signal.tenant_id
            oldest[tenant] = min(stamp, oldest.get(tenant, stamp))
    assert oldest
    assert LakeBatch(SIGNALS, items).oldest_ms() == oldest
    assert LakeBatch(SCORES, _items(SCORES, 3, 20)).oldest_ms() == {}


def test_an_empty_batch_selects_nothing() -> None:
    chosen = LakeBatch(SIGNALS, []).select({("t", 0, "signals:a"): 3})
    assert len(chosen.order) == 0
    assert chosen.merged == {("t", 0, "signals:a"): 3}
    assert LakeBatch(SIGNALS, []).data(pa.array([], pa.uint64())).num_rows == 0
