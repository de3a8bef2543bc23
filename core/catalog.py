"""The catalog factory: the Iceberg catalog that settings name.

pyiceberg builds a ``pyiceberg.utils.config.Config`` whenever it needs a setting, about four
times per table append (``Table.append``, writing the data files, each data file, writing the
metadata), and each one finds and parses ``.pyiceberg.yaml`` with strictyaml: 1.5 ms of CPU a
time, measured, about 3% of a lake-only flow's CPU. :func:`parse_config_once` makes a process
parse each version of that file once (:func:`catalog` and the Iceberg sink call it).

A SQL catalog (the project's: Postgres, SQLite in tests) opens as :class:`LakeSqlCatalog`,
pyiceberg's ``SqlCatalog`` with a cheaper commit (DEVELOPERS.md "The lake's catalog"); any other
catalog type is pyiceberg's own.
"""

from __future__ import annotations

import copy
import importlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import pyiceberg.catalog
from pyiceberg.catalog import PY_CATALOG_IMPL, TYPE, Catalog, CatalogType, load_catalog
from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.io import FileIO, load_file_io
from pyiceberg.serializers import FromInputFile
from pyiceberg.table import CommitTableResponse, Table
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import (
    TableRequirement,
    TableUpdate,
    _apply_table_update,
    _TableMetadataUpdateContext,
    _update_table_metadata_log,
)
from pyiceberg.typedef import EMPTY_DICT, Identifier, Properties, RecursiveDict
from pyiceberg.utils.config import PYICEBERG_HOME, PYICEBERG_YML, Config, merge_config
from pyiceberg.utils.datetime import datetime_to_millis
from sqlalchemy import Table as SqlTable
from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from core.settings import Settings

__all__ = [
    "CatalogOnce",
    "LakeSqlCatalog",
    "catalog",
    "parse_config_once",
    "preload",
    "updated_metadata",
]


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
    if (
        isinstance(kind, str)
        and kind.lower() == CatalogType.SQL.value
        and not properties.get(PY_CATALOG_IMPL)
    ):
        return LakeSqlCatalog(name, **cast(dict[str, str], conf))  # as load_catalog passes it
    return load_catalog(name, **properties)


def preload(settings: Settings) -> None:
    """Import what opening ``settings``' catalog imports beyond this module's imports (which
    hold pyiceberg's SQL catalog and SQLAlchemy's ORM, ~0.17 CPU s), opening nothing: the URI's
    dialect and driver. A flow command calls it with its other imports, before ``--processes``
    forks, so that no child imports them again (each imported the SQL catalog and these, ~0.3 s,
    at the catalog's first use), and what the driver's first connection imports. A URI
    SQLAlchemy cannot read is left for the opening to report."""
    try:
        dialect = make_url(settings.lake.catalog_uri).get_dialect()
        dialect.import_dbapi()
        if dialect.driver == "psycopg2":  # its first connection imports the extras (~2-6 ms)
            importlib.import_module("psycopg2.extras")
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


class LakeSqlCatalog(SqlCatalog):
    """pyiceberg's ``SqlCatalog`` on the same ``iceberg_tables`` rows, its table reads and
    commits cheaper (the lake commits once per table every ``lake.batch_max_seconds``).

    - :meth:`load_table` selects the row's metadata location with one prepared Core statement
      (pyiceberg builds an ORM query and a ``Session`` each time) and parses the metadata file
      only when it has not parsed (or written) that file before: an Iceberg metadata file is
      written once under a fresh name and never changed, so the same name is the same
      metadata. :data:`METADATA_KEPT` are kept, per catalog.
    - :meth:`commit_table` does what pyiceberg's does (load the current table, check the
      requirements against it, apply the updates with the metadata log, write the new metadata
      file, then ``UPDATE ... WHERE metadata_location = <the one loaded>``: a writer that
      committed in between makes it match no row, and the commit raises
      ``CommitFailedException``), with that load through :meth:`load_table`, the updates
      applied without pyiceberg's deep copy (:func:`updated_metadata`) and the ``UPDATE``
      prepared once. A new table, or a database whose driver does not report the rows an
      ``UPDATE`` matched, goes to pyiceberg's own commit.
    - :meth:`_load_file_io` gives one FileIO per set of properties and location scheme, where
      pyiceberg builds a new one for every table load and commit. Each of those is a reference
      cycle (``PyArrowFileIO`` caches its filesystems in an ``lru_cache`` of its own bound
      method) that only Python's full collection frees: measured, ~190 FileIOs with their
      filesystems every 15 s of a flow with every store (docs/performance.md, "Session 26").

    What lands in the database and the metadata files is what pyiceberg's would write: another
    pyiceberg client reads the same tables, and commits to them as before.
    """

    def __init__(self, name: str, **properties: str) -> None:
        super().__init__(name, **properties)
        rows = cast(SqlTable, IcebergTables.__table__)
        columns = rows.c
        where = (
            (columns.catalog_name == self.name)
            & (columns.table_namespace == bindparam("at_namespace"))
            & (columns.table_name == bindparam("at_name"))
        )
        where_table = where
        if (type_filter := self._iceberg_type_filter()) is not None:
            where_table = where & type_filter
        self._select = select(columns.metadata_location).where(where_table)
        self._update = (
            update(rows)
            .where(where & (columns.metadata_location == bindparam("at_location")))
            .values(
                metadata_location=bindparam("new_location"),
                previous_metadata_location=bindparam("old_location"),
            )
        )
        self._parsed: OrderedDict[str, TableMetadata] = OrderedDict()
        self._file_ios: dict[tuple[tuple[tuple[str, Any], ...], str | None], FileIO] = {}
        self._lock = threading.Lock()

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

    def load_table(self, identifier: str | Identifier) -> Table:
        """pyiceberg's ``SqlCatalog.load_table``: the table the catalog's row names now."""
        namespace = Catalog.namespace_to_string(Catalog.namespace_from(identifier))
        name = Catalog.table_name_from(identifier)
        with self.engine.connect() as connection:
            rows = connection.execute(
                self._select, {"at_namespace": namespace, "at_name": name}
            ).all()
        if not rows:
            msg = f"Table does not exist: {namespace}.{name}"
            raise NoSuchTableError(msg)
        location = rows[0][0]
        if not location:
            msg = "Table property metadata_location is missing"
            raise NoSuchTableError(msg)
        metadata = self._metadata(location)
        return Table(
            identifier=(*Catalog.identifier_to_tuple(namespace), name),
            metadata=metadata,
            metadata_location=location,
            io=self._load_file_io(metadata.properties, location),
            catalog=self,
        )

    def commit_table(
        self,
        table: Table,
        requirements: tuple[TableRequirement, ...],
        updates: tuple[TableUpdate, ...],
    ) -> CommitTableResponse:
        """pyiceberg's ``SqlCatalog.commit_table``, cheaper (see the class)."""
        if not self.engine.dialect.supports_sane_rowcount:
            return super().commit_table(table, requirements, updates)
        identifier = table.name()
        try:
            current = self.load_table(identifier)
        except NoSuchTableError:
            return super().commit_table(table, requirements, updates)  # creates the table
        for requirement in requirements:
            requirement.validate(current.metadata)
        metadata = updated_metadata(current.metadata, updates, current.metadata_location)
        if metadata == current.metadata:  # no changes, do nothing
            return CommitTableResponse(  # type: ignore[call-arg]  # by name, as pyiceberg does
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
        namespace = Catalog.namespace_to_string(Catalog.namespace_from(identifier))
        name = Catalog.table_name_from(identifier)
        with self.engine.begin() as connection:
            result = connection.execute(
                self._update,
                {
                    "at_namespace": namespace,
                    "at_name": name,
                    "at_location": current.metadata_location,
                    "new_location": location,
                    "old_location": current.metadata_location,
                },
            )
            if result.rowcount < 1:
                msg = f"Table has been updated by another process: {namespace}.{name}"
                raise CommitFailedException(msg)
        self._remember(location, metadata)
        return CommitTableResponse(metadata=metadata, metadata_location=location)  # type: ignore[call-arg]
