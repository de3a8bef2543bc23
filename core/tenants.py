"""The tenant-directory protocol: how a step or the API asks whether a tenant is registered,
and a fixed in-memory directory. The Postgres-backed directory lives in ``tenancy/``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Protocol

__all__ = ["StaticTenants", "TenantDirectory", "TenantEntry"]


@dataclasses.dataclass(frozen=True, slots=True)
class TenantEntry:
    """One registered tenant."""

    tenant_id: str
    active: bool = True
    #: The sources this tenant accepts; ``None``: any source.
    sources: frozenset[str] | None = None


class TenantDirectory(Protocol):
    """Looks tenants up by id; ``None`` for a tenant that is not registered."""

    def get(self, tenant_id: str) -> TenantEntry | None: ...


class StaticTenants:
    """A fixed, in-memory :class:`TenantDirectory` (tests, and a fallback without Postgres)."""

    def __init__(self, entries: Iterable[TenantEntry] = ()) -> None:
        self._entries = {e.tenant_id: e for e in entries}

    @classmethod
    def of(cls, *tenant_ids: str, sources: Iterable[str] | None = None) -> StaticTenants:
        """Active tenants ``tenant_ids``, each accepting ``sources`` (``None``: any)."""
        allowed = None if sources is None else frozenset(sources)
        return cls(TenantEntry(t, True, allowed) for t in tenant_ids)

    def get(self, tenant_id: str) -> TenantEntry | None:
        return self._entries.get(tenant_id)
