"""The stack's own certificate authority and the one server certificate every service uses.

Made with the ``cryptography`` package on the first start with TLS on, in ``<state>/tls/``:

==============  ====================================================================
``ca.pem``      the CA's certificate (what clients trust; ``IGFLOW_TLS_CA_FILE``)
``ca.key``      the CA's key (0600), kept so a changed host list can be re-signed
``server.pem``  the servers' certificate, SAN ``127.0.0.1``, ``::1`` and ``localhost``
``server.key``  its key, PKCS#8 PEM without a password (0600): what Postgres, Redis, Kafka
                (``ssl.keystore.type=PEM``), Neo4j and uvicorn all read
==============  ====================================================================

``hosts`` adds DNS names to the server certificate's SAN (docker-compose.yml's service names);
a certificate that lacks one is made again. :func:`copy_for` gives a server that runs as another
user its own copy of the key (docker-compose: each product's user; Postgres refuses a key it does
not own). ``python -m dev certs`` runs both (see :mod:`dev.__main__`).

Both keys are ECDSA P-256 (every server here speaks it, and it is fast to make). The CA lives
ten years, the server certificate two; a certificate that expires within 30 days, or whose
files are missing, is made again on the next start (clients keep trusting the same CA).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_FILE",
    "CERT_FILE",
    "DEFAULT_KEYSTORE_PASSWORD",
    "KEYSTORE_P12_FILE",
    "KEYSTORE_PEM_FILE",
    "KEY_FILE",
    "copy_for",
    "ensure",
    "san_names",
]

CA_FILE = "ca.pem"
CERT_FILE = "server.pem"
KEY_FILE = "server.key"
_CA_KEY_FILE = "ca.key"
#: In a :func:`copy_for` folder: key and certificate in one PEM file (Kafka's
#: ``ssl.keystore.type=PEM``), and both as a PKCS#12 key store (Java servers that read no PEM).
KEYSTORE_PEM_FILE = "keystore.pem"
KEYSTORE_P12_FILE = "keystore.p12"
#: The PKCS#12 key stores' password unless ``--keystore-password`` names one (a local stack's,
#: like its database passwords).
DEFAULT_KEYSTORE_PASSWORD = "igflow-tls"
_RENEW_BEFORE = datetime.timedelta(days=30)
_HOSTS_DNS = ("localhost",)
_HOSTS_IP = ("127.0.0.1", "::1")


def ensure(
    directory: Path, now: datetime.datetime | None = None, hosts: Iterable[str] = ()
) -> Path:
    """Make the CA and the server certificate in ``directory`` unless they are there, valid
    for 30 more days and name every one of ``hosts`` (DNS names beside the loopback ones);
    return ``directory``."""
    now = now or datetime.datetime.now(datetime.UTC)
    dns = list(dict.fromkeys([*_HOSTS_DNS, *hosts]))
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    ca_cert, ca_key = _ca(directory, now)
    cert = directory / CERT_FILE
    if (
        (directory / KEY_FILE).is_file()
        and _valid(cert, now)
        and _issued_by(cert, ca_cert)
        and set(dns) <= set(san_names(cert))
    ):
        return directory
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "igflow local stack server")])
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(h)) for h in _HOSTS_IP]
    server = (
        _builder(name, ca_cert.subject, key.public_key(), now, days=730)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(directory / KEY_FILE, key)
    cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    return directory


def san_names(cert_file: Path) -> list[str]:
    """The DNS names and IP addresses of ``cert_file``'s subject alternative names."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [
        *san.get_values_for_type(x509.DNSName),
        *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
    ]


def copy_for(directory: Path, name: str, uid: int, password: str) -> Path:
    """``directory/name/``: the server certificate and key (``server.pem``, ``server.key``),
    the key and certificate in one PEM (``keystore.pem``) and as PKCS#12 under ``password``
    (``keystore.p12``), and Neo4j's empty ``trusted``/``revoked`` folders; the keys 0600 and
    everything owned by ``uid`` (changing owners needs root, as in docker-compose's one-shot
    service; the same user may copy for itself)."""
    if os.getuid() not in (0, uid):
        msg = f"copying the key for uid {uid} needs root (running as uid {os.getuid()})"
        raise PermissionError(msg)
    out = directory / name
    for sub in (out, out / "trusted", out / "revoked"):
        sub.mkdir(parents=True, exist_ok=True)
        sub.chmod(0o755)
    cert_pem = (directory / CERT_FILE).read_bytes()
    key_pem = (directory / KEY_FILE).read_bytes()
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        msg = f"{directory / KEY_FILE} is not an EC key"
        raise TypeError(msg)
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca = x509.load_pem_x509_certificate((directory / CA_FILE).read_bytes())
    p12 = pkcs12.serialize_key_and_certificates(
        name.encode(),
        key,
        cert,
        [ca],
        serialization.BestAvailableEncryption(password.encode()),
    )
    files = {
        CERT_FILE: (cert_pem, 0o644),
        KEY_FILE: (key_pem, 0o600),
        KEYSTORE_PEM_FILE: (key_pem + cert_pem, 0o600),
        KEYSTORE_P12_FILE: (p12, 0o600),
    }
    for file, (data, mode) in files.items():
        path = out / file
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        path.chmod(mode)
    for path in (out, out / "trusted", out / "revoked", *(out / f for f in files)):
        os.chown(path, uid, uid)
    return out


def _ca(
    directory: Path, now: datetime.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / CA_FILE, directory / _CA_KEY_FILE
    if key_path.is_file() and _valid(cert_path, now):
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "igflow local stack CA")])
    cert = (
        _builder(name, name, key.public_key(), now, days=3650)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    # A new CA: the old server certificate no longer chains to it.
    (directory / CERT_FILE).unlink(missing_ok=True)
    return cert, key


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
    *,
    days: int,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _valid(path: Path, now: datetime.datetime) -> bool:
    if not path.is_file():
        return False
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.not_valid_after_utc - _RENEW_BEFORE > now


def _issued_by(path: Path, ca: x509.Certificate) -> bool:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, readable by its owner only."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(0o600)
