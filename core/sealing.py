"""What the stores seal: the sensitive fields' homes, and how a sealed value is told apart.

``policies/fields.rego`` classifies every field of the signal contract (the classification file:
``igflow governance check`` keeps it in step with the Avro contracts); its ``sensitive`` fields
(the PSI ``selectors``) are sealed per tenant wherever a store holds them. They reach the stores
in these places only (:data:`SEALED_COLUMNS`), each a (scope, column) of the tenant's data keys:

- ``lake.deconfliction`` / ``matched``: the matched selectors, each element sealed on its own
  (the column stays ``list<string>``; an element is :data:`SEALED_TEXT_PREFIX` + base64);
- ``lake.quarantine`` / ``payload``: the exact Kafka value of a held or rejected record that
  carries a tenant (it holds every field of the record, selectors included);
- ``dlq`` / ``value``: the original value of a reject that carries a tenant, and a serving
  store's dead letter (the item as JSON) — the message gets the header ``igflow.sealed``.

Bytewax's recovery snapshots (``--recovery-dir``) hold records not yet landed; the steps that
keep them seal each tenant's part under :data:`SCOPE_SNAPSHOT` (:mod:`tenancy.sealed_state`,
the column the step, the row the state key; :func:`snapshot_holder` says whose a record is).

Everything else stays queryable in the clear (tenant, ids, type, value, times, reason codes,
provenance). Redis, the graph and Postgres hold none of the sensitive fields (the sinks write
scores, signal ids and provenance only): ``tests/integration/test_sealing.py`` scans their raw
bytes for known plaintext. A record that carries no tenant (it did not decode) has no tenant
key to seal it with and is kept as read; one whose tenant the registry does not know is sealed
with the keys of :data:`UNREGISTERED_KEYHOLDER` (:func:`keyholder`).

The row identity a sealed value is bound to (:func:`kafka_row`, :func:`window_row`) is derived
from the record, never random, so a replay seals alike and lands byte-identical files.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from core.records import Decoded, DeconflictionResult, Quarantined, Rejected, Tagged

__all__ = [
    "DLQ_SEALED_HEADER",
    "DLQ_SEALED_ROW_HEADER",
    "DLQ_SEALED_TENANT_HEADER",
    "SCOPE_DECONFLICTION",
    "SCOPE_DLQ",
    "SCOPE_QUARANTINE",
    "SCOPE_SNAPSHOT",
    "SEALED_COLUMNS",
    "SEALED_MAGIC",
    "SEALED_TEXT_PREFIX",
    "SHREDDED_HEADER_VALUE",
    "SNAPSHOT_SHREDDED",
    "UNREGISTERED_KEYHOLDER",
    "UNVERIFIED_TENANT_REASONS",
    "element_column",
    "is_sealed",
    "is_sealed_text",
    "kafka_row",
    "keyholder",
    "legacy_keyholder",
    "snapshot_holder",
    "window_row",
]

SCOPE_DECONFLICTION = "lake.deconfliction"
SCOPE_QUARANTINE = "lake.quarantine"
SCOPE_DLQ = "dlq"
#: A recovery snapshot's state (not a store column: the flow's own state, not yet landed).
SCOPE_SNAPSHOT = "snapshot"

#: scope -> {column: the sensitive field (policies/fields.rego) or record it carries}.
SEALED_COLUMNS: Mapping[str, Mapping[str, str]] = {
    SCOPE_DECONFLICTION: {"matched": "selectors"},
    SCOPE_QUARANTINE: {"payload": "record"},
    SCOPE_DLQ: {"value": "record"},
}

#: The first bytes of every field ciphertext (:mod:`core.envelope`): no Confluent-framed Avro
#: value (magic byte 0) and no JSON document starts so.
SEALED_MAGIC = b"igf1"
#: A sealed element of a text column: this prefix, then the ciphertext in standard base64.
SEALED_TEXT_PREFIX = "sealed:"
#: ``igflow.sealed`` on a DLQ message: ``<scope>/<column>`` when its value is sealed,
#: :data:`SHREDDED_HEADER_VALUE` when it was withheld because the tenant's keys are destroyed.
DLQ_SEALED_HEADER = "igflow.sealed"
#: Beside it, what the value is bound to (not secret; the associated data holds them anyway, so
#: an edited header only makes the value not open): the keyholder and the row identity.
DLQ_SEALED_TENANT_HEADER = "igflow.sealed.tenant"
DLQ_SEALED_ROW_HEADER = "igflow.sealed.row"
SHREDDED_HEADER_VALUE = "shredded"
#: Why a recovery snapshot's part was discarded on resume (the label of
#: ``igflow_snapshot_withheld_total``): sealed for a tenant since offboarded, its keys destroyed.
#: A label of its own, not a :class:`~core.reasons.ReasonCode`: no record is rejected (the
#: tenant's data is shredded by design), and the enum's length seeds the lake's golden files.
SNAPSHOT_SHREDDED = "TENANT_SHREDDED"


#: Whose keys seal a record rejected as ``TENANT_UNKNOWN``: its tenant id is an unverified
#: claim, and making keys for every id a producer invents would let anyone grow the key tables.
UNREGISTERED_KEYHOLDER = "igflow-unregistered"


#: Reasons given before the tenant is checked against the registry (``core/signal_rules.py``:
#: the field rules, then event time, then the tenant): the record's tenant id is an unverified
#: claim (it may hold NUL or be 10 MB long), so it gets no keys of its own either.
UNVERIFIED_TENANT_REASONS = frozenset({"FIELD_INVALID", "TS_OUT_OF_RANGE", "TENANT_UNKNOWN"})


def keyholder(tenant_id: str | None, reason: str | None = None) -> str | None:
    """The tenant whose keys seal a record's fields: its own, :data:`UNREGISTERED_KEYHOLDER`
    when the registry has not vouched for it (:data:`UNVERIFIED_TENANT_REASONS`), ``None`` when
    it carries none (it did not decode: kept as read)."""
    if not tenant_id:
        return None
    if reason in UNVERIFIED_TENANT_REASONS:
        return UNREGISTERED_KEYHOLDER
    return tenant_id


def legacy_keyholder(tenant_id: str | None, reason: str | None = None) -> str | None:
    """Who sealed a ``FIELD_INVALID`` or ``TS_OUT_OF_RANGE`` record before
    :data:`UNVERIFIED_TENANT_REASONS` existed (its claimed tenant); ``None`` when that is no
    other than :func:`keyholder`'s. Readers try it when the value does not open for
    :func:`keyholder` (the associated data binds the tenant: it opens for one at most)."""
    holder = keyholder(tenant_id, reason)
    if holder != UNREGISTERED_KEYHOLDER or reason == "TENANT_UNKNOWN" or not tenant_id:
        return None
    if "\x00" in tenant_id:  # never sealed for it: the key tables cannot hold such a name
        return None
    return tenant_id


def is_sealed(value: bytes | None) -> bool:
    """Whether ``value`` is a field ciphertext (else a plaintext kept as read)."""
    return value is not None and value.startswith(SEALED_MAGIC)


def is_sealed_text(value: str | None) -> bool:
    """Whether a text element is sealed (:data:`SEALED_TEXT_PREFIX`)."""
    return value is not None and value.startswith(SEALED_TEXT_PREFIX)


def kafka_row(topic: str, partition: int, offset: int) -> str:
    """The row identity of a record's sealed fields: its Kafka coordinates."""
    return f"{topic}/{partition}/{offset}"


def window_row(window_start: datetime) -> str:
    """The row identity of a deconfliction row (one per tenant and window): the window."""
    return window_start.isoformat()


def element_column(column: str, index: int) -> str:
    """The column name bound into element ``index`` of a sealed list, so elements cannot be
    swapped."""
    return f"{column}[{index}]"


def snapshot_holder(item: object) -> str | None:
    """Whose keys seal ``item`` in a recovery snapshot: the keyholder of a record that carries a
    sensitive field or the exact Kafka bytes (a decoded, tagged or drift-held signal, a reject,
    a deconfliction row), ``None`` for anything else (a score change holds none; a reject that
    did not decode has no tenant: kept as read, as the quarantine table keeps it)."""
    if isinstance(item, Tagged):
        return item.decoded.signal.tenant_id
    if isinstance(item, Decoded):
        return item.signal.tenant_id
    if isinstance(item, Quarantined):
        return item.decoded.signal.tenant_id
    if isinstance(item, Rejected):
        return keyholder(item.tenant_id, item.reason.value)
    if isinstance(item, DeconflictionResult):
        return item.tenant_id
    return None
