"""Retention in the lake: delete rows past their retention tag, expire old snapshots.

Which rows (:mod:`core.retention`): a row is past retention when its event time (:data:`EVENT_TIME`)
is before its tag's cut-off. The signals table carries each row's tag (``retention``, from the
tenant's policy when it landed); the other tables do not, so their rows take their tenant's tag
now (``tag_of``, the tenancy policy). Rows with no tenant or no event time (a record that did not
decode) and rows whose tag does not parse are never deleted: they are counted as *unaged*, the
latter under ``RETENTION_TAG_INVALID``.

How, and why it keeps the flow exactly-once: one copy-on-write delete per table (pyiceberg writes
no position deletes; it drops whole files and rewrites the others without the rows), in a
transaction that lands only on the snapshot it read (our tables refuse pyiceberg's commit retry):

- the rows it will delete are scanned at that snapshot first, and their digest (per tenant and
  partition, :mod:`core.digest`) is added to the lineage's running total of rows retention
  removed (:data:`REMOVED_KEY`): ``igflow verify`` then accounts for them instead of calling them
  missing;
- the ledger read at that snapshot is carried forward as a checkpoint (:data:`CHECKPOINT_KEY`,
  :mod:`sinks.ledger_format`): the delete raises no lane, so the ledger is unchanged and a flow's
  appender reads it through this snapshot; the delete is a ledger base, so the snapshots before it
  may expire;
- a lost race (a flow appended meanwhile) raises ``CommitFailedException``: the table is
  re-read and everything above is done again; the flow's appender, losing to us, re-reads its
  ledger likewise (:mod:`sinks.iceberg`).

Snapshot expiry keeps the lineage the ledger needs (from the current snapshot back to its base),
the lineage back to the newest snapshot with a history file (:mod:`sinks.ledger_history`: the
chain holds the commits before it) and the newest snapshot holding :data:`REMOVED_KEY`; every
other snapshot older than the cut-off goes, and the data files, manifests and manifest lists only
they referenced are deleted (Iceberg's expiry alone leaves them on disk, where the deleted rows
would still be). The flow's appender runs the same expiry as it goes (``lake.snapshots_kept``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import (
    And,
    BooleanExpression,
    EqualTo,
    In,
    LessThan,
    Or,
    Reference,
)
from pyiceberg.expressions.literals import literal
from pyiceberg.manifest import ManifestFile
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot, ancestors_of
from pyiceberg.table.update.snapshot import ExpireSnapshots

from core.digest import GroupDigest, GroupKey, digest_arrow, dump_summary, parse_summary
from core.errors import RetryableSinkError
from core.retention import Cutoffs, cutoffs
from core.retry import RetriesExhausted, RetryPolicy, retrying
from sinks.lake_write import transaction
from sinks.ledger_format import (
    CHECKPOINT_KEY,
    DELTA_KEY,
    LEDGER_KEY,
    has_value,
    read_ledger,
    spill,
    summary_value,
    write_checkpoint,
)
from sinks.ledger_history import HISTORY_KEY

__all__ = [
    "EVENT_TIME",
    "REMOVED_KEY",
    "RETAINED_TABLES",
    "RUN_KEY",
    "ApplyResult",
    "ExpiryResult",
    "TablePlan",
    "apply_table",
    "count_expired",
    "expire_snapshots",
    "plan_rows",
    "plan_table",
    "removed_digests",
]

log = logging.getLogger(__name__)
R = TypeVar("R")

#: Lost commit races: retried after 50 ms, doubling up to 2 s, jittered (as the appender's).
_COMMIT_RETRY = RetryPolicy(attempts=8, base_seconds=0.05, cap_seconds=2.0, jitter="around")

#: The event-time column retention ages each table's rows by.
EVENT_TIME: Mapping[str, str] = {
    "signals": "ts",
    "scores": "updated_at",
    "quarantine": "ts",
    # A window is past retention only once its end is: its last signal is.
    "deconfliction": "window_end",
}
#: The tables retention deletes from, in order. ``quarantine_audit`` is not among them: it is
#: the audit of operators' decisions (no tenant data), kept like ``retention_runs``.
RETAINED_TABLES = ("signals", "scores", "quarantine", "deconfliction")
#: Tables whose rows carry their own retention tag (the column ``retention``).
_ROW_TAGGED = frozenset({"signals"})

#: ``{"run": id, "now": iso, "cutoffs": {tag: iso}, "rows": n}`` of the run that made a snapshot.
RUN_KEY = "igflow.retention"
#: The digest groups (``core.digest.dump_summary``) of every row retention removed in this
#: lineage so far, up to this snapshot: a running total, so only the newest one is needed.
REMOVED_KEY = "igflow.retention.removed"


@dataclasses.dataclass(frozen=True, slots=True)
class TablePlan:
    """What retention finds past its cut-off in one table, at one snapshot."""

    table: str
    cutoffs: Cutoffs
    #: Rows past retention, per tenant ("" for none).
    expired: Mapping[str, int]
    #: Rows that cannot be aged: no tenant or no event time, or a tag that does not parse.
    unaged: int
    #: The tags that do not parse (their rows are in ``unaged``).
    invalid_tags: frozenset[str]
    snapshot_id: int | None
    #: The rows' filter (``None``: nothing can be past retention).
    where: BooleanExpression | None = dataclasses.field(repr=False, default=None)

    @property
    def rows(self) -> int:
        """Rows past retention."""
        return sum(self.expired.values())


@dataclasses.dataclass(frozen=True, slots=True)
class ApplyResult:
    """One table's delete: the plan it carried out and the snapshots it made."""

    plan: TablePlan
    deleted: int
    snapshot_ids: tuple[int, ...]
    attempts: int


@dataclasses.dataclass(frozen=True, slots=True)
class ExpiryResult:
    """One table's snapshot expiry."""

    expired: tuple[int, ...]
    kept: int
    files_deleted: int


def _iso(value: datetime) -> str:
    return value.isoformat()


def _filter(
    name: str, by_tag: Mapping[str, datetime], tenants_of: Mapping[str, list[str]]
) -> BooleanExpression | None:
    column = Reference(EVENT_TIME[name])
    parts: list[BooleanExpression] = []
    for tag, at in sorted(by_tag.items()):
        before = LessThan(term=column, value=literal(_iso(at)))
        if name in _ROW_TAGGED:
            parts.append(And(EqualTo(term=Reference("retention"), value=literal(tag)), before))
        elif tenants_of.get(tag):
            tenants = tenants_of[tag]
            who: BooleanExpression = (
                EqualTo(term=Reference("tenant_id"), value=literal(tenants[0]))
                if len(tenants) == 1
                else In(term=Reference("tenant_id"), values={literal(t) for t in tenants})
            )
            parts.append(And(who, before))
    if not parts:
        return None
    out = parts[0]
    for part in parts[1:]:
        out = Or(out, part)
    return out


def plan_table(table: Table, name: str, now: datetime, tag_of: Callable[[str], str]) -> TablePlan:
    """What is past retention in ``table`` (named ``name``, one of :data:`RETAINED_TABLES`) at
    ``now``, at its current snapshot. ``tag_of``: a tenant's retention tag (the tables whose rows
    do not carry theirs)."""
    snapshot = table.current_snapshot()
    empty = cutoffs((), now)
    if snapshot is None:
        return TablePlan(name, empty, {}, 0, frozenset(), None)
    column = EVENT_TIME[name]
    columns = ["tenant_id", column] + (["retention"] if name in _ROW_TAGGED else [])
    data = table.scan(selected_fields=tuple(columns), snapshot_id=snapshot.snapshot_id).to_arrow()
    return plan_rows(name, data, now, tag_of, snapshot.snapshot_id)


def plan_rows(
    name: str,
    data: pa.Table,
    now: datetime,
    tag_of: Callable[[str], str],
    snapshot_id: int | None,
) -> TablePlan:
    """The plan over the rows' (tenant_id, event time[, retention]) columns: per record in
    Python, since a plan's scan is small beside the delete's rewrite."""
    tenants = data.column("tenant_id").to_pylist()
    times = data.column(EVENT_TIME[name]).to_pylist()
    if name in _ROW_TAGGED:
        tags: list[str | None] = data.column("retention").to_pylist()
    else:
        known = {t: tag_of(t) for t in set(tenants) if t}
        tags = [known.get(t) if t else None for t in tenants]
    found = cutoffs((t for t in tags if t is not None), now)
    expired: dict[str, int] = {}
    unaged = 0
    tenants_of: dict[str, set[str]] = {}
    for tenant, at, tag in zip(tenants, times, tags, strict=True):
        limit = found.of(tag) if tag is not None else None
        if tenant is None or at is None or limit is None:
            unaged += 1
            continue
        if tag is not None:
            tenants_of.setdefault(tag, set()).add(tenant)
        if at < limit:
            expired[tenant] = expired.get(tenant, 0) + 1
    where = _filter(name, found.by_tag, {tag: sorted(ts) for tag, ts in tenants_of.items()})
    return TablePlan(
        name, found, dict(sorted(expired.items())), unaged, found.invalid, snapshot_id, where
    )


def removed_digests(table: Table) -> dict[GroupKey, GroupDigest]:
    """The digest groups of every row retention removed from ``table``'s current lineage (the
    newest :data:`REMOVED_KEY`; ``{}`` when retention never deleted from it)."""
    name = table.name()[-1]
    current = table.current_snapshot()
    if current is None:
        return {}
    for snapshot in ancestors_of(current, table.metadata):
        props = snapshot.summary.additional_properties if snapshot.summary is not None else {}
        raw = summary_value(table, props, REMOVED_KEY)
        if raw is not None:
            return parse_summary(name, raw)
    return {}


def _add(
    a: Mapping[GroupKey, GroupDigest], b: Mapping[GroupKey, GroupDigest]
) -> dict[GroupKey, GroupDigest]:
    out = dict(a)
    for key, group in b.items():
        have = out.get(key)
        out[key] = group if have is None else have + group
    return out


def apply_table(
    table: Table,
    name: str,
    now: datetime,
    tag_of: Callable[[str], str],
    *,
    run_id: str,
    attempts: int = 8,
) -> ApplyResult:
    """Delete what :func:`plan_table` finds, in one transaction on the snapshot it planned at;
    re-plan and retry (jittered backoff, as the appender) when a writer committed meanwhile."""

    def attempt_once(attempt: int) -> ApplyResult:
        table.refresh()
        plan = plan_table(table, name, now, tag_of)
        if plan.rows == 0 or plan.where is None:
            return ApplyResult(plan, 0, (), attempt)
        gone = table.scan(row_filter=plan.where, snapshot_id=plan.snapshot_id).to_arrow()
        removed = _add(removed_digests(table), digest_arrow(name, gone))
        properties: dict[str, str] = {}
        run = {
            "run": run_id,
            "now": _iso(now),
            "cutoffs": {t: _iso(c) for t, c in sorted(plan.cutoffs.by_tag.items())},
            "rows": gone.num_rows,
        }
        properties[RUN_KEY] = json.dumps(run, sort_keys=True, separators=(",", ":"))
        spill(table, properties, REMOVED_KEY, dump_summary(removed))
        # The ledger at the planned snapshot, carried forward (this commit raises no lane).
        properties[CHECKPOINT_KEY] = write_checkpoint(table, read_ledger(table).ledger)
        with table.transaction() as tx:  # CommitFailedException: a writer won; retried
            tx.delete(plan.where, snapshot_properties=properties)
        table.refresh()
        return ApplyResult(plan, gone.num_rows, _made_since(table, plan.snapshot_id), attempt)

    return _retry(attempt_once, attempts, f"retention delete on {name}")


def _retry(call: Callable[[int], R], attempts: int, what: str) -> R:
    def lost(attempt: int, exc: Exception, _wait: float | None) -> None:
        log.info("%s lost a commit race (attempt %d): %s", what, attempt, exc)

    try:
        return retrying(
            call,
            dataclasses.replace(_COMMIT_RETRY, attempts=attempts),
            transient=lambda exc: isinstance(exc, CommitFailedException),
            on_failure=lost,
        )
    except RetriesExhausted as gave_up:
        msg = f"{what}: gave up after {attempts} lost commit races"
        raise RetryableSinkError(msg) from gave_up.last


def _made_since(table: Table, since: int | None) -> tuple[int, ...]:
    current = table.current_snapshot()
    out: list[int] = []
    if current is None:
        return ()
    for snapshot in ancestors_of(current, table.metadata):
        if snapshot.snapshot_id == since:
            break
        out.append(snapshot.snapshot_id)
    return tuple(reversed(out))


def _protected(table: Table, *, history: bool = False) -> set[int]:
    """The current lineage back to the ledger's base and back to the newest snapshot carrying a
    history file (:mod:`sinks.ledger_history`: the chain holds the commits before it), and the
    newest :data:`REMOVED_KEY`. ``history``: the whole lineage when no snapshot of it carries a
    history file (nothing holds its commits but the metadata)."""
    keep: set[int] = set()
    current = table.current_snapshot()
    if current is None:
        return keep
    lineage = list(ancestors_of(current, table.metadata))
    chained = next((i for i, s in enumerate(lineage) if HISTORY_KEY in _summary_properties(s)), -1)
    if history and chained < 0:
        chained = len(lineage) - 1
    based = removed = False
    for at, snapshot in enumerate(lineage):
        props = _summary_properties(snapshot)
        if not based or at <= chained:
            keep.add(snapshot.snapshot_id)
        if not based:
            based = CHECKPOINT_KEY in props or (
                LEDGER_KEY in props and not has_value(props, DELTA_KEY)
            )
        if not removed and has_value(props, REMOVED_KEY):
            keep.add(snapshot.snapshot_id)
            removed = True
        if based and removed and at >= chained:
            break
    return keep


def _summary_properties(snapshot: Snapshot) -> Mapping[str, str]:
    return snapshot.summary.additional_properties if snapshot.summary is not None else {}


def _manifests(table: Table, snapshots: Iterable[Snapshot]) -> dict[str, ManifestFile]:
    out: dict[str, ManifestFile] = {}
    for snapshot in snapshots:
        for manifest in snapshot.manifests(table.io):
            out.setdefault(manifest.manifest_path, manifest)
    return out


def _data_files(table: Table, manifests: Iterable[ManifestFile]) -> set[str]:
    return {
        entry.data_file.file_path
        for manifest in manifests
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
    }


def _only(table: Table, doomed: Sequence[Snapshot], kept: Sequence[Snapshot]) -> set[str]:
    """The files the ``doomed`` snapshots reference and the ``kept`` ones do not: manifest
    lists, manifests and live data files. Each manifest is read once, and the data files only
    when some manifest is the doomed snapshots' alone (an append-only table's fast appends
    share theirs with the kept snapshots: then none is read); then of the kept manifests only
    those that may hold one of their files: written at or after the oldest data sequence number
    in them (a manifest lists only files added before it; a manifest compaction,
    :mod:`sinks.lake_manifests`, rewrites the newest ones, so the table's other manifests are
    not read at every expiry)."""
    out = {s.manifest_list for s in doomed} - {s.manifest_list for s in kept}
    theirs, ours = _manifests(table, doomed), _manifests(table, kept)
    only = set(theirs) - set(ours)
    if only:
        out |= only
        oldest = min(theirs[p].min_sequence_number for p in only)
        maybe = [m for m in ours.values() if m.sequence_number >= oldest]
        out |= _data_files(table, (theirs[p] for p in sorted(only))) - _data_files(table, maybe)
    return out


def _expiry(table: Table) -> ExpireSnapshots:
    """pyiceberg's expiry (``table.maintenance.expire_snapshots()``) on a transaction that
    computes the table's metadata once (:func:`sinks.lake_write.transaction`), not twice per
    expired id (``by_id`` reads it, a deep copy of the whole metadata each time)."""
    return ExpireSnapshots(transaction(table, autocommit=True))


def expire_snapshots(
    table: Table, older_than: datetime | None, *, attempts: int = 8, history: bool = False
) -> ExpiryResult:
    """Expire ``table``'s snapshots older than ``older_than`` (``None``: any age) but those
    :func:`_protected` (``history``: keeping a lineage no history file holds yet whole), and
    delete the files only they referenced (after the expiry committed: a lost race deletes
    nothing)."""

    def attempt_once(_attempt: int) -> tuple[ExpiryResult, set[str]]:
        table.refresh()
        keep = _protected(table, history=history)
        snapshots = table.metadata.snapshots
        doomed = [
            s
            for s in snapshots
            if (older_than is None or s.timestamp_ms < int(older_than.timestamp() * 1000))
            and s.snapshot_id not in keep
        ]
        if not doomed:
            return ExpiryResult((), len(snapshots), 0), set()
        ids = {s.snapshot_id for s in doomed}
        kept = [s for s in snapshots if s.snapshot_id not in ids]
        candidates = _only(table, doomed, kept)
        _expiry(table).by_ids(sorted(ids)).commit()
        return ExpiryResult(tuple(sorted(ids)), len(kept), 0), candidates

    result, candidates = _retry(attempt_once, attempts, f"snapshot expiry on {table.name()}")
    deleted = 0
    for path in sorted(candidates):
        try:
            table.io.delete(path)
            deleted += 1
        except FileNotFoundError:
            continue
    return dataclasses.replace(result, files_deleted=deleted)


def count_expired(table: Table, name: str, now: datetime, tag_of: Callable[[str], str]) -> int:
    """Rows of ``table`` past retention at ``now`` (0 is what ``igflow retention verify`` wants)."""
    return plan_table(table, name, now, tag_of).rows
