"""What each part of an evidence bundle holds, and the summary its members give.

A part is a named group of archive members (``sbom/cyclonedx.json``, ``tests/junit.xml``,
``policies/fields.rego`` ...). :func:`summarize` reads a part's members and returns its summary
(test counts, coverage totals, the policy bundle's hash, the schema versions ...), or raises
:class:`ContentError` when a member is not what the part says it is. The builder stores the
summary in the signed manifest; the verifier computes it again from the members and compares,
so a manifest never claims what its members do not show.

Parsers here read untrusted bundles: JSON through :mod:`json`, JUnit through expat (whose
entity-expansion limits stop the "billion laughs" document), nothing is executed or extracted.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from xml.etree import ElementTree

from core.rego import bundle_digest

__all__ = [
    "PARTS",
    "ContentError",
    "member_prefix",
    "summarize",
]

#: Every part, in the order a manifest lists them, and the folder its members live in.
PARTS: dict[str, str] = {
    "sbom": "sbom/",
    "tests": "tests/",
    "coverage": "coverage/",
    "benchmarks": "benchmarks/",
    "slo": "slo/",
    "policies": "policies/",
    "schemas": "schemas/",
}
#: CycloneDX JSON versions whose shape the verifier knows.
CYCLONEDX_SPECS = frozenset({"1.4", "1.5", "1.6", "1.7"})
_AVRO = re.compile(r"^schemas/avro/(?P<name>[a-z0-9_]+)\.v(?P<version>[0-9]+)\.avsc$")
_PROVENANCE = re.compile(r"^schemas/provenance/manifest\.v(?P<version>[0-9]+)\.json$")
_PROVENANCE_LOCK = "schemas/provenance/lock.json"


class ContentError(ValueError):
    """A member is not what its part says it is."""


def member_prefix(part: str) -> str:
    """The folder (``sbom/``) every member of ``part`` lives in."""
    return PARTS[part]


def _json(name: str, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{name}: not JSON: {exc}"
        raise ContentError(msg) from exc


def _one(part: str, members: Mapping[str, bytes], name: str) -> bytes:
    if set(members) != {name}:
        msg = f"part {part} must hold exactly {name}, has {sorted(members)}"
        raise ContentError(msg)
    return members[name]


def _sbom(members: Mapping[str, bytes]) -> dict[str, Any]:
    name = "sbom/cyclonedx.json"
    doc = _json(name, _one("sbom", members, name))
    if not isinstance(doc, dict) or doc.get("bomFormat") != "CycloneDX":
        msg = f"{name}: not a CycloneDX document (bomFormat must be 'CycloneDX')"
        raise ContentError(msg)
    spec = doc.get("specVersion")
    if spec not in CYCLONEDX_SPECS:
        msg = f"{name}: specVersion {spec!r} is not one of {sorted(CYCLONEDX_SPECS)}"
        raise ContentError(msg)
    components = doc.get("components", [])
    if not isinstance(components, list) or not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("type"), str)
        for c in components
    ):
        msg = f"{name}: components must be a list of objects with a name and a type"
        raise ContentError(msg)
    return {"spec_version": spec, "components": len(components)}


def _junit(members: Mapping[str, bytes]) -> dict[str, Any]:
    name = "tests/junit.xml"
    data = _one("tests", members, name)
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        msg = f"{name}: not XML: {exc}"
        raise ContentError(msg) from exc
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    if root.tag not in {"testsuite", "testsuites"} or not suites:
        msg = f"{name}: not a JUnit report (no <testsuite>)"
        raise ContentError(msg)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    cases = 0
    for suite in suites:
        for key in totals:
            try:
                totals[key] += int(suite.get(key, "0"))
            except ValueError as exc:
                msg = f"{name}: <testsuite {key}=...> is not a count"
                raise ContentError(msg) from exc
        cases += len(suite.findall("testcase"))
    # The suites' counts and the <testcase> elements are both kept, not required to agree:
    # pytest keeps them equal, but its edge cases (teardown errors, internal errors) have
    # changed between releases, and evidence must record a run, not refuse it.
    return {**totals, "testcases": cases}


def _coverage(members: Mapping[str, bytes]) -> dict[str, Any]:
    name = "coverage/coverage.json"
    doc = _json(name, _one("coverage", members, name))
    totals = doc.get("totals") if isinstance(doc, dict) else None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(totals, dict) or not isinstance(files, dict):
        msg = f"{name}: not a coverage.py JSON report (no totals and files)"
        raise ContentError(msg)
    try:
        statements = int(totals["num_statements"])
        covered = int(totals["covered_lines"])
        summed = sum(int(f["summary"]["num_statements"]) for f in files.values())
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"{name}: a total or a file summary lacks its line counts ({exc})"
        raise ContentError(msg) from exc
    if summed != statements:
        msg = f"{name}: the files hold {summed} statements, the totals say {statements}"
        raise ContentError(msg)
    percent = round(100.0 * covered / statements, 2) if statements else 100.0
    return {
        "files": len(files),
        "statements": statements,
        "covered_lines": covered,
        "percent_lines": percent,
    }


def _benchmarks(members: Mapping[str, bytes]) -> dict[str, Any]:
    for name, data in members.items():
        if not name.endswith(".json"):
            msg = f"{name}: benchmark results are JSON files"
            raise ContentError(msg)
        _json(name, data)
    if not members:
        msg = "part benchmarks holds no result file"
        raise ContentError(msg)
    return {"files": sorted(name.removeprefix("benchmarks/") for name in members)}


def _slo(members: Mapping[str, bytes]) -> dict[str, Any]:
    if set(members) != {"slo/report.json", "slo/slos.json"}:
        msg = f"part slo must hold slo/report.json and slo/slos.json, has {sorted(members)}"
        raise ContentError(msg)
    rows = _json("slo/report.json", members["slo/report.json"])
    _json("slo/slos.json", members["slo/slos.json"])
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and isinstance(r.get("spent"), bool) for r in rows
    ):
        msg = "slo/report.json: not the rows of `igflow slo --json`"
        raise ContentError(msg)
    return {"tenant_slos": len(rows), "spent": sum(1 for r in rows if r["spent"])}


def _policies(members: Mapping[str, bytes]) -> dict[str, Any]:
    files = {name.removeprefix("policies/"): data for name, data in members.items()}
    if not files:
        msg = "part policies holds no policy file"
        raise ContentError(msg)
    return {"sha256": bundle_digest(files), "files": sorted(files)}


def _schemas(members: Mapping[str, bytes]) -> dict[str, Any]:
    avro: dict[str, list[int]] = {}
    provenance: list[int] = []
    for name in sorted(members):
        if match := _AVRO.match(name):
            avro.setdefault(match["name"], []).append(int(match["version"]))
            _json(name, members[name])
        elif match := _PROVENANCE.match(name):
            provenance.append(int(match["version"]))
            _json(name, members[name])
        elif name != _PROVENANCE_LOCK:
            msg = f"{name}: not an Avro contract, a provenance schema or its lock"
            raise ContentError(msg)
    lock = _json(_PROVENANCE_LOCK, members[_PROVENANCE_LOCK]) if _PROVENANCE_LOCK in members else {}
    if not isinstance(lock, dict):
        msg = f"{_PROVENANCE_LOCK}: not an object"
        raise ContentError(msg)
    locked = sorted(
        v
        for v in provenance
        if lock.get(f"manifest.v{v}.json")
        == hashlib.sha256(members[f"schemas/provenance/manifest.v{v}.json"]).hexdigest()
    )
    return {
        "avro": {name: sorted(versions) for name, versions in sorted(avro.items())},
        "provenance": sorted(provenance),
        "provenance_locked": locked,
    }


_SUMMARIES: dict[str, Callable[[Mapping[str, bytes]], dict[str, Any]]] = {
    "sbom": _sbom,
    "tests": _junit,
    "coverage": _coverage,
    "benchmarks": _benchmarks,
    "slo": _slo,
    "policies": _policies,
    "schemas": _schemas,
}


def summarize(part: str, members: Mapping[str, bytes]) -> dict[str, Any]:
    """The summary of ``part`` from its ``members`` (archive name -> bytes); raises
    :class:`ContentError` when they are not what the part holds."""
    return _SUMMARIES[part](members)
