"""Reading an HTTP request body with a size limit, never holding more than the limit in memory
(the API's endpoints and the PSI server)."""

from __future__ import annotations

from starlette.requests import Request

__all__ = ["read_body"]


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or ``None`` if it is longer than ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before anything is read; otherwise
    the body is read in chunks and abandoned as soon as it passes the limit (a chunked or
    understated body cannot make the server buffer more).
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
