"""A lake table's commit history outside its metadata: a chain of files that expiry never deletes.

Every snapshot the table keeps stays in its metadata file, which pyiceberg copies, parses and
rewrites at each commit: a commit's cost grows with the snapshots kept (DEVELOPERS.md "A commit
costs more with every snapshot the table keeps"), so the appender expires snapshots as it goes
(``lake.snapshots_kept``). But the replay plan (:mod:`sinks.lake_plan`: each commit's
``igflow.offsets.delta``), ``igflow verify --from-history`` (each commit's ``igflow.digest``) and
the settings a replay computes with (:mod:`sinks.settings_record`) read every commit of the
lineage. So whenever the appender writes a ledger checkpoint it also writes a *history file*:

- the commits of the current lineage since the previous history file's snapshot (that snapshot
  included, whoever wrote them: another process, ``igflow retention``, another tool), oldest
  first, each as its snapshot id, its operation and its ``igflow.*`` summary properties
  (spilled values stay pointers to their files; the table's location in them as
  ``${location}``, so that the file's bytes do not depend on where the table is);
- a pointer to the previous history file (path and SHA-256), or none, with whether the lineage
  before its first commit had expired already (``cut``);

named by its SHA-256, beside the table metadata (``metadata/igflow-history-<sha256>.json``); the
commit's summary points at it (:data:`HISTORY_KEY`: path, hash, commits). A commit that loses
its race leaves its file unreferenced; the retry writes the file of the lineage it lands on.

Reading (:func:`read_history`) walks the current lineage newest first until a snapshot carrying
:data:`HISTORY_KEY`, then follows the chain: the same commits, in the same order, as a walk of a
lineage whose snapshots are all kept, and still all of them once the snapshots before the newest
chained one have expired (:func:`sinks.lake_retention.expire_snapshots` keeps that one and what
follows). A lake written before this format has no chain: the walk goes over the lineage as
before. A chain file gone or damaged raises :class:`~sinks.ledger_format.LedgerUnavailable`
(never guessed).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot, ancestors_of

from sinks.ledger_format import lineage_cut, read_pointed, write_file

__all__ = ["HISTORY_KEY", "Commit", "History", "read_history", "write_history"]

#: ``{"commits": n, "path": "...", "sha256": "..."}``: the history file of the commits before
#: this one (back to the previous history file's snapshot, included).
HISTORY_KEY = "igflow.history"
_PREFIX = "igflow."
#: The table's location in a history file's values (a checkpoint's or a spilled value's path):
#: the file's bytes, so its name, do not depend on where the table is (a test's temporary folder).
_LOCATION = "${location}"


def _location(table: Table) -> str:
    return table.metadata.location.rstrip("/")


@dataclasses.dataclass(frozen=True, slots=True)
class Commit:
    """One commit of a lineage, from its snapshot or from a history file: what readers need."""

    snapshot_id: int
    #: The snapshot's operation (``append``, ``delete``, ``replace``, ...; ``None``: unknown).
    operation: str | None
    #: Its summary's ``igflow.*`` properties (but :data:`HISTORY_KEY`).
    properties: Mapping[str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class History:
    """A lineage's commits, newest first, and whether it is cut: the commits before the oldest
    one had expired (from the metadata, and from the chain) before any history file held them."""

    commits: tuple[Commit, ...]
    cut: bool


def _commit(snapshot: Snapshot) -> Commit:
    summary = snapshot.summary
    props: Mapping[str, Any] = summary.additional_properties if summary is not None else {}
    kept = {k: str(v) for k, v in props.items() if k.startswith(_PREFIX) and k != HISTORY_KEY}
    operation = summary.operation.value if summary is not None else None
    return Commit(snapshot.snapshot_id, operation, kept)


def _pointer(snapshot: Snapshot) -> dict[str, Any] | None:
    summary = snapshot.summary
    raw = summary.additional_properties.get(HISTORY_KEY) if summary is not None else None
    if raw is None:
        return None
    pointer: dict[str, Any] = json.loads(raw)
    return pointer


def write_history(table: Table) -> str | None:
    """Write the history file of ``table``'s current lineage back to its newest history file
    (the module docstring); the :data:`HISTORY_KEY` value pointing at it (``None``: an empty
    table, nothing to record)."""
    current = table.current_snapshot()
    if current is None:
        return None
    commits: list[Commit] = []
    previous: dict[str, str] | None = None
    oldest = current
    for snapshot in ancestors_of(current, table.metadata):
        commits.append(_commit(snapshot))
        oldest = snapshot
        pointer = _pointer(snapshot)
        if pointer is not None:
            previous = {"path": str(pointer["path"]), "sha256": str(pointer["sha256"])}
            break
    here = _location(table)
    doc = {
        "commits": [
            {
                "id": c.snapshot_id,
                "operation": c.operation,
                "properties": {k: v.replace(here, _LOCATION) for k, v in c.properties.items()},
            }
            for c in reversed(commits)
        ],
        "cut": previous is None and lineage_cut(table, oldest),
        "previous": previous,
    }
    data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    path, sha = write_file(table, "history", data)
    return json.dumps(
        {"commits": len(commits), "path": path, "sha256": sha},
        separators=(",", ":"),
        sort_keys=True,
    )


def read_history(table: Table) -> History:
    """The commits of ``table``'s current lineage, newest first: from its snapshots back to the
    newest one carrying a history file, then from the chain (the module docstring)."""
    current = table.current_snapshot()
    if current is None:
        return History((), False)
    out: list[Commit] = []
    oldest = current
    pointer: dict[str, Any] | None = None
    for snapshot in ancestors_of(current, table.metadata):
        out.append(_commit(snapshot))
        oldest = snapshot
        pointer = _pointer(snapshot)
        if pointer is not None:
            break
    if pointer is None:
        return History(tuple(out), lineage_cut(table, oldest))
    cut = False
    here = _location(table)
    while pointer is not None:
        doc = json.loads(read_pointed(table, pointer, "(a history file of the chain)"))
        for entry in reversed(doc["commits"]):
            props = {
                str(k): str(v).replace(_LOCATION, here) for k, v in entry["properties"].items()
            }
            out.append(Commit(int(entry["id"]), entry["operation"], props))
        cut = bool(doc["cut"])
        pointer = doc["previous"]
    return History(tuple(out), cut)
