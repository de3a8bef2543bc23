"""The catalog factory: the Iceberg catalog that settings name.

pyiceberg builds a ``pyiceberg.utils.config.Config`` whenever it needs a setting, about four
times per table append (``Table.append``, writing the data files, each data file, writing the
metadata), and each one finds and parses ``.pyiceberg.yaml`` with strictyaml: 1.5 ms of CPU a
time, measured, about 3% of a lake-only flow's CPU. :func:`parse_config_once` makes a process
parse each version of that file once (:func:`catalog` and the Iceberg sink call it).

A SQL catalog on Postgres or SQLite (the project's: Postgres, SQLite in tests) opens as
:class:`LakeSqlCatalog`, pyiceberg's ``SqlCatalog`` on the same rows without SQLAlchemy and
with a cheaper commit (DEVELOPERS.md "The lake's catalog"); any other catalog, a SQL one on
another database included, is pyiceberg's own.
"""

from __future__ import annotations

import copy
import importlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlparse

import pyiceberg.catalog
from pyiceberg.catalog import (
    PY_CATALOG_IMPL,
    TYPE,
    URI,
    Catalog,
    CatalogType,
    MetastoreCatalog,
    PropertiesUpdateSummary,
    load_catalog,
)
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NamespaceNotEmptyError,
    NoSuchNamespaceError,
    NoSuchPropertyException,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.io import FileIO, load_file_io
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.serializers import FromInputFile
from pyiceberg.table import CommitTableResponse, Table, TableProperties
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata, new_table_metadata
from pyiceberg.table.sorting import UNSORTED_SORT_ORDER, SortOrder
from pyiceberg.table.update import (
    TableRequirement,
    TableUpdate,
    _apply_table_update,
    _TableMetadataUpdateContext,
    _update_table_metadata_log,
)
from pyiceberg.typedef import EMPTY_DICT, Identifier, Properties, RecursiveDict
from pyiceberg.types import strtobool
from pyiceberg.utils.config import PYICEBERG_HOME, PYICEBERG_YML, Config, merge_config
from pyiceberg.utils.datetime import datetime_to_millis

from core.catalog_db import CatalogDatabase, database_of, dialect_of
from core.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.view import View
    from pyiceberg.view.metadata import ViewVersion

__all__ = [
    "CatalogOnce",
    "LakeSqlCatalog",
    "catalog",
    "parse_config_once",
    "preload",
    "updated_metadata",
]

log = logging.getLogger(__name__)


def catalog(settings: Settings) -> Catalog:
    """The Iceberg catalog of ``settings`` (its local warehouse folder created if needed)."""
    return _open(settings.lake.catalog_name, settings.catalog_properties, settings.warehouse)


def _open(name: str, properties: dict[str, str], warehouse: str | None) -> Catalog:
    parse_config_once()
    if warehouse and warehouse.startswith("file://"):
        Path(warehouse.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    # pyiceberg's load_catalog, but a SQL catalog is a LakeSqlCatalog: the same merge of the
    # configuration (.pyiceberg.yaml, PYICEBERG_CATALOG__* variables) with ``properties``.
    env = pyiceberg.catalog._ENV_CONFIG.get_catalog_config(name)
    conf = merge_config(env or {}, cast(RecursiveDict, properties))
    kind = conf.get(TYPE)
    uri = conf.get(URI)
    if (
        isinstance(kind, str)
        and kind.lower() == CatalogType.SQL.value
        and not properties.get(PY_CATALOG_IMPL)
        and isinstance(uri, str)
        and dialect_of(uri) is not None
    ):
        return LakeSqlCatalog(name, **cast(dict[str, str], conf))  # as load_catalog passes it
    return load_catalog(name, **properties)  # pyiceberg's (its SqlCatalog for another database)


def preload(settings: Settings) -> None:
    """Import what opening ``settings``' catalog imports beyond this module's imports, opening
    nothing: psycopg for a Postgres catalog (the flow imports it anyway), pyiceberg's SQL catalog
    with SQLAlchemy's dialect and driver for a database :class:`LakeSqlCatalog` does not read.
    A flow command calls it with its other imports, before ``--processes`` forks, so that no
    child imports them again. A URI nobody can read is left for the opening to report."""
    uri = settings.lake.catalog_uri
    dialect = dialect_of(uri)
    if dialect == "postgresql":
        importlib.import_module("psycopg")
        return
    if dialect is not None:
        return
    try:
        from pyiceberg.catalog.sql import SqlCatalog  # noqa: F401  # what load_catalog imports
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    except ImportError:
        return
    try:
        make_url(uri).get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError, ImportError):
        return


class CatalogOnce:
    """A catalog opened on the first :meth:`get` and shared by every later one (thread-safe);
    ``opened``: one already open, shared from the start.

    Pickling keeps the name and the properties only: an unpickled copy opens its own."""

    def __init__(
        self,
        name: str,
        properties: dict[str, str],
        warehouse: str | None = None,
        opened: Catalog | None = None,
    ) -> None:
        self.name = name
        self.properties = dict(properties)
        self._warehouse = warehouse
        self._lock = threading.Lock()
        self._catalog: Catalog | None = opened

    @classmethod
    def of(cls, settings: Settings, opened: Catalog | None = None) -> CatalogOnce:
        """The catalog :func:`catalog` opens for ``settings``, opened once (or ``opened``)."""
        return cls(
            settings.lake.catalog_name, settings.catalog_properties, settings.warehouse, opened
        )

    def get(self) -> Catalog:
        """The catalog, opened now if nobody has yet."""
        with self._lock:
            if self._catalog is None:
                self._catalog = _open(self.name, self.properties, self._warehouse)
            return self._catalog

    def __reduce__(self) -> tuple[type[CatalogOnce], tuple[str, dict[str, str], str | None]]:
        return (CatalogOnce, (self.name, self.properties, self._warehouse))


_Stamp = tuple[str, int, int, int] | None


def _stamp(directory: str | None) -> _Stamp:
    """What pyiceberg's lookup in ``directory`` depends on: its config file's identity, size
    and modification time (``None``: no such file)."""
    if not directory:
        return None
    path = os.path.join(directory, PYICEBERG_YML)
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_ino, st.st_size, st.st_mtime_ns)


class _ParsedOnce:
    """``Config._from_configuration_files`` remembered per state of the files it reads: the
    same search (``PYICEBERG_HOME``, the home folder, the current folder), keyed by each
    candidate file's :func:`_stamp`, so a file written, changed or removed is read again. A
    copy is returned each time: ``Config`` amends the dict with the environment in place."""

    def __init__(self, parse: Callable[[], Any]) -> None:
        self.parse = parse
        self._parsed: dict[tuple[_Stamp, ...], Any] = {}
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        key = tuple(
            _stamp(d)
            for d in (os.environ.get(PYICEBERG_HOME), os.path.expanduser("~"), os.getcwd())
        )
        with self._lock:
            if key not in self._parsed:
                if len(self._parsed) > 64:  # files rewritten over and over: keep it bounded
                    self._parsed.clear()
                self._parsed[key] = self.parse()
            return copy.deepcopy(self._parsed[key])


def parse_config_once() -> None:
    """Make pyiceberg's ``Config`` parse each version of ``.pyiceberg.yaml`` once per process
    (idempotent); what ``Config`` holds is unchanged."""
    current = Config.__dict__["_from_configuration_files"]
    if not isinstance(current.__func__, _ParsedOnce):
        Config._from_configuration_files = staticmethod(_ParsedOnce(current.__func__))  # type: ignore[method-assign]


def updated_metadata(
    base: TableMetadata, updates: tuple[TableUpdate, ...], metadata_location: str | None = None
) -> TableMetadata:
    """pyiceberg's ``update_table_metadata(base, updates, metadata_location=...)`` without its
    final deep copy (``enforce_validation=False``, as a transaction and a commit to an existing
    table call it). Each update's function builds new models (``model_copy(update=...)``, new
    lists and dicts) and never changes ``base``, and the models are frozen: the copy only costs
    (every snapshot's summary; measured 23% of a 1,000-row append's writer-thread CPU for the
    three an append made). ``tests/unit/test_lake_catalog.py`` holds it to pyiceberg's."""
    context = _TableMetadataUpdateContext()
    metadata = base
    for change in updates:
        metadata = _apply_table_update(change, metadata, context)
    if context.has_changes():
        if metadata_location:
            metadata = _update_table_metadata_log(metadata, metadata_location, base.last_updated_ms)
        if base.last_updated_ms == metadata.last_updated_ms:
            now = datetime_to_millis(datetime.now().astimezone())
            metadata = metadata.model_copy(update={"last_updated_ms": now})
    metadata.spec().check_compatible(metadata.schema())
    metadata.sort_order().check_compatible(metadata.schema())
    return metadata


#: Metadata files a :class:`LakeSqlCatalog` keeps parsed (the current one of each table it
#: reads or writes, and a few before them).
METADATA_KEPT = 16

#: FileIOs a :class:`LakeSqlCatalog` keeps (one per set of properties and location scheme: a
#: catalog sees a few); past that, a new one each time, as pyiceberg does.
FILE_IOS_KEPT = 32


class LakeSqlCatalog(MetastoreCatalog):
    """pyiceberg's ``SqlCatalog`` on the same rows, without SQLAlchemy, its table reads and
    commits cheaper (the lake commits once per table every ``lake.batch_max_seconds``).

    The catalog database is reached through the DB-API (:mod:`core.catalog_db`: psycopg for
    Postgres, ``sqlite3`` for SQLite), with the statements pyiceberg 0.12's ``SqlCatalog`` runs
    through SQLAlchemy's ORM, on the same two tables (``iceberg_tables``,
    ``iceberg_namespace_properties``; created as SQLAlchemy creates them when absent, unless
    ``init_catalog_tables`` is false) and with the same ``schema_version`` rules (a catalog
    without the ``iceberg_type`` column stays "v0" unless told "v1", which adds it). Importing
    pyiceberg's SQL catalog cost every command ~0.26 s (:mod:`core.catalog_db`). Views are not
    supported, as in pyiceberg's.

    - :meth:`load_table` selects the row's metadata location and parses the metadata file only
      when it has not parsed (or written) that file before: an Iceberg metadata file is written
      once under a fresh name and never changed, so the same name is the same metadata.
      :data:`METADATA_KEPT` are kept, per catalog.
    - :meth:`commit_table` does what pyiceberg's does (load the current table, check the
      requirements against it, apply the updates with the metadata log, write the new metadata
      file, then ``UPDATE ... WHERE metadata_location = <the one loaded>``: a writer that
      committed in between makes it match no row, and the commit raises
      ``CommitFailedException``), with that load through :meth:`load_table` and the updates
      applied without pyiceberg's deep copy (:func:`updated_metadata`). A new table's commit
      (a create transaction) inserts its row, as pyiceberg's does.
    - :meth:`_load_file_io` gives one FileIO per set of properties and location scheme, where
      pyiceberg builds a new one for every table load and commit. Each of those is a reference
      cycle (``PyArrowFileIO`` caches its filesystems in an ``lru_cache`` of its own bound
      method) that only Python's full collection frees: measured, ~190 FileIOs with their
      filesystems every 15 s of a flow with every store (docs/performance.md, "Session 26").

    What lands in the database and the metadata files is what pyiceberg's would write: another
    pyiceberg client (``SqlCatalog`` on the same URI) reads the same tables, and commits to them
    as before.
    """

    def __init__(self, name: str, **properties: str) -> None:
        super().__init__(name, **properties)
        uri = self.properties.get(URI)
        if not uri:
            msg = "SQL connection URI is required"
            raise NoSuchPropertyException(msg)
        database = database_of(uri)
        if database is None:
            msg = f"not a catalog URI this catalog reads (Postgres or SQLite): {uri}"
            raise ValueError(msg)
        self._db: CatalogDatabase = database
        self._parsed: OrderedDict[str, TableMetadata] = OrderedDict()
        self._file_ios: dict[tuple[tuple[tuple[str, Any], ...], str | None], FileIO] = {}
        self._lock = threading.Lock()
        self._schema_version = self._init_catalog()
        #: Other clients' views excluded from table rows (v1), and the condition naming one
        #: table's row (catalog, namespace, name) with it.
        self._the_table_type = (
            f" AND (iceberg_type = '{_TABLE_TYPE}' OR iceberg_type IS NULL)"
            if self._schema_version == "v1"
            else ""
        )
        self._the_table = _THE_TABLE + self._the_table_type

    # -- the database ------------------------------------------------------------------------

    def _init_catalog(self) -> str:
        """pyiceberg's ``SqlCatalog._init_catalog``: the tables created if absent (v1), else
        the schema version found (v0 migrated to v1 only when ``schema_version`` says so)."""
        wanted = self.properties.get("schema_version", "v0")
        if wanted not in ("v0", "v1"):
            msg = f"Invalid schema_version property: '{wanted}'. Must be 'v0' or 'v1'."
            raise ValueError(msg)
        db = self._db
        try:
            for table in ("iceberg_tables", "iceberg_namespace_properties"):
                with db.transaction(together=False) as cursor:
                    cursor.execute(f"SELECT 1 FROM {table} LIMIT 1")
                    cursor.fetchall()
        except db.schema_errors:
            if strtobool(self.properties.get("init_catalog_tables", "true")):
                self.create_tables()
            return "v1"
        try:
            with db.transaction(together=False) as cursor:
                cursor.execute("SELECT iceberg_type FROM iceberg_tables LIMIT 0")
                cursor.fetchall()
            return "v1"
        except db.schema_errors:
            pass
        if wanted == "v1":
            try:
                with db.transaction(together=False) as cursor:
                    cursor.execute("ALTER TABLE iceberg_tables ADD COLUMN iceberg_type VARCHAR(5)")
            except db.schema_errors:
                pass
            return "v1"
        log.warning(
            "SqlCatalog detected a v0 schema (iceberg_type column missing). "
            "The catalog will operate in v0 mode. To migrate, set schema_version='v1'.",
            extra={"op": "lake.catalog"},
        )
        return "v0"

    def create_tables(self) -> None:
        """Create the catalog's two tables where absent, as SQLAlchemy's ``create_all`` of
        pyiceberg's models does (another creator racing this one is no error)."""
        for statement in _CREATE_TABLES:
            try:
                with self._db.transaction(together=False) as cursor:
                    cursor.execute(statement)
            except self._db.integrity_error:  # Postgres: created at the same time elsewhere
                continue

    def destroy_tables(self) -> None:
        """Drop the catalog's two tables (pyiceberg's ``SqlCatalog.destroy_tables``)."""
        with self._db.transaction() as cursor:
            cursor.execute("DROP TABLE IF EXISTS iceberg_namespace_properties")
            cursor.execute("DROP TABLE IF EXISTS iceberg_tables")

    def close(self) -> None:
        """Close the catalog's database connections."""
        self._db.close()

    def _insert_table_row(self, namespace: str, table_name: str, location: str) -> None:
        """The new table's row; ``TableAlreadyExistsError`` if the name is taken."""
        columns = "catalog_name, table_namespace, table_name, metadata_location"
        values: list[Any] = [self.name, namespace, table_name, location]
        if self._schema_version == "v1":
            columns += ", iceberg_type"
            values.append(_TABLE_TYPE)
        marks = ", ".join("?" * len(values))
        try:
            with self._db.transaction(together=False) as cursor:
                cursor.execute(f"INSERT INTO iceberg_tables ({columns}) VALUES ({marks})", values)
        except self._db.integrity_error as exc:
            msg = f"Table {namespace}.{table_name} already exists"
            raise TableAlreadyExistsError(msg) from exc

    # -- tables ------------------------------------------------------------------------------

    def _load_file_io(
        self, properties: Properties = EMPTY_DICT, location: str | None = None
    ) -> FileIO:
        """pyiceberg's ``Catalog._load_file_io``, built once per set of properties and scheme of
        ``location``: which FileIO ``load_file_io`` builds depends on nothing else. A property
        whose value cannot be hashed gets a new FileIO each time, as in pyiceberg."""
        merged = {**self.properties, **properties}
        key = (tuple(sorted(merged.items())), urlparse(location).scheme if location else None)
        try:
            with self._lock:
                held = self._file_ios.get(key)
        except TypeError:  # an unhashable value
            return load_file_io(merged, location)
        if held is not None:
            return held
        io = load_file_io(merged, location)
        with self._lock:
            if len(self._file_ios) < FILE_IOS_KEPT:
                io = self._file_ios.setdefault(key, io)
        return io

    def _remember(self, location: str, metadata: TableMetadata) -> None:
        with self._lock:
            self._parsed[location] = metadata
            self._parsed.move_to_end(location)
            while len(self._parsed) > METADATA_KEPT:
                self._parsed.popitem(last=False)

    def _metadata(self, location: str) -> TableMetadata:
        """The metadata in the file ``location``: parsed once."""
        with self._lock:
            metadata = self._parsed.get(location)
        if metadata is None:
            io = self._load_file_io(location=location)
            metadata = FromInputFile.table_metadata(io.new_input(location))
            self._remember(location, metadata)
        return metadata

    def _location(self, namespace: str, name: str) -> str | None:
        """The metadata location of the table's row, ``None`` if there is no such table."""
        with self._db.transaction(together=False) as cursor:
            cursor.execute(
                "SELECT metadata_location FROM iceberg_tables" + self._the_table,
                (self.name, namespace, name),
            )
            rows = cursor.fetchall()
        if not rows:
            return None
        location = rows[0][0]
        if not location:
            msg = "Table property metadata_location is missing"
            raise NoSuchTableError(msg)
        return str(location)

    def load_table(self, identifier: str | Identifier) -> Table:
        """pyiceberg's ``SqlCatalog.load_table``: the table the catalog's row names now."""
        namespace = Catalog.namespace_to_string(Catalog.namespace_from(identifier))
        name = Catalog.table_name_from(identifier)
        location = self._location(namespace, name)
        if location is None:
            msg = f"Table does not exist: {namespace}.{name}"
            raise NoSuchTableError(msg)
        metadata = self._metadata(location)
        return Table(
            identifier=(*Catalog.identifier_to_tuple(namespace), name),
            metadata=metadata,
            metadata_location=location,
            io=self._load_file_io(metadata.properties, location),
            catalog=self,
        )

    def create_table(
        self,
        identifier: str | Identifier,
        schema: Schema | pa.Schema,
        location: str | None = None,
        partition_spec: PartitionSpec = UNPARTITIONED_PARTITION_SPEC,
        sort_order: SortOrder = UNSORTED_SORT_ORDER,
        properties: Properties = EMPTY_DICT,
    ) -> Table:
        """pyiceberg's ``SqlCatalog.create_table``: the metadata file, then the table's row."""
        version = int(
            properties.get(TableProperties.FORMAT_VERSION, TableProperties.DEFAULT_FORMAT_VERSION)
        )
        iceberg_schema: Schema = self._convert_schema_if_needed(schema, version)  # type: ignore[arg-type]
        namespace_identifier = Catalog.namespace_from(identifier)
        table_name = Catalog.table_name_from(identifier)
        if not self.namespace_exists(namespace_identifier):
            msg = f"Namespace does not exist: {namespace_identifier}"
            raise NoSuchNamespaceError(msg)
        namespace = Catalog.namespace_to_string(namespace_identifier)
        location = self._resolve_table_location(location, namespace, table_name)
        provider = load_location_provider(table_location=location, table_properties=properties)
        metadata_location = provider.new_table_metadata_file_location()
        metadata = new_table_metadata(
            location=location,
            schema=iceberg_schema,
            partition_spec=partition_spec,
            sort_order=sort_order,
            properties=properties,
        )
        io = load_file_io(properties=self.properties, location=metadata_location)
        self._write_metadata(metadata, io, metadata_location)
        self._insert_table_row(namespace, table_name, metadata_location)
        return self.load_table(identifier)

    def register_table(
        self, identifier: str | Identifier, metadata_location: str, overwrite: bool = False
    ) -> Table:
        """pyiceberg's ``SqlCatalog.register_table`` (``overwrite`` not supported, as there)."""
        if overwrite:
            msg = "`overwrite` isn't supported"
            raise NotImplementedError(msg)
        namespace = Catalog.namespace_to_string(Catalog.namespace_from(identifier))
        table_name = Catalog.table_name_from(identifier)
        if not self.namespace_exists(namespace):
            msg = f"Namespace does not exist: {namespace}"
            raise NoSuchNamespaceError(msg)
        self._insert_table_row(namespace, table_name, metadata_location)
        return self.load_table(identifier)

    def drop_table(self, identifier: str | Identifier) -> None:
        """pyiceberg's ``SqlCatalog.drop_table``: the row only (``purge_table`` the files)."""
        namespace = Catalog.namespace_to_string(Catalog.namespace_from(identifier))
        table_name = Catalog.table_name_from(identifier)
        with self._db.transaction(together=False) as cursor:
            cursor.execute(
                "DELETE FROM iceberg_tables" + self._the_table,
                (self.name, namespace, table_name),
            )
            dropped = cursor.rowcount
        if dropped < 1:
            msg = f"Table does not exist: {namespace}.{table_name}"
            raise NoSuchTableError(msg)

    def rename_table(
        self, from_identifier: str | Identifier, to_identifier: str | Identifier
    ) -> Table:
        """pyiceberg's ``SqlCatalog.rename_table``."""
        from_namespace = Catalog.namespace_to_string(Catalog.namespace_from(from_identifier))
        from_name = Catalog.table_name_from(from_identifier)
        to_namespace = Catalog.namespace_to_string(Catalog.namespace_from(to_identifier))
        to_name = Catalog.table_name_from(to_identifier)
        if not self.namespace_exists(to_namespace):
            msg = f"Namespace does not exist: {to_namespace}"
            raise NoSuchNamespaceError(msg)
        try:
            with self._db.transaction(together=False) as cursor:
                cursor.execute(
                    "UPDATE iceberg_tables SET table_namespace = ?, table_name = ?"
                    + self._the_table,
                    (to_namespace, to_name, self.name, from_namespace, from_name),
                )
                renamed = cursor.rowcount
        except self._db.integrity_error as exc:
            msg = f"Table {to_namespace}.{to_name} already exists"
            raise TableAlreadyExistsError(msg) from exc
        if renamed < 1:
            msg = f"Table does not exist: {from_name}"
            raise NoSuchTableError(msg)
        return self.load_table(to_identifier)

    def commit_table(
        self,
        table: Table,
        requirements: tuple[TableRequirement, ...],
        updates: tuple[TableUpdate, ...],
    ) -> CommitTableResponse:
        """pyiceberg's ``SqlCatalog.commit_table``, cheaper (see the class)."""
        identifier = table.name()
        namespace = Catalog.namespace_to_string(Catalog.namespace_from(identifier))
        name = Catalog.table_name_from(identifier)
        try:
            current = self.load_table(identifier)
        except NoSuchTableError:  # a create transaction: the table's first metadata and row
            staged = self._update_and_stage_table(None, identifier, requirements, updates)
            self._write_metadata(staged.metadata, staged.io, staged.metadata_location)
            self._insert_table_row(namespace, name, staged.metadata_location)
            return CommitTableResponse(  # type: ignore[call-arg]  # by name, as pyiceberg does
                metadata=staged.metadata, metadata_location=staged.metadata_location
            )
        for requirement in requirements:
            requirement.validate(current.metadata)
        metadata = updated_metadata(current.metadata, updates, current.metadata_location)
        if metadata == current.metadata:  # no changes, do nothing
            return CommitTableResponse(  # type: ignore[call-arg]
                metadata=current.metadata, metadata_location=current.metadata_location
            )
        version = self._parse_metadata_version(current.metadata_location) + 1
        provider = load_location_provider(metadata.location, metadata.properties)
        location = provider.new_table_metadata_file_location(version)
        self._write_metadata(
            metadata=metadata,
            io=self._load_file_io(properties=metadata.properties, location=location),
            metadata_path=location,
        )
        with self._db.transaction(together=False) as cursor:
            cursor.execute(
                "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ?"
                + _THE_TABLE
                + " AND metadata_location = ?",
                (
                    location,
                    current.metadata_location,
                    self.name,
                    namespace,
                    name,
                    current.metadata_location,
                ),
            )
            updated = cursor.rowcount
        if updated < 1:
            msg = f"Table has been updated by another process: {namespace}.{name}"
            raise CommitFailedException(msg)
        self._remember(location, metadata)
        return CommitTableResponse(metadata=metadata, metadata_location=location)  # type: ignore[call-arg]

    def list_tables(self, namespace: str | Identifier) -> list[Identifier]:
        """pyiceberg's ``SqlCatalog.list_tables``."""
        if namespace and not self.namespace_exists(namespace):
            msg = f"Namespace does not exist: {namespace}"
            raise NoSuchNamespaceError(msg)
        at = Catalog.namespace_to_string(namespace)
        with self._db.transaction(together=False) as cursor:
            cursor.execute(
                "SELECT table_namespace, table_name FROM iceberg_tables"
                " WHERE catalog_name = ? AND table_namespace = ?" + self._the_table_type,
                (self.name, at),
            )
            rows = cursor.fetchall()
        return [(*Catalog.identifier_to_tuple(ns), name) for ns, name in rows]

    # -- namespaces --------------------------------------------------------------------------

    def namespace_exists(self, identifier: str | Identifier) -> bool:
        """pyiceberg's ``SqlCatalog.namespace_exists``: a table in it or under it, or its
        properties (or a namespace's under it)."""
        namespace = Catalog.namespace_to_string(
            Catalog.identifier_to_tuple(identifier), NoSuchNamespaceError
        )
        under = namespace.replace("!", "!!").replace("_", "!_").replace("%", "!%") + ".%"
        with self._db.transaction(together=False) as cursor:
            for table, column in _NAMESPACE_COLUMNS:
                cursor.execute(
                    f"SELECT 1 FROM {table} WHERE catalog_name = ?"
                    f" AND ({column} = ? OR {column} LIKE ? ESCAPE '!') LIMIT 1",
                    (self.name, namespace, under),
                )
                if cursor.fetchall():
                    return True
        return False

    def create_namespace(
        self, namespace: str | Identifier, properties: Properties = EMPTY_DICT
    ) -> None:
        """pyiceberg's ``SqlCatalog.create_namespace`` (``{"exists": "true"}`` without
        properties); a namespace another client created between the check and the insert is
        ``NamespaceAlreadyExistsError`` too (pyiceberg's raises SQLAlchemy's IntegrityError)."""
        if self.namespace_exists(namespace):
            msg = f"Namespace {namespace} already exists"
            raise NamespaceAlreadyExistsError(msg)
        name = Catalog.namespace_to_string(namespace, NoSuchNamespaceError)
        try:
            with self._db.transaction() as cursor:
                for key, value in (properties or _NAMESPACE_MINIMAL_PROPERTIES).items():
                    cursor.execute(
                        "INSERT INTO iceberg_namespace_properties (catalog_name, namespace,"
                        " property_key, property_value) VALUES (?, ?, ?, ?)",
                        (self.name, name, key, value),
                    )
        except self._db.integrity_error as exc:  # created meanwhile by another client
            msg = f"Namespace {namespace} already exists"
            raise NamespaceAlreadyExistsError(msg) from exc

    def drop_namespace(self, namespace: str | Identifier) -> None:
        """pyiceberg's ``SqlCatalog.drop_namespace`` (refused while it holds tables)."""
        if not self.namespace_exists(namespace):
            msg = f"Namespace does not exist: {namespace}"
            raise NoSuchNamespaceError(msg)
        name = Catalog.namespace_to_string(namespace)
        if tables := self.list_tables(namespace):
            msg = f"Namespace {name} is not empty. {len(tables)} tables exist."
            raise NamespaceNotEmptyError(msg)
        with self._db.transaction(together=False) as cursor:
            cursor.execute(
                "DELETE FROM iceberg_namespace_properties WHERE catalog_name = ? AND namespace = ?",
                (self.name, name),
            )

    def list_namespaces(self, namespace: str | Identifier = ()) -> list[Identifier]:
        """pyiceberg's ``SqlCatalog.list_namespaces``: the namespaces one level under
        ``namespace`` (the top level without it) that hold tables or properties."""
        if namespace and not self.namespace_exists(namespace):
            msg = f"Namespace does not exist: {namespace}"
            raise NoSuchNamespaceError(msg)
        under = Catalog.namespace_to_string(namespace, NoSuchNamespaceError) if namespace else ""
        names: set[str] = set()
        with self._db.transaction(together=False) as cursor:
            for table, column in _NAMESPACE_COLUMNS:
                cursor.execute(
                    f"SELECT DISTINCT {column} FROM {table} WHERE catalog_name = ?"
                    f" AND {column} LIKE ?",
                    (self.name, under + "%"),
                )
                names.update(row[0] for row in cursor.fetchall())
        parent = Catalog.identifier_to_tuple(namespace)
        level = len(parent) + 1
        return list(
            {
                found[:level]
                for found in {Catalog.identifier_to_tuple(n) for n in names}
                if len(found) >= level and found[: level - 1] == parent
            }
        )

    def load_namespace_properties(self, namespace: str | Identifier) -> Properties:
        """pyiceberg's ``SqlCatalog.load_namespace_properties``."""
        name = Catalog.namespace_to_string(namespace)
        if not self.namespace_exists(namespace):
            msg = f"Namespace {name} does not exists"
            raise NoSuchNamespaceError(msg)
        with self._db.transaction(together=False) as cursor:
            cursor.execute(
                "SELECT property_key, property_value FROM iceberg_namespace_properties"
                " WHERE catalog_name = ? AND namespace = ?",
                (self.name, name),
            )
            return {key: value for key, value in cursor.fetchall()}

    def update_namespace_properties(
        self,
        namespace: str | Identifier,
        removals: set[str] | None = None,
        updates: Properties = EMPTY_DICT,
    ) -> PropertiesUpdateSummary:
        """pyiceberg's ``SqlCatalog.update_namespace_properties`` (in one transaction)."""
        name = Catalog.namespace_to_string(namespace)
        if not self.namespace_exists(namespace):
            msg = f"Namespace {name} does not exists"
            raise NoSuchNamespaceError(msg)
        current = self.load_namespace_properties(namespace=namespace)
        summary = self._get_updated_props_and_update_summary(
            current_properties=current, removals=removals, updates=updates
        )[0]
        with self._db.transaction() as cursor:
            for key in sorted({*(removals or ()), *updates}):
                cursor.execute(
                    "DELETE FROM iceberg_namespace_properties"
                    " WHERE catalog_name = ? AND namespace = ? AND property_key = ?",
                    (self.name, name, key),
                )
            for key, value in updates.items():
                cursor.execute(
                    "INSERT INTO iceberg_namespace_properties"
                    " (catalog_name, namespace, property_key, property_value) VALUES (?, ?, ?, ?)",
                    (self.name, name, key, value),
                )
        return summary

    # -- views: not supported (as in pyiceberg's SqlCatalog) ---------------------------------

    def create_view(
        self,
        identifier: str | Identifier,
        schema: Schema | pa.Schema,
        view_version: ViewVersion,
        location: str | None = None,
        properties: Properties = EMPTY_DICT,
    ) -> View:
        raise NotImplementedError

    def list_views(self, namespace: str | Identifier) -> list[Identifier]:
        raise NotImplementedError

    def view_exists(self, identifier: str | Identifier) -> bool:
        raise NotImplementedError

    def register_view(self, identifier: str | Identifier, metadata_location: str) -> View:
        raise NotImplementedError

    def drop_view(self, identifier: str | Identifier) -> None:
        raise NotImplementedError

    def load_view(self, identifier: str | Identifier) -> View:
        raise NotImplementedError


#: ``iceberg_type`` of a table's row (v1 catalogs; other clients' views have another).
_TABLE_TYPE = "TABLE"

#: Where each of the catalog's tables names a namespace.
_NAMESPACE_COLUMNS = (
    ("iceberg_tables", "table_namespace"),
    ("iceberg_namespace_properties", "namespace"),
)

#: The condition naming one table's row.
_THE_TABLE = " WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?"

#: A namespace created without properties gets these (pyiceberg's).
_NAMESPACE_MINIMAL_PROPERTIES = {"exists": "true"}

#: The catalog's tables as SQLAlchemy's ``create_all`` creates pyiceberg's models (Postgres and
#: SQLite take the same statement).
_CREATE_TABLES = (
    "CREATE TABLE IF NOT EXISTS iceberg_tables ("
    "catalog_name VARCHAR(255) NOT NULL, table_namespace VARCHAR(255) NOT NULL,"
    " table_name VARCHAR(255) NOT NULL, metadata_location VARCHAR(1000),"
    " previous_metadata_location VARCHAR(1000), iceberg_type VARCHAR(5),"
    " PRIMARY KEY (catalog_name, table_namespace, table_name))",
    "CREATE TABLE IF NOT EXISTS iceberg_namespace_properties ("
    "catalog_name VARCHAR(255) NOT NULL, namespace VARCHAR(255) NOT NULL,"
    " property_key VARCHAR(255) NOT NULL, property_value VARCHAR(1000) NOT NULL,"
    " PRIMARY KEY (catalog_name, namespace, property_key))",
)
