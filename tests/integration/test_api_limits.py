"""The contract's field size limits at the API (issue 12, points 4 and 9), on a real uvicorn.

The API runs the flow's own ``validate.check``, so an oversized field is ``FIELD_INVALID`` there
(REST 422, the GraphQL error's code) exactly as in the flow; a record that passes the limits but
is larger than Kafka takes is ``413 RECORD_TOO_LARGE``. Neither is ever ``503 KAFKA_UNAVAILABLE``:
a client error must not read as an outage.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from api.jwt_keys import mint_token
from core.settings import Settings
from tests.integration.api_server import ApiServer, serve
from tests.integration.conftest import read_topic, tagged_topics
from tests.integration.scratch import Scratch

pytestmark = pytest.mark.integration

WRITE = ["coherence:write"]
PUBLISH = (
    "mutation PublishSignal($input: PublishCoherenceSignalInput!) "
    "{ publishCoherenceSignal(input: $input) }"
)
_ROUTE = "/v1/coherence/signals"


@pytest.fixture(scope="module")
def tenant(module_scratch: Scratch) -> str:
    return module_scratch.tenant("lim")


@pytest.fixture(scope="module")
def server(stack: Settings, module_scratch: Scratch, tenant: str) -> Iterator[ApiServer]:
    with serve(tagged_topics(stack, module_scratch, "api")) as running:
        yield running


def _signal(tenant: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "tenantId": tenant,
        "signalId": f"lim-{uuid.uuid4().hex[:8]}",
        "type": "latency",
        "value": 0.5,
        "source": "sensor-a",
        "ts": datetime.now(UTC).isoformat(),
    }
    data.update(changes)
    return data


def _rest(server: ApiServer, tenant: str, data: dict[str, Any]) -> Any:
    token = mint_token(server.settings, tenant, WRITE)
    body = json.dumps(data).encode()
    assert len(body) <= server.settings.api.max_body_bytes  # within the body limit: not a 413
    return server.client.post(
        _ROUTE,
        content=body,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )


#: The issue's oversized fields, each in a body under the 1 MiB body limit.
OVERSIZED = {
    "signalId": {"signalId": "s" * 1_000_000},
    "type": {"type": "t" * 1_000_000},
    "source": {"source": "a" * 1_000_000},
    "one selector": {"selectors": ["x" * 1_000_000]},
    "100,000 selectors": {"selectors": [f"{i:x}" for i in range(100_000)]},
}


@pytest.mark.parametrize("case", sorted(OVERSIZED))
def test_an_oversized_field_is_422_field_invalid_over_rest_and_graphql(
    server: ApiServer, tenant: str, case: str
) -> None:
    data = _signal(tenant, **OVERSIZED[case])
    got = _rest(server, tenant, data)
    assert got.status_code == 422, got.text[:300]
    assert got.headers["content-type"] == "application/problem+json"
    assert got.json()["code"] == "FIELD_INVALID"
    assert "validate.max_" in got.json()["detail"]
    token = mint_token(server.settings, tenant, WRITE)
    gql = server.graphql({"query": PUBLISH, "variables": {"input": data}}, token)
    codes = [e["extensions"]["code"] for e in gql.json()["errors"]]
    assert codes == ["FIELD_INVALID"], gql.text[:300]


def test_fields_at_the_limits_are_published(server: ApiServer, tenant: str) -> None:
    limits = server.settings.validate
    data = _signal(
        tenant,
        signalId="s" * limits.max_id_bytes,
        type="t" * limits.max_type_bytes,
        source="sensor-a",
        selectors=["x" * limits.max_selector_bytes] * limits.max_selectors,
    )
    got = _rest(server, tenant, data)
    assert got.status_code == 202, got.text[:300]
    ids = {m.key() for m in read_topic(server.settings, server.settings.kafka.topic)}
    assert tenant.encode() in ids


def test_a_record_larger_than_kafka_takes_is_413_not_503(
    stack: Settings, scratch: Scratch, tenant: str
) -> None:
    # Limits raised past what the producer takes (message.max.bytes, 1,000,000 by default):
    # validate passes it, Kafka refuses it, and that is the client's record, not an outage.
    with serve(
        tagged_topics(stack, scratch, "api"), IGFLOW_VALIDATE_MAX_SELECTOR_BYTES=str(2_000_000)
    ) as server:
        got = _rest(server, tenant, _signal(tenant, selectors=["x" * 1_040_000]))
        assert got.status_code == 413, got.text[:300]
        assert got.json()["code"] == "RECORD_TOO_LARGE"
        assert server.client.get("/health").status_code == 200
