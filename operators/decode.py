"""decode: Confluent wire format + schema registry → :class:`~core.records.Signal`.

Contract: every input record comes out exactly once, either as ``Decoded`` on ``oks`` or as
``Rejected`` on ``errs`` with a reason code: ``EMPTY_PAYLOAD`` (tombstone), ``DECODE_FAILED``
(no magic byte, too short, Avro body truncated or with trailing bytes, a union branch or enum
symbol index that is negative or out of range), ``TS_OUT_OF_RANGE`` (valid Avro whose ``ts``
lies outside the years 1-9999 that a timestamp can hold, e.g. at the int64 limits),
``SCHEMA_UNKNOWN`` (the registry has no such id), ``SCHEMA_INCOMPATIBLE`` (the writer schema
does not resolve to the reader schema; or it has an array whose items take no bytes, or a
recursive type, whose records could make the reader loop without reading or recurse past the
stack: :mod:`operators.avro_bounds`), ``SOURCE_ERROR`` (the consumer flagged the record). A
registry that is *down* is not bad input: :class:`~core.errors.RegistryError` stops the flow,
which resumes from its last snapshot once the registry is back, so nothing is misfiled as bad
data.

A writer schema with fields the reader schema lacks still decodes (Avro resolution drops them);
the decoded record names those fields in ``unknown_fields`` so the drift step can quarantine it
(``SCHEMA_DRIFT``) instead of landing it without them.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import threading
import time
from typing import Any, Protocol

import bytewax.operators as op
import fastavro
from bytewax.dataflow import Stream, operator
from fastavro.schema import SchemaParseException, UnknownType

from core import _native, tracing
from core.reasons import ReasonCode
from core.records import Decoded, Provenance, RawRecord, Rejected, Signal, input_hash
from core.wire import HEADER_SIZE, MAGIC, frame, unframe
from operators.avro_bounds import recursive_types, zero_width_arrays
from operators.avro_indexes import Guard, index_guard
from operators.signal_reader import READ_ERRORS, Reader, compile_reader
from operators.split import split

__all__ = ["DecodeOut", "SchemaLookup", "SignalDecoder", "decode", "decode_batch"]


class SchemaLookup(Protocol):
    """Finds a writer schema by registry id: its Avro text, or ``None`` if the id is unknown."""

    def __call__(self, schema_id: int) -> str | None: ...


def _canonical(schema: dict[str, Any]) -> str:
    canonical: str = fastavro.schema.to_parsing_canonical_form(schema)
    return canonical


def _field_names(schema: dict[str, Any]) -> list[str]:
    return [str(f["name"]) for f in schema.get("fields", ())]


_EPOCH_US_MIN = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z, microseconds since the epoch
_EPOCH_US_MAX = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
#: Logical types that fastavro turns into ``datetime``/``date`` (and fails on out of range).
_TIME_TYPES = frozenset(
    {"timestamp-millis", "timestamp-micros", "local-timestamp-millis", "local-timestamp-micros"}
)
_MILLIS_TYPES = frozenset({"timestamp-millis", "local-timestamp-millis"})


def _without_time_types(schema: Any) -> Any:
    """``schema`` (Avro JSON) with the time logical types removed, so they read as plain longs."""
    if isinstance(schema, list):
        return [_without_time_types(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _without_time_types(v) for k, v in schema.items() if k != "fields"}
    if out.get("logicalType") in _TIME_TYPES:
        del out["logicalType"]
    if "fields" in schema:
        out["fields"] = [{**f, "type": _without_time_types(f["type"])} for f in schema["fields"]]
    return out


def _ts_micros(record: Any, schema: dict[str, Any]) -> int | None:
    """The record's ``ts`` in microseconds, read as a plain long (``None`` if it has none)."""
    if not isinstance(record, dict) or not isinstance(record.get("ts"), int):
        return None
    ts: int = record["ts"]
    for field in schema.get("fields", ()):
        kind = field["type"]
        millis = isinstance(kind, dict) and kind.get("logicalType") in _MILLIS_TYPES
        if field["name"] == "ts" and millis:
            return ts * 1000
    return ts


_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
#: Members of one of these groups resolve into another (Avro's promotions: int → long → float →
#: double, string ↔ bytes), so a union holding two of one group does not read as itself.
_PROMOTABLE = (frozenset({"int", "long", "float", "double"}), frozenset({"string", "bytes"}))


def _reads_as_itself(schema: Any) -> bool:
    """Whether reading a value of ``schema`` with ``schema`` as the reader schema gives exactly
    what reading it without a reader schema gives: primitives (time logical types allowed),
    arrays and maps of them, and unions of primitives with at most one member of each promotion
    group. No named types (their resolution depends on names defined elsewhere)."""
    if isinstance(schema, str):
        return schema in _PRIMITIVES
    if isinstance(schema, list):
        return all(isinstance(b, str) and b in _PRIMITIVES for b in schema) and all(
            len(group.intersection(schema)) <= 1 for group in _PROMOTABLE
        )
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    keys = set(schema) - {"type"}
    if kind == "array" and keys == {"items"}:
        return _reads_as_itself(schema["items"])
    if kind == "map" and keys == {"values"}:
        return _reads_as_itself(schema["values"])
    if kind in _PRIMITIVES and keys <= {"logicalType"}:
        return not keys or schema["logicalType"] in _TIME_TYPES
    return False


def _direct_defaults(
    writer: dict[str, Any], reader: dict[str, Any]
) -> tuple[tuple[str, Any], ...] | None:
    """When Avro's resolution of ``writer`` to ``reader`` only adds the reader's defaults.

    That is: both records of the same name; every writer field is a reader field by name, of the
    very same type, one that reads as itself (:func:`_reads_as_itself`); every reader field the
    writer lacks has a default. Then reading with ``writer`` alone and adding those defaults, in
    the reader's field order, gives the record fastavro's resolution gives, key order included
    (it reads the writer's fields in order, then adds the defaults) and without resolving the
    schemas again for every record. Else ``None``: such writers are read with resolution.
    """
    if writer.get("type") != "record" or reader.get("type") != "record":
        return None
    if writer.get("name") != reader.get("name"):
        return None
    reader_fields = {f["name"]: f for f in reader["fields"]}
    names = [f["name"] for f in writer["fields"]]
    if len(set(names)) != len(names) or len(reader_fields) != len(reader["fields"]):
        return None
    for field in writer["fields"]:
        other = reader_fields.get(field["name"])
        if other is None or other["type"] != field["type"]:
            return None
        if not _reads_as_itself(field["type"]):
            return None
    defaults = []
    for name, field in reader_fields.items():
        if name in names:
            continue
        if "default" not in field:
            return None
        defaults.append((name, field["default"]))
    return tuple(defaults)


def _unbounded(schema_id: int, parsed: dict[str, Any]) -> str | None:
    """Why no record of the writer ``parsed`` is read (:mod:`operators.avro_bounds`), or None."""
    arrays = zero_width_arrays(parsed)
    if arrays:
        return (
            f"schema id {schema_id}: array {', '.join(arrays)} of items that take no bytes"
            " (a record could claim any number of them: refused unread)"
        )
    recursive = recursive_types(parsed)
    if recursive:
        return (
            f"schema id {schema_id}: recursive type {', '.join(recursive)} (a record could nest"
            " without bound: refused unread)"
        )
    return None


class SignalDecoder:
    """Decodes Confluent-framed Avro into signals, read with one reader schema.

    Writer schemas are fetched once per id through ``lookup`` and cached (registry ids are
    immutable), with what reading them takes: a writer whose resolution to the reader schema
    only adds the reader's defaults (the v1 contract read as v2) is read without resolution and
    given those defaults, instead of resolving the two schemas again for every record. An id the
    registry does not know is remembered for ``unknown_ttl_s`` seconds, so a
    burst of records with a bogus id costs one lookup, not one each, while an id registered
    later is still found. Thread-safe: Bytewax workers of one process share an instance.
    """

    def __init__(
        self, lookup: SchemaLookup, reader_schema: dict[str, Any], *, unknown_ttl_s: float = 30.0
    ) -> None:
        self._lookup = lookup
        self._reader = reader_schema
        self._reader_canonical = _canonical(reader_schema)
        self._writers: dict[int, dict[str, Any]] = {}
        self._guards: dict[int, Guard | None] = {}
        #: Per schema id, the writer schema without time logical types (built on first need).
        self._plain: dict[int, tuple[dict[str, Any], dict[str, Any]] | None] = {}
        self._unknown_fields: dict[int, tuple[str, ...]] = {}
        #: Per schema id whose records are refused unread, why (:mod:`operators.avro_bounds`).
        self._refused: dict[int, str] = {}
        #: Per schema id, the reader defaults to add when the writer reads without resolution
        #: (``()`` for the reader schema itself), ``None`` when it must be resolved per record.
        self._direct: dict[int, tuple[tuple[str, Any], ...] | None] = {}
        #: Per schema id of a writer read without resolution, its compiled reader
        #: (:mod:`operators.signal_reader`), used by :meth:`decode_many`, keyed by the frame's
        #: header (magic byte and schema id, :func:`core.wire.frame`'s first bytes).
        self._readers: dict[bytes, Reader] = {}
        self._reader_fields = frozenset(_field_names(reader_schema))
        self._unknown: dict[int, float] = {}
        self._unknown_ttl = unknown_ttl_s
        self._lock = threading.Lock()

    def _writer(self, schema_id: int) -> dict[str, Any] | None:
        cached = self._writers.get(schema_id)  # the hot path: a known id, no lock, no clock
        if cached is not None:
            return cached
        now = time.monotonic()
        with self._lock:
            cached = self._writers.get(schema_id)
            if cached is None and self._unknown.get(schema_id, 0.0) > now:
                return None
        if cached is not None:
            return cached
        text = self._lookup(schema_id)
        if text is None:
            with self._lock:
                if len(self._unknown) > 10_000:  # bound the memory a flood of random ids can take
                    self._unknown.clear()
                self._unknown[schema_id] = now + self._unknown_ttl
            return None
        try:
            parsed = fastavro.parse_schema(json.loads(text))
        except (ValueError, RecursionError, SchemaParseException, UnknownType) as exc:
            # Not a schema this reader can take (nested past the interpreter's recursion
            # limit, say): its records are refused, never a reason for the flow to stop.
            with self._lock:
                self._refused[schema_id] = f"schema id {schema_id} does not parse: {exc!r:.200}"
                self._writers[schema_id] = {"type": "null"}
            return self._writers[schema_id]
        if not isinstance(parsed, dict):
            parsed = {"type": parsed}
        unknown = tuple(n for n in _field_names(parsed) if n not in self._reader_fields)
        refused = _unbounded(schema_id, parsed)
        if refused is not None:
            with self._lock:
                self._refused[schema_id] = refused
                self._writers[schema_id] = parsed
            return parsed
        guard = index_guard(parsed)
        if _canonical(parsed) == self._reader_canonical:
            parsed = self._reader  # same schema: no resolution step when reading
        direct = () if parsed is self._reader else _direct_defaults(parsed, self._reader)
        reader = None if direct is None else compile_reader(parsed["fields"], direct, schema_id)
        with self._lock:
            self._guards[schema_id] = guard
            self._direct[schema_id] = direct
            self._writers[schema_id] = parsed
            self._unknown_fields[schema_id] = unknown
            if reader is not None:
                self._readers[frame(schema_id, b"")] = reader  # the header alone
        return parsed

    def _ts_out_of_range(self, schema_id: int, value: bytes) -> bool:
        """Whether ``value`` is valid Avro whose ``ts`` no ``datetime`` can hold (cold path)."""
        if schema_id not in self._plain:
            text = self._lookup(schema_id)
            plain = None
            if text is not None:
                raw_schema = json.loads(text)
                stripped = fastavro.parse_schema(_without_time_types(raw_schema))
                plain = (stripped, raw_schema) if isinstance(stripped, dict) else None
            with self._lock:
                self._plain[schema_id] = plain
        entry = self._plain[schema_id]
        if entry is None:
            return False
        schema, raw_schema = entry
        body = io.BytesIO(value)
        body.seek(HEADER_SIZE)
        try:
            record = fastavro.schemaless_reader(body, schema, None)
        except (EOFError, ValueError, TypeError, IndexError, OverflowError):
            return False
        guard = self._guards.get(schema_id)
        if body.tell() != len(value) or (guard is not None and not guard(value, HEADER_SIZE)):
            return False
        ts = _ts_micros(record, raw_schema)
        return ts is not None and not _EPOCH_US_MIN <= ts <= _EPOCH_US_MAX

    def decode(self, raw: RawRecord) -> Decoded | Rejected:
        """Decode one record; never raises for bad input."""
        if raw.error is not None:
            return Rejected(ReasonCode.SOURCE_ERROR, "the consumer flagged this record", raw)
        value = raw.value
        if not value:
            return Rejected(ReasonCode.EMPTY_PAYLOAD, "record has no value", raw)
        if len(value) <= HEADER_SIZE:
            return Rejected(ReasonCode.DECODE_FAILED, f"{len(value)} bytes: too short", raw)
        magic, schema_id = unframe(value)
        if magic != MAGIC:
            return Rejected(ReasonCode.DECODE_FAILED, f"magic byte {magic & 0xFF:#04x}", raw)
        writer = self._writer(schema_id)
        if writer is None:
            return Rejected(ReasonCode.SCHEMA_UNKNOWN, f"schema id {schema_id}", raw)
        refused = self._refused.get(schema_id)
        if refused is not None:
            return Rejected(ReasonCode.SCHEMA_INCOMPATIBLE, refused, raw)
        body = io.BytesIO(value)
        body.seek(HEADER_SIZE)
        defaults = self._direct.get(schema_id)
        try:
            if defaults is None:
                record = fastavro.schemaless_reader(body, writer, self._reader)
            else:
                record = fastavro.schemaless_reader(body, writer, None)
        except fastavro.read.SchemaResolutionError:
            detail = f"schema id {schema_id} does not resolve to the reader schema"
            return Rejected(ReasonCode.SCHEMA_INCOMPATIBLE, detail, raw)
        except (ValueError, OverflowError):  # also what a time fastavro cannot represent raises
            if self._ts_out_of_range(schema_id, value):
                detail = "ts outside the years 1-9999 (valid Avro)"
                return Rejected(ReasonCode.TS_OUT_OF_RANGE, detail, raw)
            return Rejected(ReasonCode.DECODE_FAILED, "Avro body does not decode", raw)
        except (EOFError, TypeError, IndexError):
            return Rejected(ReasonCode.DECODE_FAILED, "Avro body does not decode", raw)
        if body.tell() != len(value):
            detail = f"{len(value) - body.tell()} trailing bytes after the Avro body"
            return Rejected(ReasonCode.DECODE_FAILED, detail, raw)
        guard = self._guards.get(schema_id)
        if guard is not None and not guard(value, HEADER_SIZE):
            # fastavro reads a negative index as a Python list index (-1: the last branch).
            detail = "a union branch or enum symbol index is negative or out of range"
            return Rejected(ReasonCode.DECODE_FAILED, detail, raw)
        if not isinstance(record, dict):
            return Rejected(ReasonCode.SCHEMA_INCOMPATIBLE, "writer schema is not a record", raw)
        if defaults:
            record.update(defaults)  # what resolution adds, in the same order (_direct_defaults)
        # Positional arguments, in the fields' order: a keyword call costs a third more.
        signal = Signal(
            record["tenant_id"],
            record["signal_id"],
            record["type"],
            record["value"],
            record["weight"],
            record["source"],
            record["ts"],
            tuple(record.get("selectors") or ()),
        )
        provenance = Provenance(raw.topic, raw.partition, raw.offset, schema_id, input_hash(value))
        unknown = self._unknown_fields.get(schema_id, ())
        return Decoded(signal, provenance, raw.timestamp_ms, raw, unknown)

    def decode_many(self, raws: list[RawRecord]) -> list[Decoded | Rejected]:
        """:meth:`decode` of each record of ``raws``, in order, the same results: a record
        framed for a writer with a compiled reader (:mod:`operators.signal_reader`) is read by
        it, straight into its ``Decoded``; a record it does not accept, and every other one, by
        :meth:`decode` (the reference, which also fetches a new writer and compiles its
        reader). The loop runs in C (``core/_native.c`` ``decode_run``, which calls a C reader
        directly and reads the records' slots at their offsets), :meth:`decode_many_python`
        its reference."""
        return _native.decode_run(
            raws if type(raws) is list else list(raws),
            self._readers,
            READ_ERRORS,
            self.decode,
            _RAW_SLOTS,
        )

    def decode_many_python(self, raws: list[RawRecord]) -> list[Decoded | Rejected]:
        """:meth:`decode_many`'s loop in Python, the reference of its C loop."""
        out: list[Decoded | Rejected] = []
        append = out.append
        readers = self._readers
        for raw in raws:
            value = raw.value
            # A value's first bytes name its reader: the magic byte and the schema id in one
            # lookup (a value too short for a body, or not bytes, finds none or fails to read).
            if raw.error is None and type(value) is bytes:
                read = readers.get(value[:HEADER_SIZE])
                if read is not None:
                    try:
                        append(read(raw, value))
                    except READ_ERRORS:
                        pass  # the reference decides (and names the reason)
                    else:
                        continue
            append(self.decode(raw))
        return out


#: What ``decode_run`` reads of a :class:`RawRecord` at its slots, in its order (``RR_*`` in
#: ``core/_native.c``).
_RAW_SLOTS = tuple(
    RawRecord.__dict__[name]
    for name in ("topic", "partition", "offset", "timestamp_ms", "error", "value")
)


def traced_decode(decoder: SignalDecoder, raw: RawRecord) -> Decoded | Rejected:
    """:meth:`SignalDecoder.decode`, with a decode span for a sampled record."""
    parent = tracing.sampled_parent(raw.header(tracing.TRACEPARENT))
    if parent is None:
        return decoder.decode(raw)
    start = time.time_ns()
    out = decoder.decode(raw)
    attributes: dict[str, tracing.AttributeValue | None] = {
        "igflow.stage": "decode",
        "messaging.destination.name": raw.topic,
        "messaging.kafka.destination.partition": raw.partition,
        "messaging.kafka.message.offset": raw.offset,
    }
    if isinstance(out, Rejected):
        attributes["igflow.tenant_id"] = out.tenant_id
        tracing.stage_span("decode", parent, attributes, start, error=out.reason.value)
        return out
    attributes["igflow.tenant_id"] = out.signal.tenant_id
    attributes["igflow.signal_id"] = out.signal.signal_id
    trace = tracing.stage_span("decode", parent, attributes, start)
    return dataclasses.replace(out, trace=trace)


def decode_batch(decoder: SignalDecoder, raws: list[RawRecord]) -> list[Decoded | Rejected]:
    """:meth:`SignalDecoder.decode` of each record of ``raws``, in order (the batch entry point:
    one call per engine batch, :meth:`SignalDecoder.decode_many`; the per-record method stays
    the reference)."""
    return decoder.decode_many(raws)


def traced_decode_batch(decoder: SignalDecoder, raws: list[RawRecord]) -> list[Decoded | Rejected]:
    """:func:`decode_batch` with :func:`traced_decode`'s spans."""
    return [traced_decode(decoder, raw) for raw in raws]


@dataclasses.dataclass(frozen=True)
class DecodeOut:
    """The two streams out of :func:`decode`."""

    oks: Stream[Decoded]
    errs: Stream[Rejected]


@operator
def decode(
    step_id: str,
    up: Stream[RawRecord],
    decoder: SignalDecoder,
) -> DecodeOut:
    """Decode Kafka records into signals; bad input leaves on ``errs`` with a reason code.

    With tracing on (:mod:`core.tracing`), a record whose ``traceparent`` header is sampled (or
    that has none and is drawn) gets a decode span, and its ``Decoded.trace`` names that span."""
    batch = traced_decode_batch if tracing.enabled() else decode_batch
    results = op.flat_map_batch("decode", up, functools.partial(batch, decoder))
    oks, errs = split("split", results, Decoded, Rejected)
    return DecodeOut(oks, errs)
