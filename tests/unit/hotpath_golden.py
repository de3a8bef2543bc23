"""A fixed workload through decode, validate, dedupe, tenant-tag and score, written out exactly.

``tests/data/hotpath_golden.json`` holds what these steps gave for it *before* their per-record
cost was cut (issue 15): ``test_hotpath_golden.py`` recomputes it and asserts equality, so a
faster step that changes one id, one digit, one reason code or one pickled byte fails. Regenerate
(only for an intended change of output, and say so in the commit):

    .venv/bin/python -m tests.unit.hotpath_golden --write
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import random
import struct
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from core.contracts import signal_contracts
from core.records import Decoded, PolicyTags, Provenance, RawRecord, Rejected, Signal, Tagged
from core.settings import DedupeSettings, ScoreSettings, ValidateSettings
from core.signal_rules import check
from core.tenants import StaticTenants
from core.wire import HEADER_SIZE, encode, frame
from igflow.workload import SOURCES, WorkloadSpec, generate, tenant_ids
from operators.decode import SignalDecoder
from operators.dedupe import TenantDedupe, Verdict, late_reject
from operators.score import TenantScore
from operators.tenancy import TenancyPolicy, tag

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "hotpath_golden.json"
#: The policy bundle the fixture was recorded under, frozen: the shipped bundle's version (and so
#: every provenance id) changes with any policy edit, which is not a hot-path regression.
POLICIES = GOLDEN.parent / "golden_policies"

V1, V2 = signal_contracts()[0], signal_contracts()[-1]
_V2_JSON = json.loads(V2.text)


def _variant(**changes: Any) -> str:
    """The v2 schema text with top-level changes, or with ``fields`` transformed."""
    doc = json.loads(V2.text)
    fields = changes.pop("fields", None)
    if fields is not None:
        doc["fields"] = fields(doc["fields"])
    doc.update(changes)
    return json.dumps(doc)


#: Writer schemas by id: the two contracts and writers that resolve, or not, in other ways.
SCHEMAS: dict[int, str] = {
    1: V1.text,
    2: V2.text,
    # an extra field the reader lacks (schema drift: unknown_fields)
    3: _variant(fields=lambda f: [*f, {"name": "extra", "type": "string", "default": ""}]),
    # value as a string: does not resolve
    4: _variant(
        fields=lambda f: [dict(x, type="string") if x["name"] == "value" else x for x in f]
    ),
    # another record name: does not resolve
    5: _variant(name="Other"),
    # the v1 fields in another order: resolves by name
    6: json.dumps(dict(json.loads(V1.text), fields=json.loads(V1.text)["fields"][::-1])),
    # weight as a plain double (resolves into the reader's union)
    7: _variant(
        fields=lambda f: [
            {"name": "weight", "type": "double"} if x["name"] == "weight" else x for x in f
        ]
    ),
    # ts as a plain long (no logical type)
    8: _variant(fields=lambda f: [dict(x, type="long") if x["name"] == "ts" else x for x in f]),
    # value as float (promoted to double)
    9: _variant(fields=lambda f: [dict(x, type="float") if x["name"] == "value" else x for x in f]),
    # v1 without weight: the reader's default (null)
    10: json.dumps(
        dict(
            json.loads(V1.text),
            fields=[x for x in json.loads(V1.text)["fields"] if x["name"] != "weight"],
        )
    ),
    # v1 without ts, a reader field that has no default: does not resolve
    11: json.dumps(dict(json.loads(V1.text), fields=json.loads(V1.text)["fields"][:-1])),
}

#: Strings that JSON escapes (quote, backslash, control characters, DEL, non-ASCII, astral).
ODD = ('te"n', "ba\\ck", "tab\there", "nl\n", "del\x7f", "é-tenant", "日本", "\U0001f600", "")


def _parsed(schema_id: int) -> dict[str, Any]:
    import fastavro

    parsed: dict[str, Any] = fastavro.parse_schema(json.loads(SCHEMAS[schema_id]))
    return parsed


def _long(n: int) -> bytes:
    """Avro zig-zag varint."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _string(s: bytes) -> bytes:
    return _long(len(s)) + s


def raw_records() -> list[RawRecord]:
    """The workload: two generated streams (v1 and v2 writers) and crafted edge cases."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    raws: list[RawRecord] = []
    streams = []
    for schema_id, seed, selectors in ((1, 11, False), (2, 12, True)):
        spec = WorkloadSpec(
            tenants=4,
            count=90,
            seed=seed,
            duplicates=0.08,
            invalid=0.05,
            bad=6,
            start=start + timedelta(milliseconds=500 * (schema_id - 1)),  # distinct keys
            selectors=selectors,
        )
        parsed = _parsed(schema_id)
        streams.append(list(generate(spec, schema_id, parsed)))
    offset = 0
    for a, b in zip(*streams, strict=False):
        for m in (a, b):
            ts_ms = int(start.timestamp() * 1000) + offset * 500
            raws.append(RawRecord("signals", offset % 3, offset, m.key, m.value, ts_ms))
            offset += 1

    rng = random.Random(5)
    base = {
        "tenant_id": "tenant-01",
        "signal_id": "crafted",
        "type": "latency",
        "value": 0.5,
        "weight": 1.0,
        "source": SOURCES[0],
        "ts": start + timedelta(hours=1),
        "selectors": ["a", "b"],
    }
    crafted: list[bytes | None] = []
    for schema_id in sorted(SCHEMAS):
        parsed = _parsed(schema_id)
        for i in range(6):
            rec = dict(base, signal_id=f"crafted-{schema_id}-{i}", value=rng.random())
            rec["weight"] = [None, 0.0, 2.5, 1e-300, 1e300, 0.75][i]
            if schema_id == 4:
                rec["value"] = "0.5"
            if schema_id == 3:
                rec["extra"] = "x" * i
            if schema_id == 7 and rec["weight"] is None:
                rec["weight"] = 1.0
            if schema_id == 8:
                rec["ts"] = 1_767_229_200_000_000 + i
            try:
                crafted.append(encode(schema_id, parsed, rec))
            except (ValueError, TypeError):
                crafted.append(None)
    # Odd strings in every string field, v1 and v2.
    for i, odd in enumerate(ODD):
        for schema_id in (1, 2):
            rec = dict(base, tenant_id=odd, signal_id=odd + str(i), type=odd or "t", source=odd)
            crafted.append(encode(schema_id, _parsed(schema_id), rec))
    good1 = encode(1, _parsed(1), base)
    good2 = encode(2, _parsed(2), base)
    # Bodies by hand: the v1 fields, then a weight union index, then ts.
    head = b"".join(_string(x.encode()) for x in ("tenant-01", "hand", "latency"))
    head += struct.pack("<d", 0.25)
    tail = _string(SOURCES[0].encode()) + _long(1_767_229_200_000_000)
    for index in (-1, -2, 2, 5):  # out of range: negative picks a branch from the end
        crafted.append(frame(1, head + _long(index) + struct.pack("<d", 2.0) + tail))
    crafted.append(frame(1, head + _long(0) + tail))  # null weight, by hand
    crafted += [
        frame(1, head + _long(0) + _string(SOURCES[0].encode()) + _long(2**63 - 1)),
        frame(1, head + _long(0) + _string(SOURCES[0].encode()) + _long(-(2**63))),
        frame(2, head + _long(0) + tail + _long(1) + _string(b"sel") + _long(0)),
        frame(2, head + _long(0) + tail + _long(-1) + _long(4) + _string(b"sel") + _long(0)),
        frame(2, head + _long(0) + tail + _long(0) + b"\x00"),  # trailing byte
        frame(1, _string(b"\xff\xfe") + head[10:]),  # not UTF-8
        good1 + b"\x00",
        good1[:-1],
        good2[: len(good2) // 2],
        good1[:HEADER_SIZE],
        b"\x01" + good1[1:],
        frame(99, good1[HEADER_SIZE:]),
        b"",
        None,
    ]
    topics = ["signals", 'qu"ote', "back\\slash", "é-topic", "ctl\x01"]
    for j, value in enumerate(crafted):
        if value is None and j % 2 == 0:
            continue
        topic = topics[j % len(topics)]
        ts_ms = None if j % 7 == 0 else int((start + timedelta(hours=1)).timestamp() * 1000)
        raws.append(RawRecord(topic, j % 5, 10_000 + j * 977, b"k", value, ts_ms))
    raws.append(RawRecord("signals", 0, 99_999, None, good1, 1, error="flagged"))
    return raws


def _f(x: float | None) -> str | None:
    return None if x is None else float.hex(x)


def _signal(s: Signal) -> list[Any]:
    return [
        s.tenant_id,
        s.signal_id,
        s.type,
        _f(s.value),
        _f(s.weight),
        s.source,
        s.ts.isoformat(),
        str(s.ts.tzinfo),
        list(s.selectors),
    ]


def _prov(p: Provenance) -> list[Any]:
    return [p.topic, p.kafka_partition, p.kafka_offset, p.schema_version, p.input_hash]


def _rejected(r: Rejected) -> list[Any]:
    return ["rejected", r.reason.value, r.detail, r.stage, r.tenant_id, r.schema_version]


def _decimal(d: Decimal) -> list[Any]:
    sign, digits, exponent = d.as_tuple()
    return [str(d), sign, list(digits), exponent]


def _digest(objects: list[Any]) -> str:
    """SHA-256 over the pickles of ``objects`` (what Bytewax snapshots and moves)."""
    h = hashlib.sha256()
    for obj in objects:
        h.update(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    return h.hexdigest()


def _score_items(policy: TenancyPolicy) -> list[Tagged]:
    """Signals made for the score's arithmetic: ties, zero and extreme weights, late, unordered."""
    rng = random.Random(9)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    tags = PolicyTags("p", "r", "l", "x")
    items: list[Tagged] = []
    ties = [0.125, 0.375, 0.625, 0.875]  # exact decimal ties at two places
    values = [*ties, 0.165, 0.005, 0.335, 0.0, 1.0, 0.5, 0.745, 0.755, 1 / 3, 2 / 3]
    weights: list[float | None] = [None, 0.0, 1.0, 0.5, 1e-300, 5e-324, 1e300, 3.0, 0.1]
    for i in range(900):
        tenant = f"score-{i % 3}"
        value = rng.choice(values) if rng.random() < 0.4 else rng.random()
        weight = rng.choice(weights) if rng.random() < 0.5 else rng.uniform(0, 4)
        if tenant == "score-2":
            weight = 0.0  # a tenant of zero weights only: the unweighted mean
        ts = start + timedelta(seconds=i * 7 + rng.randrange(-600, 600))
        s = Signal(tenant, f"s{i}", "latency", value, weight, "sensor-a", ts)
        p = Provenance("signals", 0, i, 1, f"{i:064x}")
        d = Decoded(s, p, None, None, ())
        items.append(Tagged(d, tags, policy.version, f"{i:032x}"))
    return items


def compute() -> dict[str, Any]:
    """Every step's output for the workload, as JSON-able data."""
    lookup = SCHEMAS.get
    decoder = SignalDecoder(lookup, V2.parsed)
    tenants = StaticTenants.of(*tenant_ids(4), "日本", sources=SOURCES)
    validate = ValidateSettings()
    policy = TenancyPolicy.load(POLICIES)
    raws = raw_records()

    decoded_out: list[Any] = []
    decoded: list[Decoded] = []
    pickled: list[Any] = []
    for raw in raws:
        out = decoder.decode(raw)
        pickled.append(out)
        if isinstance(out, Decoded):
            assert out.raw is raw
            decoded.append(out)
            decoded_out.append(
                [
                    "decoded",
                    _signal(out.signal),
                    _prov(out.provenance),
                    out.kafka_timestamp_ms,
                    list(out.unknown_fields),
                ]
            )
        else:
            decoded_out.append(_rejected(out))

    validated_out: list[Any] = []
    valid: list[Decoded] = []
    for item in decoded:
        checked = check(item, tenants, validate)
        pickled.append(checked)
        if isinstance(checked, Decoded):
            assert checked is item
            valid.append(item)
            validated_out.append("ok")
        else:
            validated_out.append(_rejected(checked))

    dedupe_out: list[Any] = []
    unique: list[Decoded] = []
    dedupes: dict[str, TenantDedupe] = {}
    ttl = DedupeSettings(ttl_seconds=5.0).ttl_seconds
    for item in valid:
        state = dedupes.setdefault(item.signal.tenant_id, TenantDedupe(ttl))
        verdict = state.check(item)
        if verdict is Verdict.NEW:
            unique.append(item)
            dedupe_out.append("new")
        elif verdict is Verdict.LATE:
            dedupe_out.append(_rejected(late_reject(item, state)))
        else:
            dedupe_out.append(verdict.value)
    states = {t: pickle.loads(pickle.dumps(s)) for t, s in sorted(dedupes.items())}
    dedupe_state = {t: [len(s), s.seen, s.duplicates, str(s.horizon)] for t, s in states.items()}

    tagged_out: list[Any] = []
    tagged: list[Tagged] = []
    for item in decoded:  # every decoded record, odd tenant ids and topics included
        t = tag(item, policy)
        pickled.append(t)
        tagged.append(t)
        tags = t.tags
        names = (tags.purpose, tags.retention, tags.license, tags.residency)
        tagged_out.append([t.provenance_id, t.policy_version, *names])

    score_out: list[Any] = []
    windows = (ScoreSettings(), ScoreSettings(window_seconds=3600.0, healthy_at=0.7, warn_at=0.4))
    unique_ids = {id(d) for d in unique}
    streams = (
        [t for t in tagged if id(t.decoded) in unique_ids],
        _score_items(policy),
    )
    for settings in windows:
        for stream in streams:
            scores: dict[str, TenantScore] = {}
            for item in stream:
                state = scores.get(item.signal.tenant_id)
                if state is None:
                    state = scores[item.signal.tenant_id] = TenantScore(settings)
                change = state.add(item)
                pickled.append(change)
                if change is None:
                    score_out.append(None)
                    continue
                score_out.append(
                    [
                        change.tenant_id,
                        _f(change.score),
                        change.status,
                        change.updated_at.isoformat(),
                        change.window_count,
                        _f(change.window_weight),
                        change.provenance_id,
                        _prov(change.provenance),
                        _decimal(change.score_2dp),
                        change.seq,
                    ]
                )
            for tenant, state in sorted(scores.items()):
                exact = state.exact
                score_out.append([tenant, len(state), str(exact), str(state.status)])
                pickled.append(state.__getstate__())

    return {
        "records": len(raws),
        "decode": decoded_out,
        "validate": validated_out,
        "dedupe": dedupe_out,
        "dedupe_state": dedupe_state,
        "tag": tagged_out,
        "score": score_out,
        "pickles_sha256": _digest(pickled),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {GOLDEN}")
    args = parser.parse_args()
    data = compute()
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":")) + "\n"
    if args.write:
        GOLDEN.write_text(text, encoding="ascii")
    counts = {k: len(v) for k, v in data.items() if isinstance(v, list)}
    print(json.dumps(counts), data["pickles_sha256"])


if __name__ == "__main__":
    main()
