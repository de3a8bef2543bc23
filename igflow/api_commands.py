"""``igflow token`` and ``igflow apikeys create|list|revoke``: credentials for the API.

``token`` prints a JWT for a tenant and scopes, signed with the local stack's key
(:mod:`api.jwt_keys`, created if missing); ``igflow serve`` accepts it when ``api.jwt_keys`` is
empty (it then verifies against the same folder's ``jwks.json``).

``apikeys create`` prints, once, a new API key with its record as JSON: only its SHA-256 is kept,
so it cannot be shown again. ``apikeys list`` shows the keys' records, never a key. ``apikeys
revoke`` exits 1 when no active key has the id; the API refuses a revoked key within its cache
TTL (30 s). A store that cannot be reached, or whose migrations were not applied (``igflow
setup``), exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from core.settings import Settings

if TYPE_CHECKING:
    from api.api_keys import ApiKey

__all__ = ["register"]

Handler = Callable[[argparse.Namespace, Settings], int]

#: The scopes the API knows; others may be granted but no operation asks for them.
_SCOPES = ("coherence:read", "coherence:write", "platform:read")
_SCOPE_HELP = f"a scope to grant (repeatable): {', '.join(_SCOPES)}"


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from api.jwt_keys import dev_keys_dir, mint_token

    if settings.api.jwt_keys:
        print(
            f"igflow token: signed with the local key in {dev_keys_dir(settings)}, but the API"
            f" verifies against api.jwt_keys ({settings.api.jwt_keys})",
            file=sys.stderr,
        )
    token = mint_token(
        settings, args.tenant, args.scope, args.ttl, args.alg, subject=args.subject or None
    )
    print(token)
    return 0


def _as_json(key: ApiKey) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "tenant_id": key.tenant_id,
        "scopes": sorted(key.scopes),
        "label": key.label,
        "created_at": key.created_at.isoformat(),
        "revoked_at": None if key.revoked_at is None else key.revoked_at.isoformat(),
    }


def _create(args: argparse.Namespace, settings: Settings) -> int:
    from api.api_keys import ApiKeyStore

    new = ApiKeyStore(settings.stores.postgres_dsn).create(args.tenant, args.scope, args.label)
    print(json.dumps({"key": new.key, **_as_json(new.info)}))
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from api.api_keys import ApiKeyStore

    keys = ApiKeyStore(settings.stores.postgres_dsn).list_keys(args.tenant)
    if args.json:
        print(json.dumps([_as_json(k) for k in keys]))
        return 0
    print(f"{'key_id':<16}  {'tenant':<16} {'state':<7}  {'created':<19}  scopes  label")
    for k in keys:
        state = "active" if k.active else "revoked"
        created = k.created_at.strftime("%Y-%m-%d %H:%M:%S")
        scopes = ",".join(sorted(k.scopes))
        label = k.label or ""
        print(f"{k.key_id:<16}  {k.tenant_id:<16} {state:<7}  {created:<19}  {scopes}  {label}")
    print(f"{len(keys)} key(s)")
    return 0


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    from api.api_keys import ApiKeyStore

    if not ApiKeyStore(settings.stores.postgres_dsn).revoke(args.key_id):
        print(f"no active API key {args.key_id!r}")
        return 1
    print(f"revoked {args.key_id}")
    return 0


_KEY_ACTIONS: dict[str, Handler] = {"create": _create, "list": _list, "revoke": _revoke}


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Add ``igflow token`` and ``igflow apikeys ACTION`` through the CLI's
    ``add(name, handler, help)``."""
    t = add("token", _token, "print a JWT for the API, signed with the local stack's key")
    t.add_argument("--tenant", required=True)
    t.add_argument(
        "--scope",
        action="append",
        required=True,
        help=f"a scope (repeatable): {', '.join(_SCOPES)}",
    )
    t.add_argument("--ttl", type=int, default=3600, help="seconds the token is valid (3600)")
    t.add_argument("--alg", choices=("RS256", "ES256"), default="RS256")
    t.add_argument("--subject", help="the sub claim (default: dev:<tenant>)")

    p = add("apikeys", lambda a, s: _KEY_ACTIONS[a.action](a, s), "API keys (Postgres, hashed)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    c = actions.add_parser("create", help="create a key and print it, once (JSON)")
    c.add_argument("--tenant", required=True)
    c.add_argument(
        "--scope",
        action="append",
        required=True,
        help=f"a scope (repeatable): {', '.join(_SCOPES)}",
    )
    c.add_argument("--label", help="a note on whose key this is")

    ls = actions.add_parser("list", help="list the keys (never the key itself)")
    ls.add_argument("--tenant", help="only this tenant's keys")
    ls.add_argument("--json", action="store_true")

    r = actions.add_parser("revoke", help="revoke a key by its key_id")
    r.add_argument("key_id")
