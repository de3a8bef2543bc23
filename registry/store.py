"""SQLite persistence for the schema registry.

Contracts:

* Schema ids are global, start at 1, only ever grow and are never reused, also across
  restarts and hard deletes (``AUTOINCREMENT``). A schema row is never deleted, so an id
  always resolves to the text exactly as first registered.
* Versions are per subject, start at 1 and grow by one; a soft-deleted version keeps its
  number, so the next registration after a soft delete gets a higher one.
* Every method is atomic and thread-safe: one connection, one lock, and each write runs
  in a ``BEGIN IMMEDIATE`` transaction that rolls back if anything raises.
* Any ``sqlite3`` failure surfaces as :class:`StoreError` (Confluent error 50001).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SchemaStore", "StoreError", "SubjectVersion"]

_DDL = """
CREATE TABLE IF NOT EXISTS schemas (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    canonical TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subject_versions (
    subject TEXT NOT NULL,
    version INTEGER NOT NULL,
    schema_id INTEGER NOT NULL REFERENCES schemas(id),
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, version)
);
CREATE INDEX IF NOT EXISTS subject_versions_by_schema ON subject_versions(schema_id);
CREATE TABLE IF NOT EXISTS config (
    subject TEXT UNIQUE,
    level TEXT NOT NULL
);
"""

_SELECT_VERSIONS = """
SELECT v.subject, v.version, v.schema_id, s.text, v.deleted
FROM subject_versions v JOIN schemas s ON s.id = v.schema_id
"""


class StoreError(RuntimeError):
    """The database failed; the operation had no effect."""


@dataclass(frozen=True)
class SubjectVersion:
    """One version of a subject and the schema it points at."""

    subject: str
    version: int
    schema_id: int
    schema: str
    deleted: bool


Gate = Callable[[list[SubjectVersion]], None]
"""Called inside a registration with the subject's live versions; raise to abort it."""


class SchemaStore:
    """Registry state in one SQLite file (WAL mode)."""

    def __init__(self, path: Path) -> None:
        """Open or create the database at ``path``; raise :class:`StoreError` on failure."""
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_DDL)
        except sqlite3.Error as exc:
            message = f"Cannot open schema store {path}: {exc}"
            raise StoreError(message) from exc

    def close(self) -> None:
        """Close the connection; the store is unusable afterwards. Idempotent."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                message = f"Error in the backend data store: {exc}"
                raise StoreError(message) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._read() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def subjects(self, *, deleted: bool = False) -> list[str]:
        """Sorted subjects with a live version (or any version if ``deleted``)."""
        sql = "SELECT DISTINCT subject FROM subject_versions WHERE deleted <= ? ORDER BY subject"
        with self._read() as db:
            return [row[0] for row in db.execute(sql, (int(deleted),))]

    def versions(self, subject: str, *, deleted: bool = False) -> list[SubjectVersion]:
        """The subject's live versions (all if ``deleted``), oldest first."""
        sql = _SELECT_VERSIONS + " WHERE v.subject = ? AND v.deleted <= ? ORDER BY v.version"
        with self._read() as db:
            return _rows(db.execute(sql, (subject, int(deleted))))

    def usages(self, schema_id: int, *, deleted: bool = False) -> list[SubjectVersion]:
        """Live (all if ``deleted``) subject versions pointing at ``schema_id``."""
        sql = _SELECT_VERSIONS + (
            " WHERE v.schema_id = ? AND v.deleted <= ? ORDER BY v.subject, v.version"
        )
        with self._read() as db:
            return _rows(db.execute(sql, (schema_id, int(deleted))))

    def find(self, subject: str, canonical: str, *, deleted: bool = False) -> SubjectVersion | None:
        """The newest live (any if ``deleted``) version of ``subject`` with this identity."""
        sql = _SELECT_VERSIONS + (
            " WHERE v.subject = ? AND s.canonical = ? AND v.deleted <= ?"
            " ORDER BY v.version DESC LIMIT 1"
        )
        with self._read() as db:
            found = _rows(db.execute(sql, (subject, canonical, int(deleted))))
        return found[0] if found else None

    def schema_text(self, schema_id: int) -> str | None:
        """The text first registered under ``schema_id``, or ``None`` if the id is unknown."""
        with self._read() as db:
            row = db.execute("SELECT text FROM schemas WHERE id = ?", (schema_id,)).fetchone()
        return None if row is None else str(row[0])

    def register(self, subject: str, text: str, canonical: str, gate: Gate) -> SubjectVersion:
        """Return the live version with this identity, or create the next version.

        A new version reuses the global id of an identical schema registered anywhere,
        else gets a new id. ``gate`` runs (and may raise to veto) only when a new
        version would be created, under the same lock and transaction.
        """
        with self._write() as db:
            live = _rows(
                db.execute(
                    _SELECT_VERSIONS + " WHERE v.subject = ? AND v.deleted = 0 ORDER BY v.version",
                    (subject,),
                )
            )
            row = db.execute("SELECT id FROM schemas WHERE canonical = ?", (canonical,)).fetchone()
            for existing in live:
                if row is not None and existing.schema_id == row[0]:
                    return existing
            gate(live)
            if row is None:
                sql = "INSERT INTO schemas (canonical, text) VALUES (?, ?)"
                schema_id = db.execute(sql, (canonical, text)).lastrowid
                stored_text = text
            else:
                schema_id = row[0]
                stored_text = db.execute("SELECT text FROM schemas WHERE id = ?", row).fetchone()[0]
            sql = "SELECT COALESCE(MAX(version), 0) + 1 FROM subject_versions WHERE subject = ?"
            version = db.execute(sql, (subject,)).fetchone()[0]
            db.execute(
                "INSERT INTO subject_versions (subject, version, schema_id) VALUES (?, ?, ?)",
                (subject, version, schema_id),
            )
        assert schema_id is not None
        return SubjectVersion(subject, version, schema_id, stored_text, deleted=False)

    def soft_delete(self, subject: str, version: int | None = None) -> list[int]:
        """Mark the live version (or all live versions if ``None``) deleted; return them."""
        return self._delete(
            subject, version, deleted=0, sql="UPDATE subject_versions SET deleted = 1"
        )

    def hard_delete(self, subject: str, version: int | None = None) -> list[int]:
        """Erase the soft-deleted version (or all of them if ``None``); return them.

        Erasing a whole subject also drops its compatibility config.
        """
        erased = self._delete(subject, version, deleted=1, sql="DELETE FROM subject_versions")
        if version is None and erased:
            self.clear_level(subject)
        return erased

    def _delete(self, subject: str, version: int | None, *, deleted: int, sql: str) -> list[int]:
        where = " WHERE subject = ? AND deleted = ?" + (
            "" if version is None else " AND version = ?"
        )
        args: tuple[object, ...] = (
            (subject, deleted) if version is None else (subject, deleted, version)
        )
        with self._write() as db:
            found = [
                row[0]
                for row in db.execute(
                    "SELECT version FROM subject_versions" + where + " ORDER BY version", args
                )
            ]
            db.execute(sql + where, args)
        return found

    def level(self, subject: str | None) -> str | None:
        """The configured level of ``subject`` (global if ``None``), or ``None`` if unset."""
        with self._read() as db:
            row = db.execute("SELECT level FROM config WHERE subject IS ?", (subject,)).fetchone()
        return None if row is None else str(row[0])

    def set_level(self, subject: str | None, level: str) -> None:
        """Configure ``level`` for ``subject`` (global if ``None``), replacing any previous one."""
        with self._write() as db:
            db.execute("DELETE FROM config WHERE subject IS ?", (subject,))
            db.execute("INSERT INTO config (subject, level) VALUES (?, ?)", (subject, level))

    def clear_level(self, subject: str | None) -> str | None:
        """Remove the level of ``subject`` (global if ``None``); return it, or ``None`` if unset."""
        with self._write() as db:
            row = db.execute("SELECT level FROM config WHERE subject IS ?", (subject,)).fetchone()
            db.execute("DELETE FROM config WHERE subject IS ?", (subject,))
        return None if row is None else str(row[0])


def _rows(cursor: sqlite3.Cursor) -> list[SubjectVersion]:
    return [
        SubjectVersion(subject, version, schema_id, text, bool(deleted))
        for subject, version, schema_id, text, deleted in cursor
    ]
