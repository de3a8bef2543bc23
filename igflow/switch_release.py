"""Release the records a kill switch held: re-send them, byte for byte, once it is on again.

The validate step holds a record of a switched-off source (tenant) as a quarantine row with
reason ``SOURCE_DISABLED`` (``TENANT_DISABLED``) and a ``detail`` naming the switch
(:func:`core.switches.held_detail`). Releasing a switch re-sends those rows to the signal topic
with their exact Kafka key and value (:func:`igflow.quarantine.resend_rows`), then remembers each
one in Postgres (``switch_releases``), so a second release skips what was already sent.

Safe to repeat: a release that stops between the broker's acknowledgement and the ledger rows
sends those records again next time, and the dedupe step drops the copies (same idempotency
key, within its TTL); records held after a release are picked up by the next one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pyiceberg.expressions import And, BooleanExpression, EqualTo, Reference
from pyiceberg.expressions.literals import literal

from core.catalog import catalog
from core.settings import Settings
from core.switches import HELD_REASONS, SwitchKind, held_detail
from igflow.quarantine import QuarantineError, resend_rows
from sinks.iceberg import ensure_table
from sinks.lake_tables import QUARANTINE
from tenancy.switches import record_released, released_positions

__all__ = ["ReleaseReport", "held_rows", "quarantine_rows", "release_held", "release_rows"]

_COLUMNS = (
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_key",
    "payload",
    "input_hash",
    "tenant_id",
    "reason",
)


@dataclasses.dataclass(frozen=True, slots=True)
class ReleaseReport:
    """What a release found and did."""

    kind: SwitchKind
    name: str
    #: Held records of the switch in the quarantine table.
    held: int
    #: Of those, already re-sent by an earlier release (skipped).
    already: int
    #: Re-sent now.
    sent: int


def held_rows(settings: Settings, kind: SwitchKind, name: str) -> list[dict[str, Any]]:
    """The quarantine rows switch ``(kind, name)`` held, in input order."""
    reason = HELD_REASONS.get(kind)
    if reason is None:
        msg = f"a {kind.value} switch holds no records (only source and tenant switches do)"
        raise QuarantineError(msg)
    return quarantine_rows(
        settings,
        And(
            EqualTo(term=Reference("reason"), value=literal(reason.value)),
            EqualTo(term=Reference("detail"), value=literal(held_detail(kind, name))),
        ),
    )


def quarantine_rows(settings: Settings, where: BooleanExpression) -> list[dict[str, Any]]:
    """The quarantine rows ``where`` selects (the columns a release needs), in input order."""
    table = ensure_table(catalog(settings), settings.lake.namespace, QUARANTINE)
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


def release_held(
    settings: Settings,
    kind: SwitchKind,
    name: str,
    progress: Callable[[int, int], None] | None = None,
) -> ReleaseReport:
    """Re-send the records switch ``(kind, name)`` held that no release sent yet."""
    rows = held_rows(settings, kind, name)
    header = f"switch:{kind.value}:{name}"
    already, sent = release_rows(
        settings, rows, (kind.value, name), header, f"release of {kind.value} {name}", progress
    )
    return ReleaseReport(kind, name, len(rows), already, sent)


def release_rows(
    settings: Settings,
    rows: list[dict[str, Any]],
    holder: tuple[str, str],
    released_by: str,
    what: str,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Re-send the held ``rows`` that no release sent yet, each with the header
    ``igflow.released.by: released_by``, and remember them in ``switch_releases`` under
    ``holder`` (``(kind or label, name)``). Returns ``(already sent, sent now)``."""
    dsn = settings.stores.postgres_dsn
    done: set[tuple[str, int, int]] = set()
    for topic in {r["kafka_topic"] for r in rows}:
        done |= {(topic, p, o) for p, o in released_positions(dsn, topic)}
    todo = [
        r for r in rows if (r["kafka_topic"], r["kafka_partition"], r["kafka_offset"]) not in done
    ]
    if todo:
        header = [("igflow.released.by", released_by.encode())]
        sent = resend_rows(settings, todo, lambda _row: header, what, progress)
        record_released(
            dsn,
            *holder,
            (
                (r["kafka_topic"], r["kafka_partition"], r["kafka_offset"], p, o)
                for r, (p, o) in zip(todo, sent, strict=True)
            ),
        )
    return len(rows) - len(todo), len(todo)
