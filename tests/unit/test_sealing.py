"""Sealing at the sinks (core/sealing.py, tenancy/sealing.py): which columns, what they are bound
to, and the analyst's helper that opens them.

The key store here is an honest in-memory one (:class:`MemoryKeys`): the same cipher and the same
associated data as ``tenancy.keys.TenantKeys``, one random data key per (tenant, scope), and
crypto-shredding as deletion. ``tests/integration/test_sealing.py`` runs the same checks on the
real key store and the real stores.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

from core.envelope import DecryptError
from core.reasons import ReasonCode
from core.records import DeconflictionResult, Provenance, RawRecord, Rejected
from core.sealing import (
    DLQ_SEALED_HEADER,
    DLQ_SEALED_ROW_HEADER,
    DLQ_SEALED_TENANT_HEADER,
    SCOPE_DECONFLICTION,
    SCOPE_DLQ,
    SCOPE_QUARANTINE,
    SEALED_COLUMNS,
    SHREDDED_HEADER_VALUE,
    UNREGISTERED_KEYHOLDER,
    element_column,
    is_sealed,
    kafka_row,
    window_row,
)
from core.settings import Settings
from igflow.dlq_reader import Withheld, open_dead_letter
from igflow.lake_reader import open_sealed
from replay.run import original_sealing
from sinks.dlq import dlq_message
from sinks.iceberg import ensure_table
from sinks.lake_tables import DECONFLICTION, QUARANTINE
from tenancy.keys import KeysDestroyed
from tenancy.sealing import Sealer
from tests.memory_keys import MemoryKeys
from tests.unit.test_governance_gate import Checkout

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _payload(tenant: str, i: int) -> bytes:
    return b"\x00\x00\x00\x00\x07" + f"{tenant}|sig-{i}|sel-secret-{tenant}-{i:04d}".encode()


def _reject(tenant: str | None, i: int, stage: str = "validate") -> Rejected:
    raw = RawRecord(
        "coherence.signals.v1",
        i % 3,
        100 + i,
        (tenant or "").encode(),
        _payload(tenant or "none", i),
        int(T0.timestamp() * 1000) + i,
    )
    # A reason given after the registry vouched for the tenant (its own keys seal it).
    return Rejected(
        ReasonCode.SOURCE_NOT_ALLOWED, "source not allowed for the tenant", raw, stage, tenant, 1
    )


def _window(tenant: str, i: int, matched: tuple[str, ...]) -> DeconflictionResult:
    start = T0 + timedelta(minutes=5 * i)
    return DeconflictionResult(
        tenant_id=tenant,
        window_start=start,
        window_end=start + timedelta(minutes=5),
        mode="full_intersection",
        partner="partner",
        selectors_sent=len(matched) + 2,
        matched=matched,
        count=len(matched),
        reason=None,
        signals=4,
        late=0,
        selectors_rejected=0,
        first_offset=i,
        last_offset=i + 3,
        provenance_digest="d" * 64,
        provenance_id="p" * 32,
        provenance=Provenance("coherence.signals.v1", 0, i + 3, 2, "h" * 64),
        policy_version="v" * 64,
    )


def test_a_sensitive_field_without_a_sealed_home_fails_the_governance_check(
    tmp_path: Path,
) -> None:
    """fields.rego is the classification file; the governance check holds it in step with the
    columns the stores seal (core/sealing.py)."""
    repo = Checkout(tmp_path)
    assert repo.check() == []  # selectors are sensitive, and sealed where they land
    carried = {field for columns in SEALED_COLUMNS.values() for field in columns.values()}
    assert "selectors" in carried
    rules = repo.policies / "fields.rego"
    rules.write_text(rules.read_text().replace('"source": "identifier"', '"source": "sensitive"'))
    findings = repo.check()
    assert {f.code for f in findings} == {"FIELD_NOT_SEALED"}
    assert all("'source'" in f.message for f in findings)


def test_quarantine_payloads_of_a_tenant_are_sealed_and_open_with_the_helper() -> None:
    sealer = Sealer(MemoryKeys())
    items = [_reject("tenant-a", 1), _reject("tenant-b", 2), _reject(None, 3, stage="decode")]
    table = QUARANTINE.to_arrow(items, sealer)
    payloads = table.column("payload").to_pylist()
    assert is_sealed(payloads[0]) and is_sealed(payloads[1])
    assert payloads[2] == items[2].record.value  # no tenant, no tenant key: kept as read
    raw = b"".join(p for p in payloads if p is not None)
    assert b"sel-secret-tenant-a" not in raw and b"sel-secret-tenant-b" not in raw
    # The other columns stay queryable, exactly as without sealing.
    plain = QUARANTINE.to_arrow(items)
    assert table.drop_columns(["payload"]) == plain.drop_columns(["payload"])
    # Deterministic: the same rows seal to the same bytes (a replay lands identical files).
    assert QUARANTINE.to_arrow(items, sealer) == table
    opened = open_sealed(table, "quarantine", sealer)
    assert opened.column("payload").to_pylist() == [i.record.value for i in items]


def test_matched_selectors_are_sealed_per_element_and_open_with_the_helper() -> None:
    sealer = Sealer(MemoryKeys())
    items = [_window("tenant-a", 0, ("sel-00002", "sel-00004")), _window("tenant-b", 1, ())]
    table = DECONFLICTION.to_arrow(items, sealer)
    matched = table.column("matched").to_pylist()
    assert len(matched[0]) == 2 and matched[1] == []
    assert all(m.startswith("sealed:") and "sel-0000" not in m for m in matched[0])
    assert table.column("count").to_pylist() == [2, 0]  # the rest stays queryable
    opened = open_sealed(table, "deconfliction", sealer)
    assert opened.column("matched").to_pylist() == [["sel-00002", "sel-00004"], []]


def test_dlq_originals_of_a_tenant_are_sealed_with_a_header_saying_so() -> None:
    keys = MemoryKeys()
    sealer = Sealer(keys)
    reject = _reject("tenant-a", 5)
    msg = dlq_message(reject, sealer)
    assert is_sealed(msg.value) and msg.key == reject.record.key
    headers = dict(msg.headers)
    assert headers[DLQ_SEALED_HEADER] == b"dlq/value"
    raw = reject.record
    where = kafka_row(raw.topic, raw.partition, raw.offset)
    assert msg.value is not None
    assert sealer.open("tenant-a", SCOPE_DLQ, "value", where, msg.value) == raw.value
    # Without a sealer, or without a tenant, the message is the original, as before.
    assert dlq_message(reject).value == raw.value
    assert DLQ_SEALED_HEADER not in dict(dlq_message(reject).headers)
    assert dlq_message(_reject(None, 6, "decode"), sealer).value == _payload("none", 6)
    # Offboarded: withheld, never in the clear.
    keys.offboard("tenant-a")
    shredded = dlq_message(reject, sealer)
    assert shredded.value is None
    assert dict(shredded.headers)[DLQ_SEALED_HEADER] == SHREDDED_HEADER_VALUE.encode()


def test_after_offboarding_sealed_fields_do_not_open_and_new_ones_are_withheld() -> None:
    keys = MemoryKeys()
    sealer = Sealer(keys)
    items = [_reject("tenant-a", 1), _reject("tenant-b", 2)]
    table = QUARANTINE.to_arrow(items, sealer)
    keys.offboard("tenant-a")
    with pytest.raises(KeysDestroyed):
        open_sealed(table, "quarantine", sealer)
    opened = open_sealed(table, "quarantine", sealer, on_error="null")
    assert opened.column("payload").to_pylist() == [None, items[1].record.value]
    later = QUARANTINE.to_arrow(items, sealer).column("payload").to_pylist()
    assert later[0] is None and is_sealed(later[1])


def _corpus() -> tuple[Sealer, list[tuple[str, str, str, str, bytes]]]:
    """Sealed values of two tenants in every sealed place: (tenant, scope, column, row, value)."""
    sealer = Sealer(MemoryKeys())
    sealed: list[tuple[str, str, str, str, bytes]] = []
    for tenant, i in itertools.product(("tenant-a", "tenant-b"), range(6)):
        reject = _reject(tenant, i)
        raw = reject.record
        where = kafka_row(raw.topic, raw.partition, raw.offset)
        for scope, column in ((SCOPE_QUARANTINE, "payload"), (SCOPE_DLQ, "value")):
            value = sealer.seal(tenant, scope, column, where, T0, _payload(tenant, i))
            assert value is not None
            sealed.append((tenant, scope, column, where, value))
        window = window_row(T0 + timedelta(minutes=5 * i))
        for j in range(2):
            column = element_column("matched", j)
            value = sealer.seal(tenant, SCOPE_DECONFLICTION, column, window, T0, b"sel-%d" % j)
            assert value is not None
            sealed.append((tenant, SCOPE_DECONFLICTION, column, window, value))
    return sealer, sealed


def cross_tenant_attempts(
    sealed: list[tuple[str, str, str, str, bytes]],
) -> list[tuple[str, tuple[str, str, str, str, bytes]]]:
    """Every misuse of a sealed value: (kind, (tenant, scope, column, row, value) to open).

    - ``wrong tenant``: opened as another tenant's (same scope, column and row);
    - ``swapped rows``: put in another row of the same tenant, scope and column;
    - ``swapped columns``: put in another column or store of the same tenant and row;
    - ``replayed``: an older value of another record put back in this record's place
      (another row *and* column: what a replayed message or copied file would do).
    """
    tenants = sorted({s[0] for s in sealed})
    places = {(s[1], s[2], s[3]) for s in sealed}
    out = []
    for tenant, scope, column, row, value in sealed:
        for other in tenants:
            if other != tenant:
                out.append(("wrong tenant", (other, scope, column, row, value)))
        for p_scope, p_column, p_row in sorted(places):
            if (p_scope, p_column) == (scope, column) and p_row != row:
                out.append(("swapped rows", (tenant, scope, column, p_row, value)))
            elif p_row == row and (p_scope, p_column) != (scope, column):
                out.append(("swapped columns", (tenant, p_scope, p_column, row, value)))
            elif p_row != row and (p_scope, p_column) != (scope, column):
                out.append(("replayed", (tenant, p_scope, p_column, p_row, value)))
    return out


def test_every_cross_tenant_or_misplaced_key_use_fails() -> None:
    sealer, sealed = _corpus()
    for tenant, scope, column, row, value in sealed:  # each opens in its own place
        assert sealer.open(tenant, scope, column, row, value)
    attempts = cross_tenant_attempts(sealed)
    kinds = {kind for kind, _ in attempts}
    assert kinds == {"wrong tenant", "swapped rows", "swapped columns", "replayed"}
    opened = 0
    for _kind, (tenant, scope, column, row, value) in attempts:
        try:
            sealer.open(tenant, scope, column, row, value)
        except DecryptError:
            continue
        opened += 1
    assert opened == 0, f"{opened} of {len(attempts)} misuses opened"
    assert len(attempts) > 1000


def test_a_record_of_an_unknown_tenant_is_sealed_for_the_unregistered_keyholder() -> None:
    """An unverified tenant id gets no keys of its own (anyone could invent ids by the million);
    its record is still never in the clear."""
    keys = MemoryKeys()
    sealer = Sealer(keys)
    raw = _reject("tenant-nobody", 9).record
    item = Rejected(ReasonCode.TENANT_UNKNOWN, "unknown tenant", raw, "validate", "tenant-nobody")
    table = QUARANTINE.to_arrow([item], sealer)
    (payload,) = table.column("payload").to_pylist()
    where = kafka_row(raw.topic, raw.partition, raw.offset)
    assert sealer.open(UNREGISTERED_KEYHOLDER, SCOPE_QUARANTINE, "payload", where, payload)
    assert open_sealed(table, "quarantine", sealer).column("payload").to_pylist() == [raw.value]
    assert {tenant for tenant, _scope in keys._keys} == {UNREGISTERED_KEYHOLDER}
    msg = dlq_message(item, sealer)
    assert msg.value is not None
    assert sealer.open(UNREGISTERED_KEYHOLDER, SCOPE_DLQ, "value", where, msg.value) == raw.value


def test_a_dead_letter_opens_from_its_own_headers_with_the_dlq_helper() -> None:
    """``open_dead_letter`` opens what ``dlq_message`` sealed (the headers name the binding),
    also a message sealed before those headers existed, and says when it was shredded."""
    keys = MemoryKeys()
    sealer = Sealer(keys)
    reject = _reject("tenant-a", 5, "dedupe")
    msg = dlq_message(reject, sealer)
    headers = dict(msg.headers)
    assert headers[DLQ_SEALED_TENANT_HEADER] == b"tenant-a"
    assert headers[DLQ_SEALED_ROW_HEADER] == kafka_row("coherence.signals.v1", 5 % 3, 105).encode()
    assert open_dead_letter(sealer, msg.key, msg.value, msg.headers) == reject.record.value
    # Sealed before the binding headers: derived from the lane (or key) and source headers.
    legacy = [
        (k, v) for k, v in msg.headers if k not in {DLQ_SEALED_TENANT_HEADER, DLQ_SEALED_ROW_HEADER}
    ]
    assert open_dead_letter(sealer, None, msg.value, legacy) == reject.record.value
    # Never sealed: as is.
    plain = dlq_message(_reject(None, 6, "decode"), sealer)
    assert open_dead_letter(sealer, plain.key, plain.value, plain.headers) == _payload("none", 6)
    # Headers edited to point elsewhere: does not open.
    moved = [(k, b"tenant-b" if k == DLQ_SEALED_TENANT_HEADER else v) for k, v in msg.headers]
    with pytest.raises((DecryptError, KeysDestroyed)):
        open_dead_letter(sealer, msg.key, msg.value, moved)
    # Offboarded: the old one does not open, a new one was withheld; both say so.
    keys.offboard("tenant-a")
    with pytest.raises(KeysDestroyed):
        open_dead_letter(sealer, msg.key, msg.value, msg.headers)
    withheld = dlq_message(reject, sealer)
    with pytest.raises(Withheld, match="tenant-a"):
        open_dead_letter(sealer, withheld.key, withheld.value, withheld.headers)


def test_a_replay_seals_as_the_original_landed(lake_settings: Settings, catalog: Catalog) -> None:
    """Sealing is on by default now: a lake landed before (unsealed) still replays
    byte-identical, because the replay follows the original's sealing, not the setting."""
    sealer = Sealer(MemoryKeys())
    for ns, with_sealer in (("was_plain", None), ("was_sealed", sealer)):
        table = ensure_table(catalog, ns, QUARANTINE)
        table.append(QUARANTINE.to_arrow([_reject("tenant-a", 1), _reject(None, 2)], with_sealer))
    assert original_sealing(lake_settings.with_changes("lake", namespace="was_plain")) is False
    assert original_sealing(lake_settings.with_changes("lake", namespace="was_sealed")) is True
    ensure_table(catalog, "no_rows", QUARANTINE)
    assert original_sealing(lake_settings.with_changes("lake", namespace="no_rows")) is None
    windows = ensure_table(catalog, "no_rows", DECONFLICTION)
    windows.append(DECONFLICTION.to_arrow([_window("tenant-a", 0, ("sel-1",))], sealer))
    assert original_sealing(lake_settings.with_changes("lake", namespace="no_rows")) is True


def test_a_tenant_id_the_registry_did_not_vouch_for_gets_no_keys_of_its_own() -> None:
    """``FIELD_INVALID`` and ``TS_OUT_OF_RANGE`` are decided before the tenant check: their
    tenant id is a claim (hostile: NUL, megabytes), sealed for the unregistered keyholder. A row
    an older release sealed for the claimed tenant still opens (and releases)."""
    keys = MemoryKeys()
    sealer = Sealer(keys)
    for reason in (ReasonCode.FIELD_INVALID, ReasonCode.TS_OUT_OF_RANGE):
        raw = _reject("tenant-a", 3).record
        item = Rejected(reason, "x", raw, "validate", "ten\x00ant" + "x" * 10_000, 1)
        msg = dlq_message(item, sealer)
        assert dict(msg.headers)[DLQ_SEALED_TENANT_HEADER] == UNREGISTERED_KEYHOLDER.encode()
        assert open_dead_letter(sealer, msg.key, msg.value, msg.headers) == raw.value
        table = QUARANTINE.to_arrow([item], sealer)
        assert open_sealed(table, "quarantine", sealer)["payload"].to_pylist() == [raw.value]
    assert {tenant for tenant, _scope in keys._keys} == {UNREGISTERED_KEYHOLDER}
    # As the first release sealed a FIELD_INVALID row: for its claimed tenant.
    raw = _reject("tenant-a", 4).record
    where = kafka_row(raw.topic, raw.partition, raw.offset)
    old = sealer.seal("tenant-a", SCOPE_QUARANTINE, "payload", where, T0, raw.value or b"")
    item = Rejected(ReasonCode.FIELD_INVALID, "x", raw, "validate", "tenant-a", 1)
    plain = QUARANTINE.to_arrow([item])
    i = plain.schema.get_field_index("payload")
    field = plain.schema.field(i)
    table = plain.set_column(i, field, pa.array([old], field.type))
    assert open_sealed(table, "quarantine", sealer)["payload"].to_pylist() == [raw.value]
