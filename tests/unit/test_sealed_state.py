"""Sealed recovery snapshots (tenancy/sealed_state.py, operators/sealed_state.py, sinks/serving.py):
each tenant's records sealed under its own keys, bound to step and state key; plain snapshots
of before still resume; a shredded tenant's part is discarded and counted, the others resume.

The key store is the honest in-memory one of tests/memory_keys.py (the real cipher and associated
data); tests/integration/test_sealed_recovery.py runs the flow on the real key store.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bytewax.operators import StatefulBatchLogic
from prometheus_client import REGISTRY

from core.envelope import DecryptError
from core.errors import ConfigError
from core.reasons import ReasonCode
from core.records import (
    Decoded,
    DeconflictionResult,
    DriftVerdict,
    Provenance,
    Quarantined,
    RawRecord,
    Rejected,
    ScoreChange,
    Signal,
    Tagged,
    input_hash,
)
from core.sealing import SNAPSHOT_SHREDDED, UNREGISTERED_KEYHOLDER, snapshot_holder
from operators.collect import CollectLogic, CollectState
from operators.sealed_state import SealedLogic, sealed_builder
from sinks.serving import SealedSink
from tenancy.sealed_state import SealedPart, SealedState, StateSeal
from tenancy.sealing import Sealer
from tests.memory_keys import MemoryKeys

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOPIC = "coherence.signals.v1"
STEP = "lake_signals_batch.stateful"


def _secret(tenant: str, i: int) -> str:
    return f"sel-secret-{tenant}-{i:04d}"


def _payload(tenant: str, i: int) -> bytes:
    return b"\x00\x00\x00\x00\x07" + f"{tenant}|{i}|{_secret(tenant, i)}|payload".encode()


def _tagged(tenant: str, i: int) -> Tagged:
    payload = _payload(tenant, i)
    raw = RawRecord(TOPIC, 0, i, tenant.encode(), payload, int(T0.timestamp() * 1000) + i)
    signal = Signal(
        tenant, f"sig-{i}", "latency", 0.5, None, "src", T0 + timedelta(seconds=i),
        (_secret(tenant, i), f"{_secret(tenant, i)}-b"),
    )  # fmt: skip
    decoded = Decoded(
        signal, Provenance(TOPIC, 0, i, 2, input_hash(payload)), raw.timestamp_ms, raw
    )
    return Tagged(decoded, None, "p" * 64, f"prov-{i}")


def _reject(tenant: str | None, i: int, reason: ReasonCode = ReasonCode.SOURCE_NOT_ALLOWED) -> Any:
    payload = _payload(tenant or "none", i)
    raw = RawRecord(TOPIC, 1, i, None, payload, int(T0.timestamp() * 1000) + i)
    return Rejected(reason, "why", raw, "validate" if tenant else "decode", tenant, 1)


def _score(tenant: str, i: int) -> ScoreChange:
    return ScoreChange(
        tenant, 0.5, "WARN", T0, i, 1.0, f"prov-{i}", Provenance(TOPIC, 0, i, 2, "h")
    )


def _mixed() -> CollectState[Any]:
    """A lake lane's open batch with records of two tenants, an unverified one, a reject that
    did not decode and a score change, in this order."""
    items: list[Any] = [
        _tagged("tenant-a", 1),
        _reject("tenant-b", 2),
        _score("tenant-a", 3),
        _tagged("tenant-b", 4),
        _reject(None, 5),
        _reject("made-up", 6, ReasonCode.TENANT_UNKNOWN),
        _tagged("tenant-a", 7),
    ]
    return CollectState(items, T0)


def _secrets(state: CollectState[Any]) -> list[bytes]:
    """The selectors and payload bytes of the records that carry a tenant."""
    out: list[bytes] = []
    for item in state.items:
        if isinstance(item, Tagged):
            out += [s.encode() for s in item.decoded.signal.selectors]
            assert item.decoded.raw is not None and item.decoded.raw.value is not None
            out.append(item.decoded.raw.value)
        elif isinstance(item, Rejected) and item.tenant_id:
            assert item.record.value is not None
            out += [item.record.value, item.record.value[5:]]
    return out


def _withheld(step: str) -> float:
    value = REGISTRY.get_sample_value(
        "igflow_snapshot_withheld_total", {"step": step, "reason": SNAPSHOT_SHREDDED}
    )
    return value or 0.0


def test_a_state_of_several_tenants_seals_each_part_under_its_own_keys() -> None:
    seal = StateSeal(Sealer(MemoryKeys()))
    state = _mixed()
    sealed = seal.seal(STEP, "lane-0", state)
    assert [p.holder for p in sealed.parts] == ["tenant-a", "tenant-b", UNREGISTERED_KEYHOLDER]
    raw = pickle.dumps(sealed)  # what Bytewax writes to its SQLite file
    for secret in _secrets(state):
        assert secret not in raw
    # The reject that did not decode has no tenant: kept as read, as the quarantine keeps it.
    assert _payload("none", 5) in raw
    assert seal.open(STEP, pickle.loads(raw)) == state


def test_the_whole_state_of_a_tenant_keyed_step_is_its_tenant_s() -> None:
    seal = StateSeal(Sealer(MemoryKeys()))
    state = {"open": {_secret("tenant-a", 1), _secret("tenant-a", 2)}, "count": 2}
    sealed = seal.seal("psi.deconflict", "tenant-a", state, whole="tenant-a")
    assert [p.holder for p in sealed.parts] == ["tenant-a"]
    assert b"sel-secret" not in pickle.dumps(sealed)
    assert seal.open("psi.deconflict", sealed) == state


def test_a_part_does_not_open_for_another_tenant_step_key_or_key_store() -> None:
    keys = MemoryKeys()
    seal = StateSeal(Sealer(keys))
    sealed = seal.seal(STEP, "lane-0", _mixed())
    a, b, u = sealed.parts
    swapped = SealedState(
        sealed.step,
        sealed.key,
        sealed.frame,
        (SealedPart("tenant-a", b.sealed), SealedPart("tenant-b", a.sealed), u),
    )
    with pytest.raises(DecryptError):
        seal.open(STEP, swapped)
    other_key = SealedState(sealed.step, "lane-1", sealed.frame, sealed.parts)
    with pytest.raises(DecryptError):
        seal.open(STEP, other_key)
    with pytest.raises(DecryptError):
        seal.open("lake_quarantine_batch.stateful", sealed)
    renamed = SealedState("lake_quarantine_batch.stateful", sealed.key, sealed.frame, sealed.parts)
    with pytest.raises(DecryptError):
        seal.open("lake_quarantine_batch.stateful", renamed)
    with pytest.raises(DecryptError):  # another key store: tenant-a's key there is another one
        other = StateSeal(Sealer(MemoryKeys()))
        other.seal(STEP, "lane-0", _mixed())
        other.open(STEP, sealed)


def test_a_plain_snapshot_of_before_still_resumes() -> None:
    seal = StateSeal(Sealer(MemoryKeys()))
    plain = _mixed()
    assert seal.open(STEP, plain) is plain
    built: list[Any] = []

    def builder(resume: Any) -> CollectLogic[Any]:
        built.append(resume)
        return CollectLogic(resume or CollectState(), timedelta(seconds=5), 100, lambda: T0)

    logic = sealed_builder(builder, seal, STEP, snapshot_holder)(plain)  # type: ignore[arg-type]
    assert built == [plain]
    assert isinstance(logic, SealedLogic)
    # Its next snapshot is sealed, even before any item: its key from its first record.
    snap = logic.snapshot()
    assert isinstance(snap, SealedState) and snap.key == "tenant-a"
    raw = pickle.dumps(snap)
    for secret in _secrets(plain):
        assert secret not in raw
    assert seal.open(STEP, snap) == plain


def test_sealing_off_keeps_plain_snapshots_and_refuses_a_sealed_one() -> None:
    def builder(resume: Any) -> CollectLogic[Any]:
        return CollectLogic(resume or CollectState(), timedelta(seconds=5), 100, lambda: T0)

    logic = sealed_builder(builder, None, STEP, lambda _item: "lane-0")(None)
    logic.on_batch([_tagged("tenant-a", 1)])
    assert isinstance(logic.snapshot(), CollectState)
    sealed = StateSeal(Sealer(MemoryKeys())).seal(STEP, "lane-0", _mixed())
    with pytest.raises(ConfigError, match=r"seal\.enabled is off"):
        sealed_builder(builder, None, STEP, lambda _item: "lane-0")(sealed)


def test_the_logic_learns_its_key_and_a_resumed_one_refuses_another_key() -> None:
    seal = StateSeal(Sealer(MemoryKeys()))

    def builder(resume: Any) -> CollectLogic[Any]:
        return CollectLogic(resume or CollectState(), timedelta(seconds=5), 100, lambda: T0)

    build = sealed_builder(builder, seal, STEP, snapshot_holder)  # type: ignore[arg-type]
    logic = build(None)
    logic.on_batch([_tagged("tenant-a", 1), _tagged("tenant-a", 2)])
    snap = logic.snapshot()
    assert isinstance(snap, SealedState) and snap.key == "tenant-a"
    resumed = build(pickle.loads(pickle.dumps(snap)))
    out, discard = resumed.on_eof()
    assert [list(x) for x in out] == [[_tagged("tenant-a", 1), _tagged("tenant-a", 2)]]
    assert discard == StatefulBatchLogic.DISCARD
    with pytest.raises(DecryptError, match="resumed for key"):
        build(snap).on_batch([_tagged("tenant-b", 3)])


def test_a_tenant_offboarded_after_the_snapshot_is_discarded_and_counted() -> None:
    keys = MemoryKeys()
    seal = StateSeal(Sealer(keys))
    state = _mixed()
    sealed = seal.seal(STEP, "lane-0", state)
    keys.offboard("tenant-b")
    before = _withheld(STEP)
    resumed = seal.open(STEP, sealed)
    # tenant-b's records are gone; every other tenant's resumes, in order.
    assert resumed.items == [x for x in state.items if snapshot_holder(x) != "tenant-b"]
    assert resumed.due == state.due
    assert _withheld(STEP) == before + 2


def test_handed_batches_are_sealed_and_an_offboarded_tenant_s_are_left_out() -> None:
    """The lake collect's handed batches (lists of records in the state) are sealed like its
    open batch; a shredded tenant's records leave them, and a batch emptied so is not resent."""
    keys = MemoryKeys()
    seal = StateSeal(Sealer(keys))
    mixed = _mixed().items
    only_b = [x for x in mixed if snapshot_holder(x) == "tenant-b"]
    state = CollectState([_tagged("tenant-a", 9)], T0, [mixed, only_b])
    sealed = seal.seal(STEP, "lane-0", state)
    raw = pickle.dumps(sealed)
    for secret in _secrets(CollectState([*mixed, *only_b])):
        assert secret not in raw
    keys.offboard("tenant-b")
    before = _withheld(STEP)
    resumed = seal.open(STEP, pickle.loads(raw))
    kept = [x for x in mixed if snapshot_holder(x) != "tenant-b"]
    assert resumed.handed == [kept, []]
    assert resumed.items == [_tagged("tenant-a", 9)]
    assert _withheld(STEP) == before + 4
    logic: CollectLogic[Any] = CollectLogic(resumed, timedelta(seconds=5), 100, lambda: T0)
    out, _ = logic.on_eof()
    assert [list(x) for x in out] == [kept, [_tagged("tenant-a", 9)]]


def test_a_tenant_offboarded_before_the_snapshot_is_withheld_never_in_the_clear() -> None:
    keys = MemoryKeys()
    seal = StateSeal(Sealer(keys))
    keys.offboard("tenant-b")
    state = _mixed()
    sealed = seal.seal(STEP, "lane-0", state)
    assert SealedPart("tenant-b", None) in sealed.parts
    raw = pickle.dumps(sealed)
    for secret in _secrets(state):
        assert secret not in raw
    assert b"tenant-b|" not in raw
    before = _withheld(STEP)
    resumed = seal.open(STEP, pickle.loads(raw))
    assert resumed.items == [x for x in state.items if snapshot_holder(x) != "tenant-b"]
    assert _withheld(STEP) == before + 2


def test_a_shredded_tenant_s_whole_state_resumes_empty() -> None:
    keys = MemoryKeys()
    seal = StateSeal(Sealer(keys))
    sealed = seal.seal("drift.check", "tenant-a", {"held": [_tagged("tenant-a", 1)]}, "tenant-a")
    keys.offboard("tenant-a")
    before = _withheld("drift.check")
    assert seal.open("drift.check", sealed) is None
    assert _withheld("drift.check") == before + 1


class _ListPart:
    """A sink partition holding what it was given (a serving partition's snapshot shape)."""

    def __init__(self, resume: list[Any] | None) -> None:
        self.items = list(resume or [])

    def write_batch(self, values: list[Any]) -> None:
        self.items.extend(values)

    def snapshot(self) -> list[Any]:
        return list(self.items)

    def close(self) -> None:
        pass


class _ListSink:
    def __init__(self) -> None:
        self.resumed: list[Any] = []

    def list_parts(self) -> list[str]:
        return ["0"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume: list[Any] | None) -> _ListPart:
        self.resumed.append(resume)
        return _ListPart(resume)


def test_a_serving_partition_s_snapshot_is_sealed_and_resumes() -> None:
    seal = StateSeal(Sealer(MemoryKeys()))
    inner = _ListSink()
    sink = SealedSink(inner, seal)  # type: ignore[arg-type]
    part = sink.build_part("redis", "0", None)
    items = [_tagged("tenant-a", 1), _score("tenant-a", 2), _tagged("tenant-b", 3)]
    part.write_batch(items)
    snap = part.snapshot()
    raw = pickle.dumps(snap)
    assert b"sel-secret" not in raw and b"|payload" not in raw
    sink.build_part("redis", "0", pickle.loads(raw))
    assert inner.resumed[-1] == items
    with pytest.raises(DecryptError):  # bound to its partition
        sink.build_part("redis", "1", SealedState(snap.step, "1", snap.frame, snap.parts))
    # A plain snapshot of before resumes as it is.
    sink.build_part("redis", "0", items)
    assert inner.resumed[-1] == items


def test_every_record_that_carries_a_sensitive_field_has_a_keyholder() -> None:
    """What snapshot_holder must cut out of a frame: every record type that holds selectors or
    the exact Kafka bytes (a new one must be added there, or it would stay in the clear)."""
    tagged = _tagged("tenant-a", 1)
    verdict = DriftVerdict("b" * 32, "tenant-a", "latency", 1, None, None, None, None, None)
    window = DeconflictionResult(
        tenant_id="tenant-a",
        window_start=T0,
        window_end=T0 + timedelta(minutes=5),
        mode="full_intersection",
        partner="partner",
        selectors_sent=2,
        matched=(_secret("tenant-a", 1),),
        count=1,
        reason=None,
        signals=2,
        late=0,
        selectors_rejected=0,
        first_offset=1,
        last_offset=2,
        provenance_digest="d" * 64,
        provenance_id="p" * 32,
        provenance=Provenance(TOPIC, 0, 2, 2, "h" * 64),
        policy_version="v" * 64,
    )
    assert snapshot_holder(tagged) == "tenant-a"
    assert snapshot_holder(tagged.decoded) == "tenant-a"
    assert snapshot_holder(Quarantined(tagged.decoded, verdict)) == "tenant-a"
    assert snapshot_holder(window) == "tenant-a"
    assert snapshot_holder(_reject("tenant-b", 2)) == "tenant-b"
    assert snapshot_holder(_reject("x", 3, ReasonCode.FIELD_INVALID)) == UNREGISTERED_KEYHOLDER
    assert snapshot_holder(_reject(None, 4)) is None
    assert snapshot_holder(_score("tenant-a", 5)) is None
    sealed = StateSeal(Sealer(MemoryKeys())).seal(
        STEP, "lane-0", [Quarantined(tagged.decoded, verdict), window]
    )
    assert b"sel-secret" not in pickle.dumps(sealed)


class _TenantState(StatefulBatchLogic[Any, Any, Any]):
    """A step keyed by tenant that makes its state on its first item (as psi and drift do)."""

    def __init__(self, resume: list[Any] | None) -> None:
        self.state = resume

    def on_batch(self, values: list[Any]) -> tuple[list[Any], bool]:
        self.state = [*(self.state or []), *values]
        return [], StatefulBatchLogic.RETAIN

    def snapshot(self) -> list[Any]:
        assert self.state is not None, "snapshotted only after its first item"
        return list(self.state)


def test_a_shredded_whole_state_resumes_as_a_key_never_seen() -> None:
    keys = MemoryKeys()
    seal = StateSeal(Sealer(keys))
    build = sealed_builder(_TenantState, seal, "drift.check", snapshot_holder, whole=True)  # type: ignore[arg-type]
    logic = build(None)
    logic.on_batch([_tagged("tenant-a", 1)])
    snap = logic.snapshot()
    keys.offboard("tenant-a")
    resumed = build(snap)
    assert resumed.snapshot() is None  # Bytewax snapshots a resumed key before any item
    assert isinstance(build(None), SealedLogic)
    resumed.on_batch([_tagged("tenant-a", 2)])  # a late record of the tenant: a new state
    assert isinstance(resumed.snapshot(), SealedState)  # sealed: withheld, its keys are gone
