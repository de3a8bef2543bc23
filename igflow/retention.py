"""Retention enforced across the stores: plan, apply (audited), verify.

One run at a reference time ``now`` (the wall clock, or ``--now`` for tests and re-runs):

1. the lake (:mod:`sinks.lake_retention`): per table of :data:`RETAINED_TABLES`, one delete of
   the rows past retention, then snapshot expiry older than ``retention.snapshot_max_age_days``
   (wall clock: snapshot times are commit times), with the files only they referenced;
2. the graph and Postgres (:mod:`sinks.serving_retention`) when ``stores.sinks`` enables them;
3. after each store, one ``retention_runs`` row per target (migration 0009): what, how many per
   tenant, the cut-offs, the Iceberg snapshot ids made and expired, ``now``, who, when.

Redis is left to its TTLs (:mod:`sinks.redis`). :func:`verify` counts what is still past
retention at ``now`` in every store; 0 everywhere is the proof a run worked.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import errors

from core.catalog import catalog
from core.errors import ConfigError
from core.settings import Settings
from operators.tenancy import TenancyPolicy
from sinks.graph import GraphWriter
from sinks.lake_retention import RETAINED_TABLES, apply_table, expire_snapshots, plan_table
from sinks.serving_retention import graph_expired, graph_purge, postgres_expired, postgres_purge

__all__ = ["Outcome", "apply", "audit", "plan", "verify"]

_CONNECT_TIMEOUT_S = 5


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """One store target's line of a report."""

    store: str
    target: str
    rows: int
    per_tenant: Mapping[str, int]
    cutoffs: Mapping[str, str]
    unaged: int = 0
    invalid_tags: tuple[str, ...] = ()
    snapshot_ids: tuple[int, ...] = ()
    expired_snapshots: tuple[int, ...] = ()
    files_deleted: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        out = dataclasses.asdict(self)
        out["per_tenant"] = dict(self.per_tenant)
        out["cutoffs"] = dict(self.cutoffs)
        return out


def _tag_of(settings: Settings) -> Callable[[str], str]:
    policy = TenancyPolicy.load(settings.policies_dir)
    return lambda tenant: policy.tags(tenant).retention


def _iso(cut: Mapping[str, datetime]) -> dict[str, str]:
    return {tag: at.isoformat() for tag, at in sorted(cut.items())}


def _tables(settings: Settings) -> list[tuple[str, Any]]:
    cat = catalog(settings)
    out = []
    for name in RETAINED_TABLES:
        ident = (settings.lake.namespace, name)
        if cat.table_exists(ident):
            out.append((name, cat.load_table(ident)))
    return out


def _sinks(settings: Settings) -> set[str]:
    return {s.strip() for s in settings.stores.sinks.split(",") if s.strip()}


def plan(settings: Settings, now: datetime) -> list[Outcome]:
    """What a run at ``now`` would delete (the dry run): nothing is changed or audited."""
    tag_of = _tag_of(settings)
    out: list[Outcome] = []
    for name, table in _tables(settings):
        p = plan_table(table, name, now, tag_of)
        out.append(
            Outcome(
                "lake",
                name,
                p.rows,
                p.expired,
                _iso(p.cutoffs.by_tag),
                p.unaged,
                tuple(sorted(p.invalid_tags)),
            )
        )
    sinks = _sinks(settings)
    if "graph" in sinks:
        for sp in graph_expired(GraphWriter.for_stores(settings.stores), now, tag_of):
            out.append(
                Outcome(
                    sp.store, sp.target, sp.rows, sp.expired, _iso(sp.cutoffs.by_tag), sp.unaged
                )
            )
    if "postgres" in sinks:
        sp = postgres_expired(settings.stores.postgres_dsn, now, tag_of)
        out.append(
            Outcome(sp.store, sp.target, sp.rows, sp.expired, _iso(sp.cutoffs.by_tag), sp.unaged)
        )
    return out


def _audit_table(dsn: str) -> None:
    """Refuse to delete anything that could not be audited: :class:`ConfigError` without the
    ``retention_runs`` table (or without a database)."""
    try:
        with psycopg.connect(dsn, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
            conn.execute("SELECT 1 FROM retention_runs LIMIT 0")
    except errors.UndefinedTable as exc:
        msg = "no table retention_runs: run igflow setup to apply the migrations"
        raise ConfigError(msg) from exc
    except psycopg.OperationalError as exc:
        msg = f"the audit database is unreachable: {str(exc).strip()}"
        raise ConfigError(msg) from exc


def _record(dsn: str, run_id: str, now: datetime, actor: str, outcomes: list[Outcome]) -> None:
    with psycopg.connect(dsn, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
        _insert(conn, run_id, now, actor, outcomes)


def _insert(
    conn: psycopg.Connection[Any], run_id: str, now: datetime, actor: str, outcomes: list[Outcome]
) -> None:
    for o in outcomes:
        conn.execute(
            "INSERT INTO retention_runs (run_id, store, target, rows_deleted, per_tenant, "
            "cutoffs, snapshot_ids, expired_snapshots, unaged, now, actor) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                run_id,
                o.store,
                o.target,
                o.rows,
                json.dumps(dict(o.per_tenant), sort_keys=True),
                json.dumps(dict(o.cutoffs), sort_keys=True),
                json.dumps(list(o.snapshot_ids)),
                json.dumps(list(o.expired_snapshots)),
                o.unaged,
                now,
                actor,
            ),
        )


def apply(
    settings: Settings, now: datetime, actor: str, *, run_id: str | None = None
) -> tuple[str, list[Outcome]]:
    """Delete what is past retention at ``now`` from every store and audit it: (run id, lines).

    Snapshot expiry uses the wall clock minus ``retention.snapshot_max_age_days``, never
    ``now``: a test's ``--now`` years ahead must not expire the snapshots of the last minute."""
    run = run_id or uuid.uuid4().hex
    tag_of = _tag_of(settings)
    dsn = settings.stores.postgres_dsn
    _audit_table(dsn)  # before any delete: nothing goes unaudited
    section = settings.retention
    out: list[Outcome] = []
    for name, table in _tables(settings):
        result = apply_table(table, name, now, tag_of, run_id=run, attempts=section.commit_attempts)
        older = datetime.now(now.tzinfo) - timedelta(days=section.snapshot_max_age_days)
        expiry = expire_snapshots(table, older, attempts=section.commit_attempts)
        p = result.plan
        line = Outcome(
            "lake",
            name,
            result.deleted,
            p.expired,
            _iso(p.cutoffs.by_tag),
            p.unaged,
            tuple(sorted(p.invalid_tags)),
            result.snapshot_ids,
            expiry.expired,
            expiry.files_deleted,
        )
        _record(dsn, run, now, actor, [line])
        out.append(line)
    sinks = _sinks(settings)
    if "graph" in sinks:
        writer = GraphWriter.for_stores(settings.stores)
        sp, cp, signals, scores = graph_purge(writer, now, tag_of)
        lines = [
            Outcome("graph", "Signal", signals, sp.expired, _iso(sp.cutoffs.by_tag), sp.unaged),
            Outcome(
                "graph", "CoherenceScore", scores, cp.expired, _iso(cp.cutoffs.by_tag), cp.unaged
            ),
        ]
        _record(dsn, run, now, actor, lines)
        out.extend(lines)
    if "postgres" in sinks:
        sp, deleted = postgres_purge(dsn, now, tag_of)
        line = Outcome(
            "postgres", sp.target, deleted, sp.expired, _iso(sp.cutoffs.by_tag), sp.unaged
        )
        _record(dsn, run, now, actor, [line])
        out.append(line)
    return run, out


def verify(settings: Settings, now: datetime) -> list[Outcome]:
    """What is still past retention at ``now`` in every store (all rows 0: verified). The
    same counts as :func:`plan`: what a run at ``now`` would still delete."""
    return plan(settings, now)


def audit(dsn: str, limit: int, run_id: str | None = None) -> list[dict[str, Any]]:
    """The latest ``retention_runs`` rows, newest first (one run's with ``run_id``)."""
    _audit_table(dsn)
    where, params = ("WHERE run_id = %s", [run_id]) if run_id else ("", [])
    with psycopg.connect(dsn, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
        rows = conn.execute(
            "SELECT run_id, store, target, rows_deleted, per_tenant, cutoffs, snapshot_ids, "
            "expired_snapshots, unaged, now, actor, at FROM retention_runs "
            f"{where} ORDER BY id DESC LIMIT %s",
            (*params, limit),
        ).fetchall()
    names = (
        "run_id",
        "store",
        "target",
        "rows_deleted",
        "per_tenant",
        "cutoffs",
        "snapshot_ids",
        "expired_snapshots",
        "unaged",
        "now",
        "actor",
        "at",
    )
    out = []
    for row in rows:
        item = dict(zip(names, row, strict=True))
        item["now"] = item["now"].isoformat()
        item["at"] = item["at"].isoformat()
        out.append(item)
    return out
