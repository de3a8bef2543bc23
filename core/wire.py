"""The Confluent wire format: magic byte 0, big-endian 4-byte schema id, Avro binary body."""

from __future__ import annotations

import io
import struct
from typing import Any

import fastavro

__all__ = ["HEADER_SIZE", "MAGIC", "encode", "frame", "unframe"]

MAGIC = 0
_HEADER = struct.Struct(">bI")
HEADER_SIZE = _HEADER.size


def frame(schema_id: int, body: bytes) -> bytes:
    """Prefix an Avro body with the wire-format header."""
    return _HEADER.pack(MAGIC, schema_id) + body


def unframe(value: bytes) -> tuple[int, int]:
    """``(magic, schema_id)`` of a framed value; the caller checks the length first."""
    magic, schema_id = _HEADER.unpack_from(value)
    return magic, schema_id


def encode(schema_id: int, parsed_schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """One record in the wire format (what confluent-kafka's AvroSerializer writes)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed_schema, record)
    return frame(schema_id, buf.getvalue())
