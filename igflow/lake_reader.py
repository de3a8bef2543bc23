"""The analyst's helper: the sealed columns of a lake table, opened with the tenants' keys.

With ``seal.enabled`` the lake holds the sensitive fields sealed (:mod:`core.sealing`):
``coherence.quarantine.payload`` and each element of ``coherence.deconfliction.matched``.
Everything else reads as always; these columns need the tenant's data keys::

    from pyiceberg.catalog import load_catalog
    from core.settings import Settings
    from igflow.lake_reader import open_sealed
    from tenancy.sealing import sealer_of

    settings = Settings.load()
    rows = load_catalog("igflow").load_table("coherence.deconfliction").scan().to_arrow()
    opened = open_sealed(rows, "deconfliction", sealer_of(settings))

Whoever runs it needs the key store (Postgres) and the KMS of ``settings``: holding a tenant's
key is what reading its sealed columns takes. A value that was never sealed (written with
sealing off, or a record that carries no tenant) is returned as is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import pyarrow as pa

from core.errors import IgflowError
from core.sealing import (
    SCOPE_DECONFLICTION,
    SCOPE_QUARANTINE,
    element_column,
    kafka_row,
    keyholder,
    legacy_keyholder,
    window_row,
)
from tenancy.sealing import Sealer

__all__ = ["SEALED_TABLES", "open_sealed"]

#: Lake table -> the sealed column it has.
SEALED_TABLES = {"quarantine": "payload", "deconfliction": "matched"}

OnError = Literal["raise", "null"]


def _open_payload(sealer: Sealer, row: dict[str, Any]) -> Any:
    payload = row["payload"]
    tenant, reason = row["tenant_id"], row.get("reason")
    holder = keyholder(tenant, reason)
    if payload is None or holder is None:
        return payload
    where = kafka_row(row["kafka_topic"], row["kafka_partition"], row["kafka_offset"])
    holders = (holder, legacy_keyholder(tenant, reason))
    return sealer.open_as(holders, SCOPE_QUARANTINE, "payload", where, payload)


def _open_matched(sealer: Sealer, row: dict[str, Any]) -> Any:
    where = window_row(row["window_start"])
    return [
        sealer.open_text(
            row["tenant_id"], SCOPE_DECONFLICTION, element_column("matched", i), where, text
        )
        for i, text in enumerate(row["matched"] or [])
    ]


_OPENERS: dict[str, Callable[[Sealer, dict[str, Any]], Any]] = {
    "quarantine": _open_payload,
    "deconfliction": _open_matched,
}


def open_sealed(
    table: pa.Table, table_name: str, sealer: Sealer, *, on_error: OnError = "raise"
) -> pa.Table:
    """``table`` (rows of lake table ``table_name``: ``quarantine`` or ``deconfliction``) with
    its sealed column opened. The row-identity columns must be there (``tenant_id``, ``reason`` and
    the Kafka coordinates, or ``window_start``). ``on_error="null"``: a value that does not open
    (an offboarded tenant's, a tampered one) becomes null instead of raising
    :class:`~core.envelope.DecryptError` or :class:`~tenancy.keys.KeysDestroyed`."""
    if table_name not in _OPENERS:
        msg = f"lake table {table_name!r} has no sealed column (sealed: {sorted(_OPENERS)})"
        raise ValueError(msg)
    column = SEALED_TABLES[table_name]
    opener = _OPENERS[table_name]
    values: list[Any] = []
    for row in table.to_pylist():
        try:
            values.append(opener(sealer, row))
        except IgflowError:
            if on_error == "raise":
                raise
            values.append(None)
    index = table.schema.get_field_index(column)
    field = table.schema.field(index)
    return table.set_column(index, field, pa.array(values, type=field.type))
