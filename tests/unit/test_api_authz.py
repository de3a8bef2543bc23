"""policies/graphql.rego through api.authz: allowed iff own tenant and the action's scope."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from api.auth import Principal
from api.authz import ACTIONS, Authorizer, Decision
from core.errors import SchemaError
from core.reasons import ReasonCode
from core.settings import Settings
from operators.tenancy import TenancyPolicy, policy_bundle_version

POLICIES = Path(__file__).resolve().parents[2] / "policies"
READ, WRITE = "coherence:read", "coherence:write"

TENANTS = st.one_of(
    st.sampled_from(["tenant-00", "tenant-01", "Tenant-00", "tenant-00 ", 'we"ird\\ténant']),
    st.text(min_size=1, max_size=12),
)
SCOPES = st.frozensets(st.sampled_from([READ, WRITE, "coherence:admin", "read", ""]))
ACTION = st.sampled_from(["read", "write"])


@pytest.fixture(scope="module")
def authz() -> Authorizer:
    return Authorizer.load(POLICIES)


@pytest.fixture(scope="module")
def uncached() -> Authorizer:
    """Every question goes to the Rego interpreter."""
    return Authorizer.load(POLICIES, cache_size=0)


def caller(tenant: str, *scopes: str, kind: str = "jwt") -> Principal:
    return Principal(f"sub-{tenant}", tenant, frozenset(scopes), kind)


def expected(caller_tenant: str, scopes: frozenset[str], action: str, tenant: str) -> Decision:
    """The rule, written out: tenant first, then scope."""
    if caller_tenant != tenant:
        return Decision(False, ReasonCode.TENANT_FORBIDDEN)
    if ACTIONS[action] not in scopes:
        return Decision(False, ReasonCode.SCOPE_MISSING)
    return Decision(True, None)


@settings(max_examples=400, deadline=None)
@given(
    caller_tenant=TENANTS,
    scopes=SCOPES,
    action=ACTION,
    tenant=TENANTS,
    same=st.booleans(),
)
def test_allowed_iff_own_tenant_and_the_actions_scope(
    uncached: Authorizer,
    caller_tenant: str,
    scopes: frozenset[str],
    action: str,
    tenant: str,
    same: bool,
) -> None:
    tenant = caller_tenant if same else tenant  # half the examples ask about their own tenant
    got = uncached.decide(Principal("s", caller_tenant, scopes, "jwt"), action, tenant)
    want = expected(caller_tenant, scopes, action, tenant)
    assert (got.allow, got.reason) == (want.allow, want.reason)
    assert got.allow == (caller_tenant == tenant and ACTIONS[action] in scopes)


@settings(max_examples=200, deadline=None)
@given(caller_tenant=TENANTS, scopes=SCOPES, action=ACTION, tenant=TENANTS)
def test_the_cache_answers_as_the_policy_does(
    authz: Authorizer,
    uncached: Authorizer,
    caller_tenant: str,
    scopes: frozenset[str],
    action: str,
    tenant: str,
) -> None:
    principal = Principal("s", caller_tenant, scopes, "api_key")
    for _ in range(2):
        assert authz.decide(principal, action, tenant) == uncached.decide(principal, action, tenant)


@pytest.mark.parametrize(
    ("principal", "action", "tenant", "reason"),
    [
        (caller("tenant-00", READ), "read", "tenant-00", None),
        (caller("tenant-00", READ, WRITE), "write", "tenant-00", None),
        (caller("tenant-00", WRITE), "read", "tenant-00", ReasonCode.SCOPE_MISSING),
        (caller("tenant-00", READ), "write", "tenant-00", ReasonCode.SCOPE_MISSING),
        (caller("tenant-00", READ), "read", "tenant-01", ReasonCode.TENANT_FORBIDDEN),
        # Both wrong: the tenant is reported, so a caller learns nothing of its scopes elsewhere.
        (caller("tenant-00"), "write", "tenant-01", ReasonCode.TENANT_FORBIDDEN),
        # No tenant is nobody's tenant, even asked about the blank one.
        (caller("", READ), "read", "", ReasonCode.TENANT_FORBIDDEN),
        # An action the policy does not know needs a scope nobody holds.
        (caller("tenant-00", READ, WRITE), "delete", "tenant-00", ReasonCode.SCOPE_MISSING),
        (caller("tenant-00", READ, WRITE, kind="api_key"), "write", "tenant-00", None),
    ],
    ids=[
        "read",
        "write",
        "read-without-scope",
        "write-without-scope",
        "forged-tenant",
        "both-wrong",
        "blank-tenant",
        "unknown-action",
        "api-key",
    ],
)
def test_decisions_and_reasons(
    authz: Authorizer,
    principal: Principal,
    action: str,
    tenant: str,
    reason: ReasonCode | None,
) -> None:
    decision = authz.decide(principal, action, tenant)
    assert decision == Decision(reason is None, reason, authz.policy_version)


def test_the_decision_carries_the_bundle_version(authz: Authorizer) -> None:
    assert authz.policy_version == policy_bundle_version(POLICIES)
    assert authz.decide(caller("t", READ), "read", "t").policy_version == authz.policy_version
    # The tenancy step loads its own package from the same folder and stamps the same version.
    assert TenancyPolicy.load(POLICIES).version == authz.policy_version


def test_from_settings_reads_the_policies_dir(tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(POLICIES, tmp_path / "policies"))
    settings = Settings().with_changes("tenancy", policies_dir=str(bundle))
    assert Authorizer.from_settings(settings).policy_version == policy_bundle_version(POLICIES)


def test_a_cached_decision_costs_a_lookup(authz: Authorizer) -> None:
    principal = caller("tenant-00", READ)
    first = authz.decide(principal, "read", "tenant-00")
    # The same object every time: the cache answered, no Rego evaluation (not timed here).
    for _ in range(100_000):
        assert authz.decide(principal, "read", "tenant-00") is first


def test_eight_threads_share_one_authorizer() -> None:
    authz = Authorizer.load(POLICIES, cache_size=64)  # small: evictions while threads race
    questions = [
        (caller(f"tenant-{i % 7}", READ if i % 3 else WRITE), "read", f"tenant-{i % 5}")
        for i in range(200)
    ]
    start = threading.Barrier(8)
    wrong: list[int] = []

    def work(shift: int) -> None:
        start.wait()
        for i in [*range(shift, 200), *range(shift)]:
            principal, action, tenant = questions[i]
            got = authz.decide(principal, action, tenant)
            want = expected(principal.tenant_id, principal.scopes, action, tenant)
            if (got.allow, got.reason) != (want.allow, want.reason):
                wrong.append(i)

    threads = [threading.Thread(target=work, args=(25 * i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return Path(shutil.copytree(POLICIES, tmp_path / "policies"))


def test_a_missing_policy_raises_at_load(bundle: Path) -> None:
    (bundle / "graphql.rego").unlink()
    with pytest.raises(SchemaError, match=r"GraphQL policy missing: .*graphql\.rego"):
        Authorizer.load(bundle)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("package igflow.graphql\n\nimport rego.v1\n\ndecision := {", "does not (load|compile)"),
        ("package igflow.graphql\n\nimport rego.v1\n\nother := 1\n", "gave no decision"),
        (
            'package igflow.graphql\n\nimport rego.v1\n\ndecision := {"allow": false, '
            '"reason": "BECAUSE"}\n',
            "without a known reason",
        ),
    ],
    ids=["syntax", "no-decision", "unknown-reason"],
)
def test_a_broken_policy_raises_at_load(bundle: Path, source: str, message: str) -> None:
    (bundle / "graphql.rego").write_text(source)
    with pytest.raises(SchemaError, match=message):
        Authorizer.load(bundle)


@settings(max_examples=200, deadline=None)
@given(
    caller_tenant=TENANTS,
    scopes=st.frozensets(st.sampled_from([READ, WRITE, "platform:read", "platform", ""])),
    tenant=st.one_of(st.just(""), TENANTS),
)
def test_the_platform_rollup_needs_platform_read_whoever_the_tenant(
    uncached: Authorizer, caller_tenant: str, scopes: frozenset[str], tenant: str
) -> None:
    """``platform`` (the dashboards' rollup over every tenant) names no tenant: only the scope
    counts, and no tenant scope grants it; ``platform:read`` grants no tenant's own reads."""
    decision = uncached.decide(caller(caller_tenant, *scopes), "platform", tenant)
    if "platform:read" in scopes:
        assert decision.allow and decision.reason is None
    else:
        assert (decision.allow, decision.reason) == (False, ReasonCode.SCOPE_MISSING)
    other = uncached.decide(caller("ops", "platform:read"), "read", "tenant-00")
    assert (other.allow, other.reason) == (False, ReasonCode.TENANT_FORBIDDEN)
