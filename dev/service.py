"""The service abstraction of the local stack.

A :class:`Service` says how to prepare its data directory, which command line runs it in
the foreground (the stack detaches it), and how to probe readiness. The generic
start/stop/status logic lives in :mod:`dev.stack`; the concrete services are listed in
:mod:`dev.services`.

Every service runs with :meth:`Service.workdir` as working directory; that is how
:func:`dev.procs.runs_in` recognises our own processes.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import stat
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, NamedTuple

from dev.config import StackConfig
from dev.errors import StackError

PROBE_TIMEOUT_S = 1.0
INSTALL_HINT = (
    "run `apt-get install postgresql-15 redis-server prometheus` "
    "(or `python -m dev install-system`)"
)


class Port(NamedTuple):
    """A TCP port a service listens on, and the environment variable that chooses it."""

    number: int
    env_var: str


class Service(ABC):
    """One service of the stack. Subclasses are stateless; all input comes from ``cfg``."""

    name: ClassVar[str]

    @abstractmethod
    def ports(self, cfg: StackConfig) -> list[Port]:
        """The ports the service binds on 127.0.0.1; the first is shown in status tables."""

    @abstractmethod
    def command(self, cfg: StackConfig) -> list[str]:
        """Argv of the foreground server process."""

    @abstractmethod
    def is_ready(self, cfg: StackConfig) -> bool:
        """True if the service answers clients as the application will use it.

        Must return within a few seconds and may raise (counted as not ready).
        """

    def workdir(self, cfg: StackConfig) -> Path:
        """Working directory of the server process (also identifies it as ours)."""
        return cfg.data_dir(self.name)

    def prepare(self, cfg: StackConfig) -> None:
        """Check prerequisites and create data directories; idempotent. Raises StackError."""
        self.workdir(cfg).mkdir(parents=True, exist_ok=True)

    def run_as(self) -> str | None:
        """OS user to run the server as, or None for the current user."""
        return None

    def accepting(self, cfg: StackConfig) -> bool:
        """True once the server accepts connections, before :meth:`provision`."""
        return self.is_ready(cfg)

    def provision(self, cfg: StackConfig) -> None:
        """Idempotently create what clients expect (roles, databases) once accepting."""
        return None

    def graceful_stop(self, cfg: StackConfig, pid: int) -> None:
        """Ask the server ``pid`` to shut down; default SIGTERM. Need not wait."""
        os.kill(pid, signal.SIGTERM)


def wheel_file(package: str, *parts: str, extra: str = "stack") -> Path:
    """A file shipped inside an installed wheel's package directory, made executable."""
    spec = importlib.util.find_spec(package)
    locations = spec.submodule_search_locations if spec else None
    if not locations:
        msg = (
            f"Python package {package!r} is not installed in {sys.executable}; "
            f"run `pip install -e '.[{extra}]'`"
        )
        raise StackError(msg)
    path = Path(next(iter(locations)), *parts)
    if not path.is_file():
        msg = f"{path} is missing from package {package!r}; reinstall it"
        raise StackError(msg)
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path
