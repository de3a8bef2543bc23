"""core/tracing.py: sampling decisions, the traceparent it passes on, spans over real OTLP/HTTP
(the receiver of tests/otlp_receiver.py on loopback), and records that pickle as before."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from core import tracing
from core.contracts import signal_contracts
from core.records import (
    Decoded,
    PolicyTags,
    Provenance,
    RawRecord,
    Rejected,
    ScoreChange,
    Signal,
    Tagged,
)
from core.settings import ScoreSettings, SettingError, Settings, TracingSettings
from core.wire import encode
from operators.decode import SignalDecoder, traced_decode
from operators.score import TickScore
from tests.otlp_receiver import OtlpReceiver

TRACE, SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
SAMPLED, UNSAMPLED = f"00-{TRACE}-{SPAN}-01", f"00-{TRACE}-{SPAN}-00"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running
    tracing.shutdown()


def _on(receiver: OtlpReceiver, ratio: float) -> None:
    tracing.shutdown()
    assert tracing.configure(TracingSettings(endpoint=receiver.endpoint, sample_ratio=ratio), "t")


def test_tracing_is_off_without_an_endpoint() -> None:
    assert not tracing.configure(TracingSettings(), "flow")
    assert not tracing.enabled()
    assert tracing.sampled_parent(SAMPLED.encode()) is None
    assert tracing.stage_span("decode", SAMPLED, {}, 0) == SAMPLED  # nothing recorded
    assert tracing.write_spans("redis", [object()], 0) == 0


def test_settings_check_the_endpoint_and_the_ratio() -> None:
    assert Settings().tracing == TracingSettings(endpoint="", sample_ratio=0.001)
    with pytest.raises(SettingError, match=r"tracing\.sample_ratio"):
        TracingSettings(sample_ratio=1.5)
    with pytest.raises(SettingError, match=r"tracing\.endpoint"):
        TracingSettings(endpoint="127.0.0.1:4318")


def test_a_sampled_parent_is_followed_and_the_draw_starts_the_rest(
    receiver: OtlpReceiver,
) -> None:
    _on(receiver, 0.0)
    assert tracing.sampled_parent(SAMPLED.encode()) == SAMPLED
    assert tracing.sampled_parent(UNSAMPLED) is None  # an unsampled parent is followed too
    for junk in (None, b"", b"\xff", b"00-" + b"0" * 32 + b"-" + SPAN.encode() + b"-01", b"01-x"):
        assert tracing.sampled_parent(junk) is None  # ratio 0: no trace starts here
    _on(receiver, 1.0)
    assert tracing.sampled_parent(None) == tracing.ROOT
    assert tracing.sampled_parent(UNSAMPLED) is None


def test_the_ratio_is_the_share_of_traces_started(receiver: OtlpReceiver) -> None:
    _on(receiver, 0.25)
    started = sum(tracing.sampled_parent(None) is not None for _ in range(20_000))
    assert 4_600 < started < 5_400  # 5,000 expected; 8 standard deviations either side


def test_publishing_sends_a_traceparent_whether_or_not_it_samples(
    receiver: OtlpReceiver,
) -> None:
    tracing.shutdown()
    with tracing.publishing(SAMPLED, {}) as off:
        assert off.header == SAMPLED  # tracing off: the client's passes through
    with tracing.publishing("junk", {}) as off:
        assert off.header is None
    _on(receiver, 0.0)
    with tracing.publishing(None, {}) as unsampled:
        header = unsampled.header
    assert header is not None and header.endswith("-00") and len(header) == 55
    assert tracing.sampled_parent(header) is None  # the flow will not sample it again
    with tracing.publishing(SAMPLED, {"igflow.tenant_id": "t1"}) as span:
        header = span.header
        span.set({"messaging.kafka.message.offset": 7, "skipped": None})
    assert header is not None and header.startswith(f"00-{TRACE}-") and header.endswith("-01")
    tracing.flush()
    (got,) = receiver.wait_for(lambda spans: len(spans) >= 1)
    assert (got.name, got.kind, got.trace_id, got.parent_span_id) == ("publish", 4, TRACE, SPAN)
    assert header == f"00-{TRACE}-{got.span_id}-01"
    assert got.attributes == {"igflow.tenant_id": "t1", "messaging.kafka.message.offset": 7}


def _decoder_and_record(tenant: str) -> tuple[SignalDecoder, bytes]:
    contract = signal_contracts()[-1]
    record = {
        "tenant_id": tenant,
        "signal_id": "s-1",
        "type": "latency",
        "value": 0.5,
        "weight": None,
        "source": "sensor-a",
        "ts": datetime(2026, 1, 1, tzinfo=UTC),
        "selectors": [],
    }
    value = encode(1, contract.parsed, record)
    return SignalDecoder(lambda _id: contract.text, contract.parsed), value


def test_decode_continues_the_trace_and_stages_and_writes_hang_below_it(
    receiver: OtlpReceiver,
) -> None:
    _on(receiver, 0.0)
    decoder, value = _decoder_and_record("t1")
    traced = RawRecord("sig", 2, 41, b"t1", value, headers=(("traceparent", SAMPLED.encode()),))
    plain = RawRecord("sig", 2, 42, b"t1", value)
    out = traced_decode(decoder, traced)
    assert isinstance(out, Decoded) and out.trace is not None
    assert out.trace.startswith(f"00-{TRACE}-") and out.trace.endswith("-01")
    untraced = traced_decode(decoder, plain)
    assert isinstance(untraced, Decoded) and untraced.trace is None
    # The record the untraced decoder makes, but for its trace.
    assert out.signal == untraced.signal and out.raw == traced
    bad = traced_decode(decoder, RawRecord("sig", 2, 43, None, b"\x01xx", headers=traced.headers))
    assert isinstance(bad, Rejected)
    tracing.record_stage("validate", out, 0)
    tracing.record_stage("validate", untraced, 0)  # untraced: nothing
    change = _change(trace=out.trace)
    assert tracing.write_spans("postgres", [change, _change()], 0) == 1
    tracing.flush()
    spans = receiver.wait_for(lambda got: len(got) >= 4)
    by_name = {s.name: s for s in spans}
    assert sorted(by_name) == ["decode", "validate", "write postgres"] and len(spans) == 4
    decode_span = next(s for s in spans if s.name == "decode" and s.status == 0)
    assert decode_span.parent_span_id == SPAN
    assert decode_span.attributes["messaging.kafka.message.offset"] == 41
    assert out.trace == f"00-{TRACE}-{decode_span.span_id}-01"
    failed = next(s for s in spans if s.name == "decode" and s.status == 2)
    assert failed.attributes["igflow.error_code"] == "DECODE_FAILED"
    for name in ("validate", "write postgres"):
        assert by_name[name].parent_span_id == decode_span.span_id
        assert by_name[name].attributes["igflow.tenant_id"] == "t1"
    assert by_name["write postgres"].attributes["igflow.provenance_id"] == "p-1"
    assert by_name["write postgres"].attributes["igflow.item"] == "ScoreChange"


def _scored(ms: int, value: float, offset: int, trace: str | None) -> Tagged:
    signal = Signal(
        "t1", f"s{offset}", "latency", value, 1.0, "a", _AT + timedelta(milliseconds=ms)
    )
    decoded = Decoded(signal, Provenance("sig", 0, offset, 1, "h"), trace=trace)
    tags = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")
    return Tagged(decoded, tags, "policy-v", f"prov-{offset}")


_AT = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_score_change_records_when_it_leaves_the_score_step(receiver: OtlpReceiver) -> None:
    """``score publish``: under the trace the published change carries, when its tick closed
    (a later tick's signal, or the end of the input), not when its signal was scored."""
    _on(receiver, 0.0)
    state = TickScore(ScoreSettings(window_seconds=100.0, tick_seconds=0.1))
    assert state.add([_scored(10, 0.5, 1, SAMPLED), _scored(20, 0.9, 2, None)]) == []
    tracing.flush()
    assert not [s for s in receiver.spans if s.name == "score publish"]  # the tick is open
    [first] = state.add([_scored(130, 0.2, 3, SAMPLED)])
    # The tick's last change (offset 2) carries the newest sampled signal's trace that changed
    # the score in the tick (offset 1's): its change was folded into it.
    assert (first.provenance.kafka_offset, first.trace) == (2, SAMPLED)
    [second] = state.flush()
    assert second.provenance.kafka_offset == 3
    tracing.flush()
    spans = receiver.wait_for(lambda got: len([s for s in got if s.name == "score publish"]) >= 2)
    published = [s for s in spans if s.name == "score publish"]
    assert len(published) == 2
    assert {s.parent_span_id for s in published} == {SPAN}
    assert sorted(s.attributes["igflow.provenance_id"] for s in published) == [
        "prov-2",
        "prov-3",
    ]


def test_a_change_a_horizon_publishes_leaves_after_its_signal_was_scored(
    receiver: OtlpReceiver,
) -> None:
    """A drift horizon closes the tick at the signal that made its change (``close_on =
    "horizon"``): the ``score`` span of that signal ends before the ``score publish`` span of
    its change (ci26: the publish was recorded first, inside the signal's own scoring)."""
    _on(receiver, 0.0)
    state = TickScore(ScoreSettings(window_seconds=100.0, tick_seconds=0.1, close_on="horizon"))
    item = _scored(10, 0.5, 1, SAMPLED)
    decoded = dataclasses.replace(item.decoded, horizon=item.decoded.signal.ts)
    [change] = state.add([dataclasses.replace(item, decoded=decoded)])
    assert change.provenance.kafka_offset == 1
    tracing.flush()
    spans = receiver.wait_for(lambda got: {"score", "score publish"} <= {s.name for s in got})
    [scored] = [s for s in spans if s.name == "score"]
    [published] = [s for s in spans if s.name == "score publish"]
    assert scored.end_ns <= published.end_ns


def _change(trace: str | None = None) -> ScoreChange:
    return ScoreChange(
        "t1",
        0.5,
        "WARN",
        datetime(2026, 1, 1, tzinfo=UTC),
        1,
        1.0,
        "p-1",
        Provenance("sig", 2, 41, 1, "h"),
        seq=1,
        trace=trace,
    )


def test_untraced_records_pickle_as_before_and_traced_ones_keep_their_trace() -> None:
    untraced, traced = _change(), _change(trace=SAMPLED)
    assert pickle.loads(pickle.dumps(traced)) == traced
    assert pickle.loads(pickle.dumps(untraced)) == untraced
    # The state of an untraced record is that of the record before the field existed ...
    state = untraced.__getstate__()
    assert len(state) == len(traced.__getstate__()) - 1
    # ... so a snapshot taken then loads, its trace the default.
    old = ScoreChange.__new__(ScoreChange)
    old.__setstate__(state)
    assert old == untraced and old.trace is None
    signal = Signal("t1", "s", "latency", 0.5, None, "src", datetime(2026, 1, 1, tzinfo=UTC))
    decoded = Decoded(signal, Provenance("sig", 0, 1, 1, "h"), trace=SAMPLED)
    assert pickle.loads(pickle.dumps(decoded)).trace == SAMPLED


def test_a_serving_store_records_when_a_traced_item_is_handed_to_its_pipeline(
    receiver: OtlpReceiver,
) -> None:
    """``put <sink>``: when the worker handed the item to the store's pipeline, so a trace's
    time after the drift decision splits into the flow's and the pipeline's queue
    (``benchmarks/latency.py``); only traced items get one, before their ``write`` starts."""
    from core.settings import KafkaSettings, StoreSettings
    from sinks.dlq import DeadLetterTarget
    from sinks.serving import PipelinedPartition

    _on(receiver, 0.0)
    written: list[ScoreChange] = []
    part = PipelinedPartition(
        "unit",
        type("Writer", (), {"write": staticmethod(written.extend)})(),
        StoreSettings(),
        DeadLetterTarget.of(KafkaSettings()),
        transient=lambda exc: False,
    )
    part.write_batch([_change(SAMPLED), _change()])
    part.close()
    assert len(written) == 2
    tracing.flush()
    spans = receiver.wait_for(lambda got: {"put unit", "write unit"} <= {s.name for s in got})
    [put] = [s for s in spans if s.name == "put unit"]
    [write] = [s for s in spans if s.name == "write unit"]
    assert put.parent_span_id == SPAN
    assert put.attributes["igflow.item"] == "ScoreChange"
    assert put.end_ns <= write.start_ns
