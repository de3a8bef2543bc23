"""``igflow evidence verify``: is this bundle the one that was signed, and does it hold what its
manifest says?

In order, each step trusting only what the one before it established:

1. the archive: a readable gzip'd tar of plain files, no absolute or ``..`` path, no name twice
   (``EVIDENCE_ARCHIVE_INVALID``);
2. the signature: ``manifest.sig`` verifies over ``manifest.json``'s exact bytes with the trusted
   public key (``EVIDENCE_SIGNATURE_INVALID``; ``EVIDENCE_KEY_MISMATCH`` when the manifest names
   another key). Nothing after this step reads an unsigned byte;
3. the manifest's shape (``EVIDENCE_MANIFEST_INVALID``);
4. the members: each one listed is there (``EVIDENCE_MEMBER_MISSING``) with its SHA-256 and size
   (``EVIDENCE_MEMBER_ALTERED``), none is there unlisted (``EVIDENCE_MEMBER_UNEXPECTED``);
5. the contents: each present part's summary, computed again from its members, equals the
   manifest's, and so do the policy bundle hash and the schema versions
   (``EVIDENCE_CONTENT_INVALID``);
6. the parts the caller requires are present (``EVIDENCE_PART_ABSENT``).

The trusted key comes from the verifier (``--public-key``, or the local signing key's public
half), never from the bundle.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.reasons import ReasonCode
from igflow.evidence import FORMAT, MANIFEST, SIGNATURE
from igflow.evidence_keys import key_id
from igflow.evidence_parts import PARTS, ContentError, summarize

__all__ = ["Problem", "Verdict", "read_archive", "verify"]


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """One reason the bundle fails verification."""

    code: ReasonCode
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """What verification found: no problems means the bundle verified."""

    problems: tuple[Problem, ...]
    #: The signed manifest, once its signature verified (``None`` before that).
    manifest: Mapping[str, Any] | None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def codes(self) -> set[ReasonCode]:
        return {p.code for p in self.problems}


class _ArchiveError(ValueError):
    pass


def read_archive(path: Path) -> dict[str, bytes]:
    """Every member of the bundle at ``path`` (name -> bytes), read into memory: nothing is
    extracted to disk. ``ValueError`` for anything but a gzip'd tar of uniquely named plain
    files with relative paths."""
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for info in tar:
                name = info.name
                parts = PurePosixPath(name).parts
                if not info.isreg():
                    msg = f"member {name!r} is not a plain file"
                    raise _ArchiveError(msg)
                if name.startswith("/") or ".." in parts or not parts:
                    msg = f"member {name!r} has an absolute or parent path"
                    raise _ArchiveError(msg)
                if name in members:
                    msg = f"member {name!r} appears twice"
                    raise _ArchiveError(msg)
                handle = tar.extractfile(info)
                if handle is None:  # pragma: no cover - isreg() members always have data
                    msg = f"member {name!r} has no data"
                    raise _ArchiveError(msg)
                members[name] = handle.read()
    except (OSError, EOFError, tarfile.TarError) as exc:
        msg = f"not a readable gzip'd tar: {exc}"
        raise _ArchiveError(msg) from exc
    return members


def _signed_manifest(
    members: Mapping[str, bytes], trusted: Ed25519PublicKey
) -> tuple[dict[str, Any] | None, list[Problem]]:
    body, signature = members.get(MANIFEST), members.get(SIGNATURE)
    if body is None:
        return None, [Problem(ReasonCode.EVIDENCE_MANIFEST_INVALID, f"no {MANIFEST}")]
    if signature is None:
        return None, [Problem(ReasonCode.EVIDENCE_SIGNATURE_INVALID, f"no {SIGNATURE}")]
    try:
        trusted.verify(base64.b64decode(signature.strip(), validate=True), body)
    except (InvalidSignature, binascii.Error, ValueError):
        named = _named_key(body)
        expected = key_id(trusted)
        if named is not None and named != expected:
            message = f"signed by key {named}, the trusted key is {expected}"
            return None, [Problem(ReasonCode.EVIDENCE_KEY_MISMATCH, message)]
        message = f"{SIGNATURE} does not verify over {MANIFEST} with key {expected}"
        return None, [Problem(ReasonCode.EVIDENCE_SIGNATURE_INVALID, message)]
    try:
        manifest = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [Problem(ReasonCode.EVIDENCE_MANIFEST_INVALID, f"signed, but not JSON: {exc}")]
    if not isinstance(manifest, dict):
        return None, [Problem(ReasonCode.EVIDENCE_MANIFEST_INVALID, "not a JSON object")]
    return manifest, []


def _named_key(body: bytes) -> str | None:
    """The key id an (unverified) manifest names, for a clearer message; ``None`` if unreadable."""
    try:
        named = json.loads(body)["signing"]["key_id"]
    except (ValueError, KeyError, TypeError):
        return None
    return named if isinstance(named, str) else None


def _shape(manifest: Mapping[str, Any]) -> list[Problem]:
    def bad(message: str) -> list[Problem]:
        return [Problem(ReasonCode.EVIDENCE_MANIFEST_INVALID, message)]

    if manifest.get("format") != FORMAT:
        return bad(f"format {manifest.get('format')!r} is not {FORMAT}")
    listed, parts = manifest.get("members"), manifest.get("parts")
    if not isinstance(listed, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("size"), int)
        for v in listed.values()
    ):
        return bad("members must map each name to its sha256 and size")
    if not isinstance(parts, dict) or set(parts) != set(PARTS):
        return bad(f"parts must be exactly {sorted(PARTS)}")
    claimed: set[str] = set()
    for part, entry in parts.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("present"), bool):
            return bad(f"part {part} must say whether it is present")
        names = entry.get("members", []) if entry["present"] else []
        if not isinstance(names, list) or not all(
            isinstance(n, str) and n.startswith(PARTS[part]) for n in names
        ):
            return bad(f"part {part}: its members must be names under {PARTS[part]}")
        claimed.update(names)
    if claimed != set(listed):
        return bad("the parts' members and the member list differ")
    return []


def _members(
    listed: Mapping[str, Any], members: Mapping[str, bytes]
) -> tuple[list[Problem], set[str]]:
    """Problems with the members, and the names of those missing or altered."""
    problems: list[Problem] = []
    broken: set[str] = set()
    for name, entry in sorted(listed.items()):
        data = members.get(name)
        if data is None:
            problems.append(Problem(ReasonCode.EVIDENCE_MEMBER_MISSING, f"{name} is not there"))
            broken.add(name)
        elif len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            broken.add(name)
            message = (
                f"{name}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}; "
                f"signed: {entry['size']} bytes, sha256 {entry['sha256']}"
            )
            problems.append(Problem(ReasonCode.EVIDENCE_MEMBER_ALTERED, message))
    for name in sorted(set(members) - set(listed) - {MANIFEST, SIGNATURE}):
        message = f"{name} is not in the manifest"
        problems.append(Problem(ReasonCode.EVIDENCE_MEMBER_UNEXPECTED, message))
    return problems, broken


def _contents(
    manifest: Mapping[str, Any], members: Mapping[str, bytes], broken: set[str]
) -> list[Problem]:
    problems: list[Problem] = []
    summaries: dict[str, dict[str, Any]] = {}
    for part, entry in manifest["parts"].items():
        if not entry["present"] or broken & set(entry["members"]):
            continue  # an altered or missing member is reported already
        try:
            summaries[part] = summarize(part, {n: members[n] for n in entry["members"]})
        except ContentError as exc:
            problems.append(Problem(ReasonCode.EVIDENCE_CONTENT_INVALID, f"part {part}: {exc}"))
            continue
        if summaries[part] != entry.get("summary"):
            message = f"part {part}: its members give {summaries[part]}, the manifest says " + str(
                entry.get("summary")
            )
            problems.append(Problem(ReasonCode.EVIDENCE_CONTENT_INVALID, message))
    if "policies" in summaries:
        digest = summaries["policies"]["sha256"]
        if manifest.get("policy_bundle") != {"sha256": digest}:
            message = f"policy_bundle {manifest.get('policy_bundle')}, the policies hash {digest}"
            problems.append(Problem(ReasonCode.EVIDENCE_CONTENT_INVALID, message))
    if "schemas" in summaries:
        found = summaries["schemas"]
        versions = {"avro": found["avro"], "provenance": found["provenance"]}
        if manifest.get("schemas") != versions:
            message = f"schemas {manifest.get('schemas')} but the members hold {versions}"
            problems.append(Problem(ReasonCode.EVIDENCE_CONTENT_INVALID, message))
    return problems


def verify(path: Path, trusted: Ed25519PublicKey, require: Iterable[str] = ()) -> Verdict:
    """Verify the bundle at ``path`` against the ``trusted`` public key; ``require`` names parts
    (:data:`~igflow.evidence_parts.PARTS`) that must be present."""
    try:
        members = read_archive(path)
    except ValueError as exc:
        return Verdict((Problem(ReasonCode.EVIDENCE_ARCHIVE_INVALID, str(exc)),), None)
    manifest, problems = _signed_manifest(members, trusted)
    if manifest is None:
        return Verdict(tuple(problems), None)
    problems = _shape(manifest)
    if problems:
        return Verdict(tuple(problems), manifest)
    problems, broken = _members(manifest["members"], members)
    problems += _contents(manifest, members, broken)
    for part in require:
        entry = manifest["parts"].get(part)
        if entry is None or not entry["present"]:
            reason = entry.get("reason", "") if entry else "not a part"
            message = f"part {part} is required but absent: {reason}"
            problems.append(Problem(ReasonCode.EVIDENCE_PART_ABSENT, message))
    return Verdict(tuple(problems), manifest)
