"""``python -m dev``: command-line entry point for the local service stack.

Exit status: 0 on success (for ``status``: every selected service running and ready),
1 otherwise; errors are printed without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from dev import stack, tls
from dev.config import ENV_STACK_DIR, ENV_STACK_TIMEOUT, StackConfig
from dev.errors import StackError
from dev.services import SERVICES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dev",
        description=f"Local service stack without Docker (state in ${ENV_STACK_DIR}).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    names = [s.name for s in SERVICES]
    for name, text in (
        ("start", "start services and wait until ready (idempotent)"),
        ("stop", "stop services started by this stack (idempotent)"),
        ("status", "show a status table; exit 1 unless all are ready"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "--only", nargs="+", choices=names, metavar="SERVICE", help=", ".join(names)
        )
    start = sub.choices["start"]
    start.add_argument(
        "--timeout",
        type=float,
        help=f"seconds to wait for each service (default ${ENV_STACK_TIMEOUT} or 60)",
    )
    sub.add_parser(
        "install-system", help="apt-get install postgresql-15 redis-server prometheus chromium"
    )
    certs = sub.add_parser(
        "certs",
        help="make the CA and server certificate in a folder (docker-compose's tls volume)",
    )
    certs.add_argument("--dir", required=True, type=Path, help="where (made if missing)")
    certs.add_argument(
        "--host",
        action="append",
        default=[],
        help="a DNS name for the certificate's SAN beside localhost/127.0.0.1/::1 (repeatable)",
    )
    certs.add_argument(
        "--owner",
        action="append",
        default=[],
        metavar="NAME=UID",
        help="also copy certificate and key into DIR/NAME/, owned by UID (repeatable; needs root)",
    )
    certs.add_argument(
        "--keystore-password",
        default=tls.DEFAULT_KEYSTORE_PASSWORD,
        help="the PKCS#12 key stores' password (DIR/NAME/keystore.p12)",
    )
    return parser


def _certs(args: argparse.Namespace) -> None:
    owners: list[tuple[str, int]] = []
    for item in args.owner:
        name, sep, uid = item.partition("=")
        if not sep or not name or "/" in name or not uid.isdigit():
            msg = f"--owner {item!r}: expected NAME=UID (a folder name and a numeric uid)"
            raise StackError(msg)
        owners.append((name, int(uid)))
    directory = tls.ensure(args.dir, hosts=args.host)
    for name, uid in owners:
        try:
            tls.copy_for(directory, name, uid, args.keystore_password)
        except PermissionError as exc:
            raise StackError(str(exc)) from exc
    print(f"certs: {directory} (SAN {', '.join(tls.san_names(directory / tls.CERT_FILE))})")


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the CLI; ``environ`` defaults to ``os.environ`` and is read only here."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "install-system":
            stack.install_system()
            return 0
        if args.command == "certs":
            _certs(args)
            return 0
        cfg = StackConfig.from_env(os.environ if environ is None else environ)
        if getattr(args, "timeout", None) is not None:
            cfg = dataclasses.replace(cfg, timeout_s=args.timeout)
        services = stack.select(args.only, cfg)
        if args.command == "start":
            stack.start(cfg, services)
        elif args.command == "stop":
            stack.stop(cfg, services)
        else:
            rows = stack.status(cfg, services)
            print(stack.format_table(rows))
            return 0 if all(r.ok for r in rows) else 1
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
