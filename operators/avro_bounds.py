"""Writer schemas whose records can make a reader loop without reading, or recurse without end.

Arrays of items that take no bytes:

An Avro array is written in blocks, each a count and then that many items. An item of a type
that is encoded in zero bytes (``null``, a ``fixed`` of size 0, a record whose fields all take
zero bytes, an empty record) costs the writer nothing, so a record of a dozen bytes can claim
2^62 of them: fastavro then loops that many times, reading nothing, whether it keeps the field
or skips it (measured: a 10-byte record with a count of 2^40 held ``schemaless_reader`` past a
20 s timeout). Every other repeated item takes at least one byte (a map entry's key is a string;
a union's branch, an enum's symbol, a string's length are varints), so its count is bounded by
the record's size and a lying count ends in ``EOFError``.

:func:`zero_width_arrays` names such arrays in a writer schema.

Recursive types: a named type that can hold itself (``{"name": "L", "fields": [{"name": "next",
"type": ["null", "L"]}]}``) lets a record nest as deep as it has bytes, one byte a level (the
union's branch index), and fastavro reads it by recursion: 1,000 levels raised
``RecursionError``, 100,000 (a 100 KB record) overflowed the C stack and killed the process
(SIGSEGV), at that record again after every restart. :func:`recursive_types` names them.

The decoder refuses every record of a writer schema that has either (``SCHEMA_INCOMPATIBLE``,
naming the array or the type), before reading it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["recursive_types", "zero_width_arrays"]


def zero_width_arrays(schema: Any) -> tuple[str, ...]:
    """The paths (``field.subfield[]`` …) of the arrays in the fastavro-parsed ``schema`` whose
    items are encoded in zero bytes; ``()`` if none."""
    named: dict[str, Any] = {}
    if isinstance(schema, dict):
        named.update(schema.get("__named_schemas") or {})
    return tuple(_Walk(named).arrays(schema, ""))


class _Walk:
    def __init__(self, named: Mapping[str, Any]) -> None:
        self._named = dict(named)
        self._zero: dict[str, bool] = {}
        self._walked: set[str] = set()

    def zero_width(self, schema: Any) -> bool:
        """Whether every value of ``schema`` is encoded in zero bytes."""
        if isinstance(schema, list):  # a union: its branch index is a varint
            return False
        if isinstance(schema, str):
            if schema == "null":
                return True
            if schema not in self._named:
                return False  # a primitive of at least one byte (or a length/varint)
            if schema not in self._zero:
                self._zero[schema] = False  # a recursive reference: decided by the rest
                self._zero[schema] = self.zero_width(self._named[schema])
            return self._zero[schema]
        kind = schema["type"]
        if isinstance(kind, dict | list):
            return self.zero_width(kind)
        if kind == "fixed":
            return int(schema["size"]) == 0
        if kind in {"record", "error"}:
            self._name(schema)
            return all(self.zero_width(f["type"]) for f in schema["fields"])
        return bool(kind == "null")

    def arrays(self, schema: Any, path: str) -> list[str]:
        """The zero-width arrays inside ``schema`` (at ``path``), each named type walked once."""
        if isinstance(schema, list):
            return [p for branch in schema for p in self.arrays(branch, path)]
        if isinstance(schema, str):
            if schema not in self._named or schema in self._walked:
                return []
            self._walked.add(schema)
            return self.arrays(self._named[schema], path)
        kind = schema["type"]
        if isinstance(kind, dict | list):
            return self.arrays(kind, path)
        if kind in {"record", "error"}:
            name = self._name(schema)
            if name is not None:
                if name in self._walked:
                    return []
                self._walked.add(name)
            found: list[str] = []
            for f in schema["fields"]:
                found.extend(self.arrays(f["type"], f"{path}.{f['name']}" if path else f["name"]))
            return found
        if kind == "array":
            inner = self.arrays(schema["items"], f"{path}[]")
            return [path or "[]", *inner] if self.zero_width(schema["items"]) else inner
        if kind == "map":
            return self.arrays(schema["values"], f"{path}{{}}")
        return []

    def _name(self, schema: Mapping[str, Any]) -> str | None:
        name = schema.get("name")
        if name is not None and name not in self._named:
            self._named[name] = schema
        return name


def recursive_types(schema: Any) -> tuple[str, ...]:
    """The named types of the fastavro-parsed ``schema`` that can hold themselves (through any
    chain of fields, unions, arrays and maps), sorted; ``()`` if none."""
    refs: dict[str, set[str]] = {}

    def walk(node: Any, owner: str | None) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch, owner)
        elif isinstance(node, str):
            if owner is not None and (node in named or node in refs):
                refs.setdefault(owner, set()).add(node)
        elif isinstance(node, dict):
            kind = node.get("type")
            name = node.get("name")
            if kind in {"record", "error", "enum", "fixed"} and isinstance(name, str):
                if owner is not None:
                    refs.setdefault(owner, set()).add(name)
                refs.setdefault(name, set())
                for field in node.get("fields", ()):
                    walk(field["type"], name)
            elif kind == "array":
                walk(node["items"], owner)
            elif kind == "map":
                walk(node["values"], owner)
            elif isinstance(kind, dict | list):
                walk(kind, owner)

    named: dict[str, Any] = {}
    if isinstance(schema, dict):
        named = dict(schema.get("__named_schemas") or {})
    walk(schema, None)
    for definition in named.values():  # the definitions a reference named before its own
        walk(definition, None)
    return tuple(sorted(name for name in refs if _reaches(refs, name, name)))


def _reaches(refs: Mapping[str, set[str]], start: str, goal: str) -> bool:
    """Whether a chain of references leads from ``start`` back to ``goal``."""
    seen: set[str] = set()
    todo = list(refs.get(start, ()))
    while todo:
        name = todo.pop()
        if name == goal:
            return True
        if name not in seen:
            seen.add(name)
            todo.extend(refs.get(name, ()))
    return False
