"""Kill switches on the local stack (issue 18, point 1): audited changes in Postgres, honoured
within ``switches.refresh_seconds``; a switched-off source's records held as ``SOURCE_DISABLED``
and landed exactly once after ``igflow switch on``; API operations switched off and on.

The switches live in a scratch Postgres schema per test (the DSN's ``search_path``) with the
project's migrations and the demo tenants, so the stack's own switches are never touched.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from api.jwt_keys import mint_token
from core.catalog import catalog
from core.errors import ConfigError
from core.settings import Settings
from core.switches import SwitchKind
from igflow.switch_release import release_held
from igflow.workload import WorkloadSpec
from tenancy.registry import upsert_tenant
from tenancy.switches import PostgresSwitches, audit_log, list_switches, set_switch
from tests.integration.api_server import serve, subscribe
from tests.integration.conftest import (
    QUICK_IDLE_FLUSH,
    expected_valid,
    finish,
    fresh_schema,
    igflow,
    json_lines,
    lake_count,
    produce_workload,
    tagged_topics,
)
from tests.integration.scratch import Scratch
from tests.integration.test_pipeline import _v1_id

pytestmark = pytest.mark.integration


@pytest.fixture
def dsn(stack: Settings) -> Iterator[str]:
    """A DSN whose tables (migrations applied, demo tenants seeded) live in a fresh schema."""
    with fresh_schema(stack.stores.postgres_dsn, "it_switch", 10) as scoped:
        yield scoped


def test_changes_are_audited_and_seen_within_refresh_seconds(dsn: str) -> None:
    board = PostgresSwitches(dsn, refresh_seconds=0.5)
    assert not board.is_off(SwitchKind.SOURCE, "feed-c")
    set_switch(dsn, "source", "feed-c", enabled=False, actor="ops", note="vendor outage")
    changed = time.monotonic()
    while not board.is_off(SwitchKind.SOURCE, "feed-c"):
        assert time.monotonic() - changed < 2.0, "not seen within refresh_seconds"
        time.sleep(0.05)
    seen_after = time.monotonic() - changed
    assert seen_after <= 0.5 + 0.3
    set_switch(dsn, "source", "feed-c", enabled=True, actor="ops2", note="back")
    set_switch(dsn, "operation", "publish", enabled=False, actor="ops")
    [publish, feed] = list_switches(dsn)  # by kind, then name
    assert (feed.kind, feed.name, feed.enabled, feed.updated_by, feed.note) == (
        SwitchKind.SOURCE,
        "feed-c",
        True,
        "ops2",
        "back",
    )
    assert (publish.kind, publish.enabled) == (SwitchKind.OPERATION, False)
    trail = audit_log(dsn, "source", "feed-c")
    assert [(e.was_enabled, e.enabled, e.actor, e.note) for e in trail] == [
        (False, True, "ops2", "back"),
        (None, False, "ops", "vendor outage"),
    ]
    assert len(audit_log(dsn)) == 3


def test_an_unknown_operation_or_kind_is_refused_and_audits_nothing(dsn: str) -> None:
    for kind, name in (("operation", "delete"), ("flow", "nope"), ("bogus", "x"), ("source", " ")):
        with pytest.raises(ConfigError):
            set_switch(dsn, kind, name, enabled=False, actor="ops")
    assert audit_log(dsn) == []


def _quarantine(settings: Settings) -> list[dict[str, object]]:
    table = catalog(settings).load_table(f"{settings.lake.namespace}.quarantine")
    rows: list[dict[str, object]] = table.scan().to_arrow().to_pylist()
    return rows


def _signals(settings: Settings) -> list[tuple[str, str, str]]:
    table = catalog(settings).load_table(f"{settings.lake.namespace}.signals")
    return [
        (r["tenant_id"], r["signal_id"], r["source"]) for r in table.scan().to_arrow().to_pylist()
    ]


def test_a_switched_off_source_is_held_then_lands_exactly_once(
    it_settings: Settings, dsn: str
) -> None:
    settings = it_settings.with_changes("stores", postgres_dsn=dsn)
    # Every score change (no tick coalescing): the original is two bounded runs, and each flushes
    # its open score ticks at its end, which one replay over both ranges does not (README, "Score
    # changes: one per tenant per tick").
    env = {"IGFLOW_POSTGRES_DSN": dsn, "IGFLOW_SCORE_TICK_SECONDS": "0"}
    off = finish(igflow(settings, "switch", "off", "source", "feed-c", "--note", "test", **env))
    assert json.loads(off[0])["enabled"] is False

    spec = WorkloadSpec(tenants=3, count=60, seed=81)
    produce_workload(settings, spec)
    finish(igflow(settings, "run", **env))

    valid = expected_valid(spec, _v1_id(settings))
    landed = _signals(settings)
    assert {s for _t, _i, s in landed} == {"sensor-a", "sensor-b"}
    quarantine = _quarantine(settings)
    held = [r for r in quarantine if r["reason"] == "SOURCE_DISABLED"]
    assert len(held) == len(quarantine) > 0
    assert {r["detail"] for r in held} == {"source switched off: feed-c"}
    # Nothing lost: every valid record either landed or is held.
    assert {(t, i) for t, i, _s in landed} <= valid
    assert len(landed) + len(held) == len(valid)

    on = finish(igflow(settings, "switch", "on", "source", "feed-c", "--no-wait", **env))
    lines = list(json_lines(on[0]))
    assert lines[-1]["released"] == len(held) and lines[-1]["already_released"] == 0
    # A second release sends nothing again.
    again = release_held(settings, SwitchKind.SOURCE, "feed-c")
    assert (again.held, again.already, again.sent) == (len(held), len(held), 0)

    finish(igflow(settings, "run", **env))
    landed = _signals(settings)
    keys = Counter((t, i) for t, i, _s in landed)
    assert set(keys) == valid and set(keys.values()) == {1}
    assert Counter(s for _t, _i, s in landed)["feed-c"] == len(held)
    trail = audit_log(dsn, "source", "feed-c")
    assert [e.enabled for e in trail] == [True, False]

    # A replay of everything, with the switch on now, holds what the original held (by
    # position) and lands the released copies: the lake comes out identical.
    into = f"{settings.lake.namespace}_replay"
    finish(igflow(settings, "replay", "--into", into, "--lake-only", **env))
    out, _err = finish(igflow(settings, "verify", "--against", into, **env))
    assert "IDENTICAL" in out


def test_a_switched_off_flow_stops_consuming_and_resumes_when_on(
    it_settings: Settings, dsn: str
) -> None:
    settings = it_settings.with_changes("stores", postgres_dsn=dsn)
    env = {
        "IGFLOW_POSTGRES_DSN": dsn,
        "IGFLOW_SWITCHES_REFRESH_SECONDS": "0.5",
        **QUICK_IDLE_FLUSH,
    }
    set_switch(dsn, "flow", "coherence", enabled=False, actor="ops", note="maintenance")
    spec = WorkloadSpec(tenants=2, count=40, seed=83)
    produce_workload(settings, spec)
    proc = igflow(settings, "run", "--tail", **env)
    time.sleep(8.0)  # started, partitions built, asked the board many times
    assert proc.poll() is None
    assert lake_count(settings) == 0
    set_switch(dsn, "flow", "coherence", enabled=True, actor="ops")
    valid = expected_valid(spec, _v1_id(settings))
    deadline = time.monotonic() + 90
    while lake_count(settings) < len(valid):
        assert proc.poll() is None
        assert time.monotonic() < deadline, f"{lake_count(settings)} of {len(valid)} landed"
        time.sleep(0.5)
    keys = Counter((t, i) for t, i, _s in _signals(settings))
    assert set(keys) == valid and set(keys.values()) == {1}


def test_an_api_operation_switched_off_and_on(stack: Settings, scratch: Scratch, dsn: str) -> None:
    tenant = f"sw-{uuid.uuid4().hex[:6]}"
    upsert_tenant(dsn, tenant)
    settings = tagged_topics(stack, scratch, "switch")
    publish = (
        "mutation P($input: PublishCoherenceSignalInput!) { publishCoherenceSignal(input: $input) }"
    )
    signal = {
        "tenantId": tenant,
        "type": "latency",
        "value": 0.5,
        "weight": 1.0,
        "source": "sensor-a",
        "ts": datetime.now(UTC).isoformat(),
    }
    token = mint_token(settings, tenant, ["coherence:write", "coherence:read"])
    refresh = 0.5
    with serve(
        settings, IGFLOW_POSTGRES_DSN=dsn, IGFLOW_SWITCHES_REFRESH_SECONDS=str(refresh)
    ) as server:
        body = {"query": publish, "variables": {"input": signal}}
        assert server.graphql(body, token).json() == {"data": {"publishCoherenceSignal": True}}
        set_switch(dsn, "operation", "publish", enabled=False, actor="ops")
        changed = time.monotonic()
        while True:
            got = server.graphql(body, token).json()
            if got.get("errors"):
                break
            assert time.monotonic() - changed < refresh + 2.0, got
            time.sleep(0.05)
        [error] = got["errors"]
        assert error["extensions"]["code"] == "OPERATION_DISABLED"
        assert "Traceback" not in json.dumps(got)
        rest = server.client.post(
            "/v1/coherence/signals",
            json=signal,
            headers={"authorization": f"Bearer {token}"},
        )
        assert rest.status_code == 503
        assert rest.json()["code"] == "OPERATION_DISABLED"
        # Reading is another operation: not switched off.
        read = server.graphql(
            {
                "query": "query R($t: ID!) { tenantCoherence(tenantId: $t) { score } }",
                "variables": {"t": tenant},
            },
            token,
        ).json()
        assert read["errors"][0]["extensions"]["code"] != "OPERATION_DISABLED"
        set_switch(dsn, "operation", "publish", enabled=True, actor="ops")
        changed = time.monotonic()
        while server.graphql(body, token).json().get("errors"):
            assert time.monotonic() - changed < refresh + 2.0
            time.sleep(0.05)
        # Subscribing: the protocol's error message, with the code, and no subscription.
        set_switch(dsn, "operation", "subscribe", enabled=False, actor="ops")
        time.sleep(refresh + 0.3)
        sub = (
            "subscription S($t: ID!) { coherenceScoreChanged(tenantId: $t) "
            "{ tenantId score status updatedAt } }"
        )
        auth = {"Authorization": f"Bearer {token}"}
        with subscribe(server, sub, {"t": tenant}, auth) as (ws, op_id):
            message = json.loads(ws.recv(timeout=10))
        assert message["type"] == "error" and message["id"] == op_id
        assert [e["extensions"]["code"] for e in message["payload"]] == ["OPERATION_DISABLED"]
    audited = [(e.name, e.enabled) for e in audit_log(dsn, "operation", "publish")]
    assert audited == [("publish", True), ("publish", False)]
