"""Serve the registry: ``python -m registry --host 127.0.0.1 --port 18081 --data DIR``.

``DIR`` is created if needed and holds ``registry.sqlite3``. All logging goes to stderr.
On SIGINT/SIGTERM it shuts down cleanly (closing the store), then uvicorn re-raises the
signal, so the exit status is the signal's. It exits with status 2 and a one-line message
on stderr if the address cannot be bound (e.g. the port is taken) or the store cannot open.
"""

from __future__ import annotations

import argparse
import copy
import socket
import sys
from pathlib import Path

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from registry.app import create_app
from registry.store import StoreError

DB_NAME = "registry.sqlite3"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m registry", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=18081, help="TCP port to listen on")
    parser.add_argument("--data", type=Path, required=True, help="directory for the database")
    parser.add_argument("--ssl-certfile", type=Path, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--ssl-keyfile", type=Path, help="the certificate's private key (PEM)")
    return parser.parse_args(argv)


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on ``host:port``; ``OSError`` if it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def main(argv: list[str] | None = None) -> int:
    """Run the server until it is stopped; return the process exit status."""
    args = _arguments(argv)
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        print("registry: --ssl-certfile and --ssl-keyfile go together", file=sys.stderr)
        return 2
    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        print(f"registry: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    with sock:
        try:
            args.data.mkdir(parents=True, exist_ok=True)
            app = create_app(args.data / DB_NAME)
        except (OSError, StoreError) as exc:
            print(f"registry: cannot open the store in {args.data}: {exc}", file=sys.stderr)
            return 2
        log_config = copy.deepcopy(LOGGING_CONFIG)
        log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
        config = uvicorn.Config(
            app,
            log_config=log_config,
            timeout_graceful_shutdown=5,
            ssl_certfile=args.ssl_certfile,
            ssl_keyfile=args.ssl_keyfile,
        )
        uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
