"""tenant-tag: each signal gets its tenant's policy tags and a derived provenance id.

Contract: every input value comes out exactly once, in order, as a :class:`~core.records.Tagged`
carrying

- the tenant's :class:`~core.records.PolicyTags` (``purpose``, ``retention``, ``license``,
  ``residency``), from ``policies/tenancy.rego`` over the overrides in ``policies/tenancy.json``,
  evaluated with regopy;
- ``policy_version``: :func:`policy_bundle_version` of the policy folder, the SHA-256 of every
  ``*.rego`` and ``*.json`` file in it;
- ``provenance_id``: :func:`provenance_id` of the record's :func:`manifest`, which holds the
  license and retention of the record's source when the source registry (:mod:`core.sources`)
  has it registered at the record's Kafka timestamp (``source_license``, ``source_retention``;
  absent otherwise, so ids of unregistered sources and of flows without a registry are unchanged).

Nothing here reads a clock or draws a random number, so a replay of the same offsets under the same
policy bundle reproduces every tag and every id. A policy that gives no well-formed tags is not bad
input but a fault of the deployment: :class:`~core.errors.SchemaError`, raised at start-up
whenever a probe can catch it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bytewax.dataflow import operator

from core import _native, tracing
from core.errors import SchemaError
from core.records import Decoded, PolicyTags, Provenance, Signal, Tagged, slot_descriptors
from core.rego import CompiledQuery, bundle_digest, data_document, read_bundle, read_policy
from core.sources import SourceEntry, SourceRegistry
from operators.batching import Runs, map_runs

__all__ = [
    "CACHE_SIZE",
    "DATA_FILE",
    "POLICY_FILE",
    "TAG_NAMES",
    "TenancyPolicy",
    "manifest",
    "manifest_id",
    "policy_bundle_version",
    "provenance_id",
    "source_entry",
    "tag",
    "tag_batch",
    "tag_run",
    "tenant_tag",
]

#: The policy and its data document, inside the policy folder.
POLICY_FILE = "tenancy.rego"
DATA_FILE = "tenancy.json"
#: The tags a policy must give, every one a non-empty string.
TAG_NAMES = ("purpose", "retention", "license", "residency")
#: Tenants whose tags one :class:`TenancyPolicy` remembers (least recently used ones go first).
CACHE_SIZE = 100_000

_QUERY = "tags := data.igflow.tenancy.tags"


def policy_bundle_version(policies_dir: Path) -> str:
    """SHA-256 (64 hex digits) of the policy bundle in ``policies_dir``.

    The bundle is every ``*.rego`` and ``*.json`` file under the folder, recursively, hashed in
    sorted relative-path order as (path, bytes) pairs with length prefixes. Any change to a
    policy file, or a file added, removed or renamed, changes the version; a byte-identical copy
    of the folder elsewhere has the same one. ``SchemaError`` if the folder is missing.
    """
    return bundle_digest(read_bundle(policies_dir))


def _tenants_named(document: Mapping[str, Any]) -> list[str]:
    tenancy = document.get("tenancy")
    tenants = tenancy.get("tenants") if isinstance(tenancy, dict) else None
    return sorted(tenants) if isinstance(tenants, dict) else []


def _policy_tags(result: object, tenant_id: str) -> PolicyTags:
    if not isinstance(result, dict):
        msg = f"tenancy policy gave no tags for tenant {tenant_id!r}"
        raise SchemaError(msg)
    if set(result) != set(TAG_NAMES):
        msg = (
            f"tenancy policy gave tags {sorted(result)} for tenant {tenant_id!r}, "
            f"expected exactly {sorted(TAG_NAMES)}"
        )
        raise SchemaError(msg)
    bad = sorted(name for name, value in result.items() if not (isinstance(value, str) and value))
    if bad:
        msg = f"tenancy policy gave non-string or empty tag(s) {bad} for tenant {tenant_id!r}"
        raise SchemaError(msg)
    return PolicyTags(
        purpose=result["purpose"],
        retention=result["retention"],
        license=result["license"],
        residency=result["residency"],
    )


class TenancyPolicy:
    """The compiled tenancy policy of one bundle version; :meth:`tags` per tenant, cached.

    Thread-safe: Bytewax workers of one process may share an instance (one regopy interpreter,
    one lock). Each process builds its own, with :meth:`load` or by unpickling one (which
    recompiles the same source and data, so it keeps its version).
    """

    def __init__(self, source: str, data: str, version: str, cache_size: int = CACHE_SIZE) -> None:
        """Compile ``source`` (Rego) over ``data`` (the JSON data document), and probe it.

        ``version`` names the bundle they came from. ``SchemaError`` if the policy does not
        compile or gives bad tags for an unknown tenant or for any tenant the data names.
        """
        self.version = version
        self._source = source
        self._data = data
        self._cache_size = cache_size
        document = data_document(data, "tenancy")
        self._query = CompiledQuery("tenancy", "tenancy", source, _QUERY, data)
        # Tags depend on nothing but the tenant id and this fixed bundle, so a cached answer is
        # the answer. The bound keeps a flood of distinct tenant ids from growing memory without
        # limit; the C lru_cache is itself thread-safe.
        self._cached = functools.lru_cache(maxsize=cache_size)(self._evaluate)
        # Fail at start-up, not on the first record: the defaults (through the empty id, which
        # names no tenant) and every tenant the data overrides.
        for tenant_id in ("", *_tenants_named(document)):
            self.tags(tenant_id)

    @classmethod
    def load(cls, policies_dir: Path, cache_size: int = CACHE_SIZE) -> TenancyPolicy:
        """Load ``tenancy.rego`` and ``tenancy.json`` from ``policies_dir``.

        The version is that of the whole folder, computed from the same bytes that are compiled
        (a file changed in between cannot give a version that does not match the policy).
        ``SchemaError`` if either file is missing or unusable.
        """
        files, (source, data) = read_policy(policies_dir, (POLICY_FILE, DATA_FILE), "tenancy")
        return cls(source, data, bundle_digest(files), cache_size)

    def __reduce__(self) -> tuple[type[TenancyPolicy], tuple[str, str, str, int]]:
        return (type(self), (self._source, self._data, self.version, self._cache_size))

    def tags(self, tenant_id: str) -> PolicyTags:
        """The tenant's policy tags; ``SchemaError`` if the policy gives no well-formed tags."""
        tags: PolicyTags = self._cached(tenant_id)
        return tags

    def _evaluate(self, tenant_id: str) -> PolicyTags:
        result = self._query.evaluate({"tenant_id": tenant_id})
        return _policy_tags(result, tenant_id)


def manifest(
    item: Decoded, policy_version: str, source: SourceEntry | None = None
) -> dict[str, object]:
    """The provenance manifest of one record under one policy bundle, with its registered
    ``source``'s license and retention when it has one (``None``: neither key).

    The tags are not in it: they are a function of ``tenant_id`` and ``policy_version``.
    """
    provenance = item.provenance
    stamped: dict[str, object] = (
        {}
        if source is None
        else {"source_license": source.license, "source_retention": source.retention}
    )
    return {
        **stamped,
        "tenant_id": item.signal.tenant_id,
        "policy_version": policy_version,
        "schema_version": provenance.schema_version,
        "input_hash": provenance.input_hash,
        "kafka_topic": provenance.topic,
        "kafka_partition": provenance.kafka_partition,
        "kafka_offset": provenance.kafka_offset,
    }


def provenance_id(manifest: Mapping[str, object]) -> str:
    """The first 32 hex digits (128 bits) of the SHA-256 of the manifest's canonical JSON.

    Canonical: keys sorted, no spaces, ASCII only (``ensure_ascii``), no NaN; so the id depends on
    the manifest's content, never on its key order.
    """
    canonical = json.dumps(
        manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:32]


#: What ``json.dumps(..., ensure_ascii=True)`` writes for a ``str`` (the same C function).
_json_string = json.encoder.encode_basestring_ascii


def _plain(item: Decoded) -> bool:
    """Whether every provenance value of ``item`` has the exact type the canonical JSON is
    written for (a ``str``, an ``int``): a ``bool`` or a subclass could print otherwise."""
    p = item.provenance
    return (
        type(p.kafka_partition) is int
        and type(p.kafka_offset) is int
        and type(p.schema_version) is int
        and type(p.input_hash) is str
        and type(p.topic) is str
        and type(item.signal.tenant_id) is str
    )


def _tail(item: Decoded, policy_json: str, redacted: str = "", stamp: str = "") -> str:
    """The manifest's canonical JSON from ``kafka_partition`` on (keys in sorted order): the
    same for every record of one tenant, topic, partition and schema version."""
    p = item.provenance
    return (
        f',"kafka_partition":{p.kafka_partition:d},"kafka_topic":{_json_string(p.topic)},'
        f'"policy_version":{policy_json},{redacted}"schema_version":{p.schema_version:d},'
        f'{stamp}"tenant_id":{_json_string(item.signal.tenant_id)}}}'
    )


def _id(item: Decoded, tail: str) -> str:
    """The provenance id of ``item``'s manifest whose canonical JSON ends in ``tail``."""
    p = item.provenance
    head = f'{{"input_hash":{_json_string(p.input_hash)},"kafka_offset":{p.kafka_offset:d}'
    return hashlib.sha256((head + tail).encode("ascii")).hexdigest()[:32]


def manifest_id(
    item: Decoded, policy_version: str, redaction: str = "", source: SourceEntry | None = None
) -> str:
    """``provenance_id(manifest(item, policy_version, source))``, without building and sorting a
    dict; with ``redaction`` (the canonical JSON of the manifest's ``redaction`` value,
    :mod:`operators.redact`), the id of the manifest with that key too.

    The manifest's canonical JSON written directly, keys in their sorted order, each value as
    ``json.dumps`` writes it: a ``str`` through the same escaping function, an ``int`` as its
    decimal digits. A value of any other type (a ``bool``, an ``int`` or ``str`` subclass) takes
    the general path, so the id is the same byte for byte in every case.
    """
    if not (
        _plain(item)
        and type(policy_version) is str
        and (source is None or (type(source.license) is str and type(source.retention) is str))
    ):
        stamped = manifest(item, policy_version, source)
        if redaction:
            stamped["redaction"] = json.loads(redaction)
        return provenance_id(stamped)
    redacted = f'"redaction":{redaction},' if redaction else ""
    stamp = (
        ""
        if source is None
        else f'"source_license":{_json_string(source.license)},'
        f'"source_retention":{_json_string(source.retention)},'
    )
    return _id(item, _tail(item, _json_string(policy_version), redacted, stamp))


def source_entry(item: Decoded, sources: SourceRegistry | None) -> SourceEntry | None:
    """The registered source ``item`` was sent under (by its Kafka timestamp), if any."""
    if sources is None:
        return None
    return sources.entry(item.signal.source, item.kafka_timestamp_ms)


def _source_id(item: Decoded, version: str, sources: SourceRegistry) -> str:
    """The provenance id with the record's registered source stamped in, when it has one."""
    return manifest_id(item, version, source=source_entry(item, sources))


def tag(item: Decoded, policy: TenancyPolicy, sources: SourceRegistry | None = None) -> Tagged:
    """``item`` with its tenant's tags, the policy version and its provenance id (with its
    source's license and retention when ``sources`` has it registered)."""
    version = policy.version
    if sources is not None:
        start = 0 if item.trace is None else time.time_ns()
        tagged = Tagged(
            item, policy.tags(item.signal.tenant_id), version, _source_id(item, version, sources)
        )
        if start:
            tracing.record_stage("tenant_tag", tagged, start)
        return tagged
    if item.trace is None:
        return Tagged(item, policy.tags(item.signal.tenant_id), version, manifest_id(item, version))
    start = time.time_ns()
    tagged = Tagged(item, policy.tags(item.signal.tenant_id), version, manifest_id(item, version))
    tracing.record_stage("tenant_tag", tagged, start)
    return tagged


def tag_batch(
    batch: list[tuple[str, Decoded]],
    policy: TenancyPolicy,
    sources: SourceRegistry | None = None,
) -> list[tuple[str, Tagged]]:
    """:func:`tag_run` of the values of a keyed batch, keys and order kept."""
    tagged = tag_run([item for _, item in batch], policy, sources)
    return [(key, item) for (key, _), item in zip(batch, tagged, strict=True)]


def tag_run(
    items: list[Decoded],
    policy: TenancyPolicy,
    sources: SourceRegistry | None = None,
) -> list[Tagged]:
    """:func:`tag` of each of ``items`` (a run, or any list), in order (the batch entry point;
    :func:`tag` stays the reference).

    Without ``sources`` (no record carries a source stamp), an untraced record's id is
    :func:`manifest_id`'s, with the canonical JSON written in two parts: everything after
    ``kafka_offset`` (partition, topic, policy version, schema version, tenant) is the same for
    every record of one tenant, topic, partition and schema version, and is written once per
    batch; per record, only the digest, the offset and one SHA-256. The tags are looked up once
    per tenant per batch. A record whose values are not all of the exact types the canonical
    JSON is written for (a ``str``, an ``int``: a ``bool`` or a subclass could print otherwise)
    and a traced one take :func:`tag` itself.

    That loop runs in C (``core/_native.c``; tenant-tag[batch] of ``benchmarks/stages.py`` 3.0 ->
    1.8 µs a record, session 17), with :func:`tag_run_python` its reference. It reads the
    records' fields at their slots (:data:`_READERS`): a record that is not exactly a
    ``Decoded`` holding exactly a ``Signal`` and a ``Provenance`` takes :func:`tag` too
    (session 34: 1.13 -> 0.75 µs a record).
    """
    version = policy.version
    if sources is not None or type(version) is not str:
        return [tag(item, policy, sources) for item in items]
    return _native.tag_run(
        items if isinstance(items, list) else list(items),
        version,
        functools.partial(_tail, policy_json=_json_string(version)),
        policy.tags,
        functools.partial(tag, policy=policy),
        _json_string,
        Tagged,
        _TAGGED_SLOTS,
        _READERS,
    )


def tag_run_python(items: list[Decoded], policy: TenancyPolicy) -> list[Tagged]:
    """:func:`tag_run`'s loop without sources in Python: the reference of the C loop
    (``core/_native.c``), which does the same steps in the same order
    (``tests/unit/test_tenancy.py`` compares them)."""
    version = policy.version
    policy_json = _json_string(version)
    # (tail, tags) per (tenant, topic, partition, schema version): one lookup per record.
    groups: dict[tuple[str, str, int, int], tuple[str, PolicyTags]] = {}
    tags_of: dict[str, PolicyTags] = {}
    out: list[Tagged] = []
    append = out.append
    sha256, quoted = hashlib.sha256, _json_string
    for item in items:
        # _plain and _id, inline (the same checks, the same bytes hashed)
        p, signal = item.provenance, item.signal
        tenant_id, topic, partition, version_no = (
            signal.tenant_id,
            p.topic,
            p.kafka_partition,
            p.schema_version,
        )
        offset = p.kafka_offset
        if item.trace is not None or not (
            type(partition) is int
            and type(offset) is int
            and type(version_no) is int
            and type(p.input_hash) is str
            and type(topic) is str
            and type(tenant_id) is str
        ):
            append(tag(item, policy))
            continue
        group = (tenant_id, topic, partition, version_no)
        held = groups.get(group)
        if held is None:
            tags = tags_of.get(tenant_id)
            if tags is None:
                tags = tags_of[tenant_id] = policy.tags(tenant_id)
            held = groups[group] = (_tail(item, policy_json), tags)
        tail, tags = held
        head = f'{{"input_hash":{quoted(p.input_hash)},"kafka_offset":{offset:d}'
        append(Tagged(item, tags, version, sha256((head + tail).encode("ascii")).hexdigest()[:32]))
    return out


#: Tagged's slots in the order the C loop sets them.
_TAGGED_SLOTS = slot_descriptors(Tagged, ("decoded", "tags", "policy_version", "provenance_id"))

#: What the C loop reads of a record, at the slots' offsets, in its order (``TR_*`` in
#: ``core/_native.c``).
_READERS = (
    *(Decoded.__dict__[name] for name in ("trace", "provenance", "signal")),
    Signal.__dict__["tenant_id"],
    *(
        Provenance.__dict__[name]
        for name in ("topic", "kafka_partition", "schema_version", "kafka_offset", "input_hash")
    ),
)


@operator
def tenant_tag(
    step_id: str,
    up: Runs[Decoded],
    policy: TenancyPolicy,
    sources: SourceRegistry | None = None,
) -> Runs[Tagged]:
    """Tag every value with its tenant's policy tags and provenance id (stamped with its
    registered source's terms when ``sources`` is given); keys and order unchanged.

    ``SchemaError`` (a policy bug, not bad input) stops the flow.
    """
    step = functools.partial(tag_run, policy=policy, sources=sources)
    return map_runs("tag", up, step)
