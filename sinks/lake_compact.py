"""Data-file compaction: a lake table's small data files rewritten into few, rows unchanged.

The flow commits on a 0.5 s grid (``lake.batch_max_seconds``), one data file per partition and
commit: a steady flow adds about two files a second to each table, 172,800 a day, each a few
tens of kilobytes. A reader opens every file its scan keeps, so a day's scan pays for all of them.
:func:`compact_table` rewrites them, the way Iceberg's ``rewrite_data_files`` does:

- **What**: the current snapshot's data files smaller than ``0.75 x target_bytes``, grouped by
  partition (of the current spec: files written under an older spec are left as they are) and,
  with a ``fanout``, by size tier (below), in the order they were committed (data sequence
  number, then path), packed in that order into groups of at most ``target_bytes`` of input; a
  group of ``min_files`` files or more is read (pyiceberg's
  own scan: the table's current schema) and written again as one file (pyiceberg's writer and
  the table's write properties), its rows by tenant and then in Kafka order (:func:`clustered`)
  in row groups of :data:`ROW_GROUP_ROWS`: the layout by day and residency puts every tenant
  in each file, and a scan filtered on a tenant now skips the row groups whose statistics
  exclude it (``benchmarks/compaction.py``). A file at or above the threshold is never read.
- **Tiers, for compaction on a schedule** (``igflow compact --every``): packing every small
  file of a partition rewrites the files the last run wrote as long as they stay small, so a
  file of the day's partition would be read and written again every run until it reached the
  threshold (at 100 events/s and a run a minute, ~300 times). With ``fanout`` F, a file's tier is
  how many factors of F it lies below the threshold (tier 0 from ``threshold / F`` up, tier 1 a
  factor F below that, ...), and files only merge with their own tier, once ``min_files`` of
  them are there: with ``min_files >= F`` a merged file lands a tier up, so a row is rewritten
  at most once per tier, ``log_F(threshold / a commit's file)`` times (4-5 for the flow's files
  of a few to 30 KB and F = 8; 2.9x in all in ``tests/unit/test_compact_tiers.py``'s six
  hours), whatever the rate and the schedule (Cassandra's size-tiered compaction, Lucene's merge
  policy). ``fanout=0``: one tier, every small file (a run by hand).
- **The commit** is a ``replace`` snapshot (Iceberg's operation for a rewrite that changes no
  data): the groups' files deleted, the new ones added, the totals carried (records unchanged).
  It holds no ``igflow.*`` property, like the manifest rewrites (:mod:`sinks.lake_manifests`),
  so every reader of the lineage skips it: the ledger (the flow's exactly-once marks), the
  replay plan, ``verify --from-history`` and retention's accounting. The rows, hence every
  digest ``igflow verify`` computes, are the same before and after.
- **Races**: the commit lands only on the snapshot it read (our tables refuse pyiceberg's commit
  retry). When a flow's append (or anything else) lands first, the table is read again and the
  same new files are committed on top, if every file they replace is still live; a group whose
  files another rewrite or a retention delete removed meanwhile is dropped, its new files
  deleted. A flow's appender that loses to the compaction retries as after any lost race (its
  ledger is unchanged). Commits go every ``commit_bytes`` of input, so a failure loses at most
  that much work, and a long compaction shows progress.
- **What it changes for others**: older snapshots still name the small files (time travel reads
  them) until they expire (``lake.snapshots_kept``, ``igflow retention apply``), which deletes
  the files only they referenced. A replay of a compacted range writes the original's commits,
  not the compacted files: ``igflow verify`` then finds the digests equal and fewer data files
  byte-identical.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.manifest import DataFile, ManifestContent
from pyiceberg.table import FileScanTask, Table, TableProperties, Transaction
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update.snapshot import _OverwriteFiles
from pyiceberg.typedef import Record
from pyiceberg.utils.bin_packing import ListPacker
from pyiceberg.utils.properties import property_as_int

from core.errors import IgflowError
from sinks import lake_write

__all__ = [
    "CompactionCommit",
    "Group",
    "clustered",
    "compact_table",
    "data_files",
    "plan_compaction",
    "plan_files",
    "size_tier",
    "small_files",
]

log = logging.getLogger(__name__)

#: A file smaller than this share of the target is rewritten; larger ones are left alone.
SMALL = 0.75
#: The order of a rewritten file's rows (the columns a table has): a tenant's rows together, in
#: the Kafka order the flow committed them in.
CLUSTER_BY = ("tenant_id", "kafka_topic", "kafka_partition", "kafka_offset")
#: Rows per Parquet row group of a rewritten file (pyiceberg's default is 1,048,576): each group's
#: statistics bound its tenants, so a scan filtered on a tenant skips the others' groups.
ROW_GROUP_ROWS = 65_536


@dataclasses.dataclass(frozen=True, slots=True)
class Group:
    """Data files of one partition rewritten as one, in this order."""

    partition: tuple[object, ...]
    files: tuple[DataFile, ...]

    @property
    def bytes(self) -> int:
        return sum(f.file_size_in_bytes for f in self.files)

    @property
    def rows(self) -> int:
        return sum(f.record_count for f in self.files)


@dataclasses.dataclass(frozen=True, slots=True)
class CompactionCommit:
    """One compaction commit: the files it replaced and added, their rows, its snapshot."""

    snapshot_id: int
    replaced: int
    added: int
    rows: int
    bytes_before: int
    bytes_after: int
    attempts: int
    #: Groups dropped because a file of theirs was gone by the commit (rewritten or deleted).
    dropped: int


def _key(partition: Record) -> tuple[object, ...]:
    return tuple(partition[i] for i in range(len(partition)))


def _live(table: Table) -> list[tuple[int, DataFile]]:
    """The current snapshot's live data files with their data sequence numbers. Raises
    ``IgflowError`` when it has delete files (pyiceberg writes none; rewriting the data files of
    such a table would need their deletes applied)."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return []
    out: list[tuple[int, DataFile]] = []
    for manifest in snapshot.manifests(table.io):
        if manifest.content != ManifestContent.DATA:
            msg = f"{table.name()}: has delete files; compaction rewrites data-only tables"
            raise IgflowError(msg)
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            out.append((entry.sequence_number or 0, entry.data_file))
    return out


def size_tier(size: int, threshold: float, fanout: int) -> int:
    """The tier of a file of ``size`` bytes below ``threshold``: 0 from ``threshold / fanout``
    up, 1 a factor ``fanout`` below that, and so on (``fanout`` 0 or 1: always 0)."""
    if fanout < 2:
        return 0
    tier = 0
    bound = threshold / fanout
    while size < bound and tier < 64:
        tier += 1
        bound /= fanout
    return tier


def plan_compaction(
    table: Table, target_bytes: int, *, min_files: int = 2, fanout: int = 0
) -> list[Group]:
    """The groups :func:`compact_table` would rewrite now (the module docstring), oldest
    partition first, and within a partition its largest files' tier first."""
    return plan_files(
        _live(table), table.spec().spec_id, target_bytes, min_files=min_files, fanout=fanout
    )


def plan_files(
    live: Sequence[tuple[int, DataFile]],
    spec_id: int,
    target_bytes: int,
    *,
    min_files: int = 2,
    fanout: int = 0,
) -> list[Group]:
    """:func:`plan_compaction` of the live data files ``live`` (with their data sequence numbers)
    of a table whose current spec is ``spec_id``."""
    if target_bytes < 1 or min_files < 2 or fanout < 0:
        msg = (
            "target_bytes must be >= 1, min_files >= 2 and fanout >= 0, got "
            f"{target_bytes}, {min_files}, {fanout}"
        )
        raise ValueError(msg)
    small = SMALL * target_bytes
    #: (partition, tier) -> its files with their sequence numbers and paths
    tiers: dict[tuple[tuple[object, ...], int], list[tuple[int, str, DataFile]]]
    tiers = defaultdict(list)
    for sequence, data_file in live:
        size = data_file.file_size_in_bytes
        if data_file.spec_id == spec_id and size < small:
            key = (_key(data_file.partition), size_tier(size, small, fanout))
            tiers[key].append((sequence, data_file.file_path, data_file))
    groups: list[Group] = []
    for partition, tier in sorted(tiers, key=lambda k: (repr(k[0]), k[1])):
        entries = tiers[partition, tier]
        if len(entries) < min_files:
            continue
        files = [f for _s, _p, f in sorted(entries, key=lambda t: (t[0], t[1]))]
        packer: ListPacker[DataFile] = ListPacker(
            target_weight=target_bytes, lookback=1, largest_bin_first=False
        )
        for packed in packer.pack(files, lambda f: f.file_size_in_bytes):
            if len(packed) >= min_files:
                groups.append(Group(partition, tuple(packed)))
    return groups


def clustered(rows: pa.Table) -> pa.Table:
    """``rows`` sorted by :data:`CLUSTER_BY` (the columns it has; stable: ties keep their
    order), so that a tenant's rows are together in a rewritten file."""
    keys = [(name, "ascending") for name in CLUSTER_BY if name in rows.column_names]
    return rows.sort_by(keys) if keys else rows


def _rewrite(table: Table, group: Group, by_tenant: bool = True) -> list[DataFile]:
    """``group``'s rows written as new data files of ``table`` (one, unless they exceed the
    table's target file size): :func:`clustered` in row groups of at most
    :data:`ROW_GROUP_ROWS` when ``by_tenant``, else in the order the files held them in the
    table's own row groups."""
    tasks = [FileScanTask(f) for f in group.files]
    rows = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(tasks)
    if rows.num_rows != group.rows:
        msg = f"{table.name()}: read {rows.num_rows} rows of {group.rows} from a group's files"
        raise RuntimeError(msg)
    metadata = table.metadata
    limit = property_as_int(
        metadata.properties,
        TableProperties.PARQUET_ROW_GROUP_LIMIT,
        TableProperties.PARQUET_ROW_GROUP_LIMIT_DEFAULT,
    )
    if by_tenant and (limit is None or limit > ROW_GROUP_ROWS):  # a smaller own limit stands
        properties = dict(metadata.properties)
        properties[TableProperties.PARQUET_ROW_GROUP_LIMIT] = str(ROW_GROUP_ROWS)
        metadata = metadata.model_copy(update={"properties": properties})
    if by_tenant:
        rows = clustered(rows)
    written = list(_dataframe_to_data_files(metadata, rows, table.io, uuid.uuid4()))
    for data_file in written:
        if _key(data_file.partition) != group.partition:
            msg = f"{table.name()}: a rewritten file left its partition {group.partition}"
            raise RuntimeError(msg)
    return written


class _ReplaceFiles(_OverwriteFiles):
    """pyiceberg's overwrite of exactly the files named (each must be live), recorded as a
    ``replace``: its summary is the overwrite's, totals carried, under the rewrite's operation."""

    def __init__(self, transaction: Transaction, table: Table) -> None:
        super().__init__(Operation.OVERWRITE, transaction, table.io)

    def _summary(self, snapshot_properties: dict[str, str] | None = None) -> Summary:
        summary = super()._summary(snapshot_properties or {})
        return Summary(operation=Operation.REPLACE, **summary.additional_properties)


def _commit(table: Table, groups: Sequence[Group], added: Sequence[DataFile]) -> int:
    with lake_write.transaction(table) as tx:
        producer = _ReplaceFiles(tx, table)
        for group in groups:
            for data_file in group.files:
                producer.delete_data_file(data_file)
        for data_file in added:
            producer.append_data_file(data_file)
        producer.commit()
    snapshot = table.current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id


def _delete_new(table: Table, done: Sequence[tuple[Group, list[DataFile]]]) -> None:
    """Delete the new files of groups no commit took."""
    for _group, new in done:
        for data_file in new:
            table.io.delete(data_file.file_path)


def _land(
    table: Table,
    done: list[tuple[Group, list[DataFile]]],
    attempts: int,
    reload: Callable[[], Table],
) -> tuple[Table, CompactionCommit | None]:
    """Commit the rewritten groups. After a lost race (``CommitFailedException``), or a replaced
    file no longer live on the table read (pyiceberg's ``ValidationException``, before it writes
    anything), read the table again and commit the groups whose files are all still live (the
    others' new files deleted)."""
    dropped = 0
    for attempt in range(1, attempts + 1):
        groups = [g for g, _new in done]
        added = [f for _g, new in done for f in new]
        try:
            snapshot_id = _commit(table, groups, added)
        except (CommitFailedException, ValidationException) as exc:
            log.info(
                "compaction of %s did not land (attempt %d of %d): %s",
                table.name(),
                attempt,
                attempts,
                exc,
                extra={"op": "lake.compact"},
            )
            if isinstance(exc, CommitFailedException):
                time.sleep(random.uniform(0.05, 0.25) * attempt)
            table = reload()
            live = {f.file_path for _s, f in _live(table)}
            kept = [(g, new) for g, new in done if all(f.file_path in live for f in g.files)]
            _delete_new(table, [(g, new) for g, new in done if (g, new) not in kept])
            dropped += len(done) - len(kept)
            done = kept
            if not done:
                return table, None
            continue
        return table, CompactionCommit(
            snapshot_id=snapshot_id,
            replaced=sum(len(g.files) for g in groups),
            added=len(added),
            rows=sum(g.rows for g in groups),
            bytes_before=sum(g.bytes for g in groups),
            bytes_after=sum(f.file_size_in_bytes for f in added),
            attempts=attempt,
            dropped=dropped,
        )
    _delete_new(table, done)
    msg = f"{table.name()}: compaction lost {attempts} commit races in a row"
    raise CommitFailedException(msg)


def compact_table(
    table: Table,
    reload: Callable[[], Table],
    *,
    target_bytes: int,
    min_files: int = 2,
    commit_bytes: int = 256 * 1024 * 1024,
    attempts: int = 16,
    by_tenant: bool = True,
    fanout: int = 0,
    progress: Callable[[CompactionCommit], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[CompactionCommit]:
    """Rewrite ``table``'s small data files (the module docstring; ``fanout``: by size tier),
    committing every ``commit_bytes`` of input; ``reload`` reads the table again after a lost
    race; ``by_tenant=False`` keeps the files' row order and the table's row groups (the
    baseline of ``benchmarks/compaction.py``). ``stop``, asked before each group: when true,
    what was rewritten is committed and the rest left for another run. The commits made, each
    also given to ``progress`` as it lands."""
    commits: list[CompactionCommit] = []
    done: list[tuple[Group, list[DataFile]]] = []
    pending = 0

    def land() -> None:
        nonlocal table, done, pending
        landing, done, pending = done, [], 0  # out of the rewrite's cleanup once handed over
        table, commit = _land(table, landing, attempts, reload)
        if commit is not None:
            commits.append(commit)
            if progress is not None:
                progress(commit)

    try:
        for group in plan_compaction(table, target_bytes, min_files=min_files, fanout=fanout):
            if stop is not None and stop():
                break
            done.append((group, _rewrite(table, group, by_tenant)))
            pending += group.bytes
            if pending >= commit_bytes:
                land()
    except BaseException:
        # A rewrite failed (or the process is told to stop): the groups rewritten since the last
        # commit are in no commit, so their new files go. (A commit that failed otherwise than
        # by a lost race may have landed: its files stay, at worst orphans.)
        _delete_new(table, done)
        raise
    if done:
        land()
    return commits


def data_files(table: Table) -> int:
    """How many data files ``table``'s current snapshot lists: its summary's total (every commit
    of ours carries it), else counted from its manifests."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return 0
    total = (snapshot.summary.additional_properties if snapshot.summary else {}).get(
        "total-data-files"
    )
    return int(total) if total is not None else len(_live(table))


def small_files(table: Table, target_bytes: int) -> tuple[int, int]:
    """(live data files, of which below the rewrite threshold) of ``table``'s current snapshot."""
    files = [f for _s, f in _live(table)]
    return len(files), sum(f.file_size_in_bytes < SMALL * target_bytes for f in files)
