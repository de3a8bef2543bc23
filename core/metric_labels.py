"""Bounded ``tenant_id`` metric labels, shared by the flow's metrics (:mod:`core.metrics`) and the
API's (:mod:`api.metrics`) without either registering the other's metrics.

The flow labels a tenant after its record passed the tenant directory (registered tenants only);
the API labels the authenticated principal's tenant (an API key's, or a JWT's ``tenant_id``
claim, which the issuer vouches for). The tenants the SLO file names always keep their own label;
of the others, the first ``cap`` seen by the process do (``run.metrics_tenant_cap``, default
100), and the rest share ``(other)``. So whatever reaches it, a metric labelled through here has
at most cap + named tenants + 1 values of ``tenant_id`` per process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from core.settings import Settings

__all__ = ["OTHER_TENANTS", "TENANT_LABELS", "TenantLabels", "configure", "tenant_label"]

#: The label of tenants past the cap.
OTHER_TENANTS = "(other)"


class TenantLabels:
    """The ``tenant_id`` label value of a tenant: its id while fewer than ``cap`` tenants (not
    counting ``pinned`` ones) have had one in this process, else ``(other)``. Thread-safe."""

    def __init__(self, cap: int = 100, pinned: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._cap = cap
        self._pinned = frozenset(pinned)
        self._seen: set[str] = set()

    def configure(self, cap: int, pinned: Iterable[str] = ()) -> None:
        """Set the cap and the always-labelled tenants (tenants labelled so far keep theirs)."""
        with self._lock:
            self._cap = cap
            self._pinned = frozenset(pinned)

    def __call__(self, tenant_id: str) -> str:
        if tenant_id in self._pinned or tenant_id in self._seen:
            return tenant_id
        with self._lock:
            if len(self._seen) < self._cap:
                self._seen.add(tenant_id)
                return tenant_id
        return OTHER_TENANTS


#: The process's tenant labeller (configured by ``igflow run`` and ``igflow serve``).
TENANT_LABELS = TenantLabels()


def tenant_label(tenant_id: str) -> str:
    """The bounded ``tenant_id`` label of a registered tenant (see :class:`TenantLabels`)."""
    return TENANT_LABELS(tenant_id)


def configure(settings: Settings) -> None:
    """Bound the process's tenant labels as ``settings`` say (``run.metrics_tenant_cap``, and
    the tenants ``run.slo_file`` names); ``ConfigError`` if the SLO file is unusable."""
    from core import slo

    slos = slo.load(Path(settings.run.slo_file) if settings.run.slo_file else None)
    TENANT_LABELS.configure(settings.run.metrics_tenant_cap, slos.named_tenants())
