"""Starlette app speaking a subset of the Confluent Schema Registry REST API (Avro only).

Contracts: responses are JSON (``application/vnd.schemaregistry.v1+json``); every error
body is ``{"error_code": N, "message": "..."}`` with Confluent's codes; unknown body
fields and query parameters are ignored; boolean query flags are true iff their value is
``true`` in any case (the Python client sends ``True``). Soft-deleted versions are hidden
unless ``?deleted=true`` but their schema ids keep resolving. Handlers are synchronous and
run in the threadpool; :class:`~registry.store.SchemaStore` serialises them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from registry import compatibility as compat
from registry.store import SchemaStore, StoreError, SubjectVersion

__all__ = ["MEDIA_TYPE", "ApiError", "create_app"]

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
_MAX_VERSION = 2**31 - 1


class ApiError(Exception):
    """Answered as ``{"error_code": code, "message": message}``; HTTP status = code[:3]."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, int(str(code)[:3])


class _Json(JSONResponse):
    media_type = MEDIA_TYPE


@dataclass(frozen=True)
class Call:
    """What a handler sees of a request: path parameters, query and JSON object body."""

    path: Mapping[str, Any]
    query: QueryParams
    body: Mapping[str, Any]

    @property
    def subject(self) -> str:
        return str(self.path["subject"])

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() == "true"


Handler = Callable[[SchemaStore, Call], object]


_MESSAGES = {
    400: "The request body must be a JSON object",
    409: 'Schema being registered is incompatible with an earlier schema for subject "{}", '
    "details: [{}]",
    40401: "Subject '{}' not found.",
    40402: "Version {} not found.",
    40403: "Schema not found",
    40404: "Subject '{}' was soft deleted.Set permanent=true to delete permanently",
    40405: "Subject '{}' was not deleted first before being permanently deleted",
    40406: "Subject '{}' Version {} was soft deleted.Set permanent=true to delete permanently",
    40407: "Subject '{}' Version {} was not deleted first before being permanently deleted",
    40408: "Subject '{}' does not have subject-level compatibility configured",
    42202: "The specified version '{}' is not a valid version id. "
    'Allowed values are between [1, 2^31-1] and the string "latest"',
    42200: "Invalid pagination: offset {} must be an integer >= 0 and limit {} one >= -1",
}


def _fail(code: int, *args: object) -> ApiError:
    """The :class:`ApiError` for Confluent's error ``code``, message filled with ``args``."""
    return ApiError(code, _MESSAGES[code].format(*args))


def _requested_version(call: Call) -> int | None:
    """The ``{version}`` path parameter: ``None`` for ``latest``/-1, else 1..2^31-1 (42202)."""
    raw = str(call.path["version"])
    if raw in ("latest", "-1"):
        return None
    if raw.isdigit() and 1 <= int(raw) <= _MAX_VERSION:
        return int(raw)
    raise _fail(42202, raw)


def _versions(store: SchemaStore, call: Call, deleted: bool = False) -> list[SubjectVersion]:
    """The subject's versions (soft-deleted too if ``deleted`` or ``?deleted``), else 40401."""
    found = store.versions(call.subject, deleted=deleted or call.flag("deleted"))
    if not found:
        raise _fail(40401, call.subject)
    return found


def _pick(versions: Sequence[SubjectVersion], wanted: int | None) -> SubjectVersion:
    """The newest of ``versions`` if ``wanted`` is ``None``, else that version (40402)."""
    for candidate in versions if wanted is not None else versions[-1:]:
        if wanted in (None, candidate.version):
            return candidate
    raise _fail(40402, wanted)


def _version_body(v: SubjectVersion) -> dict[str, object]:
    """Confluent's version object; like Confluent it omits ``schemaType`` for AVRO."""
    return dict(subject=v.subject, version=v.version, id=v.schema_id, schema=v.schema)


def _level(store: SchemaStore, subject: str | None) -> str:
    """The effective level: the subject's, else the global one, else BACKWARD."""
    return (subject and store.level(subject)) or store.level(None) or compat.DEFAULT_LEVEL


def _compat_answer(
    store: SchemaStore, call: Call, previous: Sequence[SubjectVersion]
) -> dict[str, object]:
    """Check the body's schema against ``previous`` under the subject's level."""
    candidate = compat.parse_request(call.body)
    reasons = compat.check(candidate, _pairs(previous), _level(store, call.subject))
    answer: dict[str, object] = {"is_compatible": not reasons}
    if call.flag("verbose"):
        answer["messages"] = reasons
    return answer


def _pairs(versions: Sequence[SubjectVersion]) -> list[tuple[int, str]]:
    return [(found.version, found.schema) for found in versions]


# --- subjects ---------------------------------------------------------------------------


def list_subjects(store: SchemaStore, call: Call) -> object:
    prefix = call.query.get("subjectPrefix", "")
    subjects = store.subjects(deleted=call.flag("deleted"))
    return [subject for subject in subjects if subject.startswith(prefix)]


def list_versions(store: SchemaStore, call: Call) -> object:
    return [found.version for found in _versions(store, call)]


def get_version(store: SchemaStore, call: Call) -> object:
    return _version_body(_pick(_versions(store, call), _requested_version(call)))


def get_version_schema(store: SchemaStore, call: Call) -> object:
    found = _pick(_versions(store, call), _requested_version(call))
    return Response(found.schema, media_type=MEDIA_TYPE)


def register(store: SchemaStore, call: Call) -> object:
    candidate, level = compat.parse_request(call.body), _level(store, call.subject)

    def gate(live: list[SubjectVersion]) -> None:
        reasons = compat.check(candidate, _pairs(live), level)
        if reasons:
            raise _fail(409, call.subject, "; ".join(reasons))

    registered = store.register(call.subject, candidate.text, candidate.canonical, gate)
    return {"id": registered.schema_id}


def lookup(store: SchemaStore, call: Call) -> object:
    candidate = compat.parse_request(call.body)
    _versions(store, call)
    found = store.find(call.subject, candidate.canonical, deleted=call.flag("deleted"))
    if found is None:
        raise _fail(40403)
    return _version_body(found)


def delete_subject(store: SchemaStore, call: Call) -> object:
    versions = _versions(store, call, deleted=True)
    live = [found.version for found in versions if not found.deleted]
    if not call.flag("permanent"):
        if not live:
            raise _fail(40404, call.subject)
        return store.soft_delete(call.subject)
    if live:
        raise _fail(40405, call.subject)
    return store.hard_delete(call.subject)


def delete_version(store: SchemaStore, call: Call) -> object:
    permanent = call.flag("permanent")
    versions = _versions(store, call, deleted=True)
    wanted = _requested_version(call)
    target = _pick(
        [v for v in versions if permanent or not v.deleted] if wanted is None else versions, wanted
    )
    if target.deleted != permanent:
        raise _fail(40407 if permanent else 40406, call.subject, target.version)
    done = (store.hard_delete if permanent else store.soft_delete)(call.subject, target.version)
    if not done:
        raise _fail(40402, target.version)
    return target.version


# --- schemas by id ----------------------------------------------------------------------


def _schema_by_id(store: SchemaStore, call: Call) -> tuple[int, str]:
    raw = str(call.path["schema_id"])
    text = store.schema_text(int(raw)) if raw.isdigit() else None
    if text is None:
        raise _fail(40403)
    return int(raw), text


def get_schema(store: SchemaStore, call: Call) -> object:
    return {"schema": _schema_by_id(store, call)[1]}


def _page(items: list[Any], call: Call) -> list[Any]:
    """``offset`` and ``limit`` (``-1``: no limit) of the query, as Confluent's registry reads
    them (its clients send both)."""
    raw_offset, raw_limit = call.query.get("offset", "0"), call.query.get("limit", "-1")
    try:
        offset, limit = int(raw_offset), int(raw_limit)
    except ValueError:
        raise _fail(42200, raw_offset, raw_limit) from None
    if offset < 0 or limit < -1:
        raise _fail(42200, raw_offset, raw_limit)
    return items[offset:] if limit == -1 else items[offset : offset + limit]


def _usages(store: SchemaStore, call: Call) -> list[SubjectVersion]:
    """The (subject, version) pairs that use the schema id, in subject and version order,
    optionally of one ``subject`` and with ``deleted`` ones."""
    used = store.usages(_schema_by_id(store, call)[0], deleted=call.flag("deleted"))
    wanted = call.query.get("subject")
    return [u for u in used if wanted in (None, u.subject)]


def schema_versions(store: SchemaStore, call: Call) -> object:
    pairs = [{"subject": u.subject, "version": u.version} for u in _usages(store, call)]
    return _page(pairs, call)


def schema_subjects(store: SchemaStore, call: Call) -> object:
    subjects = list(dict.fromkeys(u.subject for u in _usages(store, call)))
    return _page(subjects, call)


def schema_types(store: SchemaStore, call: Call) -> object:
    return ["AVRO"]


# --- config and compatibility -----------------------------------------------------------


def get_config(store: SchemaStore, call: Call) -> object:
    subject = call.path.get("subject")
    if subject is None or call.flag("defaultToGlobal"):
        return {"compatibilityLevel": _level(store, subject)}
    level = store.level(subject)
    if level is None:
        raise _fail(40408, subject)
    return {"compatibilityLevel": level}


def put_config(store: SchemaStore, call: Call) -> object:
    level = compat.validate_level(call.body.get("compatibility"))
    store.set_level(call.path.get("subject"), level)
    return {"compatibility": level}


def delete_config(store: SchemaStore, call: Call) -> object:
    subject = call.path.get("subject")
    previous = store.clear_level(subject)
    if previous is None and subject is not None:
        raise _fail(40408, subject)
    return {"compatibilityLevel": previous or compat.DEFAULT_LEVEL}


def compat_version(store: SchemaStore, call: Call) -> object:
    wanted, live = _requested_version(call), store.versions(call.subject)
    if wanted is not None and not live:
        raise _fail(40401, call.subject)
    return _compat_answer(store, call, [_pick(live, wanted)] if live else [])


def compat_all_versions(store: SchemaStore, call: Call) -> object:
    return _compat_answer(store, call, store.versions(call.subject))


# --- application ------------------------------------------------------------------------

# Each handler answers the Confluent endpoint it is routed from, with the shared contracts
# stated in the module docstring.

_ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/", lambda store, call: {}),
    ("GET", "/subjects", list_subjects),
    ("POST", "/subjects/{subject}", lookup),
    ("DELETE", "/subjects/{subject}", delete_subject),
    ("GET", "/subjects/{subject}/versions", list_versions),
    ("POST", "/subjects/{subject}/versions", register),
    ("GET", "/subjects/{subject}/versions/{version}", get_version),
    ("DELETE", "/subjects/{subject}/versions/{version}", delete_version),
    ("GET", "/subjects/{subject}/versions/{version}/schema", get_version_schema),
    ("GET", "/schemas/types", schema_types),
    ("GET", "/schemas/ids/{schema_id}", get_schema),
    ("GET", "/schemas/ids/{schema_id}/subjects", schema_subjects),
    ("GET", "/schemas/ids/{schema_id}/versions", schema_versions),
    ("GET", "/config", get_config),
    ("PUT", "/config", put_config),
    ("DELETE", "/config", delete_config),
    ("GET", "/config/{subject}", get_config),
    ("PUT", "/config/{subject}", put_config),
    ("DELETE", "/config/{subject}", delete_config),
    ("POST", "/compatibility/subjects/{subject}/versions", compat_all_versions),
    ("POST", "/compatibility/subjects/{subject}/versions/{version}", compat_version),
]


async def _read_body(request: Request) -> dict[str, Any]:
    """The JSON object body (``{}`` if empty), else 400."""
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _fail(400)
    return body


def _route(method: str, path: str, handler: Handler, store: SchemaStore) -> Route:
    async def endpoint(request: Request) -> Response:
        body = await _read_body(request) if method in ("POST", "PUT") else {}
        call = Call(request.path_params, request.query_params, body)
        result = await run_in_threadpool(handler, store, call)
        return result if isinstance(result, Response) else _Json(result)

    return Route(path, endpoint, methods=[method])


_CODES: dict[type[Exception], int] = {
    compat.InvalidSchemaError: 42201,
    compat.InvalidLevelError: 42203,
    StoreError: 50001,
}


def _error_response(exc: Exception) -> Response:
    """Confluent's error body for any exception; unexpected ones are answered with 500."""
    if isinstance(exc, HTTPException):
        exc = ApiError(exc.status_code, exc.detail)
    elif not isinstance(exc, ApiError):
        exc = ApiError(next((c for k, c in _CODES.items() if isinstance(exc, k)), 500), str(exc))
    return _Json({"error_code": exc.code, "message": exc.message}, status_code=exc.status)


def create_app(db_path: Path) -> Starlette:
    """A registry app persisting to the SQLite file ``db_path`` (created if missing).

    The store is opened now and closed when the app's lifespan ends; it is also
    available as ``app.state.store``.
    """
    store = SchemaStore(db_path)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        store.close()

    async def on_error(request: Request, exc: Exception) -> Response:
        return _error_response(exc)

    app = Starlette(
        routes=[_route(method, path, handler, store) for method, path, handler in _ROUTES],
        # Exception goes to Starlette's server-error middleware, which answers and then
        # re-raises it for logging; the expected errors are answered without a traceback.
        exception_handlers=dict.fromkeys((Exception, HTTPException, ApiError, *_CODES), on_error),
        lifespan=lifespan,
    )
    app.state.store = store
    return app
