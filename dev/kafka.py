"""Apache Kafka in KRaft mode, one process that is both broker and controller.

The jars come from Maven Central (``dev/maven/kafka/pom.xml``, see :mod:`dev.jvm`); the
server is ``kafka.Kafka`` with a ``server.properties`` written here on every start (so a
changed port takes effect) and a log directory formatted once by ``kafka.tools.StorageTool``
(what ``kafka-storage.sh format`` runs). Topics, offsets and consumer groups live in
``<state>/kafka/data`` and survive ``python -m dev stop``/``start``.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from pathlib import Path

from confluent_kafka.admin import AdminClient

from core import tls as tls_forms
from dev import config, jvm, procs, tls
from dev.config import StackConfig
from dev.errors import StackError
from dev.service import PROBE_TIMEOUT_S, Port, Service

__all__ = ["Kafka", "client_config"]

#: Heap and GC: a single-node broker for tests needs little, and the machine has two cores.
JVM_OPTIONS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


def _properties(cfg: StackConfig, data: Path, keystore: Path) -> str:
    port, controller = cfg.kafka_port, cfg.kafka_controller_port
    # With TLS the client listener is SSL only (the broker talks to itself over it too); the
    # controller listener stays plaintext on loopback: only this process uses it (one node).
    client = "SSL" if cfg.tls else "PLAINTEXT"
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller}",
        "listeners": f"{client}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"{client}://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": client,
        "listener.security.protocol.map": f"{client}:{client},CONTROLLER:PLAINTEXT",
        "log.dirs": str(data),
        # Topics that `igflow setup` does not create (tests' fresh topics) get 4 partitions,
        # like docker-compose.yml's broker.
        "num.partitions": "4",
        "auto.create.topics.enable": "true",
        # One node: internal topics with one replica, and fewer partitions than the default
        # 50 (each is a file set and a coordinator to load on start).
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "8",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Time-based retention looks at record timestamps; test workloads carry event times
        # far in the past, which would make whole segments eligible for deletion.
        "log.retention.ms": "-1",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "background.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
    }
    if cfg.tls:
        lines |= {
            # PEM key stores (KIP-651): the key (PKCS#8) and certificate in one file.
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(cfg.tls_dir / tls.CA_FILE),
            "ssl.client.auth": "none",
            "ssl.endpoint.identification.algorithm": "https",
        }
    return "".join(f"{k}={v}\n" for k, v in lines.items())


def _cluster_id(draw: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A Kafka cluster id as ``kafka-storage random-uuid`` makes one: 16 random bytes, URL-safe
    base64 without padding, drawn again while it starts with ``-`` (Kafka's ``Uuid.randomUuid``
    does the same: ``kafka-storage format -t -abc…`` reads such an id as an option and fails,
    about one start in 64, which once failed a CI run's stack)."""
    while True:
        text = base64.urlsafe_b64encode(draw(16)).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class Kafka(Service):
    """Apache Kafka (KRaft, combined broker and controller) on the configured JDK."""

    name = "kafka"

    def ports(self, cfg: StackConfig) -> list[Port]:
        return [
            Port(cfg.kafka_port, config.ENV_KAFKA),
            Port(cfg.kafka_controller_port, config.ENV_KAFKA_CONTROLLER),
        ]

    def _data(self, cfg: StackConfig) -> Path:
        return self.workdir(cfg) / "data"

    def prepare(self, cfg: StackConfig) -> None:
        super().prepare(cfg)
        java = jvm.java(cfg)
        jvm.classpath(cfg, "kafka")
        work = self.workdir(cfg)
        (work / "log4j2.properties").write_text(_LOG4J2)
        keystore = work / "keystore.pem"
        if cfg.tls:
            key = (cfg.tls_dir / tls.KEY_FILE).read_bytes()
            keystore.touch(mode=0o600)
            keystore.write_bytes(key + (cfg.tls_dir / tls.CERT_FILE).read_bytes())
        else:
            keystore.unlink(missing_ok=True)
        (work / "server.properties").write_text(_properties(cfg, self._data(cfg), keystore))
        if (self._data(cfg) / "meta.properties").is_file():
            return
        # Format once: a second format would refuse (or, forced, lose every topic).
        done = procs.run_logged(
            [
                str(java),
                *self._jvm_flags(cfg),
                jvm.classpath_args(cfg, "kafka"),
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                _cluster_id(),
                "--config",
                str(work / "server.properties"),
            ],
            cwd=work,
            log=cfg.logs_dir / f"{self.name}.log",
        )
        if done != 0:
            # The log's tail in the error itself: a test's stack folder is gone by the time
            # anyone reads the failure (CI once showed nothing more than this line).
            log = cfg.logs_dir / f"{self.name}.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            msg = f"kafka: formatting {self._data(cfg)} failed (exit {done}); {log} ends:\n{tail}"
            raise StackError(msg)

    def _jvm_flags(self, cfg: StackConfig) -> list[str]:
        log4j = self.workdir(cfg) / "log4j2.properties"
        return [*JVM_OPTIONS, f"-Dlog4j2.configurationFile={log4j}"]

    def command(self, cfg: StackConfig) -> list[str]:
        return [
            str(jvm.java(cfg)),
            *self._jvm_flags(cfg),
            jvm.classpath_args(cfg, "kafka"),
            "kafka.Kafka",
            str(self.workdir(cfg) / "server.properties"),
        ]

    def is_ready(self, cfg: StackConfig) -> bool:
        # The TCP pre-check keeps librdkafka from logging connection errors while we poll.
        if not procs.tcp_accepts(cfg.kafka_port, timeout_s=PROBE_TIMEOUT_S):
            return False
        admin = AdminClient(client_config(cfg))
        metadata = admin.list_topics(timeout=2 * PROBE_TIMEOUT_S)
        return bool(metadata.brokers)


def client_config(cfg: StackConfig) -> tls_forms.KafkaConfig:
    """librdkafka's connection properties for this stack's broker (SSL against the stack's CA
    with TLS on)."""
    protocol = "SSL" if cfg.tls else "PLAINTEXT"
    return {
        "bootstrap.servers": f"127.0.0.1:{cfg.kafka_port}",
        **tls_forms.kafka_client_config(protocol, str(cfg.tls_dir / tls.CA_FILE)),
    }
