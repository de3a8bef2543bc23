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

from dev import stack
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
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the CLI; ``environ`` defaults to ``os.environ`` and is read only here."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "install-system":
            stack.install_system()
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
