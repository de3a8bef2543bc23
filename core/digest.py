"""Order-independent content digests of landed rows.

A row is a sequence of column values in schema order. Each value is encoded unambiguously by
type (a one-byte tag, a length, the payload) and a row's hash is the SHA-256 of its encoded
values. A set of rows digests to the *sum* of its row hashes, read as big-endian integers, modulo
2**256, together with the row count. The sum is a multiset hash:

- order-independent (addition commutes), so two runs that land the same rows in different
  batches, files or orders digest equally;
- additive, so the digests of successive commits add up to the digest of the table's history;
- duplicate-sensitive: a row landed twice adds its hash twice.

Rows are grouped by ``(table, tenant_id, kafka_partition)``; each group also carries the lowest
and highest ``kafka_offset`` it holds. A table without a tenant column groups under tenant
``""`` (a null tenant too), one without a partition column under partition ``-1``.

Not every table is verifiable: ``quarantine_audit`` holds the wall clock of operator decisions,
which a replay cannot reproduce, so it has no digest. The other tables hold no wall clock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa

__all__ = [
    "DIGEST_KEY",
    "UNVERIFIABLE_TABLES",
    "GroupDigest",
    "GroupKey",
    "digest_arrow",
    "digest_rows",
    "dump_summary",
    "encode_value",
    "parse_summary",
    "row_hash",
]

#: Snapshot-summary key of a commit's digest groups (see :func:`dump_summary`).
DIGEST_KEY = "igflow.digest"

#: Tables whose content a replay cannot reproduce (they hold a wall clock).
UNVERIFIABLE_TABLES = frozenset({"quarantine_audit"})

_MOD = 1 << 256
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_LEN = struct.Struct(">I")

#: (table, tenant_id, kafka_partition).
GroupKey = tuple[str, str, int]


@dataclasses.dataclass(frozen=True, slots=True)
class GroupDigest:
    """The digest of one group's rows: offsets, row count and multiset hash (mod 2**256)."""

    min_offset: int
    max_offset: int
    count: int
    digest: int

    @property
    def hex(self) -> str:
        """The multiset hash as 64 hex digits."""
        return f"{self.digest:064x}"

    def __add__(self, other: GroupDigest) -> GroupDigest:
        """The digest of both groups' rows together (a multiset union)."""
        return GroupDigest(
            min(self.min_offset, other.min_offset),
            max(self.max_offset, other.max_offset),
            self.count + other.count,
            (self.digest + other.digest) % _MOD,
        )


def _tagged(tag: bytes, payload: bytes) -> bytes:
    return tag + _LEN.pack(len(payload)) + payload


def encode_value(value: Any) -> bytes:
    """The unambiguous encoding of one column value.

    Types: None, bool, int, float (``float.hex``: exact, and ``-0.0`` differs from ``0.0``;
    every NaN encodes alike), str (UTF-8), bytes, Decimal (``str``: keeps the scale), datetime
    (aware only: UTC epoch microseconds) and lists or tuples of these. Raises ``TypeError`` on
    anything else, and ``ValueError`` on a naive datetime, rather than guess.
    """
    if value is None:
        return b"N"
    if isinstance(value, bool):  # before int: bool is an int
        return b"T" if value else b"F"
    if isinstance(value, int):
        return _tagged(b"I", str(value).encode())
    if isinstance(value, float):
        return _tagged(b"D", (b"nan" if math.isnan(value) else value.hex().encode()))
    if isinstance(value, str):
        return _tagged(b"S", value.encode())
    if isinstance(value, bytes | bytearray | memoryview):
        return _tagged(b"B", bytes(value))
    if isinstance(value, Decimal):
        return _tagged(b"M", str(value).encode())
    if isinstance(value, datetime):
        if value.tzinfo is None:
            msg = f"naive datetime {value.isoformat()} has no defined instant"
            raise ValueError(msg)
        return _tagged(b"t", str((value - _EPOCH) // _MICRO).encode())
    if isinstance(value, list | tuple):
        return _tagged(b"L", b"".join(map(encode_value, value)))
    msg = f"cannot digest a value of type {type(value).__name__}"
    raise TypeError(msg)


def row_hash(values: Sequence[Any]) -> int:
    """SHA-256 of a row's encoded values (in schema order), as an unsigned integer."""
    encoded = _tagged(b"R", b"".join(map(encode_value, values)))
    return int.from_bytes(hashlib.sha256(encoded).digest(), "big")


def digest_rows(
    table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> dict[GroupKey, GroupDigest]:
    """Digest rows (values in the order of ``columns``, the table's schema order) per group."""
    rows = list(rows)
    encoded = (_tagged(b"R", b"".join(map(encode_value, row))) for row in rows)
    return _group(table, columns, rows, encoded)


def _group(
    table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], encoded: Iterable[bytes]
) -> dict[GroupKey, GroupDigest]:
    tenant_at = columns.index("tenant_id") if "tenant_id" in columns else None
    partition_at = columns.index("kafka_partition") if "kafka_partition" in columns else None
    offset_at = columns.index("kafka_offset") if "kafka_offset" in columns else None
    sha256 = hashlib.sha256
    # [min, max, count, sum] per group, summed without the modulus until the end.
    acc: dict[GroupKey, list[int]] = {}
    for row, blob in zip(rows, encoded, strict=True):
        tenant = (row[tenant_at] or "") if tenant_at is not None else ""
        partition = row[partition_at] if partition_at is not None else -1
        offset = row[offset_at] if offset_at is not None else -1
        key = (table, tenant, partition)
        h = int.from_bytes(sha256(blob).digest(), "big")
        entry = acc.get(key)
        if entry is None:
            acc[key] = [offset, offset, 1, h]
        else:
            entry[0] = min(entry[0], offset)
            entry[1] = max(entry[1], offset)
            entry[2] += 1
            entry[3] += h
    return {k: GroupDigest(lo, hi, n, s % _MOD) for k, (lo, hi, n, s) in acc.items()}


def _encode_column(column: pa.ChunkedArray) -> list[bytes]:
    """:func:`encode_value` of every value of one Arrow column, fast paths by Arrow type.

    Equal to the generic encoding byte for byte (a test holds it to that). Timestamps in
    microseconds read as their epoch integers, without building datetimes. Values of exactly
    hashable, single-typed columns (strings, binaries, integers, booleans) are encoded once each;
    floats and decimals are not cached (``0.0 == -0.0`` and ``Decimal("1.0") == Decimal("1.00")``
    are equal keys with different encodings).
    """
    kind = column.type
    if pa.types.is_timestamp(kind) and kind.unit == "us" and kind.tz is not None:
        micros = column.cast(pa.int64()).to_pylist()
        return [b"N" if m is None else _tagged(b"t", str(m).encode()) for m in micros]
    values = column.to_pylist()
    if pa.types.is_floating(kind):
        return [encode_value(v) for v in values]
    if not (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
    ):
        return [encode_value(v) for v in values]
    cache: dict[Any, bytes] = {}
    out: list[bytes] = []
    for v in values:
        blob = cache.get(v)
        if blob is None:
            blob = cache[v] = encode_value(v)
        out.append(blob)
    return out


def digest_arrow(table: str, data: pa.Table) -> dict[GroupKey, GroupDigest]:
    """Digest an Arrow table (columns in schema order) per group.

    Equal to :func:`digest_rows` over ``data.to_pylist()``'s values, only faster.
    """
    encoded = [_encode_column(data.column(i)) for i in range(data.num_columns)]
    blobs = (_tagged(b"R", b"".join(parts)) for parts in zip(*encoded, strict=True))
    names = data.column_names
    keys = [n for n in ("tenant_id", "kafka_partition", "kafka_offset") if n in names]
    key_rows = zip(*(data.column(n).to_pylist() for n in keys), strict=True) if keys else None
    if key_rows is None:
        return _group(table, [], ([] for _ in range(data.num_rows)), blobs)
    return _group(table, keys, key_rows, blobs)


def dump_summary(groups: Mapping[GroupKey, GroupDigest]) -> str:
    """One table's groups as compact JSON: ``{"tenant|partition": [min, max, count, "hex"]}``."""
    data = {
        f"{tenant}|{partition}": [g.min_offset, g.max_offset, g.count, g.hex]
        for (_table, tenant, partition), g in sorted(groups.items())
    }
    return json.dumps(data, separators=(",", ":"))


def parse_summary(table: str, raw: str) -> dict[GroupKey, GroupDigest]:
    """The groups of :func:`dump_summary`'s JSON, keyed under ``table``."""
    data: dict[str, list[Any]] = json.loads(raw)
    out: dict[GroupKey, GroupDigest] = {}
    for key, (lo, hi, count, hex_digest) in data.items():
        tenant, partition = key.rsplit("|", 1)  # the partition is an int: no "|" in it
        out[(table, tenant, int(partition))] = GroupDigest(
            int(lo), int(hi), int(count), int(hex_digest, 16)
        )
    return out
