"""The values that flow between steps: plain frozen dataclasses, no engine types.

``RawRecord`` is what a Kafka source hands over; ``Decoded`` is a signal with its provenance;
``Rejected`` is bad input as data, with a reason code, on its way to the DLQ.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import operator
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from core import _native
from core.reasons import ReasonCode


class _Immutable:
    """Frozen values are shared, not copied, by ``copy.deepcopy``.

    Bytewax snapshots a stateful step's state with ``deepcopy`` at every epoch; for a batch of
    thousands of signals, walking each frozen record dominated the cost of ``collect``.
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, object]) -> _Immutable:
        return self


_T = TypeVar("_T")


def _slot_init(cls: type[_T]) -> type[_T]:
    """Give a frozen, slotted dataclass an ``__init__`` that sets each slot through its
    descriptor, instead of ``object.__setattr__(self, "name", value)`` per field.

    Same parameters, defaults (the very default objects) and resulting instances: every slot set
    to what was passed, so equality, hashing, ``repr`` and pickles are unchanged, and a frozen
    instance still refuses assignment. About 40% cheaper per record built (a signal builds five
    of them on its way to the lake). Refuses, at import, a field it does not reproduce
    (``init=False``, a default factory) and a class that is not frozen or has ``__post_init__``.
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or hasattr(cls, "__post_init__"):
        msg = f"{cls.__name__}: _slot_init takes frozen dataclasses without __post_init__"
        raise TypeError(msg)
    namespace: dict[str, Any] = {}
    args, body = [], []
    for i, f in enumerate(dataclasses.fields(cls)):  # type: ignore[arg-type]
        if not f.init or f.default_factory is not dataclasses.MISSING:
            msg = f"{cls.__name__}.{f.name}: _slot_init needs plain fields"
            raise TypeError(msg)
        if f.default is dataclasses.MISSING:
            args.append(f.name)
        else:
            namespace[f"_d{i}"] = f.default
            args.append(f"{f.name}=_d{i}")
        namespace[f"_s{i}"] = cls.__dict__[f.name].__set__
        body.append(f"    _s{i}(self, {f.name})")
    # Our own field names, as dataclasses itself builds its __init__.
    exec(f"def __init__(self, {', '.join(args)}):\n" + "\n".join(body), namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)  # as introspection saw them
    setattr(cls, "__init__", init)  # noqa: B010 (assigning a method: mypy refuses the attribute)
    _slot_pickling(cls)
    _FIELDS[cls] = _fields_getter(cls)
    return cls


def slot_maker(cls: type[_T]) -> Callable[..., _T]:
    """A function building a record of ``cls`` (a frozen, slotted record class of this module)
    from all its fields, positionally: the same instance as ``cls(*fields)``, about a third of
    the cost (a hot path's records: the score's changes).

    How: a twin class with the same slots in the same order on the same base (the same memory
    layout) takes the fields by plain slot stores, then the instance becomes a ``cls``
    (``__class__`` assignment, which CPython allows between layout-compatible classes and refuses
    otherwise). The frozen ``__setattr__`` is never involved and the result is a plain ``cls``:
    equal, hashed, pickled and still frozen as any other. Refuses, at import, a class whose
    slots are not its fields in order on :class:`_Immutable`.
    """
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    if cls.__bases__ != (_Immutable,) or cls.__dict__.get("__slots__") != names:
        msg = f"{cls.__name__}: slot_maker takes slotted records on _Immutable, slots = fields"
        raise TypeError(msg)
    twin = type(f"_{cls.__name__}Draft", (_Immutable,), {"__slots__": names})
    namespace: dict[str, Any] = {"_twin": twin, "_cls": cls}
    body = "".join(f"    o.{name} = {name}\n" for name in names)
    exec(  # (as _slot_init: our own field names)
        f"def make({', '.join(names)}):\n    o = _twin()\n{body}    o.__class__ = _cls\n"
        "    return o\n",
        namespace,
    )
    make: Callable[..., _T] = namespace["make"]
    make.__qualname__ = make.__name__ = f"make_{cls.__name__}"
    make.__module__ = cls.__module__
    make(*(None for _ in names))  # a layout CPython does not take as the same fails here
    return make


def _fields_getter(cls: type[Any]) -> Callable[[Any], tuple[Any, ...]]:
    """A getter of every field of ``cls`` as a tuple, in order."""
    get = operator.attrgetter(*(f.name for f in dataclasses.fields(cls)))
    if len(dataclasses.fields(cls)) == 1:
        return lambda record: (get(record),)
    return get


def _slot_pickling(cls: type[Any]) -> None:
    """Give ``cls`` the pickle state its dataclass methods give (or :func:`_getstate_untraced`
    and :func:`_setstate_with_defaults`), with the field names and slot setters looked up once
    per class instead of by ``dataclasses.fields`` on every record: the same state lists, so the
    same pickle bytes (recovery snapshots, the hot path's golden pickles).

    Every record crossing between Bytewax processes (``-i/-a``) is pickled and unpickled; with
    two processes that was ~10% of a worker's samples (``_dataclass_getstate``/``setstate``,
    mostly ``fields``).
    """
    fields = dataclasses.fields(cls)
    names = tuple(f.name for f in fields)
    setters = tuple(cls.__dict__[name].__set__ for name in names)
    get = operator.attrgetter(*names)
    one = len(names) == 1
    untraced = cls.__dict__.get("__getstate__") is _getstate_untraced
    if untraced:
        required = _required(cls)

        def getstate(self: Any) -> list[Any]:
            state = [get(self)] if one else list(get(self))
            while len(state) > required and state[-1] is None:
                state.pop()
            return state

        defaults = tuple(f.default for f in fields)

        def setstate(self: Any, state: list[Any]) -> None:
            for i, setter in enumerate(setters):
                setter(self, state[i] if i < len(state) else defaults[i])

    else:

        def getstate(self: Any) -> list[Any]:
            return [get(self)] if one else list(get(self))

        def setstate(self: Any, state: list[Any]) -> None:
            for setter, value in zip(setters, state, strict=False):
                setter(self, value)

    getstate.__qualname__ = f"{cls.__qualname__}.__getstate__"
    setstate.__qualname__ = f"{cls.__qualname__}.__setstate__"
    setattr(cls, "__getstate__", getstate)  # noqa: B010 (mypy refuses assigning a method)
    setattr(cls, "__setstate__", setstate)  # noqa: B010


def slot_descriptors(cls: type[Any], names: Iterable[str]) -> tuple[Any, ...]:
    """The slot descriptors of the frozen record class ``cls``'s fields ``names``, in that
    order, which must name every field: what native code sets a new instance's slots with
    (``object.__new__``, then each descriptor's ``__set__``, as :func:`_slot_init`'s
    ``__init__`` does; ``core/_native.c``)."""
    names = tuple(names)
    fields = sorted(f.name for f in dataclasses.fields(cls))
    if fields != sorted(names):
        msg = f"{cls.__name__}: fields {fields}, given {sorted(names)}"
        raise TypeError(msg)
    return tuple(cls.__dict__[name] for name in names)


#: Per record class (every class of :func:`_slot_init`): a getter of all its fields, in order
#: (the order of its ``__init__``'s parameters), for :class:`Records`.
_FIELDS: dict[type[Any], Callable[[Any], tuple[Any, ...]]] = {}


class Records(list[_T]):
    """A list of records that pickles compactly: what a tenant run is between processes.

    Bytewax pickles each item that crosses between the processes of a cluster (``-i/-a``); a
    run of ``n`` records pickled one record at a time cost ~7.7 µs a record (dumps + loads, each
    record and its nested ones through ``__reduce_ex__`` and ``__setstate__``), about half the
    runs cross at ``by_tenant``. A non-empty :class:`Records` of records of this module's
    classes (any mix) whose values are all of the exact types the C exchange takes (None, str,
    64-bit int, float, bool, bytes, tuple, naive or UTC datetime, nested records) pickles as one
    bytes object ``_native.exchange_pack`` writes, loaded by ``_native.exchange_unpack``
    (records allocated and their slots stored: no ``__init__``; ~0.2x the columns' cost). Else
    the reference, :func:`_reduce_columns`: a run of one record class pickles as that class and
    one tuple per field (a field whose values are all of one record class, a signal's
    :class:`Signal` say, as columns again), and loads by calling the class on the columns.
    Either way: the same records (every field equal, those ``compare=False`` too, of the same
    types), in the same order, in a :class:`Records`. Anything else (empty, other objects)
    pickles as a list does. Only in flight: the recovery snapshots hold the steps' state, never
    a run (``RunLogic`` hands its inner logic a new plain list), and both processes of a
    cluster run the same code (a run from a process whose record classes differ is refused).
    ``copy.copy`` and ``copy.deepcopy`` give a :class:`Records` of the same (immutable) items.
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        if self:
            data = _native.exchange_pack(self)
            if data is not None:  # every value one the C exchange takes
                return _exchange_unpack, (data,)
        return _reduce_columns(self)

    def __copy__(self) -> Records[_T]:
        return Records(self)

    def __deepcopy__(self, memo: dict[int, object]) -> Records[_T]:
        return Records(self)  # the items are frozen records (_Immutable: shared, not copied)


def _reduce_columns(run: list[Any]) -> tuple[Any, ...]:
    """The reference pickled form of a run (before session 20's C exchange, and still when
    ``_native.exchange_pack`` refuses a value): columns, or a plain list."""
    cls = type(run[0]) if run else None
    if cls in _FIELDS and _one_class(run, cls):
        return _unpack, (cls, _pack(cls, run))
    return Records, (list(run),)


def _exchange_unpack(data: bytes) -> Records[Any]:
    """The run ``_native.exchange_pack`` wrote (:meth:`Records.__reduce__`), its records built
    again in C (allocated, each slot stored: no ``__init__``)."""
    return Records(_native.exchange_unpack(data))


def _one_class(items: Iterable[Any], cls: type[Any] | None) -> bool:
    types = set(map(type, items))
    return len(types) == 1 and cls in types


def _pack(cls: type[Any], records: Iterable[Any]) -> list[Any]:
    """``records`` (all of ``cls``) as one tuple per field; a field whose values are all of one
    record class as a list ``[class, its columns]`` (a plain column is always a tuple)."""
    get = _FIELDS[cls]
    columns: list[Any] = list(zip(*map(get, records), strict=True))
    for i, column in enumerate(columns):
        inner = type(column[0])
        if inner in _FIELDS and _one_class(column, inner):
            columns[i] = [inner, _pack(inner, column)]
    return columns


def _unpack(cls: type[_T], columns: list[Any]) -> Records[_T]:
    """The records :func:`_pack` took apart, built again by ``cls``'s ``__init__``."""
    values = [
        _unpack(column[0], column[1]) if type(column) is list else column for column in columns
    ]
    return Records(map(cls, *values))


def _getstate_untraced(self: Any) -> list[Any]:
    """Pickle a record whose last fields are optional (default ``None``: a ``trace``, a drift
    ``horizon``): the trailing ones that are ``None`` are left out, so a record without them
    pickles byte for byte as before those fields existed (recovery snapshots, the hot path's
    golden pickles); :func:`_setstate_with_defaults` gives them back their defaults."""
    state = [getattr(self, f.name) for f in dataclasses.fields(self)]
    required = _required(type(self))
    while len(state) > required and state[-1] is None:
        state.pop()
    return state


def _required(cls: type[Any]) -> int:
    """How many leading fields of ``cls`` a pickle keeps: all but the trailing run of fields
    whose default is ``None`` (those are left out when ``None``)."""
    fields = dataclasses.fields(cls)
    n = len(fields)
    while n and fields[n - 1].default is None:
        n -= 1
    return n


def _setstate_with_defaults(self: Any, state: list[Any]) -> None:
    """Unpickle a frozen, slotted record, giving the fields missing at the end of the state
    their defaults (an untraced record's ``trace``, or a snapshot taken before it existed)."""
    for f, value in itertools.zip_longest(dataclasses.fields(self), state, fillvalue=_MISSING):
        if f is _MISSING:
            break
        object.__setattr__(self, f.name, f.default if value is _MISSING else value)


_MISSING: Any = object()


__all__ = [
    "TAGGED_READERS",
    "Decoded",
    "DeconflictionResult",
    "DriftVerdict",
    "PolicyTags",
    "Provenance",
    "Quarantined",
    "RawRecord",
    "Records",
    "Rejected",
    "ScoreChange",
    "Signal",
    "Tagged",
    "input_hash",
    "slot_descriptors",
    "slot_maker",
]


def input_hash(data: bytes | None) -> str:
    """SHA-256 of the exact input bytes, hex; the hash of no bytes for a missing value."""
    return hashlib.sha256(data or b"").hexdigest()


@_slot_init
@dataclasses.dataclass(frozen=True, slots=True)
class RawRecord(_Immutable):
    """One Kafka record as read, before any interpretation."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    #: Broker or producer timestamp, milliseconds since the epoch (``None`` when absent).
    timestamp_ms: int | None = None
    #: The consumer flagged this record (``None`` for a healthy one).
    error: str | None = None
    #: The record's headers, as sent (name, value); empty when it has none.
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name``, or ``None``."""
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None


@_slot_init
@dataclasses.dataclass(frozen=True, slots=True)
class Signal(_Immutable):
    """A coherence signal (the Avro contract, newest version)."""

    tenant_id: str
    signal_id: str
    type: str
    value: float
    weight: float | None
    source: str
    #: Event time, timezone-aware UTC, microsecond precision.
    ts: datetime
    selectors: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, str, datetime]:
        """The idempotency key ``(tenant_id, source, signal_id, ts)``."""
        return (self.tenant_id, self.source, self.signal_id, self.ts)


@_slot_init
@dataclasses.dataclass(frozen=True, slots=True)
class Provenance(_Immutable):
    """Where a landed row came from, exactly."""

    topic: str
    kafka_partition: int
    kafka_offset: int
    #: Registry id of the writer schema.
    schema_version: int
    input_hash: str


@_slot_init
@dataclasses.dataclass(frozen=True, slots=True)
class Decoded(_Immutable):
    """A signal that decoded, with its provenance."""

    signal: Signal
    provenance: Provenance
    kafka_timestamp_ms: int | None = None
    #: The record as read (its bytes are what a released quarantine batch re-sends).
    raw: RawRecord | None = None
    #: Fields of the writer schema that the flow's reader schema does not know (schema drift).
    unknown_fields: tuple[str, ...] = ()
    #: The ``traceparent`` of this record's decode span when its trace is sampled
    #: (:mod:`core.tracing`), else ``None``. Never landed: no lake column reads it.
    trace: str | None = None
    #: The drift step's horizon, on the last record one input record let out of it: the
    #: tenant's event time (newest ``ts`` the drift step had seen, any type, held records
    #: included) when that input was taken, else ``None``. A function of the tenant's input
    #: sequence only; it lets the score step close every tick before it (:mod:`operators.score`).
    #: Never landed, never in a provenance id: no table, store or manifest reads it; not
    #: compared either (two records equal whatever horizon they carry), but in the ``repr``.
    horizon: datetime | None = dataclasses.field(default=None, compare=False)

    __getstate__ = _getstate_untraced
    __setstate__ = _setstate_with_defaults


@_slot_init
@dataclasses.dataclass(frozen=True, slots=True)
class Rejected(_Immutable):
    """Input that cannot go on, and why. Carries the original bytes untouched."""

    reason: ReasonCode
    #: A short, non-sensitive explanation (never a copy of the payload).
    detail: str
    record: RawRecord
    #: The step that rejected it (``decode``, ``validate``, ``dedupe`` …).
    stage: str = "decode"
    #: Known once the record decoded.
    tenant_id: str | None = None
    schema_version: int | None = None

    @property
    def input_hash(self) -> str:
        """SHA-256 of the original value bytes."""
        return input_hash(self.record.value)


@_slot_init
@dataclasses.dataclass(frozen=True, slots=True)
class DriftVerdict(_Immutable):
    """The drift check of one micro-batch of one (tenant, type): its statistics and decision."""

    #: Derived from the batch's first record: ``sha256(tenant|type|topic|partition|offset)[:32]``.
    batch_id: str
    tenant_id: str
    #: Signal type, or ``"*schema"`` for a batch of schema-drifted records.
    type: str
    size: int
    #: Population Stability Index and two-sample KS statistic of the batch against the reference
    #: (``None`` while the reference is still being learned or for a schema-drift batch).
    psi: float | None
    ks: float | None
    #: The same two statistics for the trailing window (recent passed batches + this one).
    window_psi: float | None
    window_ks: float | None
    #: ``None`` when the batch passes; else why it is quarantined.
    reason: ReasonCode | None


@_slot_init
@dataclasses.dataclass(frozen=True, slots=True)
class Quarantined(_Immutable):
    """A decoded record held back by the drift check, with the verdict of its batch."""

    decoded: Decoded
    verdict: DriftVerdict

    @property
    def trace(self) -> str | None:
        """The record's trace (:attr:`Decoded.trace`)."""
        return self.decoded.trace


@_slot_init
@dataclasses.dataclass(frozen=True, slots=True)
class PolicyTags(_Immutable):
    """A tenant's policy tags (from the tenancy Rego policy)."""

    purpose: str
    retention: str
    license: str
    residency: str


@_slot_init
@dataclasses.dataclass(frozen=True, slots=True)
class Tagged(_Immutable):
    """A valid, unique signal with its tenant's policy tags and its provenance manifest."""

    decoded: Decoded
    tags: PolicyTags
    #: SHA-256 of the active policy bundle.
    policy_version: str
    #: Derived from the manifest (never random), so a replay reproduces it.
    provenance_id: str

    @property
    def signal(self) -> Signal:
        return self.decoded.signal

    @property
    def provenance(self) -> Provenance:
        return self.decoded.provenance

    @property
    def trace(self) -> str | None:
        """The signal's trace (:attr:`Decoded.trace`)."""
        return self.decoded.trace


@_slot_init
@dataclasses.dataclass(frozen=True, slots=True)
class ScoreChange(_Immutable):
    """A tenant's coherence score after one signal changed it."""

    tenant_id: str
    #: The exact weighted mean, correctly rounded to a double.
    score: float
    #: ``HEALTHY`` (≥ 0.75), ``WARN`` (≥ 0.5) or ``CRITICAL``, decided on the exact value.
    status: str
    #: The tenant's event time (newest ``ts`` seen): the end of the 24 h window.
    updated_at: datetime
    #: Signals and total weight inside the window.
    window_count: int
    window_weight: float
    #: The signal that caused the change.
    provenance_id: str
    provenance: Provenance
    #: The exact score rounded half-even to two places (the ``NUMERIC(5,2)`` of the read model);
    #: rounding the double instead could differ at a decimal tie.
    score_2dp: Decimal = Decimal("0.00")
    #: The tenant's change number (1, 2, …): deterministic, so a store applies a change only if
    #: its ``seq`` is newer than the one it holds, and a replayed change is a no-op.
    seq: int = 0
    #: The trace of the signal that caused the change (its ``Decoded.trace``), else ``None``.
    trace: str | None = None

    __getstate__ = _getstate_untraced
    __setstate__ = _setstate_with_defaults


@_slot_init
@dataclasses.dataclass(frozen=True, slots=True)
class DeconflictionResult(_Immutable):
    """One tenant's window deconflicted with one partner: a row of ``coherence.deconfliction``."""

    tenant_id: str
    window_start: datetime
    window_end: datetime
    #: ``full_intersection`` or ``intersection_cardinality``.
    mode: str
    #: The partner whose set answered (``server_partner_id``).
    partner: str
    #: Distinct selectors the window asked about (none left on a local denial).
    selectors_sent: int
    #: The matched selectors in first-seen order; empty in cardinality mode or without an answer.
    matched: tuple[str, ...]
    #: How many matched; ``None`` without an answer.
    count: int | None
    #: ``None`` when the partner answered; else a ReasonCode value (``PSI_UNAVAILABLE``: no answer).
    reason: str | None
    signals: int
    late: int
    selectors_rejected: int
    first_offset: int
    last_offset: int
    provenance_digest: str
    #: The window's last signal: its provenance id, manifest and policy bundle version.
    provenance_id: str
    provenance: Provenance
    policy_version: str
    #: The server key that answered (``epoch.generation.fingerprint``); ``None`` without one.
    key_epoch: int | None = None
    key_id: str | None = None


def _exchange_table() -> tuple[tuple[type[Any], tuple[Any, ...]], ...]:
    """Every record class of this module (``_FIELDS``, in definition order) with its slot
    descriptors in field order: what ``_native.exchange_pack`` writes a run of."""
    return tuple(
        (cls, slot_descriptors(cls, (f.name for f in dataclasses.fields(cls)))) for cls in _FIELDS
    )


def _exchange_fingerprint(table: tuple[tuple[type[Any], tuple[Any, ...]], ...]) -> bytes:
    """8 bytes naming the exchange's format and table (each class and its fields, in order) and
    this machine's byte order: a process whose table differs refuses the other's runs loudly."""
    text = repr(
        (
            "exchange/1",
            sys.byteorder,
            [
                (cls.__module__, cls.__qualname__, [f.name for f in dataclasses.fields(cls)])
                for cls, _ in table
            ],
        )
    )
    return hashlib.sha256(text.encode()).digest()[:8]


_EXCHANGE_TABLE = _exchange_table()
_native.exchange_init(_EXCHANGE_TABLE, UTC, _exchange_fingerprint(_EXCHANGE_TABLE))


#: The member descriptors of a ``Tagged``'s fields that the serving sinks' C loops read at
#: their slots' offsets, in their order (``SV_*`` in ``core/_native.c``: the Redis sink's
#: operations, the graph sink's rows): the Tagged's, its Decoded's, its Signal's, its
#: Provenance's and its PolicyTags'.
TAGGED_READERS = (
    *(Tagged.__dict__[name] for name in ("decoded", "tags", "policy_version", "provenance_id")),
    *(Decoded.__dict__[name] for name in ("signal", "provenance")),
    *(
        Signal.__dict__[name]
        for name in ("tenant_id", "signal_id", "type", "value", "weight", "source", "ts")
    ),
    *(
        Provenance.__dict__[name]
        for name in ("topic", "kafka_partition", "kafka_offset", "schema_version", "input_hash")
    ),
    *(PolicyTags.__dict__[name] for name in ("purpose", "retention", "license", "residency")),
)
