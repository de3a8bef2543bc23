"""JSON logs, one object per line, on standard error.

Structured fields are passed with ``extra=``; the ones the product names (``tenant_id``,
``provenance_id``, ``op``, ``latency_ms``, ``error_code``) and the provenance ids
(``kafka_partition``, ``kafka_offset``, ``schema_version``, ``input_hash``) are copied into the
object whenever a record carries them.

A line the input can repeat without bound (a rejected record's) goes through a
:class:`LineLimit`: so many a second per key, and one line that counts the rest.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "LineLimit", "configure"]

_FIELDS = (
    "tenant_id",
    "provenance_id",
    "op",
    "latency_ms",
    "error_code",
    "kafka_partition",
    "kafka_offset",
    "schema_version",
    "input_hash",
    "rows",
    "rows_per_tenant",
    "table",
    "offsets",
    "client",
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def configure(level: str = "INFO") -> None:
    """Route the root logger to standard error as JSON (idempotent)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler.formatter, JsonFormatter):
            root.setLevel(level.upper())
            return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.handlers = [handler]
    root.setLevel(level.upper())
    # The registry client logs every HTTP request at INFO; our own lines say what matters.
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class LineLimit:
    """At most ``per_second`` lines a second for each key (a reason code); past that a key's
    lines are counted, not written, and the count is logged once its second is over (with its
    next line, or by :meth:`flush`, which runs when the process exits).

    For lines whose number the input decides: a flood of bad records must neither flood the log
    nor spend the flow's time writing it (a rejected record's line cost ~26 µs of its ~53,
    session 28), while what keeps each one (the DLQ topic, a metric) stays exact. The count's
    line has ``op``, the key as ``error_code`` and the count as ``rows``. A second is the
    monotonic clock's, per key, from the first line in it; ``clock`` is for tests. Thread-safe.
    """

    def __init__(
        self,
        logger: logging.Logger,
        per_second: int,
        op: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_second < 0:
            msg = "per_second must not be negative"
            raise ValueError(msg)
        self._log = logger
        self._per_second = per_second
        self._op = op
        self._clock = clock
        self._lock = threading.Lock()
        #: key -> [when its second began, lines written in it, lines not written]
        self._seconds: dict[str, list[float]] = {}
        atexit.register(_flush_at_exit, weakref.ref(self))

    def warning(self, key: str, msg: str, *args: object, extra: Mapping[str, object]) -> None:
        """``logger.warning(msg, *args, extra=extra)``, unless ``key``'s second is full."""
        now = self._clock()
        with self._lock:
            second = self._seconds.get(key)
            held = 0
            if second is None or now - second[0] >= 1.0:
                held = int(second[2]) if second is not None else 0
                second = self._seconds[key] = [now, 0, 0]
            write = second[1] < self._per_second
            second[1 if write else 2] += 1
        if held:
            self._held(key, held)
        if write:
            self._log.warning(msg, *args, extra=dict(extra))

    def flush(self) -> None:
        """Log the count of every key's lines not written so far; each key's second ends."""
        with self._lock:
            held = [(key, int(second[2])) for key, second in self._seconds.items()]
            self._seconds.clear()
        for key, count in held:
            if count:
                self._held(key, count)

    def _held(self, key: str, count: int) -> None:
        self._log.warning(
            "%d more lines with %s in one second were not written (at most %d a second are)",
            count,
            key,
            self._per_second,
            extra={"op": self._op, "error_code": key, "rows": count},
        )


def _flush_at_exit(ref: weakref.ref[LineLimit]) -> None:
    limit = ref()
    if limit is not None:
        limit.flush()
