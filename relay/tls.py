"""TLS for the relay's listeners (STARTTLS on SMTP, IMAP and POP3).

The certificate comes from ``[tls] cert/key`` in relay.toml, or, when those are empty, from a
self-signed pair that we generate with ``cryptography`` on first start into ``cfg.certs_dir``
(``relay.crt``/``relay.key``, key 0600) and reuse afterwards, so clients that pinned it keep
working across restarts.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from relay.config import RelayConfig
from relay.errors import RelayError


class TLSError(RelayError):
    """The certificate or key cannot be loaded or made."""


def self_signed_paths(cfg: RelayConfig) -> tuple[Path, Path]:
    return cfg.certs_dir / "relay.crt", cfg.certs_dir / "relay.key"


def ensure_self_signed(cfg: RelayConfig) -> tuple[Path, Path]:
    """Return (cert, key) in certs_dir, generating an EC P-256 pair valid 10 years if missing."""
    cert_path, key_path = self_signed_paths(cfg)
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cfg.hostname),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tui-mail relay")])
    sans: list[x509.GeneralName] = [x509.DNSName(cfg.hostname)]
    if cfg.hostname != "localhost":
        sans.append(x509.DNSName("localhost"))
    sans += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cfg.certs_dir.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    _write_atomic(key_path, key_bytes, 0o600)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def server_context(cfg: RelayConfig) -> ssl.SSLContext:
    """An SSLContext for our listeners (TLS 1.2+), from [tls] or the self-signed pair."""
    if cfg.tls.cert and cfg.tls.key:
        cert, key = cfg.tls.cert, cfg.tls.key
    else:
        cert, key = ensure_self_signed(cfg)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise TLSError(f"cannot load the TLS certificate {cert} / key {key}: {e}") from None
    return ctx
