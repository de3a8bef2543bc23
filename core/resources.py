"""The files the engine ships beside its code: Avro contracts, Rego policies, migrations, the
GraphQL schema. Found with :mod:`importlib.resources`, so they are read from the installed
package (a wheel) exactly as from a checkout."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from core.errors import ConfigError

__all__ = ["avro_dir", "package_path", "policies_dir", "slo_file"]


def package_path(package: str, *parts: str) -> Path:
    """The folder or file ``parts`` inside importable ``package``, as a file-system path.

    ``ConfigError`` when the package is not installed as plain files (a zip import): every
    reader here needs real paths (regopy, pyiceberg, Starlette's file responses)."""
    resource = files(package).joinpath(*parts)
    path = Path(str(resource))
    if not path.exists():
        msg = f"{package}/{'/'.join(parts)} is not installed as a file (is the package zipped?)"
        raise ConfigError(msg)
    return path


def avro_dir() -> Path:
    """The Avro contracts folder (``schemas/avro``)."""
    return package_path("schemas", "avro")


def policies_dir() -> Path:
    """The Rego policy bundle folder (``policies``)."""
    return package_path("policies")


def slo_file() -> Path:
    """The service-level objectives shipped with the engine (``slo/slos.json``)."""
    return package_path("slo", "slos.json")
