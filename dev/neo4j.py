"""Neo4j Community (the server, with its Bolt connector) on the configured JDK.

The jars come from Maven Central (``dev/maven/neo4j/pom.xml``, see :mod:`dev.jvm`); the
process is ``org.neo4j.server.CommunityEntryPoint`` with ``<state>/neo4j`` as its home and a
``conf/neo4j.conf`` written here on every start. Databases live in ``<state>/neo4j/data``,
Neo4j's own logs in ``<state>/neo4j/logs`` (``neo4j.log``, ``debug.log``). Bolt only, on
127.0.0.1; the HTTP connectors are off.

Authentication stays on. Community Edition has one user, ``neo4j``, whose initial password
``neo4j`` must be changed before it can do anything: on first start the stack changes it to
``IGFLOW_NEO4J_PASSWORD`` over Bolt (``ALTER CURRENT USER SET PASSWORD``), as a user would.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import neo4j
from neo4j import GraphDatabase, TrustCustomCAs

from dev import config, jvm, procs, tls
from dev.config import StackConfig
from dev.errors import StackError
from dev.service import PROBE_TIMEOUT_S, Port, Service

__all__ = ["HEAP_INITIAL", "HEAP_MAX", "PAGE_CACHE", "Neo4j", "driver_tls"]

#: The JVM heap, initial and maximum (docker-compose.yml's ``NEO4J_server_memory_heap_*`` match
#: them). A fixed 1 GB halved G1's CPU under the graph sink's writes but cost Neo4j more CPU per
#: record in the flow with every store: measured, not adopted (DEVELOPERS.md, "Neo4j's heap").
HEAP_INITIAL = "128m"
HEAP_MAX = "512m"
#: The page cache, in neo4j.conf, outside the heap.
PAGE_CACHE = "128m"

#: Heap, and what Neo4j's own launcher adds for JDK 17 (netty and the page cache reach into
#: java.nio).
JVM_OPTIONS = (
    f"-Xms{HEAP_INITIAL}",
    f"-Xmx{HEAP_MAX}",
    "-XX:+UseG1GC",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+DisableExplicitGC",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "-Djava.awt.headless=true",
)
_INITIAL_PASSWORD = "neo4j"


def _conf(cfg: StackConfig, home: Path) -> str:
    bolt = f"127.0.0.1:{cfg.bolt_port}"
    lines = {
        "server.default_listen_address": "127.0.0.1",
        "server.bolt.listen_address": bolt,
        "server.bolt.advertised_address": bolt,
        "server.http.enabled": "false",
        "server.https.enabled": "false",
        "server.directories.data": str(home / "data"),
        "server.directories.logs": str(home / "logs"),
        "server.memory.pagecache.size": PAGE_CACHE,
        # Keep the transaction logs of a test machine small (the default keeps 2 days).
        "db.tx_log.rotation.retention_policy": "256M size",
        "dbms.usage_report.enabled": "false",
    }
    if cfg.tls:
        # Bolt over TLS only; clients are not asked for certificates.
        lines |= {
            "server.bolt.tls_level": "REQUIRED",
            "dbms.ssl.policy.bolt.enabled": "true",
            "dbms.ssl.policy.bolt.base_directory": str(home / "certificates" / "bolt"),
            "dbms.ssl.policy.bolt.private_key": tls.KEY_FILE,
            "dbms.ssl.policy.bolt.public_certificate": tls.CERT_FILE,
            "dbms.ssl.policy.bolt.client_auth": "NONE",
        }
    else:
        lines["server.bolt.tls_level"] = "DISABLED"
    return "".join(f"{k}={v}\n" for k, v in lines.items())


class Neo4j(Service):
    """Neo4j Community over Bolt (see the module docstring)."""

    name = "neo4j"

    def ports(self, cfg: StackConfig) -> list[Port]:
        return [Port(cfg.bolt_port, config.ENV_BOLT)]

    def prepare(self, cfg: StackConfig) -> None:
        super().prepare(cfg)
        if cfg.neo4j_user != "neo4j":
            msg = (
                f"neo4j: {config.ENV_NEO4J_USER}={cfg.neo4j_user!r}, but Neo4j Community's "
                "only user is 'neo4j'"
            )
            raise StackError(msg)
        if len(cfg.neo4j_password) < 8 or cfg.neo4j_password == _INITIAL_PASSWORD:
            msg = (
                f"neo4j: {config.ENV_NEO4J_PASSWORD} must have at least 8 characters and "
                "differ from the initial 'neo4j' (Neo4j refuses others)"
            )
            raise StackError(msg)
        jvm.java(cfg)
        jvm.classpath(cfg, "neo4j")
        home = self.workdir(cfg)
        (home / "conf").mkdir(exist_ok=True)
        (home / "conf" / "neo4j.conf").write_text(_conf(cfg, home))
        if cfg.tls:
            certs = home / "certificates" / "bolt"
            for sub in ("trusted", "revoked"):
                (certs / sub).mkdir(parents=True, exist_ok=True)
            for name in (tls.CERT_FILE, tls.KEY_FILE):
                shutil.copyfile(cfg.tls_dir / name, certs / name)
            (certs / tls.KEY_FILE).chmod(0o600)

    def command(self, cfg: StackConfig) -> list[str]:
        home = self.workdir(cfg)
        return [
            str(jvm.java(cfg)),
            *JVM_OPTIONS,
            jvm.classpath_args(cfg, "neo4j"),
            "org.neo4j.server.CommunityEntryPoint",
            f"--home-dir={home}",
            f"--config-dir={home / 'conf'}",
        ]

    def accepting(self, cfg: StackConfig) -> bool:
        """Bolt answers a log-in, rightly or not (one failed attempt at most on first start:
        Neo4j locks a user out for a while after three)."""
        if not procs.tcp_accepts(cfg.bolt_port, timeout_s=PROBE_TIMEOUT_S):
            return False
        try:
            self._query_ok(cfg, cfg.neo4j_password)
        except neo4j.exceptions.AuthError:
            return True
        return True

    def provision(self, cfg: StackConfig) -> None:
        """Change the initial password on first start (a no-op once it is set)."""
        try:
            self._query_ok(cfg, cfg.neo4j_password)
        except neo4j.exceptions.AuthError:
            pass
        else:
            return
        uri = f"bolt://127.0.0.1:{cfg.bolt_port}"
        try:
            with GraphDatabase.driver(
                uri, auth=("neo4j", _INITIAL_PASSWORD), **driver_tls(cfg)
            ) as driver:
                driver.execute_query(
                    "ALTER CURRENT USER SET PASSWORD FROM $old TO $new",
                    old=_INITIAL_PASSWORD,
                    new=cfg.neo4j_password,
                    database_="system",
                )
        except neo4j.exceptions.AuthError:
            msg = (
                f"neo4j: neither {config.ENV_NEO4J_PASSWORD} nor the initial password is "
                f"accepted; the database in {self.workdir(cfg) / 'data'} has another one "
                "(set that, or `make clean`)"
            )
            raise StackError(msg) from None

    def is_ready(self, cfg: StackConfig) -> bool:
        try:
            return self._query_ok(cfg, cfg.neo4j_password)
        except neo4j.exceptions.AuthError:
            return False

    def _query_ok(self, cfg: StackConfig, password: str) -> bool:
        """Whether ``RETURN 1`` runs on the default database with these credentials; raises
        the driver's ``AuthError`` if they are refused."""
        uri = f"bolt://127.0.0.1:{cfg.bolt_port}"
        with GraphDatabase.driver(
            uri,
            auth=(cfg.neo4j_user, password),
            connection_timeout=PROBE_TIMEOUT_S,
            **driver_tls(cfg),
        ) as driver:
            records, _, _ = driver.execute_query("RETURN 1 AS one")
            return bool(records and records[0]["one"] == 1)


def driver_tls(cfg: StackConfig) -> dict[str, Any]:
    """The Bolt driver's TLS options for this stack: encrypted and verified against the
    stack's CA with TLS on, none without."""
    if not cfg.tls:
        return {}
    return {
        "encrypted": True,
        "trusted_certificates": TrustCustomCAs(str(cfg.tls_dir / tls.CA_FILE)),
    }
