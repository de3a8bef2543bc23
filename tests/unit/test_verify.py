"""Content digests and ``igflow verify``: two runs of one input land identical content."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import hypothesis.strategies as st
import pyarrow as pa
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given
from pyiceberg.catalog import Catalog

from core.digest import digest_arrow, digest_rows, dump_summary, encode_value, parse_summary
from core.errors import IgflowError
from core.settings import Settings
from core.switches import NO_HOLDS
from flows.coherence import build
from igflow.verify_commands import parse_window, register
from igflow.workload import SOURCES, WorkloadSpec, generate, tenant_ids
from operators.tenancy import TenancyPolicy
from replay.verify import HistoryUnavailable, digest_history, digest_table, verify
from tenancy.registry import StaticTenants
from tests.conftest import SIGNAL_V1, V1_ID, DictSchemas, kafka_messages
from tests.memory_keys import memory_sealer

POLICY = TenancyPolicy.load(Settings().policies_dir)
TENANTS = StaticTenants.of(*tenant_ids(10), sources=SOURCES)
COLUMNS = ("tenant_id", "kafka_partition", "kafka_offset", "value")

#: One in-memory key store for the module: runs compared with each other seal alike.
SEALER = memory_sealer()


def _land(settings: Settings, schemas: DictSchemas, namespace: str, batch: int) -> None:
    records = kafka_messages(
        list(
            generate(WorkloadSpec(tenants=3, count=30, bad=4, invalid=0.1), V1_ID, SIGNAL_V1.parsed)
        )
    )
    flow = build(
        settings.with_changes("lake", namespace=namespace, batch_max_rows=batch),
        source=TestingSource(records, batch_size=batch),
        lookup=schemas,
        dlq=TestingSink([]),
        tenants=TENANTS,
        holds=NO_HOLDS,
        policy=POLICY,
        sealer=SEALER,
    )
    run_main(flow)


@pytest.fixture
def landed(lake_settings: Settings, schemas: DictSchemas) -> Settings:
    """The same input landed twice, with different batching: namespaces ``a`` and ``b``."""
    _land(lake_settings, schemas, "a", batch=7)
    _land(lake_settings, schemas, "b", batch=40)
    return lake_settings


def _cli(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(handler=handler)
        return p

    register(add)
    args = parser.parse_args(argv)
    code: int = args.handler(args, settings)
    return code


def test_two_runs_of_one_input_verify_identical(
    landed: Settings, catalog: Catalog, capsys: pytest.CaptureFixture[str]
) -> None:
    report = verify(landed, "a", "b")
    assert report.identical
    assert {g.key[0] for g in report.groups} == {"signals", "scores", "quarantine"}
    assert (
        sum(g.original.count for g in report.groups if g.original and g.key[0] == "signals") == 90
    )
    assert set(report.files) == {"signals", "scores", "quarantine", "deconfliction"}
    assert all(0 <= same <= total for same, total in report.files.values())
    # History (snapshot summaries, no scan) equals the scan, on both sides.
    for ns in ("a", "b"):
        for name in ("signals", "scores", "quarantine", "deconfliction"):
            table = catalog.load_table((ns, name))
            assert digest_history(table, name) == digest_table(table, name)
            # The Arrow fast path encodes exactly as the generic one.
            data = table.scan().to_arrow()
            rows = [tuple(r.values()) for r in data.to_pylist()]
            assert digest_arrow(name, data) == digest_rows(name, data.column_names, rows)
    assert verify(landed, "a", "b", from_history=True).identical
    assert verify(landed, "a", None).identical
    assert _cli(["verify", "--namespace", "a", "--against", "b"], landed) == 0
    out = capsys.readouterr().out
    assert "IDENTICAL" in out and "byte-identical" in out


def test_a_changed_row_is_the_one_mismatch_and_is_shown(
    landed: Settings, catalog: Catalog, capsys: pytest.CaptureFixture[str]
) -> None:
    table = catalog.load_table(("b", "signals"))
    data = (
        table.scan()
        .to_arrow()
        .sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")])
    )
    rows = data.to_pylist()
    changed = rows[3]
    original_value = changed["value"]
    changed["value"] = 0.5 if original_value != 0.5 else 0.25
    table.overwrite(pa.Table.from_pylist(rows, schema=data.schema))

    report = verify(landed, "a", "b", tables=["signals"])
    assert not report.identical
    key = ("signals", changed["tenant_id"], changed["kafka_partition"])
    assert [g.key for g in report.mismatched] == [key]
    diff = report.differences[key]
    assert [r["value"] for r in diff.only_in_original] == [original_value]
    assert diff.only_in_other == [changed]
    assert (
        _cli(["verify", "--namespace", "a", "--against", "b", "--tables", "signals"], landed) == 1
    )
    assert "only in other" in capsys.readouterr().out
    # The overwrite carries no digest: B's history can no longer vouch for its content.
    with pytest.raises(HistoryUnavailable):
        digest_history(table, "signals")


def test_a_window_restricts_the_scan_and_rejects_history(landed: Settings) -> None:
    everything = verify(landed, "a", "b", tables=["signals"])
    start = datetime(1970, 1, 1, tzinfo=UTC)
    empty = verify(landed, "a", "b", (start, start + timedelta(days=1)), tables=["signals"])
    assert empty.identical and empty.groups == []
    wide = verify(landed, "a", "b", (start, datetime(2200, 1, 1, tzinfo=UTC)), tables=["signals"])
    assert wide.groups == everything.groups
    with pytest.raises(IgflowError):
        verify(landed, "a", "b", (start, start + timedelta(days=1)), from_history=True)
    with pytest.raises(IgflowError):
        verify(landed, "a", "b", tables=["quarantine_audit"])


def test_parse_window() -> None:
    assert parse_window("2026-01-01..2026-01-02T00:00:00+00:00") == (
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 2, tzinfo=UTC),
    )
    for bad in ("2026-01-01", "2026-01-02..2026-01-01", "x..y"):
        with pytest.raises(IgflowError):
            parse_window(bad)


_rows = st.lists(
    st.tuples(
        st.sampled_from(["t1", "t2"]),
        st.integers(0, 1),
        st.integers(0, 50),
        st.floats(allow_nan=False),
    ),
    min_size=1,
    max_size=30,
)


@given(rows=_rows, seed=st.randoms(use_true_random=False))
def test_the_digest_ignores_order(rows: list[tuple[Any, ...]], seed: Any) -> None:
    shuffled = list(rows)
    seed.shuffle(shuffled)
    assert digest_rows("t", COLUMNS, rows) == digest_rows("t", COLUMNS, shuffled)


@given(rows=_rows, at=st.integers(0, 29))
def test_a_changed_value_or_a_duplicate_changes_the_digest(
    rows: list[tuple[Any, ...]], at: int
) -> None:
    before = digest_rows("t", COLUMNS, rows)
    i = at % len(rows)
    tenant, partition, offset, value = rows[i]
    changed = [
        *rows[:i],
        (tenant, partition, offset, value + 1.0 if abs(value) < 1e15 else 0.0),
        *rows[i + 1 :],
    ]
    key = ("t", tenant, partition)
    assert digest_rows("t", COLUMNS, changed)[key] != before[key]
    doubled = digest_rows("t", COLUMNS, [*rows, rows[i]])[key]
    assert doubled.count == before[key].count + 1 and doubled.digest != before[key].digest
    # Additive: the digest of two commits is the sum of their digests.
    halves = digest_rows("t", COLUMNS, rows[:i]), digest_rows("t", COLUMNS, rows[i:])
    summed = {k: g for k, g in halves[0].items()}
    for k, g in halves[1].items():
        summed[k] = summed[k] + g if k in summed else g
    assert summed == before
    assert parse_summary("t", dump_summary(before)) == before


def test_values_encode_unambiguously() -> None:
    distinct = [
        None, True, False, 0, 1, 0.0, -0.0, 1.0, "", "1", "None", b"", b"1",
        Decimal("1.0"), Decimal("1.00"), datetime(2026, 1, 1, tzinfo=UTC), [], [""], ["", ""],
        ["a", "b"], ["ab"],
    ]  # fmt: skip
    assert len({encode_value(v) for v in distinct}) == len(distinct)
    with pytest.raises(ValueError, match="naive"):
        encode_value(datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(TypeError):
        encode_value({"a": 1})


def test_the_arrow_fast_path_encodes_tricky_values_as_the_generic_one() -> None:
    data = pa.table(
        {
            "tenant_id": ["a", None, "a", ""],
            "kafka_partition": [0, 0, 0, 1],
            "kafka_offset": [1, 2, 3, 4],
            "x": [0.0, -0.0, float("nan"), None],
            "d": pa.array(
                [Decimal("1.00"), None, Decimal("1.00"), Decimal("0.10")], pa.decimal128(5, 2)
            ),
            "ts": pa.array(
                [datetime(2026, 1, 1, tzinfo=UTC), None, datetime(1969, 12, 31, tzinfo=UTC), None],
                pa.timestamp("us", tz="UTC"),
            ),
            "l": [["x"], [], None, ["", ""]],
            "b": [b"", None, b"\x00", b""],
        }
    )
    rows = [tuple(r.values()) for r in data.to_pylist()]
    assert digest_arrow("t", data) == digest_rows("t", data.column_names, rows)
    assert {k[1:] for k in digest_arrow("t", data)} == {("a", 0), ("", 0), ("", 1)}


def test_the_verifiable_tables_are_every_lake_table_but_the_unverifiable() -> None:
    from core.digest import UNVERIFIABLE_TABLES
    from replay.verify import EVENT_TIME
    from sinks.lake_tables import TABLES

    assert list(EVENT_TIME) == [t.name for t in TABLES if t.name not in UNVERIFIABLE_TABLES]
