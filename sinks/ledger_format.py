"""How a lake table's ledger is stored: a delta per commit, a checkpoint file now and then.

The ledger (:mod:`sinks.iceberg`) is the highest committed Kafka offset per (topic, partition,
lane), and a lane is per tenant: it has a mark per tenant and partition. Stored whole in every
snapshot summary (``igflow.offsets``, the format before this module), it made each summary, and
the table metadata file that holds every snapshot's summary and is rewritten at each commit, grow
with the number of tenants. Now each commit stores:

- ``igflow.offsets.delta`` (always): the lanes *this* commit raised, with their new marks; as
  many as the lanes of its rows, whatever the number of tenants.
- ``igflow.offsets.checkpoint`` (every :data:`CHECKPOINT_EVERY` commits): a pointer to a file
  beside the table metadata holding the whole ledger after this commit, as
  ``{"lanes": n, "path": "...", "sha256": "..."}``. The file is named by its SHA-256, so two
  writers that write the same ledger write the same file.

Reading the ledger at a snapshot walks its ancestors, newest first, collecting deltas until a
*base*: a checkpoint whose file reads back with its hash, a whole ledger in the old format (a
lake written before this format reads, and continues, unchanged), a snapshot this process read or
wrote before (:class:`LedgerState`), or the start of the lineage (the empty ledger). The ledger is
the base raised by the deltas. The walk is at most :data:`CHECKPOINT_EVERY` commits long; a
checkpoint file that is gone or does not match its hash is walked past (to an older base), never
trusted. Snapshots of other tools (no ledger key) raise nothing and are passed over; one that
raised nothing but carries a checkpoint (``igflow retention``'s deletes) is a base like any.

A commit whose rows touch many lanes (a first commit over 10,000 tenants) would still carry a
long delta, and its digest (``igflow.digest``, one group per tenant and partition of its rows) a
long one too; the table metadata file keeps every retained snapshot's summary and is rewritten
at each commit. So a value longer than :data:`INLINE_MAX_BYTES` goes to a file beside the
metadata, named by its hash, and the summary holds ``<key>.file``: ``{"bytes": n, "path": "...",
"sha256": "..."}`` (:func:`spill`, :func:`summary_value`). A commit that spills its delta also
writes a checkpoint, so the walk stops there without reading the delta; the delta file is read
by the replay plan, and a digest file by ``igflow verify --from-history``. A spilled value whose
file is gone or damaged raises :class:`LedgerUnavailable` (never guessed).

Exactness under concurrency: Iceberg commits are optimistic and our tables refuse pyiceberg's own
retry, so a commit lands only on top of the snapshot its writer read the ledger at; its delta is
then exactly what it raised over that ledger, and the lineage's deltas add up to the ledger.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot, ancestors_of

from core.errors import FatalSinkError

__all__ = [
    "CHECKPOINT_EVERY",
    "CHECKPOINT_KEY",
    "DELTA_KEY",
    "FILE_SUFFIX",
    "INLINE_MAX_BYTES",
    "LEDGER_KEY",
    "Ledger",
    "LedgerState",
    "LedgerUnavailable",
    "dump_ledger",
    "has_value",
    "lineage_cut",
    "parse_ledger",
    "properties_ledger",
    "read_file",
    "read_ledger",
    "read_pointed",
    "snapshot_ledger",
    "spill",
    "summary_value",
    "write_checkpoint",
    "write_file",
]

log = logging.getLogger(__name__)

#: The whole ledger in one snapshot summary: ``{"topic": {"partition": {"lane": offset}}}`` (a
#: bare offset reads as lane ``""``). Written before :data:`DELTA_KEY`; read still.
LEDGER_KEY = "igflow.offsets"
#: The lanes one commit raised, in the same shape as :data:`LEDGER_KEY`.
DELTA_KEY = "igflow.offsets.delta"
#: ``{"lanes": n, "path": "...", "sha256": "..."}``: the whole ledger after this commit, in a file.
CHECKPOINT_KEY = "igflow.offsets.checkpoint"
#: A checkpoint once the walk from the last base would be this many commits long.
CHECKPOINT_EVERY = 32
#: A summary value longer than this (UTF-8 bytes) is kept in a file (:func:`spill`).
INLINE_MAX_BYTES = 8192
#: The summary key of a spilled value: ``<key>.file``.
FILE_SUFFIX = ".file"

#: (topic, partition, lane) -> highest committed offset.
Ledger = dict[tuple[str, int, str], int]


class LedgerUnavailable(FatalSinkError):
    """The ledger cannot be read exactly: its history is cut off before any base."""


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerState:
    """The ledger at one snapshot (``None``: an empty table), and how many deltas it is past its
    base. ``ledger`` is shared: never mutate it."""

    snapshot_id: int | None
    ledger: Mapping[tuple[str, int, str], int]
    depth: int


def parse_ledger(raw: str) -> Ledger:
    """A :data:`LEDGER_KEY` or :data:`DELTA_KEY` value (or a checkpoint file) as a ledger."""
    data: dict[str, dict[str, int | dict[str, int]]] = json.loads(raw)
    out: Ledger = {}
    for topic, parts in data.items():
        for partition, marks in parts.items():
            if isinstance(marks, int):  # written before lanes existed
                marks = {"": marks}
            for lane, offset in marks.items():
                out[(topic, int(partition), lane)] = int(offset)
    return out


def dump_ledger(entries: Mapping[tuple[str, int, str], int]) -> str:
    """Sorted, compact JSON: a replay of the same commits writes the same bytes."""
    data: dict[str, dict[str, dict[str, int]]] = {}
    for (topic, partition, lane), offset in sorted(entries.items()):
        data.setdefault(topic, {}).setdefault(str(partition), {})[lane] = offset
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _properties(snapshot: Snapshot) -> Mapping[str, Any]:
    return snapshot.summary.additional_properties if snapshot.summary is not None else {}


def write_file(table: Table, kind: str, data: bytes) -> tuple[str, str]:
    """``data`` in a file of the table's metadata folder named by its hash: (path, sha256)."""
    sha = hashlib.sha256(data).hexdigest()
    path = f"{table.metadata.location.rstrip('/')}/metadata/igflow-{kind}-{sha}.json"
    with table.io.new_output(path).create(overwrite=True) as out:
        out.write(data)
    return path, sha


def read_file(table: Table, path: str, sha: str) -> bytes | None:
    """The file's bytes, or ``None`` (logged) if it is gone or does not match its hash."""
    try:
        with table.io.new_input(path).open() as stream:
            data = stream.read()
    except (OSError, ValueError) as exc:
        log.warning("lake metadata file %s unreadable (%s)", path, exc)
        return None
    if hashlib.sha256(data).hexdigest() != sha:
        log.warning("lake metadata file %s does not match its hash", path)
        return None
    return data


def spill(table: Table, properties: dict[str, str], key: str, value: str) -> bool:
    """Put ``value`` under ``key`` in ``properties``, or, when longer than
    :data:`INLINE_MAX_BYTES`, in a file that ``<key>.file`` points at (then True)."""
    data = value.encode()
    if len(data) <= INLINE_MAX_BYTES:
        properties[key] = value
        return False
    kind = key.removeprefix("igflow.").replace(".", "-")
    path, sha = write_file(table, kind, data)
    pointer = {"bytes": len(data), "path": path, "sha256": sha}
    properties[key + FILE_SUFFIX] = json.dumps(pointer, separators=(",", ":"), sort_keys=True)
    return True


def has_value(props: Mapping[str, Any], key: str) -> bool:
    """Whether a summary holds ``key``, inline or spilled."""
    return key in props or key + FILE_SUFFIX in props


def summary_value(table: Table, props: Mapping[str, Any], key: str) -> str | None:
    """A summary's ``key``, inline or from its file (``None``: neither);
    :class:`LedgerUnavailable` if the file is gone or damaged."""
    inline = props.get(key)
    if inline is not None:
        return str(inline)
    raw = props.get(key + FILE_SUFFIX)
    if raw is None:
        return None
    return read_pointed(table, json.loads(raw), f"holding a snapshot's {key}").decode()


def read_pointed(table: Table, pointer: Mapping[str, Any], what: str) -> bytes:
    """The bytes of the file a summary's pointer (``{"path": ..., "sha256": ...}``) names;
    :class:`LedgerUnavailable`, saying what the file held (``what``), if it is gone or
    damaged."""
    data = read_file(table, str(pointer["path"]), str(pointer["sha256"]))
    if data is None:
        msg = (
            f"{table.name()}: the file {pointer['path']} {what} is gone or damaged; keep "
            "igflow-* files out of orphan-file clean-ups (see DEVELOPERS.md)"
        )
        raise LedgerUnavailable(msg)
    return data


def lineage_cut(table: Table, oldest: Snapshot) -> bool:
    """Whether the lineage before ``oldest`` (the oldest snapshot a walk reached) expired: its
    parent is gone, or, since pyiceberg's expiry clears the parent id of the snapshots it
    orphans, it starts past the table's first sequence number (format v2)."""
    parent = oldest.parent_snapshot_id
    if parent is not None:
        return table.metadata.snapshot_by_id(parent) is None
    return (oldest.sequence_number or 0) > 1


def snapshot_ledger(table: Table, snapshot: Snapshot) -> tuple[Ledger, bool] | None:
    """What one snapshot records of the ledger: ``(lanes, True)`` for the lanes it raised (this
    format), ``(ledger, False)`` for a whole ledger (the old one), ``None`` for nothing."""
    return properties_ledger(table, _properties(snapshot))


def properties_ledger(table: Table, props: Mapping[str, Any]) -> tuple[Ledger, bool] | None:
    """:func:`snapshot_ledger` of a snapshot's summary properties (or of a history file's
    record of them: :mod:`sinks.ledger_history`)."""
    delta = summary_value(table, props, DELTA_KEY)
    if delta is not None:
        return parse_ledger(delta), True
    whole = props.get(LEDGER_KEY)
    if whole is not None:
        return parse_ledger(whole), False
    return None


def write_checkpoint(table: Table, entries: Mapping[tuple[str, int, str], int]) -> str:
    """Write ``entries`` to a file in the table's metadata folder; the :data:`CHECKPOINT_KEY`
    value that points at it."""
    path, sha = write_file(table, "ledger", dump_ledger(entries).encode())
    return json.dumps(
        {"lanes": len(entries), "path": path, "sha256": sha}, separators=(",", ":"), sort_keys=True
    )


def _read_checkpoint(table: Table, raw: str) -> Ledger | None:
    pointer = json.loads(raw)
    data = read_file(table, str(pointer["path"]), str(pointer["sha256"]))
    if data is None:
        log.warning("ledger checkpoint %s unusable: reading further back", pointer["path"])
        return None
    return parse_ledger(data.decode())


def read_ledger(table: Table, cached: LedgerState | None = None) -> LedgerState:
    """The ledger at ``table``'s current snapshot (see the module docstring). ``cached``: a state
    read or written before; when it is an ancestor, the walk stops there."""
    current = table.current_snapshot()
    if current is None:
        return LedgerState(None, {}, 0)
    if cached is not None and cached.snapshot_id == current.snapshot_id:
        return cached
    deltas: list[Ledger] = []
    base: Mapping[tuple[str, int, str], int] | None = None
    base_depth = 0
    oldest: Snapshot = current
    for snapshot in ancestors_of(current, table.metadata):
        oldest = snapshot
        if cached is not None and snapshot.snapshot_id == cached.snapshot_id:
            base, base_depth = cached.ledger, cached.depth
            break
        props = _properties(snapshot)
        if not has_value(props, DELTA_KEY):
            whole = props.get(LEDGER_KEY)
            if whole is not None:  # the old format: the whole ledger
                base = parse_ledger(whole)
                break
            carried = props.get(CHECKPOINT_KEY)
            if carried is not None:
                # A maintenance commit (retention's delete) that carries the ledger forward as
                # a checkpoint: it raised nothing, and snapshots before it may expire.
                base = _read_checkpoint(table, carried)
                if base is not None:
                    break
            continue  # another tool's commit
        checkpoint = props.get(CHECKPOINT_KEY)
        if checkpoint is not None:
            base = _read_checkpoint(table, checkpoint)
            if base is not None:
                break
        deltas.append(parse_ledger(summary_value(table, props, DELTA_KEY) or "{}"))
    if base is None:
        if deltas and lineage_cut(table, oldest):
            msg = (
                f"{table.name()}: the ledger's history ends at snapshot {oldest.snapshot_id} "
                "(its parent expired) before any checkpoint: the "
                "committed offsets cannot be read exactly; keep more snapshots than "
                f"{CHECKPOINT_EVERY} when expiring"
            )
            raise LedgerUnavailable(msg)
        base = {}
    if not deltas:
        return LedgerState(current.snapshot_id, base, base_depth)
    merged = dict(base)
    for delta_entries in reversed(deltas):  # oldest first
        for key, mark in delta_entries.items():
            if mark > merged.get(key, -1):
                merged[key] = mark
    return LedgerState(current.snapshot_id, merged, base_depth + len(deltas))
