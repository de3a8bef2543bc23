"""Stack configuration, read once from the environment into an immutable value.

Only :meth:`StackConfig.from_env` looks at the environment; everything else in :mod:`dev`
receives the resulting :class:`StackConfig` explicitly.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from dev.errors import StackError

#: The checkout this package runs from, or ``None`` when it is installed (a wheel): then
#: ``__file__``'s grandparent is site-packages' folder, nothing of the project's.
_PARENT = Path(__file__).resolve().parents[1]
REPO_ROOT: Path | None = _PARENT if (_PARENT / "pyproject.toml").is_file() else None

# Environment variable names shared with the application, and their defaults.
ENV_STACK_DIR = "IGFLOW_STACK_DIR"
ENV_STACK_TIMEOUT = "IGFLOW_STACK_TIMEOUT"
ENV_KAFKA = "IGFLOW_KAFKA_BOOTSTRAP"
ENV_POSTGRES = "IGFLOW_POSTGRES_DSN"
ENV_REDIS = "IGFLOW_REDIS_URL"
ENV_FALKORDB = "IGFLOW_FALKORDB_PORT"
ENV_BOLT = "IGFLOW_NEO4J_URI"
ENV_REGISTRY = "IGFLOW_SCHEMA_REGISTRY_URL"
ENV_KAFKA_CONTROLLER = "IGFLOW_KAFKA_CONTROLLER_PORT"
ENV_NEO4J_USER = "IGFLOW_NEO4J_USER"
ENV_NEO4J_PASSWORD = "IGFLOW_NEO4J_PASSWORD"
#: Prometheus's HTTP port (it scrapes the flow's and the API's metrics, see dev/prometheus.py).
ENV_PROMETHEUS = "IGFLOW_PROMETHEUS_PORT"
#: Which graph database the stack runs (see GRAPHS).
ENV_GRAPH = "IGFLOW_STACK_GRAPH"
#: The JDK that runs the JVM products (Kafka 4.1 and Neo4j 5.26 both run on 17).
ENV_JAVA_HOME = "IGFLOW_STACK_JAVA_HOME"
#: TLS on every hop (the application's ``tls.enabled`` setting, read here too): the stack makes
#: its CA and serves Postgres, Redis, Kafka, Bolt and the registry over TLS only (dev/tls.py).
ENV_TLS = "IGFLOW_TLS_ENABLED"
#: The application's settings file (``core/settings.py``): its ``[tls] enabled`` is the same switch
#: when ``IGFLOW_TLS_ENABLED`` is unset, so the stack and the engine agree on the opt-out.
ENV_CONFIG = "IGFLOW_CONFIG"

#: ``neo4j``: Neo4j Community from Maven Central; ``falkordb``: the FalkorDB stand-in.
GRAPHS = ("neo4j", "falkordb")

DEFAULTS: Mapping[str, str] = {
    ENV_KAFKA: "127.0.0.1:19092",
    ENV_POSTGRES: "postgresql://igflow:igflow@127.0.0.1:15432/igflow",
    ENV_REDIS: "redis://127.0.0.1:16379/0",
    ENV_FALKORDB: "16380",
    ENV_BOLT: "bolt://127.0.0.1:17687",
    ENV_REGISTRY: "http://127.0.0.1:18081",
    ENV_KAFKA_CONTROLLER: "19093",
    ENV_PROMETHEUS: "19090",
    # Neo4j's only user in Community Edition is its admin, ``neo4j``; the stack sets this
    # password on first start (docker-compose.yml's NEO4J_AUTH uses the same).
    ENV_NEO4J_USER: "neo4j",
    ENV_NEO4J_PASSWORD: "igflow-neo4j",
    ENV_GRAPH: "neo4j",
    ENV_JAVA_HOME: "/usr/lib/jvm/java-17-openjdk-amd64",
    ENV_TLS: "true",
}
#: What pydantic reads as true for a boolean (``tls.enabled``), lower-cased.
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})

DEFAULT_TIMEOUT_S = 60.0
#: FalkorDB's Bolt listener rejects ports from 32768 up.
MAX_BOLT_PORT = 32767


@dataclasses.dataclass(frozen=True)
class PostgresDsn:
    """The parts of ``IGFLOW_POSTGRES_DSN`` the stack needs to provision role and database."""

    dsn: str
    user: str
    password: str
    dbname: str
    port: int


@dataclasses.dataclass(frozen=True)
class StackConfig:
    """Everything the stack needs to know; all services bind 127.0.0.1.

    Use :func:`dataclasses.replace` to derive variants (for example in tests).
    """

    #: The checkout, or ``None`` when the package is installed from a wheel.
    repo_root: Path | None
    state_dir: Path
    timeout_s: float
    kafka_port: int
    postgres: PostgresDsn
    redis_port: int
    falkordb_port: int
    bolt_port: int
    registry_port: int
    kafka_controller_port: int = 19093
    prometheus_port: int = 19090
    graph: str = "neo4j"
    neo4j_user: str = "neo4j"
    neo4j_password: str = "igflow-neo4j"
    java_home: Path = Path("/usr/lib/jvm/java-17-openjdk-amd64")
    #: Serve every hop over TLS only, with the CA and certificate of :attr:`tls_dir`.
    tls: bool = True
    #: The loopback ports Prometheus scrapes: the flow's, the API's and the probe's
    #: (dev/prometheus.py; tests that run their own Prometheus replace them with free ones).
    scrape_ports: tuple[int, int, int] = (9464, 9465, 9466)

    @property
    def tls_dir(self) -> Path:
        """``<state>/tls``: the stack's CA and server certificate (dev/tls.py)."""
        return self.state_dir / "tls"

    @property
    def logs_dir(self) -> Path:
        """``<state>/logs``: one ``<service>.log`` per service, appended to on every start."""
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        """``<state>/run``: one ``<service>.pid`` per service started by us."""
        return self.state_dir / "run"

    def data_dir(self, service: str) -> Path:
        """``<state>/<service>``: the service's working directory and data."""
        return self.state_dir / service

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> StackConfig:
        """Parse ``environ`` (normally ``os.environ``); raises :class:`StackError` if invalid."""

        def get(name: str) -> str:
            return environ.get(name) or DEFAULTS[name]

        state = environ.get(ENV_STACK_DIR) or str(default_state_dir())
        timeout_raw = environ.get(ENV_STACK_TIMEOUT) or str(DEFAULT_TIMEOUT_S)
        try:
            timeout_s = float(timeout_raw)
        except ValueError:
            msg = f"{ENV_STACK_TIMEOUT}={timeout_raw!r} is not a number of seconds"
            raise StackError(msg) from None
        bolt_port = _url_port(ENV_BOLT, get(ENV_BOLT))
        graph = get(ENV_GRAPH)
        if graph not in GRAPHS:
            msg = f"{ENV_GRAPH}={graph!r}: choose one of {', '.join(GRAPHS)}"
            raise StackError(msg)
        if graph == "falkordb" and bolt_port > MAX_BOLT_PORT:
            msg = (
                f"{ENV_BOLT} port {bolt_port} is too high: FalkorDB's Bolt listener needs a "
                f"port <= {MAX_BOLT_PORT}"
            )
            raise StackError(msg)
        tls_on = _tls_switch(environ)
        return cls(
            repo_root=REPO_ROOT,
            state_dir=Path(state).resolve(),
            timeout_s=timeout_s,
            kafka_port=_bootstrap_port(get(ENV_KAFKA)),
            postgres=_postgres_dsn(get(ENV_POSTGRES)),
            redis_port=_url_port(ENV_REDIS, get(ENV_REDIS)),
            falkordb_port=_port(ENV_FALKORDB, get(ENV_FALKORDB)),
            bolt_port=bolt_port,
            registry_port=_url_port(ENV_REGISTRY, get(ENV_REGISTRY)),
            kafka_controller_port=_port(ENV_KAFKA_CONTROLLER, get(ENV_KAFKA_CONTROLLER)),
            prometheus_port=_port(ENV_PROMETHEUS, get(ENV_PROMETHEUS)),
            graph=graph,
            neo4j_user=get(ENV_NEO4J_USER),
            neo4j_password=environ.get(ENV_NEO4J_PASSWORD, DEFAULTS[ENV_NEO4J_PASSWORD]),
            java_home=Path(get(ENV_JAVA_HOME)),
            tls=tls_on,
        )


def _tls_switch(environ: Mapping[str, str]) -> bool:
    """TLS on or off, read like the settings read ``tls.enabled``: ``IGFLOW_TLS_ENABLED``, else
    ``[tls] enabled`` in the ``IGFLOW_CONFIG`` file, else on (the default)."""
    raw: object = environ.get(ENV_TLS)
    where = ENV_TLS
    config = environ.get(ENV_CONFIG)
    if not raw and config:
        try:
            data = tomllib.loads(Path(config).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            msg = f"{ENV_CONFIG}={config}: cannot read settings file: {exc}"
            raise StackError(msg) from exc
        section = data.get("tls")
        raw = section.get("enabled") if isinstance(section, dict) else None
        where = f"[tls] enabled in {config}"
    if raw is None or raw == "":
        raw = DEFAULTS[ENV_TLS]
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text not in _TRUE | _FALSE:
        msg = f"{where}={raw!r} is not a boolean (true or false)"
        raise StackError(msg)
    return text in _TRUE


def default_state_dir() -> Path:
    """Where the stack keeps its state when ``IGFLOW_STACK_DIR`` is unset: the checkout's
    ``.stack`` (whatever the current directory), or ``./.stack`` when installed from a wheel,
    which is also where the engine's settings look by default (``Settings.stack_dir``)."""
    return (REPO_ROOT or Path.cwd()) / ".stack"


def _port(var: str, raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        msg = f"{var}: {raw!r} is not a valid TCP port"
        raise StackError(msg)
    return port


def _url_port(var: str, url: str) -> int:
    try:
        port = urlsplit(url).port
    except ValueError:
        port = None
    if port is None:
        msg = f"{var}={url!r} must contain an explicit port"
        raise StackError(msg)
    return _port(var, str(port))


def _bootstrap_port(bootstrap: str) -> int:
    """Port of the first ``host:port`` of a Kafka bootstrap list."""
    first = bootstrap.split(",")[0].strip()
    return _url_port(ENV_KAFKA, f"kafka://{first}")


def _postgres_dsn(dsn: str) -> PostgresDsn:
    parts = urlsplit(dsn)
    dbname = parts.path.lstrip("/")
    if parts.scheme not in {"postgresql", "postgres"} or not parts.username or not dbname:
        msg = f"{ENV_POSTGRES}={dsn!r} must look like postgresql://USER:PASSWORD@HOST:PORT/DB"
        raise StackError(msg)
    return PostgresDsn(
        dsn=dsn,
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        dbname=unquote(dbname),
        port=_url_port(ENV_POSTGRES, dsn),
    )
