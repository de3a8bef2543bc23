"""``igflow governance check | lock``: contracts, policies and the provenance schema agree
(:mod:`igflow.governance`); ``igflow governance redaction``: the redaction rules each tenant gets
(:mod:`operators.redact`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from core.resources import avro_dir
from core.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


# igflow.governance (jsonschema, the Rego policies) and operators.redact are imported by the
# commands that use them: every other igflow command starts without them.


def _folders(args: argparse.Namespace, settings: Settings) -> tuple[Path, Path, Path]:
    from igflow.governance import provenance_dir

    return (
        Path(args.avro) if args.avro else avro_dir(),
        Path(args.policies) if args.policies else settings.policies_dir,
        Path(args.provenance) if args.provenance else provenance_dir(),
    )


def _check(args: argparse.Namespace, settings: Settings) -> int:
    from igflow.governance import check

    avro, policies, provenance = _folders(args, settings)
    findings = check(avro, policies, provenance)
    for finding in findings:
        print(finding, file=sys.stderr)
    if findings:
        print(
            f"igflow governance: {len(findings)} finding(s): change the rules and the provenance "
            "schema with the contract or policy",
            file=sys.stderr,
        )
        return 1
    print(f"governance: {avro}, {policies} and {provenance} agree")
    return 0


def _lock(args: argparse.Namespace, settings: Settings) -> int:
    from igflow.governance import lock

    _avro, _policies, provenance = _folders(args, settings)
    added = lock(provenance)
    print(f"locked: {', '.join(added)}" if added else "nothing new to lock")
    return 0


def _redaction(args: argparse.Namespace, settings: Settings) -> int:
    from operators.redact import RedactionPolicy

    _avro, policies, _provenance = _folders(args, settings)
    policy = RedactionPolicy.load(policies)  # refuses unusable rules, as the flow would
    for tenant in args.tenant or policy.named:
        rules = dict(policy.rules(tenant))
        print(json.dumps({"tenant_id": tenant, "rules": rules, "policy": policy.version}))
    return 0


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    p = add(
        "governance",
        lambda args, settings: {"check": _check, "lock": _lock, "redaction": _redaction}[
            args.action
        ](args, settings),
        "check that contracts, policies and the provenance schema agree (or lock a new version,"
        " or show the redaction rules)",
    )
    p.add_argument("action", choices=("check", "lock", "redaction"))
    p.add_argument(
        "--tenant",
        action="append",
        help="redaction: this tenant's rules (repeatable; default: every tenant the data names)",
    )
    p.add_argument("--avro", help="Avro contracts folder (default: the shipped schemas/avro)")
    p.add_argument("--policies", help="policy folder (default: the configured policies)")
    p.add_argument("--provenance", help="provenance schemas folder (default: shipped)")
