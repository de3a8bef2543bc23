"""A signal read straight from its Avro body, compiled once per writer schema (decode's batch
path, issue 15 point 2).

fastavro reads a record through its generic machinery: a call that checks and walks the schema,
a ``BytesIO`` per record, a dict per record, then :class:`~core.records.Signal` built from the
dict. For a writer the decoder reads *without resolution* (its fields are reader fields of the
very same types, the reader's defaults fill the rest: ``operators.decode._direct_defaults``),
:func:`compile_reader` writes one Python function for that writer's field order that reads each
field with the field's own code and returns the :class:`Signal`. Measured on the v1 contract
(CPU time per record, 20,000 records of the ingest benchmark): fastavro 3.4 µs, this reader 2.1
µs plus 0.7 for the ``Signal`` fastavro's path also builds; decode as a whole 7.9 → 4.6 µs.

The reader only ever *accepts*: whatever is not a plainly well-formed body (a varint of ten
bytes or more, a negative length, a union index other than 0 or 1, bytes that end early or are
left over, invalid UTF-8, a time no ``datetime`` holds) raises :class:`Unread` or the error of
the read that failed, and the caller decodes that record with the per-record reference
(``SignalDecoder.decode``), which gives it its reason code. So where the reader returns a
signal it is the reference's signal, and everything else *is* the reference's answer:
``tests/unit/test_signal_reader.py`` compares both on random records and random bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from core.records import Signal

__all__ = ["READ_ERRORS", "Reader", "Unread", "compile_reader"]

#: ``(framed value, position of the Avro body) -> Signal``; raises one of :data:`READ_ERRORS`.
Reader = Callable[[bytes, int], Signal]


class Unread(ValueError):
    """The body is not one the compiled reader accepts: the reference decodes it."""


#: What a compiled reader raises on a body it does not accept.
READ_ERRORS: tuple[type[Exception], ...] = (
    Unread,
    IndexError,
    ValueError,  # UnicodeDecodeError included
    OverflowError,
    struct.error,
)

#: fastavro's reading of ``timestamp-micros``: ``epoch + timedelta(microseconds=n)``.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DOUBLE = struct.Struct("<d").unpack_from

#: The fields of a :class:`Signal`, in its constructor's order.
_SIGNAL_FIELDS = ("tenant_id", "signal_id", "type", "value", "weight", "source", "ts", "selectors")


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint of at most 9 bytes at ``pos``: ``(value, position after it)``. A longer
    one (where fastavro's 64-bit arithmetic and Python's could part) is :class:`Unread`."""
    b = buf[pos]
    result = b & 0x7F
    shift = 7
    pos += 1
    while b >= 0x80:
        if shift > 56:
            msg = "varint of 10 bytes or more"
            raise Unread(msg)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
    return (result >> 1) ^ -(result & 1), pos


# Each field kind's code: reads the value at ``pos`` into ``{v}`` and moves ``pos`` past it.
_STRING = """\
    b = buf[pos]
    if b < 0x80:
        pos += 1
        n = (b >> 1) ^ -(b & 1)
    else:
        n, pos = _varint(buf, pos)
    end = pos + n
    if n < 0 or end > size:
        raise _Unread("string")
    {v} = buf[pos:end].decode("utf-8")
    pos = end
"""
_DOUBLE_CODE = """\
    {v} = _double(buf, pos)[0]
    pos += 8
"""
_NULL_OR_DOUBLE = """\
    b = buf[pos]
    pos += 1
    if b == 0:
        {v} = None
    elif b == 2:
        {v} = _double(buf, pos)[0]
        pos += 8
    else:
        raise _Unread("union index")
"""
_TIMESTAMP_MICROS = """\
    n, pos = _varint(buf, pos)
    {v} = _epoch + _timedelta(microseconds=n)
"""
_STRINGS = """\
    {v} = []
    while True:
        count, pos = _varint(buf, pos)
        if count == 0:
            break
        if count < 0:
            count = -count
            _bytes, pos = _varint(buf, pos)
        for _ in range(count):
            b = buf[pos]
            if b < 0x80:
                pos += 1
                n = (b >> 1) ^ -(b & 1)
            else:
                n, pos = _varint(buf, pos)
            end = pos + n
            if n < 0 or end > size:
                raise _Unread("string")
            {v}.append(buf[pos:end].decode("utf-8"))
            pos = end
"""


def _code(kind: Any) -> str | None:
    """The code reading one value of the (fastavro-parsed) field type ``kind``, or ``None``."""
    if kind == "string":
        return _STRING
    if kind == "double":
        return _DOUBLE_CODE
    if kind == ["null", "double"]:
        return _NULL_OR_DOUBLE
    if kind == {"type": "long", "logicalType": "timestamp-micros"}:
        return _TIMESTAMP_MICROS
    if kind == {"type": "array", "items": "string"}:
        return _STRINGS
    return None


def compile_reader(
    fields: Sequence[dict[str, Any]], defaults: Sequence[tuple[str, Any]]
) -> Reader | None:
    """The reader of a record whose writer has ``fields`` (in order, fastavro-parsed) and to
    which the reader schema adds ``defaults`` (name, value); ``None`` when a field's type is not
    one it reads, or a signal field would come from neither."""
    names = [str(f["name"]) for f in fields]
    given = {name: f"f{i}" for i, name in enumerate(names)}
    namespace: dict[str, Any] = {
        "_varint": _varint,
        "_double": _DOUBLE,
        "_epoch": _EPOCH,
        "_timedelta": _timedelta,
        "_Unread": Unread,
        "_Signal": Signal,
    }
    body = ["def read(buf, pos):", "    size = len(buf)"]
    for field, name in zip(fields, names, strict=True):
        code = _code(field["type"])
        if code is None:
            return None
        body.append(code.format(v=given[name]))
    body += ["    if pos != size:", '        raise _Unread("trailing bytes")']
    args = []
    default_of = dict(defaults)
    for i, name in enumerate(_SIGNAL_FIELDS):
        if name in given:
            value = given[name]
        elif name in default_of:
            namespace[f"_d{i}"] = default_of[name]
            value = f"_d{i}"
        else:
            return None
        # The reference: tuple(record.get("selectors") or ()).
        args.append(f"tuple({value} or ())" if name == "selectors" else value)
    body.append(f"    return _Signal({', '.join(args)})")
    exec("\n".join(body), namespace)
    read: Reader = namespace["read"]
    return read


_timedelta = timedelta
