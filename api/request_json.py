"""Request JSON (HTTP bodies, WebSocket messages), refusing what the standard parser accepts but
the API cannot hold.

``json.loads`` raises ``RecursionError``, not ``ValueError``, for arrays or objects nested past
the interpreter's recursion limit (about 1,000 levels), and it accepts an escaped lone UTF-16
surrogate (``"\\ud800"``) as a ``str`` that no UTF-8 encoder (Kafka's Avro serializer, Postgres,
Redis) can write. Both are the client's error, refused here as :class:`BadJson`, before the data
reaches any other code. Numbers too large for a float (a 400-digit integer) are the fields'
business: :func:`api.rest.signal_input` and GraphQL's ``Float`` refuse them.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["BadJson", "loads"]

#: The escape of a UTF-16 surrogate (high D800-DBFF or low DC00-DFFF), lone or in a valid pair.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class BadJson(ValueError):
    """The text is not JSON the API accepts; ``detail`` says why, never quoting it."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def loads(text: bytes | str) -> Any:
    """The JSON value of ``text`` (bytes: UTF-8), or :class:`BadJson`."""
    if isinstance(text, bytes):
        # Strictly: json.loads would decode bytes with "surrogatepass", letting UTF-8-encoded
        # surrogates through (found by the fuzz test), and would take UTF-16 and UTF-32 too.
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            msg = "the body is not UTF-8"
            raise BadJson(msg) from None
    try:
        data = json.loads(text)
    except RecursionError:
        msg = "the JSON nests too deeply"
        raise BadJson(msg) from None
    except ValueError:  # also integers past Python's 4,300 digits
        msg = "the body is not JSON"
        raise BadJson(msg) from None
    # A surrogate pair decodes to one character; only a lone surrogate fails to encode. The
    # full check runs only when the text has such an escape at all.
    if _SURROGATE_ESCAPE.search(text) is not None:
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            msg = "the JSON has a lone UTF-16 surrogate (not Unicode text)"
            raise BadJson(msg) from None
    return data
