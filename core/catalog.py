"""The catalog factory: the Iceberg catalog that settings name.

pyiceberg builds a ``pyiceberg.utils.config.Config`` whenever it needs a setting, about four
times per table append (``Table.append``, writing the data files, each data file, writing the
metadata), and each one finds and parses ``.pyiceberg.yaml`` with strictyaml: 1.5 ms of CPU a
time, measured, about 3% of a lake-only flow's CPU. :func:`parse_config_once` makes a process
parse each version of that file once (:func:`catalog` and the Iceberg sink call it).
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.utils.config import PYICEBERG_HOME, PYICEBERG_YML, Config

from core.settings import Settings

__all__ = ["CatalogOnce", "catalog", "parse_config_once", "preload"]


def catalog(settings: Settings) -> Catalog:
    """The Iceberg catalog of ``settings`` (its local warehouse folder created if needed)."""
    return _open(settings.lake.catalog_name, settings.catalog_properties, settings.warehouse)


def _open(name: str, properties: dict[str, str], warehouse: str | None) -> Catalog:
    parse_config_once()
    if warehouse and warehouse.startswith("file://"):
        Path(warehouse.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    return load_catalog(name, **properties)


def preload(settings: Settings) -> None:
    """Import what opening ``settings``' catalog imports, opening nothing: pyiceberg's SQL
    catalog (SQLAlchemy's ORM, ~0.17 CPU s) and the URI's dialect and driver. A flow command
    calls it with its other imports, before ``--processes`` forks, so that no child imports them
    again (each did, ~0.3 s at the catalog's first use). A URI SQLAlchemy cannot read is left
    for the opening to report."""
    import pyiceberg.catalog.sql  # noqa: F401
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(settings.lake.catalog_uri).get_dialect().import_dbapi()
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
