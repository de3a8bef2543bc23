"""In-process tests of the registry REST API (Starlette TestClient, SQLite in tmp_path)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from starlette.testclient import TestClient

from registry import SchemaStore, create_app
from registry.compatibility import parse

if TYPE_CHECKING:
    from httpx2 import Response  # what starlette 1.x's TestClient returns

CT = {"Content-Type": "application/vnd.schemaregistry.v1+json"}


def record(*fields: dict[str, Any]) -> str:
    """An Avro record schema text with an ``id: int`` field followed by ``fields``."""
    all_fields = [{"name": "id", "type": "int"}, *fields]
    return json.dumps({"type": "record", "name": "User", "namespace": "t", "fields": all_fields})


A = record()
B = record({"name": "name", "type": "string", "default": ""})  # A + field with default
C = record({"name": "email", "type": "string"})  # A + field without default
EMAIL_INT = record({"name": "email", "type": "int", "default": 0})
EMAIL_DEFAULT = record({"name": "email", "type": "string", "default": ""})
NICK = record({"name": "nick", "type": "string", "default": ""})
C_NICK = record({"name": "email", "type": "string"}, {"name": "nick", "type": "string"})


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tmp_path / "registry.sqlite3")) as test_client:
        yield test_client


def post(client: TestClient, path: str, schema: str, **extra: Any) -> Response:
    return client.post(path, content=json.dumps({"schema": schema, **extra}), headers=CT)


def register(client: TestClient, subject: str, schema: str) -> Response:
    return post(client, f"/subjects/{subject}/versions", schema)


def assert_error(response: Response, status: int, code: int) -> str:
    assert (response.status_code, response.json()["error_code"]) == (status, code), response.text
    assert response.headers["content-type"].startswith("application/vnd.schemaregistry.v1+json")
    message = response.json()["message"]
    assert isinstance(message, str)
    return message


def test_register_and_read_back(client: TestClient) -> None:
    assert client.get("/subjects").json() == []
    assert register(client, "s", A).json() == {"id": 1}
    assert register(client, "s", B).json() == {"id": 2}
    assert client.get("/subjects").json() == ["s"]
    assert client.get("/subjects/s/versions").json() == [1, 2]
    expected = {"subject": "s", "version": 1, "id": 1, "schema": A}
    assert client.get("/subjects/s/versions/1").json() == expected  # no schemaType for AVRO
    assert client.get("/subjects/s/versions/latest").json()["id"] == 2
    assert client.get("/subjects/s/versions/-1").json()["version"] == 2
    assert client.get("/subjects/s/versions/2/schema").text == B
    assert client.get("/schemas/ids/1").json() == {"schema": A}
    assert client.get("/schemas/types").json() == ["AVRO"]
    assert client.get("/schemas/ids/2/versions").json() == [{"subject": "s", "version": 2}]


def test_identical_schema_keeps_id_and_first_text(client: TestClient) -> None:
    assert register(client, "s", A).json() == {"id": 1}
    spaced = json.dumps(json.loads(A), indent=4)
    assert register(client, "s", spaced).json() == {"id": 1}
    assert client.get("/subjects/s/versions").json() == [1]
    assert client.get("/schemas/ids/1").json()["schema"] == A
    # Another subject reuses the global id, as a new version of its own.
    assert register(client, "other", spaced).json() == {"id": 1}
    pairs = client.get("/schemas/ids/1/versions").json()
    assert pairs == [{"subject": "other", "version": 1}, {"subject": "s", "version": 1}]
    # A default is part of the identity: it changes how readers resolve data.
    with_default = record({"name": "x", "type": "int", "default": 1})
    without_default = record({"name": "x", "type": "int"})
    assert parse(with_default).canonical != parse(without_default).canonical


def test_accepts_json_content_type_and_ignores_unknown_fields(client: TestClient) -> None:
    body: dict[str, object] = {
        "schema": A,
        "schemaType": "AVRO",
        "references": [],
        "metadata": None,
        "guid": "x",
    }
    response = client.post("/subjects/s/versions?normalize=False", json=body)
    assert response.json() == {"id": 1}
    assert client.get("/schemas/ids/1?subject=s&format=x").json() == {"schema": A}


def test_lookup(client: TestClient) -> None:
    register(client, "s", A)
    register(client, "s", B)
    found = post(client, "/subjects/s?normalize=False&deleted=False", json.dumps(json.loads(B)))
    assert found.json() == {"subject": "s", "version": 2, "id": 2, "schema": B}
    assert_error(post(client, "/subjects/s", C), 404, 40403)
    assert_error(post(client, "/subjects/nope", A), 404, 40401)


def test_lookup_errors_and_invalid_schemas(client: TestClient) -> None:
    register(client, "s", A)
    assert_error(client.get("/subjects/nope/versions"), 404, 40401)
    assert_error(client.get("/subjects/nope/versions/1"), 404, 40401)
    assert_error(client.get("/subjects/s/versions/9"), 404, 40402)
    assert_error(client.get("/subjects/s/versions/9/schema"), 404, 40402)
    assert_error(client.get("/schemas/ids/99"), 404, 40403)
    assert_error(client.get("/schemas/ids/abc"), 404, 40403)
    assert_error(client.get("/schemas/ids/99/versions"), 404, 40403)
    for bad in ("abc", "0", "1.5", str(2**31)):
        assert_error(client.get(f"/subjects/s/versions/{bad}"), 422, 42202)
    bad_default = record({"name": "x", "type": "int", "default": "text"})  # avro accepts it
    for bad in ("{not json", '{"type": "nonsense"}', bad_default, ""):
        assert_error(register(client, "s", bad), 422, 42201)
    assert_error(post(client, "/subjects/s/versions", A, schemaType="PROTOBUF"), 422, 42201)
    refs = [{"name": "x", "subject": "y", "version": 1}]
    assert_error(post(client, "/subjects/s/versions", A, references=refs), 422, 42201)
    assert_error(client.post("/subjects/s/versions", content=b"[1]", headers=CT), 400, 400)
    assert_error(client.get("/no/such/route"), 404, 404)


def test_incompatible_registration_is_409_with_reasons(client: TestClient) -> None:
    register(client, "s", A)
    message = assert_error(register(client, "s", C), 409, 409)
    assert "incompatible" in message
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in message and "email" in message
    assert client.get("/subjects/s/versions").json() == [1]


def test_config(client: TestClient) -> None:
    assert client.get("/config").json() == {"compatibilityLevel": "BACKWARD"}
    assert client.put("/config", json={"compatibility": "full"}).json() == {"compatibility": "FULL"}
    assert client.get("/config").json() == {"compatibilityLevel": "FULL"}
    assert_error(client.get("/config/s"), 404, 40408)
    assert client.get("/config/s?defaultToGlobal=true").json() == {"compatibilityLevel": "FULL"}
    body = json.dumps({"compatibility": "NONE", "normalize": True})
    assert client.put("/config/s", content=body, headers=CT).json() == {"compatibility": "NONE"}
    assert client.get("/config/s").json() == {"compatibilityLevel": "NONE"}
    assert client.delete("/config/s").json() == {"compatibilityLevel": "NONE"}
    assert_error(client.delete("/config/s"), 404, 40408)
    assert_error(client.put("/config", json={"compatibility": "SIDEWAYS"}), 422, 42203)
    assert_error(client.put("/config/s", json={}), 422, 42203)
    assert client.delete("/config").json() == {"compatibilityLevel": "FULL"}
    assert client.get("/config").json() == {"compatibilityLevel": "BACKWARD"}


# (level, history registered under NONE, candidate, compatible?)
LEVEL_CASES = [
    ("NONE", [A], json.dumps({"type": "string"}), True),
    ("BACKWARD", [A], B, True),
    ("BACKWARD", [A], C, False),
    ("FORWARD", [B], A, True),
    ("FORWARD", [C], A, False),
    ("FULL", [A], B, True),
    ("FULL", [A], C, False),
    ("FULL", [C], A, False),
    # Transitive levels: the fail case is fine against the latest version, not against v1.
    ("BACKWARD", [C, A], EMAIL_INT, True),
    ("BACKWARD_TRANSITIVE", [C, A], EMAIL_INT, False),
    ("BACKWARD_TRANSITIVE", [C, A], EMAIL_DEFAULT, True),
    ("FORWARD", [C, A], NICK, True),
    ("FORWARD_TRANSITIVE", [C, A], NICK, False),
    ("FORWARD_TRANSITIVE", [C, A], C_NICK, True),
    ("FULL", [C, A], EMAIL_INT, True),
    ("FULL_TRANSITIVE", [C, A], EMAIL_INT, False),
    ("FULL_TRANSITIVE", [C, A], EMAIL_DEFAULT, True),
]


@pytest.mark.parametrize(("level", "history", "candidate", "ok"), LEVEL_CASES)
def test_levels(
    client: TestClient, level: str, history: list[str], candidate: str, ok: bool
) -> None:
    client.put("/config", json={"compatibility": "NONE"})
    for schema in history:
        assert register(client, "s", schema).status_code == 200
    client.put("/config/s", json={"compatibility": level})
    verdict = post(client, "/compatibility/subjects/s/versions?verbose=true", candidate).json()
    assert verdict["is_compatible"] is ok
    assert bool(verdict["messages"]) is not ok
    assert register(client, "s", candidate).status_code == (200 if ok else 409)


def test_compatibility_endpoint_versions(client: TestClient) -> None:
    path = "/compatibility/subjects/s/versions"
    assert post(client, f"{path}/latest", C).json() == {"is_compatible": True}  # new subject
    assert_error(post(client, f"{path}/1", C), 404, 40401)
    register(client, "s", C)
    register(client, "s", A)  # BACKWARD: dropping a field is fine
    assert post(client, f"{path}/latest", EMAIL_INT).json() == {"is_compatible": True}
    verdict = post(client, f"{path}/2?verbose=True", EMAIL_INT).json()  # the client's casing
    assert verdict["is_compatible"] is True and verdict["messages"] == []
    verdict = post(client, f"{path}/1?verbose=true", EMAIL_INT).json()
    assert verdict["is_compatible"] is False
    assert "TYPE_MISMATCH" in verdict["messages"][0]
    assert_error(post(client, f"{path}/7", A), 404, 40402)
    assert_error(post(client, f"{path}/x", A), 422, 42202)
    assert_error(post(client, f"{path}/latest", "{"), 422, 42201)


def test_soft_and_permanent_version_delete(client: TestClient) -> None:
    register(client, "s", A)
    register(client, "s", B)
    assert_error(client.delete("/subjects/s/versions/1?permanent=true"), 404, 40407)
    assert client.delete("/subjects/s/versions/1").json() == 1
    assert_error(client.delete("/subjects/s/versions/1"), 404, 40406)
    assert client.get("/subjects/s/versions").json() == [2]
    assert client.get("/subjects/s/versions?deleted=true").json() == [1, 2]
    assert client.get("/subjects/s/versions/1?deleted=true").json()["id"] == 1
    assert_error(client.get("/subjects/s/versions/1"), 404, 40402)
    assert client.get("/schemas/ids/1").json() == {"schema": A}  # ids still resolve
    assert client.get("/schemas/ids/1/versions").json() == []
    assert_error(post(client, "/subjects/s", A), 404, 40403)
    assert post(client, "/subjects/s?deleted=true", A).json()["version"] == 1
    assert client.delete("/subjects/s/versions/1?permanent=true").json() == 1
    assert client.get("/subjects/s/versions?deleted=true").json() == [2]
    assert_error(client.delete("/subjects/s/versions/5"), 404, 40402)
    assert_error(client.delete("/subjects/nope/versions/1"), 404, 40401)
    assert register(client, "s", A).json() == {"id": 1}  # re-registered: same id, new version
    assert client.get("/subjects/s/versions").json() == [2, 3]


def test_soft_and_permanent_subject_delete(client: TestClient) -> None:
    register(client, "s", A)
    register(client, "s", B)
    client.put("/config/s", json={"compatibility": "FULL"})
    assert_error(client.delete("/subjects/s?permanent=true"), 404, 40405)
    assert client.delete("/subjects/s").json() == [1, 2]
    assert_error(client.delete("/subjects/s"), 404, 40404)
    assert client.get("/subjects").json() == []
    assert client.get("/subjects?deleted=true").json() == ["s"]
    assert_error(client.get("/subjects/s/versions"), 404, 40401)
    assert client.delete("/subjects/s?permanent=true").json() == [1, 2]
    assert client.get("/subjects?deleted=true").json() == []
    assert_error(client.get("/config/s"), 404, 40408)  # the subject's config went with it
    assert_error(client.delete("/subjects/s"), 404, 40401)
    assert client.get("/schemas/ids/2").json() == {"schema": B}
    assert register(client, "s", C).json() == {"id": 3}  # ids are never reused
    assert client.get("/subjects/s/versions").json() == [1]


def test_store_failure_is_50001(tmp_path: Path) -> None:
    app = create_app(tmp_path / "registry.sqlite3")
    with TestClient(app) as client:
        app.state.store.close()
        assert_error(client.get("/subjects"), 500, 50001)
        assert_error(register(client, "s", A), 500, 50001)


def test_restart_keeps_ids_and_versions(tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    with TestClient(create_app(db)) as first:
        ids = [
            register(first, subject, schema).json()["id"]
            for subject, schema in (("a", A), ("a", B), ("b", C), ("b", B))
        ]
        first.put("/config", json={"compatibility": "NONE"})
        first.delete("/subjects/a/versions/1")
    assert ids == [1, 2, 3, 2]
    with TestClient(create_app(db)) as second:
        assert [second.get(f"/schemas/ids/{i}").json()["schema"] for i in (1, 2, 3)] == [A, B, C]
        assert second.get("/subjects/a/versions").json() == [2]
        assert second.get("/subjects/b/versions/2").json()["id"] == 2
        assert second.get("/config").json() == {"compatibilityLevel": "NONE"}
        assert register(second, "a", EMAIL_INT).json() == {"id": 4}


def test_concurrent_registrations_get_distinct_ids(tmp_path: Path) -> None:
    store = SchemaStore(tmp_path / "registry.sqlite3")
    schemas = [record({"name": f"f{i}", "type": "int", "default": i}) for i in range(40)]
    barrier = threading.Barrier(8)

    def work(i: int) -> tuple[str, int, int]:
        if i < 8:
            barrier.wait()
        subject, parsed = f"s{i % 4}", parse(schemas[i])
        found = store.register(subject, parsed.text, parsed.canonical, lambda live: None)
        return subject, found.version, found.schema_id

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(work, range(40)))
        assert sorted(schema_id for _, _, schema_id in results) == list(range(1, 41))
        for subject in ("s0", "s1", "s2", "s3"):
            assert sorted(v for s, v, _ in results if s == subject) == list(range(1, 11))
    finally:
        store.close()
