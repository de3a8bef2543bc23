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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import _rowhash
from core.float_hex import float_hex

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


def _digest_per_value(table: str, data: pa.Table) -> dict[GroupKey, GroupDigest]:
    """The digest of a small table, value by value (the columnar path's calls cost more there)."""
    encoded = [_encode_column(data.column(i)) for i in range(data.num_columns)]
    blobs = (_tagged(b"R", b"".join(parts)) for parts in zip(*encoded, strict=True))
    names = data.column_names
    keys = [n for n in ("tenant_id", "kafka_partition", "kafka_offset") if n in names]
    key_rows = zip(*(data.column(n).to_pylist() for n in keys), strict=True) if keys else None
    if key_rows is None:
        return _group(table, [], ([] for _ in range(data.num_rows)), blobs)
    return _group(table, keys, key_rows, blobs)


# The columnar path (:func:`digest_arrow`): :func:`encode_value` of whole Arrow columns, without
# a Python call per value.
#
# Every row is encoded and hashed by one native call over the columns' Arrow buffers
# (``core._rowhash``: strings and binaries as they lie, int32/int64 and timestamps' epoch micros
# written in decimal, floats' ``float.hex`` from their bits, booleans and nulls as their tags;
# decimals and uint64 as Arrow's cast to string), then a group's sum is its hashes' eight 32-bit
# limbs summed with numpy and recombined once per group. List elements are encoded in Python's
# stead with pyarrow.compute and numpy: each element a *prefix* (its tag and 4-byte big-endian
# length, b"N" for a null, the whole encoding of a boolean) and a *payload* (the bytes after the
# length), joined per element by ``binary_join_element_wise`` and per list by ``binary_join``.

_LB = pa.large_binary()
_EMPTY = pa.scalar(b"", _LB)
#: Rows digested at once: bounds the encoded rows' memory; a limb sum stays below 2**48.
_SLICE_ROWS = 1 << 16
#: Fewer rows than this are digested value by value: the columnar path's fixed cost (a native
#: call's set-up, numpy's grouping) outweighs its gain below a few dozen rows (measured on signals
#: and scores: 10 rows 0.14 ms columnar against 0.09-0.10 value by value, 100 rows 0.20 against
#: 0.47-0.56, 1,000 rows 0.53 against 4.0-4.9).
_COLUMNAR_MIN_ROWS = 32
_LIMBS = 8
_TAG = {name: ord(name) for name in "NTFIDSBMtLR"}


def _fixed(rows: np.ndarray) -> pa.Array:
    """Each row of a 2-D uint8 array as one large_binary value."""
    n, width = rows.shape
    offsets = np.arange(0, width * (n + 1), width, dtype=np.int64)
    data = np.ascontiguousarray(rows).reshape(-1)
    return pa.LargeBinaryArray.from_buffers(
        _LB, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _prefixes(tags: int | np.ndarray, lengths: np.ndarray | None, valid: np.ndarray) -> pa.Array:
    """Per value: its tag byte and, with ``lengths``, its length as 4 big-endian bytes; b"N"
    where ``valid`` is False."""
    n = len(valid)
    width = 1 if lengths is None else 5
    rows = np.empty((n, width), np.uint8)
    rows[:, 0] = tags
    if lengths is not None:
        if n and int(lengths.max()) > 0xFFFFFFFF:
            msg = "a value longer than 2**32 - 1 bytes has no encoding"
            raise ValueError(msg)
        rows[:, 1:] = lengths.astype(">u4").view(np.uint8).reshape(n, 4)
    if valid.all():
        return _fixed(rows)
    rows[~valid, 0] = _TAG["N"]
    keep = np.ones((n, width), bool)
    keep[~valid, 1:] = False
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(np.where(valid, width, 1), out=offsets[1:])
    data = rows[keep]
    return pa.LargeBinaryArray.from_buffers(
        _LB, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _valid(values: pa.Array) -> np.ndarray:
    if values.null_count == 0:
        return np.ones(len(values), bool)
    return np.asarray(values.is_valid().to_numpy(zero_copy_only=False), bool)


def _lengths(payload: pa.Array) -> np.ndarray:
    return np.asarray(pc.binary_length(payload).fill_null(0).to_numpy(zero_copy_only=False))


def _pieces(values: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    """``(prefixes, payloads or None)`` of one Arrow array (a list's elements)."""
    kind = values.type
    valid = _valid(values)
    payload: pa.Array
    if pa.types.is_boolean(kind):
        flags = values.fill_null(False).to_numpy(zero_copy_only=False)
        prefix = _prefixes(np.where(flags, _TAG["T"], _TAG["F"]), None, valid)
        return prefix, None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        tag, payload = _TAG["S"], values.cast(_LB)
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        tag, payload = _TAG["B"], values.cast(_LB)
    elif pa.types.is_integer(kind):
        tag, payload = _TAG["I"], values.cast(pa.string()).cast(_LB)
    elif pa.types.is_floating(kind) and not pa.types.is_float16(kind):
        tag, payload = _TAG["D"], float_hex(values, valid)
    elif pa.types.is_decimal(kind):
        # Arrow writes a decimal as Python's str(Decimal) does (scale kept, the same exponent
        # notation); the property test holds it to that.
        tag, payload = _TAG["M"], values.cast(pa.string()).cast(_LB)
    elif pa.types.is_timestamp(kind) and kind.tz is not None and kind.unit != "ns":
        micros = values.cast(pa.timestamp("us", tz=kind.tz)).cast(pa.int64())
        tag, payload = _TAG["t"], micros.cast(pa.string()).cast(_LB)
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        offsets = values.offsets.to_numpy()  # a slice's own: its values start at offsets[0]
        first, last = int(offsets[0]), int(offsets[-1])
        elements = _joined(values.values.slice(first, last - first))
        make = pa.ListArray if pa.types.is_list(kind) else pa.LargeListArray
        lists = make.from_arrays(pa.array(offsets - first), elements, mask=pa.array(~valid))
        tag, payload = _TAG["L"], pc.binary_join(lists, _EMPTY)
    else:  # anything else (naive timestamps raise here, as encode_value does)
        encoded = pa.array([encode_value(v) for v in values.to_pylist()], _LB)
        return encoded, None
    return _prefixes(tag, _lengths(payload), valid), payload


def _join(parts: Sequence[pa.Array]) -> pa.Array:
    return pc.binary_join_element_wise(*parts, _EMPTY, null_handling="skip")


def _joined(values: pa.Array) -> pa.Array:
    """The whole encoding of every value of ``values``."""
    prefix, payload = _pieces(values)
    return prefix if payload is None else _join([prefix, payload])


#: Column kinds of ``core._rowhash.lib.rowhash_rows`` (``core/_build_rowhash.py``), and its errors.
_BYTES32, _BYTES64, _INT32, _INT64, _DOUBLE, _BOOL, _ENCODED = range(7)
_TOO_LONG, _NO_MEMORY = 1, 2


def _native(values: pa.Array) -> tuple[int, int, pa.Array]:
    """How the native encoder reads one column: ``(kind, tag, array)``, ``array`` being
    ``values`` or a cast of it whose buffers it reads (decimals and uint64 as their text,
    timestamps as epoch micros, lists as their payloads, other types whole, by
    :func:`encode_value`)."""
    kind = values.type
    if pa.types.is_boolean(kind):
        return _BOOL, 0, values
    if pa.types.is_string(kind) or pa.types.is_binary(kind):
        return _BYTES32, _TAG["S" if pa.types.is_string(kind) else "B"], values
    if pa.types.is_large_string(kind) or pa.types.is_large_binary(kind):
        return _BYTES64, _TAG["S" if pa.types.is_large_string(kind) else "B"], values
    if pa.types.is_int32(kind):
        return _INT32, _TAG["I"], values
    if pa.types.is_int64(kind):
        return _INT64, _TAG["I"], values
    if pa.types.is_uint64(kind):
        return _BYTES32, _TAG["I"], values.cast(pa.string())
    if pa.types.is_integer(kind):
        return _INT64, _TAG["I"], values.cast(pa.int64())
    if pa.types.is_float64(kind):
        return _DOUBLE, _TAG["D"], values
    if pa.types.is_float32(kind):
        return _DOUBLE, _TAG["D"], values.cast(pa.float64())
    if pa.types.is_decimal(kind):
        # Arrow writes a decimal as Python's str(Decimal) does (scale kept, the same exponent
        # notation); the property test holds it to that.
        return _BYTES32, _TAG["M"], values.cast(pa.string())
    if pa.types.is_timestamp(kind) and kind.tz is not None and kind.unit != "ns":
        micros = values.cast(pa.timestamp("us", tz=kind.tz)).cast(pa.int64())
        return _INT64, _TAG["t"], micros
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        _prefix, payload = _pieces(values)
        assert payload is not None
        return _BYTES64, _TAG["L"], payload
    # Anything else (naive timestamps raise here, as encode_value does).
    return _ENCODED, 0, pa.array([encode_value(v) for v in values.to_pylist()], _LB)


def _row_hashes(data: pa.RecordBatch) -> np.ndarray:
    """The row hash of every row, as an (n, 8) array of its 32-bit limbs, big-endian first.

    Every row encoded and hashed by one native call over the columns' Arrow buffers
    (``core/_build_rowhash.py``): no per-value Python, no joined copy of the rows.
    """
    n = data.num_rows
    ffi, lib = _rowhash.ffi, _rowhash.lib
    columns = ffi.new("rowhash_column[]", data.num_columns)
    alive: list[Any] = []  # the arrays and buffers the native call reads, until it returns

    def pointer(buffer: pa.Buffer | None) -> Any:
        held = ffi.from_buffer("unsigned char[]", buffer if buffer else b"\0")
        alive.append(held)
        return held

    for c, column in zip(columns, data.columns, strict=True):
        kind, tag, values = _native(column)
        alive.append(values)
        buffers = values.buffers()
        c.kind, c.tag, c.offset = kind, tag, values.offset
        c.validity = pointer(buffers[0]) if values.null_count else ffi.NULL
        if kind in (_BYTES32, _BYTES64, _ENCODED):
            c.offsets, c.values = pointer(buffers[1]), pointer(buffers[2])
        else:
            c.values = pointer(buffers[1])
    digests = np.empty((n, _LIMBS), ">u4")
    failed = lib.rowhash_rows(
        columns,
        data.num_columns,
        n,
        ffi.from_buffer("unsigned char[]", digests, require_writable=True),
    )
    if failed == _TOO_LONG:
        msg = "a value longer than 2**32 - 1 bytes has no encoding"
        raise ValueError(msg)
    if failed == _NO_MEMORY:
        raise MemoryError
    if failed:  # not a value's fault
        msg = "could not hash the rows (no SHA-256 in OpenSSL)"
        raise RuntimeError(msg)
    return digests.astype(np.uint64)


def _key_column(data: pa.RecordBatch, name: str) -> pa.Array | None:
    """A grouping column fit for the columnar path, or None (absent, or not as expected)."""
    if name not in data.schema.names:
        return None
    column = data.column(name)
    if name == "tenant_id":
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            return column.fill_null("")
        raise _Unfit
    if not pa.types.is_integer(column.type) or column.null_count:
        raise _Unfit
    return column.cast(pa.int64())


class _Unfit(Exception):
    """Grouping columns the columnar path does not take (the reference path takes them)."""


def _codes(column: pa.Array | None, n: int) -> tuple[np.ndarray, list[Any]]:
    """Per row, the index of its value among the column's distinct values; and those values
    (a missing column: every row is the one value None)."""
    if column is None:
        return np.zeros(n, np.int64), [None]
    if pa.types.is_integer(column.type):
        values, codes = np.unique(column.to_numpy(), return_inverse=True)
        return codes.astype(np.int64), values.tolist()
    encoded = column.dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary.to_pylist()


def _digest_slice(table: str, data: pa.RecordBatch, acc: dict[GroupKey, list[int]]) -> None:
    n = data.num_rows
    if n == 0:
        return
    tenant = _key_column(data, "tenant_id")
    partition = _key_column(data, "kafka_partition")
    offset = _key_column(data, "kafka_offset")
    limbs = _row_hashes(data)
    tenant_codes, tenants = _codes(tenant, n)
    partition_codes, partitions = _codes(partition, n)
    # Rows sorted by group; each group's run of rows reduced at once (exact: uint64 limb sums
    # stay below 2**48 for a slice's rows).
    group = tenant_codes * len(partitions) + partition_codes
    order = np.argsort(group, kind="stable")
    group = group[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    sums = np.add.reduceat(limbs[order], starts, axis=0).tolist()
    offsets = np.full(n, -1, np.int64) if offset is None else offset.to_numpy()[order]
    lows = np.minimum.reduceat(offsets, starts).tolist()
    highs = np.maximum.reduceat(offsets, starts).tolist()
    counts = np.diff(np.r_[starts, n]).tolist()
    for g, at in enumerate(group[starts].tolist()):
        t, p = divmod(at, len(partitions))
        total = 0
        for limb in sums[g]:
            total = (total << 32) + limb
        key = (
            table,
            tenants[t] if tenant is not None else "",
            partitions[p] if partition is not None else -1,
        )
        lo, hi, count = lows[g], highs[g], counts[g]
        entry = acc.get(key)
        if entry is None:
            acc[key] = [lo, hi, count, total]
        else:
            entry[0] = min(entry[0], lo)
            entry[1] = max(entry[1], hi)
            entry[2] += count
            entry[3] += total


def digest_arrow(table: str, data: pa.Table) -> dict[GroupKey, GroupDigest]:
    """Digest an Arrow table (columns in schema order) per group.

    Equal to :func:`digest_rows` over ``data.to_pylist()``'s values (the property tests hold it
    to that), computed column by column.
    """
    if data.num_rows < _COLUMNAR_MIN_ROWS:
        return _digest_per_value(table, data)
    acc: dict[GroupKey, list[int]] = {}
    try:
        for start in range(0, data.num_rows, _SLICE_ROWS):
            # One batch per slice, whatever the chunks (a scan has one per data file, and the
            # per-batch calls would outweigh the work on a few hundred rows).
            for batch in data.slice(start, _SLICE_ROWS).combine_chunks().to_batches():
                _digest_slice(table, batch, acc)
    except _Unfit:
        rows = [tuple(r.values()) for r in data.to_pylist()]
        return digest_rows(table, data.column_names, rows)
    return {k: GroupDigest(lo, hi, n, s % _MOD) for k, (lo, hi, n, s) in acc.items()}


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
