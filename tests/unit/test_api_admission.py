"""The API's admission pieces without a server: token buckets, persisted queries, request shapes,
webhook signatures, error formatting."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from graphql import GraphQLError
from hypothesis import given, settings
from hypothesis import strategies as st

from api.app import build_services
from api.graphql_http import format_error
from api.persisted import Admission, PersistedQueries, sha256_hex
from api.publish import derived_signal_id
from api.ratelimit import TokenBuckets
from api.rest import signal_input
from api.schema import build_schema
from api.webhooks import Signature, sign, verify
from core.errors import ConfigError
from core.reasons import ReasonCode
from core.records import Signal
from core.settings import Settings

DOC = "query Q($tenantId: ID!) { tenantCoherence(tenantId: $tenantId) { score } }"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --- token buckets ---------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    rate=st.floats(0.5, 1000),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=300),
)
def test_a_bucket_admits_at_most_burst_plus_rate_times_elapsed(
    rate: float, burst: int, gaps: list[float]
) -> None:
    clock = Clock()
    buckets = TokenBuckets(rate, burst, clock)
    admitted = 0
    for gap in gaps:
        clock.now += gap
        wait = buckets.take("t")
        if wait == 0.0:
            admitted += 1
        else:
            assert 0 < wait <= 1 / rate + 1e-9
    assert admitted <= burst + rate * clock.now + 1e-6
    # A refused caller that waits the advertised time is admitted.
    clock.now += 0.0
    wait = buckets.take("t")
    if wait:
        clock.now += wait + 1e-9
        assert buckets.take("t") == 0.0


@given(
    flood=st.lists(st.booleans(), min_size=1, max_size=200),
    gaps=st.lists(st.floats(0, 0.05), min_size=200, max_size=200),
)
def test_one_tenants_requests_never_change_anothers_outcomes(
    flood: list[bool], gaps: list[float]
) -> None:
    def b_outcomes(with_a: bool) -> list[bool]:
        clock = Clock()
        buckets = TokenBuckets(20, 5, clock)
        out = []
        for step, is_b in enumerate(flood):
            clock.now += gaps[step]
            if is_b:
                out.append(buckets.take("b") == 0.0)
            elif with_a:
                buckets.take("a")
        return out

    assert b_outcomes(with_a=True) == b_outcomes(with_a=False)


def test_bucket_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBuckets(0, 1)


# --- persisted queries -----------------------------------------------------------------------


def _admission(pq: PersistedQueries, data: dict[str, object]) -> ReasonCode:
    with pytest.raises(Admission) as refused:
        pq.resolve(data)
    return refused.value.reason


def test_production_mode_runs_only_the_allowlist() -> None:
    pq = PersistedQueries({"pq_q_v1": DOC}, production=True)
    assert pq.resolve({"id": "pq_q_v1"}) == DOC
    assert pq.resolve({"documentId": "pq_q_v1"}) == DOC
    apq = {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(DOC)}}
    assert pq.resolve({"extensions": apq}) == DOC
    assert pq.resolve({"query": DOC}) == DOC
    other = DOC.replace("score", "status")
    assert _admission(pq, {"query": other}) is ReasonCode.QUERY_NOT_ALLOWED
    assert _admission(pq, {"id": "pq_nope"}) is ReasonCode.QUERY_NOT_ALLOWED
    register = {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(other)}}
    assert _admission(pq, {"query": other, "extensions": register}) is (
        ReasonCode.QUERY_NOT_ALLOWED
    )
    assert _admission(pq, {"extensions": register}) is ReasonCode.QUERY_NOT_ALLOWED


def test_development_mode_registers_apq_and_checks_the_hash() -> None:
    pq = PersistedQueries({"pq_q_v1": DOC}, production=False)
    other = DOC.replace("score", "status")
    apq = {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(other)}}
    assert _admission(pq, {"extensions": apq}) is ReasonCode.PERSISTED_QUERY_NOT_FOUND
    assert pq.resolve({"query": other, "extensions": apq}) == other
    assert pq.resolve({"extensions": apq}) == other
    wrong = {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}}
    assert _admission(pq, {"query": other, "extensions": wrong}) is ReasonCode.BAD_REQUEST
    assert _admission(pq, {"extensions": {"persistedQuery": {"version": 2}}}) is (
        ReasonCode.BAD_REQUEST
    )
    assert _admission(pq, {}) is ReasonCode.BAD_REQUEST
    assert pq.resolve({"query": "{ anything }"}) == "{ anything }"


def test_the_shipped_allowlist_parses_against_the_schema() -> None:
    from graphql import parse, validate

    pq = PersistedQueries.load("", production=True)
    assert {"pq_tenant_coherence_v1", "pq_publish_signal_v1"} <= set(pq.by_id)
    schema = build_schema()
    for op_id, document in pq.by_id.items():
        assert validate(schema, parse(document)) == [], op_id


def test_a_broken_allowlist_is_a_configuration_error(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "pq.json"
    path.write_text('{"pq": 3}')
    with pytest.raises(ConfigError, match="expected an object"):
        PersistedQueries.load(path, production=True)


def test_production_mode_needs_the_issuers_keys() -> None:
    settings = Settings().with_changes("api", mode="production")
    with pytest.raises(ConfigError, match="jwt_keys"):
        build_services(settings)
    with pytest.raises(ConfigError, match=r"api\.mode"):
        build_services(Settings().with_changes("api", mode="staging"))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_body_bytes", 0),
        ("max_query_tokens", 0),
        ("ws_max_subscriptions", -1),
        ("ws_init_timeout_seconds", 0.0),
    ],
)
def test_the_limits_on_hostile_input_must_be_positive(name: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"api\.{name}"):
        build_services(Settings().with_changes("api", **{name: value}))


# --- request bodies, signatures, errors ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([], "the body is not a JSON object"),
        ({"tenantId": "t"}, "type must be a string"),
        ({"tenantId": "t", "type": "x", "source": "s", "ts": "now", "value": 1}, "ts is not"),
        ({"tenantId": "t", "type": "x", "source": "s", "ts": "2026-01-01", "value": True}, "value"),
        ({"tenantId": 1, "type": "x", "source": "s", "ts": "2026-01-01", "value": 1}, "tenantId"),
        ({"tenantId": "t", "nope": 1}, "unknown field 'nope'"),
        (
            {
                "tenantId": "t",
                "type": "x",
                "source": "s",
                "ts": "2026-01-01",
                "value": 1,
                "selectors": [1],
            },
            "selectors",
        ),
    ],
)
def test_signal_bodies_of_the_wrong_shape_say_which_field(body: object, problem: str) -> None:
    out = signal_input(body)
    assert isinstance(out, str) and problem in out


def test_webhook_signatures_verify_only_fresh_and_untampered() -> None:
    body = b'{"a": 1}'
    now = time.time()
    good = sign("s3cret", body, int(now))
    assert verify("s3cret", good, body, now) == Signature(int(now), good.partition(",v1=")[2])
    assert verify("s3cret", good, body + b" ", now) == "the signature does not verify"
    assert verify("other", good, body, now) == "the signature does not verify"
    assert "tolerance" in str(verify("s3cret", good, body, now + 301))
    assert "not configured" in str(verify("", good, body, now))
    assert "timestamp" in str(verify("s3cret", "v1=00", body, now))
    # Refusals, never exceptions, for whatever a header holds (hmac.compare_digest raises
    # TypeError on non-ASCII text; int() reads other scripts' digits and 4,301-digit numbers).
    for header in (
        good + "\u00e9",
        good.replace("v1=", "v1=\u00e9"),
        f"t=\u0661\u0662,v1={good.partition(',v1=')[2]}",
        "t=" + "9" * 5000 + ",v1=00",
        "t=1_000,v1=00",
        "t=,v1=",
        ",,,==,",
    ):
        assert isinstance(verify("s3cret", header, body, now), str), header


def test_errors_always_carry_a_code_and_internals_never_leak() -> None:
    coded = GraphQLError("denied", extensions={"code": "TENANT_FORBIDDEN"})
    assert format_error(coded)["extensions"] == {"code": "TENANT_FORBIDDEN"}
    syntax = GraphQLError("Syntax Error")
    assert format_error(syntax)["extensions"]["code"] == "BAD_REQUEST"
    cost = GraphQLError("too costly", extensions={"cost": {"requestedQueryCost": 9}})
    assert format_error(cost)["extensions"]["code"] == "QUERY_TOO_COSTLY"
    internal = GraphQLError("psycopg: password=hunter2", original_error=RuntimeError("x"))
    formatted = format_error(internal)
    assert formatted["message"] == "internal error"
    assert formatted["extensions"]["code"] == "INTERNAL_SERVER_ERROR"


def test_a_derived_signal_id_is_stable_and_content_addressed() -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    one = Signal("t", "", "latency", 0.5, None, "s", ts)
    assert derived_signal_id(one) == derived_signal_id(
        Signal("t", "", "latency", 0.5, None, "s", ts)
    )
    assert derived_signal_id(one) != derived_signal_id(
        Signal("t", "", "latency", 0.5, 1.0, "s", ts)
    )
    assert derived_signal_id(one).startswith("sig-") and len(derived_signal_id(one)) == 36


# --- the cached documents and the cost limit -------------------------------------------------


def test_the_cost_counts_fields_with_fragments_expanded_where_spread() -> None:
    from api.documents import Documents

    docs = Documents(build_schema(), max_cost=20, introspection=True)
    fields = "tenantId score status updatedAt"
    ok, errors = docs.prepare(f'{{ tenantCoherence(tenantId: "t") {{ {fields} }} }}')
    assert ok is not None and errors == ()
    spread = " ".join(f'a{i}: tenantCoherence(tenantId: "t") {{ ...F }}' for i in range(4))
    text = f"query {{ {spread} }} fragment F on CoherenceScore {{ {fields} }}"
    _doc, errors = docs.prepare(text)  # 4 x (1 + 4) = 20: at the limit
    assert errors == ()
    spread5 = spread + ' a4: tenantCoherence(tenantId: "t") { ...F }'
    _doc, errors = docs.prepare(
        f"query {{ {spread5} }} fragment F on CoherenceScore {{ {fields} }}"
    )
    assert [e.extensions["cost"]["maximumAvailable"] for e in errors] == [20]
    assert format_error(errors[0])["extensions"]["code"] == "QUERY_TOO_COSTLY"
    assert docs.prepare(text)[0] is docs.prepare(text)[0]  # cached by text
    # An unused fragment is costed too (validation walks it as well).
    _doc, errors = docs.prepare(
        f"{{ __typename }} fragment G on Query {{ {spread5} }} "
        f"fragment F on CoherenceScore {{ {fields} }}"
    )
    assert [e.extensions["code"] for e in errors] == ["QUERY_TOO_COSTLY"]


def test_nested_fragment_spreads_are_costed_once_each_and_counting_stops_at_the_limit() -> None:
    import time

    from api.documents import Documents

    docs = Documents(build_schema(), max_cost=200, introspection=True)
    # Each level spreads the one below 10 times: 10**12 fields expanded (issue 12: 7 levels
    # took 4.5-7.7 s to cost).
    levels = ['fragment F0 on Query { tenantCoherence(tenantId: "t") { score } }']
    levels += [f"fragment F{i} on Query {{ {f' ...F{i - 1}' * 10} }}" for i in range(1, 13)]
    started = time.perf_counter()
    _doc, errors = docs.prepare("query { ...F12 } " + " ".join(levels))
    assert time.perf_counter() - started < 0.5
    assert [e.extensions["code"] for e in errors] == ["QUERY_TOO_COSTLY"]


def test_parsing_stops_at_the_token_limit_and_deep_nesting_is_a_bad_request() -> None:
    from api.documents import Documents

    docs = Documents(build_schema(), max_cost=200, introspection=True, max_tokens=100)
    aliases = " ".join(f"a{i}: __typename" for i in range(34))  # 102 tokens with the braces
    doc, errors = docs.prepare(f"{{ {aliases} }}")
    assert doc is None and [e.extensions["code"] for e in errors] == ["QUERY_TOO_COSTLY"]
    doc, errors = docs.prepare("{ " + " ".join(f"a{i}: __typename" for i in range(30)) + " }")
    assert doc is not None and errors == ()
    deep = Documents(build_schema(), max_cost=200, introspection=True, max_tokens=10_000)
    doc, errors = deep.prepare("{" + "a{" * 2000 + "b" + "}" * 2001)
    assert doc is None and format_error(errors[0])["extensions"]["code"] == "BAD_REQUEST"
    # A chain of fragments deeper than the interpreter's recursion limit.
    chain = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(1100))
    doc, errors = deep.prepare(f"{{ ...F0 }} {chain} fragment F1100 on Query {{ __typename }}")
    assert doc is None and format_error(errors[0])["extensions"]["code"] == "BAD_REQUEST"


def test_production_documents_refuse_introspection_and_syntax_errors_are_kept() -> None:
    from api.documents import Documents

    docs = Documents(build_schema(), max_cost=200, introspection=False)
    _doc, errors = docs.prepare("{ __schema { types { name } } }")
    assert errors and "introspection" in errors[0].message.lower()
    doc, errors = docs.prepare("{ tenantCoherence(")
    assert doc is None and format_error(errors[0])["extensions"]["code"] == "BAD_REQUEST"
