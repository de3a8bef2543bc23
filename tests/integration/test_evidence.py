"""``igflow evidence`` end to end, as ``make evidence`` runs it, on a small real run: one unit
test file under coverage.py with the project's coverage settings, a real (small) benchmark, the
real SBOM of this environment (cyclonedx-py), the SLO report from the stack's Prometheus; then
``igflow evidence verify`` from the command line, and a tampered copy refused (~60 s: the SBOM
takes most of it: cyclonedx-py's own validation against the CycloneDX
schema costs ~20 s of CPU, 80 s of wall time on the loaded shared machine).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

import pytest

from core.settings import Settings
from igflow.evidence_parts import PARTS
from igflow.evidence_verify import read_archive

REPO = Path(__file__).resolve().parents[2]


def _igflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "igflow.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_make_evidence_flow_builds_a_bundle_that_verifies(stack: Settings, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV", "PYTEST"))}
    env["COVERAGE_FILE"] = str(tmp_path / ".coverage")
    tests = subprocess.run(
        [
            *(sys.executable, "-m", "coverage", "run", "-m", "pytest", "tests/unit/test_retry.py"),
            *("-q", "-p", "no:cacheprovider", f"--junitxml={tmp_path / 'junit.xml'}"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout[-2000:] + tests.stderr[-2000:]
    subprocess.run(
        [sys.executable, "-m", "coverage", "json", "-q", "-o", str(tmp_path / "coverage.json")],
        cwd=REPO,
        env=env,
        check=True,
    )
    bench = tmp_path / "bench"
    bench.mkdir()
    subprocess.run(
        [
            *(sys.executable, "benchmarks/dedupe_memory.py", "--signals", "20000"),
            *("--no-tracemalloc", "--json", str(bench / "dedupe_memory.json")),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )

    env["IGFLOW_STACK_DIR"] = str(tmp_path / "stack")  # a fresh signing key
    # ...but the session stack's CA: with TLS on, --slo live reads its Prometheus over HTTPS.
    env.setdefault("IGFLOW_TLS_CA_FILE", str(stack.tls_ca_file))
    out, public = tmp_path / "evidence.tar.gz", tmp_path / "signing.pub"
    built = _igflow(
        env,
        *("evidence", "build", "--out", str(out), "--junit", str(tmp_path / "junit.xml")),
        *("--coverage", str(tmp_path / "coverage.json"), "--benchmarks", str(bench)),
        *("--slo", "live", "--tests-exit-code", "0", "--export-public-key", str(public)),
    )
    assert built.returncode == 0, built.stderr[-3000:]
    report = json.loads(built.stdout)
    assert report["parts"] == dict.fromkeys(PARTS, "present"), report["parts"]

    required = [arg for part in PARTS for arg in ("--require", part)]
    verified = _igflow(env, "evidence", "verify", str(out), "--public-key", str(public), *required)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith(f"verified: {out}")

    members = read_archive(out)
    manifest = json.loads(members["manifest.json"])
    sbom = json.loads(members["sbom/cyclonedx.json"])
    assert sbom["bomFormat"] == "CycloneDX"
    listed = {c["name"].lower(): c.get("version") for c in sbom["components"]}
    assert listed["bytewax"] == version("bytewax") == manifest["tools"]["bytewax"]
    assert listed["cryptography"] == version("cryptography")
    assert manifest["parts"]["tests"]["summary"]["failures"] == 0
    assert manifest["parts"]["tests"]["summary"]["tests"] >= 1
    # The project's coverage settings measure the engine's packages: core/retry.py ran.
    coverage = json.loads(members["coverage/coverage.json"])
    assert coverage["files"]["core/retry.py"]["summary"]["covered_lines"] > 0
    assert manifest["parts"]["benchmarks"]["summary"] == {"files": ["dedupe_memory.json"]}
    rows = json.loads(members["slo/report.json"])
    assert manifest["parts"]["slo"]["summary"]["tenant_slos"] == len(rows)

    members["coverage/coverage.json"] = members["coverage/coverage.json"].replace(
        b'"percent_covered"', b'"percent_covered_"', 1
    )
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(tampered, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    refused = _igflow(env, "evidence", "verify", str(tampered), "--public-key", str(public))
    assert refused.returncode == 1
    assert "EVIDENCE_MEMBER_ALTERED: coverage/coverage.json" in refused.stderr
