"""The PSI server over HTTP: a Starlette app around a :class:`~psi.evaluator.PsiServer`.

One route, ``POST /v1/psi``: the body is a wire message (:mod:`psi.messages`), the reply is one
too, always with status 200 and ``application/octet-stream`` (denials included: they are
protocol answers, and all of them look alike). Bodies over the server's limit are answered
``MALFORMED`` without being read further. ``GET /healthz`` answers ``ok``.

The caller's identity comes from :func:`caller_from_headers` by default: the
``x-igflow-partner`` and ``x-igflow-region`` headers, which only an authenticating edge (an mTLS
proxy) may set; pass ``identify`` to take it from elsewhere. The crypto runs in Starlette's
thread pool, so the event loop stays free while libsodium works without the GIL.

The selector set comes from :func:`~psi.selectors.load_selectors_csv` (an Iceberg source comes
later); ``igflow psi serve`` will wire settings to :func:`create_app`.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from core.bodies import read_body
from core.reasons import ReasonCode
from psi.client import PARTNER_HEADER, PSI_PATH, REGION_HEADER
from psi.evaluator import Caller, PsiServer
from psi.messages import Denial, encode
from psi.selectors import load_selectors_csv

__all__ = ["caller_from_headers", "create_app", "load_selectors_csv"]

_OCTETS = "application/octet-stream"


def caller_from_headers(request: Request) -> Caller:
    """The caller as the authenticating edge stated it; missing headers give an empty identity
    (which no agreement names, so the policy denies it)."""
    return Caller(request.headers.get(PARTNER_HEADER, ""), request.headers.get(REGION_HEADER, ""))


def create_app(
    server: PsiServer, *, identify: Callable[[Request], Caller] = caller_from_headers
) -> Starlette:
    """A Starlette app serving ``server`` at ``POST /v1/psi``."""
    limit = server.config.max_message_bytes
    malformed = encode(Denial(ReasonCode.MALFORMED))

    async def psi(request: Request) -> Response:
        body = await read_body(request, limit)
        if body is None:
            return Response(malformed, media_type=_OCTETS)
        reply = await run_in_threadpool(server.handle, body, identify(request))
        return Response(reply, media_type=_OCTETS)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[Route(PSI_PATH, psi, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
    )
