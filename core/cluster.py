"""Where a process sits in a Bytewax cluster (``-i/-a``), and its start.

Start: Bytewax's networking (timely) has process *i* connect to processes 0 … i-1 while it
listens for the later ones, and a refused connect is retried after a full second
(``timely_communication::networking::start_connections``). The processes of a cluster started
together finish their imports within milliseconds of each other, so in about half of the starts
process 1 tried before process 0 listened, and the whole cluster began a second later:
``benchmarks/ingest.py --signals 10 --only p2`` took 1.74-1.85 s or 2.94-3.12 s, bimodal,
against 1.6 s for one process (session 18). :meth:`Cluster.await_listeners` waits, just before
Bytewax starts, until the processes this one connects to listen, polling every few
milliseconds; only for addresses on this host (their listeners are in its ``/proc/net/tcp``,
Linux), since a probe connection would break timely's handshake (it reads a process index from
every connection it accepts). Elsewhere, and after a bound, timely's own retry is left as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import time
from pathlib import Path

from core.shutdown import address_of, parse_proc_net_tcp

__all__ = ["LISTEN_POLL_SECONDS", "Cluster", "listening_ports"]

#: How often :meth:`Cluster.await_listeners` looks for its peers' listeners. Reading
#: ``/proc/net/tcp`` walks the kernel's table of connections: ~0.1-0.3 ms in session 18, 3.3 ms
#: (and as much for ``tcp6``) on a machine with 262,144 buckets (session 33); a wait lasts
#: 0.01-0.09 s in a ``--processes 2`` start, once.
LISTEN_POLL_SECONDS = 0.005


def listening_ports(proc_net: Path = Path("/proc/net")) -> set[int] | None:
    """The ports of this host's listening TCP sockets (IPv4 and IPv6); ``None`` where
    ``proc_net`` cannot be read (not Linux)."""
    ports: set[int] = set()
    found = False
    for name, ipv6 in (("tcp", False), ("tcp6", True)):
        with contextlib.suppress(OSError):
            text = (proc_net / name).read_text()
            found = True
            ports.update(
                port
                for _ip, port, _rip, _rport, state, _ in parse_proc_net_tcp(text, ipv6)
                if state == "LISTEN"
            )
    return ports if found else None


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

    def local_peer_ports(self) -> set[int]:
        """The ports of the processes this one connects to (those before it) that are on a
        loopback address of this host."""
        ports = set()
        for address in self.addresses[: self.process_id or 0]:
            host, port = address_of(address)
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(host).is_loopback:
                    ports.add(port)
        return ports

    def await_listeners(self, timeout: float = 30.0, proc_net: Path = Path("/proc/net")) -> float:
        """Return once every process this one connects to, on this host, listens, or after
        ``timeout`` seconds (timely's retry takes over); the seconds waited. Immediate for a
        process alone, the first of a cluster, or peers elsewhere (see the module's text)."""
        ports = self.local_peer_ports()
        start = time.monotonic()
        while ports:
            listening = listening_ports(proc_net)
            if listening is None:
                break
            ports -= listening
            if not ports or time.monotonic() - start >= timeout:
                break
            time.sleep(LISTEN_POLL_SECONDS)
        return time.monotonic() - start
