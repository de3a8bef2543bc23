"""Traces: OpenTelemetry spans from the API's publish through every stage to every store write.

One :class:`~opentelemetry.sdk.trace.TracerProvider` per process, started by :func:`configure`
from the ``tracing`` settings: spans go through a ``BatchSpanProcessor`` to an OTLP/HTTP
exporter at ``tracing.endpoint``, flushed at exit. An empty endpoint leaves tracing off: no SDK
object is built, :func:`enabled` is ``False`` and the steps install no hook at all.

How a trace travels:

- The API's publish opens a ``PRODUCER`` span (child of the client's HTTP ``traceparent`` if it
  sent one) and puts its W3C ``traceparent`` in the Kafka record's headers (:func:`publishing`).
- The decode step reads that header (:func:`sampled_parent`); a record without one starts a
  trace at ``tracing.sample_ratio``. A sampled record's decode span becomes its *trace*: the
  ``traceparent`` text of that span, carried in ``Decoded.trace`` (and ``ScoreChange.trace`` for
  the score changes it causes). Unsampled records carry ``None``, so every later hook costs an
  ``is None`` test.
- Each stage records a span per sampled record (:func:`stage_span`), each store write a span per
  sampled item it wrote (:func:`write_spans`), all children of the record's decode span.

Sampling is decided once, where a trace starts (``ParentBased``: a ``traceparent`` that arrives
is followed, sampled or not). The root decision is this module's own cheap draw rather than the
SDK's ``TraceIdRatioBased``, so an unsampled record never builds a span; an unsampled publish
still sends a ``traceparent`` (flags ``00``) so that the flow does not sample it a second time.
The trace never reaches a lake row: the tables' columns are listed (:mod:`sinks.lake_tables`),
so replays stay byte-identical.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import random
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from core.settings import TracingSettings

__all__ = [
    "ROOT",
    "TRACEPARENT",
    "AttributeValue",
    "Publishing",
    "configure",
    "enabled",
    "flush",
    "item_attributes",
    "publishing",
    "record_stage",
    "sampled_parent",
    "shutdown",
    "stage_span",
    "trace_of",
    "write_spans",
]

log = logging.getLogger(__name__)

#: The W3C Trace Context header, in HTTP requests and Kafka record headers alike.
TRACEPARENT = "traceparent"

#: ``version-traceid-spanid-flags``, lower-case hex; an all-zero trace or span id is invalid.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
#: The parent of a trace's first span: no parent.
ROOT = ""

AttributeValue = str | int | float | bool


class _Tracing:
    """The process's provider, its tracer and the root sampling draw."""

    def __init__(self, settings: TracingSettings, role: str) -> None:
        # Imported here: a process with tracing off never loads the SDK.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

        self.ratio = settings.sample_ratio
        self.rng = random.Random()
        resource = Resource.create({"service.name": f"{settings.service_name}-{role}"})
        # Roots are sampled by `_draw` before any span exists; below a root, follow the parent.
        self.provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON))
        exporter = OTLPSpanExporter(
            endpoint=settings.endpoint, timeout=settings.export_timeout_seconds
        )
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("igflow")

    def draw(self) -> bool:
        """Whether a trace that starts here is sampled."""
        return self.rng.random() < self.ratio


_state: _Tracing | None = None
_lock = threading.Lock()


def configure(settings: TracingSettings, role: str) -> bool:
    """Start tracing for this process (once: later calls keep the first provider); ``role``
    (``api``, ``flow``) ends the ``service.name``. ``False`` when ``tracing.endpoint`` is empty
    (tracing stays off)."""
    global _state
    if not settings.endpoint:
        return _state is not None
    with _lock:
        if _state is None:
            _state = _Tracing(settings, role)
            atexit.register(shutdown)
            log.info(
                "tracing to %s at sample ratio %g",
                settings.endpoint,
                settings.sample_ratio,
                extra={"op": "tracing"},
            )
    return True


def enabled() -> bool:
    """Whether this process records spans (checked when a step is built, not per record)."""
    return _state is not None


def flush(timeout_s: float = 10.0) -> None:
    """Export every span ended so far (a no-op with tracing off)."""
    state = _state
    if state is not None:
        state.provider.force_flush(round(timeout_s * 1000))


def shutdown() -> None:
    """Flush and stop the exporter; tracing is off afterwards until :func:`configure`."""
    global _state
    with _lock:
        state, _state = _state, None
    if state is not None:
        state.provider.shutdown()


def _parse(value: bytes | str | None) -> tuple[str, str, bool] | None:
    """``(trace id, span id, sampled)`` of a valid ``traceparent``, else ``None``."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None or match[1] == _ZERO_TRACE or match[2] == _ZERO_SPAN:
        return None
    return match[1], match[2], bool(int(match[3], 16) & 1)


def sampled_parent(header: bytes | str | None) -> str | None:
    """Where a record's (or a request's) spans hang: the ``traceparent`` it carries if that is
    sampled, :data:`ROOT` if it carries none (or an invalid one) and the draw samples it, else
    ``None`` (not traced). Tracing off: ``None``."""
    state = _state
    if state is None:
        return None
    parsed = _parse(header)
    if parsed is None:
        return ROOT if state.draw() else None
    if not parsed[2]:
        return None
    return header.decode("ascii").strip() if isinstance(header, bytes) else str(header).strip()


def _context(parent: str) -> Any:
    """An OpenTelemetry context whose current span is ``parent`` (none for :data:`ROOT`)."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    parsed = _parse(parent)
    if parsed is None:
        return None
    trace_id, span_id, sampled = parsed
    span_context = SpanContext(
        int(trace_id, 16),
        int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context))


def _traceparent(span: Any) -> str:
    context = span.get_span_context()
    flags = int(context.trace_flags) & 0xFF
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"


def stage_span(
    name: str,
    parent: str,
    attributes: Mapping[str, AttributeValue | None],
    start_ns: int,
    *,
    error: str | None = None,
) -> str:
    """Record a span ``name`` from ``start_ns`` (``time.time_ns()``) to now under ``parent``
    (a ``traceparent`` or :data:`ROOT`); returns the new span's ``traceparent``. ``error``: a
    reason code, set as ``igflow.error_code`` and the span's error status. ``None`` attribute
    values are left out. Tracing off: nothing recorded, ``parent`` returned."""
    state = _state
    if state is None:
        return parent
    from opentelemetry.trace import Status, StatusCode

    span = state.tracer.start_span(
        name,
        context=_context(parent),
        attributes={k: v for k, v in attributes.items() if v is not None},
        start_time=start_ns,
    )
    if error is not None:
        span.set_attribute("igflow.error_code", error)
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()
    return _traceparent(span)


def trace_of(item: object) -> str | None:
    """The trace a flow item carries (``Decoded``, ``Tagged``, ``Quarantined``, ``ScoreChange``
    have a ``trace``); ``None`` for an unsampled item or one of another kind."""
    trace = getattr(item, "trace", None)
    return trace if isinstance(trace, str) else None


def item_attributes(item: object) -> dict[str, AttributeValue | None]:
    """Tenant, provenance id and Kafka coordinates of a flow item, as span attributes."""
    signal = getattr(item, "signal", None)
    decoded = getattr(item, "decoded", None)
    if signal is None and decoded is not None:
        signal = decoded.signal
    tenant = getattr(item, "tenant_id", None) or getattr(signal, "tenant_id", None)
    provenance = getattr(item, "provenance", None) or getattr(decoded, "provenance", None)
    out: dict[str, AttributeValue | None] = {
        "igflow.tenant_id": tenant,
        "igflow.provenance_id": getattr(item, "provenance_id", None),
        "igflow.signal_id": getattr(signal, "signal_id", None),
    }
    if provenance is not None:
        out["messaging.destination.name"] = provenance.topic
        out["messaging.kafka.destination.partition"] = provenance.kafka_partition
        out["messaging.kafka.message.offset"] = provenance.kafka_offset
    return out


def record_stage(
    stage: str,
    item: object,
    start_ns: int,
    *,
    error: str | None = None,
    outcome: str | None = None,
) -> None:
    """Record stage ``stage``'s span for a traced flow item, from ``start_ns`` to now;
    ``outcome`` (``duplicate``, ``held`` …) becomes ``igflow.outcome``."""
    trace = trace_of(item)
    if trace is not None:
        attributes = item_attributes(item)
        attributes["igflow.stage"] = stage
        attributes["igflow.outcome"] = outcome
        stage_span(stage, trace, attributes, start_ns, error=error)


def write_spans(
    sink: str,
    items: Iterable[object],
    start_ns: int,
    *,
    error: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> int:
    """Record a ``write <sink>`` span, from ``start_ns`` to now, under each traced item of a
    batch a store wrote (or, with ``error``, gave up on); returns how many. Tracing off: 0."""
    if _state is None:
        return 0
    count = 0
    for item in items:
        trace = trace_of(item)
        if trace is None:
            continue
        attrs = item_attributes(item)
        attrs["igflow.sink"] = sink
        attrs["igflow.item"] = type(item).__name__  # Tagged (a signal) or ScoreChange
        if attributes:
            attrs.update(attributes)
        stage_span(f"write {sink}", trace, attrs, start_ns, error=error)
        count += 1
    return count


class Publishing:
    """The API's publish span (see :func:`publishing`): the header to send, and what to add."""

    def __init__(self, span: Any, header: str | None) -> None:
        self._span = span
        #: The ``traceparent`` to put in the Kafka record (``None``: send none).
        self.header = header

    def set(self, attributes: Mapping[str, AttributeValue | None]) -> None:
        """Add attributes (``None`` values left out) to the span, if one is recorded."""
        if self._span is not None:
            for key, value in attributes.items():
                if value is not None:
                    self._span.set_attribute(key, value)

    def failed(self, code: str) -> None:
        if self._span is not None:
            from opentelemetry.trace import Status, StatusCode

            self._span.set_attribute("igflow.error_code", code)
            self._span.set_status(Status(StatusCode.ERROR, code))


def _unsampled_header(state: _Tracing) -> str:
    trace_id = state.rng.getrandbits(128) or 1
    span_id = state.rng.getrandbits(64) or 1
    return f"00-{trace_id:032x}-{span_id:016x}-00"


@contextlib.contextmanager
def publishing(
    incoming: str | None, attributes: Mapping[str, AttributeValue | None]
) -> Iterator[Publishing]:
    """The API's ``PRODUCER`` span around one publish, child of the client's ``traceparent``
    (``incoming``) when it sent a valid one.

    The header to send: the span's own ``traceparent`` when sampled; an unsampled one (flags
    ``00``) when not, so the flow does not start the trace again; with tracing off, the client's
    ``traceparent`` passed through unchanged (or none)."""
    state = _state
    if state is None:
        yield Publishing(None, incoming if _parse(incoming) is not None else None)
        return
    parent = sampled_parent(incoming)
    if parent is None:
        parsed = _parse(incoming)
        header = incoming if parsed is not None else _unsampled_header(state)
        yield Publishing(None, header)
        return
    from opentelemetry.trace import SpanKind

    span = state.tracer.start_span(
        "publish",
        context=_context(parent),
        kind=SpanKind.PRODUCER,
        attributes={k: v for k, v in attributes.items() if v is not None},
        start_time=time.time_ns(),
    )
    try:
        yield Publishing(span, _traceparent(span))
    finally:
        span.end()
