"""The graph model of the coherence data: labels, the write queries, and each item's rows.

``(:Tenant {tenant_id})-[:EMITS]->(:Signal {key, signal_id, ...})-[:HAS_PROVENANCE]->
(:Provenance {provenance_id, ...})`` and ``(:Tenant)-[:HAS_SCORE]->(:CoherenceScore {tenant_id,
seq, ...})``; indexes on the MERGE keys, ``Signal.signal_id`` and ``(Signal.tenant_id,
Signal.ts)``. Times are stored as epoch microseconds (exact, comparable) beside their ISO text.
A replay writes the same model under prefixed labels (:func:`relabel`). Plain data and
functions: the writer (:mod:`sinks.graph`) sends them over Bolt.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from core import _native
from core.records import TAGGED_READERS, ScoreChange, Tagged

__all__ = [
    "EDGE_TYPES",
    "INDEXES",
    "LOOKUP_INDEXES",
    "NODE_LABELS",
    "SCORES_QUERY",
    "SIGNALS_QUERY",
    "SIGNALS_ROWS_QUERY",
    "UNIQUE_KEYS",
    "epoch_micros",
    "relabel",
    "schema_name",
    "score_row",
    "signal_key",
    "signal_row",
    "signal_rows",
    "signals_param",
    "storable",
]

NODE_LABELS = ("Tenant", "Signal", "Provenance", "CoherenceScore")
EDGE_TYPES = ("EMITS", "HAS_PROVENANCE", "HAS_SCORE")

#: A node label of the model after a colon, in a query (see :func:`relabel`).
_LABEL = re.compile(r":(" + "|".join(NODE_LABELS) + r")\b")
#: What a label prefix may be: it is pasted into queries.
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: JSON's escaping of a string with ``ensure_ascii=True`` (the C function json.dumps calls).
_ascii: Callable[[str], str] = json.encoder.encode_basestring_ascii

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

#: The signals of a batch (:func:`signals_param`): each tenant merged once, then its signals.
#: A signal the ``MERGE`` just created has no ``signal_id`` yet (every stored one has it), so
#: ``fresh`` says whether this transaction created it: then it has no edges, and its ``EMITS``
#: and ``HAS_PROVENANCE`` edges are made with ``CREATE`` (no search of the tenant's edges); a
#: signal that existed got its ``EMITS`` edge in the transaction that created it, and only its
#: ``HAS_PROVENANCE`` edges are merged (a replay, or a second provenance). Sound only if a key
#: occurs once per statement, which :func:`signals_param` ensures. 43% fewer db hits than the
#: per-row ``MERGE`` of :data:`SIGNALS_ROWS_QUERY` (DEVELOPERS.md).
SIGNALS_QUERY = """
UNWIND $tenants AS tenant
MERGE (t:Tenant {tenant_id: tenant.tenant_id})
WITH t, tenant
UNWIND tenant.signals AS row
WITH t, row.signal AS sig, row.provenances AS provenances
MERGE (s:Signal {key: sig.key})
WITH t, s, sig, provenances, s.signal_id IS NULL AS fresh
FOREACH (_ IN CASE WHEN fresh THEN [1] ELSE [] END |
  SET s += sig
  CREATE (t)-[:EMITS]->(s))
WITH s, provenances, fresh
UNWIND provenances AS prov
MERGE (p:Provenance {provenance_id: prov.provenance_id})
ON CREATE SET p += prov
FOREACH (_ IN CASE WHEN fresh THEN [1] ELSE [] END | CREATE (s)-[:HAS_PROVENANCE]->(p))
FOREACH (_ IN CASE WHEN fresh THEN [] ELSE [1] END | MERGE (s)-[:HAS_PROVENANCE]->(p))
"""

#: The same effect row by row (``$rows`` of :func:`signal_row`), every node and edge a ``MERGE``:
#: for FalkorDB (``stores.graph_compat``), whose request cap splits a ``rows`` list.
SIGNALS_ROWS_QUERY = """
UNWIND $rows AS row
MERGE (t:Tenant {tenant_id: row.tenant_id})
MERGE (s:Signal {key: row.key})
ON CREATE SET s += row.signal
MERGE (t)-[:EMITS]->(s)
MERGE (p:Provenance {provenance_id: row.provenance_id})
ON CREATE SET p += row.provenance
MERGE (s)-[:HAS_PROVENANCE]->(p)
"""

SCORES_QUERY = """
UNWIND $rows AS row
MERGE (t:Tenant {tenant_id: row.tenant_id})
MERGE (s:CoherenceScore {tenant_id: row.tenant_id})
ON CREATE SET s.seq = 0
MERGE (t)-[:HAS_SCORE]->(s)
WITH s, row
WHERE coalesce(s.seq, 0) < row.seq
SET s += row.score
"""

#: (label, property) of every MERGE key: each is a uniqueness constraint on Neo4j (backed by an
#: index), so two transactions merging the same key cannot create it twice.
UNIQUE_KEYS: tuple[tuple[str, str], ...] = (
    ("Signal", "key"),
    ("Provenance", "provenance_id"),
    ("Tenant", "tenant_id"),
    ("CoherenceScore", "tenant_id"),
)
#: (label, properties) of the indexes for reads: ``Signal.signal_id`` and the composite
#: ``(Signal.tenant_id, Signal.ts)``.
LOOKUP_INDEXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Signal", ("signal_id",)),
    ("Signal", ("tenant_id", "ts")),
)
#: (label, properties) of every index, the constraints' included.
INDEXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    *((label, (prop,)) for label, prop in UNIQUE_KEYS),
    *LOOKUP_INDEXES,
)


def schema_name(label: str, props: tuple[str, ...]) -> str:
    """The name of the constraint or index on ``label(props)``: ``igflow_<label>_<props>``, so
    that a scratch label's schema can be dropped by name (``label`` carries its prefix)."""
    return "_".join(("igflow", label, *props))


def relabel(query: str, prefix: str) -> str:
    """``query`` with every label of :data:`NODE_LABELS` written after a colon prefixed:
    ``(t:Tenant)`` -> ``(t:<prefix>Tenant)``. Identity for an empty prefix; ``ValueError`` for a
    prefix that is not letters, digits and ``_`` (not starting with a digit)."""
    if not prefix:
        return query
    if _PREFIX.fullmatch(prefix) is None:
        msg = f"graph label prefix {prefix!r}: letters, digits and _, not starting with a digit"
        raise ValueError(msg)
    return _LABEL.sub(lambda m: f":{prefix}{m.group(1)}", query)


def epoch_micros(value: datetime) -> int:
    """Microseconds since the epoch of a timezone-aware datetime, exactly (no float)."""
    return (value - _EPOCH) // _MICROSECOND


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def signal_key(item: Tagged) -> str:
    """The signal's idempotency key as one string: SHA-256 (hex) of the canonical JSON array
    ``[tenant_id, source, signal_id, ts]``, ``ts`` in epoch microseconds, serialized with
    ``separators=(",", ":")`` and ``ensure_ascii=True`` (so the bytes hashed are ASCII)."""
    s = item.signal
    # What json.dumps writes for this array, without building an encoder per call (that was a
    # third of the graph writer's Python time): each string as the encoder's own ASCII escaping
    # does, the integer as int's repr. tests/unit/test_graph_model.py checks it against json.dumps.
    canonical = (
        f"[{_ascii(s.tenant_id)},{_ascii(s.source)},{_ascii(s.signal_id)},{epoch_micros(s.ts)}]"
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def signal_row(item: Tagged) -> dict[str, Any]:
    s, p, tags = item.signal, item.provenance, item.tags
    key = signal_key(item)
    return {
        "tenant_id": s.tenant_id,
        "key": key,
        "provenance_id": item.provenance_id,
        "signal": {
            "key": key,
            "signal_id": s.signal_id,
            "tenant_id": s.tenant_id,
            "type": s.type,
            "value": s.value,
            "weight": 1.0 if s.weight is None else s.weight,
            "source": s.source,
            "ts": epoch_micros(s.ts),
            "ts_iso": _iso(s.ts),
        },
        "provenance": {
            "provenance_id": item.provenance_id,
            "tenant_id": s.tenant_id,
            "policy_version": item.policy_version,
            "schema_version": p.schema_version,
            "input_hash": p.input_hash,
            "kafka_topic": p.topic,
            "kafka_partition": p.kafka_partition,
            "kafka_offset": p.kafka_offset,
            "purpose": tags.purpose,
            "retention": tags.retention,
            "license": tags.license,
            "residency": tags.residency,
        },
    }


def signal_rows(items: list[Tagged]) -> list[dict[str, Any]]:
    """:func:`signal_row` of each of ``items``, in order: in C (``core._native.graph_rows``, the
    same dicts) for the common signal (a tenant, source and signal id JSON writes as themselves,
    a time in UTC itself), by :func:`signal_row` (the reference) for any other."""
    rows: list[dict[str, Any]] = []
    at, n = 0, len(items)
    while at < n:
        at = _native.graph_rows(items, at, TAGGED_READERS, rows)
        if at < n:
            rows.append(signal_row(items[at]))
            at += 1
    return rows


def signals_param(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``$tenants`` of :data:`SIGNALS_QUERY` for ``rows`` of :func:`signal_row`:
    ``[{tenant_id, signals: [{signal, provenances: [provenance, ...]}]}]``, each key once (with
    the properties of its first row, as ``ON CREATE`` keeps them) and each of its distinct
    provenances once, in the order first seen. The rows' maps are shared, not copied."""
    by_key: dict[str, dict[str, Any]] = {}
    tenants: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        held = by_key.get(row["key"])
        if held is None:
            held = by_key[row["key"]] = {
                "signal": row["signal"],
                "provenances": [row["provenance"]],
            }
            tenants.setdefault(row["tenant_id"], []).append(held)
        elif all(p["provenance_id"] != row["provenance_id"] for p in held["provenances"]):
            held["provenances"].append(row["provenance"])
    return [{"tenant_id": tenant, "signals": signals} for tenant, signals in tenants.items()]


def score_row(change: ScoreChange) -> dict[str, Any]:
    return {
        "tenant_id": change.tenant_id,
        "seq": change.seq,
        "score": {
            "tenant_id": change.tenant_id,
            "score": change.score,
            "score_2dp": str(change.score_2dp),
            "status": change.status,
            "updated_at": epoch_micros(change.updated_at),
            "updated_at_iso": _iso(change.updated_at),
            "seq": change.seq,
            "provenance_id": change.provenance_id,
        },
    }


def _stored_strings(item: Tagged | ScoreChange) -> tuple[str, ...]:
    """Every string the graph stores for ``item`` (the string values of its rows)."""
    if isinstance(item, ScoreChange):
        return (item.tenant_id, item.status, item.provenance_id)
    s, p, tags = item.signal, item.provenance, item.tags
    return (
        s.tenant_id,
        s.signal_id,
        s.type,
        s.source,
        item.provenance_id,
        item.policy_version,
        p.topic,
        p.input_hash,
        tags.purpose,
        tags.retention,
        tags.license,
        tags.residency,
    )


def storable(item: Tagged | ScoreChange) -> bool:
    """Whether the graph can hold ``item``: no string it stores contains a NUL character (FalkorDB
    has no way to express one; refused on Neo4j too, so both stores hold the same)."""
    # One search of the joined strings: half the cost of one search per string (0.36 against
    # 0.66 µs an item), and a NUL is in the join exactly when it is in one of them.
    strings = _stored_strings(item)
    try:
        return "\x00" not in "".join(strings)
    except TypeError:  # a value that is not a string: the server refuses it, not this check
        return not any("\x00" in text for text in strings)
