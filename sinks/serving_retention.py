"""Retention in the graph and in Postgres: count or delete what is past its retention tag.

The same rule as the lake (:mod:`sinks.lake_retention`, :mod:`core.retention`): past retention
when the event time is before the tag's cut-off.

- Graph (:mod:`sinks.graph_model`): a ``Signal`` node and its ``Provenance`` node go together
  when the provenance's ``retention`` tag (the one it landed with) has a cut-off after the
  signal's ``ts`` (epoch microseconds); a tenant's ``CoherenceScore`` node when its
  ``updated_at`` is before the cut-off of the tenant's tag now. ``Tenant`` nodes stay: they hold
  only the tenant's id, which every other store keeps too.
- Postgres ``coherence_scores``: a tenant's row when its ``updated_at`` is before the cut-off of
  the tenant's tag now.

Redis is not here: its keys expire by the TTL taken from the same tag when written
(:mod:`sinks.redis`). A deleted serving row comes back only if the flow re-delivers a record that
old (a resume from a snapshot taken before the record landed); the next run deletes it again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

import psycopg

from core.retention import Cutoffs, cutoffs
from sinks.graph import GraphWriter
from sinks.graph_model import epoch_micros

__all__ = [
    "StorePlan",
    "graph_expired",
    "graph_purge",
    "postgres_expired",
    "postgres_purge",
]

_CONNECT_TIMEOUT_S = 5

_SIGNALS = (
    "MATCH (s:Signal)-[:HAS_PROVENANCE]->(p:Provenance) WHERE p.retention = $tag AND s.ts < $cutoff"
)
_SCORES = "MATCH (n:CoherenceScore) WHERE n.tenant_id IN $tenants AND n.updated_at < $cutoff"


@dataclasses.dataclass(frozen=True, slots=True)
class StorePlan:
    """What is past retention in one store's target (a label, a table), per tenant."""

    store: str
    target: str
    cutoffs: Cutoffs
    expired: Mapping[str, int]
    #: Rows or nodes whose tag does not parse (never deleted).
    unaged: int

    @property
    def rows(self) -> int:
        """Rows or nodes past retention."""
        return sum(self.expired.values())


def _by_tag(tenants: Iterable[str], tag_of: Callable[[str], str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for tenant in sorted(set(tenants)):
        out.setdefault(tag_of(tenant), []).append(tenant)
    return out


def graph_expired(
    writer: GraphWriter, now: datetime, tag_of: Callable[[str], str]
) -> tuple[StorePlan, StorePlan]:
    """Signal (with its provenance) and CoherenceScore nodes past retention at ``now``."""
    distinct = "MATCH (p:Provenance) RETURN DISTINCT p.retention AS tag"
    tags = [r["tag"] for r in writer.read(distinct)]
    found = cutoffs((t for t in tags if t is not None), now)
    signals: dict[str, int] = {}
    unaged = 0
    for tag in sorted(found.invalid):
        rows = writer.read(
            "MATCH (s:Signal)-[:HAS_PROVENANCE]->(p:Provenance) WHERE p.retention = $tag "
            "RETURN count(s) AS c",
            tag=tag,
        )
        unaged += int(rows[0]["c"]) if rows else 0
    for tag, at in sorted(found.by_tag.items()):
        rows = writer.read(
            f"{_SIGNALS} RETURN s.tenant_id AS tenant, count(s) AS c",
            tag=tag,
            cutoff=epoch_micros(at),
        )
        for row in rows:
            signals[row["tenant"]] = signals.get(row["tenant"], 0) + int(row["c"])
    tenants = [r["t"] for r in writer.read("MATCH (n:CoherenceScore) RETURN n.tenant_id AS t")]
    score_found, scores, score_unaged = _scores(writer, tenants, now, tag_of)
    return (
        StorePlan("graph", "Signal", found, dict(sorted(signals.items())), unaged),
        StorePlan("graph", "CoherenceScore", score_found, scores, score_unaged),
    )


def _scores(
    writer: GraphWriter, tenants: list[str], now: datetime, tag_of: Callable[[str], str]
) -> tuple[Cutoffs, dict[str, int], int]:
    groups = _by_tag(tenants, tag_of)
    found = cutoffs(groups, now)
    out: dict[str, int] = {}
    for tag, at in sorted(found.by_tag.items()):
        rows = writer.read(
            f"{_SCORES} RETURN n.tenant_id AS tenant, count(n) AS c",
            tenants=groups[tag],
            cutoff=epoch_micros(at),
        )
        for row in rows:
            out[row["tenant"]] = out.get(row["tenant"], 0) + int(row["c"])
    unaged = sum(len(groups[tag]) for tag in found.invalid)
    return found, dict(sorted(out.items())), unaged


def graph_purge(
    writer: GraphWriter, now: datetime, tag_of: Callable[[str], str]
) -> tuple[StorePlan, StorePlan, int, int]:
    """Delete what :func:`graph_expired` finds: (its Signal and CoherenceScore plans, signals
    deleted, scores deleted). Each signal's provenance node goes with it, in one transaction."""
    signals_plan, scores_plan = graph_expired(writer, now, tag_of)
    signals = 0
    for tag, at in sorted(signals_plan.cutoffs.by_tag.items()):
        signals += writer.delete_chunked(
            f"{_SIGNALS} WITH s, p LIMIT $limit DETACH DELETE s, p RETURN count(s) AS c",
            tag=tag,
            cutoff=epoch_micros(at),
        )
    groups = _by_tag(scores_plan.expired, tag_of)
    scores = 0
    for tag, tenants in sorted(groups.items()):
        limit = scores_plan.cutoffs.of(tag)
        if limit is None:
            continue
        scores += writer.delete_chunked(
            f"{_SCORES} WITH n LIMIT $limit DETACH DELETE n RETURN count(n) AS c",
            tenants=tenants,
            cutoff=epoch_micros(limit),
        )
    return signals_plan, scores_plan, signals, scores


def _postgres(
    dsn: str, now: datetime, tag_of: Callable[[str], str], *, delete: bool
) -> tuple[StorePlan, int]:
    with psycopg.connect(dsn, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
        tenants = [r[0] for r in conn.execute("SELECT tenant_id FROM coherence_scores")]
        groups = _by_tag(tenants, tag_of)
        found = cutoffs(groups, now)
        expired: dict[str, int] = {}
        for tag, at in sorted(found.by_tag.items()):
            rows = conn.execute(
                "SELECT tenant_id FROM coherence_scores WHERE tenant_id = ANY(%s) "
                "AND updated_at < %s ORDER BY tenant_id",
                (groups[tag], at),
            ).fetchall()
            for (tenant,) in rows:
                expired[tenant] = expired.get(tenant, 0) + 1
        deleted = 0
        if delete:
            for tag, at in sorted(found.by_tag.items()):
                cur = conn.execute(
                    "DELETE FROM coherence_scores WHERE tenant_id = ANY(%s) AND updated_at < %s",
                    (groups[tag], at),
                )
                deleted += cur.rowcount
        unaged = sum(len(groups[tag]) for tag in found.invalid)
    plan = StorePlan("postgres", "coherence_scores", found, expired, unaged)
    return plan, deleted


def postgres_expired(dsn: str, now: datetime, tag_of: Callable[[str], str]) -> StorePlan:
    """Rows of ``coherence_scores`` past retention at ``now``."""
    return _postgres(dsn, now, tag_of, delete=False)[0]


def postgres_purge(dsn: str, now: datetime, tag_of: Callable[[str], str]) -> tuple[StorePlan, int]:
    """Delete them, in one transaction: (the plan, rows deleted)."""
    return _postgres(dsn, now, tag_of, delete=True)
