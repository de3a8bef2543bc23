"""Manifest compaction: a lake table's manifests rewritten into few as the flow goes.

Every fast append (the flow's) adds one manifest, and every commit's manifest list names them
all, so a commit costs more with every append before it, even with the snapshots expired
(DEVELOPERS.md "A commit costs more with every snapshot the table keeps"). pyiceberg's merging
on every append (``commit.manifest-merge.enabled``) bounds them but rewrites at every commit, so
a short run's commits cost twice as much. Instead, after a commit, when the current snapshot
lists more than ``lake.manifests_kept`` data manifests, the appender
(:meth:`sinks.iceberg.IcebergAppender.compact`) rewrites them in a commit of its own
(:func:`compact_manifests`): the manifests of the lowest size tier (by live files: 1-7, 8-63,
64-511, ...) that holds two or more are packed, oldest first, into bins of the table's manifest
target size (``commit.manifest.target-size-bytes``, 8 MiB, as pyiceberg's merge packs them), and
each bin of more than one manifest becomes one manifest of the same entries, marked *existing*
with their snapshot ids and sequence numbers (:func:`_bins`: so a data file is rewritten about
once per tier it climbs, not at every compaction). A full manifest is left alone, so one
compaction rewrites at most a bin's worth of entries (a table of ten thousand appends is a few
manifests, and their number grows by one per 8 MiB of manifests).

The commit is a ``replace`` snapshot (Iceberg's operation for a rewrite: no data change) with
pyiceberg's totals carried from its parent and no ``igflow.*`` property: every reader that walks
the lineage already skips it: the ledger (:func:`sinks.ledger_format.read_ledger`: no delta, no
checkpoint), the replay plan and the settings history (no ledger), ``verify --from-history``
(a ``replace`` without a digest), the marks and topic ids (the newest snapshot recording them),
retention's expiry (not a ledger base). The history chain lists it as a commit with no
properties. Data files are untouched: scans, time travel and the files a replay writes are the
same.

It lands only on the snapshot it read (its requirement is the branch head; our tables refuse
pyiceberg's commit retry): an append that landed meanwhile makes it fail with
``CommitFailedException`` and pyiceberg deletes the manifests it wrote; the appender tries once,
logs a lost race or failure and tries again after its next commit. An append that loses to it
retries as after any lost race (the ledger is the same).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.manifest import ManifestContent, ManifestEntry, ManifestFile
from pyiceberg.table import Table, TableProperties, Transaction
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update.snapshot import _SnapshotProducer
from pyiceberg.utils.bin_packing import ListPacker
from pyiceberg.utils.properties import property_as_int

from sinks import lake_write

__all__ = ["CompactResult", "compact_manifests", "data_manifests"]

#: The snapshot summary totals a rewrite carries from its parent unchanged (it adds and removes
#: no file).
_TOTALS = (
    "total-data-files",
    "total-delete-files",
    "total-records",
    "total-files-size",
    "total-position-deletes",
    "total-equality-deletes",
)


@dataclasses.dataclass(frozen=True, slots=True)
class CompactResult:
    """One compaction: the manifests before and after, and the entries rewritten."""

    snapshot_id: int
    before: int
    after: int
    entries: int


def data_manifests(table: Table) -> list[ManifestFile]:
    """The data manifests the current snapshot lists (``[]`` for an empty table)."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return []
    return [m for m in snapshot.manifests(table.io) if m.content == ManifestContent.DATA]


class _RewriteManifests(_SnapshotProducer["_RewriteManifests"]):
    """A ``replace`` snapshot: the parent's manifests, each bin of ``bins`` as one manifest."""

    def __init__(self, transaction: Transaction, table: Table, bins: list[list[ManifestFile]]):
        super().__init__(Operation.REPLACE, transaction, table.io)
        self._bins = bins
        self.entries = 0
        self.created = 0
        self.replaced = 0

    def _deleted_entries(self) -> list[ManifestEntry]:
        return []

    def _existing_manifests(self) -> list[ManifestFile]:
        parent = self._transaction.table_metadata.snapshot_by_id(self._parent_snapshot_id or -1)
        if parent is None:
            return []
        listed = {m.manifest_path for m in parent.manifests(self._io)}
        if any(m.manifest_path not in listed for group in self._bins for m in group):
            # Only on a retry on top of another commit (our tables refuse pyiceberg's): the
            # manifests read are no longer the parent's, and merging them could list a file twice.
            msg = "the table's manifests changed since they were read"
            raise CommitFailedException(msg)
        merged: dict[str, ManifestFile] = {}
        for group in self._bins:
            if len(group) < 2:
                continue
            with self.new_manifest_writer(self.spec(group[0].partition_spec_id)) as writer:
                for manifest in group:
                    for entry in manifest.fetch_manifest_entry(self._io, discard_deleted=True):
                        writer.existing(entry)
                        self.entries += 1
            out = writer.to_manifest_file()
            self.created += 1
            self.replaced += len(group)
            for manifest in group:
                merged[manifest.manifest_path] = out
        # The parent's order, each merged bin where its first manifest was; delete manifests and
        # manifests in no merged bin as they were.
        result: list[ManifestFile] = []
        placed: set[str] = set()
        for manifest in parent.manifests(self._io):
            new = merged.get(manifest.manifest_path, manifest)
            if new.manifest_path not in placed:
                placed.add(new.manifest_path)
                result.append(new)
        return result

    def _summary(self, snapshot_properties: dict[str, str] | None = None) -> Summary:
        parent_id = self._parent_snapshot_id
        parent = self._transaction.table_metadata.snapshot_by_id(parent_id or -1)
        previous = parent.summary if parent is not None and parent.summary is not None else None
        totals = {k: previous[k] for k in _TOTALS if previous is not None and previous[k]}
        return Summary(
            operation=Operation.REPLACE,
            **totals,
            **{
                "manifests-created": str(self.created),
                "manifests-replaced": str(self.replaced),
                "entries-processed": str(self.entries),
            },
        )


#: Manifests of a tier hold ``TIER**t`` to ``TIER**(t+1) - 1`` live files.
TIER = 8


def _files(manifest: ManifestFile) -> int:
    return (manifest.added_files_count or 0) + (manifest.existing_files_count or 0)


def _tier(manifest: ManifestFile) -> int:
    return int(math.log(max(1, _files(manifest)), TIER))


def _bins(table: Table, manifests: list[ManifestFile]) -> list[list[ManifestFile]]:
    """What one compaction merges: the manifests of the lowest tier (by live files, one spec)
    holding two or more that are not full (``commit.manifest.target-size-bytes``), packed
    oldest first into bins of that size; ``[]``: none.

    Size tiers, so that each file is rewritten about once per tier it climbs (a few times over
    a table's life, not at every compaction) while a table keeps about ``kept`` manifests: the
    appends' small manifests merge into one of the next tier, and a tier is merged once the
    tiers below it hold fewer than two. A manifest of the target size is never rewritten again:
    one compaction rewrites at most that much."""
    target = property_as_int(
        table.metadata.properties,
        TableProperties.MANIFEST_TARGET_SIZE_BYTES,
        TableProperties.MANIFEST_TARGET_SIZE_BYTES_DEFAULT,
    )
    assert target is not None
    tiers: dict[tuple[int, int], list[ManifestFile]] = defaultdict(list)
    for manifest in manifests:
        if manifest.manifest_length < target:
            tiers[(_tier(manifest), manifest.partition_spec_id)].append(manifest)
    for key in sorted(tiers):
        group = tiers[key]
        if len(group) < 2:
            continue
        packer: ListPacker[ManifestFile] = ListPacker(
            target_weight=target, lookback=1, largest_bin_first=False
        )
        bins = [b for b in packer.pack_end(group, lambda m: m.manifest_length) if len(b) > 1]
        if bins:
            return bins
    return []


def compact_manifests(table: Table, kept: int) -> CompactResult | None:
    """When ``table``'s current snapshot lists more than ``kept`` data manifests, rewrite them
    into few in one ``replace`` commit on that snapshot (the module docstring); ``None`` when
    there is nothing to do. Raises ``CommitFailedException`` when another commit landed since
    ``table`` was read (the rewrite did not land)."""
    manifests = data_manifests(table)
    if len(manifests) <= kept:
        return None
    bins = _bins(table, manifests)
    if not bins:
        return None  # no tier holds two manifests to merge
    with lake_write.transaction(table) as tx:  # its metadata computed once, not per read
        producer = _RewriteManifests(tx, table, bins)
        producer.commit()
    return CompactResult(
        producer.snapshot_id, len(manifests), len(data_manifests(table)), producer.entries
    )
