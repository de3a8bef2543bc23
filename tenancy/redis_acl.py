"""Per-tenant Redis ACL users: what the API reads a tenant's keys and channels as.

Every tenant has a Redis user that may read its own keys (``tenant:{id}:score``, ``:signals``,
``:signals:applied``, by exact name) and subscribe to its own events channel, and nothing else:
not another tenant's keys, not a write, not an admin command. The API authenticates as the
*caller's* tenant before each read and on each event subscription, so a resolver that skipped
the policy check and asked for another tenant's data would be refused by Redis itself
(``NOPERM``).

A user's password is derived (HMAC-SHA256) from one secret shared by the processes that
provision and use the users, and the user's name from a hash of the tenant id, so a tenant id
with characters Redis names cannot hold needs no escaping; the key and channel patterns escape
Redis's glob characters. The secret lives in a file readable by its owner only (0600), created
on first use like the local KMS's root key.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from core.secret_files import owner_only_secret
from core.store_keys import applied_key, events_channel, score_key, signals_key

__all__ = [
    "SECRET_BYTES",
    "TENANT_COMMANDS",
    "acl_password",
    "acl_setuser_args",
    "acl_username",
    "glob_escape",
    "load_secret",
]

SECRET_BYTES = 32
#: What a tenant's user may run: reads of its score hash and signals stream, subscriptions,
#: and PING. Everything else is refused (``-@all`` first).
TENANT_COMMANDS = (
    "hgetall",
    "hget",
    "hmget",
    "xrange",
    "xrevrange",
    "xlen",
    "exists",
    "ttl",
    "ping",
    "subscribe",
    "unsubscribe",
)
_GLOB = frozenset("*?[]\\")


def acl_username(tenant_id: str) -> str:
    """The Redis user of ``tenant_id``: ``igflow-t-`` and 24 hex digits of its id's SHA-256."""
    return "igflow-t-" + hashlib.sha256(tenant_id.encode()).hexdigest()[:24]


def acl_password(secret: bytes, tenant_id: str) -> str:
    """The password of ``tenant_id``'s user, derived from ``secret``."""
    return hmac.new(secret, b"igflow redis acl\x00" + tenant_id.encode(), "sha256").hexdigest()


def glob_escape(text: str) -> str:
    """``text`` as a Redis glob pattern that matches exactly ``text``."""
    return "".join("\\" + c if c in _GLOB else c for c in text)


def acl_setuser_args(secret: bytes, tenant_id: str) -> list[str]:
    """The arguments of ``ACL SETUSER`` that (re)define ``tenant_id``'s user from scratch:
    enabled, its password (as a SHA-256, never in clear in the ACL), its own keys and events
    channel, and :data:`TENANT_COMMANDS` only."""
    digest = hashlib.sha256(acl_password(secret, tenant_id).encode()).hexdigest()
    # Its keys by exact name, not ``tenant:{id}:*``: that prefix would also cover a tenant
    # whose id extends this one after a colon (``a`` and ``a:x``).
    keys = (score_key(tenant_id), signals_key(tenant_id), applied_key(tenant_id))
    return [
        acl_username(tenant_id),
        "reset",
        "on",
        "#" + digest,
        *("~" + glob_escape(key) for key in keys),
        "&" + glob_escape(events_channel(tenant_id)),
        "-@all",
        *("+" + c for c in TENANT_COMMANDS),
    ]


def load_secret(path: Path) -> bytes:
    """The secret in ``path``: created (mode 0600) if missing, refused if others may read it."""
    return owner_only_secret(path, SECRET_BYTES, "redis ACL secret")
