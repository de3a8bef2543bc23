"""PSI end to end in process: both modes equal the plaintext answer; every reason code."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.reasons import ReasonCode
from psi import (
    Agreement,
    Caller,
    Cardinality,
    ClientConfig,
    Denial,
    GroupBatch,
    Intersection,
    PolicyConfig,
    PsiClient,
    PsiMode,
    PsiPolicy,
    PsiServer,
    SelectorSet,
    ServerConfig,
)
from psi.curve import Packed
from psi.messages import (
    DENIAL_BYTES,
    EvaluateRequest,
    EvaluateResponse,
    Table,
    TableRequest,
    decode,
    encode,
)
from psi.oprf import Oprf

FULL = PsiMode.FULL_INTERSECTION
CARD = PsiMode.INTERSECTION_CARDINALITY
CLIENT = Caller("agency-a", "US")
SEED = bytes(range(32))


class Clock:
    """A settable clock for epochs and rate windows."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def policy_config(**overrides: object) -> PolicyConfig:
    agreement = {"min_batch": 0, "max_requests": 10_000, "regions": frozenset({"US", "GB"})}
    agreement.update(overrides)
    return PolicyConfig(
        agreements=(
            Agreement("agency-a", **agreement),
            Agreement("agency-b", **agreement),
        ),
        min_batch=0,
        residency_allows={"US": frozenset({"US", "GB"})},
    )


@pytest.fixture(scope="module")
def batch() -> Iterator[GroupBatch]:
    with GroupBatch(2) as b:
        yield b


@pytest.fixture(scope="module")
def open_policy() -> PsiPolicy:
    return PsiPolicy.load(policy_config())


class Pair:
    """A server and a client wired in process, counting the client's messages."""

    def __init__(
        self,
        server_items: list[str],
        batch: GroupBatch,
        policy: PsiPolicy,
        *,
        client_policy: PsiPolicy | None = None,
        clock: Clock | None = None,
        config: ServerConfig | None = None,
        caller: Caller = CLIENT,
    ) -> None:
        self.clock = clock or Clock()
        self.batch = batch
        self.server = PsiServer(
            SelectorSet.of(server_items),
            policy,
            config or ServerConfig(epoch_seconds=3600),
            batch=batch,
            master_seed=SEED,
            clock=self.clock,
        )
        self.caller = caller
        self.sent: list[bytes] = []
        self.client = PsiClient(
            self.send,
            client_policy or policy,
            ClientConfig("agency-b", "US"),
            batch=batch,
            clock=self.clock,
        )

    def send(self, body: bytes) -> bytes:
        self.sent.append(body)
        return self.server.handle(body, self.caller)


# -- correctness: both modes equal the plaintext intersection --------------------------------

selector = st.text(alphabet="abcdefgh", min_size=0, max_size=4)
selector_lists = st.lists(selector, max_size=24)


def expected(client: list[str], server: list[str]) -> tuple[str, ...]:
    held = set(server)
    return tuple(x for x in dict.fromkeys(client) if x in held)


@settings(max_examples=40, deadline=None)
@given(client=selector_lists, server=selector_lists)
def test_both_modes_equal_the_plaintext_intersection(
    client: list[str], server: list[str], batch: GroupBatch, open_policy: PsiPolicy
) -> None:
    pair = Pair(server, batch, open_policy)
    full = pair.client.intersect(client, FULL)
    card = pair.client.intersect(client, CARD)
    assert isinstance(full, Intersection) and isinstance(card, Cardinality)
    assert full.items == expected(client, server)
    assert card.count == len(expected(client, server))


@settings(max_examples=10, deadline=None)
@given(items=st.lists(selector, min_size=1, max_size=16), dup=st.integers(1, 3))
def test_identical_sets_with_duplicates(
    items: list[str], dup: int, batch: GroupBatch, open_policy: PsiPolicy
) -> None:
    pair = Pair(items * dup, batch, open_policy)
    full = pair.client.intersect(items * dup, FULL)
    card = pair.client.intersect(list(reversed(items)) * dup, CARD)
    assert isinstance(full, Intersection) and full.items == tuple(dict.fromkeys(items))
    assert isinstance(card, Cardinality) and card.count == len(set(items))


@pytest.mark.parametrize(
    ("client", "server"),
    [([], []), ([], ["a"]), (["a"], []), (["a", "b"], ["c", "d"]), (["a", "b"], ["b", "a"])],
    ids=["both-empty", "client-empty", "server-empty", "disjoint", "identical"],
)
def test_edge_sets(
    client: list[str], server: list[str], batch: GroupBatch, open_policy: PsiPolicy
) -> None:
    pair = Pair(server, batch, open_policy)
    full = pair.client.intersect(client, FULL)
    card = pair.client.intersect(client, CARD)
    assert isinstance(full, Intersection) and full.items == expected(client, server)
    assert isinstance(card, Cardinality) and card.count == len(expected(client, server))


def test_larger_sets_split_across_threads(batch: GroupBatch, open_policy: PsiPolicy) -> None:
    server = [f"id-{i}" for i in range(0, 3000, 3)]
    client = [f"id-{i}" for i in range(0, 1000)]
    pair = Pair(server, batch, open_policy)
    full = pair.client.intersect(client, FULL)
    card = pair.client.intersect(client, CARD)
    assert isinstance(full, Intersection) and full.items == expected(client, server)
    assert isinstance(card, Cardinality) and card.count == 334


def test_table_is_sorted_and_cached(batch: GroupBatch, open_policy: PsiPolicy) -> None:
    pair = Pair([f"s{i}" for i in range(50)], batch, open_policy)
    for mode in (FULL, CARD):
        pair.client.intersect(["s1"], mode)
        pair.client.intersect(["s2"], mode)
    kinds = [type(decode(body)).__name__ for body in pair.sent]
    assert kinds.count("TableRequest") == 2  # one per mode
    table = decode(pair.server.handle(encode(TableRequest(FULL)), CLIENT))
    assert isinstance(table, Table) and table.count == 50
    tags = [table.tags[i : i + 21] for i in range(0, len(table.tags), 21)]
    assert tags == sorted(tags)


# -- cardinality mode: the response does not depend on the input order -----------------------


def test_cardinality_response_does_not_depend_on_input_order(
    batch: GroupBatch, open_policy: PsiPolicy
) -> None:
    """Same items, same blind, two orders: byte-identical responses (the server sorts, then
    shuffles with its RNG; a seeded RNG stands in for the CSPRNG to make this observable)."""
    items = [f"sel-{i}" for i in range(40)]
    oprf = Oprf(batch)
    blind = oprf.random_blinds(1)
    replies = []
    for order in (items, list(reversed(items)), random.Random(3).sample(items, len(items))):
        server = PsiServer(
            SelectorSet.of(items[::2]),
            open_policy,
            ServerConfig(),
            batch=batch,
            master_seed=SEED,
            rng=random.Random(42),
        )
        key_id = server.keys.current(CARD).key_id
        blinded = oprf.blind(Packed.of([s.encode() for s in order]), blind)
        reply = server.handle(encode(EvaluateRequest(CARD, key_id, blinded)), CLIENT)
        replies.append(reply)
    assert replies[0] == replies[1] == replies[2]


def test_cardinality_shuffle_is_not_the_request_order(
    batch: GroupBatch, open_policy: PsiPolicy
) -> None:
    items = [f"sel-{i}" for i in range(64)]
    oprf = Oprf(batch)
    blind = oprf.random_blinds(1)
    server = PsiServer(
        SelectorSet.of(items), open_policy, ServerConfig(), batch=batch, master_seed=SEED
    )
    key_id = server.keys.current(CARD).key_id
    blinded = oprf.blind(Packed.of([s.encode() for s in items]), blind)
    reply = decode(server.handle(encode(EvaluateRequest(CARD, key_id, blinded)), CLIENT))
    assert isinstance(reply, EvaluateResponse)
    in_order = oprf.blind_evaluate(server.keys.current(CARD).secret, blinded)
    chunks = lambda b: [b[i : i + 32] for i in range(0, len(b), 32)]  # noqa: E731
    assert sorted(chunks(reply.elements)) == sorted(chunks(in_order))
    assert reply.elements != in_order  # 1/64! chance of a false failure


# -- every reason code ---------------------------------------------------------------------


def denial(reply: bytes) -> ReasonCode:
    assert len(reply) == DENIAL_BYTES
    message = decode(reply)
    assert isinstance(message, Denial)
    return message.reason


def evaluate_request(pair: Pair, items: list[str], mode: PsiMode = FULL) -> bytes:
    oprf = Oprf(pair.batch)
    key_id = pair.server.keys.current(mode).key_id
    blinded = oprf.blind(Packed.of([s.encode() for s in items]), oprf.random_blinds(len(items)))
    return encode(EvaluateRequest(mode, key_id, blinded))


@pytest.mark.parametrize(
    "caller",
    [Caller("stranger", "US"), Caller("agency-a", "FR"), Caller("", "")],
    ids=["no-agreement", "region-not-agreed", "anonymous"],
)
def test_policy_geo_block_on_the_server(
    caller: Caller, batch: GroupBatch, open_policy: PsiPolicy
) -> None:
    pair = Pair(["a"], batch, open_policy, caller=caller)
    assert denial(pair.send(evaluate_request(pair, ["a"]))) is ReasonCode.POLICY_GEO_BLOCK
    assert denial(pair.send(encode(TableRequest(FULL)))) is ReasonCode.POLICY_GEO_BLOCK


def test_policy_geo_block_for_a_mode_not_agreed(batch: GroupBatch) -> None:
    policy = PsiPolicy.load(policy_config(modes=frozenset({CARD})))
    pair = Pair(["a"], batch, policy)
    assert denial(pair.send(evaluate_request(pair, ["a"], FULL))) is ReasonCode.POLICY_GEO_BLOCK
    ok = decode(pair.send(evaluate_request(pair, ["a"], CARD)))
    assert isinstance(ok, EvaluateResponse)


def test_policy_geo_block_by_residency(batch: GroupBatch) -> None:
    """The agreement allows GB, but the server's data is EU-resident and may not go there."""
    policy = PsiPolicy.load(
        PolicyConfig(
            agreements=(Agreement("agency-a", regions=frozenset({"GB"}), min_batch=0),),
            residency_allows={"EU": frozenset({"DE"}), "US": frozenset({"GB"})},
        )
    )
    pair = Pair(
        ["a"], batch, policy, caller=Caller("agency-a", "GB"), config=ServerConfig(residency="EU")
    )
    assert denial(pair.send(evaluate_request(pair, ["a"]))) is ReasonCode.POLICY_GEO_BLOCK


def test_threshold_not_met(batch: GroupBatch) -> None:
    policy = PsiPolicy.load(policy_config(min_batch=10))
    pair = Pair(["a"], batch, policy)
    assert denial(pair.send(evaluate_request(pair, ["x", "y"]))) is ReasonCode.THRESHOLD_NOT_MET
    ten = [f"s{i}" for i in range(10)]
    assert isinstance(decode(pair.send(evaluate_request(pair, ten))), EvaluateResponse)


def test_rate_limited_then_allowed_after_the_window(batch: GroupBatch) -> None:
    policy = PsiPolicy.load(policy_config(max_requests=12))
    pair = Pair(["a"], batch, policy)
    request = evaluate_request(pair, ["a"])
    for _ in range(12):
        assert isinstance(decode(pair.send(request)), EvaluateResponse)
    assert denial(pair.send(request)) is ReasonCode.RATE_LIMITED
    pair.clock.now += policy.config.window_seconds + 1
    assert isinstance(decode(pair.send(request)), EvaluateResponse)


def test_epoch_expired_when_the_epoch_turns(batch: GroupBatch, open_policy: PsiPolicy) -> None:
    pair = Pair(["a"], batch, open_policy)
    request = evaluate_request(pair, ["a"])
    pair.clock.now += 3600
    assert denial(pair.send(request)) is ReasonCode.EPOCH_EXPIRED


def test_epoch_expired_after_the_evaluation_limit(
    batch: GroupBatch, open_policy: PsiPolicy
) -> None:
    pair = Pair(["a"], batch, open_policy, config=ServerConfig(max_evaluations=5, max_batch=5))
    first = pair.server.keys.current(FULL).key_id
    request = evaluate_request(pair, ["a", "b", "c"])
    assert isinstance(decode(pair.send(request)), EvaluateResponse)
    assert denial(pair.send(request)) is ReasonCode.EPOCH_EXPIRED  # 6 > 5: re-keyed
    second = pair.server.keys.current(FULL).key_id
    assert (second.epoch, second.generation) == (first.epoch, first.generation + 1)
    assert second.fingerprint != first.fingerprint


def test_client_refetches_the_table_and_retries_after_expiry(
    batch: GroupBatch, open_policy: PsiPolicy
) -> None:
    pair = Pair(["a", "b"], batch, open_policy)
    assert pair.client.intersect(["a", "z"], FULL) == Intersection(
        ("a",), pair.server.keys.current(FULL).key_id
    )
    pair.clock.now += 3600
    outcome = pair.client.intersect(["a", "b", "z"], FULL)
    assert isinstance(outcome, Intersection) and outcome.items == ("a", "b")
    assert outcome.key_id.epoch == int(pair.clock.now // 3600)
    kinds = [type(decode(body)).__name__ for body in pair.sent]
    assert kinds == [
        "TableRequest",
        "EvaluateRequest",
        "EvaluateRequest",
        "TableRequest",
        "EvaluateRequest",
    ]


def test_a_restarted_server_with_a_new_seed_is_a_new_key(
    batch: GroupBatch, open_policy: PsiPolicy
) -> None:
    one = PsiServer(SelectorSet.of(["a"]), open_policy, ServerConfig(), batch=batch)
    two = PsiServer(SelectorSet.of(["a"]), open_policy, ServerConfig(), batch=batch)
    assert one.keys.current(FULL).key_id != two.keys.current(FULL).key_id


@pytest.mark.parametrize(
    "element",
    [bytes(32), b"\xff" * 32, b"\x01" + bytes(31)],
    ids=["identity", "non-canonical", "negative"],
)
def test_malformed_elements(element: bytes, batch: GroupBatch, open_policy: PsiPolicy) -> None:
    pair = Pair(["a"], batch, open_policy)
    key_id = pair.server.keys.current(FULL).key_id
    good = decode(evaluate_request(pair, ["a", "b"]))
    assert isinstance(good, EvaluateRequest)
    body = encode(EvaluateRequest(FULL, key_id, good.elements[:32] + element))
    assert denial(pair.send(body)) is ReasonCode.MALFORMED


@pytest.mark.parametrize(
    "body",
    [b"", b"GET / HTTP/1.1\r\n", b"IGPS\x01\x03", encode(Denial(ReasonCode.RATE_LIMITED))],
    ids=["empty", "garbage", "truncated", "client-sent-a-denial"],
)
def test_malformed_messages(body: bytes, batch: GroupBatch, open_policy: PsiPolicy) -> None:
    pair = Pair(["a"], batch, open_policy)
    assert denial(pair.send(body)) is ReasonCode.MALFORMED


def test_oversize_and_over_batch_messages_are_malformed(
    batch: GroupBatch, open_policy: PsiPolicy
) -> None:
    pair = Pair(["a"], batch, open_policy, config=ServerConfig(max_batch=4))
    assert denial(pair.send(evaluate_request(pair, list("abcde")))) is ReasonCode.MALFORMED
    assert denial(pair.send(b"IGPS" + bytes(10_000))) is ReasonCode.MALFORMED


def test_a_server_answer_sent_to_the_server_is_malformed(
    batch: GroupBatch, open_policy: PsiPolicy
) -> None:
    pair = Pair(["a"], batch, open_policy)
    table = pair.send(encode(TableRequest(FULL)))
    assert denial(pair.send(table)) is ReasonCode.MALFORMED


# -- the client checks the policy too, and treats bad answers as data -------------------------


def test_client_policy_denies_before_anything_is_sent(
    batch: GroupBatch, open_policy: PsiPolicy
) -> None:
    strict = PsiPolicy.load(policy_config(min_batch=5, max_requests=2))
    pair = Pair(["a"], batch, open_policy, client_policy=strict)
    assert pair.client.intersect(["a"], FULL) == Denial(ReasonCode.THRESHOLD_NOT_MET)
    assert pair.sent == []
    five = ["a", "b", "c", "d", "e"]
    assert isinstance(pair.client.intersect(five, FULL), Intersection)
    assert pair.client.intersect(five, FULL) == Denial(ReasonCode.RATE_LIMITED)
    geo = PsiPolicy.load(PolicyConfig(agreements=(Agreement("someone-else"),)))
    other = Pair(["a"], batch, open_policy, client_policy=geo)
    assert other.client.intersect(five, FULL) == Denial(ReasonCode.POLICY_GEO_BLOCK)
    assert other.sent == []


def test_client_passes_server_denials_through(batch: GroupBatch, open_policy: PsiPolicy) -> None:
    pair = Pair(["a"], batch, open_policy, caller=Caller("stranger", "US"))
    assert pair.client.intersect(["a"], CARD) == Denial(ReasonCode.POLICY_GEO_BLOCK)


def test_client_treats_a_bad_answer_as_malformed(batch: GroupBatch, open_policy: PsiPolicy) -> None:
    pair = Pair(["a"], batch, open_policy)
    table = pair.send(encode(TableRequest(FULL)))

    def liar(body: bytes) -> bytes:
        message = decode(body)
        if isinstance(message, TableRequest):
            return table
        assert isinstance(message, EvaluateRequest)
        return encode(EvaluateResponse(FULL, message.key_id, bytes(32) * message.count))

    client = PsiClient(liar, open_policy, ClientConfig("agency-b", "US"), batch=batch)
    assert client.intersect(["a", "b"], FULL) == Denial(ReasonCode.MALFORMED)
    garbage = PsiClient(lambda _: b"nope", open_policy, ClientConfig("agency-b", "US"), batch=batch)
    assert garbage.intersect(["a"], FULL) == Denial(ReasonCode.MALFORMED)


def test_client_rejects_an_oversized_selector(batch: GroupBatch, open_policy: PsiPolicy) -> None:
    pair = Pair(["a"], batch, open_policy)
    assert pair.client.intersect(["x" * 70_000], FULL) == Denial(ReasonCode.MALFORMED)
