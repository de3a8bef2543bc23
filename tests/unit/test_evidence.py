"""The evidence bundle (igflow/evidence*.py): built from a real, tiny pytest run with coverage,
verified, then tampered with member by member, and verification fails with the right code.

The SBOM here is a small CycloneDX document written by the test (cyclonedx-py on the whole
environment takes ~30 s; tests/integration/test_evidence.py runs it for real).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.errors import ConfigError
from core.reasons import ReasonCode
from core.resources import avro_dir, policies_dir, slo_file
from igflow.cli import main
from igflow.evidence import (
    Absent,
    EvidenceError,
    EvidenceInputs,
    build,
    commit_info,
    manifest_bytes,
    write_archive,
)
from igflow.evidence_keys import key_id, load_public_key, load_signing_key, public_key_path
from igflow.evidence_parts import PARTS
from igflow.evidence_verify import read_archive, verify
from igflow.governance import provenance_dir
from operators.tenancy import policy_bundle_version
from tests.fresh_python import run_python

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

#: A module and its tests: 3 pass, 1 fails, 1 is skipped; coverage sees two of three branches.
MODULE = """
def grade(x):
    if x > 10:
        return "high"
    if x > 5:
        return "mid"
    return "low"
"""
TESTS = """
import pytest
from calc import grade

def test_high():
    assert grade(11) == "high"

def test_low():
    assert grade(1) == "low"

def test_low_again():
    assert grade(0) == "low"

def test_wrong():
    assert grade(1) == "high"

@pytest.mark.skip(reason="shows up as skipped")
def test_skipped():
    pass
"""


def _sbom() -> dict[str, Any]:
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "components": [
            {"type": "library", "name": "bytewax", "version": "0.21.1"},
            {"type": "library", "name": "cryptography", "version": "50.0.2"},
        ],
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real pytest run under coverage.py, with its JUnit and coverage JSON reports."""
    folder = tmp_path_factory.mktemp("run")
    (folder / "calc.py").write_text(MODULE)
    (folder / "test_calc.py").write_text(TESTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV", "PYTEST"))}
    tests = subprocess.run(
        [
            *(sys.executable, "-m", "coverage", "run", "--source=calc", "-m", "pytest"),
            *("-q", "-p", "no:cacheprovider", "--junitxml=junit.xml", "test_calc.py"),
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tests.returncode == 1, tests.stdout + tests.stderr  # one test fails on purpose
    subprocess.run(
        [sys.executable, "-m", "coverage", "json", "-o", "coverage.json"],
        cwd=folder,
        env=env,
        check=True,
        capture_output=True,
    )
    (folder / "cyclonedx.json").write_text(json.dumps(_sbom()))
    bench = folder / "bench"
    bench.mkdir()
    (bench / "ingest.json").write_text(json.dumps({"signals": 10, "results": []}))
    (bench / "plot.png").write_bytes(b"\x89PNG not a result file")
    (folder / "slo.json").write_text(json.dumps([{"tenant_id": "t1", "spent": False}]))
    return folder


def _inputs(run: Path, **changes: Any) -> EvidenceInputs:
    values: dict[str, Any] = {
        "sbom": run / "cyclonedx.json",
        "junit": run / "junit.xml",
        "coverage": run / "coverage.json",
        "benchmarks_dir": run / "bench",
        "slo_report": (run / "slo.json").read_bytes(),
        "slo_file": slo_file(),
        "policies_dir": policies_dir(),
        "avro_dir": avro_dir(),
        "provenance_dir": provenance_dir(),
        "repo": REPO,
        "tests_exit_code": 1,
    }
    values.update(changes)
    return EvidenceInputs(**values)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Ed25519PrivateKey:
    return load_signing_key(tmp_path_factory.mktemp("key") / "signing.key")


@pytest.fixture(scope="module")
def bundle(run: Path, key: Ed25519PrivateKey, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "evidence.tar.gz"
    build(_inputs(run), key, out, NOW, argv=["evidence", "build"])
    return out


def _rewrite(src: Path, dst: Path, change: Callable[[dict[str, bytes]], None]) -> Path:
    """Copy bundle ``src`` to ``dst`` with its members changed by ``change`` (in place)."""
    members = read_archive(src)
    change(members)
    with tarfile.open(dst, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dst


def _flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 0x01]) + data[1:]


def test_a_bundle_of_a_real_run_verifies_and_says_what_it_holds(
    bundle: Path, key: Ed25519PrivateKey
) -> None:
    verdict = verify(bundle, key.public_key(), require=PARTS)
    assert verdict.ok, verdict.problems
    manifest = verdict.manifest
    assert manifest is not None
    parts = manifest["parts"]
    assert parts["tests"]["summary"] == {
        "tests": 5,
        "failures": 1,
        "errors": 0,
        "skipped": 1,
        "testcases": 5,
    }
    coverage = parts["coverage"]["summary"]
    # grade(): the def and 5 body lines; "return 'mid'" never runs
    assert (coverage["statements"], coverage["covered_lines"]) == (6, 5)
    assert coverage["percent_lines"] == 83.33
    assert parts["sbom"]["summary"] == {"spec_version": "1.6", "components": 2}
    assert parts["benchmarks"]["members"] == ["benchmarks/ingest.json"]  # JSON results only
    assert parts["slo"]["summary"] == {"tenant_slos": 1, "spent": 0}
    assert manifest["schemas"]["avro"] == {"signal": [1, 2]}
    assert 1 in manifest["schemas"]["provenance"]
    assert manifest["policy_bundle"]["sha256"] == policy_bundle_version(policies_dir())
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    )
    assert manifest["commit"]["sha"] == head.stdout.strip()
    assert isinstance(manifest["commit"]["dirty"], bool)
    assert manifest["run"] == {"argv": ["evidence", "build"], "tests_exit_code": 1}
    assert manifest["tools"]["bytewax"] == "0.21.1"
    assert manifest["signing"]["key_id"] == key_id(key.public_key())
    # Every member is listed with its hash, and nothing else is in the archive.
    names = set(read_archive(bundle)) - {"manifest.json", "manifest.sig"}
    assert names == set(manifest["members"])


def test_the_same_inputs_at_the_same_time_give_the_same_bytes(
    run: Path, key: Ed25519PrivateKey, bundle: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again.tar.gz"
    build(_inputs(run), key, again, NOW, argv=["evidence", "build"])
    assert again.read_bytes() == bundle.read_bytes()


@pytest.mark.parametrize(
    "member",
    [
        "sbom/cyclonedx.json",
        "tests/junit.xml",
        "coverage/coverage.json",
        "benchmarks/ingest.json",
        "slo/report.json",
        "slo/slos.json",
        "policies/tenancy.rego",
        "policies/tenancy.json",
        "schemas/avro/signal.v2.avsc",
        "schemas/provenance/manifest.v1.json",
    ],
)
def test_each_kind_of_member_altered_or_missing_fails(
    bundle: Path, key: Ed25519PrivateKey, tmp_path: Path, member: str
) -> None:
    def alter(members: dict[str, bytes]) -> None:
        members[member] = _flip(members[member])

    altered = verify(_rewrite(bundle, tmp_path / "a.tar.gz", alter), key.public_key())
    assert verdict_codes(altered) == [ReasonCode.EVIDENCE_MEMBER_ALTERED]
    assert member in altered.problems[0].message

    def drop(members: dict[str, bytes]) -> None:
        del members[member]

    missing = verify(_rewrite(bundle, tmp_path / "m.tar.gz", drop), key.public_key())
    assert verdict_codes(missing) == [ReasonCode.EVIDENCE_MEMBER_MISSING]


def verdict_codes(verdict: Any) -> list[ReasonCode]:
    return sorted({p.code for p in verdict.problems})


def test_an_unlisted_member_fails(bundle: Path, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    def add(members: dict[str, bytes]) -> None:
        members["tests/extra.xml"] = b"<testsuite tests='0'/>"

    verdict = verify(_rewrite(bundle, tmp_path / "x.tar.gz", add), key.public_key())
    assert verdict_codes(verdict) == [ReasonCode.EVIDENCE_MEMBER_UNEXPECTED]


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.__setitem__("manifest.json", m["manifest.json"].replace(b"true", b"false", 1)),
        lambda m: m.__setitem__("manifest.sig", base64.b64encode(b"\0" * 64)),
        lambda m: m.__setitem__("manifest.sig", b"not base64 !"),
        lambda m: m.pop("manifest.sig"),
    ],
    ids=["manifest-edited", "signature-zeroed", "signature-garbled", "signature-missing"],
)
def test_an_edited_manifest_or_signature_fails(
    bundle: Path, key: Ed25519PrivateKey, tmp_path: Path, change: Callable[[dict[str, bytes]], None]
) -> None:
    verdict = verify(_rewrite(bundle, tmp_path / "s.tar.gz", change), key.public_key())
    assert verdict_codes(verdict) == [ReasonCode.EVIDENCE_SIGNATURE_INVALID]
    assert verdict.manifest is None  # nothing unsigned is trusted


def test_a_missing_manifest_fails(bundle: Path, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    verdict = verify(
        _rewrite(bundle, tmp_path / "n.tar.gz", lambda m: m.pop("manifest.json")), key.public_key()
    )
    assert verdict_codes(verdict) == [ReasonCode.EVIDENCE_MANIFEST_INVALID]


def test_a_signed_manifest_that_is_not_a_manifest_fails(
    bundle: Path, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    for body in (b"not json", b"[1, 2]", json.dumps({"format": "other/1"}).encode()):

        def sign(members: dict[str, bytes], body: bytes = body) -> None:
            members["manifest.json"] = body
            members["manifest.sig"] = base64.b64encode(key.sign(body))

        verdict = verify(_rewrite(bundle, tmp_path / "j.tar.gz", sign), key.public_key())
        assert verdict_codes(verdict) == [ReasonCode.EVIDENCE_MANIFEST_INVALID], body


def test_a_member_altered_and_resigned_with_another_key_fails(
    bundle: Path, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    forger = Ed25519PrivateKey.generate()

    def forge(members: dict[str, bytes]) -> None:
        manifest = json.loads(members["manifest.json"])
        members["tests/junit.xml"] = members["tests/junit.xml"].replace(b'failures="1"', b'x="1"')
        manifest["signing"]["key_id"] = key_id(forger.public_key())
        body = manifest_bytes(manifest)
        members["manifest.json"] = body
        members["manifest.sig"] = base64.b64encode(forger.sign(body))

    verdict = verify(_rewrite(bundle, tmp_path / "f.tar.gz", forge), key.public_key())
    assert verdict_codes(verdict) == [ReasonCode.EVIDENCE_KEY_MISMATCH]
    # The forger's own key verifies it, but the altered member still shows.
    by_forger = verify(tmp_path / "f.tar.gz", forger.public_key())
    assert verdict_codes(by_forger) == [ReasonCode.EVIDENCE_MEMBER_ALTERED]


def _tar_with(path: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(info, io.BytesIO(data) if data else None)
    return path


def test_archives_that_are_not_plain_bundles_fail(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    not_tar = tmp_path / "plain.tar.gz"
    not_tar.write_bytes(b"hello")
    parent = tarfile.TarInfo("../escape.txt")
    parent.size = 1
    link = tarfile.TarInfo("tests/junit.xml")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    for path in (
        not_tar,
        _tar_with(tmp_path / "parent.tar.gz", parent, b"x"),
        _tar_with(tmp_path / "link.tar.gz", link),
        tmp_path / "nothing-here.tar.gz",
    ):
        verdict = verify(path, key.public_key())
        assert verdict_codes(verdict) == [ReasonCode.EVIDENCE_ARCHIVE_INVALID], path


def test_a_signed_manifest_its_members_contradict_fails(
    bundle: Path, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """The signer's own mistakes are caught too: the summaries are recomputed."""
    members = read_archive(bundle)
    manifest = json.loads(members.pop("manifest.json"))
    members.pop("manifest.sig")
    manifest["parts"]["tests"]["summary"]["failures"] = 0
    manifest["policy_bundle"]["sha256"] = "0" * 64
    out = tmp_path / "lies.tar.gz"
    write_archive(out, members, manifest, key)
    verdict = verify(out, key.public_key())
    assert verdict_codes(verdict) == [ReasonCode.EVIDENCE_CONTENT_INVALID]
    assert len(verdict.problems) == 2


def test_a_signed_sbom_that_is_not_cyclonedx_fails(
    bundle: Path, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    members = read_archive(bundle)
    manifest = json.loads(members.pop("manifest.json"))
    members.pop("manifest.sig")
    members["sbom/cyclonedx.json"] = json.dumps({"spdxVersion": "SPDX-2.3"}).encode()
    entry = manifest["members"]["sbom/cyclonedx.json"]
    entry["sha256"] = hashlib.sha256(members["sbom/cyclonedx.json"]).hexdigest()
    entry["size"] = len(members["sbom/cyclonedx.json"])
    out = tmp_path / "spdx.tar.gz"
    write_archive(out, members, manifest, key)
    verdict = verify(out, key.public_key())
    assert verdict_codes(verdict) == [ReasonCode.EVIDENCE_CONTENT_INVALID]
    assert "CycloneDX" in verdict.problems[0].message


def test_absent_parts_are_recorded_with_their_reason_and_can_be_required(
    run: Path, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    out = tmp_path / "partial.tar.gz"
    inputs = _inputs(
        run, benchmarks_dir=tmp_path / "no-bench", slo_report=Absent("Prometheus did not answer")
    )
    manifest = build(inputs, key, out, NOW)
    assert manifest["parts"]["slo"] == {"present": False, "reason": "Prometheus did not answer"}
    assert "no benchmark results" in manifest["parts"]["benchmarks"]["reason"]
    assert verify(out, key.public_key()).ok
    verdict = verify(out, key.public_key(), require=["tests", "slo", "benchmarks"])
    assert verdict_codes(verdict) == [ReasonCode.EVIDENCE_PART_ABSENT]
    assert len(verdict.problems) == 2


@pytest.mark.parametrize(
    ("field", "content", "expected"),
    [
        ("sbom", b'{"bomFormat": "SPDX"}', "not a CycloneDX document"),
        ("sbom", b'{"bomFormat": "CycloneDX", "specVersion": "9.9"}', "specVersion"),
        ("junit", b"<html/>", "not a JUnit report"),
        ("junit", b"<testsuite tests='two'><testcase/></testsuite>", "is not a count"),
        ("coverage", b"[]", "not a coverage.py JSON report"),
    ],
)
def test_build_refuses_inputs_that_are_not_what_they_claim(
    run: Path, key: Ed25519PrivateKey, tmp_path: Path, field: str, content: bytes, expected: str
) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(content)
    with pytest.raises(EvidenceError, match=expected):
        build(_inputs(run, **{field: bad}), key, tmp_path / "out.tar.gz", NOW)
    assert not (tmp_path / "out.tar.gz").exists()


def test_the_signing_key_is_private_and_its_public_half_exported(tmp_path: Path) -> None:
    path = tmp_path / "evidence" / "signing.key"
    key = load_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    public = load_public_key(public_key_path(path))
    assert key_id(public) == key_id(key.public_key())
    assert key_id(load_signing_key(path).public_key()) == key_id(public)  # kept, not replaced
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by its owner only"):
        load_signing_key(path)
    with pytest.raises(ConfigError, match="not an Ed25519 public key"):
        load_public_key(_rsa_public(tmp_path))
    with pytest.raises(ConfigError, match="cannot read the evidence public key"):
        load_public_key(tmp_path / "nothing.pem")


def _rsa_public(tmp_path: Path) -> Path:
    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    path = tmp_path / "rsa.pub"
    path.write_bytes(pem)
    return path


def test_a_folder_outside_git_records_no_commit_and_says_why(tmp_path: Path) -> None:
    info = commit_info(tmp_path)
    assert info["sha"] is None and info["dirty"] is None
    assert "not a git work tree" in info["reason"]


def test_the_cli_builds_verifies_and_reports_reason_codes(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IGFLOW_STACK_DIR", str(tmp_path / "stack"))
    out = tmp_path / "cli.tar.gz"
    code = main(
        [
            *("evidence", "build", "--out", str(out), "--sbom", str(run / "cyclonedx.json")),
            *("--junit", str(run / "junit.xml"), "--coverage", str(run / "coverage.json")),
            *("--benchmarks", str(run / "bench"), "--slo", str(run / "slo.json")),
            *("--tests-exit-code", "1", "--repo", str(REPO)),
            *("--export-public-key", str(tmp_path / "verifier.pub")),
        ]
    )
    built = json.loads(capsys.readouterr().out)
    assert code == 0 and built["parts"]["tests"] == "present"
    assert (tmp_path / "stack" / "evidence" / "signing.key").exists()
    assert main(["evidence", "verify", str(out), "--require", "slo"]) == 0
    assert "verified:" in capsys.readouterr().out
    trusted = ["--public-key", str(tmp_path / "verifier.pub")]
    assert main(["evidence", "verify", str(out), *trusted, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True

    def alter(members: dict[str, bytes]) -> None:
        members["tests/junit.xml"] = _flip(members["tests/junit.xml"])

    tampered = _rewrite(out, tmp_path / "tampered.tar.gz", alter)
    assert main(["evidence", "verify", str(tampered), *trusted]) == 1
    assert "EVIDENCE_MEMBER_ALTERED: tests/junit.xml" in capsys.readouterr().err
    other = tmp_path / "other" / "k"
    load_signing_key(other)
    assert main(["evidence", "verify", str(out), "--public-key", f"{other}.pub", "--json"]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert [p["code"] for p in answer["problems"]] == ["EVIDENCE_KEY_MISMATCH"]
    # A missing input file is a usage error (2), not an absent part.
    missing = ["evidence", "build", "--out", str(out), "--sbom", str(tmp_path / "none.json")]
    assert main(missing) == 2


def test_the_command_line_imports_no_evidence_builder_and_restores_the_collector() -> None:
    # Every igflow command imports igflow.cli (`igflow run` included): the builder and the keys
    # (cryptography, tarfile) are imported by the evidence actions only, and the collector,
    # paused while the command line's modules are imported, is on again afterwards.
    out = run_python(
        """
        import gc, json, sys
        import igflow.cli
        heavy = ("igflow.evidence", "igflow.evidence_keys", "cryptography", "tarfile")
        print(json.dumps({"collecting": gc.isenabled(),
                          "imported": [m for m in heavy if m in sys.modules]}))
        """
    )
    assert out == {"collecting": True, "imported": []}
