"""Every HTTP answer the routes do not make themselves is a problem document too, and no
exception leaves the application.

Starlette answers an unknown path (404), a wrong method (405) and an unhandled exception (500)
in ``text/plain``; here they are ``application/problem+json`` with a reason code, like every
other refusal. An unhandled exception is logged once, with its traceback, in the server's log
only; the client gets ``INTERNAL_SERVER_ERROR`` and ``Connection: close``.

Starlette's outermost middleware re-raises the exception after answering, "so that servers can
log it", and uvicorn then closes the connection without a word, whatever the answer said: the
next request a keep-alive client sent on it was reset (issue 12). :class:`App` stops the
exception at the application's edge once it has been answered; a WebSocket whose handler raised
is closed with 1011 (internal error) instead of being dropped.
"""

from __future__ import annotations

import contextlib
import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ExceptionHandler, Receive, Scope, Send

from api.problems import problem
from core.reasons import ReasonCode

__all__ = ["EXCEPTION_HANDLERS", "App"]

log = logging.getLogger(__name__)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (routing): 404, 405."""
    status = exc.status_code if isinstance(exc, HTTPException) else 400
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    if status == 404:
        response = problem(ReasonCode.NOT_FOUND, "no such path", instance=request.url.path)
    elif status == 405:
        response = problem(
            ReasonCode.METHOD_NOT_ALLOWED,
            "the path does not answer this method",
            instance=request.url.path,
        )
    else:
        response = problem(ReasonCode.BAD_REQUEST, "the request is not valid", status=status)
    response.headers.update(headers)  # Allow, on a 405
    return response


async def _client_disconnect(request: Request, _exc: Exception) -> Response:
    """The client left while its body was being read: nobody to answer, nothing went wrong here
    (it was logged as an unhandled exception, with a traceback)."""
    log.info("client left mid-request", extra={"op": request.url.path})
    return problem(ReasonCode.BAD_REQUEST, "the request ended early")


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled exception", exc_info=exc, extra={"op": request.url.path})
    response = problem(ReasonCode.INTERNAL_SERVER_ERROR, "internal error", status=500)
    # What failed may have left this connection's state unknown: the client opens a new one.
    response.headers["Connection"] = "close"
    return response


#: Starlette's ``exception_handlers`` for the API.
EXCEPTION_HANDLERS: dict[type[Exception] | int, ExceptionHandler] = {
    HTTPException: _http_exception,
    ClientDisconnect: _client_disconnect,
    Exception: _internal_error,
}


class App(Starlette):
    """Starlette, with no exception raised past the application (see the module's doc)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:
            if scope["type"] == "http":
                return  # answered (and logged) by the Exception handler
            if scope["type"] != "websocket":
                raise  # the lifespan: a start-up failure must stop the server
            log.error("websocket handler failed", exc_info=exc, extra={"op": scope["path"]})
            with contextlib.suppress(Exception):  # already closed
                await send({"type": "websocket.close", "code": 1011, "reason": ""})
