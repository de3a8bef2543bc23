"""The registry served by ``python -m registry`` against confluent_kafka's real client.

Self-contained: each server is a subprocess on a free loopback port with its own data dir.
"""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from registry.governance import CheckResult, check_schemas
from tests.ports import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def record(*fields: dict[str, object], name: str = "User") -> str:
    """An Avro record schema text with an ``id: int`` field followed by ``fields``."""
    all_fields = [{"name": "id", "type": "int"}, *fields]
    return json.dumps({"type": "record", "name": name, "namespace": "t", "fields": all_fields})


A = record()
B = record({"name": "name", "type": "string", "default": ""})  # compatible with A both ways
C = record({"name": "email", "type": "string"})  # BACKWARD-incompatible with A


def start(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "registry", "--port", str(port), "--data", str(data)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


@contextmanager
def serve(data: Path) -> Iterator[str]:
    """Run a registry on ``data`` until the block ends; yield its URL."""
    port, log = free_port(), data.parent / f"{data.name}.log"
    process = start(data, port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, log.read_text()
            try:
                httpx.get(f"{url}/", timeout=1).raise_for_status()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        # A clean shutdown: uvicorn re-raises the SIGTERM it handled once it is done.
        assert process.wait(timeout=20) in (0, -signal.SIGTERM), log.read_text()
        assert "Application shutdown complete" in log.read_text()


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(tmp_path_factory.mktemp("registry") / "data") as running:
        yield running


@pytest.fixture
def client(url: str) -> Iterator[SchemaRegistryClient]:
    with SchemaRegistryClient({"url": url}) as sr:
        yield sr


def error_code(exc: pytest.ExceptionInfo[SchemaRegistryError]) -> int:
    code: int = exc.value.error_code
    return code


def test_client_api(client: SchemaRegistryClient) -> None:
    assert client.get_schema_types() == ["AVRO"]
    first = client.register_schema("api-value", Schema(A, "AVRO"))
    second = client.register_schema("api-value", Schema(B, "AVRO"))
    assert second > first
    assert client.register_schema("api-value", Schema(json.dumps(json.loads(A)))) == first
    assert "api-value" in client.get_subjects()
    assert client.get_versions("api-value") == [1, 2]
    assert client.get_schema(first).schema_str == A
    latest = client.get_latest_version("api-value")
    assert (latest.schema_id, latest.version, latest.schema.schema_str) == (second, 2, B)
    assert latest.schema.schema_type == "AVRO"
    assert client.get_version("api-value", 1).schema_id == first
    # The same schema under a second subject: both name it, in order, with pagination.
    assert client.register_schema("api2-value", Schema(A, "AVRO")) == first
    assert client.get_subjects_by_schema_id(first) == ["api-value", "api2-value"]
    assert client.get_subjects_by_schema_id(first, offset=1, limit=1) == ["api2-value"]
    assert client.get_subjects_by_schema_id(first, subject_name="api2-value") == ["api2-value"]
    assert [(v.subject, v.version) for v in client.get_schema_versions(first)] == [
        ("api-value", 1),
        ("api2-value", 1),
    ]
    assert [(v.subject, v.version) for v in client.get_schema_versions(first, limit=1)] == [
        ("api-value", 1)
    ]
    with pytest.raises(SchemaRegistryError) as missing:
        client.get_subjects_by_schema_id(10**9)
    assert error_code(missing) == 40403
    found = client.lookup_schema("api-value", Schema(B, "AVRO"))
    assert (found.schema_id, found.version, found.subject) == (second, 2, "api-value")
    pairs = client.get_schema_versions(second)
    assert [(p.subject, p.version) for p in pairs] == [("api-value", 2)]
    with pytest.raises(SchemaRegistryError) as missing:
        client.lookup_schema("api-value", Schema(C, "AVRO"))
    assert error_code(missing) == 40403
    with pytest.raises(SchemaRegistryError) as invalid:
        client.register_schema("api-value", Schema('{"type": "nope"}', "AVRO"))
    assert error_code(invalid) == 42201


def test_client_compatibility_and_config(client: SchemaRegistryClient) -> None:
    client.register_schema("cfg-value", Schema(A, "AVRO"))
    assert client.get_compatibility() == "BACKWARD"
    assert client.test_compatibility("cfg-value", Schema(B, "AVRO")) is True
    assert client.test_compatibility("cfg-value", Schema(C, "AVRO"), version=1) is False
    with pytest.raises(SchemaRegistryError) as incompatible:
        client.register_schema("cfg-value", Schema(C, "AVRO"))
    assert (incompatible.value.http_status_code, error_code(incompatible)) == (409, 409)
    assert "incompatible" in incompatible.value.error_message
    with pytest.raises(SchemaRegistryError) as unset:
        client.get_compatibility("cfg-value")
    assert error_code(unset) == 40408
    answer: object = client.set_compatibility("cfg-value", "none")  # typed str, is the body
    assert answer == {"compatibility": "NONE"}
    assert client.get_compatibility("cfg-value") == "NONE"
    assert client.test_compatibility("cfg-value", Schema(C, "AVRO")) is True
    with pytest.raises(SchemaRegistryError) as bad_level:
        client.set_compatibility("cfg-value", "SIDEWAYS")
    assert error_code(bad_level) == 42203


def test_client_deletes(client: SchemaRegistryClient) -> None:
    first = client.register_schema("del-value", Schema(A, "AVRO"))
    client.register_schema("del-value", Schema(B, "AVRO"))
    assert client.delete_version("del-value", 1) == 1
    assert client.get_versions("del-value") == [2]
    assert client.delete_version("del-value", 1, permanent=True) == 1
    assert client.get_schema(first).schema_str == A  # ids keep resolving
    assert client.delete_subject("del-value") == [2]
    assert "del-value" not in client.get_subjects()
    assert client.delete_subject("del-value", permanent=True) == [2]
    with pytest.raises(SchemaRegistryError) as gone:
        client.get_latest_version("del-value")
    assert error_code(gone) == 40401


@pytest.mark.parametrize("auto_register", [True, False])
def test_avro_serde_round_trip(url: str, auto_register: bool) -> None:
    subject = f"serde-{auto_register}-value"
    schema = record({"name": "name", "type": "string"}, name=f"Serde{auto_register}")
    with SchemaRegistryClient({"url": url}) as admin:
        expected_id = None if auto_register else admin.register_schema(subject, Schema(schema))
    with SchemaRegistryClient({"url": url}) as sr:
        conf = {"auto.register.schemas": auto_register}
        serializer = AvroSerializer(sr, schema, conf=conf)
        ctx = SerializationContext(subject.removesuffix("-value"), MessageField.VALUE)
        value = {"id": 7, "name": "ada"}
        data = serializer(value, ctx)
        assert data is not None
        magic, schema_id = struct.unpack(">bI", data[:5])
        assert magic == 0
        assert schema_id == (expected_id or sr.lookup_schema(subject, Schema(schema)).schema_id)
    with SchemaRegistryClient({"url": url}) as reader:  # fresh client: nothing cached
        assert AvroDeserializer(reader)(data, ctx) == value


def test_serializer_without_auto_register_needs_a_registered_schema(url: str) -> None:
    with SchemaRegistryClient({"url": url}) as sr:
        serializer = AvroSerializer(
            sr, record(name="Unregistered"), conf={"auto.register.schemas": False}
        )
        ctx = SerializationContext("unregistered", MessageField.VALUE)
        with pytest.raises(SchemaRegistryError) as missing:
            serializer({"id": 1}, ctx)
    assert error_code(missing) == 40401


def test_restart_keeps_every_id(tmp_path: Path) -> None:
    data = tmp_path / "data"
    registered = [("r-a", A), ("r-a", B), ("r-b", C), ("r-b", B)]
    with serve(data) as running, SchemaRegistryClient({"url": running}) as sr:
        ids = [sr.register_schema(subject, Schema(text)) for subject, text in registered]
        sr.delete_version("r-a", 1)
    with serve(data) as running, SchemaRegistryClient({"url": running}) as sr:
        for (subject, text), schema_id in zip(registered, ids, strict=True):
            assert sr.get_schema(schema_id).schema_str == text
            assert sr.lookup_schema(subject, Schema(text), deleted=True).schema_id == schema_id
        assert sr.get_versions("r-a") == [2]
        assert sr.register_schema("r-c", Schema(record(name="New"))) == max(ids) + 1


def test_port_taken_exits_with_a_message(url: str, tmp_path: Path) -> None:
    port = url.rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, "-m", "registry", "--port", port, "--data", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_check_schemas(url: str) -> None:
    with SchemaRegistryClient({"url": url}) as sr:
        sr.register_schema("gov-value", Schema(A))
    results = check_schemas(url, {"gov-value": [A, B, C], "gov-new-value": [C]})
    assert [r.schema_file for r in results] == [
        "gov-value#1",
        "gov-value#2",
        "gov-value#3",
        "gov-new-value#1",
    ]
    registered, compatible, incompatible, new = results
    assert registered == CheckResult("gov-value", "gov-value#1", True, True, registered.messages)
    assert (compatible.registered, compatible.compatible) == (False, True)
    assert (incompatible.registered, incompatible.compatible) == (False, False)
    assert "incompatible under BACKWARD" in incompatible.messages
    assert any("READER_FIELD_MISSING_DEFAULT_VALUE" in m for m in incompatible.messages)
    assert (new.registered, new.compatible) == (False, True)
    with SchemaRegistryClient({"url": url}) as sr:  # checking registered nothing
        assert sr.get_versions("gov-value") == [1]


def test_check_schemas_honours_a_transitive_level(url: str) -> None:
    email_int = record({"name": "email", "type": "int", "default": 0})
    with SchemaRegistryClient({"url": url}) as sr:
        sr.set_compatibility("gov-tr-value", "NONE")
        sr.register_schema("gov-tr-value", Schema(C))
        sr.register_schema("gov-tr-value", Schema(A))
        sr.set_compatibility("gov-tr-value", "BACKWARD")
        assert check_schemas(url, {"gov-tr-value": [email_int]})[0].compatible is True
        sr.set_compatibility("gov-tr-value", "BACKWARD_TRANSITIVE")
    (result,) = check_schemas(url, {"gov-tr-value": [email_int]})
    assert result.compatible is False
    assert any("version 1" in m and "TYPE_MISMATCH" in m for m in result.messages)
