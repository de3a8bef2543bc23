"""docker-compose.yml with TLS on, checked against what the code and the local stack use.

No Docker engine runs here, so the file is checked, not run: the ``certs`` service's arguments
are run through the project's own generator (``python -m dev certs``'s parser, ``dev/tls.py``)
into a temporary folder, and every ``/tls/...`` path a product or the engine reads must be a file
the generator wrote; every host a client connects to must be in the certificate's SAN and be a
compose service; the engine's environment must load as settings with every endpoint in its TLS
form; each product's TLS options must be those the local stack (dev/) gives it; Prometheus's
files must be what :mod:`dev.prometheus` generates, and ``promtool`` must accept them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import pkcs12

from core.settings import Settings
from dev import tls as stack_tls
from dev.__main__ import _parser
from dev.config import StackConfig
from dev.kafka import _properties
from dev.neo4j import _conf
from dev.prometheus import scrape_config, web_config
from tests.promtool import promtool

REPO = Path(__file__).resolve().parents[2]
PRODUCTS = ("kafka", "schema-registry", "postgres", "redis", "neo4j", "prometheus")
ENGINE = ("setup", "flow", "api", "probe")
TLS_PATH = re.compile(r"/tls/[A-Za-z0-9_./-]+")


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def _services() -> dict[str, Any]:
    services: dict[str, Any] = _compose()["services"]
    return services


def _certs_args() -> Any:
    certs = _services()["certs"]
    entry = certs["entrypoint"]
    assert entry[:4] == ["python", "-m", "dev", "certs"], entry
    return _parser().parse_args([*entry[3:], *certs["command"]])


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the certs service writes into the volume, made here by the same code (every copy
    owned by this test's user: changing owners needs root)."""
    args = _certs_args()
    assert args.dir == Path("/tls")
    folder = stack_tls.ensure(tmp_path_factory.mktemp("tls"), hosts=args.host)
    for item in args.owner:
        name, _, _uid = item.partition("=")
        stack_tls.copy_for(folder, name, os.getuid(), args.keystore_password)
    return folder


def _local(path: str, generated: Path) -> Path:
    return generated / Path(path).relative_to("/tls")


def _tls_paths(value: Any) -> set[str]:
    return set(TLS_PATH.findall(json.dumps(value)))


def test_the_certs_service_uses_the_projects_generator_once() -> None:
    certs = _services()["certs"]
    assert certs["build"] == "."  # the engine image: the wheel ships dev/ and cryptography
    assert certs["volumes"] == ["tls:/tls"]
    assert "tls" in _compose()["volumes"]
    assert "restart" not in certs and "ports" not in certs


def test_every_product_and_engine_service_mounts_the_ca_read_only_after_certs() -> None:
    services = _services()

    def reaches_certs(name: str, seen: frozenset[str] = frozenset()) -> bool:
        depends = services[name].get("depends_on", {})
        if "certs" in depends:
            assert depends["certs"] == {"condition": "service_completed_successfully"}
            return True
        return any(reaches_certs(d, seen | {name}) for d in depends if d not in seen)

    for name in (*PRODUCTS, *ENGINE, "grafana"):
        assert "tls:/tls:ro" in services[name]["volumes"], name
    for name in (*PRODUCTS, *ENGINE):
        assert reaches_certs(name), f"{name} may start before the certificates exist"


def test_every_tls_path_the_compose_files_name_is_one_the_generator_writes(
    generated: Path,
) -> None:
    services = _services()
    paths = set()
    for name, service in services.items():
        if name != "certs":
            paths |= _tls_paths({k: v for k, v in service.items() if k != "volumes"})
    for file in ("slo/prometheus.yml", "slo/web.yml"):
        paths |= _tls_paths(yaml.safe_load((REPO / file).read_text()))
    datasource = REPO / "dashboards/grafana/provisioning/datasources/prometheus.yml"
    paths |= _tls_paths(yaml.safe_load(datasource.read_text()))
    assert "/tls/ca.pem" in paths and "/tls/kafka/keystore.pem" in paths
    missing = sorted(p for p in paths if not _local(p, generated).exists())
    assert missing == []


def test_every_host_a_client_names_is_a_service_in_the_certificates_san(
    generated: Path,
) -> None:
    services = _services()
    env = services["setup"]["environment"]
    hosts = {
        env["IGFLOW_KAFKA_BOOTSTRAP"].split(":")[0],
        urlsplit(env["IGFLOW_SCHEMA_REGISTRY_URL"]).hostname,
        urlsplit(env["IGFLOW_POSTGRES_DSN"]).hostname,
        urlsplit(env["IGFLOW_CATALOG_URI"]).hostname,
        urlsplit(env["IGFLOW_REDIS_URL"]).hostname,
        urlsplit(env["IGFLOW_NEO4J_URI"]).hostname,
        urlsplit(
            services["probe"]["command"][services["probe"]["command"].index("--api") + 1]
        ).hostname,
        urlsplit(
            services["schema-registry"]["environment"][
                "SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"
            ]
        ).hostname,
    }
    config = yaml.safe_load((REPO / "slo" / "prometheus.yml").read_text())
    hosts |= {
        t.split(":")[0]
        for job in config["scrape_configs"]
        for c in job["static_configs"]
        for t in c["targets"]
    }
    datasource = REPO / "dashboards/grafana/provisioning/datasources/prometheus.yml"
    (source,) = yaml.safe_load(datasource.read_text())["datasources"]
    hosts.add(urlsplit(source["url"]).hostname)
    assert None not in hosts
    assert hosts <= set(services), hosts - set(services)
    san = set(stack_tls.san_names(generated / stack_tls.CERT_FILE))
    assert hosts <= san, hosts - san
    # The healthchecks inside the containers and host clients use the loopback names.
    assert {"localhost", "127.0.0.1"} <= san


def test_the_engine_runs_with_tls_on_every_hop() -> None:
    services = _services()
    for name in ENGINE:
        env = services[name]["environment"]
        assert env["IGFLOW_TLS_ENABLED"] == "true", name
    env = {k: str(v) for k, v in services["setup"]["environment"].items()}
    settings = Settings.load(env)
    assert settings.tls.enabled and str(settings.tls_ca_file) == "/tls/ca.pem"
    assert settings.server_tls() == {
        "ssl_certfile": "/tls/server.pem",
        "ssl_keyfile": "/tls/server.key",
    }
    assert settings.kafka.client_config()["security.protocol"] == "SSL"
    assert settings.kafka.client_config()["ssl.ca.location"] == "/tls/ca.pem"
    assert settings.kafka.schema_registry_url == "https://schema-registry:8081"
    assert "sslmode=verify-full" in settings.stores.postgres_dsn
    assert "sslmode=verify-full" in settings.lake.catalog_uri
    assert settings.stores.redis_url.startswith("rediss://redis:6379/")
    assert settings.stores.neo4j_ca_file == "/tls/ca.pem"
    assert services["probe"]["command"][-1].startswith("https://")
    assert "https://127.0.0.1:8080/ready" in json.dumps(services["api"]["healthcheck"])
    assert 'IGFLOW_TLS_ENABLED: "false"' not in (REPO / "docker-compose.yml").read_text()


def _stack_cfg() -> StackConfig:
    return StackConfig.from_env({"IGFLOW_STACK_DIR": "/stack", "IGFLOW_TLS_ENABLED": "true"})


def test_kafka_has_the_local_stacks_ssl_settings() -> None:
    env = _services()["kafka"]["environment"]
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert protocols == {"INTERNAL": "SSL", "EXTERNAL": "SSL", "CONTROLLER": "PLAINTEXT"}
    # The image's configure script (docker/resources/common-scripts/configure) demands JKS key
    # store files and credential files when the advertised listeners contain "SSL://": with
    # named listeners mapped to SSL it leaves the PEM stores alone.
    assert "SSL" not in env["KAFKA_ADVERTISED_LISTENERS"]
    compose = {
        k.removeprefix("KAFKA_").lower().replace("_", "."): str(v)
        for k, v in env.items()
        if k.startswith("KAFKA_SSL_")
    }
    cfg = _stack_cfg()
    local = dict(
        line.split("=", 1)
        for line in _properties(cfg, Path("/data"), Path("/keystore.pem")).splitlines()
        if line.startswith("ssl.")
    )
    assert compose.keys() == local.keys()
    for key in compose.keys() - {"ssl.keystore.location", "ssl.truststore.location"}:
        assert compose[key] == local[key], key
    assert compose["ssl.keystore.location"] == f"/tls/kafka/{stack_tls.KEYSTORE_PEM_FILE}"
    assert compose["ssl.truststore.location"] == f"/tls/{stack_tls.CA_FILE}"
    assert "--command-config" in json.dumps(_services()["kafka"]["healthcheck"])


def test_the_registry_serves_https_from_a_key_store_its_password_opens(generated: Path) -> None:
    env = _services()["schema-registry"]["environment"]
    assert env["SCHEMA_REGISTRY_LISTENERS"].startswith("https://")
    assert env["SCHEMA_REGISTRY_KAFKASTORE_SECURITY_PROTOCOL"] == "SSL"
    assert env["SCHEMA_REGISTRY_KAFKASTORE_SSL_TRUSTSTORE_LOCATION"] == "/tls/ca.pem"
    store = _local(env["SCHEMA_REGISTRY_SSL_KEYSTORE_LOCATION"], generated)
    password = env["SCHEMA_REGISTRY_SSL_KEYSTORE_PASSWORD"]
    assert password == _certs_args().keystore_password
    key, cert, chain = pkcs12.load_key_and_certificates(store.read_bytes(), password.encode())
    assert key is not None and cert is not None and len(chain) == 1
    assert "https://localhost:8081" in json.dumps(_services()["schema-registry"]["healthcheck"])


def test_postgres_serves_tls_to_tcp_clients_only() -> None:
    postgres = _services()["postgres"]
    options = dict(
        arg.split("=", 1) for arg in postgres["command"] if "=" in arg and not arg.startswith("-")
    )
    assert options["ssl"] == "on"
    assert options["ssl_cert_file"] == "/tls/postgres/server.pem"
    assert options["ssl_key_file"] == "/tls/postgres/server.key"
    hba_mount = next(v for v in postgres["volumes"] if v.endswith(f":{options['hba_file']}:ro"))
    rules = [
        line.split()
        for line in (REPO / hba_mount.split(":")[0]).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {r[0] for r in rules} == {"local", "hostssl"}
    assert _certs_args().owner.count("postgres=999") == 1  # postgres:15's user owns its key


def test_redis_has_no_plaintext_port() -> None:
    command = _services()["redis"]["command"]
    assert command[command.index("--port") + 1] == "0"
    assert command[command.index("--tls-port") + 1] == "6379"
    assert command[command.index("--tls-auth-clients") + 1] == "no"
    assert _services()["redis"]["ports"] == ["127.0.0.1:${IGFLOW_REDIS_PORT:-16379}:6379"]


def test_neo4j_has_the_local_stacks_bolt_policy(generated: Path) -> None:
    env = _services()["neo4j"]["environment"]
    compose = {
        k.removeprefix("NEO4J_").replace("__", "\0").replace("_", ".").replace("\0", "_"): str(v)
        for k, v in env.items()
        if "ssl" in k or "tls" in k
    }
    local = dict(
        line.split("=", 1)
        for line in _conf(_stack_cfg(), Path("/home")).splitlines()
        if "ssl" in line or "tls" in line
    )
    assert compose.keys() == local.keys()
    for key in compose.keys() - {"dbms.ssl.policy.bolt.base_directory"}:
        assert compose[key] == local[key], key
    base = _local(compose["dbms.ssl.policy.bolt.base_directory"], generated)
    for name in ("trusted", "revoked", stack_tls.CERT_FILE, stack_tls.KEY_FILE):
        assert (base / name).exists(), name


def test_prometheus_scrapes_and_serves_https_as_the_local_stack(
    generated: Path, tmp_path: Path
) -> None:
    services = _services()
    prometheus = services["prometheus"]
    mounts = {
        v.split(":")[1]: REPO / v.split(":")[0] for v in prometheus["volumes"] if v.startswith("./")
    }
    flags = dict(arg.split("=", 1) for arg in prometheus["command"])
    config_file, web_file = mounts[flags["--config.file"]], mounts[flags["--web.config.file"]]
    assert config_file == REPO / "slo" / "prometheus.yml"
    # The ports the engine serves metrics on, by service name.
    flow = services["flow"]["command"]
    targets = (
        f"flow:{flow[flow.index('--metrics-port') + 1]}",
        f"api:{services['api']['environment']['IGFLOW_API_METRICS_PORT']}",
        f"probe:{services['probe']['environment']['IGFLOW_PROBE_METRICS_PORT']}",
    )
    assert services["flow"]["environment"]["IGFLOW_RUN_METRICS_HOST"] == "0.0.0.0"
    expected = scrape_config(targets[0], targets[1], "rules.json", targets[2], "/tls/ca.pem")
    assert yaml.safe_load(config_file.read_text()) == expected
    web = web_config("/tls/prometheus/server.pem", "/tls/prometheus/server.key")
    assert yaml.safe_load(web_file.read_text()) == web
    # promtool reads the files the paths name: check copies pointing into the generated folder.
    for source in (config_file, web_file, REPO / "slo" / "rules.json"):
        text = source.read_text().replace('"/tls/', f'"{generated}/')
        (tmp_path / source.name).write_text(text)
    promtool("check", "config", str(tmp_path / config_file.name), cwd=tmp_path)
    promtool("check", "web-config", str(tmp_path / web_file.name), cwd=tmp_path)


def test_dev_certs_adds_hosts_under_the_same_ca_and_refuses_a_bad_owner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dev.__main__ import main

    folder = tmp_path / "tls"
    assert main(["certs", "--dir", str(folder), "--host", "kafka"], environ={}) == 0
    ca = (folder / stack_tls.CA_FILE).read_bytes()
    first = (folder / stack_tls.CERT_FILE).read_bytes()
    assert main(["certs", "--dir", str(folder), "--host", "kafka"], environ={}) == 0
    assert (folder / stack_tls.CERT_FILE).read_bytes() == first  # valid and complete: kept
    assert main(["certs", "--dir", str(folder), "--host", "redis"], environ={}) == 0
    assert (folder / stack_tls.CA_FILE).read_bytes() == ca
    assert "redis" in stack_tls.san_names(folder / stack_tls.CERT_FILE)
    assert "SAN localhost, redis" in capsys.readouterr().out
    for bad in ("postgres", "postgres=abc", "../x=1", "=999"):
        assert main(["certs", "--dir", str(folder), "--owner", bad], environ={}) == 1
        assert "expected NAME=UID" in capsys.readouterr().err
