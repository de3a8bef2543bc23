"""A stateful step whose recovery snapshot is sealed per tenant (:mod:`tenancy.sealed_state`).

:func:`sealed_builder` wraps a step's ``StatefulBatchLogic`` builder: the resume state is opened
before the step sees it (a plain one, from before sealing, passes through), and every
``snapshot()`` is sealed. The step itself, its state type and its step id are unchanged; with
no :class:`~tenancy.sealed_state.StateSeal` (``seal.enabled`` off) the builder is the step's own
and snapshots stay plain (a sealed one then refuses to resume: it needs the keys).

Bytewax gives a builder the resume state but not the state key, so the wrapper learns the key
from the first item it sees (``key_of``, the function the stream was keyed by), or from the
sealed snapshot it resumed; a resumed key whose items say otherwise was tampered with
(:class:`~core.envelope.DecryptError`). A state resumed from a plain snapshot (the upgrade) and
snapshotted again before any item (a timer) takes its key from its first record
(:meth:`~tenancy.sealed_state.StateSeal.first_record`); one that holds no record holds nothing
to seal and stays plain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Generic, TypeVar

from bytewax.operators import StatefulBatchLogic

from core.envelope import DecryptError
from tenancy.sealed_state import SealedState, StateSeal, open_sealed

__all__ = ["SealedLogic", "sealed_builder"]

V = TypeVar("V")
W = TypeVar("W")


class SealedLogic(StatefulBatchLogic[V, W, Any], Generic[V, W]):
    """Delegates to ``inner``; seals its snapshots under ``step`` and the learnt state key.

    ``whole``: the state is the key's tenant's as a whole (a step keyed by tenant whose state
    is not a list of records), else each record's keyholder seals it."""

    def __init__(
        self,
        inner: StatefulBatchLogic[V, W, Any],
        seal: StateSeal,
        step: str,
        key_of: Callable[[V], str],
        key: str | None,
        *,
        whole: bool,
        shredded: bool = False,
    ) -> None:
        self.inner = inner
        self.seal = seal
        self.step = step
        self.key_of = key_of
        self.key = key
        self.whole = whole
        #: Whether the key was learnt (a new state) or checked (a resumed one) from an item.
        self._checked = False
        #: Resumed empty from a shredded tenant's whole state, no item since: the step has no
        #: state to snapshot (psi and drift make theirs on the first item).
        self._shredded = shredded

    def _learn(self, values: list[V]) -> None:
        self._checked = True
        said = self.key_of(values[0])
        if self.key is None:
            self.key = said
        elif said != self.key:
            msg = f"a sealed recovery state of key {self.key!r} resumed for key {said!r}"
            raise DecryptError(msg)

    def on_batch(self, values: list[V]) -> tuple[Iterable[W], bool]:
        if not self._checked and values:
            self._learn(values)
        self._shredded = False
        return self.inner.on_batch(values)

    def on_notify(self) -> tuple[Iterable[W], bool]:
        return self.inner.on_notify()

    def on_eof(self) -> tuple[Iterable[W], bool]:
        return self.inner.on_eof()

    def notify_at(self) -> datetime | None:
        return self.inner.notify_at()

    def snapshot(self) -> Any:
        if self._shredded:
            return None  # resumes as a key never seen
        state = self.inner.snapshot()
        if self.key is None:  # resumed from a plain snapshot, no item since
            record = self.seal.first_record(state)
            if record is None:
                return state
            self.key = self.key_of(record)  # type: ignore[arg-type]
        return self.seal.seal(self.step, self.key, state, self.key if self.whole else None)


def sealed_builder(
    builder: Callable[[Any], StatefulBatchLogic[V, W, Any]],
    seal: StateSeal | None,
    step: str,
    key_of: Callable[[V], str] | None,
    *,
    whole: bool = False,
) -> Callable[[Any], StatefulBatchLogic[V, W, Any]]:
    """``builder`` with its resume state opened and its snapshots sealed (see the module
    docstring); ``builder``'s own logic when ``seal`` is ``None``, though a sealed resume state
    is still refused with a clear error rather than handed to a step that cannot read it.
    ``key_of`` (the function the stream is keyed by) is needed with a ``seal``."""
    if seal is not None and key_of is None:
        msg = f"step {step!r}: a sealed state needs key_of"
        raise ValueError(msg)

    def build(resume: Any) -> StatefulBatchLogic[V, W, Any]:
        key: str | None = None
        shredded = False
        if isinstance(resume, SealedState):
            key = resume.key
            resume = open_sealed(None if seal is None else seal.sealer, step, resume)
            shredded = resume is None
        inner = builder(resume)
        if seal is None or key_of is None:
            return inner
        return SealedLogic(inner, seal, step, key_of, key, whole=whole, shredded=shredded)

    return build
