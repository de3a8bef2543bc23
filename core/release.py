"""Release markers: how a released quarantine batch gets past the drift check.

``igflow quarantine release`` re-sends a batch's records, byte for byte, to the signal topic with
the header ``igflow.released`` = ``<batch_id>.<hmac>``, where the HMAC-SHA256 (keyed by
``quarantine.release_key``) covers the batch id and the record's input hash. The drift step lets
a record pass unchecked only when its marker verifies, so the header cannot be copied onto other
records, and a producer without the key cannot bypass the check.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["RELEASE_HEADER", "sign", "verify"]

RELEASE_HEADER = "igflow.released"


def _mac(key: str, batch_id: str, input_hash: str) -> str:
    message = f"{batch_id}\x00{input_hash}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def sign(key: str, batch_id: str, input_hash: str) -> bytes:
    """The header value releasing the record with ``input_hash`` from batch ``batch_id``."""
    return f"{batch_id}.{_mac(key, batch_id, input_hash)}".encode()


def verify(key: str, marker: bytes | None, input_hash: str) -> str | None:
    """The released batch's id if ``marker`` is a valid release of this record, else ``None``."""
    if not marker:
        return None
    try:
        text = marker.decode("ascii")
    except UnicodeDecodeError:
        return None
    batch_id, dot, mac = text.rpartition(".")
    if not dot or not batch_id:
        return None
    if hmac.compare_digest(mac, _mac(key, batch_id, input_hash)):
        return batch_id
    return None
