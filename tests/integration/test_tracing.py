"""One signal's trace, from the API's publish to every store, received over real OTLP/HTTP.

``igflow serve`` and ``igflow run`` (lake + Redis + graph + Postgres) export to a small OTLP
receiver (:mod:`tests.otlp_receiver`) with ``tracing.sample_ratio`` 0: only a trace the client
starts (a sampled ``traceparent`` on its request) is recorded, end to end.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta

import pytest

from api.jwt_keys import mint_token
from core.settings import Settings
from tests.integration.api_server import serve
from tests.integration.conftest import finish, igflow, lake_rows, read_topic
from tests.integration.scratch import Scratch
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.integration

STAGES = ("decode", "validate", "drift", "dedupe", "tenant_tag", "psi", "score")
#: When the score change the signal caused left the score step (its tick closed: here, at the
#: end of the bounded run).
PUBLISH = "score publish"
#: A write span per store: the lake's two tables and the three serving stores.
WRITES = (
    "write lake.signals",
    "write lake.scores",
    "write redis",
    "write graph",
    "write postgres",
)
#: When a serving store's pipeline was handed the item (sinks/serving.py), one per item written.
PUTS = ("put redis", "put graph", "put postgres")
PRODUCER = 4  # OTLP SpanKind


def _signal(tenant: str, signal_id: str, ts: datetime) -> dict[str, object]:
    return {
        "tenantId": tenant,
        "signalId": signal_id,
        "type": "latency",
        "value": 0.5,
        "weight": 1.0,
        "source": "sensor-a",
        "ts": ts.isoformat(),
    }


def _by_name(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    out: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def test_one_signals_trace_runs_from_the_api_through_every_stage_to_every_store(
    it_settings: Settings, scratch: Scratch
) -> None:
    tenant = scratch.tenant("trace")
    settings = it_settings.with_changes("stores", sinks="redis,graph,postgres")
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    now = datetime.now(UTC) - timedelta(minutes=1)
    with OtlpReceiver() as receiver:
        tracing_env = {
            "IGFLOW_TRACING_ENDPOINT": receiver.endpoint,
            "IGFLOW_TRACING_SAMPLE_RATIO": "0",
        }
        with serve(settings, **tracing_env) as server:
            token = mint_token(settings, tenant, ["coherence:write"])
            traced = server.client.post(
                "/v1/coherence/signals",
                json=_signal(tenant, "traced-1", now),
                headers={
                    "authorization": f"Bearer {token}",
                    "traceparent": f"00-{trace_id}-{client_span}-01",
                },
            )
            assert traced.status_code == 202, traced.text
            # No traceparent, and nothing starts a trace at ratio 0: this one is not recorded.
            untraced = server.client.post(
                "/v1/coherence/signals",
                json=_signal(tenant, "untraced-1", now + timedelta(seconds=1)),
                headers={"authorization": f"Bearer {token}"},
            )
            assert untraced.status_code == 202, untraced.text
            finish(igflow(settings, "run", **tracing_env))
            spans = receiver.wait_for(
                lambda got: (
                    {"publish", *STAGES, *WRITES, *PUTS}
                    <= {s.name for s in got if s.trace_id == trace_id}
                )
            )

    # The traceparent travelled in the Kafka record: the publish span's own, sampled.
    headers = {
        m.value(): dict(m.headers() or ()) for m in read_topic(settings, settings.kafka.topic)
    }
    assert len(headers) == 2
    ours = [s for s in spans if s.trace_id == trace_id]
    names = _by_name(ours)
    assert set(names) == {"publish", *STAGES, PUBLISH, *WRITES, *PUTS}, sorted(names)
    # Nothing else was traced: the untraced signal was sent an unsampled traceparent.
    assert {s.trace_id for s in spans} == {trace_id}

    (publish,) = names["publish"]
    assert publish.kind == PRODUCER and publish.service == "igflow-api"
    assert publish.parent_span_id == client_span  # the client's traceparent was honoured
    assert publish.attributes["igflow.tenant_id"] == tenant
    sent = [h.get("traceparent") for h in headers.values()]
    assert f"00-{trace_id}-{publish.span_id}-01".encode() in sent
    (decode,) = names["decode"]
    assert decode.parent_span_id == publish.span_id and decode.service == "igflow-flow"
    assert (
        decode.attributes["messaging.kafka.message.offset"]
        == publish.attributes["messaging.kafka.message.offset"]
    )

    # One span per stage; one per item a store wrote: Redis and the graph take the signal and
    # the score change it caused, the lake's tables and Postgres one of them.
    items = {n: sorted(s.attributes.get("igflow.item", "") for s in names[n]) for n in names}
    assert items == {
        "publish": [""],
        **{stage: [""] for stage in STAGES},
        PUBLISH: [""],
        "write lake.signals": ["Tagged"],
        "write lake.scores": ["ScoreChange"],
        "write redis": ["ScoreChange", "Tagged"],
        "write graph": ["ScoreChange", "Tagged"],
        "write postgres": ["ScoreChange"],
        "put redis": ["ScoreChange", "Tagged"],
        "put graph": ["ScoreChange", "Tagged"],
        "put postgres": ["ScoreChange"],
    }
    (landed,) = [r for r in lake_rows(settings) if r["signal_id"] == "traced-1"]
    for name in (*STAGES[1:], PUBLISH, *WRITES, *PUTS):
        for span in names[name]:
            assert span.parent_span_id == decode.span_id, name
            assert span.attributes["igflow.tenant_id"] == tenant, name
            assert span.status != 2, (name, span.attributes)
            assert span.start_ns <= span.end_ns
    # Provenance ids exist from the tenant tag on (the manifest's), and are the landed row's.
    for name in ("tenant_tag", "psi", "score", PUBLISH, *WRITES):
        for span in names[name]:
            assert span.attributes["igflow.provenance_id"] == landed["provenance_id"], name
    assert names["write lake.signals"][0].attributes["igflow.sink"] == "lake.signals"
    assert names["score"][0].attributes["igflow.outcome"] == "changed"
    # The change is published after the signal was scored, and written after it was published.
    (published,) = names[PUBLISH]
    assert published.end_ns >= names["score"][0].end_ns
    for name in ("write redis", "write graph", "write postgres", "write lake.scores"):
        (write,) = [s for s in names[name] if s.attributes["igflow.item"] == "ScoreChange"]
        assert write.start_ns >= published.end_ns, name
    # Each item reached its store's pipeline before its write started.
    for name in PUTS:
        for put in names[name]:
            item = put.attributes["igflow.item"]
            (write,) = [
                s
                for s in names[name.replace("put", "write")]
                if s.attributes["igflow.item"] == item
            ]
            assert put.end_ns <= write.start_ns, (name, item)
    assert time.time_ns() >= max(s.end_ns for s in ours)
