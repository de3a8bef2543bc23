"""The source registry on the local stack (issue 18, point 2): audited revisions in Postgres
applied by each record's Kafka timestamp; an enforced registry refusing an unregistered source's
records (``SOURCE_UNREGISTERED``, quarantine and DLQ: nothing lost), stamping the others'
provenance with their license and retention, and a replay after the registry changed coming out
identical; a record published through the API from a source registered for Kafka only refused
as ``SOURCE_TRANSPORT_MISMATCH``.

The registry lives in a scratch Postgres schema per test (``dsn``, as the switches' tests).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest

from api.jwt_keys import mint_token
from core.catalog import catalog
from core.errors import ConfigError
from core.records import Decoded, Provenance, Signal
from core.settings import Settings
from core.sources import SourceEntry
from igflow.admin import create_topics
from igflow.workload import WorkloadSpec, generate
from operators.tenancy import manifest, provenance_id
from tenancy.registry import upsert_tenant
from tenancy.sources import (
    PostgresSources,
    add_source,
    list_sources,
    remove_source,
    revisions,
    set_source,
)
from tests.conftest import SIGNAL_V1
from tests.integration.api_server import serve
from tests.integration.conftest import (
    finish,
    igflow,
    produce_workload,
    recent,
    tagged_settings,
)
from tests.integration.scratch import Scratch
from tests.integration.test_pipeline import _v1_id
from tests.integration.test_switches import dsn  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration

FEED = SourceEntry(
    "sensor-a", ("ops@example.org",), ("kafka",), "CC-BY-4.0", "", "standard-30d", "", None
)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def test_revisions_are_audited_and_apply_from_their_effective_time(dsn: str) -> None:  # noqa: F811
    first = add_source(dsn, FEED, actor="ops", note="new feed", grace_seconds=0.0)
    with pytest.raises(ConfigError, match="already registered"):
        add_source(dsn, FEED, actor="ops", grace_seconds=0.0)
    with pytest.raises(ConfigError, match="retention must look like"):
        set_source(dsn, "sensor-a", {"retention": "forever"}, actor="ops", grace_seconds=0.0)
    with pytest.raises(ConfigError, match="not registered"):
        set_source(dsn, "nope", {"license": "x"}, actor="ops", grace_seconds=0.0)
    second = set_source(
        dsn, "sensor-a", {"license": "CC0-1.0"}, actor="ops2", note="relicensed", grace_seconds=3.0
    )
    assert (second.effective_from - second.at).total_seconds() == pytest.approx(3.0, abs=0.01)
    assert second.entry is not None and second.entry.owners == FEED.owners  # the rest kept
    registry = PostgresSources(dsn, refresh_seconds=0.5)
    at_first = _ms(first.effective_from)
    assert registry.entry("sensor-a", at_first - 1) is None
    assert registry.entry("sensor-a", at_first) == FEED
    # Until its effective time, the old terms hold; from it, the new.
    assert registry.entry("sensor-a", _ms(second.effective_from) - 1) == FEED
    assert registry.entry("sensor-a", _ms(second.effective_from)) == second.entry
    # A new source reaches a running registry within refresh_seconds.
    add_source(dsn, _b(), actor="ops", grace_seconds=0.0)
    changed = time.monotonic()
    while registry.entry("sensor-b", None) is None:
        assert time.monotonic() - changed < 2.0, "not seen within refresh_seconds"
        time.sleep(0.05)
    removed = remove_source(dsn, "sensor-b", actor="ops", note="retired", grace_seconds=0.0)
    assert removed.entry is None
    assert [r.name for r in list_sources(dsn)] == ["sensor-a"]
    trail = revisions(dsn, "sensor-a")
    assert [(r.action, r.actor, r.note) for r in trail] == [
        ("add", "ops", "new feed"),
        ("set", "ops2", "relicensed"),
    ]
    assert [r.action for r in revisions(dsn)] == ["add", "set", "add", "remove"]
    # Nothing refused was written.
    assert len(revisions(dsn)) == 4


def _b() -> SourceEntry:
    return SourceEntry(
        "sensor-b", ("b@example.org",), ("kafka", "api"), "Internal", "", "standard-90d", "", None
    )


def _quarantine(settings: Settings) -> list[dict[str, object]]:
    table = catalog(settings).load_table(f"{settings.lake.namespace}.quarantine")
    rows: list[dict[str, object]] = table.scan().to_arrow().to_pylist()
    return rows


def _signals(settings: Settings) -> list[dict[str, object]]:
    table = catalog(settings).load_table(f"{settings.lake.namespace}.signals")
    rows: list[dict[str, object]] = table.scan().to_arrow().to_pylist()
    return rows


def _manifest_of(row: dict[str, object], entry: SourceEntry) -> dict[str, object]:
    item = Decoded(
        Signal(
            str(row["tenant_id"]), str(row["signal_id"]), str(row["type"]), 0.0, None,
            str(row["source"]), datetime.now(UTC),
        ),
        Provenance(
            str(row["kafka_topic"]), int(row["kafka_partition"]),  # type: ignore[call-overload]
            int(row["kafka_offset"]), int(row["schema_version"]),  # type: ignore[call-overload]
            str(row["input_hash"]),
        ),
    )  # fmt: skip
    return manifest(item, str(row["policy_version"]), entry)


def test_an_enforced_registry_refuses_stamps_and_replays_identically(
    it_settings: Settings,
    dsn: str,  # noqa: F811
) -> None:
    settings = it_settings.with_changes("stores", postgres_dsn=dsn)
    env = {
        "IGFLOW_POSTGRES_DSN": dsn,
        "IGFLOW_SOURCES_MODE": "enforce",
        "IGFLOW_SOURCES_GRACE_SECONDS": "0",
        "IGFLOW_SCORE_TICK_SECONDS": "0",
    }
    add_a = [
        "sources", "add", "sensor-a", "--owner", "ops@example.org", "--transport", "kafka",
        "--license", "CC-BY-4.0", "--retention", "standard-30d", "--note", "test",
    ]  # fmt: skip
    added = json.loads(finish(igflow(settings, *add_a, **env))[0])
    assert (added["action"], added["license"], added["transports"]) == (
        "add",
        "CC-BY-4.0",
        ["kafka"],
    )
    add_b = [
        "sources", "add", "sensor-b", "--owner", "b@example.org", "--transport", "kafka",
        "--transport", "api", "--license", "Internal", "--retention", "standard-90d",
    ]  # fmt: skip
    finish(igflow(settings, *add_b, **env))
    listed = json.loads(finish(igflow(settings, "sources", "list", "--json", **env))[0])
    assert [s["name"] for s in listed] == ["sensor-a", "sensor-b"]

    spec = WorkloadSpec(tenants=3, count=60, seed=91)
    produce_workload(settings, spec)
    finish(igflow(settings, "run", **env))

    by_key = {
        (m.record["tenant_id"], m.record["signal_id"]): m.record["source"]
        for m in generate(recent(spec), _v1_id(settings), SIGNAL_V1.parsed)
        if m.record is not None
    }
    unregistered = {k for k, s in by_key.items() if s == "feed-c"}
    assert 0 < len(unregistered) < len(by_key)
    signals = _signals(settings)
    landed = Counter((r["tenant_id"], r["signal_id"]) for r in signals)
    assert set(landed) == set(by_key) - unregistered and set(landed.values()) == {1}
    refused = [r for r in _quarantine(settings) if r["reason"] == "SOURCE_UNREGISTERED"]
    assert {(r["tenant_id"], r["detail"]) for r in refused} <= {
        (t, "source not registered") for t, _ in unregistered
    }
    # Nothing lost: every valid record landed or was refused with its reason.
    assert len(landed) + len(refused) == len(by_key)
    # Each landed signal's provenance id carries its source's license and retention.
    terms = {"sensor-a": FEED, "sensor-b": _b()}
    for row in signals:
        m = _manifest_of(row, terms[str(row["source"])])
        assert m["source_license"] == terms[str(row["source"])].license
        assert provenance_id(m) == row["provenance_id"]

    # The registry changes after the run: a replay judges and stamps by the records' Kafka
    # timestamps, so it comes out identical all the same.
    finish(igflow(settings, "sources", "set", "sensor-a", "--license", "CC0-1.0", **env))
    finish(igflow(settings, "sources", "remove", "sensor-b", **env))
    shown = json.loads(finish(igflow(settings, "sources", "show", "sensor-a", **env))[0])
    assert [r["action"] for r in shown["revisions"]] == ["add", "set"]
    assert shown["current"]["license"] == "CC0-1.0"
    into = f"{settings.lake.namespace}_replay"
    finish(igflow(settings, "replay", "--into", into, "--lake-only", **env))
    out, _err = finish(igflow(settings, "verify", "--against", into, **env))
    assert "IDENTICAL" in out
    audit = json.loads(finish(igflow(settings, "sources", "audit", "--json", **env))[0])
    assert [(a["name"], a["action"]) for a in audit] == [
        ("sensor-b", "remove"),
        ("sensor-a", "set"),
        ("sensor-b", "add"),
        ("sensor-a", "add"),
    ]


def test_a_record_published_through_the_api_by_a_kafka_only_source_is_refused(
    stack: Settings,
    scratch: Scratch,
    dsn: str,  # noqa: F811
) -> None:
    tenant = f"src-{uuid.uuid4().hex[:6]}"
    upsert_tenant(dsn, tenant)
    # Its own namespace too: the quarantine it reads must hold this run's refusals only.
    settings = tagged_settings(stack, scratch).with_changes("stores", postgres_dsn=dsn, sinks="")
    create_topics(settings)
    add_source(dsn, FEED, actor="ops", grace_seconds=0.0)  # kafka only
    add_source(dsn, _b(), actor="ops", grace_seconds=0.0)  # kafka and api
    env = {"IGFLOW_POSTGRES_DSN": dsn, "IGFLOW_SOURCES_MODE": "check"}
    publish = (
        "mutation P($input: PublishCoherenceSignalInput!) { publishCoherenceSignal(input: $input) }"
    )
    token = mint_token(settings, tenant, ["coherence:write", "coherence:read"])
    with serve(settings, **env) as server:
        for n, source in enumerate(("sensor-a", "sensor-b", "feed-c")):
            signal = {
                "tenantId": tenant,
                "signalId": f"api-{n}",
                "type": "latency",
                "value": 0.5,
                "weight": 1.0,
                "source": source,
                "ts": datetime.now(UTC).isoformat(),
            }
            body = {"query": publish, "variables": {"input": signal}}
            assert server.graphql(body, token).json() == {"data": {"publishCoherenceSignal": True}}
    finish(igflow(settings, "run", **env))
    landed = {(r["signal_id"], r["source"]) for r in _signals(settings)}
    # sensor-b may arrive by the API; feed-c is not registered (mode check: it passes unstamped).
    assert landed == {("api-1", "sensor-b"), ("api-2", "feed-c")}
    [refused] = _quarantine(settings)
    assert (refused["reason"], refused["detail"]) == (
        "SOURCE_TRANSPORT_MISMATCH",
        "transport api not registered for the source",
    )
