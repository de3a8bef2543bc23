"""The source registry without services: revisions by Kafka timestamp, transports, the rules
and their order, provenance stamps, the flow refusing and stamping (and a replay agreeing), the
settings and the CLI, and the governance gate requiring the stamp keys in the schema."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given
from pyiceberg.catalog import Catalog

from core.errors import ConfigError
from core.reasons import ReasonCode
from core.records import Decoded, RawRecord
from core.settings import SettingError, Settings
from core.signal_rules import hold
from core.sources import (
    Revision,
    SourceEntry,
    SourceRules,
    StaticSources,
    as_of,
    check_entry,
    source_verdict,
    transport_of,
)
from core.switches import NO_HOLDS
from flows.coherence import build
from igflow.cli import _parser
from igflow.governance import check as governance_check
from igflow.workload import SOURCES, WorkloadSpec, generate, tenant_ids
from operators.tenancy import TenancyPolicy, manifest, provenance_id, tag
from tenancy.registry import StaticTenants
from tests.conftest import SIGNAL_V1, V1_ID, DictSchemas, kafka_messages
from tests.memory_keys import memory_sealer
from tests.unit.test_validate import KAFKA_MS, decoded

POLICY = TenancyPolicy.load(Settings().policies_dir)
TENANTS = StaticTenants.of(*tenant_ids(3), sources=SOURCES)
ROOT = Path(__file__).resolve().parents[2]

#: One in-memory key store for the module: runs compared with each other seal alike.
SEALER = memory_sealer()


def entry(name: str = "sensor-a", **changes: Any) -> SourceEntry:
    base = SourceEntry(
        name, ("ops@example.org",), ("kafka",), "CC-BY-4.0", "", "standard-30d", "", None
    )
    return dataclasses.replace(base, **changes)


def with_headers(item: Decoded, *headers: tuple[str, bytes]) -> Decoded:
    assert item.raw is not None
    return dataclasses.replace(item, raw=dataclasses.replace(item.raw, headers=headers))


def test_a_revision_applies_from_its_effective_time_by_kafka_timestamp() -> None:
    a1, a2 = entry(license="v1"), entry(license="v2")
    revs = [Revision(1000, a1), Revision(2000, a2), Revision(3000, None)]
    assert as_of(revs, 999) is None
    assert as_of(revs, 1000) is a1  # inclusive
    assert as_of(revs, 1999) is a1
    assert as_of(revs, 2000) is a2
    assert as_of(revs, 3000) is None  # removed
    assert as_of(revs, None) is None  # no Kafka timestamp: the newest (here: removed)
    assert as_of([], 5) is None
    registry = StaticSources([entry("sensor-b")], {"sensor-a": revs})
    assert registry.entry("sensor-a", 1500) is a1
    assert registry.entry("sensor-b", 0) == entry("sensor-b")
    assert registry.entry("feed-c", 1500) is None


def test_transport_comes_from_the_api_header_and_a_release_is_not_judged() -> None:
    item = decoded()
    assert transport_of(item) == "kafka"
    assert transport_of(dataclasses.replace(item, raw=None)) == "kafka"
    assert transport_of(with_headers(item, ("traceparent", b"00-x"))) == "kafka"
    assert transport_of(with_headers(item, ("igflow.ingest.via", b"rest"))) == "api"
    released = with_headers(item, ("igflow.released.from", b"t/1/0"))
    assert transport_of(released) is None


def test_the_rules_in_their_order() -> None:
    item = decoded()  # source sensor-a, ts 1 s before its Kafka timestamp
    nothing = StaticSources()
    assert source_verdict(item, nothing, enforce=False) is None
    assert source_verdict(item, nothing, enforce=True) == (
        ReasonCode.SOURCE_UNREGISTERED,
        "source not registered",
    )
    api_only = StaticSources([entry(transports=("api",), sla_seconds=0.5)])
    # The transport is judged before the SLA window (which this record misses too).
    assert source_verdict(item, api_only, enforce=True) == (
        ReasonCode.SOURCE_TRANSPORT_MISMATCH,
        "transport kafka not registered for the source",
    )
    via_api = with_headers(item, ("igflow.ingest.via", b"graphql"))
    assert source_verdict(via_api, api_only, enforce=True) is not None
    assert source_verdict(via_api, api_only, enforce=True)[0] is ReasonCode.SOURCE_SLA_MISSED  # type: ignore[index]
    # The SLA bound is inclusive, in whole microseconds.
    exactly = StaticSources([entry(sla_seconds=1.0)])
    assert source_verdict(item, exactly, enforce=True) is None
    under = StaticSources([entry(sla_seconds=0.999999)])
    assert source_verdict(item, under, enforce=True) == (
        ReasonCode.SOURCE_SLA_MISSED,
        "reached Kafka after the source's SLA window",
    )
    # No Kafka timestamp: no SLA judgement, the newest revision.
    untimed = decoded(kafka_ms=None)
    assert source_verdict(untimed, under, enforce=True) is None
    # As a hold in the validate step: a Rejected of stage validate, with the record's bytes.
    out = hold(item, SourceRules(nothing, enforce=True))
    assert not isinstance(out, Decoded)
    assert out.reason is ReasonCode.SOURCE_UNREGISTERED and out.stage == "validate"
    assert out.record.value == b"payload"
    assert hold(item, SourceRules(nothing, enforce=False)) is item


def test_a_source_registered_later_does_not_cover_earlier_records() -> None:
    registry = StaticSources(revisions={"sensor-a": [Revision(KAFKA_MS + 1, entry())]})
    assert source_verdict(decoded(), registry, enforce=True) is not None
    later = decoded(kafka_ms=KAFKA_MS + 1)
    assert source_verdict(later, registry, enforce=True) is None


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"name": " "}, "the name is blank"),
        ({"owners": ()}, "at least one owner"),
        ({"owners": ("a", " ")}, "at least one owner"),
        ({"transports": ()}, "transports must be some of kafka, api"),
        ({"transports": ("ftp",)}, "transports must be some of kafka, api"),
        ({"license": ""}, "the license is blank"),
        ({"retention": "forever"}, "retention must look like standard-365d"),
        ({"residency": "eu"}, "residency must be upper-case letters"),
        ({"sla_seconds": 0.0}, "the SLA window must be a finite number of seconds > 0"),
        ({"sla_seconds": float("inf")}, "the SLA window must be a finite"),
        ({"sla_seconds": float("nan")}, "the SLA window must be a finite"),
    ],
)
def test_an_invalid_entry_is_refused(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        check_entry(entry(**changes))
    assert check_entry(entry()) == entry()


def test_a_registered_source_is_stamped_into_the_provenance_id() -> None:
    item = decoded(tenant_id="tenant-00")
    plain = tag(item, POLICY)
    registry = StaticSources([entry()])
    stamped = tag(item, POLICY, registry)
    m = manifest(item, POLICY.version, entry())
    assert m["source_license"] == "CC-BY-4.0" and m["source_retention"] == "standard-30d"
    assert stamped.provenance_id == provenance_id(m) != plain.provenance_id
    assert stamped.tags == plain.tags  # the tenant's tags are the policy's, unchanged
    # An unregistered source keeps the id it always had (no keys), and so does no registry.
    other = tag(decoded(tenant_id="tenant-00", source="feed-c"), POLICY, registry)
    assert (
        other.provenance_id
        == tag(decoded(tenant_id="tenant-00", source="feed-c"), POLICY).provenance_id
    )
    # A new license is a new id; the same terms, the same id.
    relicensed = StaticSources([entry(license="CC0-1.0")])
    assert tag(item, POLICY, relicensed).provenance_id != stamped.provenance_id
    assert tag(item, POLICY, StaticSources([entry()])).provenance_id == stamped.provenance_id


@given(
    license_=st.text(max_size=20),
    retention=st.text(max_size=20),
    tenant=st.text(max_size=10),
    topic=st.text(max_size=10),
)
def test_law_the_stamped_fast_path_is_the_manifests_id(
    license_: str, retention: str, tenant: str, topic: str
) -> None:
    # Any strings (escapes, non-ASCII, quotes): the hand-written canonical JSON must be
    # json.dumps's, byte for byte (core.sources refuses bad terms earlier; this is the hash).
    item = decoded(tenant_id=tenant)
    item = dataclasses.replace(item, provenance=dataclasses.replace(item.provenance, topic=topic))
    terms = entry(license=license_, retention=retention)
    stamped = tag(item, POLICY, StaticSources([terms]))
    assert stamped.provenance_id == provenance_id(manifest(item, POLICY.version, terms))


@given(
    offset=st.integers(min_value=0, max_value=2**40),
    tenant=st.sampled_from(["tenant-00", "tenant-03", "x"]),
    source=st.sampled_from(["sensor-a", "feed-c"]),
)
def test_law_unregistered_sources_keep_their_ids(offset: int, tenant: str, source: str) -> None:
    item = decoded(offset=offset, tenant_id=tenant, source=source)
    registry = StaticSources([entry("sensor-a")])
    with_registry = tag(item, POLICY, registry).provenance_id
    without = tag(item, POLICY).provenance_id
    assert (with_registry == without) is (source != "sensor-a")
    assert without == provenance_id(manifest(item, POLICY.version))


def _run(settings: Settings, records: list[RawRecord], sources: StaticSources) -> list[Any]:
    dlq: list[Any] = []
    run_main(
        build(
            settings,
            source=TestingSource(records, batch_size=10),
            lookup=DictSchemas({V1_ID: SIGNAL_V1.text}),
            dlq=TestingSink(dlq),
            tenants=TENANTS,
            holds=NO_HOLDS,
            policy=POLICY,
            sealer=SEALER,
            sources=sources,
        )
    )
    return dlq


def _rows(catalog: Catalog, namespace: str, table: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (
        catalog.load_table(f"{namespace}.{table}").scan().to_arrow().to_pylist()
    )
    return rows


def test_the_flow_refuses_unregistered_sources_and_stamps_registered_ones(
    lake_settings: Settings, catalog: Catalog
) -> None:
    workload = list(generate(WorkloadSpec(tenants=3, count=40, seed=5), V1_ID, SIGNAL_V1.parsed))
    records = kafka_messages(workload)
    registry = StaticSources([entry("sensor-a"), entry("sensor-b", license="Internal")])
    settings = lake_settings.with_changes("sources", mode="enforce")
    dlq = _run(settings, records, registry)

    valid = {(m.record["tenant_id"], m.record["signal_id"]): m.record for m in workload if m.record}
    refused = {k for k, r in valid.items() if r["source"] == "feed-c"}
    assert 0 < len(refused) < len(valid)
    signals = _rows(catalog, "coherence", "signals")
    landed = {(r["tenant_id"], r["signal_id"]) for r in signals}
    assert landed == set(valid) - refused
    quarantine = _rows(catalog, "coherence", "quarantine")
    assert Counter(r["reason"] for r in quarantine) == {"SOURCE_UNREGISTERED": len(refused)}
    reasons = Counter(dict(m.headers)["igflow.reason"].decode() for m in dlq)
    assert reasons == {"SOURCE_UNREGISTERED": len(refused)}
    # A replay with the same registry (mode check: nothing refused, but the same stamps) gives
    # the same ids for the records both landed; mode off gives the unstamped ids.
    again = lake_settings.with_changes("lake", namespace="again").with_changes(
        "sources", mode="enforce"
    )
    _run(again, records, registry)

    def ids(ns: str) -> dict[tuple[str, str], str]:
        return {
            (r["tenant_id"], r["signal_id"]): r["provenance_id"]
            for r in _rows(catalog, ns, "signals")
        }

    assert ids("again") == ids("coherence")
    off = lake_settings.with_changes("lake", namespace="off")
    _run(off, records, registry)
    unstamped = ids("off")
    assert set(unstamped) == set(valid)  # mode off: nothing refused
    assert all(unstamped[k] != v for k, v in ids("coherence").items())


def test_sources_settings() -> None:
    s = Settings()
    assert (s.sources.mode, s.sources.refresh_seconds, s.sources.grace_seconds) == ("off", 2.0, 5.0)
    assert Settings().with_changes("sources", mode="enforce").sources.mode == "enforce"
    with pytest.raises(SettingError, match=r"sources\.mode"):
        Settings().with_changes("sources", mode="strict")
    with pytest.raises(SettingError, match=r"sources\.refresh_seconds"):
        Settings().with_changes("sources", refresh_seconds=0)


def test_the_cli_parses_sources_commands() -> None:
    parser = _parser()
    args = parser.parse_args(
        [
            "sources", "add", "sensor-a", "--owner", "a", "--owner", "b", "--transport", "kafka",
            "--license", "CC0", "--retention", "standard-30d", "--residency", "EU",
            "--sla-seconds", "60", "--note", "new feed",
        ]
    )  # fmt: skip
    assert (args.action, args.name, args.owner, args.transport) == (
        "add",
        "sensor-a",
        ["a", "b"],
        ["kafka"],
    )
    assert (args.residency, args.sla_seconds, args.note) == ("EU", 60.0, "new feed")
    assert parser.parse_args(["sources", "set", "x", "--no-sla"]).no_sla
    assert parser.parse_args(["sources", "audit"]).name is None
    with pytest.raises(SystemExit):
        parser.parse_args(["sources", "add", "x", "--transport", "ftp"])


def test_governance_requires_the_stamp_keys_in_the_provenance_schema(tmp_path: Path) -> None:
    provenance = tmp_path / "provenance"
    provenance.mkdir()
    shutil.copy(ROOT / "schemas/provenance/manifest.v1.json", provenance)
    lock = json.loads((ROOT / "schemas/provenance/lock.json").read_text())
    (provenance / "lock.json").write_text(
        json.dumps({"manifest.v1.json": lock["manifest.v1.json"]})
    )
    findings = governance_check(ROOT / "schemas/avro", ROOT / "policies", provenance)
    assert any(
        f.code == "PROVENANCE_SCHEMA_MISMATCH" and "source_license" in f.message for f in findings
    ), findings
    shutil.copy(ROOT / "schemas/provenance/manifest.v2.json", provenance)
    shutil.copy(ROOT / "schemas/provenance/lock.json", provenance)
    assert governance_check(ROOT / "schemas/avro", ROOT / "policies", provenance) == []
