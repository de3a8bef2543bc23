"""Compare two namespaces' landed content (or one namespace's content with its commit history).

The unit of comparison is a digest group (see :mod:`core.digest`): ``(table, tenant,
partition)`` with its offset range, row count and multiset hash. Two groups match when all four
are equal. A mismatched group can be explained row by row (:func:`first_differences`), and a
table's data files can be checked for byte-identical twins (:func:`files_identical`): equal
content need not mean equal files (batching decides how rows split into files).

Digests come from a scan (:func:`digest_table`, optionally over an event-time window) or, without
reading any data file, from the digests each igflow commit stores in its snapshot summary
(:func:`digest_history`). Scanning two namespaces, a data file of one whose bytes (SHA-256) equal
a file of the other's, both read from their bytes alone, holds the same rows: such a pair is
digested once and counted on both sides (:func:`_scan_both`; a replay's files are all such
pairs), every other file on its own side.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    IsNull,
    LessThan,
    Or,
    Reference,
)
from pyiceberg.expressions.literals import literal
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.snapshots import Operation

from core.catalog import catalog
from core.digest import (
    DIGEST_KEY,
    GroupDigest,
    GroupKey,
    digest_arrow,
    parse_summary,
    row_hash,
)
from core.errors import IgflowError
from core.settings import Settings
from replay.lake_read import read_files, same_shape, whole
from sinks.lake_retention import RUN_KEY, removed_digests
from sinks.ledger_format import LedgerUnavailable, summary_value
from sinks.ledger_history import read_history

__all__ = [
    "EVENT_TIME",
    "Differences",
    "GroupResult",
    "HistoryUnavailable",
    "Report",
    "compare",
    "digest_history",
    "digest_table",
    "files_identical",
    "first_differences",
    "plan",
    "verify",
]

#: The event-time column a ``--window`` filters on, per verifiable table: every lake table but
#: :data:`~core.digest.UNVERIFIABLE_TABLES`, in :data:`sinks.lake_tables.TABLES`' order (a test
#: holds it to that; naming them here spares verify importing the tables' definitions, which
#: bring the key store's client: ~50 ms of its start-up).
EVENT_TIME: Mapping[str, str] = {
    "signals": "ts",
    "scores": "updated_at",
    "quarantine": "ts",
    "deconfliction": "window_start",
}

Status = Literal["match", "mismatch", "missing_in_original", "missing_in_other"]
Window = tuple[datetime, datetime]


class HistoryUnavailable(IgflowError):
    """A table's lineage has a commit without a digest that may have changed its content."""


@dataclasses.dataclass(frozen=True, slots=True)
class GroupResult:
    """One group compared: its digest on either side (None: absent there)."""

    key: GroupKey
    original: GroupDigest | None
    other: GroupDigest | None

    @property
    def status(self) -> Status:
        """``match`` only when offsets, count and digest are all equal."""
        if self.original is None:
            return "missing_in_original"
        if self.other is None:
            return "missing_in_other"
        return "match" if self.original == self.other else "mismatch"


@dataclasses.dataclass(frozen=True, slots=True)
class Differences:
    """Rows of one group present on one side and not the other (multiset difference)."""

    only_in_original: list[dict[str, Any]]
    only_in_other: list[dict[str, Any]]


@dataclasses.dataclass
class Report:
    """The outcome of a comparison: every group, and for mismatches the first differing rows."""

    groups: list[GroupResult]
    differences: dict[GroupKey, Differences] = dataclasses.field(default_factory=dict)
    #: table -> (data files of the original with a byte-identical twin in the other, all files).
    files: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    #: table -> (rows ``igflow retention`` removed from the original, from the other): counted
    #: into each side's scan, so a group they emptied is accounted for, not missing.
    retention_removed: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)

    @property
    def identical(self) -> bool:
        """True only when every group matches (an empty comparison is identical)."""
        return all(g.status == "match" for g in self.groups)

    @property
    def mismatched(self) -> list[GroupResult]:
        """The groups that do not match, in key order."""
        return [g for g in self.groups if g.status != "match"]


def _window_filter(table_name: str, window: Window | None) -> BooleanExpression:
    if window is None:
        return AlwaysTrue()
    column = EVENT_TIME[table_name]
    start, end = window
    return And(
        GreaterThanOrEqual(term=Reference(column), value=literal(start.isoformat())),
        LessThan(term=Reference(column), value=literal(end.isoformat())),
    )


def digest_table(
    table: Table,
    table_name: str,
    window: Window | None = None,
    *,
    tasks: Sequence[FileScanTask] | None = None,
) -> dict[GroupKey, GroupDigest]:
    """Scan ``table`` and digest its rows per group.

    ``window`` is half-open ``[start, end)`` on the table's event-time column (:data:`EVENT_TIME`);
    both ends must be timezone-aware. ``tasks``: the files of an unfiltered scan, already
    planned (:func:`plan`; planning reads every manifest), only without a window.
    """
    if window is not None:
        if tasks is not None:
            msg = "planned files are an unfiltered scan's: they cannot serve a window"
            raise ValueError(msg)
        scan = table.scan(row_filter=_window_filter(table_name, window))
        return digest_arrow(table_name, scan.to_arrow())
    digests, _hashes = _scan(table, table_name, plan(table) if tasks is None else tasks, rows=True)
    return digests


#: Rows digested at once: enough that digest_arrow's per-call cost is spread thin (a data file
#: holds a few hundred rows), few enough to bound memory.
_DIGEST_ROWS = 1 << 16


class _Digests:
    """Digest groups summed over Arrow tables given one at a time (each a data file's rows),
    digested :data:`_DIGEST_ROWS` at a time."""

    def __init__(self, table_name: str) -> None:
        self._name = table_name
        self.groups: dict[GroupKey, GroupDigest] = {}
        self._held: list[pa.Table] = []
        self._rows = 0

    def add(self, data: pa.Table | None) -> None:
        if data is None or not data.num_rows:
            return
        self._held.append(data)
        self._rows += data.num_rows
        if self._rows >= _DIGEST_ROWS:
            self.flush()

    def flush(self) -> dict[GroupKey, GroupDigest]:
        if self._held:
            data = pa.concat_tables(self._held, promote_options="permissive")
            self._held.clear()
            self._rows = 0
            self.groups = _plus(self.groups, digest_arrow(self._name, data))
        return self.groups


def _scan(
    table: Table, table_name: str, tasks: Sequence[FileScanTask], *, rows: bool, sha256: bool = True
) -> tuple[dict[GroupKey, GroupDigest], Counter[str]]:
    """One read of every planned file: the digest groups of its rows (when ``rows``) and the
    SHA-256 of each file's bytes (when ``sha256``), each file read once."""
    digests = _Digests(table_name)
    hashes: Counter[str] = Counter()
    for file_hash, data, _direct in read_files(table, tasks, rows=rows, sha256=sha256):
        if file_hash is not None:
            hashes[file_hash] += 1
        digests.add(data)
    return digests.flush(), hashes


#: One table's digest groups and file hashes: the original's, then the other's.
_Sides = tuple[dict[GroupKey, GroupDigest], Counter[str], dict[GroupKey, GroupDigest], Counter[str]]


def _scan_both(
    table_a: Table,
    table_b: Table,
    table_name: str,
    tasks_a: Sequence[FileScanTask],
    tasks_b: Sequence[FileScanTask],
) -> _Sides:
    """Both sides of a scan verify: each side's digest groups and file hashes, as two
    :func:`_scan` calls give them, with every row of either side digested, but a byte-identical
    pair of files digested once.

    A file of ``table_b`` whose bytes have the SHA-256 of a file of ``table_a`` holds the same
    rows when both are read from their bytes alone (no delete files, a Parquet file whose schema
    is its table's, and both tables' schemas alike: :func:`replay.lake_read.same_shape`): the
    same bytes decode to the same rows. Such a pair's rows are digested once and counted on both
    sides. Every other file is read and digested on its own side; a file that differs by one byte
    has another hash, so it is never paired. ``table_b``'s files that may have a twin (by the
    size the manifests record) are read twice: once for their hashes (before ``table_a``'s, which
    are paired as they are read), and again, only those left unpaired, for their rows; its other
    files once, for both.
    """
    pairable = same_shape(table_a, table_b)
    sizes = {t.file.file_size_in_bytes for t in tasks_a if whole(t)}
    # A twin has the same bytes, so the same size: other files are read once, in the last pass.
    maybe = [pairable and whole(t) and t.file.file_size_in_bytes in sizes for t in tasks_b]
    candidates = [t for t, m in zip(tasks_b, maybe, strict=True) if m]
    hashes_b: Counter[str] = Counter()
    offered: Counter[str] = Counter()
    candidate_hashes: list[str] = []
    for file_hash, _data, _direct in read_files(table_b, candidates, rows=False, sha256=True):
        assert file_hash is not None  # asked for
        candidate_hashes.append(file_hash)
        offered[file_hash] += 1
    hashes_b.update(offered)
    paired, own_a = _Digests(table_name), _Digests(table_name)
    hashes_a: Counter[str] = Counter()
    taken: Counter[str] = Counter()
    for file_hash, data, direct in read_files(table_a, tasks_a, rows=True, sha256=True):
        assert file_hash is not None
        hashes_a[file_hash] += 1
        if direct and taken[file_hash] < offered[file_hash]:
            taken[file_hash] += 1
            paired.add(data)
        else:
            own_a.add(data)
    # The rest of table_b in plan order: each with whether its hash is still to be counted.
    rest: list[tuple[FileScanTask, bool]] = []
    found = iter(candidate_hashes)
    for task, m in zip(tasks_b, maybe, strict=True):
        if not m:
            rest.append((task, True))
        elif taken[file_hash := next(found)] > 0:
            taken[file_hash] -= 1  # its twin's rows, digested above
        else:
            rest.append((task, False))
    own_b = _Digests(table_name)
    reads = read_files(table_b, [t for t, _count in rest], rows=True, sha256=True)
    for (_task, count), (file_hash, data, _direct) in zip(rest, reads, strict=True):
        if count and file_hash is not None:
            hashes_b[file_hash] += 1
        own_b.add(data)
    both = paired.flush()
    return _plus(both, own_a.flush()), hashes_a, _plus(both, own_b.flush()), hashes_b


def plan(table: Table) -> list[FileScanTask]:
    """The live data files of ``table`` (an unfiltered scan's plan), for :func:`digest_table`
    and :func:`files_identical` to share: the plan reads every manifest of the table."""
    return list(table.scan().plan_files())


def digest_history(table: Table, table_name: str) -> dict[GroupKey, GroupDigest]:
    """The table's digest groups from the snapshot summaries of its current lineage (no scan).

    Sums the ``igflow.digest`` (inline, or in its file when long) of every ancestor of the
    current snapshot (and of the expired ones before them, from the table's history files:
    :mod:`sinks.ledger_history`). A ``replace`` commit (compaction) carries no digest and changes no
    content, so it is skipped; any other commit without a digest (an overwrite, a delete, an
    append by another tool or an older release), or whose digest file is gone or damaged,
    makes the history unusable: raises :class:`HistoryUnavailable`.
    """
    out: dict[GroupKey, GroupDigest] = {}
    # The lineage's snapshots, and the commits of expired ones from its history files.
    try:
        history = read_history(table)
    except LedgerUnavailable as gone:
        msg = f"{table_name}: {gone}; verify by scanning instead"
        raise HistoryUnavailable(msg) from gone
    last = len(history.commits) - 1
    for at, commit in enumerate(history.commits):
        props = commit.properties
        if at == last and history.cut:
            msg = (
                f"{table_name}: the history before snapshot {commit.snapshot_id} expired;"
                " verify by scanning instead"
            )
            raise HistoryUnavailable(msg)
        if RUN_KEY in props:
            # igflow retention's delete: its rows are accounted for by the scan side
            # (removed_digests), as rows the history landed and retention removed.
            continue
        try:
            # Inline, or in a file beside the metadata when long (sinks.ledger_format).
            raw = summary_value(table, props, DIGEST_KEY)
        except LedgerUnavailable as gone:
            msg = f"{table_name}: {gone}; verify by scanning instead"
            raise HistoryUnavailable(msg) from gone
        if raw is None:
            if commit.operation == Operation.REPLACE.value:
                continue
            operation = commit.operation or "unknown"
            msg = (
                f"{table_name}: snapshot {commit.snapshot_id} ({operation}) has no digest;"
                " verify by scanning instead"
            )
            raise HistoryUnavailable(msg)
        for key, group in parse_summary(table_name, raw).items():
            have = out.get(key)
            out[key] = group if have is None else have + group
    return out


def compare(
    original: Mapping[GroupKey, GroupDigest], other: Mapping[GroupKey, GroupDigest]
) -> Report:
    """Every group of either side, in key order, with its status (no row-level detail)."""
    keys = sorted(set(original) | set(other))
    return Report([GroupResult(k, original.get(k), other.get(k)) for k in keys])


def _eq(column: str, value: str | int) -> BooleanExpression:
    return EqualTo(term=Reference(column), value=literal(value))


def _group_filter(table: Table, key: GroupKey) -> BooleanExpression:
    _name, tenant, partition = key
    names = {f.name for f in table.schema().fields}
    condition: BooleanExpression = AlwaysTrue()
    if "tenant_id" in names:
        # The "" tenant groups null tenants (records that did not decode) with empty ones.
        tenant_is: BooleanExpression = (
            Or(IsNull(term=Reference("tenant_id")), _eq("tenant_id", ""))
            if tenant == ""
            else _eq("tenant_id", tenant)
        )
        condition = And(condition, tenant_is)
    if "kafka_partition" in names:
        condition = And(condition, _eq("kafka_partition", partition))
    return condition


def _rows_by_hash(table: Table, key: GroupKey) -> dict[int, list[dict[str, Any]]]:
    data = table.scan(row_filter=_group_filter(table, key)).to_arrow()
    out: dict[int, list[dict[str, Any]]] = {}
    columns = data.column_names
    for row in data.to_pylist():
        out.setdefault(row_hash([row[c] for c in columns]), []).append(row)
    return out


def first_differences(
    table_a: Table, table_b: Table, group: GroupKey, limit: int = 5
) -> Differences:
    """Up to ``limit`` rows of ``group`` on each side that the other side lacks.

    Rows are told apart by their row hash and counted as a multiset: a row landed twice on one
    side and once on the other shows once.
    """
    rows_a, rows_b = _rows_by_hash(table_a, group), _rows_by_hash(table_b, group)

    def only(left: dict[int, list[dict[str, Any]]], right: Mapping[int, list[Any]]) -> list[Any]:
        out: list[dict[str, Any]] = []
        for h, rows in sorted(left.items(), key=lambda kv: _order(kv[1][0])):
            surplus = len(rows) - len(right.get(h, ()))
            out.extend(rows[: max(0, surplus)])
        return out[:limit]

    return Differences(only(rows_a, rows_b), only(rows_b, rows_a))


def _order(row: Mapping[str, Any]) -> tuple[int, int]:
    return (row.get("kafka_partition") or 0, row.get("kafka_offset") or 0)


def files_identical(
    table_a: Table,
    table_b: Table,
    tasks_a: Sequence[FileScanTask] | None = None,
    tasks_b: Sequence[FileScanTask] | None = None,
) -> tuple[int, int]:
    """``(n, total)``: how many of ``table_a``'s live data files have a byte-identical twin in
    ``table_b`` (each twin used once), out of ``table_a``'s ``total``. Reads every file once;
    ``tasks_a``/``tasks_b``: each table's :func:`plan`, if already made."""
    a = _file_hashes(table_a, tasks_a)
    return _twins(a, _file_hashes(table_b, tasks_b))


def _file_hashes(table: Table, tasks: Sequence[FileScanTask] | None) -> Counter[str]:
    if table.current_snapshot() is None:
        return Counter()
    return _scan(table, "", plan(table) if tasks is None else tasks, rows=False)[1]


def _twins(a: Counter[str], b: Counter[str]) -> tuple[int, int]:
    return sum((a & b).values()), sum(a.values())


def _load(catalog: Catalog, namespace: str, name: str) -> Table | None:
    try:
        return catalog.load_table((namespace, name))
    except NoSuchTableError:
        return None


def verify(
    settings: Settings,
    namespace: str,
    against: str | None,
    window: Window | None = None,
    *,
    tables: Sequence[str] | None = None,
    from_history: bool = False,
    limit: int = 5,
) -> Report:
    """Compare the verifiable tables of ``namespace`` (the original) with those of ``against``.

    - ``against`` given: the other side is a scan of ``against``; the original is a scan of
      ``namespace`` too, or its commit history when ``from_history``. Mismatched groups get their
      first differing rows; each table reports its byte-identical data files.
    - ``against`` None: the namespace's commit history against a scan of it (has anything
      changed the content since it was committed?). No row-level detail: history keeps no rows.

    A ``window`` cannot apply to history digests: asking for both raises :class:`IgflowError`,
    as does an unknown or unverifiable table name. A table absent on both sides is skipped.
    """

    verifiable = list(EVENT_TIME)
    names = list(tables) if tables else verifiable
    unknown = [n for n in names if n not in verifiable]
    if unknown:
        msg = f"cannot verify {', '.join(unknown)}: verifiable tables are {', '.join(verifiable)}"
        raise IgflowError(msg)
    use_history = from_history or against is None
    if use_history and window is not None:
        msg = "a window needs a scan: history digests are per commit, not per event time"
        raise IgflowError(msg)
    cat = catalog(settings)

    def digests(name: str, original: Table | None, other: Table | None) -> _Sides:
        # Against another namespace, each side's data files are hashed too (their twins), in
        # the same read of each file as its digest.
        files = against is not None and original is not None and other is not None
        if files and not use_history and window is None:
            assert original is not None and other is not None  # files says so
            return _scan_both(original, other, name, plan(original), plan(other))
        left, hashes_left = _side(original, name, window, history=use_history, files=files)
        return (left, hashes_left, *_side(other, name, window, history=False, files=files))

    report = Report([])
    for name in names:
        original = _load(cat, namespace, name)
        other = original if against is None else _load(cat, against, name)
        if original is None and other is None:
            continue
        left, hashes_left, right, hashes_right = digests(name, original, other)
        # Rows retention removed are landed rows accounted for: each scan side counts its own
        # table's (a history side already holds them). Not with a window: the running total
        # is per tenant and partition, not per event time.
        removed_left = _removed(original, window) if not use_history else {}
        removed_right = _removed(other, window)
        left, right = _plus(left, removed_left), _plus(right, removed_right)
        if removed_left or removed_right:
            report.retention_removed[name] = (_rows(removed_left), _rows(removed_right))
        part = compare(left, right)
        report.groups.extend(part.groups)
        if against is None or original is None or other is None:
            continue
        for g in part.mismatched:
            report.differences[g.key] = first_differences(original, other, g.key, limit)
        report.files[name] = _twins(hashes_left, hashes_right)
    return report


def _removed(table: Table | None, window: Window | None) -> dict[GroupKey, GroupDigest]:
    if table is None:
        return {}
    removed = removed_digests(table)
    if removed and window is not None:
        msg = (
            f"{table.name()[-1]}: retention removed rows from it; a window cannot account for "
            "them (their running total is per tenant and partition): verify without --window"
        )
        raise IgflowError(msg)
    return removed


def _plus(
    a: Mapping[GroupKey, GroupDigest], b: Mapping[GroupKey, GroupDigest]
) -> dict[GroupKey, GroupDigest]:
    out = dict(a)
    for key, group in b.items():
        have = out.get(key)
        out[key] = group if have is None else have + group
    return out


def _rows(groups: Mapping[GroupKey, GroupDigest]) -> int:
    return sum(g.count for g in groups.values())


def _side(
    table: Table | None, name: str, window: Window | None, *, history: bool, files: bool
) -> tuple[dict[GroupKey, GroupDigest], Counter[str]]:
    """One side's digest groups (from its history, or a scan) and, when ``files``, the SHA-256
    of each of its live data files; an unfiltered scan reads each file once for both."""
    if table is None:
        return {}, Counter()
    if history or window is not None:
        digests = digest_history(table, name) if history else digest_table(table, name, window)
        return digests, _file_hashes(table, None) if files else Counter()
    return _scan(table, name, plan(table), rows=True, sha256=files)
