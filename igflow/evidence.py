"""The evidence bundle of a release: one signed archive that says what was built and shown.

``igflow evidence build`` (``make evidence``) writes a gzip'd tar holding:

- the members, grouped in parts (:mod:`igflow.evidence_parts`): the SBOM (CycloneDX JSON of
  the installed environment), the test report (JUnit XML), coverage (coverage.py's JSON
  report), the benchmark result files, the SLO report (``igflow slo --json``) with the SLO file,
  the policy bundle (``policies/``) and the schemas (Avro contracts, provenance schemas and
  their lock);
- ``manifest.json``: the run manifest. Every member with its SHA-256 and size; each part, present
  with its summary (test counts, coverage totals ...) or absent with the reason; the commit (sha
  and dirty flag); the policy bundle's hash; the schema versions; the tool versions; the signing
  key's id;
- ``manifest.sig``: the detached Ed25519 signature of ``manifest.json``'s exact bytes (base64).

The archive is reproducible for the same inputs and time: members sorted, owner, mode and
mtime fixed, gzip's own timestamp zero. Verification lives in :mod:`igflow.evidence_verify`.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import importlib.metadata
import io
import json
import platform
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.errors import IgflowError
from igflow.evidence_keys import key_id
from igflow.evidence_parts import PARTS, ContentError, summarize

__all__ = [
    "FORMAT",
    "MANIFEST",
    "SIGNATURE",
    "Absent",
    "EvidenceError",
    "EvidenceInputs",
    "build",
    "collect",
    "commit_info",
    "generate_sbom",
    "manifest_bytes",
    "tool_versions",
    "write_archive",
]

FORMAT = "igflow-evidence/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
#: Distributions whose versions the manifest records (``None``: not installed).
TOOLS = (
    "intelgraph-streams",
    "bytewax",
    "pyiceberg",
    "confluent-kafka",
    "pytest",
    "coverage",
    "cyclonedx-bom",
    "cryptography",
)
#: What the archive's members carry instead of the builder's files' metadata.
_MEMBER_MODE = 0o644


class EvidenceError(IgflowError):
    """A bundle cannot be built from the inputs given (a missing file, an invalid member)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Absent:
    """A part left out of the bundle, and why (recorded in the manifest)."""

    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class EvidenceInputs:
    """Where each part comes from; a part is :class:`Absent` when it was not produced.

    ``slo_report`` is the JSON text of ``igflow slo --json`` (taken by the caller, which talks
    to Prometheus) and ``slo_file`` the SLO file it was computed with.
    """

    sbom: Path | Absent
    junit: Path | Absent
    coverage: Path | Absent
    benchmarks_dir: Path | Absent
    slo_report: bytes | Absent
    slo_file: Path
    policies_dir: Path
    avro_dir: Path
    provenance_dir: Path
    repo: Path
    #: pytest's exit code when the caller ran the suite (``None``: not known).
    tests_exit_code: int | None = None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        msg = f"cannot read the {what} {path}: {exc}"
        raise EvidenceError(msg) from exc


def _folder(path: Path, pattern: str, prefix: str) -> dict[str, bytes]:
    return {
        prefix + p.relative_to(path).as_posix(): _read(p, "file")
        for p in sorted(path.rglob(pattern))
        if p.is_file()
    }


def collect(inputs: EvidenceInputs) -> dict[str, dict[str, bytes] | Absent]:
    """Each part's members (archive name -> bytes), or why it is absent."""
    parts: dict[str, dict[str, bytes] | Absent] = {}
    for part, source, name in (
        ("sbom", inputs.sbom, "sbom/cyclonedx.json"),
        ("tests", inputs.junit, "tests/junit.xml"),
        ("coverage", inputs.coverage, "coverage/coverage.json"),
    ):
        parts[part] = source if isinstance(source, Absent) else {name: _read(source, part)}
    bench = inputs.benchmarks_dir
    if isinstance(bench, Absent):
        parts["benchmarks"] = bench
    else:
        found = _folder(bench, "*.json", "benchmarks/") if bench.is_dir() else {}
        parts["benchmarks"] = found or Absent(f"no benchmark results (*.json) in {bench}")
    parts["slo"] = (
        inputs.slo_report
        if isinstance(inputs.slo_report, Absent)
        else {
            "slo/report.json": inputs.slo_report,
            "slo/slos.json": _read(inputs.slo_file, "SLO file"),
        }
    )
    parts["policies"] = {
        **_folder(inputs.policies_dir, "*.rego", "policies/"),
        **_folder(inputs.policies_dir, "*.json", "policies/"),
    }
    parts["schemas"] = {
        **_folder(inputs.avro_dir, "*.avsc", "schemas/avro/"),
        **_folder(inputs.provenance_dir, "*.json", "schemas/provenance/"),
    }
    return parts


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


def commit_info(repo: Path) -> dict[str, Any]:
    """The commit of the checkout at ``repo``: its sha and whether the work tree differs from
    it (``dirty``: a tracked file changed or an untracked, not ignored, file exists); a reason
    instead when ``repo`` is not a git work tree (an installed wheel)."""
    try:
        sha = _git(repo, "rev-parse", "HEAD").strip()
        dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=normal").strip())
    except (OSError, subprocess.SubprocessError) as exc:
        return {"sha": None, "dirty": None, "reason": f"not a git work tree: {repo} ({exc})"}
    return {"sha": sha, "dirty": dirty}


def tool_versions() -> dict[str, Any]:
    """Python, the platform and the installed versions of :data:`TOOLS`."""
    versions: dict[str, str | None] = {}
    for name in TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(), **versions}


def generate_sbom(out: Path, python: str = sys.executable) -> None:
    """Write the CycloneDX JSON SBOM of the environment of interpreter ``python`` to ``out``
    (``cyclonedx-py environment``, which validates its output against the CycloneDX schema)."""
    command = [
        sys.executable,
        "-m",
        "cyclonedx_py",
        "environment",
        "--output-format",
        "JSON",
        "--output-file",
        str(out),
        python,
    ]
    try:
        subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    except FileNotFoundError as exc:
        msg = f"cannot run {command[0]}: {exc}"
        raise EvidenceError(msg) from exc
    except subprocess.CalledProcessError as exc:
        hint = (
            " (install the dev extras: pip install -e '.[dev]', or pass --sbom FILE)"
            if "No module named cyclonedx_py" in exc.stderr
            else ""
        )
        msg = f"cyclonedx-py failed{hint}: {exc.stderr.strip()[-2000:]}"
        raise EvidenceError(msg) from exc


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The manifest as stored and signed: sorted keys, two-space indent, a final newline."""
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = _MEMBER_MODE
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_archive(
    out: Path, members: Mapping[str, bytes], manifest: Mapping[str, Any], key: Ed25519PrivateKey
) -> None:
    """Sign ``manifest`` and write it, its signature and ``members`` to ``out`` (atomically:
    a reader never sees a half-written bundle). Low level: :func:`build` makes the manifest."""
    body = manifest_bytes(manifest)
    signature = base64.b64encode(key.sign(body)) + b"\n"
    mtime = int(datetime.fromisoformat(str(manifest["created_at"])).timestamp())
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        _tar_member(tar, MANIFEST, body, mtime)
        _tar_member(tar, SIGNATURE, signature, mtime)
        for name in sorted(members):
            _tar_member(tar, name, members[name], mtime)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(out)


def build(
    inputs: EvidenceInputs,
    key: Ed25519PrivateKey,
    out: Path,
    now: datetime,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Collect the parts, summarize each (refusing a member that is not what its part says),
    write the signed bundle to ``out`` and return its manifest. ``now`` must be aware."""
    members: dict[str, bytes] = {}
    parts: dict[str, dict[str, Any]] = {}
    for part, found in collect(inputs).items():
        if isinstance(found, Absent):
            parts[part] = {"present": False, "reason": found.reason}
            continue
        try:
            summary = summarize(part, found)
        except ContentError as exc:
            msg = f"part {part}: {exc}"
            raise EvidenceError(msg) from exc
        parts[part] = {"present": True, "members": sorted(found), "summary": summary}
        members.update(found)
    policies, schemas = parts["policies"]["summary"], parts["schemas"]["summary"]
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created_at": now.isoformat(),
        "commit": commit_info(inputs.repo),
        "tools": tool_versions(),
        "policy_bundle": {"sha256": policies["sha256"]},
        "schemas": {"avro": schemas["avro"], "provenance": schemas["provenance"]},
        "run": {
            "argv": list(argv) if argv is not None else None,
            "tests_exit_code": inputs.tests_exit_code,
        },
        "parts": {part: parts[part] for part in PARTS},
        "members": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in sorted(members.items())
        },
        "signing": {"algorithm": "Ed25519", "key_id": key_id(key.public_key())},
    }
    write_archive(out, members, manifest, key)
    return manifest
