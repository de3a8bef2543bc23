"""Sealed recovery snapshots: a step's state with each tenant's part sealed under its keys.

Bytewax keeps each stateful step's snapshot in SQLite files (``--recovery-dir``) as a pickle.
:class:`StateSeal` is the one thing every step that holds sensitive records goes through
(``operators/sealed_state.py`` wraps a ``StatefulBatchLogic``, ``sinks/serving.py`` a sink
partition): its :meth:`~StateSeal.seal` turns a state into a :class:`SealedState` and its
:meth:`~StateSeal.open` turns one back (a plain state, snapshotted before sealing existed or with
``seal.enabled`` off, passes through unchanged: the upgrade path).

How a state is split. The state is pickled once with a ``persistent_id`` hook: every object
that :func:`core.sealing.snapshot_holder` gives a keyholder (a decoded, tagged or held signal, a
reject, a deconfliction row) is cut out of that pickle, the *frame*, and left there as a
reference; each keyholder's objects are pickled together and sealed under that tenant's
``snapshot`` data key. A step keyed by tenant whose state is not a list of records (psi's open
window: a set of selectors) names its tenant as the holder of the whole state (``whole``). The
frame keeps what is no record (due times, counters, score changes, a reject without a tenant,
which the quarantine table keeps as read too) in the clear.

What a part is bound to: the associated data (:func:`core.envelope.field_aad`) names the
keyholder, the scope ``snapshot``, the step (as the column) and the state key (as the row), so a
part copied to another tenant, step or key does not open. Which data key: the one effective at
the wall clock's now (a snapshot need not be byte-deterministic; a replay never reads one).

Offboarding. A tenant whose keys are destroyed when its part is sealed gets no ciphertext and
no plaintext: the part is *withheld* (``None``). On resume a withheld part, or one whose keys
were destroyed since (:class:`~tenancy.keys.KeysDestroyed`), is discarded: its records are
left out of the state (a whole state resumes empty), counted in
``igflow_snapshot_withheld_total{step, reason="TENANT_SHREDDED"}`` and logged with the tenant;
the other tenants' parts resume as usual. A part that does not open for another reason
(tampered, another step or key) stops the flow with :class:`~core.envelope.DecryptError`.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import pickle
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from core.envelope import DecryptError
from core.errors import ConfigError
from core.metrics import SNAPSHOT_WITHHELD
from core.sealing import SCOPE_SNAPSHOT, SNAPSHOT_SHREDDED, snapshot_holder
from tenancy.keys import KeysDestroyed
from tenancy.sealing import Sealer

__all__ = ["SealedPart", "SealedState", "StateSeal"]

log = logging.getLogger(__name__)

_PROTOCOL = pickle.HIGHEST_PROTOCOL


@dataclasses.dataclass(frozen=True, slots=True)
class SealedPart:
    """One keyholder's records of a state: sealed, or ``None`` when withheld (the holder's keys
    were destroyed when the snapshot was taken)."""

    holder: str
    sealed: bytes | None


@dataclasses.dataclass(frozen=True, slots=True)
class SealedState:
    """A step's snapshot with its tenants' records sealed (what Bytewax pickles instead of the
    state). ``step`` and ``key`` are bound into every part; ``frame`` is the rest, in the clear,
    referring to the parts' records by ``(part, index)``."""

    step: str
    key: str
    frame: bytes
    parts: tuple[SealedPart, ...]


class _Withheld:
    """Where a discarded part's record was (removed from lists by :func:`_prune`)."""

    __slots__ = ()


_WITHHELD = _Withheld()


class _Splitter(pickle.Pickler):
    """Pickles the frame; each object with a keyholder goes to that holder's part instead."""

    def __init__(
        self,
        file: io.BytesIO,
        holder_of: Callable[[object], str | None],
        whole: tuple[object, str] | None,
    ) -> None:
        super().__init__(file, _PROTOCOL)
        self._holder_of = holder_of
        self._whole = whole
        self.holders: dict[str, int] = {}
        self.objects: list[list[object]] = []

    def persistent_id(self, obj: Any) -> Any:
        whole = self._whole
        if whole is not None and obj is whole[0]:
            holder: str | None = whole[1]
        else:
            holder = self._holder_of(obj)
        if holder is None:
            return None
        at = self.holders.get(holder)
        if at is None:
            at = self.holders[holder] = len(self.objects)
            self.objects.append([])
        part = self.objects[at]
        part.append(obj)
        return (at, len(part) - 1)


class _Found(Exception):
    def __init__(self, record: object) -> None:
        self.record = record


class _Finder(pickle.Pickler):
    """Pickles nothing: raises :class:`_Found` at the first object with a keyholder."""

    def __init__(self, holder_of: Callable[[object], str | None]) -> None:
        super().__init__(io.BytesIO(), _PROTOCOL)
        self._holder_of = holder_of

    def persistent_id(self, obj: Any) -> Any:
        if self._holder_of(obj) is not None:
            raise _Found(obj)
        return None


class _Joiner(pickle.Unpickler):
    """Unpickles the frame with each reference replaced by its opened record."""

    def __init__(self, file: io.BytesIO, parts: list[list[object] | None]) -> None:
        super().__init__(file)
        self._parts = parts

    def persistent_load(self, pid: Any) -> object:
        at, index = pid
        part = self._parts[at]
        return _WITHHELD if part is None else part[index]


def _pruned(items: list[Any]) -> list[Any]:
    """``items`` without withheld records, also those of the lists it holds (the lake collect's
    handed batches: a list of lists of records)."""
    return [_pruned(x) if isinstance(x, list) else x for x in items if x is not _WITHHELD]


def _prune(state: Any) -> Any:
    """``state`` without the records of discarded parts: dropped from a list (or a list field
    of a dataclass, and the lists they hold); a state that is itself withheld resumes as
    ``None``."""
    if state is _WITHHELD:
        return None
    if isinstance(state, list):
        return _pruned(state)
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        changes = {
            f.name: _pruned(value)
            for f in dataclasses.fields(state)
            if isinstance(value := getattr(state, f.name), list)
        }
        return dataclasses.replace(state, **changes) if changes else state
    return state


class StateSeal:
    """Seals and opens steps' recovery states with the tenants' ``snapshot`` data keys."""

    __slots__ = ("_clock", "_holder_of", "sealer")

    def __init__(
        self,
        sealer: Sealer,
        holder_of: Callable[[object], str | None] = snapshot_holder,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sealer = sealer
        self._holder_of = holder_of
        self._clock = clock

    def seal(self, step: str, key: str, state: Any, whole: str | None = None) -> SealedState:
        """``state`` of ``step`` under state ``key``, each keyholder's records sealed; with
        ``whole``, the whole state is that tenant's one part."""
        buffer = io.BytesIO()
        splitter = _Splitter(buffer, self._holder_of, None if whole is None else (state, whole))
        splitter.dump(state)
        now = self._clock()
        parts = []
        for holder, at in splitter.holders.items():
            plain = pickle.dumps(splitter.objects[at], _PROTOCOL)
            # None when the holder's keys are destroyed: withheld, never kept in the clear.
            sealed = self.sealer.seal(holder, SCOPE_SNAPSHOT, step, key, now, plain)
            parts.append(SealedPart(holder, sealed))
        return SealedState(step, key, buffer.getvalue(), tuple(parts))

    def first_record(self, state: Any) -> object | None:
        """The first object of ``state`` with a keyholder (what tells a state resumed from a
        plain snapshot its key), ``None`` if it holds none (nothing in it to seal)."""
        try:
            _Finder(self._holder_of).dump(state)
        except _Found as found:
            return found.record
        return None

    def open(self, step: str, resume: Any) -> Any:
        """The state of a resume snapshot: ``resume`` itself if it is not sealed (a snapshot of
        before, or of a run without sealing), else opened with its parts' keys; the records of a
        shredded tenant are left out (see the module docstring)."""
        if not isinstance(resume, SealedState):
            return resume
        return open_sealed(self.sealer, step, resume)


def open_sealed(
    sealer: Sealer | None, step: str, sealed: SealedState, key: str | None = None
) -> Any:
    """A :class:`SealedState` opened (:meth:`StateSeal.open`) for ``step`` (and state ``key``,
    when the caller knows it); ``sealer`` ``None`` (sealing switched off) cannot open one:
    :class:`~core.errors.ConfigError`."""
    if sealer is None:
        msg = (
            f"the recovery snapshot of step {step!r} is sealed, and seal.enabled is off: "
            "turn sealing back on to resume it"
        )
        raise ConfigError(msg)
    if sealed.step != step or (key is not None and sealed.key != key):
        msg = (
            f"a recovery snapshot of step {sealed.step!r}, key {sealed.key!r}, offered to step "
            f"{step!r}, key {key!r}"
        )
        raise DecryptError(msg)
    opened: list[list[object] | None] = []
    for part in sealed.parts:
        objects: list[object] | None = None
        if part.sealed is not None:
            try:
                plain = sealer.open(part.holder, SCOPE_SNAPSHOT, step, sealed.key, part.sealed)
            except KeysDestroyed:
                pass
            else:
                objects = pickle.loads(plain)  # our own bytes: sealed, so authenticated
        if objects is None:
            log.warning(
                "recovery state of an offboarded tenant discarded",
                extra={"op": step, "tenant_id": part.holder, "error_code": SNAPSHOT_SHREDDED},
            )
        opened.append(objects)
    state = _Joiner(io.BytesIO(sealed.frame), opened).load()
    withheld = [p for p, objects in zip(sealed.parts, opened, strict=True) if objects is None]
    if not withheld:
        return state
    pruned = _prune(state)
    discarded = _count_withheld(state) if pruned is not None else 1
    SNAPSHOT_WITHHELD.labels(step=step, reason=SNAPSHOT_SHREDDED).inc(discarded)
    return pruned


def _withheld_in(items: list[Any]) -> int:
    return sum(
        1 if x is _WITHHELD else _withheld_in(x) if isinstance(x, list) else 0 for x in items
    )


def _count_withheld(state: Any) -> int:
    """How many records :func:`_prune` leaves out of ``state``."""
    if isinstance(state, list):
        return _withheld_in(state)
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return sum(
            _withheld_in(value)
            for f in dataclasses.fields(state)
            if isinstance(value := getattr(state, f.name), list)
        )
    return 0
