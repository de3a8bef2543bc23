"""The shape of a graphql-transport-ws message from a client, checked before it is handled.

The protocol (graphql-ws's ``PROTOCOL.md``) has a client send JSON objects in text frames, each
with a string ``type``; ``subscribe`` and ``complete`` carry a string ``id``; a ``subscribe``
payload is an object whose ``query`` and ``operationName`` are strings and whose ``variables``
and ``extensions`` are objects (each may be null or absent: a persisted query comes by id or
hash); a ``connection_init`` payload is an object or absent. Anything else is an invalid message,
which the protocol answers by closing the socket with 4400. Ariadne's handler assumes these
shapes (a list ``variables`` or a binary frame raised deep inside it, and the socket was dropped
without a close frame), so :func:`protocol_message` checks them all first.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Message

from api.request_json import BadJson, loads

__all__ = ["INVALID_MESSAGE", "protocol_message"]

#: The protocol's close code for an invalid message.
INVALID_MESSAGE = 4400

#: The subscribe payload's fields: their type and its name.
_PAYLOAD_FIELDS: tuple[tuple[str, type, str], ...] = (
    ("query", str, "a string"),
    ("operationName", str, "a string"),
    ("variables", dict, "an object"),
    ("extensions", dict, "an object"),
)


def protocol_message(event: Message) -> dict[str, Any] | str:
    """The message a ``websocket.receive`` event carries, or why it is not a valid one (a short
    text that never quotes the message)."""
    text = event.get("text")
    if not isinstance(text, str):
        return "binary frames are not protocol messages"
    try:
        message = loads(text)
    except BadJson as bad:
        return bad.detail
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return "a message is a JSON object with a string type"
    kind = message["type"]
    if kind in ("subscribe", "complete") and not (
        isinstance(message.get("id"), str) and message["id"]
    ):
        return f"a {kind} message needs a string id"
    payload = message.get("payload")
    if kind == "connection_init" and payload is not None and not isinstance(payload, dict):
        return "the connection_init payload is not an object"
    if kind == "subscribe":
        if not isinstance(payload, dict):
            return "the subscribe payload is not an object"
        for name, expected, called in _PAYLOAD_FIELDS:
            if payload.get(name) is not None and not isinstance(payload[name], expected):
                return f"the subscribe payload's {name} is not {called}"
    return message
