"""redact: each rule, determinism, tenant separation, the manifest naming the rules, the step."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import shutil
from datetime import UTC, datetime
from pathlib import Path

import bytewax.operators as op
import hypothesis.strategies as st
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given

from core.envelope import FieldCipher
from core.errors import SchemaError
from core.records import Decoded, Provenance, RawRecord, Signal, Tagged, input_hash
from core.sources import SourceEntry, StaticSources
from operators.redact import (
    ALLOWED,
    MANIFEST_KEY,
    RedactionPolicy,
    keyed_hash,
    mask,
    redact,
    redact_reference,
    redact_run,
    redact_step,
    redacted_manifest,
    rule_problems,
)
from operators.tenancy import TenancyPolicy, manifest, provenance_id, tag
from sinks.dlq import _json_default
from tests.runs import pairs, random_runs

POLICIES = Path(__file__).resolve().parents[2] / "policies"
TOPIC = "coherence.signals.v1"
RULES = {
    "tenant-r": {"signal_id": "hash", "source": "hash", "type": "mask", "selectors": "hash"},
    "tenant-d": {"selectors": "drop"},
    "tenant-m": {"selectors": "mask", "type": "hash"},
}


def fake_mac(tenant_id: str, ts: datetime, message: bytes) -> bytes:
    """The real field cipher's MAC under a fixed key per tenant (the key store's is random)."""
    return FieldCipher(hashlib.sha256(b"test key " + tenant_id.encode()).digest(), 1).mac(message)


def bundle_with(tmp_path: Path, rules: object) -> Path:
    folder = Path(shutil.copytree(POLICIES, tmp_path / "policies"))
    (folder / "redaction.json").write_text(json.dumps({"redaction": {"tenants": rules}}))
    return folder


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> RedactionPolicy:
    return RedactionPolicy.load(bundle_with(tmp_path_factory.mktemp("r"), RULES))


@pytest.fixture(scope="module")
def tenancy() -> TenancyPolicy:
    return TenancyPolicy.load(POLICIES)


def tagged(tenancy: TenancyPolicy, tenant_id: str = "tenant-r", offset: int = 0) -> Tagged:
    value = f"{tenant_id}/{offset}/secret-payload".encode()
    signal = Signal(
        tenant_id=tenant_id,
        signal_id=f"signal-secret-{offset}",
        type="login-failure",
        value=0.25,
        weight=2.0,
        source="sensor-secret",
        ts=datetime(2026, 1, 1, 12, 0, offset % 60, tzinfo=UTC),
        selectors=("alice@example.com", "10.0.0.7"),
    )
    provenance = Provenance(TOPIC, 0, offset, 2, input_hash(value))
    raw = RawRecord(TOPIC, 0, offset, tenant_id.encode(), value)
    return tag(Decoded(signal, provenance, None, raw), tenancy)


def test_the_shipped_policy_gives_no_tenant_rules_and_leaves_records_alone(
    tenancy: TenancyPolicy,
) -> None:
    shipped = RedactionPolicy.load(POLICIES)
    item = tagged(tenancy, "tenant-00")
    assert shipped.rules("tenant-00") == ()
    assert redact(item, shipped, fake_mac) is item  # the very object: ids unchanged


def test_hash_is_the_tenants_hmac_of_field_and_value(
    policy: RedactionPolicy, tenancy: TenancyPolicy
) -> None:
    item = tagged(tenancy)
    out = redact(item, policy, fake_mac)
    ts = item.signal.ts
    expected = fake_mac("tenant-r", ts, b"signal_id\x00signal-secret-0").hex()
    assert out.signal.signal_id == expected and len(expected) == 64
    assert out.signal.source == keyed_hash(fake_mac, "tenant-r", ts, "source", "sensor-secret")
    assert out.signal.selectors == tuple(
        keyed_hash(fake_mac, "tenant-r", ts, "selectors", s) for s in item.signal.selectors
    )
    assert out.signal.type == "*********lure"  # masked: 13 characters, the last 4 shown
    # What no rule names is kept; tenant, measures and time are never redacted.
    s, r = item.signal, out.signal
    assert (r.tenant_id, r.value, r.weight, r.ts) == (s.tenant_id, s.value, s.weight, s.ts)


def test_drop_empties_the_selectors_and_mask_keeps_their_shape(
    policy: RedactionPolicy, tenancy: TenancyPolicy
) -> None:
    dropped = redact(tagged(tenancy, "tenant-d"), policy, fake_mac)
    assert dropped.signal.selectors == ()
    assert dropped.signal.signal_id == "signal-secret-0"  # only the named field
    masked = redact(tagged(tenancy, "tenant-m"), policy, fake_mac)
    assert [len(x) for x in masked.signal.selectors] == [17, 8]
    assert masked.signal.selectors == (mask("alice@example.com"), mask("10.0.0.7"))
    assert masked.signal.selectors == ("*************.com", "****.0.7")


def test_a_redacted_record_carries_no_raw_bytes_even_into_a_dead_letter(
    policy: RedactionPolicy, tenancy: TenancyPolicy
) -> None:
    item = tagged(tenancy)
    out = redact(item, policy, fake_mac)
    assert out.decoded.raw is None
    # A serving store's dead letter is the item as JSON (sinks/dlq.py SinkDeadLetters).
    letter = json.dumps(dataclasses.asdict(out), default=_json_default, sort_keys=True)
    for secret in ("signal-secret", "sensor-secret", "alice@example.com", "10.0.0.7", "secret"):
        assert secret not in letter
        assert secret.encode().hex() not in letter
    original = json.dumps(dataclasses.asdict(item), default=_json_default, sort_keys=True)
    assert "signal-secret" in original  # the check above can fail


def test_the_provenance_id_names_the_rules_and_the_policy(
    policy: RedactionPolicy, tenancy: TenancyPolicy
) -> None:
    item = tagged(tenancy)
    out = redact(item, policy, fake_mac)
    stamped = manifest(item.decoded, item.policy_version)
    assert item.provenance_id == provenance_id(stamped)
    stamped[MANIFEST_KEY] = {"policy": policy.version, "rules": RULES["tenant-r"]}
    assert out.provenance_id == provenance_id(stamped) != item.provenance_id
    rules = policy.rules("tenant-r")
    assert redacted_manifest(item.decoded, item.policy_version, rules, policy.version) == stamped
    # Without rules the manifest has no redaction key: ids of other tenants are as before.
    assert MANIFEST_KEY not in redacted_manifest(item.decoded, item.policy_version, (), "x")


def test_another_redaction_policy_gives_another_id(
    tmp_path: Path, policy: RedactionPolicy, tenancy: TenancyPolicy
) -> None:
    other = RedactionPolicy.load(bundle_with(tmp_path, {**RULES, "tenant-x": {"type": "mask"}}))
    assert other.version != policy.version
    item = tagged(tenancy)
    assert redact(item, other, fake_mac).signal == redact(item, policy, fake_mac).signal
    assert (
        redact(item, other, fake_mac).provenance_id != redact(item, policy, fake_mac).provenance_id
    )


def test_two_tenants_hash_the_same_value_differently(
    tmp_path: Path, tenancy: TenancyPolicy
) -> None:
    both = RedactionPolicy.load(
        bundle_with(
            tmp_path, {"tenant-a": {"signal_id": "hash"}, "tenant-b": {"signal_id": "hash"}}
        )
    )
    a = redact(tagged(tenancy, "tenant-a"), both, fake_mac).signal
    b = redact(tagged(tenancy, "tenant-b"), both, fake_mac).signal
    assert a.signal_id != b.signal_id


@given(st.text(max_size=300))
def test_mask_keeps_the_length_shows_at_most_half_and_is_idempotent(text: str) -> None:
    masked = mask(text)
    assert len(masked) == len(text)
    assert len(masked.encode()) <= len(text.encode())  # never past the contract's byte limits
    shown = len(masked) - len(masked.lstrip("*"))  # (a value may itself end in stars)
    assert masked[:shown] == "*" * shown and shown >= len(text) - min(4, len(text) // 2)
    assert masked.endswith(text[len(text) - min(4, len(text) // 2) :])
    assert mask(masked) == masked


@given(st.text(max_size=64), st.text(max_size=64))
def test_keyed_hash_is_deterministic_and_separates_values_and_fields(x: str, y: str) -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    h = keyed_hash(fake_mac, "t", ts, "signal_id", x)
    assert h == keyed_hash(fake_mac, "t", ts, "signal_id", x)
    assert (h == keyed_hash(fake_mac, "t", ts, "signal_id", y)) == (x == y)
    assert h != keyed_hash(fake_mac, "t", ts, "source", x)
    assert h != keyed_hash(fake_mac, "u", ts, "signal_id", x)


@pytest.fixture(scope="module")
def unpickled(policy: RedactionPolicy) -> RedactionPolicy:
    """Another instance of the same policy (another interpreter, another cache)."""
    copy: RedactionPolicy = pickle.loads(pickle.dumps(policy))
    return copy


@given(st.lists(st.sampled_from([*sorted(RULES), "tenant-00"]), max_size=30))
def test_redaction_is_a_function_of_the_record_and_leaves_ruleless_tenants_alone(
    policy: RedactionPolicy, unpickled: RedactionPolicy, tenancy: TenancyPolicy, tenants: list[str]
) -> None:
    items = [tagged(tenancy, t, i) for i, t in enumerate(tenants)]
    once = [redact(i, policy, fake_mac) for i in items]
    assert once == [redact(i, unpickled, fake_mac) for i in items]
    for item, out in zip(items, once, strict=True):
        assert (out is item) == (item.signal.tenant_id not in RULES)


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ({"tenant_id": "hash"}, ("tenant_id", "field")),
        ({"value": "mask"}, ("value", "field")),
        ({"region": "drop"}, ("region", "field")),
        ({"signal_id": "mask"}, ("signal_id", "rule")),
        ({"type": "drop"}, ("type", "rule")),
        ({"selectors": "shred"}, ("selectors", "rule")),
        ({"selectors": 1}, ("selectors", "rule")),
    ],
)
def test_an_unusable_rule_is_refused_at_start_up(
    tmp_path: Path, rules: dict[str, object], problem: tuple[str, str]
) -> None:
    assert rule_problems(rules) == [problem]
    with pytest.raises(SchemaError, match="tenant-bad"):
        RedactionPolicy.load(bundle_with(tmp_path, {"tenant-bad": rules}))


def test_every_allowed_field_and_rule_is_usable() -> None:
    for field, rules in ALLOWED.items():
        for rule in rules:
            assert rule_problems({field: rule}) == []


def test_a_pickled_policy_keeps_its_version_and_rules(policy: RedactionPolicy) -> None:
    copy = pickle.loads(pickle.dumps(policy))
    assert copy.version == policy.version
    assert copy.rules("tenant-r") == policy.rules("tenant-r")


def test_the_step_redacts_each_tenant_by_its_rules_in_order(
    policy: RedactionPolicy, tenancy: TenancyPolicy
) -> None:
    items = [tagged(tenancy, t, i) for i, t in enumerate(["tenant-r", "tenant-00", "tenant-d"] * 3)]
    flow = Dataflow("redact_test")
    keyed = random_runs(
        "key", op.input("in", flow, TestingSource(items)), lambda t: t.signal.tenant_id, seed=2
    )
    got: list[tuple[str, Tagged]] = []
    out = redact_step("redact", keyed, policy, fake_mac)
    op.output("out", pairs("out_pairs", out), TestingSink(got))
    run_main(flow)
    # Runs group a batch's records by tenant: each tenant's keep their order.
    for tenant in ("tenant-r", "tenant-00", "tenant-d"):
        mine = [i for i in items if i.signal.tenant_id == tenant]
        assert [v for k, v in got if k == tenant] == [redact(i, policy, fake_mac) for i in mine]
        changed = [
            v.signal.signal_id != i.signal.signal_id
            for (_k, v), i in zip([kv for kv in got if kv[0] == tenant], mine, strict=True)
        ]
        assert changed == [tenant == "tenant-r"] * 3


def test_a_run_of_ruleless_tenants_passes_as_it_is(
    policy: RedactionPolicy, tenancy: TenancyPolicy
) -> None:
    """No tenant of the run has rules: the run itself, read once (no record rebuilt); one
    tenant with rules among them: each record by its tenant's rules, in order."""
    plain = [tagged(tenancy, t, i) for i, t in enumerate(["tenant-00", "tenant-01"] * 3)]
    assert redact_run(plain, policy, fake_mac) is plain
    mixed = [*plain, tagged(tenancy, "tenant-r", 9), tagged(tenancy, "tenant-00", 10)]
    out = redact_run(mixed, policy, fake_mac)
    assert out == [redact(i, policy, fake_mac) for i in mixed]
    assert [o is i for o, i in zip(out, mixed, strict=True)] == [True] * 6 + [False, True]
    assert redact_run([], policy, fake_mac) == []


def test_the_records_rebuilt_field_by_field_keep_every_field() -> None:
    """``redact`` rebuilds Signal, Decoded and Tagged positionally: a new field on any of them
    must be added there (this fails until it is)."""
    assert [f.name for f in dataclasses.fields(Signal)] == [
        *("tenant_id", "signal_id", "type", "value", "weight", "source", "ts", "selectors"),
    ]
    assert [f.name for f in dataclasses.fields(Decoded)] == [
        *("signal", "provenance", "kafka_timestamp_ms", "raw", "unknown_fields", "trace"),
        "horizon",
    ]
    assert [f.name for f in dataclasses.fields(Tagged)] == [
        *("decoded", "tags", "policy_version", "provenance_id"),
    ]


@given(
    tenant=st.sampled_from([*sorted(RULES), "tenant-00"]),
    offset=st.integers(min_value=0, max_value=2**40),
    selectors=st.lists(st.text(max_size=20), max_size=4),
    trace=st.none() | st.just("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    topic=st.text(min_size=1, max_size=10),
)
def test_redact_equals_its_reference(
    policy: RedactionPolicy,
    tenancy: TenancyPolicy,
    tenant: str,
    offset: int,
    selectors: list[str],
    trace: str | None,
    topic: str,
) -> None:
    item = tagged(tenancy, tenant, offset)
    d = item.decoded
    d = dataclasses.replace(
        d,
        signal=dataclasses.replace(d.signal, selectors=tuple(selectors)),
        provenance=dataclasses.replace(d.provenance, topic=topic),
        unknown_fields=("extra",),
        trace=trace,
        kafka_timestamp_ms=offset,
        horizon=d.signal.ts if offset % 2 else None,
    )
    item = tag(d, tenancy)
    redacted = redact(item, policy, fake_mac)
    assert redacted == redact_reference(item, policy, fake_mac)
    # The horizon is not compared: it must be kept all the same (the score step reads it).
    assert repr(redacted) == repr(redact_reference(item, policy, fake_mac))
    assert redacted.decoded.horizon == d.horizon


def test_an_unusual_value_type_takes_the_general_path_to_the_same_id(
    policy: RedactionPolicy, tenancy: TenancyPolicy
) -> None:
    item = tagged(tenancy)
    d = item.decoded
    odd = dataclasses.replace(d, provenance=dataclasses.replace(d.provenance, kafka_partition=True))
    item = tag(odd, tenancy)
    assert redact(item, policy, fake_mac) == redact_reference(item, policy, fake_mac)


def test_a_redacted_id_keeps_the_registered_sources_stamps(
    policy: RedactionPolicy, tenancy: TenancyPolicy
) -> None:
    # tenant-r hashes `source`: the registry is looked up with the source as sent, and the
    # redacted manifest keeps tenant-tag's license and retention stamps (merge of issue 18's
    # points 2 and 4).
    terms = SourceEntry(
        "sensor-secret", ("ops@example.org",), ("kafka",), "CC-BY-4.0", "", "standard-30d", "", None
    )
    sources = StaticSources([terms])
    plain = tagged(tenancy)
    item = tag(plain.decoded, tenancy, sources)
    assert item.provenance_id != plain.provenance_id
    out = redact(item, policy, fake_mac, sources)
    assert out.signal.source != "sensor-secret"
    rules = tuple(sorted(RULES["tenant-r"].items()))
    want = redacted_manifest(item.decoded, item.policy_version, rules, policy.version, terms)
    assert want["source_license"] == "CC-BY-4.0"
    assert out.provenance_id == provenance_id(want)
    assert redact_reference(item, policy, fake_mac, sources) == out
    assert redact(item, policy, fake_mac).provenance_id != out.provenance_id
