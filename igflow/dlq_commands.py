"""``igflow dlq show``: the dead letters, their values opened for an operator with the keys.

Sealing is on by default (:mod:`core.sealing`): a reject's original value in the DLQ is sealed
with its tenant's ``dlq`` keys. ``show`` opens each one with the key store of the settings
(:func:`igflow.dlq_reader.open_dead_letter`), and says so instead of printing ciphertext when
it cannot: ``shredded`` (the tenant was offboarded), ``does not open`` (tampered, misplaced).
"""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Callable

from core.settings import Settings

__all__ = ["register"]

Handler = Callable[[argparse.Namespace, Settings], int]
#: Bytes of a value the table view prints (``--json`` prints all of it, base64).
_PREVIEW_BYTES = 60


def _preview(entry: dict[str, object]) -> str:
    if entry["value"] is None:
        note = entry["note"]
        return f"({entry['status']}{': ' + str(note) if note else ''})"
    raw = base64.b64decode(str(entry["value"]))
    head = repr(raw[:_PREVIEW_BYTES])
    return head + (f" … {len(raw):,} bytes" if len(raw) > _PREVIEW_BYTES else "")


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from igflow.dlq_reader import read_dead_letters, show
    from tenancy.sealing import sealer_of

    sealer = sealer_of(settings)
    shown = 0
    for msg in read_dead_letters(settings, args.timeout):
        entry = show(sealer, msg)
        if args.tenant is not None and entry["sealed_tenant"] != args.tenant:
            continue
        if args.json:
            print(json.dumps(entry, sort_keys=True))
        else:
            print(
                f"{entry['partition']}/{entry['offset']:<8} {entry['reason'] or '-':<18}"
                f" {entry['source']:<40} {entry['status']:<13} {_preview(entry)}"
            )
        shown += 1
        if args.limit and shown >= args.limit:
            break
    return 0


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Add ``igflow dlq show`` through the CLI's ``add(name, handler, help)``."""
    p = add("dlq", _show, "dead-letter queue")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = actions.add_parser("show", help="the dead letters, values opened with the tenants' keys")
    s.add_argument("--tenant", help="only this keyholder's sealed dead letters")
    s.add_argument("--limit", type=int, default=0, help="at most this many (0: all)")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds to read to the end")
    s.add_argument("--json", action="store_true", help="one JSON object a line, values base64")
