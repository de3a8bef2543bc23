"""Process plumbing for the dev stack: spawning detached children, pid files, liveness,
ownership, port checks and termination.

Nothing here knows about particular services; :mod:`dev.services` supplies the specifics.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class _Server(subprocess.Popen[bytes]):
    """A stack server this interpreter started: meant to outlive it (its pid file tracks it).

    A plain Popen dropped while its child runs warns "subprocess N is still running"
    (ResourceWarning, an error under pytest's ``filterwarnings``); at the end of a pytest run
    that had restarted Kafka and Neo4j (``test_stack``) their Popens went with the interpreter
    and printed that warning with a traceback. A server still running is what is meant; one
    that has ended is reaped here, as Popen does."""

    def __del__(self) -> None:
        # (no pid: the Popen failed before its child was made; Popen's own __del__ handles it)
        running = getattr(self, "pid", None) is not None and self.returncode is None
        if running and self.poll() is None:
            return
        super().__del__()


# Children spawned by this interpreter, by pid. Keeping the Popen objects alive lets us
# reap them (no zombies when start and stop run in one process, e.g. under pytest).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

POLL_INTERVAL_S = 0.1


def spawn(
    cmd: Sequence[str],
    *,
    cwd: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session, detached from our terminal, output appended to ``log``.

    The child survives our exit (it is not killed by SIGHUP/SIGINT sent to our process
    group). ``user`` switches to that OS user (and its primary group) before exec; only
    valid when running as root.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(tz=dt.UTC).isoformat(timespec="seconds")
    with log.open("ab") as out:
        out.write(f"\n===== {stamp} starting: {shlex.join(cmd)}\n".encode())
        out.flush()
        proc = _Server(
            list(cmd),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user is not None else None,
        )
    _CHILDREN[proc.pid] = proc
    return proc


def read_pid(path: Path) -> int | None:
    """The pid stored in ``path``, or None if the file is missing or garbled."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def write_pid(path: Path, pid: int) -> None:
    """Atomically record ``pid`` in ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(path)


def is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (reaping it if it is our own child)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Field 3 is the state; the command name in field 2 may contain spaces, hence rpartition.
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


def cwd_of(pid: int) -> Path | None:
    """Working directory of ``pid``, or None if it cannot be read (gone, or not permitted)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def runs_in(pid: int, workdir: Path) -> bool:
    """True if ``pid`` is alive and its working directory is ``workdir``.

    Every stack service runs with its data directory as cwd, so this is how we tell our
    process apart from an unrelated one that reused a stale pid.
    """
    return is_alive(pid) and cwd_of(pid) == workdir.resolve()


def pids_in(workdir: Path) -> list[int]:
    """Pids of live processes whose working directory is ``workdir``."""
    target = workdir.resolve()
    pids = (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    return [pid for pid in pids if cwd_of(pid) == target and is_alive(pid)]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if a server could bind ``host:port`` now (no listener, no exclusive binding).

    SO_REUSEADDR is set like servers do, so TIME_WAIT leftovers from a previous run do not
    count as "taken", while listeners (also on 0.0.0.0) and plain bound sockets do.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in {errno.EADDRINUSE, errno.EACCES}:
                return False
            raise
    return True


def tcp_accepts(port: int, host: str = "127.0.0.1", timeout_s: float = 1.0) -> bool:
    """True if a TCP connection to ``host:port`` succeeds; the connection is closed at once."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool],
    *,
    deadline: float,
    alive: Callable[[], bool],
) -> str:
    """Poll ``check`` until it returns True, ``alive`` returns False, or ``deadline``.

    Returns ``"ready"``, ``"died"`` or ``"timeout"``. ``deadline`` is a
    :func:`time.monotonic` value. Exceptions from ``check`` count as "not yet".
    """
    while True:
        try:
            if check():
                return "ready"
        except Exception:
            pass
        if not alive():
            return "died"
        if time.monotonic() >= deadline:
            return "timeout"
        time.sleep(POLL_INTERVAL_S)


def wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for ``pid`` to exit; True if it did."""
    deadline = time.monotonic() + timeout_s
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)
    return True


def terminate(pid: int, *, timeout_s: float, graceful: Callable[[], None] | None = None) -> None:
    """Stop ``pid`` and everything left in its session.

    Runs ``graceful`` (default: SIGTERM to ``pid``), waits up to ``timeout_s``, then
    SIGKILLs the whole process group (``pid`` is a session leader, see :func:`spawn`).
    Returns once ``pid`` is gone. Already-dead pids are fine.
    """
    if is_alive(pid):
        if graceful is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        else:
            graceful()
        wait_gone(pid, timeout_s)
    # Also sweeps stragglers (e.g. worker children) once the leader has exited.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    wait_gone(pid, timeout_s)
    _CHILDREN.pop(pid, None)


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ('' if missing), decoded leniently."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def run_logged(cmd: Sequence[str], *, cwd: Path, log: Path, timeout_s: float = 120.0) -> int:
    """Run ``cmd`` to completion with its output appended to ``log``; its exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(tz=dt.UTC).isoformat(timespec="seconds")
    with log.open("ab") as out:
        out.write(f"\n===== {stamp} running: {shlex.join(cmd)}\n".encode())
        out.flush()
        done = subprocess.run(
            list(cmd),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
        )
    return done.returncode
