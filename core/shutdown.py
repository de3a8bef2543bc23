"""How ``igflow run`` and ``igflow replay`` stop: on SIGINT or SIGTERM, within a bound, with a
log line that says why.

Bytewax (0.21) stops its workers when the main thread sees a Python signal, then joins timely's
network threads; those end only when every peer process of the cluster closes its connection. So
with two processes and a signal to one of them, the signalled process waited in that join forever
and the other one, whose peer had left without a word, kept stepping its workers (~30-50% CPU) and
never exited either. :class:`StopGuard` bounds both from our side:

- a signal starts a deadline (``run.stop_seconds``): a process that has not exited by then leaves
  with :data:`EXIT_FORCED`; a second signal leaves at once;
- a process whose cluster connection to a peer was closed (the peer exited, crashed or was
  killed; the socket is in CLOSE_WAIT or gone) and that is still running ``stop_seconds`` later
  leaves with :data:`EXIT_FORCED` (a bounded run that ends normally is long gone by then).

Leaving early is safe for exactly-once: it is what a SIGKILL does, and the next run of the cluster
resumes from the last snapshot of the recovery store. SIGINT is handled even when the process was
started with it ignored (a background job of a non-interactive shell: ``igflow run ... &``), which
made ``kill -INT`` a no-op before. The peer check lists ``/proc/self/fd`` (Linux); elsewhere it is
off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from types import FrameType

from core.errors import in_chain

__all__ = [
    "EXIT_FORCED",
    "StopGuard",
    "address_of",
    "cluster_socket_states",
    "parse_proc_net_tcp",
]

log = logging.getLogger(__name__)

#: Exit status of a process that did not stop on its own within ``run.stop_seconds`` after a
#: signal, that got a second signal, or whose peer process left the cluster.
EXIT_FORCED = 3

#: /proc/net/tcp's state codes (include/net/tcp_states.h) this module names.
_TCP_STATES_HEX = {"01": "ESTABLISHED", "08": "CLOSE_WAIT", "0A": "LISTEN"}
#: The same as ``TCP_INFO``'s ``tcpi_state`` gives them.
_TCP_STATES = {int(code, 16): name for code, name in _TCP_STATES_HEX.items()}
_INET = (socket.AF_INET, socket.AF_INET6)

_POLL_S = 0.5


#: One row of ``/proc/net/tcp``: local ip and port, remote ip and port, state, socket inode.
TcpRow = tuple[str, int, str, int, str, str]


def parse_proc_net_tcp(text: str, ipv6: bool = False) -> Iterator[TcpRow]:
    """``(local ip, local port, remote ip, remote port, state, inode)`` of each row of a
    ``/proc/net/tcp`` (or ``tcp6``) text; IPv6 addresses are returned as their hex text."""
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        (lip, lport), (rip, rport) = (f.split(":") for f in fields[1:3])
        state = _TCP_STATES_HEX.get(fields[3], fields[3])
        if not ipv6:
            lip = socket.inet_ntoa(struct.pack("<I", int(lip, 16)))
            rip = socket.inet_ntoa(struct.pack("<I", int(rip, 16)))
        yield lip, int(lport, 16), rip, int(rport, 16), state, fields[9]


def _own_tcp_sockets() -> Iterator[tuple[tuple[str, int], tuple[str, int] | None, str]]:
    """``(local (ip, port), remote (ip, port) or None, state)`` of each TCP socket this process
    holds, read from the socket itself (``getsockname``, ``getpeername``, ``TCP_INFO``'s state)
    through a duplicate of its descriptor. Raises ``OSError`` where ``/proc/self/fd`` cannot be
    listed.

    Not ``/proc/net/tcp``: reading it walks the kernel's whole table of connections (262,144
    buckets on the development machine: 3.3 ms of CPU for ``tcp``, as much for ``tcp6``),
    which a check every half second made ~1.3% of a core per process, idle or not."""
    for entry in os.scandir("/proc/self/fd"):
        try:
            if not os.readlink(entry.path).startswith("socket:"):
                continue
            fd = os.dup(int(entry.name))
        except (OSError, ValueError):
            continue  # closed since the listing (or the listing's own descriptor)
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            continue
        with sock:
            if sock.type != socket.SOCK_STREAM or sock.family not in _INET:
                continue
            try:
                local = _ip_port(sock.getsockname())
                code = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
            except OSError:
                continue
            try:
                remote: tuple[str, int] | None = _ip_port(sock.getpeername())
            except OSError:  # a listener, or a socket not connected (any more)
                remote = None
            yield local, remote, _TCP_STATES.get(code, str(code))


def _ip_port(address: tuple[str, int] | tuple[str, int, int, int]) -> tuple[str, int]:
    """An IPv4 or IPv6 socket address as ``(ip, port)``, an IPv4-mapped IPv6 address as IPv4."""
    ip = address[0].removeprefix("::ffff:")
    return ip, address[1]


def address_of(text: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) as the host's IP address (resolved when it can be)
    and the port."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    with contextlib.suppress(OSError):
        host = socket.gethostbyname(host)
    return host, int(port)


def cluster_socket_states(addresses: Sequence[str], process_id: int) -> list[str]:
    """The TCP state of each of this process's connections with its cluster's peers: those it
    accepted on its own address and those it opened to a peer's (timely opens one per pair of
    processes). Raises ``OSError`` where this process's descriptors cannot be listed, and
    :class:`RuntimeError` while a default socket timeout is set (reading a descriptor's state
    through a Python socket would make the connection non-blocking for its owner too)."""
    if socket.getdefaulttimeout() is not None:
        msg = "a default socket timeout is set (socket.setdefaulttimeout)"
        raise RuntimeError(msg)
    own = address_of(addresses[process_id])
    peers = {address_of(a) for i, a in enumerate(addresses) if i != process_id}
    states = []
    for local, remote, state in _own_tcp_sockets():
        if remote is None or state == "LISTEN":
            continue
        if local == own or remote in peers:  # accepted on its address, or opened to a peer's
            states.append(state)
    return states


class StopGuard:
    """SIGINT/SIGTERM handling and the bounds of ``igflow run`` (see the module's text).

    ``signum`` is the signal that stopped the run, ``None`` until one comes."""

    def __init__(
        self, stop_seconds: float, process_id: int | None, addresses: Sequence[str]
    ) -> None:
        self.stop_seconds = stop_seconds
        self.process_id = process_id or 0
        self.addresses = tuple(addresses)
        self.signum: int | None = None
        self.started = 0.0
        self._previous: dict[int, object] = {}
        self._done = threading.Event()

    @property
    def _who(self) -> str:
        return f"process {self.process_id} of {max(1, len(self.addresses))}"

    def __enter__(self) -> StopGuard:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread can handle signals (a test's in-process run)
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if previous == signal.SIG_IGN:
                log.info(
                    "%s was ignored when igflow run started (a background job of a shell?); "
                    "igflow run stops on it anyway",
                    signal.Signals(signum).name,
                    extra={"op": "run.stop"},
                )
            self._previous[signum] = previous
            signal.signal(signum, self._on_signal)
        if len(self.addresses) > 1:
            threading.Thread(target=self._watch_peers, name="igflow-peers", daemon=True).start()
        return self

    def __exit__(
        self, _type: type[BaseException] | None, exc: BaseException | None, _tb: object
    ) -> None:
        self._done.set()
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        # The handler's KeyboardInterrupt raised inside a step's Python code (a source's
        # next_batch, say: a single worker runs on the main thread) reaches us as Bytewax's
        # panic turned into a BytewaxRuntimeError: the stop is still the signal's.
        if (
            self.signum is not None
            and exc is not None
            and not isinstance(exc, KeyboardInterrupt)
            and in_chain(exc, KeyboardInterrupt) is not None
        ):
            raise KeyboardInterrupt(signal.Signals(self.signum).name) from None

    def force_exit(self, message: str, *args: object) -> None:
        """Log ``message`` as an error and leave the process now with :data:`EXIT_FORCED`."""
        log.error(message, *args, extra={"op": "run.stop", "exit": EXIT_FORCED})
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(EXIT_FORCED)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            self.force_exit(
                "%s: second signal (%s) while stopping: exiting now; the next run resumes "
                "from the last snapshot",
                self._who,
                name,
            )
        self.signum = signum
        self.started = time.monotonic()
        log.warning(
            "%s received: %s stops its workers and exits within %.0f s; the next run "
            "resumes from the last snapshot",
            name,
            self._who,
            self.stop_seconds,
            extra={"op": "run.stop", "signal": name},
        )
        threading.Thread(target=self._deadline, name="igflow-stop", daemon=True).start()
        # Bytewax's main thread checks for signals every millisecond: an exception from the
        # handler makes it stop the workers and return it from cli_main.
        raise KeyboardInterrupt(name)

    def _deadline(self) -> None:
        # Not cancelled when the run returns: the interpreter's exit (a non-daemon thread, an
        # atexit hook) is under the same bound.
        time.sleep(self.stop_seconds)
        self.force_exit(
            "%s did not stop within %.0f s of %s (Bytewax waits for a peer process that "
            "has not stopped, or a sink's close blocked): exiting with status %d; the next "
            "run resumes from the last snapshot",
            self._who,
            self.stop_seconds,
            signal.Signals(self.signum or signal.SIGINT).name,
            EXIT_FORCED,
        )

    def _watch_peers(self) -> None:
        peers = len(self.addresses) - 1
        connected = False
        broken_since: float | None = None
        while not self._done.wait(_POLL_S):
            try:
                states = cluster_socket_states(self.addresses, self.process_id)
            except (OSError, RuntimeError) as exc:
                log.info("peer check off: %s", exc, extra={"op": "run.stop"})
                return
            established = states.count("ESTABLISHED")
            if not connected:
                connected = established >= peers
                continue
            if established >= peers:
                broken_since = None
                continue
            now = time.monotonic()
            broken_since = broken_since or now
            if now - broken_since >= self.stop_seconds:
                self.force_exit(
                    "%s: %d of its %d peer process(es) closed their cluster connection "
                    "(stopped, crashed or killed) %.0f s ago and this process cannot go on "
                    "without them: exiting with status %d; restart every process of the "
                    "cluster to resume from the last snapshot",
                    self._who,
                    peers - established,
                    peers,
                    now - broken_since,
                    EXIT_FORCED,
                )
