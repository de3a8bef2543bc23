"""Avro schema parsing, identity and compatibility levels (Confluent semantics).

Contracts:

* :func:`parse` accepts a schema only if both Apache ``avro`` and ``fastavro`` accept it,
  otherwise it raises :class:`InvalidSchemaError`.
* Two schema texts are *the same schema* iff their :attr:`ParsedSchema.canonical` strings
  are equal. The canonical string is avro's full JSON form with sorted keys and no
  whitespace: insensitive to formatting and key order, but (unlike the Parsing Canonical
  Form) it keeps defaults, docs, aliases and logical types, because those change how
  readers resolve data.
* :func:`check` returns human-readable reasons why a candidate may not follow the given
  earlier versions under a level; an empty list means compatible.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import avro.schema
import fastavro
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityResult,
    SchemaCompatibilityType,
)

__all__ = [
    "DEFAULT_LEVEL",
    "LEVELS",
    "InvalidLevelError",
    "InvalidSchemaError",
    "ParsedSchema",
    "check",
    "parse",
    "parse_request",
    "validate_level",
]

LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
DEFAULT_LEVEL = "BACKWARD"


class InvalidSchemaError(ValueError):
    """The text is not a valid Avro schema (Confluent error 42201)."""


class InvalidLevelError(ValueError):
    """The value is not one of :data:`LEVELS` (Confluent error 42203)."""


@dataclass(frozen=True)
class ParsedSchema:
    """A validated Avro schema: the text as given, its identity key and avro's model."""

    text: str
    canonical: str
    schema: avro.schema.Schema

    @property
    def name(self) -> str:
        """The full name of a named schema, else its type (e.g. ``"string"``)."""
        fullname = getattr(self.schema, "fullname", None)
        return fullname if isinstance(fullname, str) else str(self.schema.type)


def parse(text: str) -> ParsedSchema:
    """Validate ``text`` with avro and fastavro; :class:`InvalidSchemaError` if either fails."""
    try:
        parsed = avro.schema.parse(text)
        fastavro.parse_schema(json.loads(text))
    except Exception as exc:  # both parsers raise many unrelated types on bad input
        message = f"Invalid schema: {exc}"
        raise InvalidSchemaError(message) from exc
    canonical = json.dumps(parsed.to_json(), sort_keys=True, separators=(",", ":"))
    return ParsedSchema(text=text, canonical=canonical, schema=parsed)


def parse_request(body: Mapping[str, object]) -> ParsedSchema:
    """The schema of a REST body ``{"schema": ..., "schemaType"?, "references"?}``.

    Only AVRO (the default type) without references is accepted; anything else, or a
    missing or invalid schema, raises :class:`InvalidSchemaError`. Other fields are ignored.
    """
    text, kind = body.get("schema"), body.get("schemaType") or "AVRO"
    if kind != "AVRO" or body.get("references"):
        message = f"Invalid schema: only AVRO without references is supported, got {kind}"
        raise InvalidSchemaError(message)
    if not isinstance(text, str) or not text.strip():
        message = "Invalid schema: the body needs a non-empty 'schema' string"
        raise InvalidSchemaError(message)
    return parse(text)


def validate_level(level: object) -> str:
    """Return ``level`` upper-cased if it names a level, else raise :class:`InvalidLevelError`."""
    if isinstance(level, str) and level.upper() in LEVELS:
        return level.upper()
    message = (
        "Invalid compatibility level. Valid values are none, backward, forward, full, "
        "backward_transitive, forward_transitive, and full_transitive"
    )
    raise InvalidLevelError(message)


def check(candidate: ParsedSchema, previous: Sequence[tuple[int, str]], level: str) -> list[str]:
    """Reasons ``candidate`` is incompatible with ``previous`` under ``level``; ``[]`` if none.

    ``previous`` holds ``(version, schema text)`` pairs, oldest first. Transitive levels
    check every pair, the others only the last one, ``NONE`` none. ``BACKWARD`` means the
    candidate can read data written with the earlier schema, ``FORWARD`` the reverse,
    ``FULL`` both.
    """
    level = validate_level(level)
    if level == "NONE" or not previous:
        return []
    targets = previous if level.endswith("_TRANSITIVE") else previous[-1:]
    base = level.removesuffix("_TRANSITIVE")
    reasons: list[str] = []
    for version, text in targets:
        old = avro.schema.parse(text)
        if base in ("BACKWARD", "FULL"):
            reasons += _explain(version, "BACKWARD", reader=candidate.schema, writer=old)
        if base in ("FORWARD", "FULL"):
            reasons += _explain(version, "FORWARD", reader=old, writer=candidate.schema)
    return reasons


def _explain(
    version: int, direction: str, *, reader: avro.schema.Schema, writer: avro.schema.Schema
) -> list[str]:
    """One reason string if ``reader`` cannot read ``writer``'s data, else nothing."""
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result: SchemaCompatibilityResult = checker.get_compatibility(reader=reader, writer=writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = ", ".join(sorted({kind.name.upper() for kind in result.incompatibilities}))
    if direction == "BACKWARD":
        summary = f"the new schema cannot read data written with version {version}"
    else:
        summary = f"version {version} cannot read data written with the new schema"
    where = ", ".join(sorted(result.locations))
    details = ", ".join(sorted(result.messages))
    return [f"{direction}: {summary}: {kinds} at {where} ({details})"]
