"""Versioned Postgres migrations: ``NNNN_name.sql`` files applied once, in order.

The files of a set live in a folder found with :mod:`importlib.resources`, so they ship inside
the installed package; the project's own set is ``core/migrations/postgres/``. Each applied file
is recorded in ``schema_migrations(version, name, checksum, applied_at)``. Tables are created in
the connection's current schema (the first one of its ``search_path``).

:func:`apply` is idempotent and safe when several processes run it at once (``igflow setup``
before every start, two workers starting together): it holds a Postgres advisory lock for its
whole transaction. It refuses to go on, with :class:`~core.errors.ConfigError`, when a file that
was applied has changed since (its SHA-256 differs) or when a new file sorts before one already
applied: both mean the database and the code disagree about its history. Versions in the database
that have no file (a newer release ran before) are left alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import re
from importlib.resources import files
from importlib.resources.abc import Traversable

import psycopg

from core.errors import ConfigError

__all__ = ["DEFAULT_PACKAGE", "Migration", "apply", "discover"]

#: The project's migrations.
DEFAULT_PACKAGE = "core.migrations.postgres"

#: Key of the advisory lock that serialises concurrent runs (any fixed 64-bit number; this is
#: the first 8 bytes of sha256("core.migrations"), so it collides with nothing by accident).
_LOCK_KEY = int.from_bytes(hashlib.sha256(b"core.migrations").digest()[:8], "big", signed=True)

_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    #: The file name without ``NNNN_`` and ``.sql``.
    name: str
    sql: bytes
    #: SHA-256 of the file's exact bytes, hex.
    checksum: str

    @property
    def label(self) -> str:
        """``NNNN_name``, as the file is called."""
        return f"{self.version:04d}_{self.name}"


def _folder(package: str) -> Traversable:
    """The folder named by dotted path ``package``.

    The longest prefix that is an importable package anchors it; the rest are plain folders.
    So the folder itself need not be a package: ``core/migrations/postgres/`` sits beside the
    module ``core/migrations.py``, which shadows any package of that name.
    """
    parts = package.split(".")
    for i in range(len(parts), 0, -1):
        try:
            spec = importlib.util.find_spec(".".join(parts[:i]))
        except (ImportError, ValueError):  # a parent that is a module, not a package
            continue
        if spec is not None and spec.submodule_search_locations is not None:
            folder = files(".".join(parts[:i]))
            for part in parts[i:]:
                folder = folder / part
            return folder
    msg = f"no migrations folder {package!r}: no importable package anchors it"
    raise ConfigError(msg)


def discover(package: str = DEFAULT_PACKAGE) -> list[Migration]:
    """The migrations in folder ``package``, by version.

    Files not ending in ``.sql`` are ignored. ``ConfigError`` for a missing folder, a ``.sql``
    file not named ``NNNN_name.sql`` (lower case), or two files with the same version.
    """
    folder = _folder(package)
    if not folder.is_dir():
        msg = f"no migrations folder {package!r}"
        raise ConfigError(msg)
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.fullmatch(entry.name)
        if match is None:
            msg = f"migration {package}/{entry.name} is not named NNNN_name.sql"
            raise ConfigError(msg)
        data = entry.read_bytes()
        migration = Migration(int(match[1]), match[2], data, hashlib.sha256(data).hexdigest())
        if migration.version in found:
            msg = f"two migrations with version {match[1]} in {package}"
            raise ConfigError(msg)
        found[migration.version] = migration
    return [found[v] for v in sorted(found)]


def _check_history(migrations: list[Migration], applied: dict[int, tuple[str, str]]) -> None:
    newest_applied = max(applied, default=0)
    for m in migrations:
        recorded = applied.get(m.version)
        if recorded is None:
            if m.version < newest_applied:
                msg = (
                    f"migration {m.label} is new but {newest_applied:04d} is already applied:"
                    " give it a version after every applied one"
                )
                raise ConfigError(msg)
        elif recorded != (m.name, m.checksum):
            msg = (
                f"migration {m.label} changed after it was applied (recorded as"
                f" {m.version:04d}_{recorded[0]}, checksum {recorded[1][:12]}...):"
                " add a new migration instead of editing an applied one"
            )
            raise ConfigError(msg)


def apply(dsn: str, package: str = DEFAULT_PACKAGE) -> list[str]:
    """Apply the migrations of ``package`` that ``dsn``'s database lacks; returns their labels
    (``["0001_tenant_registry"]``), empty when it was up to date.

    All pending files apply in one transaction, in version order: either all of them or none.
    ``ConfigError`` for a history conflict (see the module docstring), a bad folder, or when
    the database cannot be reached or a file fails (the message names the file).
    """
    migrations = discover(package)
    done: list[str] = []
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute(_LEDGER)
            rows = conn.execute("SELECT version, name, checksum FROM schema_migrations")
            applied = {version: (name, checksum) for version, name, checksum in rows}
            _check_history(migrations, applied)
            for m in migrations:
                if m.version in applied:
                    continue
                try:
                    # Bytes: a file's text is not a literal; no parameters, so it may hold
                    # several statements.
                    conn.execute(m.sql)
                except psycopg.Error as exc:
                    msg = f"migration {m.label} failed: {str(exc).strip()}"
                    raise ConfigError(msg) from exc
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (m.version, m.name, m.checksum),
                )
                done.append(m.label)
    except psycopg.Error as exc:
        msg = f"cannot apply migrations to Postgres: {str(exc).strip()}"
        raise ConfigError(msg) from exc
    return done
