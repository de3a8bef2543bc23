"""``igflow probe``: canary signals per tenant through the API, the flow and back
(:mod:`igflow.probe`).

``igflow probe`` runs a round every ``probe.interval_seconds`` and serves its metrics on
``probe.metrics_host:probe.metrics_port`` (127.0.0.1:9466, which the stack's Prometheus
scrapes) until interrupted; ``--once`` runs one round, prints the results as JSON lines and
exits 1 unless every canary came back (its metrics die with it: the SLI needs the long-running
form). Tenants: ``--tenant`` (repeatable), else every active tenant of the registry.
Credentials: a short-lived token per tenant minted with the local stack's signing key (``igflow
token``), or ``--token`` for one tenant (a token the issuer gave the probe).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable

from core.settings import Settings

__all__ = ["register"]

Handler = Callable[[argparse.Namespace, Settings], int]


def _tenants(args: argparse.Namespace, settings: Settings) -> list[str]:
    if args.tenant:
        return list(dict.fromkeys(args.tenant))
    from tenancy.registry import list_tenants

    return [e.tenant_id for e in list_tenants(settings.stores.postgres_dsn) if e.active]


def _probe(args: argparse.Namespace, settings: Settings) -> int:
    from core import metric_labels
    from core.errors import IgflowError
    from igflow.probe import probe_round

    probe = settings.probe
    # The API speaks HTTPS when the settings give it a certificate (tls.enabled, unless
    # tls.plaintext_servers).
    scheme = "https" if settings.server_tls() else "http"
    api_url = args.api or probe.api_url or f"{scheme}://127.0.0.1:{settings.api.port}"
    verify = settings.client_verify()
    tenants = _tenants(args, settings)
    if not tenants:
        msg = "igflow probe: no tenant to probe (none registered and active, no --tenant)"
        raise IgflowError(msg)
    if args.token and len(tenants) != 1:
        msg = "igflow probe: --token is one tenant's credential: name that one --tenant"
        raise IgflowError(msg)
    metric_labels.configure(settings)

    def token_for(tenant: str) -> str:
        if args.token:
            return str(args.token)
        from api.jwt_keys import mint_token

        scopes = ("coherence:read", "coherence:write")
        return mint_token(
            settings, tenant, scopes, int(probe.timeout_seconds) + 60, subject="igflow-probe"
        )

    def one_round() -> bool:
        results = asyncio.run(
            probe_round(api_url, tenants, token_for, probe.timeout_seconds, verify)
        )
        for result in results:
            print(json.dumps(result.as_dict()), flush=True)
        return all(r.outcome == "ok" for r in results)

    if args.once:
        return 0 if one_round() else 1
    if probe.metrics_port:
        from core.metrics import start_server

        # HTTPS with the stack's certificate when TLS is on, as the API's metrics port.
        start_server(probe.metrics_host, probe.metrics_port, settings.server_tls())
    try:
        while True:
            began = time.monotonic()
            one_round()
            time.sleep(max(0.0, probe.interval_seconds - (time.monotonic() - began)))
    except KeyboardInterrupt:
        return 0


def register(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Add ``probe`` to the CLI."""
    p = add("probe", _probe, "canary signals per tenant through the API and the flow, timed")
    p.add_argument("--once", action="store_true", help="one round, print it, exit 1 on a failure")
    p.add_argument("--tenant", action="append", help="a tenant to probe (repeatable; default all)")
    p.add_argument("--api", help="the API's URL (default: probe.api_url, else 127.0.0.1:api.port)")
    p.add_argument("--token", help="a bearer token for the one --tenant (default: minted locally)")
