"""A decoded signal read straight from its Avro body, compiled once per writer schema (decode's
batch path, issue 15 point 2).

fastavro reads a record through its generic machinery: a call that checks and walks the schema,
a ``BytesIO`` per record, a dict per record, then :class:`~core.records.Signal` built from the
dict. For a writer the decoder reads *without resolution* (its fields are reader fields of the
very same types, the reader's defaults fill the rest: ``operators.decode._direct_defaults``),
:func:`compile_reader` writes one Python function for that writer's field order and schema id
that reads each field with the field's own code and returns the whole
:class:`~core.records.Decoded`: the :class:`Signal`, its :class:`Provenance` and the
``Decoded`` itself are built in that one function, each slot set through its descriptor as the
records' own ``__init__`` sets it (``core.records._slot_init``), without three more calls. The
same instances as the reference's, so equality, hashing, ``repr`` and pickles are unchanged.
Measured on the v1 contract (CPU time per record, 20,000 records of the ingest benchmark):
fastavro 3.4 µs, the first reader (a ``Signal`` only) 2.1 µs plus 0.7 for the ``Signal``
fastavro's path also builds; decode as a whole 7.9 → 4.6 µs; the numbers of this version are
in the commit that made it.

The flow's reader is that function's translation into C (``core/_native.c``, a
CPython extension built with the package, with OpenSSL's SHA-256): :func:`compile_reader` gives
it unless asked for the Python one (``native=False``), its reference, which the tests compare it
with on random records, spoilt frames and arbitrary bodies, down to the pickles. It reads the
same five field kinds, accepts exactly what the Python one accepts and builds the same records
the same way (``object.__new__``, each slot through its descriptor). Measured (session 17, CPU
time per record, 50,000 records of the stage benchmark's workload, ``decode_many``): 4.8 µs with
the Python reader, 0.9-1.2 µs with the C one.

The reader only ever *accepts*: whatever is not a plainly well-formed body (a varint of ten
bytes or more, a negative length, a union index other than 0 or 1, bytes that end early or are
left over, invalid UTF-8, a time no ``datetime`` holds) raises :class:`Unread` or the error of
the read that failed, and the caller decodes that record with the per-record reference
(``SignalDecoder.decode``), which gives it its reason code. So where the reader returns a
record it is the reference's record, and everything else *is* the reference's answer:
``tests/unit/test_signal_reader.py`` compares both on random records and random bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from core import _native
from core.records import Decoded, Provenance, RawRecord, Signal, slot_descriptors
from core.wire import HEADER_SIZE

__all__ = ["READ_ERRORS", "Reader", "Unread", "compile_reader"]

#: ``(record as read, its framed value) -> Decoded``; raises one of :data:`READ_ERRORS`.
Reader = Callable[[RawRecord, bytes], Decoded]


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

#: The string fields of few values repeated over many records: the C reader gives every record
#: with the same (ASCII) bytes one shared str (``core/_native.c`` ``shared_string``).
_SHARED_STRINGS = frozenset({"tenant_id", "type", "source"})


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
# (``bytes.decode()``: UTF-8, strict; naming the codec costs a lookup per string.)
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
    {v} = buf[pos:end].decode()
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
# A timestamp's varint: eight bytes for the event times of the years 1987 to 3111 (zig-zag
# values of 2**49 to 2**56 - 1), read as one little-endian int whose seven 7-bit groups are
# packed by masks and shifts: about a fifth of the bytecodes of _varint's loop, which reads every
# other length (inline: no call). Eight bytes are such a varint exactly when the first seven
# have their top bit set and the eighth has not. timedelta's arguments by position (days,
# seconds, microseconds): a keyword call costs more.
_TIMESTAMP_MICROS = """\
    end = pos + 8
    n = _int_from_bytes(buf[pos:end], "little")
    if end <= size and n & 0x8080808080808080 == 0x0080808080808080:
        n &= 0x7F7F7F7F7F7F7F7F
        n = (n & 0x007F007F007F007F) | ((n & 0x7F007F007F007F00) >> 1)
        n = (n & 0x00003FFF00003FFF) | ((n & 0x3FFF00003FFF0000) >> 2)
        n = (n & 0x000000000FFFFFFF) | ((n & 0x0FFFFFFF00000000) >> 4)
        pos = end
    else:
        b = buf[pos]
        n = b & 0x7F
        shift = 7
        pos += 1
        while b >= 0x80:
            if shift > 56:
                raise _Unread("varint of 10 bytes or more")
            b = buf[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
    {v} = _epoch + _timedelta(0, 0, (n >> 1) ^ -(n & 1))
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
            {v}.append(buf[pos:end].decode())
            pos = end
"""


#: The field types of a timestamp and of the selectors, as fastavro parses them.
_TIMESTAMP = {"type": "long", "logicalType": "timestamp-micros"}
_ARRAY_OF_STRING = {"type": "array", "items": "string"}


def _code(kind: Any) -> str | None:
    """The code reading one value of the (fastavro-parsed) field type ``kind``, or ``None``."""
    if kind == "string":
        return _STRING
    if kind == "double":
        return _DOUBLE_CODE
    if kind == ["null", "double"]:
        return _NULL_OR_DOUBLE
    if kind == _TIMESTAMP:
        return _TIMESTAMP_MICROS
    if kind == _ARRAY_OF_STRING:
        return _STRINGS
    return None


#: Each field kind :func:`_code` reads, as the C reader numbers it (``core/_native.c``).
_KINDS = ("string", "double", ["null", "double"], _TIMESTAMP, _ARRAY_OF_STRING)


def _kind(kind: Any) -> int | None:
    """The C reader's number of the field type ``kind`` (see :data:`_KINDS`), or ``None``."""
    for number, known in enumerate(_KINDS):
        if kind == known:
            return number
    return None


#: The slots the C reader sets, in the order it passes their values.
_PROVENANCE_SLOTS = ("topic", "kafka_partition", "kafka_offset", "schema_version", "input_hash")
_DECODED_SLOTS = (
    "signal",
    "provenance",
    "kafka_timestamp_ms",
    "raw",
    "unknown_fields",
    "trace",
    "horizon",
)


def _c_reader(
    fields: Sequence[dict[str, Any]],
    names: Sequence[str],
    default_of: Mapping[str, Any],
    schema_id: int,
) -> Reader | None:
    """The C reader of what :func:`compile_reader` writes in Python for these fields (``None``
    where it does not read one: :func:`compile_reader` then gives the Python one)."""
    numbered = [_kind(f["type"]) for f in fields]
    kinds = tuple(k for k in numbered if k is not None)
    if len(kinds) != len(numbered):
        return None
    index = {name: i for i, name in enumerate(names)}
    signal_from = tuple(index.get(name, -1) for name in _SIGNAL_FIELDS)
    if signal_from[-1] >= 0 and kinds[signal_from[-1]] != _KINDS.index(_ARRAY_OF_STRING):
        return None  # selectors read from another type: the Python reader's tuple(...)
    defaults = tuple(
        None
        if name in index
        else (tuple(default_of[name] or ()) if name == "selectors" else default_of[name])
        for name in _SIGNAL_FIELDS
    )
    reader: Reader = _native.Reader(
        kinds=kinds,
        signal_from=signal_from,
        signal_default=defaults,
        classes=(Signal, Provenance, Decoded),
        signal_slots=slot_descriptors(Signal, _SIGNAL_FIELDS),
        provenance_slots=slot_descriptors(Provenance, _PROVENANCE_SLOTS),
        decoded_slots=slot_descriptors(Decoded, _DECODED_SLOTS),
        epoch=_EPOCH,
        unread=Unread,
        schema_id=schema_id,
        shared=tuple(i for i, name in enumerate(names) if name in _SHARED_STRINGS),
    )
    return reader


def _construct(
    cls: type, var: str, values: Mapping[str, str], namespace: dict[str, Any]
) -> list[str]:
    """Code that builds an instance ``var`` of the frozen, slotted record class ``cls`` with
    each field set to the expression ``values[name]``: ``object.__new__``, then each slot's
    descriptor, as ``core.records._slot_init``'s ``__init__`` does (every field must be given:
    a slot left unset would fail only when read)."""
    names = [f.name for f in dataclasses.fields(cls)]
    if set(names) != set(values):
        msg = f"{cls.__name__}: fields {sorted(names)}, given {sorted(values)}"
        raise TypeError(msg)
    namespace[f"_{cls.__name__}"] = cls
    lines = [f"    {var} = _new(_{cls.__name__})"]
    for name in names:
        setter = f"_{cls.__name__}_{name}"
        namespace[setter] = cls.__dict__[name].__set__
        lines.append(f"    {setter}({var}, {values[name]})")
    return lines


def compile_reader(
    fields: Sequence[dict[str, Any]],
    defaults: Sequence[tuple[str, Any]],
    schema_id: int,
    *,
    native: bool = True,
) -> Reader | None:
    """The reader of a record framed for writer ``schema_id``, whose writer has ``fields`` (in
    order, fastavro-parsed) and to which the reader schema adds ``defaults`` (name, value);
    ``None`` when a field's type is not one it reads, or a signal field would come from neither.

    It gives what ``SignalDecoder.decode`` gives for such a record: no ``unknown_fields`` (every
    writer field is a reader field), no trace, ``input_hash`` the SHA-256 of the whole value.
    With ``native`` (the flow's), the reader is the C one of ``core/_native.c``, which
    reads the same fields into the same records; ``native=False`` gives the Python function
    written here, its reference (``tests/unit/test_signal_reader.py`` compares both)."""
    names = [str(f["name"]) for f in fields]
    given = {name: f"f{i}" for i, name in enumerate(names)}
    namespace: dict[str, Any] = {
        "_double": _DOUBLE,
        "_epoch": _EPOCH,
        "_timedelta": _timedelta,
        "_Unread": Unread,
        "_new": object.__new__,
        "_sha256": hashlib.sha256,
        "_schema_id": schema_id,
        "_varint": _varint,
        "_int_from_bytes": int.from_bytes,
    }
    body = ["def read(raw, buf):", f"    pos = {HEADER_SIZE}", "    size = len(buf)"]
    for field, name in zip(fields, names, strict=True):
        code = _code(field["type"])
        if code is None:
            return None
        body.append(code.format(v=given[name]))
    body += ["    if pos != size:", '        raise _Unread("trailing bytes")']
    signal: dict[str, str] = {}
    default_of = dict(defaults)
    for i, name in enumerate(_SIGNAL_FIELDS):
        if name in given:
            value = given[name]
            # The reference: tuple(record.get("selectors") or ()).
            signal[name] = f"tuple({value} or ())" if name == "selectors" else value
        elif name in default_of:
            default = default_of[name]
            # A default is the same value for every record: its tuple is made once, here.
            namespace[f"_d{i}"] = tuple(default or ()) if name == "selectors" else default
            signal[name] = f"_d{i}"
        else:
            return None
    if native:
        reader = _c_reader(fields, names, default_of, schema_id)
        if reader is not None:
            return reader
    body += _construct(Signal, "signal", signal, namespace)
    provenance = {
        "topic": "raw.topic",
        "kafka_partition": "raw.partition",
        "kafka_offset": "raw.offset",
        "schema_version": "_schema_id",
        "input_hash": "_sha256(buf).hexdigest()",
    }
    body += _construct(Provenance, "provenance", provenance, namespace)
    decoded = {
        "signal": "signal",
        "provenance": "provenance",
        "kafka_timestamp_ms": "raw.timestamp_ms",
        "raw": "raw",
        "unknown_fields": "()",
        "trace": "None",
        "horizon": "None",
    }
    body += _construct(Decoded, "decoded", decoded, namespace)
    body.append("    return decoded")
    exec("\n".join(body), namespace)
    read: Reader = namespace["read"]
    return read


_timedelta = timedelta
