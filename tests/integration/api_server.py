"""A real ``igflow serve`` (uvicorn) on loopback for the API tests, and small clients for it."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from core.settings import Settings
from tests.integration.conftest import REPO, env_for
from tests.ports import free_port
from tests.ws_client import WebSocket, connect

__all__ = ["ApiServer", "free_port", "serve", "spki_pin", "subscribe"]


class ApiServer:
    """A running server: its base URL, settings and process."""

    def __init__(
        self,
        settings: Settings,
        proc: subprocess.Popen[bytes],
        port: int,
        log: IO[bytes] | None = None,
    ) -> None:
        self.settings = settings
        self.proc = proc
        self._log = log
        # With tls.enabled the server speaks HTTPS and WSS only (its certificate from the stack's
        # CA), unless tls.plaintext_servers; so does its metrics port, on loopback.
        secure = bool(settings.server_tls())
        self.url = f"{'https' if secure else 'http'}://127.0.0.1:{port}"
        self.ws_url = f"{'wss' if secure else 'ws'}://127.0.0.1:{port}/graphql"
        self.verify = settings.client_verify()
        self.ssl_context = self.verify if isinstance(self.verify, ssl.SSLContext) else None
        #: What ``requests`` (schemathesis) verifies the server against: the CA file, or the
        #: system's CAs.
        self.ca_bundle: str | bool = str(settings.tls_ca_file) if secure else True
        #: Prometheus, on the server's own loopback metrics port (not a route of the API).
        self.metrics_url = (
            f"{'https' if secure else 'http'}://{settings.api.metrics_host}:"
            f"{settings.api.metrics_port}/metrics"
        )
        self.client = httpx.Client(base_url=self.url, timeout=10.0, verify=self.verify)
        #: What a headless Chromium needs to open the server's pages: with HTTPS, the server
        #: certificate's key pinned (Chromium reads no CA file; its trust store is an NSS
        #: database, and certutil is not on the machine), so it accepts that key and no other.
        self.browser_args: list[str] = (
            [f"--ignore-certificate-errors-spki-list={spki_pin(settings.tls_cert_file)}"]
            if secure
            else []
        )

    def open_socket(self, timeout: float = 10.0) -> socket.socket:
        """A raw connection to the server (TLS-wrapped, verified, when it speaks HTTPS)."""
        host, port = self.url.split("://", 1)[1].split(":")
        conn = socket.create_connection((host, int(port)), timeout=timeout)
        if self.ssl_context is None:
            return conn
        return self.ssl_context.wrap_socket(conn, server_hostname=host)

    def connect_ws(self, headers: dict[str, str] | None = None) -> WebSocket:
        """A graphql-transport-ws connection to ``/graphql`` (WSS, verified, with TLS), on the
        tests' TLS-safe client (tests/ws_client.py)."""
        return connect(
            self.ws_url,
            subprotocols=["graphql-transport-ws"],
            ssl=self.ssl_context,
            additional_headers=headers,
        )

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far (its JSON log lines)."""
        if self._log is None:
            return ""
        self._log.flush()
        return Path(self._log.name).read_text(encoding="utf-8", errors="replace")

    def metrics(self) -> str:
        """The server's Prometheus text."""
        response = self.client.get(self.metrics_url)
        response.raise_for_status()
        return response.text

    def graphql(
        self, body: dict[str, Any], token: str | None = None, **headers: str
    ) -> httpx.Response:
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        return self.client.post("/graphql", json=body, headers=headers)


def spki_pin(cert_file: Path) -> str:
    """base64 of the SHA-256 of a PEM certificate's SubjectPublicKeyInfo (Chromium's pin form)."""
    certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


@contextlib.contextmanager
def serve(settings: Settings, **env: str) -> Iterator[ApiServer]:
    """Start ``igflow serve`` with ``settings`` and extra ``IGFLOW_*`` variables; stop it after."""
    port, metrics_port = free_port(), free_port()
    extra = {
        "IGFLOW_API_PORT": str(port),
        "IGFLOW_API_METRICS_PORT": str(metrics_port),
        # Every test client is 127.0.0.1: the per-address limit on failed authentication would
        # cut one test's clients off for another's refusals. Tests of that limit set their own.
        "IGFLOW_API_AUTH_FAILURE_BURST": "1000000",
        **env,
    }
    # A file, not a pipe: nobody reads a pipe while the test runs, and a server that logs more
    # than the pipe holds (64 KiB: a few hundred refusals) would block on its next log line.
    log = tempfile.NamedTemporaryFile(prefix="igflow-serve-", suffix=".log")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "igflow.cli", "serve"],
        cwd=REPO,
        env=env_for(settings, **extra),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    metrics_port = int(extra["IGFLOW_API_METRICS_PORT"])
    server = ApiServer(
        settings.with_changes("api", port=port, metrics_port=metrics_port), proc, port, log
    )
    deadline = time.monotonic() + 30
    try:
        while True:
            if proc.poll() is not None:
                proc.wait()
                msg = f"igflow serve exited {proc.returncode}:\n{server.log()[-3000:]}"
                raise AssertionError(msg)
            with contextlib.suppress(httpx.TransportError):
                if server.client.get("/health").status_code == 200:
                    break
            if time.monotonic() > deadline:
                msg = "igflow serve did not answer /health within 30 s"
                raise AssertionError(msg)
            time.sleep(0.1)
        yield server
    finally:
        server.client.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@contextlib.contextmanager
def subscribe(
    server: ApiServer, query: str, variables: dict[str, Any], payload: dict[str, Any]
) -> Iterator[tuple[WebSocket, str]]:
    """A graphql-transport-ws connection with one subscription started; yields (ws, its id)."""
    with server.connect_ws() as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        ack = json.loads(ws.recv(timeout=10))
        assert ack["type"] == "connection_ack", ack
        op_id = uuid.uuid4().hex[:8]
        ws.send(
            json.dumps(
                {
                    "id": op_id,
                    "type": "subscribe",
                    "payload": {"query": query, "variables": variables},
                }
            )
        )
        yield ws, op_id
