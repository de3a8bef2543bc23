"""The Avro contracts in ``schemas/avro/``, loaded and validated at start-up.

Files are named ``<name>.v<N>.avsc``; versions of one name form the evolution history of one
registry subject, oldest first. The flow reads every signal with the newest version (the reader
schema), so older writers resolve through Avro's schema-resolution rules.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import fastavro

from core.errors import SchemaError
from core.resources import avro_dir

__all__ = ["SCHEMA_DIR", "Contract", "load_contracts", "signal_contracts"]

SCHEMA_DIR = avro_dir()
_NAME = re.compile(r"^(?P<name>[a-z0-9_]+)\.v(?P<version>\d+)\.avsc$")


@dataclasses.dataclass(frozen=True, slots=True)
class Contract:
    """One versioned Avro schema file."""

    name: str
    version: int
    path: Path
    text: str

    @property
    def parsed(self) -> dict[str, Any]:
        """The schema parsed by fastavro (logical types resolved)."""
        parsed = fastavro.parse_schema(json.loads(self.text))
        if not isinstance(parsed, dict):
            msg = f"{self.path.name}: the top-level schema must be a record"
            raise SchemaError(msg)
        return parsed


def load_contracts(directory: Path = SCHEMA_DIR) -> dict[str, list[Contract]]:
    """Every contract in ``directory``, grouped by name, versions ascending and gap-free."""
    found: dict[str, list[Contract]] = {}
    for path in sorted(directory.glob("*.avsc")):
        match = _NAME.match(path.name)
        if match is None:
            msg = f"{path.name}: contract files are named <name>.v<N>.avsc"
            raise SchemaError(msg)
        text = path.read_text(encoding="utf-8")
        try:
            fastavro.parse_schema(json.loads(text))
        except (ValueError, fastavro.schema.SchemaParseException) as exc:
            msg = f"{path}: not a valid Avro schema: {exc}"
            raise SchemaError(msg) from exc
        contract = Contract(match["name"], int(match["version"]), path, text)
        found.setdefault(contract.name, []).append(contract)
    for name, versions in found.items():
        versions.sort(key=lambda c: c.version)
        numbers = [c.version for c in versions]
        if numbers != list(range(1, len(numbers) + 1)):
            msg = f"contract {name!r} has versions {numbers}; expected 1..{len(numbers)}"
            raise SchemaError(msg)
    return found


def signal_contracts(directory: Path = SCHEMA_DIR) -> list[Contract]:
    """The Signal schema's versions, oldest first."""
    contracts = load_contracts(directory).get("signal")
    if not contracts:
        msg = f"no signal.v<N>.avsc in {directory}"
        raise SchemaError(msg)
    return contracts
