"""The Signal contract: v2 evolves v1 compatibly, in both directions, for schemas and data."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import avro.schema
import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from core.contracts import load_contracts, signal_contracts
from core.errors import SchemaError

V1, V2 = signal_contracts()


def _compatible(reader: str, writer: str) -> bool:
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        reader=avro.schema.parse(reader), writer=avro.schema.parse(writer)
    )
    return result.compatibility is SchemaCompatibilityType.compatible


def test_v2_is_backward_compatible_with_v1() -> None:
    assert _compatible(reader=V2.text, writer=V1.text)


def test_v2_is_forward_compatible_with_v1() -> None:
    assert _compatible(reader=V1.text, writer=V2.text)


def test_v2_adds_selectors_with_an_empty_default() -> None:
    field = next(f for f in V2.parsed["fields"] if f["name"] == "selectors")
    assert field["default"] == []


RECORD = {
    "tenant_id": "t",
    "signal_id": "s",
    "type": "latency",
    "value": 0.25,
    "weight": 2.0,
    "source": "x",
    "ts": datetime(2026, 3, 1, tzinfo=UTC),
}


def _roundtrip(writer: dict, reader: dict, record: dict) -> dict:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer, record)
    buf.seek(0)
    out: dict = fastavro.schemaless_reader(buf, writer, reader)
    return out


def test_data_written_with_v1_is_read_with_v2() -> None:
    out = _roundtrip(V1.parsed, V2.parsed, RECORD)
    assert out == {**RECORD, "selectors": []}


def test_data_written_with_v2_is_read_with_v1() -> None:
    out = _roundtrip(V2.parsed, V1.parsed, {**RECORD, "selectors": ["e1", "e2"]})
    assert out == RECORD


def test_contract_files_are_validated(tmp_path: Path) -> None:
    (tmp_path / "signal.v1.avsc").write_text(V1.text)
    (tmp_path / "signal.v3.avsc").write_text(V2.text)
    with pytest.raises(SchemaError, match=r"expected 1\.\.2"):
        load_contracts(tmp_path)
    (tmp_path / "signal.v3.avsc").unlink()
    (tmp_path / "signal.v2.avsc").write_text(
        '{"type": "record", "name": "S", "fields": [{"name": 1}]}'
    )
    with pytest.raises(SchemaError, match="not a valid Avro schema"):
        load_contracts(tmp_path)
