"""Start, stop and inspect the local service stack (no Docker).

Contracts:

* :func:`start` is idempotent: a service whose pid file points at a live process running in
  our state dir is left alone (we only wait for it to be ready). It returns once every
  requested service is ready, or raises :class:`~dev.errors.StackError` naming the service
  (port taken by a foreign process, exit during start-up, or not ready within
  ``cfg.timeout_s``; the latter two include the last lines of its log).
* A service already running in the other TLS mode than ``cfg.tls`` (started before TLS became
  the default, or with the other ``IGFLOW_TLS_ENABLED``) is a :class:`~dev.errors.StackError`
  that says to restart, instead of a readiness probe in the wrong mode timing out.
* :func:`stop` stops whatever we started (graceful, then SIGKILL after ``STOP_GRACE_S``),
  in reverse start order, and is idempotent.
* :func:`status` never changes anything.

Layout under ``cfg.state_dir``: ``logs/<service>.log``, ``run/<service>.pid`` and
``run/<service>.tls`` (``on`` or ``off``: the TLS mode it was started in) and ``<service>/``
(working directory and data).
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from dev import procs, tls
from dev.config import ENV_TLS, StackConfig
from dev.errors import StackError
from dev.postgres import PG_BIN
from dev.prometheus import SYSTEM_PROMETHEUS
from dev.service import Service
from dev.services import SERVICES, SYSTEM_REDIS, configured

Report = Callable[[str], None]

STOP_GRACE_S = 10.0
LOG_TAIL_LINES = 20
APT_PACKAGES = ("postgresql-15", "redis-server", "prometheus", "chromium")
#: The headless browser the dashboard's page test drives (tests/integration/test_dashboard.py).
SYSTEM_CHROMIUM = Path("/usr/bin/chromium")


@dataclasses.dataclass(frozen=True)
class ServiceStatus:
    """One row of ``python -m dev status``.

    ``state`` is one of ``ready``, ``not ready`` (our process is up but not answering),
    ``stopped`` or ``port taken`` (not ours, but something else holds one of its ports).
    """

    name: str
    ports: tuple[int, ...]
    pid: int | None
    state: str

    @property
    def ok(self) -> bool:
        """True if the service is running and ready."""
        return self.state == "ready"


def pid_file(cfg: StackConfig, svc: Service) -> Path:
    """Where the pid of ``svc`` is recorded while we run it."""
    return cfg.run_dir / f"{svc.name}.pid"


def tls_mode_file(cfg: StackConfig, svc: Service) -> Path:
    """Where the TLS mode ``svc`` was started in is recorded (``on`` or ``off``)."""
    return cfg.run_dir / f"{svc.name}.tls"


def running_tls_mode(cfg: StackConfig, svc: Service) -> str:
    """``on`` or ``off``: the TLS mode of our running ``svc``. A service started before the
    mode was recorded ran plaintext (TLS was opt-in then), so no record reads ``off``."""
    path = tls_mode_file(cfg, svc)
    return path.read_text(encoding="utf-8").strip() if path.is_file() else "off"


def log_file(cfg: StackConfig, svc: Service) -> Path:
    """The log ``svc`` writes to (appended to across restarts)."""
    return cfg.logs_dir / f"{svc.name}.log"


def our_pid(cfg: StackConfig, svc: Service) -> int | None:
    """The pid of our running instance of ``svc``, or None (a stale pid file is ignored)."""
    pid = procs.read_pid(pid_file(cfg, svc))
    if pid is not None and procs.runs_in(pid, svc.workdir(cfg)):
        return pid
    return None


def select(names: Iterable[str] | None, cfg: StackConfig) -> list[Service]:
    """The named services in start order (for None, those ``cfg`` runs: its graph database,
    see :func:`dev.services.configured`); unknown names raise."""
    if names is None:
        return list(configured(cfg))
    wanted = set(names)
    unknown = wanted - {s.name for s in SERVICES}
    if unknown:
        msg = f"unknown service(s): {', '.join(sorted(unknown))}"
        raise StackError(msg)
    return [s for s in SERVICES if s.name in wanted]


def status(cfg: StackConfig, services: Sequence[Service]) -> list[ServiceStatus]:
    """Current state of each service, in the given order."""
    rows = []
    for svc in services:
        ports = tuple(p.number for p in svc.ports(cfg))
        pid = our_pid(cfg, svc)
        if pid is not None:
            state = "ready" if _probe(svc.is_ready, cfg) else "not ready"
        elif all(procs.port_is_free(p) for p in ports):
            state = "stopped"
        else:
            state = "port taken"
        rows.append(ServiceStatus(svc.name, ports, pid, state))
    return rows


def format_table(rows: Sequence[ServiceStatus]) -> str:
    """A plain-text table with columns service, port, pid, state."""
    cells = [("SERVICE", "PORT", "PID", "STATE")]
    cells += [
        (r.name, ",".join(map(str, r.ports)), "-" if r.pid is None else str(r.pid), r.state)
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def start(cfg: StackConfig, services: Sequence[Service], report: Report = print) -> None:
    """Start ``services`` in order and wait for each to be ready (see module docstring)."""
    for path in (cfg.logs_dir, cfg.run_dir):
        path.mkdir(parents=True, exist_ok=True)
    if cfg.tls:
        tls.ensure(cfg.tls_dir)
    for svc in services:
        began = time.monotonic()
        pid = our_pid(cfg, svc)
        if pid is None:
            pid = _launch(cfg, svc)
            verb = "started"
        else:
            _check_tls_mode(cfg, svc, pid)
            _await_ready(cfg, svc, pid)
            verb = "already running"
        report(f"{svc.name}: {verb} (pid {pid}), ready after {time.monotonic() - began:.1f}s")


def _check_tls_mode(cfg: StackConfig, svc: Service, pid: int) -> None:
    wanted = "on" if cfg.tls else "off"
    running = running_tls_mode(cfg, svc)
    if running != wanted:
        msg = (
            f"{svc.name} (pid {pid}) is running with TLS {running}, but {ENV_TLS} asks for TLS "
            f"{wanted}. Restart the stack in one mode: "
            f"python -m dev stop && python -m dev start (make down && make up)."
        )
        if cfg.tls:
            msg += f" TLS is on by default; {ENV_TLS}=false is the plaintext opt-out."
        raise StackError(msg)


def check_ports_free(cfg: StackConfig, svc: Service) -> None:
    """Raise a StackError naming service, port and env var if a port of ``svc`` is taken."""
    for port in svc.ports(cfg):
        if not procs.port_is_free(port.number):
            msg = (
                f"{svc.name}: port {port.number} is already in use by a process that this "
                f"stack did not start. Stop that process, or choose another port by setting "
                f"{port.env_var}."
            )
            raise StackError(msg)


def _launch(cfg: StackConfig, svc: Service) -> int:
    """Spawn ``svc`` (after the port check and :meth:`Service.prepare`) and await readiness."""
    pidf = pid_file(cfg, svc)
    pidf.unlink(missing_ok=True)
    check_ports_free(cfg, svc)
    svc.prepare(cfg)
    proc = procs.spawn(
        svc.command(cfg), cwd=svc.workdir(cfg), log=log_file(cfg, svc), user=svc.run_as()
    )
    procs.write_pid(pidf, proc.pid)
    tls_mode_file(cfg, svc).write_text("on" if cfg.tls else "off", encoding="utf-8")
    try:
        _await_ready(cfg, svc, proc.pid, proc)
    except StackError:
        procs.terminate(proc.pid, timeout_s=STOP_GRACE_S)
        pidf.unlink(missing_ok=True)
        raise
    return proc.pid


def _await_ready(
    cfg: StackConfig, svc: Service, pid: int, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait for accepting, provision, wait for ready; raise StackError on death or timeout.

    ``proc`` is the Popen of ``pid`` if we just spawned it (gives the exit code).
    """

    def alive() -> bool:
        return procs.is_alive(pid) if proc is None else proc.poll() is None

    deadline = time.monotonic() + cfg.timeout_s
    outcome = procs.wait_until(lambda: svc.accepting(cfg), deadline=deadline, alive=alive)
    if outcome == "ready":
        svc.provision(cfg)
        outcome = procs.wait_until(lambda: svc.is_ready(cfg), deadline=deadline, alive=alive)
    if outcome == "ready":
        return
    log = log_file(cfg, svc)
    if outcome == "timeout":
        what = f"was not ready within {cfg.timeout_s:g}s"
    else:
        code = "" if proc is None else f" with exit code {proc.returncode}"
        what = f"exited during start-up{code}"
    msg = (
        f"{svc.name} {what}. Last {LOG_TAIL_LINES} lines of {log}:\n"
        f"{procs.tail(log, LOG_TAIL_LINES)}"
    )
    raise StackError(msg)


def stop(cfg: StackConfig, services: Sequence[Service], report: Report = print) -> None:
    """Stop ``services`` that we started, in reverse order; idempotent."""
    for svc in reversed(services):
        pidf = pid_file(cfg, svc)
        pid = our_pid(cfg, svc)
        if pid is None:
            note = " (removed stale pid file)" if pidf.exists() else ""
            pidf.unlink(missing_ok=True)
            tls_mode_file(cfg, svc).unlink(missing_ok=True)
            report(f"{svc.name}: not running{note}")
            continue
        began = time.monotonic()
        procs.terminate(
            pid,
            timeout_s=STOP_GRACE_S,
            graceful=functools.partial(svc.graceful_stop, cfg, pid),
        )
        pidf.unlink(missing_ok=True)
        tls_mode_file(cfg, svc).unlink(missing_ok=True)
        report(f"{svc.name}: stopped (pid {pid}) in {time.monotonic() - began:.1f}s")


def install_system(report: Report = print) -> None:
    """``apt-get install -y postgresql-15 redis-server prometheus chromium`` unless all are
    present."""
    present = (PG_BIN / "postgres", SYSTEM_REDIS, SYSTEM_PROMETHEUS, SYSTEM_CHROMIUM)
    if all(path.is_file() for path in present):
        report("postgresql-15, redis-server, prometheus and chromium are already installed")
        return
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", *APT_PACKAGES]):
        report("+ " + " ".join(argv))
        if subprocess.run(argv, check=False).returncode != 0:
            msg = f"`{' '.join(argv)}` failed (are you root?)"
            raise StackError(msg)


def _probe(check: Callable[[StackConfig], bool], cfg: StackConfig) -> bool:
    try:
        return check(cfg)
    except Exception:
        return False
