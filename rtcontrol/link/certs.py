"""Self-signed TLS certificates made by the program itself, and the TLS contexts (docs/architecture.md,
decision 5): a site needs no certificate authority to run a worker or a subject agent.

The console trusts a worker or subject agent by the SHA-256 fingerprint of its certificate
(pinned on first use, see :mod:`rtcontrol.link.pinning`), so no certificate authority is needed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path
    fingerprint: str


def fingerprint_der(der: bytes) -> str:
    """``SHA256:AB:CD:...`` of a DER certificate, the form printed and pinned."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return "SHA256:" + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def normalize_fingerprint(text: str) -> str:
    """Accept ``SHA256:ab:cd..``, ``abcd..`` or ``AB CD ..``; return the canonical form."""
    hexpart = text.strip()
    if hexpart.upper().startswith("SHA256:"):
        hexpart = hexpart[7:]
    hexpart = "".join(c for c in hexpart if c not in ": ").upper()
    if len(hexpart) != 64 or any(c not in "0123456789ABCDEF" for c in hexpart):
        raise ValueError(f"{text!r} is not a SHA-256 fingerprint (64 hex digits)")
    return "SHA256:" + ":".join(hexpart[i : i + 2] for i in range(0, 64, 2))


def fingerprint_file(cert_path: Path) -> str:
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    return fingerprint_der(cert.public_bytes(serialization.Encoding.DER))


def make_certificate(hosts: list[str], out_dir: Path, *, days: int = 825, name: str = "rtcontrol") -> CertFiles:
    """Write ``<name>.key`` (mode 600) and ``<name>.crt`` with every host as a SAN; return the fingerprint."""
    if not hosts:
        raise ValueError("give at least one --host (a name or an IP address the console will dial)")
    if days < 1:
        raise ValueError(f"--days must be at least 1, got {days}")
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = out_dir / f"{name}.key", out_dir / f"{name}.crt"
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertFiles(cert_path, key_path, fingerprint_der(cert.public_bytes(serialization.Encoding.DER)))


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.2+ server context for a worker or subject agent."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load certificate {cert} with key {key}: {exc}") from None
    return ctx


def pinning_client_context() -> ssl.SSLContext:
    """Client context for self-signed peers.

    Chain and hostname checks are off *because* the peer is verified by its pinned fingerprint
    right after the handshake (:func:`rtcontrol.link.transport.connect`), before any secret
    (the token) is sent. Never use this context without that check.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
