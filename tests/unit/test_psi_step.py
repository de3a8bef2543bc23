"""The psi step: event-time windows per tenant, both modes against an in-process PSI server,
denials and an unreachable server as rows, the Bytewax operator, snapshots, the lake table."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import pickle
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

from core.errors import ConfigError
from core.reasons import ReasonCode
from core.records import Decoded, PolicyTags, Provenance, Signal, Tagged, input_hash
from operators.psi import (
    PSI_UNAVAILABLE,
    ClosedWindow,
    Deconflicter,
    DeconflictionResult,
    Matcher,
    PartnerCalls,
    PsiSettings,
    TenantDeconfliction,
    _PsiLogic,
    check_settings,
    http_matcher_factory,
    provenance_digest,
    psi_step,
)
from psi import (
    Agreement,
    Caller,
    Cardinality,
    ClientConfig,
    GroupBatch,
    KeyId,
    PolicyConfig,
    PsiClient,
    PsiMode,
    PsiPolicy,
    PsiServer,
    SelectorSet,
    ServerConfig,
)
from psi.client import Outcome
from psi.messages import EvaluateRequest, decode
from sinks.iceberg import ensure_table
from sinks.lake_tables import DECONFLICTION
from tests.ports import free_port
from tests.runs import pairs, random_runs

FULL = PsiMode.FULL_INTERSECTION
CARD = PsiMode.INTERSECTION_CARDINALITY
TOPIC = "coherence.signals.v1"
#: 2026-01-01T00:00Z is a multiple of 300 s since the epoch: windows of 300 s start on it.
T0 = datetime(2026, 1, 1, tzinfo=UTC)
W = 300.0
TAGS = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")
#: The partner holds the even selectors.
PARTNER_SET = [f"sel-{i:03d}" for i in range(0, 200, 2)]
SEED = bytes(range(32))
#: Who the in-process server sees calling.
AGENCY = Caller("agency-a", "US")
POLICY = PolicyConfig(
    agreements=(
        Agreement("agency-a", min_batch=2, max_requests=100_000),
        Agreement("server", min_batch=2, max_requests=100_000),
    ),
    min_batch=0,
)


def tagged(
    tenant: str,
    offset: int,
    seconds: float,
    selectors: Sequence[str] = (),
    *,
    tags: PolicyTags = TAGS,
) -> Tagged:
    """A tagged signal at ``T0 + seconds`` whose provenance is unique per tenant and offset."""
    payload = f"{tenant}|{offset}".encode()
    ts = T0 + timedelta(seconds=seconds)
    signal = Signal(tenant, f"sig-{offset}", "latency", 0.5, None, "sensor-a", ts, tuple(selectors))
    provenance = Provenance(TOPIC, 0, offset, 2, input_hash(payload))
    return Tagged(
        Decoded(signal, provenance), tags, "policy-v1", hashlib.sha256(payload).hexdigest()
    )


def plaintext(selectors: Iterable[str]) -> tuple[str, ...]:
    held = set(PARTNER_SET)
    return tuple(s for s in dict.fromkeys(selectors) if s in held)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def batch() -> Iterator[GroupBatch]:
    with GroupBatch(2) as b:
        yield b


@pytest.fixture(scope="module")
def policy() -> PsiPolicy:
    return PsiPolicy.load(POLICY)


@pytest.fixture(scope="module")
def server(batch: GroupBatch, policy: PsiPolicy) -> PsiServer:
    return PsiServer(
        SelectorSet.of(PARTNER_SET),
        policy,
        ServerConfig(epoch_seconds=3600),
        batch=batch,
        master_seed=SEED,
        clock=Clock(),
    )


class Wire:
    """The client's side of an in-process server: every request body, then the reply."""

    def __init__(self, server: PsiServer, caller: Caller = AGENCY) -> None:
        self.server = server
        self.caller = caller
        self.sent: list[bytes] = []

    def __call__(self, body: bytes) -> bytes:
        self.sent.append(body)
        return self.server.handle(body, self.caller)

    def evaluations(self) -> list[int]:
        """Elements per evaluate request, in order."""
        messages = [decode(body) for body in self.sent]
        return [m.count for m in messages if isinstance(m, EvaluateRequest)]


def client_of(wire: Wire, batch: GroupBatch, policy: PsiPolicy) -> PsiClient:
    return PsiClient(wire, policy, ClientConfig("server", "US"), batch=batch, clock=Clock())


@pytest.fixture
def wire(server: PsiServer) -> Wire:
    return Wire(server)


@pytest.fixture
def client(wire: Wire, batch: GroupBatch, policy: PsiPolicy) -> PsiClient:
    return client_of(wire, batch, policy)


def feed(state: TenantDeconfliction, items: Iterable[Tagged]) -> list[ClosedWindow]:
    closed = [state.push(item) for item in items]
    return [c for c in closed if c is not None]


def run(state: TenantDeconfliction, items: Iterable[Tagged]) -> list[ClosedWindow]:
    closed = feed(state, items)
    last = state.flush()
    return closed + ([last] if last is not None else [])


# ---------------------------------------------------------------------------------- windows


def test_a_window_closes_when_event_time_reaches_its_end() -> None:
    state = TenantDeconfliction(W)
    assert state.push(tagged("t", 0, 0.0, ["a"])) is None
    assert state.push(tagged("t", 1, 120.0, ["b"])) is None
    assert state.push(tagged("t", 2, W - 1e-6, ["c"])) is None  # still inside: [start, end)
    closed = state.push(tagged("t", 3, W, ["d"]))
    assert closed is not None
    assert (closed.window_start, closed.window_end) == (T0, T0 + timedelta(seconds=W))
    assert closed.selectors == ("a", "b", "c")
    assert (closed.signals, closed.first_offset, closed.last_offset) == (3, 0, 2)
    assert closed.last.provenance.kafka_offset == 2 and closed.tenant_id == "t"
    assert state.pending == 1
    last = state.flush()  # end of input
    assert last is not None and last.selectors == ("d",)
    assert last.window_start == T0 + timedelta(seconds=W)
    assert state.flush() is None and state.pending == 0


def test_windows_are_aligned_on_the_epoch_and_empty_ones_are_skipped() -> None:
    state = TenantDeconfliction(W)
    state.push(tagged("t", 0, 7 * W + 42, ["a"]))
    closed = state.push(tagged("t", 1, 12 * W + 1, ["b"]))  # windows 8..11 saw nothing
    assert closed is not None and closed.window_start == T0 + timedelta(seconds=7 * W)
    assert closed.window_end == T0 + timedelta(seconds=8 * W)
    last = state.flush()
    assert last is not None and last.window_start == T0 + timedelta(seconds=12 * W)


def test_selectors_are_distinct_in_first_seen_order_and_bad_ones_are_counted() -> None:
    state = TenantDeconfliction(W)
    too_long = "x" * 70_000
    wide = "\u00e9" * 40_000  # 40,000 characters, 80,000 UTF-8 bytes
    items = [
        tagged("t", 0, 1, ["b", "a", "b"]),
        tagged("t", 1, 2, []),
        tagged("t", 2, 3, ["a", "", "c", too_long, wide, "\u00e9" * 100]),
    ]
    (closed,) = run(state, items)
    assert closed.selectors == ("b", "a", "c", "\u00e9" * 100)
    assert (closed.signals, closed.selectors_rejected) == (3, 3)


def test_a_window_without_selectors_gives_no_row_but_its_signals_count_elsewhere() -> None:
    state = TenantDeconfliction(W)
    assert run(state, [tagged("t", 0, 1), tagged("t", 1, 2), tagged("t", 2, W + 1)]) == []
    only_rejected = run(TenantDeconfliction(W), [tagged("t", 0, 1, [""])])
    assert [(w.selectors, w.selectors_rejected) for w in only_rejected] == [((), 1)]
    (mixed,) = run(TenantDeconfliction(W), [tagged("t", 0, 1), tagged("t", 1, 2, ["a"])])
    assert mixed.signals == 2 and mixed.first_offset == 0


def test_a_late_signal_joins_the_open_window_and_is_counted() -> None:
    state = TenantDeconfliction(W)
    state.push(tagged("t", 0, W + 10, ["a"]))
    assert state.push(tagged("t", 1, 5, ["late"])) is None  # window 0 is over: not reopened
    closed = state.push(tagged("t", 2, 2 * W, ["b"]))
    assert closed is not None and closed.window_start == T0 + timedelta(seconds=W)
    assert (closed.selectors, closed.late, closed.signals) == (("a", "late"), 1, 2)
    # After a flush the window stays the tenant's: an older signal is still late.
    state.flush()
    (again,) = run(state, [tagged("t", 3, 10, ["c"])])
    assert again.window_start == T0 + timedelta(seconds=2 * W) and again.late == 1


def test_the_provenance_digest_chains_the_window_ids_in_order() -> None:
    items = [tagged("t", i, i, [f"s{i}"] if i % 2 else []) for i in range(5)]
    (closed,) = run(TenantDeconfliction(W), items)
    assert closed.provenance_digest == provenance_digest(i.provenance_id for i in items)
    expected = b""
    for item in items:
        expected = hashlib.sha256(expected + item.provenance_id.encode()).digest()
    assert closed.provenance_digest == expected.hex()
    assert provenance_digest([]) == ""
    (swapped,) = run(TenantDeconfliction(W), [items[1], items[0], *items[2:]])
    assert swapped.provenance_digest != closed.provenance_digest


def test_invalid_windows_and_settings_are_refused() -> None:
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            TenantDeconfliction(bad)
    check_settings(PsiSettings())
    check_settings(PsiSettings(server_url="https://partner.example:8765/"))
    for changes in (
        {"server_url": "partner:8765"},
        {"mode": "everything"},
        {"window_seconds": 0.0},
        {"retry_attempts": 0},
        {"retry_base_seconds": 5.0},
        {"max_batch": 0},
        {"max_batch": 1 << 20},
        {"timeout_seconds": 0.0},
        {"crypto_threads": 0},
        {"unavailable_pause_seconds": -1.0},
    ):
        with pytest.raises(ConfigError):
            check_settings(PsiSettings(**changes))


# ---------------------------------------------------------------------------------- both modes

selector = st.integers(0, 60).map(lambda i: f"sel-{i:03d}")


@settings(max_examples=25, deadline=None)
@given(signals=st.lists(st.lists(selector, max_size=4), min_size=1, max_size=12))
def test_both_modes_equal_the_plaintext_intersection(
    signals: list[list[str]], server: PsiServer, batch: GroupBatch, policy: PsiPolicy
) -> None:
    items = [tagged("t", i, i, sel) for i, sel in enumerate(signals)]
    closed = run(TenantDeconfliction(W), items)
    every = [s for sel in signals for s in sel]
    if len(set(every)) < 2:  # below the agreement's minimum batch: see the denial test
        return
    (window,) = closed
    client = client_of(Wire(server), batch, policy)
    full = Deconflicter(client.intersect, FULL, "server")(window)
    card = Deconflicter(client.intersect, CARD, "server")(window)
    assert full.reason is None and card.reason is None
    assert full.matched == plaintext(every) and full.count == len(plaintext(every))
    assert card.matched == () and card.count == len(plaintext(every))
    assert full.selectors_sent == card.selectors_sent == len(set(every))


def test_a_row_carries_the_window_its_provenance_and_the_servers_key(
    client: PsiClient, server: PsiServer
) -> None:
    items = [tagged("t", 10, 1, ["sel-000", "sel-001"]), tagged("t", 11, 2, ["sel-002"])]
    (window,) = run(TenantDeconfliction(W), items)
    row = Deconflicter(client.intersect, FULL, "server")(window)
    key = server.table(FULL)[0].key_id
    assert row == DeconflictionResult(
        tenant_id="t",
        window_start=T0,
        window_end=T0 + timedelta(seconds=W),
        mode="full_intersection",
        partner="server",
        selectors_sent=3,
        matched=("sel-000", "sel-002"),
        count=2,
        reason=None,
        signals=2,
        late=0,
        selectors_rejected=0,
        first_offset=10,
        last_offset=11,
        provenance_digest=provenance_digest(i.provenance_id for i in items),
        provenance_id=items[-1].provenance_id,
        provenance=items[-1].provenance,
        policy_version="policy-v1",
        key_epoch=key.epoch,
        key_id=f"{key.epoch}.{key.generation}.{key.fingerprint:016x}",
    )
    # The same window against the same partner key: the same row (no wall clock in it).
    assert Deconflicter(client.intersect, FULL, "server")(window) == row


def test_a_large_window_is_split_into_near_equal_requests(client: PsiClient, wire: Wire) -> None:
    selectors = [f"sel-{i:03d}" for i in range(7)]
    (window,) = run(TenantDeconfliction(W), [tagged("t", 0, 1, selectors)])
    full = Deconflicter(client.intersect, FULL, "server", max_batch=3)(window)
    card = Deconflicter(client.intersect, CARD, "server", max_batch=3)(window)
    assert full.matched == plaintext(selectors) and full.count == 4
    assert card.count == 4
    assert wire.evaluations() == [3, 2, 2, 3, 2, 2]


# ---------------------------------------------------------------------------------- denials


def test_a_policy_denial_is_a_row_with_its_reason(
    server: PsiServer, batch: GroupBatch, policy: PsiPolicy
) -> None:
    (window,) = run(TenantDeconfliction(W), [tagged("t", 0, 1, ["sel-000"])])  # 1 < min_batch 2
    wire = Wire(server)
    row = Deconflicter(client_of(wire, batch, policy).intersect, FULL, "server")(window)
    assert (row.reason, row.count, row.matched) == (ReasonCode.THRESHOLD_NOT_MET.value, None, ())
    assert (row.key_epoch, row.key_id, row.selectors_sent) == (None, None, 1)
    assert wire.sent == []  # our own policy said no: nothing left
    (two,) = run(TenantDeconfliction(W), [tagged("t", 0, 1, ["sel-000", "sel-001"])])
    stranger = Wire(server, Caller("stranger", "US"))  # the server knows no such partner
    refused = Deconflicter(client_of(stranger, batch, policy).intersect, CARD, "server")(two)
    assert (refused.reason, refused.count) == (ReasonCode.POLICY_GEO_BLOCK.value, None)


def test_a_tenant_of_another_residency_is_not_sent() -> None:
    def never(selectors: Sequence[str], mode: PsiMode, /) -> Outcome:
        raise AssertionError("a selector left under the wrong residency")

    eu = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "EU")
    (window,) = run(TenantDeconfliction(W), [tagged("t", 0, 1, ["a", "b"], tags=eu)])
    row = Deconflicter(never, FULL, "server", residency="US")(window)
    assert (row.reason, row.count) == (ReasonCode.POLICY_GEO_BLOCK.value, None)


def test_a_window_of_only_rejected_selectors_is_malformed_without_a_call() -> None:
    def never(selectors: Sequence[str], mode: PsiMode, /) -> Outcome:
        raise AssertionError("nothing to send")

    (window,) = run(TenantDeconfliction(W), [tagged("t", 0, 1, [""])])
    row = Deconflicter(never, FULL, "server")(window)
    assert (row.reason, row.selectors_sent, row.selectors_rejected) == ("MALFORMED", 0, 1)


def test_an_answer_for_the_other_mode_is_malformed(client: PsiClient) -> None:
    (window,) = run(TenantDeconfliction(W), [tagged("t", 0, 1, ["sel-000", "sel-002"])])

    def crossed(selectors: Sequence[str], mode: PsiMode, /) -> Outcome:
        return client.intersect(selectors, CARD)

    row = Deconflicter(crossed, FULL, "server")(window)
    assert (row.reason, row.count, row.key_id) == ("MALFORMED", None, None)


# ---------------------------------------------------------------------------------- unavailable


class Down:
    """A server that does not answer ``failures`` times, then answers through ``client``."""

    def __init__(self, failures: int, client: PsiClient | None = None) -> None:
        self.failures = failures
        self.client = client
        self.calls = 0

    def __call__(self, selectors: Sequence[str], mode: PsiMode, /) -> Outcome:
        self.calls += 1
        if self.calls <= self.failures or self.client is None:
            raise ConnectionError("connection refused")
        return self.client.intersect(selectors, mode)


def test_an_unreachable_server_is_retried_then_reported_and_paused(client: PsiClient) -> None:
    (window,) = run(TenantDeconfliction(W), [tagged("t", 0, 1, ["sel-000", "sel-002"])])
    down = Down(failures=3, client=client)
    sleeps: list[float] = []
    clock = Clock(0.0)
    deconflict = Deconflicter(
        down, FULL, "server", pause_seconds=30.0, sleep=sleeps.append, clock=clock
    )
    row = deconflict(window)
    assert (row.reason, row.count, row.matched, row.key_id) == (PSI_UNAVAILABLE, None, (), None)
    assert down.calls == 3 and len(sleeps) == 2  # 3 attempts, a backoff between each
    assert 0 <= sleeps[0] <= 0.2 and 0 <= sleeps[1] <= 0.4  # full jitter under base * 2**n
    clock.now = 29.0  # paused: the next window does not wait on the server again
    assert deconflict(window).reason == PSI_UNAVAILABLE and down.calls == 3
    clock.now = 31.0
    assert deconflict(window).matched == ("sel-000", "sel-002") and down.calls == 4


def test_a_server_back_within_the_retries_answers() -> None:
    (window,) = run(TenantDeconfliction(W), [tagged("t", 0, 1, ["a", "b"])])
    sleeps: list[float] = []

    class Flaky:
        calls = 0

        def __call__(self, selectors: Sequence[str], mode: PsiMode, /) -> Outcome:
            self.calls += 1
            if self.calls == 1:
                raise TimeoutError("read timed out")
            return Cardinality(1, KeyId(7, 0, 255))

    row = Deconflicter(Flaky(), CARD, "server", sleep=sleeps.append)(window)
    assert (row.reason, row.count, row.key_epoch, row.key_id) == (
        None,
        1,
        7,
        "7.0.00000000000000ff",
    )
    assert len(sleeps) == 1


def test_a_bug_in_the_matcher_is_not_taken_for_an_outage() -> None:
    def broken(selectors: Sequence[str], mode: PsiMode, /) -> Outcome:
        raise TypeError("a bug")

    (window,) = run(TenantDeconfliction(W), [tagged("t", 0, 1, ["a", "b"])])
    with pytest.raises(TypeError):
        Deconflicter(broken, FULL, "server", sleep=lambda s: None)(window)


def test_the_http_matcher_reports_a_closed_port_as_unavailable(tmp_path: Path) -> None:
    data = tmp_path / "psi.json"
    data.write_text(
        json.dumps(
            {
                "agreements": {
                    "server": {
                        "modes": ["full_intersection", "intersection_cardinality"],
                        "regions": ["US"],
                        "min_batch": 1,
                        "max_requests": 60,
                    }
                },
                "min_batch": 1,
                "residency_allows": {"US": ["US"]},
            }
        ),
        encoding="utf-8",
    )
    step = PsiSettings(
        server_url=f"http://127.0.0.1:{free_port()}", policy_data=str(data), timeout_seconds=2.0
    )
    matcher = http_matcher_factory(step)()
    with pytest.raises(ConnectionError):
        matcher(["a"], FULL)
    (window,) = run(TenantDeconfliction(W), [tagged("t", 0, 1, ["a"])])
    sleeps: list[float] = []
    row = Deconflicter(matcher, FULL, "server", sleep=sleeps.append)(window)
    assert row.reason == PSI_UNAVAILABLE and len(sleeps) == 2
    with pytest.raises(ConfigError):
        http_matcher_factory(PsiSettings())()  # the step is off: nothing to build


# ---------------------------------------------------------------------------------- Bytewax


def workload() -> list[Tagged]:
    """Two tenants interleaved, windows with and without selectors, a late signal."""
    a = [
        tagged("a", 0, 1, ["sel-000", "sel-001"]),
        tagged("a", 1, 100, ["sel-002", "sel-000"]),
        tagged("a", 2, W + 1),  # window 1: no selectors, no row
        tagged("a", 3, 2 * W + 5, ["sel-004", "sel-005"]),
        tagged("a", 4, W + 2, ["sel-006"]),  # late: joins window 2
        tagged("a", 5, 3 * W, ["sel-008", "sel-010"]),  # open at EOF
    ]
    b = [
        tagged("b", 0, 50, ["sel-100", "sel-101", "sel-102"]),
        tagged("b", 1, 60),
        tagged("b", 2, 5 * W, ["sel-003", "sel-007"]),
    ]
    return [a[0], b[0], a[1], a[2], b[1], a[3], b[2], a[4], a[5]]


def expected_rows(
    items: list[Tagged], matcher: Matcher, mode: PsiMode
) -> list[DeconflictionResult]:
    states: dict[str, TenantDeconfliction] = {}
    deconflict = Deconflicter(matcher, mode, "server", sleep=lambda seconds: None)
    rows = []
    for item in items:
        state = states.setdefault(item.signal.tenant_id, TenantDeconfliction(W))
        closed = state.push(item)
        if closed is not None:
            rows.append(deconflict(closed))
    rows.extend(deconflict(c) for s in states.values() if (c := s.flush()) is not None)
    return rows


def run_step(
    items: list[Tagged], step: PsiSettings, factory: CountingFactory
) -> tuple[list[tuple[str, Tagged]], list[DeconflictionResult]]:
    flow = Dataflow("psi_test")
    up = op.input("in", flow, TestingSource(items, batch_size=2))
    keyed = random_runs("by_tenant", up, lambda t: t.signal.tenant_id, seed=len(items))
    out = psi_step("psi", keyed, step, factory)
    passed: list[tuple[str, Tagged]] = []
    results: list[DeconflictionResult] = []
    op.output("passed", pairs("passed_pairs", out.passed), TestingSink(passed))
    op.output("results", out.results, TestingSink(results))
    run_main(flow)
    return passed, results


def per_tenant(pairs: Iterable[tuple[str, Tagged]]) -> dict[str, list[Tagged]]:
    """Each key's values in order; a key that is not the value's tenant fails."""
    out: dict[str, list[Tagged]] = {}
    for key, item in pairs:
        assert key == item.signal.tenant_id
        out.setdefault(key, []).append(item)
    return out


class CountingFactory:
    def __init__(self, matcher: Matcher) -> None:
        self.matcher = matcher
        self.calls = 0

    def __call__(self) -> Matcher:
        self.calls += 1
        return self.matcher


STEP = PsiSettings(
    server_url="http://partner.invalid:8765", server_partner_id="server", idle_flush_seconds=0.0
)


@pytest.mark.parametrize("mode", [FULL, CARD])
def test_the_bytewax_step_passes_every_signal_and_lands_one_row_per_window(
    mode: PsiMode, client: PsiClient
) -> None:
    items = workload()
    factory = CountingFactory(client.intersect)
    passed, results = run_step(items, dataclasses.replace(STEP, mode=mode.value), factory)
    assert per_tenant(passed) == per_tenant([(i.signal.tenant_id, i) for i in items])
    want = expected_rows(items, client.intersect, mode)
    key = lambda r: (r.tenant_id, r.window_start)  # noqa: E731
    assert sorted(results, key=key) == sorted(want, key=key)
    assert [(r.tenant_id, r.window_start) for r in sorted(results, key=key)] == [
        ("a", T0),
        ("a", T0 + timedelta(seconds=2 * W)),
        ("a", T0 + timedelta(seconds=3 * W)),
        ("b", T0),
        ("b", T0 + timedelta(seconds=5 * W)),
    ]
    late = next(r for r in results if r.tenant_id == "a" and r.late)
    assert late.selectors_sent == 3 and late.last_offset == 4
    if mode is FULL:
        assert late.matched == ("sel-004", "sel-006")
    # Built lazily, once per caller thread of the (single) worker.
    assert 1 <= factory.calls <= STEP.max_in_flight


def test_the_step_off_passes_everything_and_builds_nothing() -> None:
    items = workload()
    factory = CountingFactory(Down(failures=1_000))
    passed, results = run_step(items, PsiSettings(), factory)
    assert per_tenant(passed) == per_tenant([(i.signal.tenant_id, i) for i in items])
    assert results == []
    assert factory.calls == 0


def test_the_bytewax_step_survives_an_unreachable_partner() -> None:
    items = workload()
    sleeps: list[float] = []
    flow = Dataflow("psi_down")
    up = op.input("in", flow, TestingSource(items))
    keyed = random_runs("by_tenant", up, lambda t: t.signal.tenant_id, seed=11)
    down = Down(failures=1_000)
    one_caller = dataclasses.replace(STEP, max_in_flight=1)  # so the call count is exact
    out = psi_step("psi", keyed, one_caller, CountingFactory(down), sleep=sleeps.append)
    passed: list[tuple[str, Tagged]] = []
    results: list[DeconflictionResult] = []
    op.output("passed", pairs("passed_pairs", out.passed), TestingSink(passed))
    op.output("results", out.results, TestingSink(results))
    run_main(flow)
    assert per_tenant(passed) == per_tenant([(i.signal.tenant_id, i) for i in items])
    assert len(results) == 5 and {r.reason for r in results} == {PSI_UNAVAILABLE}
    assert down.calls == 3  # then paused: the other windows did not wait on it


# ---------------------------------------------------------------------------------- recovery


@settings(max_examples=10, deadline=None)
@given(split=st.integers(0, 9), via=st.sampled_from(["pickle", "deepcopy"]))
def test_a_snapshot_resumes_as_if_uninterrupted(
    split: int, via: str, server: PsiServer, batch: GroupBatch, policy: PsiPolicy
) -> None:
    items = [i for i in workload() if i.signal.tenant_id == "a"] * 2
    client = client_of(Wire(server), batch, policy)
    deconflict = Deconflicter(client.intersect, FULL, "server")
    whole = [deconflict(w) for w in run(TenantDeconfliction(W), items)]
    state = TenantDeconfliction(W)
    first = [deconflict(w) for w in feed(state, items[:split])]
    resumed = pickle.loads(pickle.dumps(state)) if via == "pickle" else copy.deepcopy(state)
    feed(state, items[split:])  # the original goes on: the copy must not follow it
    rest = [deconflict(w) for w in run(resumed, items[split:])]
    assert first + rest == whole


def calls_of(matcher: Matcher, max_in_flight: int = 4, max_queued: int = 8) -> PartnerCalls:
    """A worker's partner calls, each caller asking ``matcher``."""
    return PartnerCalls(
        lambda pause: Deconflicter(matcher, FULL, "server", paused=pause), max_in_flight, max_queued
    )


def answered(logic: _PsiLogic, timeout: float = 10.0) -> list[object]:
    """What ``logic`` emits from its timer until every window it asked is answered."""
    out: list[object] = []
    deadline = time.monotonic() + timeout
    while logic.asked:
        assert time.monotonic() < deadline, "the partner never answered"
        assert logic.notify_at() is not None  # the timer polls while windows are out
        rows, _discard = logic.on_notify()
        out.extend(rows)
        time.sleep(0.005)
    return out


def test_the_logic_snapshots_a_copy_and_flushes_an_idle_tenant(client: PsiClient) -> None:
    calls = calls_of(client.intersect)
    logic = _PsiLogic(None, W, lambda: calls, idle_seconds=30.0)
    assert logic.notify_at() is None
    item = tagged("t", 0, 1, ["sel-000", "sel-002"])
    out, discard = logic.on_batch([item])
    assert (list(out), discard) == ([item], False)
    due = logic.notify_at()
    assert due is not None and due > datetime.now(UTC)
    snapshot = logic.snapshot()
    out, discard = logic.on_notify()  # woken early: not idle yet, nothing closes
    assert (list(out), logic.asked) == ([], [])
    logic.last_item -= timedelta(seconds=30)  # now idle
    out, discard = logic.on_notify()
    (row,) = [*list(out), *answered(logic)]
    assert isinstance(row, DeconflictionResult) and row.matched == ("sel-000", "sel-002")
    assert not discard and logic.notify_at() is None
    assert snapshot.open.pending == 1 and snapshot.asked == ()  # it did not follow the state
    off = _PsiLogic(None, W, None, idle_seconds=30.0)
    assert off.on_batch([item]) == ([item], True) and off.notify_at() is None


class Gate:
    """A matcher that holds every request with a selector of ``held`` until :meth:`open`."""

    def __init__(self, matcher: Matcher, held: str) -> None:
        self.matcher, self.held = matcher, held
        self.opened = threading.Event()
        self.waiting = threading.Semaphore(0)

    def __call__(self, selectors: Sequence[str], mode: PsiMode, /) -> Outcome:
        if any(s.startswith(self.held) for s in selectors):
            self.waiting.release()
            assert self.opened.wait(30)
        return self.matcher(selectors, mode)

    def open(self) -> None:
        self.opened.set()


def window_of(tenant: str, prefix: str) -> list[Tagged]:
    """Two signals: the first's window closes on the second, with two selectors to ask."""
    return [
        tagged(tenant, 0, 1, [f"{prefix}-000", f"{prefix}-002"]),
        tagged(tenant, 1, W + 1),
    ]


def test_a_slow_partner_delays_no_signal_and_no_other_tenants_row(client: PsiClient) -> None:
    gate = Gate(client.intersect, "held")
    calls = calls_of(gate, max_in_flight=2)
    slow = _PsiLogic(None, W, lambda: calls, idle_seconds=0.0)
    quick = _PsiLogic(None, W, lambda: calls, idle_seconds=0.0)
    for item in window_of("slow", "held"):
        out, _ = slow.on_batch([item])
        assert list(out) == [item]  # passed at once, its window at the partner
    assert gate.waiting.acquire(timeout=10)  # the slow tenant's request is being held
    started = time.monotonic()
    out = [o for item in window_of("quick", "sel") for o in quick.on_batch([item])[0]]
    # A partner that answers before the second item's call has its row emitted by that call.
    passed = [o for o in out if not isinstance(o, DeconflictionResult)]
    assert passed == window_of("quick", "sel")
    (row,) = [o for o in out if isinstance(o, DeconflictionResult)] + answered(quick)
    assert isinstance(row, DeconflictionResult) and row.tenant_id == "quick"
    assert row.matched == ("sel-000", "sel-002")
    assert time.monotonic() - started < 10 and slow.asked  # the slow one is still out
    snapshot = slow.snapshot()
    assert len(snapshot.asked) == 1  # in flight at the snapshot: asked again on resume
    gate.open()
    (held,) = answered(slow)
    resumed = _PsiLogic(pickle.loads(pickle.dumps(snapshot)), W, lambda: calls, idle_seconds=0.0)
    assert answered(resumed) == [held]
    assert isinstance(held, DeconflictionResult) and held.tenant_id == "slow"


def test_the_partner_calls_are_bounded_and_then_the_worker_waits(client: PsiClient) -> None:
    gate = Gate(client.intersect, "held")
    calls = calls_of(gate, max_in_flight=1, max_queued=1)
    windows = [run(TenantDeconfliction(W), window_of(f"t{i}", "held"))[0] for i in range(3)]
    first, second = calls.ask(windows[0]), calls.ask(windows[1])  # one asked, one queued
    third: list[object] = []
    asking = threading.Thread(target=lambda: third.append(calls.ask(windows[2])))
    asking.start()
    asking.join(0.3)
    assert asking.is_alive() and third == []  # the bound is reached: the worker waits
    gate.open()
    asking.join(10)
    assert not asking.is_alive()
    rows = [first.result(10), second.result(10), third[0].result(10)]  # type: ignore[attr-defined]
    assert [r.tenant_id for r in rows] == ["t0", "t1", "t2"]


def test_a_bug_in_the_matcher_stops_the_step_where_its_rows_come_out() -> None:
    def broken(selectors: Sequence[str], mode: PsiMode, /) -> Outcome:
        raise ZeroDivisionError

    logic = _PsiLogic(None, W, lambda: calls_of(broken), idle_seconds=0.0)
    # Raised wherever the row is collected: by a later item, or by the timer.
    with pytest.raises(ZeroDivisionError):
        for item in window_of("t", "sel"):
            logic.on_batch([item])
        answered(logic)


# ---------------------------------------------------------------------------------- lake table


def rows_for_the_lake(client: PsiClient) -> list[DeconflictionResult]:
    full = expected_rows(workload(), client.intersect, FULL)
    card = expected_rows(workload(), client.intersect, CARD)
    down = expected_rows(workload()[:2], Down(failures=1_000), FULL)
    return full + card + down


def test_the_table_def_builds_arrow_matching_the_iceberg_schema(client: PsiClient) -> None:
    rows = rows_for_the_lake(client)
    table = DECONFLICTION.to_arrow(rows)
    assert table.schema == DECONFLICTION.schema.as_arrow()
    assert table.num_rows == len(rows)
    for field in DECONFLICTION.schema.fields:
        if field.required:
            assert table.column(field.name).null_count == 0, field.name
    assert table.column("matched").to_pylist()[0] == list(rows[0].matched)
    assert table.column("reason").to_pylist().count(PSI_UNAVAILABLE) == 2
    assert {DECONFLICTION.lane(r) for r in rows} == {"psi:a", "psi:b"}
    assert all(DECONFLICTION.provenance(r) == r.provenance for r in rows)


def test_rows_land_in_an_iceberg_table_and_read_back(client: PsiClient, catalog: Catalog) -> None:
    rows = rows_for_the_lake(client)
    table = ensure_table(catalog, "coherence", DECONFLICTION)
    assert table.schema().fields == DECONFLICTION.schema.fields  # the catalog kept every id
    table.append(DECONFLICTION.to_arrow(rows))
    back = (
        table.scan().to_arrow().sort_by([("tenant_id", "ascending"), ("window_start", "ascending")])
    )
    assert back.num_rows == len(rows)
    by_key = {(r.tenant_id, r.window_start, r.mode, r.reason): r for r in rows}
    for record in back.to_pylist():
        row = by_key[
            (record["tenant_id"], record["window_start"], record["mode"], record["reason"])
        ]
        assert tuple(record["matched"]) == row.matched and record["count"] == row.count
        assert record["kafka_offset"] == row.provenance.kafka_offset
