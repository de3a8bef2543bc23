"""Which settings each lake commit was computed with: ``igflow.settings`` in its snapshot summary.

The value is the SHA-256 of the flow's deciding settings in their canonical form
(:class:`core.output_settings.OutputSettings`); the form itself is in a file beside the table
metadata named by that hash, ``metadata/igflow-settings-<sha256>.json``, written once per writer
(the same settings, the same file). So a summary grows by one 64-digit hash per commit, whatever
the number of tenants or settings, and the metadata file (rewritten at each commit, holding every
retained snapshot's summary) by no more; the full form is stored once per change of settings.
Keep ``igflow-*`` files out of orphan-file clean-ups, as the ledger's checkpoints.

:func:`settings_history` walks a table's lineage and tells, per commit, the record it names and
the offsets of the rows it appended (from its digest's groups, :mod:`core.digest`): a replay
applies the record of the commits its range touches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

from pyiceberg.table import Table

from core.digest import DIGEST_KEY, parse_summary
from core.output_settings import OutputSettings, ReplaySettingsError, SettingsReason
from sinks.ledger_format import Ledger, properties_ledger, read_file, summary_value, write_file
from sinks.ledger_history import read_history

__all__ = ["SETTINGS_KEY", "CommitSettings", "read_settings", "settings_history", "write_settings"]

#: Snapshot-summary key: the SHA-256 of the commit's deciding settings.
SETTINGS_KEY = "igflow.settings"
_KIND = "settings"


def write_settings(table: Table, record: OutputSettings) -> str:
    """Write ``record``'s file beside ``table``'s metadata (idempotent); its SHA-256."""
    _path, sha = write_file(table, _KIND, record.dump().encode())
    return sha


def read_settings(table: Table, sha: str) -> OutputSettings:
    """The record named ``sha`` in ``table``'s metadata folder;
    :class:`~core.output_settings.ReplaySettingsError` when it is gone, damaged or unreadable."""
    path = f"{table.metadata.location.rstrip('/')}/metadata/igflow-{_KIND}-{sha}.json"
    data = read_file(table, path, sha)
    if data is None:
        msg = (
            f"{table.name()}: the settings record {path} is gone or damaged; keep igflow-* "
            "files out of orphan-file clean-ups (see DEVELOPERS.md)"
        )
        raise ReplaySettingsError(SettingsReason.REPLAY_SETTINGS_UNREADABLE, msg)
    return OutputSettings.parse(data.decode())


@dataclasses.dataclass(frozen=True, slots=True)
class CommitSettings:
    """One commit of a table: the settings record it names (``None``: none, landed before
    records existed) and the Kafka offsets of the rows it appended, ``(partition, first, last)``
    (both inclusive) per group of its digest (a tenant's rows of one partition,
    :mod:`core.digest`); for a commit older than digests, per ledger lane it raised, from one
    past the lane's previous mark."""

    snapshot_id: int
    sha256: str | None
    spans: tuple[tuple[int, int, int], ...]

    def touches(self, start: Mapping[int, int], end: Mapping[int, int]) -> bool:
        """Whether it appended a row at an offset in ``[start[p], end[p])`` of a partition
        ``p`` (a partition named only in ``start`` has no end; only in ``end``, starts at 0)."""
        for partition, first, last in self.spans:
            if partition not in start and partition not in end:
                continue
            low, high = start.get(partition, 0), end.get(partition)
            if last >= low and (high is None or first < high):
                return True
        return False


def settings_history(table: Table, topic: str | None = None) -> Iterator[CommitSettings]:
    """Every commit of ``table``'s current lineage that appended rows of ``topic`` (``None``:
    of any), oldest first. (The digest's groups do not name the topic: the flow's tables hold
    one.)"""
    # The lineage's snapshots, and the commits of expired ones from its history files.
    commits = read_history(table).commits
    previous: Ledger = {}
    for commit in reversed(commits):  # newest first
        entry = properties_ledger(table, commit.properties)
        if entry is None:
            continue
        lanes, delta = entry
        raised = [
            (partition, previous.get((t, partition, lane), -1) + 1, mark)
            for (t, partition, lane), mark in sorted(lanes.items())
            if topic in (None, t) and mark > previous.get((t, partition, lane), -1)
        ]
        # A delta holds the lanes it raised; the older format the whole ledger.
        if delta:
            previous.update(lanes)
        else:
            previous = dict(lanes)
        if not raised:
            continue
        props = commit.properties
        digest = summary_value(table, props, DIGEST_KEY)
        spans = (
            tuple(
                sorted(
                    (partition, group.min_offset, group.max_offset)
                    for (_t, _tenant, partition), group in parse_summary("", digest).items()
                )
            )
            if digest is not None
            else tuple(raised)
        )
        sha = props.get(SETTINGS_KEY)
        yield CommitSettings(commit.snapshot_id, None if sha is None else str(sha), spans)
