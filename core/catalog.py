"""The catalog factory: the Iceberg catalog that settings name."""

from __future__ import annotations

from pathlib import Path

from pyiceberg.catalog import Catalog, load_catalog

from core.settings import Settings

__all__ = ["catalog"]


def catalog(settings: Settings) -> Catalog:
    """The Iceberg catalog of ``settings`` (its local warehouse folder created if needed)."""
    if settings.warehouse.startswith("file://"):
        Path(settings.warehouse.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    return load_catalog(settings.lake.catalog_name, **settings.catalog_properties)
