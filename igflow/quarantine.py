"""Quarantined drift batches: list them per tenant, release or discard them, with an audit trail.

The flow writes every held record to ``coherence.quarantine`` (one row per record, with its
batch id, the batch's statistics and the exact Kafka key and value). A decision on a batch is a
row in ``coherence.quarantine_audit``; a batch's status is its latest decision (``open`` when it
has none).

Release re-sends the batch's records, byte for byte, to the signal topic with a release marker
(:mod:`core.release`), so the drift step lets them pass and they land like any record, with
provenance pointing at their new offsets. It is safe to repeat: if a release stops between the
produce and the audit row, running it again re-sends the same records, and the dedupe step drops
the copies (same idempotency key) within its TTL.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Producer

from core.errors import IgflowError
from core.partitioning import JAVA_PARTITIONER
from core.release import RELEASE_HEADER, sign
from core.sealing import SCOPE_QUARANTINE, is_sealed, kafka_row, keyholder, legacy_keyholder
from core.settings import Settings
from sinks.iceberg import ensure_table
from sinks.lake_tables import QUARANTINE, QUARANTINE_AUDIT
from tenancy.sealing import sealer_of

__all__ = [
    "BatchSummary",
    "QuarantineError",
    "decide",
    "list_batches",
    "rejects_summary",
    "resend_rows",
]

_STAGE = "drift"
_BATCH_ID = re.compile(r"[0-9a-f]{32}")


class QuarantineError(IgflowError):
    """A quarantine command cannot do what was asked (unknown batch, already decided)."""


@dataclasses.dataclass(frozen=True, slots=True)
class BatchSummary:
    """One quarantined batch."""

    batch_id: str
    tenant_id: str
    reason: str
    #: The signal types of the batch's records, distinct and sorted: one for a drift batch,
    #: any number for a ``SCHEMA_DRIFT`` batch (it holds all of a tenant's schema-drifted types).
    types: tuple[str, ...]
    rows: int
    first_ts: datetime | None
    last_ts: datetime | None
    psi: float | None
    ks: float | None
    status: str
    decided_at: datetime | None

    @property
    def type(self) -> str:
        """The batch's types, comma-separated."""
        return ",".join(self.types)


def _tables(settings: Settings) -> tuple[Any, Any]:
    from core.catalog import catalog

    cat = catalog(settings)
    ns = settings.lake.namespace
    return ensure_table(cat, ns, QUARANTINE), ensure_table(cat, ns, QUARANTINE_AUDIT)


def _statuses(audit: pa.Table) -> dict[str, tuple[str, datetime]]:
    latest: dict[str, tuple[str, datetime]] = {}
    for row in audit.sort_by([("at", "ascending")]).to_pylist():
        latest[row["batch_id"]] = (row["action"], row["at"])
    return latest


def list_batches(
    settings: Settings, *, tenant: str | None = None, status: str | None = None
) -> list[BatchSummary]:
    """Quarantined batches, newest event time first, optionally of one tenant or status."""
    quarantine, audit = _tables(settings)
    rows = quarantine.scan(
        row_filter=f"stage == '{_STAGE}'",
        selected_fields=("batch_id", "tenant_id", "reason", "type", "ts", "psi", "ks"),
    ).to_arrow()
    if tenant is not None:
        rows = rows.filter(pc.equal(rows["tenant_id"], tenant))
    decisions = _statuses(audit.scan().to_arrow())
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows.to_pylist():
        grouped.setdefault(row["batch_id"], []).append(row)
    out = []
    for batch_id, members in grouped.items():
        action, at = decisions.get(batch_id, ("open", None))
        if status is not None and action != status:
            continue
        stamps = [m["ts"] for m in members if m["ts"] is not None]
        first = members[0]
        out.append(
            BatchSummary(
                batch_id=batch_id,
                tenant_id=first["tenant_id"],
                reason=first["reason"],
                types=tuple(sorted({m["type"] for m in members if m["type"] is not None})),
                rows=len(members),
                first_ts=min(stamps) if stamps else None,
                last_ts=max(stamps) if stamps else None,
                psi=first["psi"],
                ks=first["ks"],
                status=action,
                decided_at=at,
            )
        )
    out.sort(key=lambda b: (b.tenant_id, b.first_ts or datetime.min.replace(tzinfo=UTC)))
    return out


def rejects_summary(settings: Settings) -> dict[tuple[str, str, str], int]:
    """Records rejected one by one (not drift batches): count per (tenant, stage, reason)."""
    quarantine, _audit = _tables(settings)
    rows = quarantine.scan(selected_fields=("tenant_id", "stage", "reason")).to_arrow()
    counts: dict[tuple[str, str, str], int] = {}
    for row in rows.to_pylist():
        if row["stage"] == _STAGE:
            continue
        key = (row["tenant_id"] or "-", row["stage"], row["reason"])
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def decide(
    settings: Settings,
    batch_id: str,
    action: str,
    *,
    actor: str,
    note: str | None = None,
    now: datetime,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Release or discard an open batch; returns the audit row written.

    ``released``: the batch's records are produced to the signal topic with a release marker and
    acknowledged by the broker before the audit row is written.
    """
    if action not in {"released", "discarded"}:
        msg = f"unknown action {action!r}"
        raise QuarantineError(msg)
    if not _BATCH_ID.fullmatch(batch_id):
        msg = f"not a batch id: {batch_id!r} (32 hex digits, from igflow quarantine list)"
        raise QuarantineError(msg)
    where = f"batch_id == '{batch_id}'"
    quarantine, audit = _tables(settings)
    state = _statuses(audit.scan(row_filter=where).to_arrow())
    if batch_id in state:
        done, at = state[batch_id]
        msg = f"batch {batch_id} was already {done} at {at.isoformat()}"
        raise QuarantineError(msg)
    rows = (
        quarantine.scan(row_filter=where)
        .to_arrow()
        .sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")])
        .to_pylist()
    )
    if not rows:
        msg = f"no quarantined batch {batch_id}"
        raise QuarantineError(msg)
    sent: dict[str, list[int]] = {}
    if action == "released":
        sent = _resend(settings, batch_id, rows, progress)
    entry = {
        "batch_id": batch_id,
        "tenant_id": rows[0]["tenant_id"] or "",
        "action": action,
        "rows": len(rows),
        "actor": actor,
        "at": now,
        "note": note,
        "offsets": json.dumps(sent, sort_keys=True, separators=(",", ":")),
    }
    audit.append(
        QUARANTINE_AUDIT.to_arrow([entry]),
        snapshot_properties={"igflow.audit": f"{action}:{batch_id}"},
    )
    return entry


def _resend(
    settings: Settings,
    batch_id: str,
    rows: Sequence[dict[str, Any]],
    progress: Callable[[int, int], None] | None,
) -> dict[str, list[int]]:
    def headers(row: dict[str, Any]) -> list[tuple[str, bytes]]:
        marker = sign(settings.quarantine.release_key, batch_id, row["input_hash"])
        return [(RELEASE_HEADER, marker)]

    sent = resend_rows(settings, rows, headers, f"release of {batch_id}", progress)
    offsets: dict[str, list[int]] = {}
    for partition, offset in sent:
        offsets.setdefault(str(partition), []).append(offset)
    return {p: sorted(o) for p, o in sorted(offsets.items())}


def opened_payloads(settings: Settings, rows: Sequence[dict[str, Any]]) -> list[bytes | None]:
    """The exact Kafka values of quarantine ``rows``: a payload sealed at landing
    (``seal.enabled``, :mod:`core.sealing`) is opened with its tenant's key first, so a release
    re-sends the bytes that were read. :class:`QuarantineError` when one does not open (its
    tenant was offboarded, or the row was tampered with): nothing is sent then."""
    if not any(is_sealed(row["payload"]) for row in rows):
        return [row["payload"] for row in rows]
    sealer = sealer_of(settings)
    out: list[bytes | None] = []
    for row in rows:
        payload = row["payload"]
        if is_sealed(payload):
            where = kafka_row(row["kafka_topic"], row["kafka_partition"], row["kafka_offset"])
            try:
                tenant, reason = row["tenant_id"], row.get("reason")
                holders = (keyholder(tenant, reason), legacy_keyholder(tenant, reason))
                payload = sealer.open_as(holders, SCOPE_QUARANTINE, "payload", where, payload)
            except IgflowError as exc:
                msg = f"the sealed payload of {where} does not open: {exc}; nothing was sent"
                raise QuarantineError(msg) from exc
        out.append(payload)
    return out


def resend_rows(
    settings: Settings,
    rows: Sequence[dict[str, Any]],
    headers: Callable[[dict[str, Any]], list[tuple[str, bytes]]],
    label: str,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[int, int]]:
    """Produce quarantine ``rows`` to the signal topic byte for byte (their Kafka key and value),
    each with ``headers(row)`` and an ``igflow.released.from`` header naming where it was read;
    returns where each row went, ``(partition, offset)`` in ``rows``' order, once the broker
    acknowledged them all. :class:`QuarantineError` (naming ``label``) when it did not."""
    producer = Producer(
        {
            **settings.kafka.client_config(),
            "acks": "all",
            "enable.idempotence": True,
            **JAVA_PARTITIONER,
        }
    )
    failures: list[str] = []
    sent: list[tuple[int, int] | None] = [None] * len(rows)
    values = opened_payloads(settings, rows)

    def delivered_as(i: int) -> Callable[[Any, Any], None]:
        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                failures.append(str(err))
            else:
                sent[i] = (msg.partition(), msg.offset())

        return delivered

    for n, row in enumerate(rows, 1):
        source = f"{row['kafka_topic']}/{row['kafka_partition']}/{row['kafka_offset']}"
        producer.produce(
            settings.kafka.topic,
            key=row["kafka_key"],
            value=values[n - 1],
            headers=[*headers(row), ("igflow.released.from", source.encode())],
            on_delivery=delivered_as(n - 1),
        )
        producer.poll(0)
        if progress is not None:
            progress(n, len(rows))
    remaining = producer.flush(30.0)
    done = [x for x in sent if x is not None]
    if remaining or failures or len(done) != len(rows):
        msg = (
            f"{label} not acknowledged ({remaining} pending, "
            f"{len(failures)} failed: {failures[:1]}); nothing was audited, run it again"
        )
        raise QuarantineError(msg)
    return done
