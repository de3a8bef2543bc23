"""RFC 7807 ``application/problem+json`` error responses of the REST endpoints.

Every problem carries the reason code (``code``, from the closed :class:`ReasonCode` vocabulary)
and a ``type`` URI naming it, so a client branches on the code, never on the prose in ``detail``.
``detail`` never echoes data from the request.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.responses import JSONResponse

from core.reasons import ReasonCode

__all__ = ["PROBLEM_JSON", "STATUS", "problem"]

PROBLEM_JSON = "application/problem+json"
#: The HTTP status of each reason code the REST endpoints answer with.
STATUS: dict[ReasonCode, int] = {
    ReasonCode.AUTH_MISSING: 401,
    ReasonCode.AUTH_INVALID: 401,
    ReasonCode.AUTH_EXPIRED: 401,
    ReasonCode.SIGNATURE_INVALID: 401,
    ReasonCode.SIGNATURE_REPLAYED: 409,
    ReasonCode.TENANT_FORBIDDEN: 403,
    ReasonCode.SCOPE_MISSING: 403,
    ReasonCode.NOT_FOUND: 404,
    ReasonCode.METHOD_NOT_ALLOWED: 405,
    ReasonCode.BAD_REQUEST: 400,
    ReasonCode.FIELD_INVALID: 422,
    ReasonCode.TS_OUT_OF_RANGE: 422,
    ReasonCode.TENANT_UNKNOWN: 422,
    ReasonCode.SOURCE_NOT_ALLOWED: 422,
    ReasonCode.RATE_LIMITED: 429,
    ReasonCode.AUTH_RATE_LIMITED: 429,
    ReasonCode.RECORD_TOO_LARGE: 413,
    ReasonCode.KAFKA_UNAVAILABLE: 503,
    ReasonCode.STORE_UNAVAILABLE: 503,
    ReasonCode.OPERATION_DISABLED: 503,
    ReasonCode.INTERNAL_SERVER_ERROR: 500,
}
_TITLES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem(
    code: ReasonCode,
    detail: str,
    *,
    status: int | None = None,
    instance: str | None = None,
    retry_after: float | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem response for ``code`` (its status from :data:`STATUS` unless given)."""
    status = status or STATUS.get(code, 400)
    body: dict[str, Any] = {
        "type": f"urn:igflow:problem:{code.value.lower()}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "code": code.value,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(extra)
    headers: dict[str, str] = {"x-igflow-code": code.value}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="igflow"'
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)
