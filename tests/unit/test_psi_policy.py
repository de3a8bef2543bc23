"""policies/psi.rego through regopy: one reason per denial, in a fixed order."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import SchemaError
from core.reasons import ReasonCode
from psi.messages import PsiMode
from psi.policy import DEFAULT_POLICY_PATH, Agreement, PolicyConfig, PolicyInput, PsiPolicy

CONFIG = PolicyConfig(
    agreements=(
        Agreement(
            "agency-a",
            modes=frozenset({PsiMode.INTERSECTION_CARDINALITY}),
            regions=frozenset({"US", "GB"}),
            min_batch=10,
            max_requests=100,
        ),
    ),
    min_batch=2,
    residency_allows={"US": frozenset({"US", "GB"}), "EU": frozenset({"DE"})},
)


@pytest.fixture(scope="module")
def policy() -> PsiPolicy:
    return PsiPolicy.load(CONFIG)


def ask(policy: PsiPolicy, **changes: object) -> ReasonCode | None:
    question = {
        "role": "server",
        "action": "evaluate",
        "partner_id": "agency-a",
        "partner_region": "US",
        "residency": "US",
        "mode": PsiMode.INTERSECTION_CARDINALITY,
        "batch_size": 10,
        "recent_requests": 99,
    }
    question.update(changes)
    return policy.decide(PolicyInput(**question)).reason  # type: ignore[arg-type]


def test_the_repository_policy_is_the_default() -> None:
    assert DEFAULT_POLICY_PATH.name == "psi.rego" and DEFAULT_POLICY_PATH.exists()


def test_allowed(policy: PsiPolicy) -> None:
    assert ask(policy) is None
    assert ask(policy, role="client", partner_region="GB") is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"partner_id": "nobody"}, ReasonCode.POLICY_GEO_BLOCK),
        ({"mode": PsiMode.FULL_INTERSECTION}, ReasonCode.POLICY_GEO_BLOCK),
        ({"partner_region": "FR"}, ReasonCode.POLICY_GEO_BLOCK),
        ({"residency": "EU"}, ReasonCode.POLICY_GEO_BLOCK),
        ({"residency": "XX"}, ReasonCode.POLICY_GEO_BLOCK),
        ({"batch_size": 9}, ReasonCode.THRESHOLD_NOT_MET),
        ({"recent_requests": 100}, ReasonCode.RATE_LIMITED),
        # the order: geo before threshold before rate
        (
            {"partner_region": "FR", "batch_size": 1, "recent_requests": 500},
            ReasonCode.POLICY_GEO_BLOCK,
        ),
        ({"batch_size": 1, "recent_requests": 500}, ReasonCode.THRESHOLD_NOT_MET),
    ],
)
def test_denials(policy: PsiPolicy, changes: dict[str, object], reason: ReasonCode) -> None:
    assert ask(policy, **changes) is reason


def test_table_fetch_skips_batch_and_rate(policy: PsiPolicy) -> None:
    assert ask(policy, action="table", batch_size=0, recent_requests=10_000) is None
    assert ask(policy, action="table", partner_id="nobody") is ReasonCode.POLICY_GEO_BLOCK


def test_global_minimum_is_a_floor() -> None:
    """Numbers compare as numbers: 10 > 9 (rego-cpp's max() would say otherwise)."""
    floor = PsiPolicy.load(PolicyConfig(agreements=(Agreement("a", min_batch=9),), min_batch=10))
    question = PolicyInput("server", "evaluate", "a", "US", "US", PsiMode.FULL_INTERSECTION, 9)
    assert floor.decide(question).reason is ReasonCode.THRESHOLD_NOT_MET
    question = PolicyInput("server", "evaluate", "a", "US", "US", PsiMode.FULL_INTERSECTION, 10)
    assert floor.decide(question).allowed


def test_policy_version_tracks_source_and_data(policy: PsiPolicy) -> None:
    other = PsiPolicy.load(PolicyConfig())
    assert len(policy.policy_version) == 64
    assert policy.policy_version != other.policy_version
    assert policy.policy_version == PsiPolicy.load(CONFIG).policy_version


def test_missing_or_broken_policy_fails_at_load(tmp_path: Path) -> None:
    with pytest.raises(SchemaError):
        PsiPolicy.load(CONFIG, tmp_path / "absent.rego")
    broken = tmp_path / "broken.rego"
    broken.write_text("package igflow.psi\nimport rego.v1\ndecision := {\n")
    with pytest.raises(SchemaError):
        PsiPolicy.load(CONFIG, broken)
    silent = tmp_path / "silent.rego"
    silent.write_text("package igflow.psi\nimport rego.v1\nother := 1\n")
    with pytest.raises(SchemaError):
        PsiPolicy.load(CONFIG, silent)
