"""``igflow psi``: private set intersection (:mod:`psi`) from the command line.

``serve`` holds a partner's selectors (a CSV column, or a column of an Iceberg table in the
project's catalog) behind ``POST /v1/psi`` under uvicorn, prints one JSON line once it listens
(``url``, ``set_size``, ``epoch``) and exits 0 after a graceful shutdown on SIGINT or SIGTERM.
``match`` runs the client side and prints ``{"matches": [...]}`` (full mode) or ``{"count": n}``
(cardinality); a denial prints only ``{"reason": CODE}`` and exits 1. Bad input exits 2. Both
sides ask ``policies/psi.rego``, by default with :class:`~psi.policy.Agreement`'s defaults (every
mode, region US, minimum batch 100; residency US matched with US) for the server's ``--partner``
ids or the client's ``--server-partner-id``. The server trusts the identity headers the client
sends, so it binds loopback: anywhere wider needs an authenticating proxy in front.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, IgflowError
from core.sealing import is_sealed_text
from core.settings import Settings
from psi.policy import policy_config

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from psi import Outcome, PsiPolicy, SelectorSet

__all__ = ["outcome_document", "policy_config", "register", "selectors_csv", "selectors_table"]

Handler = Callable[[argparse.Namespace, Settings], int]
_MODES = ("full_intersection", "intersection_cardinality")


def selectors_csv(path: Path, column: str | None) -> SelectorSet:
    """The distinct selectors in column ``column`` (default: the only one) of a CSV file with a
    header row, stripped, blank cells skipped (:func:`psi.selectors.load_selectors_csv`).
    ``ConfigError`` for an unreadable file, an unknown or ambiguous column, or a selector over
    65535 bytes."""
    from psi import load_selectors_csv

    try:
        with path.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        return load_selectors_csv(path, _pick(header, column))
    except (OSError, ValueError) as exc:
        msg = f"no selectors from {path}: {exc}"
        raise ConfigError(msg) from exc


def selectors_table(catalog: Catalog, identifier: str, column: str | None) -> SelectorSet:
    """The distinct values of column ``column`` (default: the only one) of Iceberg table
    ``identifier``, as stored (normalised upstream). Unlike a blank CSV cell, a null, empty or
    non-string value means a broken upstream: ``ConfigError``, as for a missing table or column,
    and for sealed values (``sealed:`` + ciphertext: a table the flow sealed, which would
    match nothing)."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    from psi import SelectorSet

    try:
        table = catalog.load_table(identifier)
        name = _pick([f.name for f in table.schema().fields], column)
        values = table.scan(selected_fields=(name,)).to_arrow()[name].to_pylist()
        if not all(isinstance(v, str) and v for v in values):
            msg = f"column {name} holds a null, empty or non-string value"
            raise ValueError(msg)
        if any(is_sealed_text(v) for v in values):
            # Served as is, ciphertexts would match nothing (and look like a set): the flow's
            # own sealed selectors (deconfliction.matched) open per tenant, window and element
            # only, with igflow.lake_reader.open_sealed.
            msg = f"column {name} holds sealed values (core.sealing): open them first"
            raise ValueError(msg)
        return SelectorSet.of(values)
    except (NoSuchTableError, NoSuchNamespaceError, ValueError) as exc:
        msg = f"no selectors from Iceberg table {identifier}: {exc}"
        raise ConfigError(msg) from exc


def _pick(names: list[str], column: str | None) -> str:
    """``column``, or the only one of ``names``; ``ValueError`` if it is not among them."""
    name = column if column is not None or len(names) != 1 else names[0]
    if name not in names:
        msg = f"columns are {names}: name one with --column"
        raise ValueError(msg)
    return name


def _policy(path: Path | None, partners: Iterable[str]) -> PsiPolicy:
    """The policy with ``path``'s data, or default agreements with ``partners``."""
    from psi import Agreement, PolicyConfig, PsiPolicy

    default = PolicyConfig(agreements=tuple(Agreement(p) for p in partners))
    return PsiPolicy.load(default if path is None else policy_config(path))


def outcome_document(outcome: Outcome) -> dict[str, Any]:
    """What ``igflow psi match`` prints: the matches, the count, or only the reason code."""
    from psi import Cardinality, Denial

    if isinstance(outcome, Denial):
        return {"reason": outcome.reason.value}
    if isinstance(outcome, Cardinality):
        return {"mode": "intersection_cardinality", "count": outcome.count}
    return {"mode": "full_intersection", "matches": list(outcome.items)}


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from core.catalog import catalog
    from psi import GroupBatch, PsiMode, PsiServer, ServerConfig
    from psi.messages import MAX_BATCH
    from psi.server import create_app

    if args.csv is not None:
        selectors = selectors_csv(args.csv, args.column)
    else:
        selectors = selectors_table(catalog(settings), args.table, args.column)
    if not len(selectors):
        msg = "no selectors to serve"
        raise ConfigError(msg)
    policy = _policy(args.policy_data, args.partner or ["partner"])
    with GroupBatch() as batch:
        try:
            # (tenant, residency, epoch, max evaluations, and a batch may not exceed the latter)
            n = args.max_evaluations
            config = ServerConfig(
                args.tenant_id, args.residency, args.epoch_seconds, n, min(MAX_BATCH, n)
            )
            server = PsiServer(selectors, policy, config, batch=batch)
            # Build both tables first: the epoch printed is the one served, the first answer fast.
            epoch = server.table(PsiMode.FULL_INTERSECTION)[0].key_id.epoch
            server.table(PsiMode.INTERSECTION_CARDINALITY)
            family = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0][0]
            sock = socket.create_server((args.host, args.port), family=family)
        except (OSError, ValueError) as exc:
            msg = f"cannot serve on {args.host}:{args.port}: {exc}"
            raise ConfigError(msg) from exc
        with sock:
            _run(
                create_app(server),
                sock,
                {"set_size": len(selectors), "epoch": epoch},
                settings.server_tls(),
            )
    return 0


def _run(
    app: Any, sock: socket.socket, facts: dict[str, int], tls: dict[str, str] | None = None
) -> None:
    """Print the URL and ``facts`` as a JSON line, then serve ``app`` on ``sock`` until a signal;
    over HTTPS when ``tls`` holds uvicorn's ``ssl_certfile`` and ``ssl_keyfile``."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    url = f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
    print(json.dumps({"url": url} | facts), flush=True)
    # Logs go through the project's JSON handler; access logs would repeat the server's own.
    tls = tls or {}
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,
        ssl_certfile=tls.get("ssl_certfile"),
        ssl_keyfile=tls.get("ssl_keyfile"),
    )
    server = uvicorn.Server(config)

    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    # uvicorn stops gracefully on these signals, then raises them again under the handlers it
    # found: ``stop`` (which also covers a signal before uvicorn's), so the command exits 0.
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _match(args: argparse.Namespace, settings: Settings) -> int:
    import httpx

    from psi import ClientConfig, Denial, GroupBatch, HttpTransport, PsiClient, PsiMode
    from psi.client import PSI_PATH

    mine = selectors_csv(args.csv, args.column)
    policy = _policy(args.policy_data, [args.server_partner_id])
    url = args.server.rstrip("/") + PSI_PATH
    config = ClientConfig(args.server_partner_id, args.server_region, args.residency)
    verify = settings.client_verify()
    with GroupBatch() as batch, httpx.Client(timeout=args.timeout, verify=verify) as http:
        transport = HttpTransport(http, url, partner_id=args.partner_id, region=args.region)
        client = PsiClient(transport, policy, config, batch=batch)
        try:
            outcome = client.intersect(mine.items, PsiMode(args.mode))
        except httpx.HTTPError as exc:
            msg = f"no answer from the PSI server at {url}: {exc}"
            raise IgflowError(msg) from exc
    print(json.dumps(outcome_document(outcome)))
    return 1 if isinstance(outcome, Denial) else 0


_ACTIONS: dict[str, Handler] = {"serve": _serve, "match": _match}


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Add ``igflow psi serve|match`` through the CLI's ``add(name, handler, help)``."""
    p = add("psi", lambda a, s: _ACTIONS[a.action](a, s), "private set intersection (PSI)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--column", help="selector column (default: the only column)")
    common.add_argument("--residency", default="US", help="residency tag of our selectors")
    common.add_argument("--policy-data", type=Path, help="data.psi JSON (replaces the defaults)")

    s = actions.add_parser("serve", parents=[common], help="serve a partner's set over HTTP")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--csv", type=Path, help="CSV file with a header row")
    where.add_argument("--table", metavar="NAMESPACE.TABLE", help="Iceberg table in the catalog")
    s.add_argument("--host", default="127.0.0.1", help="bind address (trusts identity headers)")
    s.add_argument("--port", type=int, default=8765, help="0: any free port")
    s.add_argument("--partner", action="append", help="agreed partner (repeatable; partner)")
    s.add_argument("--tenant-id", default="", help="tenant named in the server's logs")
    s.add_argument("--epoch-seconds", type=float, default=3600.0, help="key lifetime")
    s.add_argument("--max-evaluations", type=int, default=1 << 22, help="elements per key")

    m = actions.add_parser("match", parents=[common], help="match a CSV set against a server")
    m.add_argument("--server", required=True, help="base URL printed by igflow psi serve")
    m.add_argument("--csv", type=Path, required=True, help="CSV file with a header row")
    m.add_argument("--mode", default=_MODES[0], choices=_MODES, help="what we learn")
    m.add_argument("--partner-id", default="partner", help="who we are (partner)")
    m.add_argument("--region", default="US", help="where we are (sent to the server)")
    m.add_argument("--server-partner-id", default="server", help="the server's id (server)")
    m.add_argument("--server-region", default="US", help="where the server is")
    m.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout, seconds")
