"""The records a namespace's kill switches and residency gate already held, by Kafka position.

A held record is a quarantine row with reason ``SOURCE_DISABLED``, ``TENANT_DISABLED`` or
``RESIDENCY_BLOCKED``. Its
position stays held whenever the flow reads it again (a bounded re-run, a resume, a replay), so
that a re-read decides as the first read did and a released copy (new offset) is the one that
lands: were the original to pass on a re-read, the dedupe step would drop the copy instead, and
the ledger the original (its offset is below the lane's high-water mark), landing neither.
"""

from __future__ import annotations

from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import In, Reference
from pyiceberg.expressions.literals import literal

from core.catalog import CatalogOnce
from core.reasons import ReasonCode
from core.settings import Settings
from core.switches import HELD_REASONS, ReplayedHolds
from sinks.lake_tables import QUARANTINE

__all__ = ["HELD", "held_positions"]

#: The reasons of held (releasable) records.
HELD = frozenset({*HELD_REASONS.values(), ReasonCode.RESIDENCY_BLOCKED})


def held_positions(settings: Settings, lake: CatalogOnce | None = None) -> ReplayedHolds:
    """The held rows of ``settings.lake.namespace``'s quarantine table (none without one);
    ``lake``: the flow's catalog, opened here if nobody has yet (absent: one of its own)."""
    lake = lake or CatalogOnce.of(settings)
    try:
        table = lake.get().load_table((settings.lake.namespace, QUARANTINE.name))
    except NoSuchTableError:
        return ReplayedHolds({})
    rows = table.scan(
        row_filter=In(term=Reference("reason"), values={literal(r.value) for r in HELD}),
        selected_fields=("kafka_topic", "kafka_partition", "kafka_offset", "reason", "detail"),
    ).to_arrow()
    return ReplayedHolds(
        {
            (r["kafka_topic"], r["kafka_partition"], r["kafka_offset"]): (
                ReasonCode(r["reason"]),
                r["detail"],
            )
            for r in rows.to_pylist()
        }
    )
