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

from core.reasons import ReasonCode
from core.settings import Settings
from igflow.switch_release import quarantine_rows, release_rows

__all__ = ["ResidencyRelease", "blocked_rows", "release_blocked"]

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
    where: BooleanExpression = EqualTo(
        term=Reference("reason"), value=literal(ReasonCode.RESIDENCY_BLOCKED.value)
    )
    if tenant is not None:
        where = And(where, EqualTo(term=Reference("tenant_id"), value=literal(tenant)))
    return quarantine_rows(settings, where)


def release_blocked(
    settings: Settings,
    tenant: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ResidencyRelease:
    """Re-send the residency-held records (of ``tenant``) that no release sent yet."""
    rows = blocked_rows(settings, tenant)
    name = tenant or "*"
    already, sent = release_rows(
        settings,
        rows,
        (LABEL, name),
        f"{LABEL}:{name}",
        f"release of residency-held records of {name}",
        progress,
    )
    return ResidencyRelease(tenant, len(rows), already, sent)
