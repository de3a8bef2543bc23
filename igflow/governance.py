"""Governance by construction: a contract or policy change lands only with the rules and the
provenance schema that cover it (``igflow governance check``, in ``make test``).

Three things must agree, and this module checks that they do:

- the Avro contracts (``schemas/avro/signal.v*.avsc``): the fields a signal can carry;
- the policies (``policies/``): ``fields.rego`` classifies every field of every contract
  (:data:`FIELDS_QUERY`), ``tenancy.rego`` gives every tenant its tags, ``redaction.rego`` its
  redaction rules (each for a contract field, and a rule that field allows);
- the provenance schema (``schemas/provenance/manifest.v<N>.json``, JSON Schema 2020-12): what a
  landed signal is stamped with: its fields, the manifest hashed into its provenance id (with
  the redaction rules applied, for a tenant that has some), its tags.

The newest provenance schema must accept a *stamped probe* of every contract version (a signal
with a value of each field's type) under the tags the tenancy policy gives each tenant its data
names, and the default tenant's: so a new contract field, a changed field type, a new tag, a tag
value the schema does not allow or a new manifest key fails until the schema declares it. Every
contract field needs a class in ``fields.rego``, and every class it names a contract field.
Published schema versions never change: ``schemas/provenance/lock.json`` holds the SHA-256 of
each; an edit to a locked version fails (add a version instead), and a version not yet locked
fails until ``igflow governance lock`` records it.

Every finding has a reason code (:class:`Finding`); nothing here needs the stack.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.contracts import load_contracts
from core.errors import SchemaError
from core.records import Decoded, Provenance, Signal
from core.rego import CompiledQuery, bundle_digest, read_bundle
from core.resources import package_path
from core.sealing import SEALED_COLUMNS
from core.sources import SourceEntry
from operators import redact
from operators.tenancy import DATA_FILE, POLICY_FILE, policy_bundle_version, provenance_id

if TYPE_CHECKING:
    import jsonschema

__all__ = [
    "FIELDS_FILE",
    "LOCK_FILE",
    "Finding",
    "check",
    "lock",
    "probe_value",
    "provenance_dir",
]

FIELDS_FILE = "fields.rego"
FIELDS_QUERY = "classification := data.igflow.fields.classification"
CLASSES_QUERY = "classes := data.igflow.fields.classes"
TAGS_QUERY = "tags := data.igflow.tenancy.tags"
LOCK_FILE = "lock.json"
_VERSION = re.compile(r"^manifest\.v(?P<version>[1-9][0-9]*)\.json$")
#: The tenant a policy's data does not name: it gets the policy's defaults.
_DEFAULT_TENANT = "tenant-governance-probe"
_PROBE_TS = datetime(2026, 1, 1, tzinfo=UTC)
#: A registered source, whose terms the manifest stamps (:mod:`core.sources`).
_PROBE_SOURCE = SourceEntry(
    "probe", ("owner",), ("kafka",), "Restricted-TOS", "", "standard-365d", "", None
)


def _sealed_fields() -> set[str]:
    """The contract fields a store column seals (:data:`core.sealing.SEALED_COLUMNS`)."""
    return {field for columns in SEALED_COLUMNS.values() for field in columns.values()}


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """One disagreement: a reason code and what to do about it."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def provenance_dir() -> Path:
    """The provenance schemas shipped with the engine (``schemas/provenance``)."""
    return package_path("schemas", "provenance")


def probe_value(avro_type: Any) -> Any:
    """A JSON value of ``avro_type`` as the decoder hands it on (a union: its first non-null
    branch; a timestamp: integer microseconds, as on the wire)."""
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        return probe_value(branches[0]) if branches else None
    if isinstance(avro_type, dict):
        kind = avro_type.get("type")
        if kind == "array":
            return [probe_value(avro_type["items"])]
        if kind == "map":
            return {"key": probe_value(avro_type["values"])}
        if kind == "record":
            return {f["name"]: probe_value(f["type"]) for f in avro_type.get("fields", [])}
        if kind == "enum":
            return avro_type["symbols"][0]
        if kind == "fixed":
            return "\u0000" * int(avro_type.get("size", 1))
        return probe_value(kind)
    scalars: dict[str, Any] = {
        "null": None,
        "boolean": True,
        "int": 1,
        "long": 1,
        "float": 0.5,
        "double": 0.5,
        "string": "probe",
        "bytes": "probe",
    }
    return scalars.get(str(avro_type), "probe")


def _versions(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for path in folder.glob("manifest.v*.json"):
        match = _VERSION.match(path.name)
        if match:
            found.append((int(match["version"]), path))
    return sorted(found)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_lock(folder: Path) -> dict[str, str]:
    path = folder / LOCK_FILE
    if not path.exists():
        return {}
    locked = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(locked, dict):
        msg = f"{path}: expected an object of file name to SHA-256"
        raise SchemaError(msg)
    return {str(k): str(v) for k, v in locked.items()}


def _query(policies: Mapping[str, bytes], module: str, query: str, data: str | None) -> Any:
    return CompiledQuery(module, module, policies[module].decode("utf-8"), query, data).evaluate({})


def _check_versions(folder: Path) -> Iterator[Finding]:
    versions = _versions(folder)
    if not versions:
        yield Finding("PROVENANCE_SCHEMA_MISSING", f"no manifest.v<N>.json in {folder}")
        return
    numbers = [n for n, _ in versions]
    if numbers != list(range(1, len(numbers) + 1)):
        yield Finding(
            "PROVENANCE_SCHEMA_VERSIONS", f"versions {numbers}; expected 1..{len(numbers)}"
        )
    locked = _read_lock(folder)
    for number, path in versions:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("version") != number or not str(document.get("$id", "")).endswith(
            path.name
        ):
            yield Finding(
                "PROVENANCE_SCHEMA_VERSIONS",
                f"{path.name}: its `version` must be {number} and its `$id` end in {path.name}",
            )
        digest = locked.get(path.name)
        if digest is None:
            yield Finding(
                "PROVENANCE_SCHEMA_UNLOCKED",
                f"{path.name} is not in {LOCK_FILE}: run `igflow governance lock` once it is final",
            )
        elif digest != _sha256(path):
            yield Finding(
                "PROVENANCE_SCHEMA_EDITED",
                f"{path.name} changed after it was published; published versions never change: "
                f"restore it and add manifest.v{numbers[-1] + 1}.json instead",
            )
    for name in sorted(set(locked) - {p.name for _, p in versions}):
        yield Finding("PROVENANCE_SCHEMA_MISSING", f"{name} is locked but gone")


def _tenants(data: bytes) -> list[str]:
    document = json.loads(data)
    tenants = document.get("tenancy", {}).get("tenants", {})
    return sorted(tenants) if isinstance(tenants, dict) else []


def _path(error: jsonschema.ValidationError) -> str:
    return "/".join(str(p) for p in error.absolute_path) or "(root)"


def check(avro_dir: Path, policies_dir: Path, provenance: Path) -> list[Finding]:
    """Every disagreement between contracts, policies and the provenance schema (none: they
    agree). ``SchemaError`` when one of them cannot be read at all."""
    findings = list(_check_versions(provenance))
    versions = _versions(provenance)
    if not versions:
        return findings
    schema = json.loads(versions[-1][1].read_text(encoding="utf-8"))
    # Imported here: jsonschema compiles a grammar at import (rfc3987-syntax), which was most of
    # every igflow command's start-up (4.7 s of 7.7 s, a loaded machine); only this uses it.
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)

    policies = read_bundle(policies_dir)
    for name in (FIELDS_FILE, POLICY_FILE, DATA_FILE, redact.POLICY_FILE, redact.DATA_FILE):
        if name not in policies:
            findings.append(Finding("POLICY_MISSING", f"{policies_dir / name} is missing"))
    if len(findings) and any(f.code == "POLICY_MISSING" for f in findings):
        return findings
    classification = _query(policies, FIELDS_FILE, FIELDS_QUERY, None)
    classes = _query(policies, FIELDS_FILE, CLASSES_QUERY, None)
    if not isinstance(classification, dict) or not isinstance(classes, list):
        findings.append(
            Finding(
                "POLICY_INVALID", f"{FIELDS_FILE} gives no `classification` object or `classes`"
            )
        )
        return findings
    data = policies[DATA_FILE].decode("utf-8")
    tenancy = CompiledQuery(
        POLICY_FILE, POLICY_FILE, policies[POLICY_FILE].decode("utf-8"), TAGS_QUERY, data
    )
    version = policy_bundle_version(policies_dir)
    redaction_data = policies[redact.DATA_FILE].decode("utf-8")
    redaction = CompiledQuery(
        redact.POLICY_FILE,
        redact.POLICY_FILE,
        policies[redact.POLICY_FILE].decode("utf-8"),
        redact.RULES_QUERY,
        redaction_data,
    )
    redaction_version = bundle_digest(
        {name: policies[name] for name in (redact.POLICY_FILE, redact.DATA_FILE)}
    )
    redacted_tenants = redact.tenants_named(json.loads(redaction_data))
    rules_of = {t: redaction.evaluate({"tenant_id": t}) or {} for t in redacted_tenants}

    contracts = load_contracts(avro_dir).get("signal", [])
    if not contracts:
        findings.append(Finding("CONTRACT_MISSING", f"no signal.v<N>.avsc in {avro_dir}"))
        return findings
    contract_fields: set[str] = set()
    for contract in contracts:
        fields = json.loads(contract.text).get("fields", [])
        for field in fields:
            name = field["name"]
            contract_fields.add(name)
            if name not in classification:
                findings.append(
                    Finding(
                        "FIELD_NOT_COVERED",
                        f"field {name!r} of {contract.path.name} has no class in "
                        f"policies/{FIELDS_FILE}",
                    )
                )
            elif classification[name] not in classes:
                findings.append(
                    Finding(
                        "FIELD_CLASS_UNKNOWN",
                        f"policies/{FIELDS_FILE} gives {name!r} the class "
                        f"{classification[name]!r}, not one of {sorted(classes)}",
                    )
                )
            elif classification[name] == "sensitive" and name not in _sealed_fields():
                findings.append(
                    Finding(
                        "FIELD_NOT_SEALED",
                        f"field {name!r} of {contract.path.name} is sensitive in "
                        f"policies/{FIELDS_FILE} but no store column seals it "
                        "(core/sealing.py SEALED_COLUMNS)",
                    )
                )
        signal = {f["name"]: probe_value(f["type"]) for f in fields}
        named = sorted({*_tenants(policies[DATA_FILE]), *redacted_tenants})
        for tenant in [*named, _DEFAULT_TENANT]:
            tags = tenancy.evaluate({"tenant_id": tenant})
            decoded = Decoded(
                Signal(tenant, "probe", "probe", 0.5, None, "probe", _PROBE_TS, ()),
                Provenance("coherence.signals", 0, 0, contract.version, "0" * 64),
            )
            # A tenant's redaction rules are in its manifest: only usable ones (the others are
            # findings of their own, below). Unstamped, and stamped with a registered source's
            # terms (the source registry).
            rules = rules_of.get(tenant, {})
            usable = () if redact.rule_problems(rules) else tuple(sorted(rules.items()))
            manifests = [
                redact.redacted_manifest(decoded, version, usable, redaction_version, source)
                for source in (None, _PROBE_SOURCE)
            ]
            stamps = [
                {
                    "signal": {**signal, "tenant_id": tenant},
                    "manifest": m,
                    "provenance_id": provenance_id(m),
                    "tags": tags,
                }
                for m in manifests
            ]
            errors = {str(e): e for st in stamps for e in validator.iter_errors(st)}
            for error in (errors[k] for k in sorted(errors)):
                # A tag depends on the tenant only, a field or the manifest on the contract only.
                what = (
                    f"the tags policies/{POLICY_FILE} gives tenant {tenant!r} do"
                    if error.absolute_path and error.absolute_path[0] == "tags"
                    else f"a stamped {contract.path.name} signal does"
                )
                findings.append(
                    Finding(
                        "PROVENANCE_SCHEMA_MISMATCH",
                        f"{what} not fit {versions[-1][1].name} at {_path(error)}: {error.message}",
                    )
                )
    findings.extend(_redaction_findings(rules_of, contract_fields))
    for name in sorted(set(classification) - contract_fields):
        findings.append(
            Finding(
                "FIELD_RULE_STALE",
                f"policies/{FIELDS_FILE} classifies {name!r}, which no contract has",
            )
        )
    return _distinct(findings)


def _redaction_findings(
    rules_of: Mapping[str, Any], contract_fields: set[str]
) -> Iterator[Finding]:
    """A redaction rule for a field no contract has, or one its field does not allow."""
    where = f"policies/{redact.DATA_FILE}"
    for tenant, rules in sorted(rules_of.items()):
        if not isinstance(rules, dict):
            yield Finding("REDACTION_RULE_INVALID", f"{where} gives tenant {tenant!r} no object")
            continue
        for field, _why in redact.rule_problems(rules):
            if field not in contract_fields:
                yield Finding(
                    "REDACTION_FIELD_UNKNOWN",
                    f"{where} redacts {field!r} for tenant {tenant!r}, which no contract has",
                )
            else:
                allowed = sorted(redact.ALLOWED.get(field, ()))
                yield Finding(
                    "REDACTION_RULE_INVALID",
                    f"{where} gives tenant {tenant!r} the rule {rules[field]!r} for {field!r}, "
                    f"which allows {allowed or 'no redaction'}",
                )


def _distinct(findings: list[Finding]) -> list[Finding]:
    return list(dict.fromkeys(findings))


def lock(provenance: Path) -> list[str]:
    """Record the SHA-256 of every schema version not yet locked; the names it added. A locked
    entry is never rewritten (an edited version stays a finding)."""
    locked = _read_lock(provenance)
    added = [p.name for _, p in _versions(provenance) if p.name not in locked]
    for name in added:
        locked[name] = _sha256(provenance / name)
    (provenance / LOCK_FILE).write_text(
        json.dumps(dict(sorted(locked.items())), indent=2) + "\n", encoding="utf-8"
    )
    return added
