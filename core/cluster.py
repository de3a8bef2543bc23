"""Where a process sits in a Bytewax cluster (``-i/-a``)."""

from __future__ import annotations

import dataclasses

__all__ = ["Cluster"]


@dataclasses.dataclass(frozen=True, slots=True)
class Cluster:
    """Where this process sits in a Bytewax cluster (``-i/-a``); the default is alone."""

    process_id: int | None = None
    addresses: tuple[str, ...] = ()

    @property
    def processes(self) -> int:
        """How many processes the cluster has."""
        return max(1, len(self.addresses))
