"""PostgreSQL 15 from Debian as a stack service."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import time
from pathlib import Path

import psycopg
from psycopg import sql

from core import tls as tls_forms
from dev import config, tls
from dev.config import StackConfig
from dev.errors import StackError
from dev.procs import is_alive, pids_in, read_pid, tail
from dev.service import INSTALL_HINT, Port, Service

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class Postgres(Service):
    """Debian's PostgreSQL 15, one cluster in ``<state>/postgres/data``, TCP on 127.0.0.1.

    Local (unix socket, in ``<state>/postgres/socket``) connections are trusted and used
    for provisioning as superuser ``postgres``; TCP connections need a password.
    """

    name = "postgres"

    def ports(self, cfg: StackConfig) -> list[Port]:
        return [Port(cfg.postgres.port, config.ENV_POSTGRES)]

    def workdir(self, cfg: StackConfig) -> Path:
        return cfg.data_dir(self.name) / "data"

    def socket_dir(self, cfg: StackConfig) -> Path:
        """Directory holding the unix socket, owned by the server's user."""
        return cfg.data_dir(self.name) / "socket"

    def run_as(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    def _as_server_user(self, argv: list[str]) -> list[str]:
        user = self.run_as()
        return ["runuser", "-u", user, "--", *argv] if user else argv

    def prepare(self, cfg: StackConfig) -> None:
        if not (PG_BIN / "postgres").is_file():
            msg = f"postgres: {PG_BIN}/postgres not found; {INSTALL_HINT}"
            raise StackError(msg)
        base, sock = cfg.data_dir(self.name), self.socket_dir(cfg)
        sock_path = sock / f".s.PGSQL.{cfg.postgres.port}"
        if len(str(sock_path)) > 107:
            msg = f"postgres: socket path {sock_path} is too long; use a shorter IGFLOW_STACK_DIR"
            raise StackError(msg)
        sock.mkdir(parents=True, exist_ok=True)
        cfg.logs_dir.mkdir(parents=True, exist_ok=True)
        user = self.run_as()
        if user:
            self._check_traversable(base.parent, user)
            for path in (base, sock):
                os.chown(path, *_uid_gid(user))
        data = self.workdir(cfg)
        if (data / "PG_VERSION").is_file():
            self._clear_stale_locks(data, sock_path, cfg.timeout_s)
            self._prepare_tls(cfg)
            return
        initdb = self._as_server_user(
            [
                str(PG_BIN / "initdb"),
                "--pgdata",
                str(data),
                "--username=postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ]
        )
        log = cfg.logs_dir / f"{self.name}.log"
        with log.open("ab") as out:
            done = subprocess.run(initdb, stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            msg = f"postgres: initdb failed ({done.returncode}); last lines of {log}:\n{tail(log)}"
            raise StackError(msg)
        self._prepare_tls(cfg)

    def _tls_dir(self, cfg: StackConfig) -> Path:
        """The server's copy of the certificate and key: Postgres refuses a key that is not
        0600 and owned by the server's user."""
        return cfg.data_dir(self.name) / "tls"

    def _prepare_tls(self, cfg: StackConfig) -> None:
        """With TLS on, copy the certificate and key for the server and let TCP clients in
        over TLS only (``hostssl`` rules); with TLS off, ``host`` rules again."""
        _set_host_rules(self.workdir(cfg) / "pg_hba.conf", ssl_only=cfg.tls)
        if not cfg.tls:
            return
        own = self._tls_dir(cfg)
        own.mkdir(mode=0o700, exist_ok=True)
        for name in (tls.CERT_FILE, tls.KEY_FILE):
            (own / name).write_bytes((cfg.tls_dir / name).read_bytes())
            (own / name).chmod(0o600)
        user = self.run_as()
        if user:
            for path in (own, own / tls.CERT_FILE, own / tls.KEY_FILE):
                os.chown(path, *_uid_gid(user))

    @staticmethod
    def _clear_stale_locks(data: Path, socket: Path, timeout_s: float) -> None:
        """Remove the lock files of a killed server, once its backends are gone.

        Without this a restart right after ``kill -9`` fails for a few seconds: the dead
        postmaster stays a zombie (so postgres thinks it still runs) and its orphaned
        backends (each in its own session, cwd = data dir) take a moment to exit.
        """
        lock = data / "postmaster.pid"
        pid = read_pid(lock)
        if pid is None or is_alive(pid):
            return
        deadline = time.monotonic() + timeout_s
        while pids_in(data) and time.monotonic() < deadline:
            time.sleep(0.1)
        lock.unlink(missing_ok=True)
        socket.with_name(f"{socket.name}.lock").unlink(missing_ok=True)

    @staticmethod
    def _check_traversable(directory: Path, user: str) -> None:
        """The server user must be able to reach the state dir through all its parents."""
        uid, _ = _uid_gid(user)
        blocked = [
            str(p)
            for p in (directory, *directory.parents)
            if p.stat().st_uid != uid and not p.stat().st_mode & stat.S_IXOTH
        ]
        if blocked:
            msg = (
                f"postgres: user {user!r} cannot traverse {', '.join(blocked)}; run "
                f"`chmod o+x` on them or set {config.ENV_STACK_DIR} to an accessible directory"
            )
            raise StackError(msg)

    def command(self, cfg: StackConfig) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_dir(cfg)),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        if cfg.tls:
            settings["ssl"] = "on"
            settings["ssl_cert_file"] = str(self._tls_dir(cfg) / tls.CERT_FILE)
            settings["ssl_key_file"] = str(self._tls_dir(cfg) / tls.KEY_FILE)
            settings["ssl_min_protocol_version"] = "TLSv1.2"
        argv = [str(PG_BIN / "postgres"), "-D", str(self.workdir(cfg))]
        argv += ["-p", str(cfg.postgres.port)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def accepting(self, cfg: StackConfig) -> bool:
        argv = [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1"]
        argv += ["-p", str(cfg.postgres.port), "-t", "1"]
        return subprocess.run(argv, check=False).returncode == 0

    def provision(self, cfg: StackConfig) -> None:
        pg = cfg.postgres
        with psycopg.connect(
            host=str(self.socket_dir(cfg)),
            port=pg.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
        ) as conn:
            role, password = sql.Identifier(pg.user), sql.Literal(pg.password)
            # CREATEROLE: migration 0006 creates the API's row-security role (an older stack's
            # role gains it on its next start).
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (pg.user,)).fetchone():
                stmt = sql.SQL("ALTER ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD {}")
            else:
                stmt = sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD {}")
            conn.execute(stmt.format(role, password))
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (pg.dbname,)
            ).fetchone():
                create = sql.SQL("CREATE DATABASE {} OWNER {}")
                conn.execute(create.format(sql.Identifier(pg.dbname), role))

    def is_ready(self, cfg: StackConfig) -> bool:
        if not self.accepting(cfg):
            return False
        with psycopg.connect(client_dsn(cfg), connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    def graceful_stop(self, cfg: StackConfig, pid: int) -> None:
        """``pg_ctl stop -m fast`` (no waiting here; the caller waits and escalates)."""
        argv = [str(PG_BIN / "pg_ctl"), "stop", "-D", str(self.workdir(cfg)), "-m", "fast"]
        subprocess.run(
            self._as_server_user([*argv, "--no-wait"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )


def client_dsn(cfg: StackConfig) -> str:
    """The DSN a client of this stack uses: ``verify-full`` against the stack's CA with TLS on."""
    if cfg.tls:
        return tls_forms.postgres_dsn(cfg.postgres.dsn, str(cfg.tls_dir / tls.CA_FILE))
    return cfg.postgres.dsn


def _set_host_rules(hba: Path, *, ssl_only: bool) -> None:
    """Turn pg_hba.conf's TCP rules into ``hostssl`` (TLS only) or back into ``host``."""
    old, new = ("host", "hostssl") if ssl_only else ("hostssl", "host")
    lines = hba.read_text().splitlines(keepends=True)
    changed = [new + line[len(old) :] if line.split()[:1] == [old] else line for line in lines]
    if changed != lines:
        hba.write_text("".join(changed))


def _uid_gid(user: str) -> tuple[int, int]:
    """uid and primary gid of an OS user; raises StackError if there is no such user."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        msg = f"OS user {user!r} does not exist; {INSTALL_HINT}"
        raise StackError(msg) from None
    return entry.pw_uid, entry.pw_gid
