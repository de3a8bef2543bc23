"""``igflow serve``: the GraphQL and REST API (:mod:`api.app`) under uvicorn."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from core.settings import Settings

__all__ = ["register"]

Handler = Callable[[argparse.Namespace, Settings], int]


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.app import create_app
    from core import prometheus_query

    changes = {
        name: value
        for name, value in (("host", args.host), ("port", args.port), ("mode", args.mode))
        if value is not None
    }
    if not settings.api.prometheus_url:
        # The dashboards read the local stack's Prometheus unless told otherwise.
        changes["prometheus_url"] = prometheus_query.default_url(
            os.environ, tls=settings.tls.enabled
        )
    settings = settings.with_changes("api", **changes)
    certificate = settings.server_tls()
    uvicorn.run(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        log_level=settings.run.log_level.lower(),
        access_log=args.access_log,
        ws="websockets-sansio",
        # A WebSocket message is capped like a request body (uvicorn's default: 16 MiB); a
        # longer one closes the socket with 1009 (message too big).
        ws_max_size=settings.api.max_body_bytes,
        lifespan="on",
        log_config=None,  # keep the JSON logs the CLI configured (core.logs)
        # HTTPS (and WSS) only, with tls.enabled.
        ssl_certfile=certificate.get("ssl_certfile"),
        ssl_keyfile=certificate.get("ssl_keyfile"),
    )
    return 0


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Add ``serve`` to the CLI."""
    p = add("serve", _serve, "serve the GraphQL and REST API over the stores and Kafka")
    p.add_argument("--host", help="listen address (default: api.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default: api.port, 8080)")
    p.add_argument(
        "--mode",
        choices=("development", "production"),
        help="production runs only persisted (allowlisted) operations",
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
