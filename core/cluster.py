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

    def worker_indices(self, workers_per_process: int) -> range:
        """The Bytewax worker indices of this process's workers: process ``i`` of a cluster
        runs ``i * workers_per_process`` up to the next process's first (Bytewax numbers a
        cluster's workers process by process; ``tests/unit/test_cluster.py`` checks it)."""
        first = (self.process_id or 0) * workers_per_process
        return range(first, first + workers_per_process)
