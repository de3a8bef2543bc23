"""Persisted queries: the allowlist, Apollo APQ, and what production mode lets run.

A request names its operation one of three ways:

* ``{"id": "pq_tenant_coherence_v1"}`` (also ``documentId``): an allowlisted operation by id;
* ``{"extensions": {"persistedQuery": {"version": 1, "sha256Hash": H}}}``, with or without
  ``query``: Apollo's automatic persisted queries (APQ). ``H`` is the SHA-256 (hex) of the
  document text; a hash of an allowlisted document always resolves;
* ``{"query": "..."}``: the document itself.

In ``production`` mode only allowlisted documents run: an id or hash outside the allowlist is
``QUERY_NOT_ALLOWED``, and so is a full query whose text is not byte-for-byte an allowlisted
document; APQ cannot register new ones. In ``development`` mode any document runs, and APQ
registers a query sent with its (checked) hash in a bounded in-memory cache; an unknown hash is
``PERSISTED_QUERY_NOT_FOUND`` (the client then sends the query with the hash, per APQ).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.reasons import ReasonCode
from core.resources import package_path

__all__ = ["DEFAULT_FILE", "Admission", "PersistedQueries", "sha256_hex"]

DEFAULT_FILE = package_path("api", "persisted_queries.json")
#: Queries APQ remembers in development mode (least recently used go first).
_APQ_CACHE = 1000


def sha256_hex(text: str) -> str:
    """The APQ hash of a document: SHA-256 of its UTF-8 bytes, lower-case hex."""
    return hashlib.sha256(text.encode()).hexdigest()


class Admission(Exception):
    """A request refused before execution, with its reason code."""

    def __init__(self, reason: ReasonCode, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class PersistedQueries:
    """The allowlist (id -> document) and, in development mode, the APQ cache."""

    def __init__(self, documents: dict[str, str], *, production: bool) -> None:
        self.production = production
        self.by_id = dict(documents)
        self.by_hash = {sha256_hex(doc): doc for doc in documents.values()}
        self._apq: OrderedDict[str, str] = OrderedDict()

    @classmethod
    def load(cls, path: str | Path, *, production: bool) -> PersistedQueries:
        """Read the allowlist file: a JSON object of operation id -> GraphQL document."""
        file = Path(path) if path else DEFAULT_FILE
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            msg = f"persisted queries {file}: {exc}"
            raise ConfigError(msg) from exc
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in data.items()
        ):
            msg = f"persisted queries {file}: expected an object of id -> GraphQL document"
            raise ConfigError(msg)
        return cls(data, production=production)

    def resolve(self, data: dict[str, Any]) -> str:
        """The document text the request asks to run, or :class:`Admission` if refused."""
        op_id = data.get("id", data.get("documentId"))
        query = data.get("query")
        extensions = data.get("extensions")
        persisted = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
        if op_id is not None:
            if not isinstance(op_id, str):
                raise Admission(ReasonCode.BAD_REQUEST, "id must be a string")
            document = self.by_id.get(op_id)
            if document is None:
                raise Admission(ReasonCode.QUERY_NOT_ALLOWED, "unknown persisted query id")
            return document
        if persisted is not None:
            return self._apq_resolve(persisted, query)
        if not isinstance(query, str) or not query.strip():
            raise Admission(ReasonCode.BAD_REQUEST, "the request has no query, id or hash")
        if self.production and sha256_hex(query) not in self.by_hash:
            raise Admission(
                ReasonCode.QUERY_NOT_ALLOWED, "production mode runs only persisted queries"
            )
        return query

    def _apq_resolve(self, persisted: Any, query: Any) -> str:
        if not isinstance(persisted, dict) or persisted.get("version") != 1:
            raise Admission(ReasonCode.BAD_REQUEST, "persistedQuery needs version 1")
        digest = persisted.get("sha256Hash")
        if not isinstance(digest, str):
            raise Admission(ReasonCode.BAD_REQUEST, "persistedQuery needs sha256Hash")
        digest = digest.lower()
        if isinstance(query, str) and query:
            if sha256_hex(query) != digest:
                raise Admission(ReasonCode.BAD_REQUEST, "provided sha256Hash does not match query")
            if digest in self.by_hash:
                return self.by_hash[digest]
            if self.production:
                raise Admission(
                    ReasonCode.QUERY_NOT_ALLOWED, "production mode runs only persisted queries"
                )
            self._apq[digest] = query
            if len(self._apq) > _APQ_CACHE:
                self._apq.popitem(last=False)
            return query
        document = self.by_hash.get(digest)
        if document is not None:
            return document
        if not self.production:
            cached = self._apq.get(digest)
            if cached is not None:
                self._apq.move_to_end(digest)
                return cached
            raise Admission(ReasonCode.PERSISTED_QUERY_NOT_FOUND, "PersistedQueryNotFound")
        raise Admission(ReasonCode.QUERY_NOT_ALLOWED, "production mode runs only persisted queries")
