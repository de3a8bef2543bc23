"""The PSI server over HTTP (Starlette TestClient) and the CSV selector source."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from core.reasons import ReasonCode
from psi import (
    Agreement,
    Cardinality,
    ClientConfig,
    Denial,
    GroupBatch,
    HttpTransport,
    Intersection,
    PolicyConfig,
    PsiClient,
    PsiMode,
    PsiPolicy,
    PsiServer,
    ServerConfig,
    load_selectors_csv,
)
from psi.client import PSI_PATH
from psi.messages import DENIAL_BYTES, TableRequest, decode, encode
from psi.server import create_app

POLICY = PolicyConfig(
    agreements=(Agreement("agency-a", min_batch=2), Agreement("agency-b", min_batch=2))
)


@pytest.fixture(scope="module")
def batch() -> Iterator[GroupBatch]:
    with GroupBatch(2) as b:
        yield b


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "selectors.csv"
    rows = [
        "kind,selector",
        "email, alice@example.org ",
        "phone,+15550100",
        "phone,",
        "email,bob@example.org",
    ]
    path.write_text("\n".join(rows) + "\nemail,alice@example.org\n", encoding="utf-8")
    return path


@pytest.fixture
def http(csv_file: Path, batch: GroupBatch) -> Iterator[TestClient]:
    policy = PsiPolicy.load(POLICY)
    server = PsiServer(
        load_selectors_csv(csv_file, "selector"),
        policy,
        ServerConfig(max_batch=1000),
        batch=batch,
    )
    with TestClient(create_app(server)) as client:
        yield client


def client_over(http: TestClient, batch: GroupBatch, partner: str = "agency-a") -> PsiClient:
    transport = HttpTransport(http, PSI_PATH, partner_id=partner, region="US")
    policy = PsiPolicy.load(POLICY)
    return PsiClient(transport, policy, ClientConfig("agency-b", "US"), batch=batch)


def test_csv_loader(csv_file: Path) -> None:
    by_name = load_selectors_csv(csv_file, "selector")
    assert by_name.items == ("alice@example.org", "+15550100", "bob@example.org")
    by_index = load_selectors_csv(csv_file, 0)
    assert by_index.items == ("email", "phone")
    with pytest.raises(ValueError):
        load_selectors_csv(csv_file, "missing")
    with pytest.raises(ValueError):
        load_selectors_csv(csv_file, "selector", header=False)


def test_both_modes_over_http(http: TestClient, batch: GroupBatch) -> None:
    client = client_over(http, batch)
    mine = ["bob@example.org", "carol@example.org", "+15550100"]
    full = client.intersect(mine, PsiMode.FULL_INTERSECTION)
    assert isinstance(full, Intersection) and full.items == ("bob@example.org", "+15550100")
    card = client.intersect(mine, PsiMode.INTERSECTION_CARDINALITY)
    assert isinstance(card, Cardinality) and card.count == 2


def test_denials_over_http_are_constant_size(http: TestClient, batch: GroupBatch) -> None:
    stranger = client_over(http, batch, partner="stranger")
    assert stranger.intersect(["a", "b"], PsiMode.FULL_INTERSECTION) == Denial(
        ReasonCode.POLICY_GEO_BLOCK
    )
    anonymous = http.post(PSI_PATH, content=encode(TableRequest(PsiMode.FULL_INTERSECTION)))
    garbage = http.post(PSI_PATH, content=b"\x00" * 64, headers={"x-igflow-partner": "agency-a"})
    for reply in (anonymous, garbage):
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "application/octet-stream"
        assert len(reply.content) == DENIAL_BYTES
    assert decode(anonymous.content) == Denial(ReasonCode.POLICY_GEO_BLOCK)
    assert decode(garbage.content) == Denial(ReasonCode.MALFORMED)


def test_an_oversize_body_is_malformed_not_an_error(http: TestClient) -> None:
    reply = http.post(PSI_PATH, content=b"IGPS" + bytes(2_000_000))
    assert reply.status_code == 200
    assert decode(reply.content) == Denial(ReasonCode.MALFORMED)


def test_http_errors_read_as_malformed(http: TestClient, batch: GroupBatch) -> None:
    transport = HttpTransport(http, "/nowhere", partner_id="agency-a", region="US")
    assert decode(transport(encode(TableRequest(PsiMode.FULL_INTERSECTION)))) == Denial(
        ReasonCode.MALFORMED
    )
    assert http.get(PSI_PATH).status_code == 405
    assert http.get("/healthz").text == "ok"
