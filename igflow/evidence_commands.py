"""``igflow evidence build | verify | key``: the signed evidence bundle of a release
(:mod:`igflow.evidence`, :mod:`igflow.evidence_verify`; ``make evidence`` runs both).

Exit codes follow the CLI's rule: 0 built / verified, 1 a bundle that fails verification (each
problem printed with its reason code), 2 a usage or configuration error (an unreadable input, a
missing trusted key).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ConfigError, IgflowError
from core.resources import avro_dir, slo_file
from core.settings import Settings
from igflow.evidence_parts import PARTS
from igflow.slo_commands import json_rows

if TYPE_CHECKING:
    from igflow.evidence import Absent

# The builder and the keys (cryptography's Ed25519 and serialization, tarfile: ~15 ms) are
# imported by the actions that use them: every igflow command, `igflow run` included, imports
# this module to register the subcommand.

__all__ = ["register"]

Handler = Callable[[argparse.Namespace, Settings], int]


def _file(value: str | None, option: str) -> Path | Absent:
    from igflow.evidence import Absent, EvidenceError

    if value is None:
        return Absent(f"not given ({option})")
    path = Path(value)
    if not path.is_file():
        msg = f"{option} {value}: no such file"
        raise EvidenceError(msg)
    return path


def _slo_report(args: argparse.Namespace, settings: Settings, slo_path: Path) -> bytes | Absent:
    from core import prometheus_query, slo  # httpx: only when an SLO report is asked for
    from igflow.evidence import Absent

    if args.slo == "none":
        return Absent("not asked for (--slo none)")
    if args.slo != "live":
        path = _file(args.slo, "--slo")
        return path if isinstance(path, Absent) else path.read_bytes()
    url = args.prometheus or prometheus_query.default_url(os.environ, tls=settings.tls.enabled)
    try:
        rows = prometheus_query.budgets(
            slo.load(slo_path), url, None, verify=settings.client_verify()
        )
    except IgflowError as exc:
        return Absent(f"--slo live: {exc}")
    return (json.dumps(json_rows(rows), indent=2) + "\n").encode()


def _build(args: argparse.Namespace, settings: Settings) -> int:
    from igflow.evidence import Absent, EvidenceInputs, build, generate_sbom
    from igflow.evidence_keys import load_signing_key, public_key_path
    from igflow.governance import provenance_dir  # jsonschema, the redaction policy

    slo_path = Path(settings.run.slo_file) if settings.run.slo_file else slo_file()
    key = load_signing_key(settings.evidence_signing_key_file)
    with tempfile.TemporaryDirectory(prefix="igflow-evidence-") as scratch:
        if args.sbom:
            sbom: Path | Absent = _file(args.sbom, "--sbom")
        else:
            sbom = Path(scratch, "cyclonedx.json")
            generate_sbom(sbom)
        inputs = EvidenceInputs(
            sbom=sbom,
            junit=_file(args.junit, "--junit"),
            coverage=_file(args.coverage, "--coverage"),
            benchmarks_dir=Path(args.benchmarks) if args.benchmarks else Absent("not given"),
            slo_report=_slo_report(args, settings, slo_path),
            slo_file=slo_path,
            policies_dir=settings.policies_dir,
            avro_dir=avro_dir(),
            provenance_dir=provenance_dir(),
            repo=Path(args.repo),
            tests_exit_code=args.tests_exit_code,
        )
        out = Path(args.out)
        manifest = build(inputs, key, out, datetime.now(UTC), argv=sys.argv[1:])
    public = public_key_path(settings.evidence_signing_key_file)
    if args.export_public_key:
        Path(args.export_public_key).write_bytes(public.read_bytes())
        public = Path(args.export_public_key)
    parts = {
        part: "present" if entry["present"] else f"absent: {entry['reason']}"
        for part, entry in manifest["parts"].items()
    }
    report = {
        "bundle": str(out),
        "key_id": manifest["signing"]["key_id"],
        "public_key": str(public),
        "commit": manifest["commit"],
        "parts": parts,
    }
    print(json.dumps(report, indent=2))
    return 0


def _trusted_key(args: argparse.Namespace, settings: Settings) -> Path:
    from igflow.evidence_keys import public_key_path

    if args.public_key:
        return Path(args.public_key)
    if settings.evidence.public_key_file:
        return Path(settings.evidence.public_key_file)
    path = public_key_path(settings.evidence_signing_key_file)
    if not path.exists():
        msg = f"no trusted public key: pass --public-key (the local one, {path}, does not exist)"
        raise ConfigError(msg)
    return path


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from igflow.evidence_keys import key_id, load_public_key
    from igflow.evidence_verify import verify  # jsonschema, the policy bundle

    trusted = load_public_key(_trusted_key(args, settings))
    verdict = verify(Path(args.bundle), trusted, args.require or ())
    manifest = verdict.manifest or {}
    if args.json:
        out = {
            "ok": verdict.ok,
            "problems": [{"code": p.code.value, "message": p.message} for p in verdict.problems],
            "key_id": key_id(trusted),
            "commit": manifest.get("commit"),
            "parts": {p: e.get("present") for p, e in manifest.get("parts", {}).items()},
        }
        print(json.dumps(out, indent=2))
    else:
        for problem in verdict.problems:
            print(problem, file=sys.stderr)
        if verdict.ok:
            commit = manifest["commit"]
            state = "" if commit.get("sha") is None else (" (dirty)" if commit["dirty"] else "")
            present = [p for p, e in manifest["parts"].items() if e["present"]]
            absent = [p for p, e in manifest["parts"].items() if not e["present"]]
            print(
                f"verified: {args.bundle}, signed by {key_id(trusted)}, commit "
                f"{commit.get('sha')}{state}; parts present: {', '.join(present)}"
                + (f"; absent: {', '.join(absent)}" if absent else "")
            )
        else:
            print(f"igflow evidence: {args.bundle} failed verification", file=sys.stderr)
    return 0 if verdict.ok else 1


def _key(args: argparse.Namespace, settings: Settings) -> int:
    from igflow.evidence_keys import key_id, load_signing_key, public_key_path

    key = load_signing_key(settings.evidence_signing_key_file)
    public = public_key_path(settings.evidence_signing_key_file)
    print(json.dumps({"key_id": key_id(key.public_key()), "public_key": str(public)}))
    return 0


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Add ``igflow evidence`` through the CLI's ``add(name, handler, help)``."""
    p = add(
        "evidence",
        lambda args, settings: {"build": _build, "verify": _verify, "key": _key}[args.action](
            args, settings
        ),
        "build the signed evidence bundle of a release, or verify one",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = actions.add_parser("build", help="write a signed bundle (make evidence)")
    b.add_argument("--out", required=True, help="the bundle to write (.tar.gz)")
    b.add_argument("--sbom", help="a CycloneDX JSON SBOM (default: cyclonedx-py environment)")
    b.add_argument("--junit", help="pytest's --junitxml report")
    b.add_argument("--coverage", help="coverage.py's JSON report (coverage json)")
    b.add_argument("--benchmarks", help="folder of benchmark result files (*.json)")
    b.add_argument(
        "--slo",
        default="none",
        help="'live': ask Prometheus for each tenant's budget (absent, with the reason, if it "
        "does not answer); a file of `igflow slo --json`; or 'none' (default)",
    )
    b.add_argument(
        "--prometheus",
        help="Prometheus's URL for --slo live (default: the stack's, https:// with TLS on)",
    )
    b.add_argument("--tests-exit-code", type=int, help="pytest's exit code, for the run manifest")
    b.add_argument("--repo", default=".", help="the git checkout whose commit is recorded")
    b.add_argument("--export-public-key", help="also copy the public key (PEM) to this file")
    v = actions.add_parser("verify", help="check a bundle's signature and contents")
    v.add_argument("bundle")
    v.add_argument(
        "--public-key",
        help="the trusted public key (PEM; default: evidence.public_key_file, else the local "
        "signing key's public half)",
    )
    v.add_argument(
        "--require",
        action="append",
        choices=tuple(PARTS),
        help="a part that must be present (repeat for several)",
    )
    v.add_argument("--json", action="store_true")
    actions.add_parser("key", help="create the signing key if missing; print its id and .pub")
