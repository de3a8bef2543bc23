"""``--processes N``: a cluster of N processes on this host, forked after the flow's imports.

Python runs one worker thread at a time (the GIL), so ``-w 2`` in one process shares one core's
worth of Python between its workers; a cluster of processes (``-i/-a``) does not. Started as N
separate commands, each process pays the whole start-up, whose CPU is mostly imports (pyiceberg,
SQLAlchemy, pyarrow, pydantic, Bytewax: ~0.9 s of the ~1.4 s of a one-process run here), and on
a machine with as many cores as processes those imports compete with each other and with the
stack (session 18: a 2-process run started in 2.6 s against 1.4 s). Here the parent imports once
and forks: each child inherits the imported modules (copy-on-write pages) and goes straight to
building its part of the flow.

The children:
- are process 0 … N-1 of a cluster on loopback addresses picked here (free ports, each bound and
  released just before the fork: another program could take one in between, and the cluster
  would then fail at its start, as with ``-a``);
- run in their own process group, so a terminal's Ctrl-C reaches the parent only, which passes
  each SIGINT or SIGTERM on to every child once (a child's second signal exits it at once, as a
  lone ``igflow run``'s does); and they get SIGTERM if the parent dies (``PR_SET_PDEATHSIG``,
  Linux), so a killed parent leaves no orphan flow behind;
- exit with the status a lone process would (:func:`igflow.runner.run`); the parent returns the
  first failing child's (in process order), 128 + the signal for a child killed by one, else 0.

Forking is safe here because nothing but the main thread runs Python at the fork: the imports
start no Python thread (pyarrow's jemalloc starts a background thread, and jemalloc handles a
fork), and the parent opens no connection (no Kafka, catalog or store client) before it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from core.cluster import Cluster

__all__ = ["exit_status", "free_loopback_addresses", "run_forked", "unsafe_threads", "write_line"]

log = logging.getLogger(__name__)

#: ``prctl(PR_SET_PDEATHSIG, …)`` (linux/prctl.h).
_PR_SET_PDEATHSIG = 1
#: What the parent passes on to its children.
_FORWARDED = (signal.SIGINT, signal.SIGTERM)


def write_line(text: str) -> None:
    """``text`` and its newline on standard output in one write, flushed.

    A cluster's forked processes share their parent's standard output. ``print`` writes the
    text and the newline separately when the stream is unbuffered (``PYTHONUNBUFFERED``), so
    two processes' report lines could come out as one line holding both and an empty one (a
    CI run did: the ``--processes 2`` replay's reports). One write of a line up to
    ``PIPE_BUF`` (4,096 bytes) to a pipe is atomic: no other process's output comes between a
    line and its newline."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def free_loopback_addresses(count: int) -> tuple[str, ...]:
    """``count`` loopback ``host:port`` addresses whose ports were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            sockets.append(s)
            s.bind(("127.0.0.1", 0))
        return tuple(f"127.0.0.1:{s.getsockname()[1]}" for s in sockets)
    finally:
        for s in sockets:
            s.close()


def exit_status(wait_status: int) -> int:
    """A child's exit status as a shell reports it: its code, or 128 + the signal that killed
    it."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _child(
    i: int,
    processes: int,
    addresses: tuple[str, ...],
    parent: int,
    handlers: dict[signal.Signals, Any],
    child: Callable[[Cluster], int],
) -> NoReturn:
    status = 1
    try:
        for s, handler in handlers.items():
            if handler is not None:  # None: not set from Python; Bytewax's run sets its own
                signal.signal(s, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
        os.setpgid(0, 0)
        _die_with_parent()
        if os.getppid() != parent:  # the parent died before the prctl
            os._exit(128 + signal.SIGTERM)
        status = child(Cluster(i if processes > 1 else None, addresses))
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("process %d of %d failed", i, processes)
    finally:
        with contextlib.suppress(BaseException):  # nothing may keep it from exiting here
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)


def unsafe_threads(proc_self: Path = Path("/proc/self")) -> list[str]:
    """The threads that make a fork unsafe now: any Python thread but this one, and
    librdkafka's (a Kafka client not closed: its threads would be missing in a child, and a
    child that freed the client would wait for them forever). Others (jemalloc's background
    thread, a BLAS pool) handle a fork or are idle."""
    found = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    with contextlib.suppress(OSError):
        for task in (proc_self / "task").iterdir():
            with contextlib.suppress(OSError):
                name = (task / "comm").read_text().strip()
                if name.startswith("rdk:"):
                    found.append(name)
    return found


def run_forked(processes: int, child: Callable[[Cluster], int]) -> int:
    """Fork ``processes`` children, each running ``child(Cluster(i, addresses))`` and exiting
    with what it returns; wait for them all; the cluster's exit status (the module's text).
    Refuses (``RuntimeError``) while :func:`unsafe_threads` finds any."""
    if processes < 1:
        msg = f"processes must be at least 1, got {processes}"
        raise ValueError(msg)
    threads = unsafe_threads()
    if threads:
        msg = f"cannot fork the cluster's processes while these threads run: {threads}"
        raise RuntimeError(msg)
    addresses = free_loopback_addresses(processes) if processes > 1 else ()
    parent = os.getpid()
    pids: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    # The handler before the forks, and the signals blocked until every child is forked: a
    # signal in between is then passed on to all of them (a signal that came before the handler
    # would have been lost where the parent inherited SIG_IGN, or would have killed the parent).
    previous = {s: signal.signal(s, forward) for s in _FORWARDED}
    signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    # The imported modules out of the collector's reach (the Python docs' advice for a fork
    # without exec): a child's collections then never write to the parent's objects' pages,
    # which the child would otherwise copy one by one (copy on write).
    gc.freeze()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        for i in range(processes):
            pid = os.fork()
            if pid == 0:  # the child: never returns
                _child(i, processes, addresses, parent, previous, child)
            pids.append(pid)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
    try:
        statuses: dict[int, int] = {}
        while len(statuses) < len(pids):
            pid, wait_status = os.wait()
            if pid in pids:
                statuses[pid] = exit_status(wait_status)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    failed = [(i, statuses[pid]) for i, pid in enumerate(pids) if statuses[pid] != 0]
    for i, status in failed:
        log.warning("process %d of %d exited with status %d", i, processes, status)
    return failed[0][1] if failed else 0
