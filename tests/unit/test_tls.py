"""TLS endpoints (core/tls.py), the ``tls`` settings section, and the stack's CA (dev/tls.py).

The hops themselves (a plaintext client refused, a verifying client let in) are tested against
real servers in tests/integration/test_tls.py.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from core import tls
from core.errors import ConfigError
from core.settings import SettingError, Settings
from dev import tls as stack_tls
from dev.config import StackConfig
from dev.errors import StackError
from dev.kafka import _properties
from dev.neo4j import _conf
from dev.postgres import _set_host_rules

CA = "/ca dir/ca.pem"


def test_postgres_dsn_url_gets_verify_full_and_the_ca() -> None:
    out = tls.postgres_dsn("postgresql://u:p@h:5432/db?application_name=x", CA)
    assert out == (
        "postgresql://u:p@h:5432/db?application_name=x&sslmode=verify-full"
        "&sslrootcert=%2Fca+dir%2Fca.pem"
    )


def test_postgres_dsn_key_value_form_is_quoted() -> None:
    out = tls.postgres_dsn("host=h dbname=db", "/it's/ca.pem")
    assert out == "host=h dbname=db sslmode=verify-full sslrootcert='/it\\'s/ca.pem'"


@pytest.mark.parametrize(
    "dsn",
    ["postgresql://u@h:1/db?sslmode=require", "host=h sslmode=disable"],
)
def test_postgres_dsn_that_names_its_sslmode_is_kept(dsn: str) -> None:
    assert tls.postgres_dsn(dsn, CA) == dsn


def test_redis_url_becomes_rediss_with_required_verification() -> None:
    out = tls.redis_url("redis://:pw@127.0.0.1:6379/2", CA)
    assert out.startswith("rediss://:pw@127.0.0.1:6379/2?ssl_cert_reqs=required&ssl_ca_certs=")
    for kept in ("rediss://h:1/0", "unix:///tmp/r.sock"):
        assert tls.redis_url(kept, CA) == kept


def test_redis_url_is_understood_by_redis_py() -> None:
    import redis

    pool = redis.ConnectionPool.from_url(tls.redis_url("redis://127.0.0.1:6379/0", CA))
    assert pool.connection_class is redis.SSLConnection
    assert pool.connection_kwargs["ssl_ca_certs"] == CA
    assert pool.connection_kwargs["ssl_cert_reqs"] == "required"


def test_https_url_and_kafka_config() -> None:
    assert tls.https_url("http://127.0.0.1:8081/x") == "https://127.0.0.1:8081/x"
    assert tls.https_url("https://r") == "https://r"
    assert tls.kafka_client_config("PLAINTEXT", CA) == {}
    assert tls.kafka_client_config("SSL", CA) == {
        "security.protocol": "SSL",
        "ssl.ca.location": CA,
    }
    assert tls.kafka_client_config("SSL", "") == {"security.protocol": "SSL"}
    assert tls.kafka_connection("b:1") == {"bootstrap.servers": "b:1"}


def test_a_missing_ca_says_how_to_get_one(tmp_path: Path) -> None:
    settings = Settings.load({"IGFLOW_STACK_DIR": str(tmp_path), "IGFLOW_TLS_ENABLED": "true"})
    with pytest.raises(ConfigError, match="python -m dev start makes it") as err:
        settings.client_verify()
    assert "IGFLOW_TLS_CA_FILE" in str(err.value) and "IGFLOW_TLS_ENABLED=false" in str(err.value)
    stack_tls.ensure(tmp_path / "tls")
    assert isinstance(settings.client_verify(), ssl.SSLContext)


def test_tls_is_on_by_default(tmp_path: Path) -> None:
    settings = Settings.load({"IGFLOW_STACK_DIR": str(tmp_path)})
    assert settings.tls.enabled and Settings().tls.enabled
    assert "sslmode=verify-full" in settings.stores.postgres_dsn
    assert settings.stores.redis_url.startswith("rediss://")
    assert settings.kafka.client_config()["security.protocol"] == "SSL"
    assert settings.kafka.schema_registry_url.startswith("https://")
    assert settings.server_tls()["ssl_certfile"] == str(tmp_path.resolve() / "tls" / "server.pem")


def test_the_settings_file_opts_out_and_the_variable_beats_it(tmp_path: Path) -> None:
    config = tmp_path / "igflow.toml"
    config.write_text("[tls]\nenabled = false\n", encoding="utf-8")
    plain = Settings.load({"IGFLOW_CONFIG": str(config)})
    assert plain == Settings.load({"IGFLOW_TLS_ENABLED": "false"})
    assert not plain.tls.enabled
    again = Settings.load({"IGFLOW_CONFIG": str(config), "IGFLOW_TLS_ENABLED": "true"})
    assert again.tls.enabled


def test_settings_without_tls_leave_every_endpoint_alone() -> None:
    settings = Settings.load({"IGFLOW_TLS_ENABLED": "false"})
    assert not settings.tls.enabled
    # The opt-out changes the switch and nothing else: every endpoint as the defaults give it.
    assert settings == Settings().with_changes("tls", enabled=False)
    assert settings.kafka.client_config() == {"bootstrap.servers": "127.0.0.1:19092"}
    assert settings.server_tls() == {}
    assert settings.client_verify() is True


def test_settings_with_tls_turn_every_endpoint_into_its_verified_form(tmp_path: Path) -> None:
    env = {
        "IGFLOW_TLS_ENABLED": "true",
        "IGFLOW_STACK_DIR": str(tmp_path),
        "IGFLOW_POSTGRES_DSN": "postgresql://igflow:hunter2pw@127.0.0.1:1/igflow",
        "IGFLOW_REDIS_URL": "redis://127.0.0.1:2/0",
        "IGFLOW_SCHEMA_REGISTRY_URL": "http://127.0.0.1:3",
    }
    settings = Settings.load(env)
    stack_tls.ensure(tmp_path / "tls")
    ca = str(tmp_path.resolve() / "tls" / "ca.pem")
    assert settings.tls_ca_file == Path(ca)
    assert "sslmode=verify-full" in settings.stores.postgres_dsn
    assert settings.lake.catalog_uri.startswith("postgresql+psycopg2://igflow:hunter2pw@")
    assert "sslmode=verify-full" in settings.lake.catalog_uri
    assert settings.stores.redis_url.startswith("rediss://127.0.0.1:2/0?")
    assert settings.stores.neo4j_ca_file == ca
    assert settings.psi.ca_file == ca
    assert settings.kafka.client_config() == {
        "bootstrap.servers": "127.0.0.1:19092",
        "security.protocol": "SSL",
        "ssl.ca.location": ca,
    }
    assert settings.kafka.registry_config() == {"url": "https://127.0.0.1:3", "ssl.ca.location": ca}
    assert settings.server_tls() == {
        "ssl_certfile": str(tmp_path.resolve() / "tls" / "server.pem"),
        "ssl_keyfile": str(tmp_path.resolve() / "tls" / "server.key"),
    }
    context = settings.client_verify()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    # A subprocess handed these endpoints (tests' env_for) resolves them to the same values.
    again = Settings.load(
        env
        | {
            "IGFLOW_POSTGRES_DSN": settings.stores.postgres_dsn,
            "IGFLOW_REDIS_URL": settings.stores.redis_url,
            "IGFLOW_SCHEMA_REGISTRY_URL": settings.kafka.schema_registry_url,
            "IGFLOW_CATALOG_URI": settings.lake.catalog_uri,
        }
    )
    assert again == settings
    assert "hunter2pw" not in repr(settings)


def test_tls_settings_take_ca_certificate_and_key(tmp_path: Path) -> None:
    settings = Settings.load(
        {
            "IGFLOW_TLS_ENABLED": "1",
            "IGFLOW_TLS_CA_FILE": "/etc/pki/ca.pem",
            "IGFLOW_TLS_CERT_FILE": "/etc/pki/api.pem",
            "IGFLOW_TLS_KEY_FILE": "/etc/pki/api.key",
            "IGFLOW_KAFKA_SSL_CA_LOCATION": "/etc/pki/kafka-ca.pem",
        }
    )
    assert settings.kafka.ssl_ca_location == "/etc/pki/kafka-ca.pem"  # a per-hop override
    assert settings.stores.neo4j_ca_file == "/etc/pki/ca.pem"
    assert settings.server_tls() == {
        "ssl_certfile": "/etc/pki/api.pem",
        "ssl_keyfile": "/etc/pki/api.key",
    }
    with pytest.raises(SettingError, match=r"kafka\.security_protocol"):
        Settings.load({"IGFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_stack_ca_signs_a_server_certificate_for_loopback(tmp_path: Path) -> None:
    folder = stack_tls.ensure(tmp_path / "tls")
    ca, server = _load(folder / stack_tls.CA_FILE), _load(folder / stack_tls.CERT_FILE)
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert (folder / stack_tls.KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert (folder / "ca.key").stat().st_mode & 0o777 == 0o600
    # What every client does: a default context trusting the CA loads the chain.
    context = ssl.create_default_context(cafile=str(folder / stack_tls.CA_FILE))
    context.load_cert_chain(folder / stack_tls.CERT_FILE, folder / stack_tls.KEY_FILE)


def test_stack_certificates_are_kept_then_renewed_near_expiry(tmp_path: Path) -> None:
    folder = stack_tls.ensure(tmp_path)
    first = (folder / stack_tls.CERT_FILE).read_bytes()
    ca = (folder / stack_tls.CA_FILE).read_bytes()
    stack_tls.ensure(tmp_path)
    assert (folder / stack_tls.CERT_FILE).read_bytes() == first
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=729 - 29)
    stack_tls.ensure(tmp_path, now=later)
    assert (folder / stack_tls.CERT_FILE).read_bytes() != first
    assert (folder / stack_tls.CA_FILE).read_bytes() == ca  # clients keep trusting the CA
    _load(folder / stack_tls.CERT_FILE).verify_directly_issued_by(_load(folder / "ca.pem"))


def _cfg(tmp_path: Path, tls_on: str) -> StackConfig:
    return StackConfig.from_env({"IGFLOW_STACK_DIR": str(tmp_path), "IGFLOW_TLS_ENABLED": tls_on})


def test_stack_config_reads_the_tls_switch(tmp_path: Path) -> None:
    assert _cfg(tmp_path, "true").tls
    assert not _cfg(tmp_path, "false").tls
    assert StackConfig.from_env({"IGFLOW_STACK_DIR": str(tmp_path)}).tls  # on by default
    with pytest.raises(StackError, match="IGFLOW_TLS_ENABLED"):
        _cfg(tmp_path, "maybe")


def test_stack_config_reads_the_settings_files_tls_switch_like_the_settings(
    tmp_path: Path,
) -> None:
    config = tmp_path / "igflow.toml"
    env = {"IGFLOW_STACK_DIR": str(tmp_path), "IGFLOW_CONFIG": str(config)}
    config.write_text("[tls]\nenabled = false\n", encoding="utf-8")
    assert not StackConfig.from_env(env).tls
    assert Settings.load(env).tls.enabled is False  # the engine reads it the same way
    assert StackConfig.from_env({**env, "IGFLOW_TLS_ENABLED": "true"}).tls  # the variable wins
    config.write_text("[api]\nport = 8001\n", encoding="utf-8")
    assert StackConfig.from_env(env).tls
    config.write_text("[tls]\nenabled = 'maybe'\n", encoding="utf-8")
    with pytest.raises(StackError, match=r"\[tls\] enabled in .*igflow.toml"):
        StackConfig.from_env(env)
    config.write_text("[tls\n", encoding="utf-8")
    with pytest.raises(StackError, match="cannot read settings file"):
        StackConfig.from_env(env)


def test_kafka_client_listener_is_ssl_only_with_tls(tmp_path: Path) -> None:
    on = _properties(_cfg(tmp_path, "true"), tmp_path / "data", tmp_path / "keystore.pem")
    assert "listeners=SSL://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093\n" in on
    assert "inter.broker.listener.name=SSL\n" in on
    assert "ssl.keystore.type=PEM\n" in on
    assert "PLAINTEXT://" not in on
    off = _properties(_cfg(tmp_path, "false"), tmp_path / "data", tmp_path / "keystore.pem")
    assert "listeners=PLAINTEXT://127.0.0.1:19092" in off
    assert "ssl." not in off


def test_neo4j_bolt_requires_tls_with_tls(tmp_path: Path) -> None:
    on = _conf(_cfg(tmp_path, "true"), tmp_path)
    assert "server.bolt.tls_level=REQUIRED\n" in on
    assert "dbms.ssl.policy.bolt.enabled=true\n" in on
    assert "server.bolt.tls_level=DISABLED\n" in _conf(_cfg(tmp_path, "false"), tmp_path)


def test_postgres_host_rules_switch_between_host_and_hostssl(tmp_path: Path) -> None:
    hba = tmp_path / "pg_hba.conf"
    original = (
        "# comment host\nlocal   all  all                 trust\n"
        "host    all  all   127.0.0.1/32  scram-sha-256\n"
        "host    replication all ::1/128  scram-sha-256\n"
    )
    hba.write_text(original)
    _set_host_rules(hba, ssl_only=True)
    lines = hba.read_text().splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["local", "hostssl", "hostssl"]
    assert lines[0] == "# comment host"
    _set_host_rules(hba, ssl_only=False)
    assert hba.read_text() == original


def test_kafka_connection_is_hashable_picklable_and_a_mapping() -> None:
    import pickle

    conn = tls.KafkaConnection({"bootstrap.servers": "b:1", "security.protocol": "SSL"})
    assert hash(conn) == hash(pickle.loads(pickle.dumps(conn)))
    assert pickle.loads(pickle.dumps(conn)) == conn
    assert {**conn, "group.id": "g"}["security.protocol"] == "SSL"
    assert tls.kafka_connection(conn) == dict(conn)
    plain = Settings.load({"IGFLOW_TLS_ENABLED": "false"})
    assert plain.kafka.connection() == {"bootstrap.servers": "127.0.0.1:19092"}
