"""Release the records the residency gate held: re-send them, byte for byte, once the reason is
gone (the tenant's residency changed in the policy, the deployment's mapping was corrected, or
the source's registered residency was fixed).

The validate step holds such a record as a quarantine row with reason ``RESIDENCY_BLOCKED``
(:mod:`core.residency`). A release re-sends those rows (of one tenant, or all) with their exact
Kafka key and value (:func:`igflow.quarantine.resend_rows`) and remembers each in Postgres
(``switch_releases``, ``kind`` ``residency``), so a second release skips what was sent. The
copies get new offsets and are judged again, by the gate as it is then: a copy still blocked is
held again (and released again by a later release), never lost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pyiceberg.expressions import And, BooleanExpression, EqualTo, Reference
from pyiceberg.expressions.literals import literal

from core.catalog import catalog
from core.reasons import ReasonCode
from core.settings import Settings
from igflow.quarantine import resend_rows
from sinks.iceberg import ensure_table
from sinks.lake_tables import QUARANTINE
from tenancy.switches import record_released, released_positions

__all__ = ["ResidencyRelease", "blocked_rows", "release_blocked"]

_COLUMNS = (
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_key",
    "payload",
    "input_hash",
    "tenant_id",
)
#: The ``kind`` of a residency release in ``switch_releases``.
LABEL = "residency"


@dataclasses.dataclass(frozen=True, slots=True)
class ResidencyRelease:
    """What a release found and did."""

    tenant: str | None
    held: int
    already: int
    sent: int


def blocked_rows(settings: Settings, tenant: str | None = None) -> list[dict[str, Any]]:
    """The ``RESIDENCY_BLOCKED`` quarantine rows (of ``tenant``), in input order."""
    table = ensure_table(catalog(settings), settings.lake.namespace, QUARANTINE)
    where: BooleanExpression = EqualTo(
        term=Reference("reason"), value=literal(ReasonCode.RESIDENCY_BLOCKED.value)
    )
    if tenant is not None:
        where = And(where, EqualTo(term=Reference("tenant_id"), value=literal(tenant)))
    rows = table.scan(row_filter=where, selected_fields=_COLUMNS).to_arrow()
    ordered = rows.sort_by(
        [
            ("kafka_topic", "ascending"),
            ("kafka_partition", "ascending"),
            ("kafka_offset", "ascending"),
        ]
    )
    out: list[dict[str, Any]] = ordered.to_pylist()
    return out


def release_blocked(
    settings: Settings,
    tenant: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ResidencyRelease:
    """Re-send the residency-held records (of ``tenant``) that no release sent yet."""
    dsn = settings.stores.postgres_dsn
    rows = blocked_rows(settings, tenant)
    done: set[tuple[str, int, int]] = set()
    for topic in {r["kafka_topic"] for r in rows}:
        done |= {(topic, p, o) for p, o in released_positions(dsn, topic)}
    todo = [
        r for r in rows if (r["kafka_topic"], r["kafka_partition"], r["kafka_offset"]) not in done
    ]
    name = tenant or "*"
    if todo:
        sent = resend_rows(
            settings,
            todo,
            lambda _row: [("igflow.released.by", f"{LABEL}:{name}".encode())],
            f"release of residency-held records of {name}",
            progress,
        )
        record_released(
            dsn,
            LABEL,
            name,
            (
                (r["kafka_topic"], r["kafka_partition"], r["kafka_offset"], p, o)
                for r, (p, o) in zip(todo, sent, strict=True)
            ),
        )
    return ResidencyRelease(tenant, len(rows), len(rows) - len(todo), len(todo))
