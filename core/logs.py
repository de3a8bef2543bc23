"""JSON logs, one object per line, on standard error.

Structured fields are passed with ``extra=``; the ones the product names (``tenant_id``,
``provenance_id``, ``op``, ``latency_ms``, ``error_code``) and the provenance ids
(``kafka_partition``, ``kafka_offset``, ``schema_version``, ``input_hash``) are copied into the
object whenever a record carries them.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "configure"]

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
