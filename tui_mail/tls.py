"""The client's TLS choices, in one place for IMAP, POP3 and SMTP.

- default: the system's CA list, host name checked (``ssl.create_default_context``);
- ``cafile``: a CA (or a self-signed certificate) trusted *in addition to* the system list;
- ``tls_fingerprint = "sha256:…"``: exactly this certificate (pinning, e.g. our relay's
  self-signed one); the CA chain and host name are then not what is checked, the certificate
  is, on every connection, right after the handshake;
- ``tls_verify = false``: no check at all; ``on_insecure`` is called (a warning) on every
  connect, never silently.

Pinning and the warning work for every library we use (imaplib under imapclient, poplib,
asyncio under aiosmtplib) because they are done by the context's own socket/object classes
(``SSLContext.sslsocket_class``/``sslobject_class``), which every one of them goes through.
Python's ssl module has no verify callback, hence these subclasses.

``fetch_certificate`` gets a server's certificate without trusting it (for trust on first
use in ``tui-mail account add``/``account test``), speaking just enough IMAP/POP3/SMTP to
reach STARTTLS.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("tui_mail.tls")


class PinMismatch(ssl.SSLCertVerificationError):
    """The server's certificate is not the pinned one."""

    def __init__(self, text: str):
        super().__init__(text)
        # what the ssl module's own errors carry, for code that reads them (e.reason)
        self.reason, self.library = text, "tui-mail"
        self.verify_code, self.verify_message = 0, text

    def __str__(self) -> str:
        return self.reason


def fingerprint(der: bytes) -> str:
    """``sha256:<64 lower-case hex>`` of a DER certificate (the form config.toml takes)."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def pretty_fingerprint(fp: str) -> str:
    """``sha256:AB:CD:…`` for people to compare with what a server admin reads out."""
    hexpart = fp.split(":", 1)[1].upper()
    return "sha256:" + ":".join(hexpart[i:i + 2] for i in range(0, len(hexpart), 2))


def _after_handshake(conn, pin: str | None, on_insecure: Callable[[str], None] | None, where: str) -> None:
    if pin is not None:
        der = conn.getpeercert(binary_form=True) or b""
        got = fingerprint(der)
        if got != pin:
            raise PinMismatch(f"the certificate of {where or 'the server'} is {pretty_fingerprint(got)}, "
                              f"not the pinned {pretty_fingerprint(pin)} (tls_fingerprint in config.toml): "
                              "if the server's certificate was changed on purpose, pin the new one "
                              "with `tui-mail account test`; otherwise someone may be intercepting")
    elif on_insecure is not None:
        on_insecure(f"TLS certificate of {where or 'the server'} NOT checked (tls_verify = false): "
                    "anyone on the network path can read and change this connection")


def client_context(*, cafile: str | None = None, tls_fingerprint: str | None = None, tls_verify: bool = True,
                   on_insecure: Callable[[str], None] | None = None, where: str = "") -> ssl.SSLContext:
    """An SSLContext for one server (see the module docstring)."""
    ctx = ssl.create_default_context()
    if cafile:
        ctx.load_verify_locations(cafile=cafile)          # added to the system CAs, not instead
    if tls_fingerprint is None and tls_verify:
        return ctx
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    pin = tls_fingerprint
    warn = on_insecure or (lambda text: log.warning("%s", text))

    class PinnedSocket(ssl.SSLSocket):
        def do_handshake(self, block=False):
            super().do_handshake(block)
            _after_handshake(self, pin, warn, where)

    class PinnedObject(ssl.SSLObject):
        def do_handshake(self):
            super().do_handshake()
            _after_handshake(self, pin, warn, where)

    ctx.sslsocket_class = PinnedSocket
    ctx.sslobject_class = PinnedObject
    return ctx


def for_server(server, kind: str = "", host: str = "", port: int | None = None,
               on_insecure: Callable[[str], None] | None = None) -> ssl.SSLContext:
    """``client_context`` from a config.Server-like object (cafile, tls_fingerprint, tls_verify)."""
    where = f"{host or getattr(server, 'host', '')}" + (f":{port}" if port else "")
    return client_context(cafile=getattr(server, "cafile", None),
                          tls_fingerprint=getattr(server, "tls_fingerprint", None),
                          tls_verify=getattr(server, "tls_verify", True), on_insecure=on_insecure,
                          where=f"{kind.upper()} {where}".strip())


def is_untrusted_certificate(error: BaseException | str) -> bool:
    """Did a connection fail because the certificate is not trusted (self-signed, unknown CA,
    wrong host name, expired)? Works on our MailError texts too (they carry the SSL reason)."""
    if isinstance(error, ssl.SSLCertVerificationError) and not isinstance(error, PinMismatch):
        return True
    text = str(error).lower()
    return "certificate_verify_failed" in text or "certificate verify failed" in text


# --- trust on first use -----------------------------------------------------------------------
@dataclass(frozen=True)
class CertificateInfo:
    fingerprint: str          # sha256:…
    subject: str
    issuer: str
    not_after: str
    names: tuple[str, ...]    # subjectAltName DNS names and IPs

    def describe(self) -> str:
        return (f"  subject:     {self.subject}\n  issuer:      {self.issuer}\n"
                f"  names:       {', '.join(self.names) or '-'}\n  valid until: {self.not_after}\n"
                f"  fingerprint: {pretty_fingerprint(self.fingerprint)}")


def certificate_info(der: bytes) -> CertificateInfo:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(n.value) for n in san)
    except x509.ExtensionNotFound:
        names = ()
    return CertificateInfo(fingerprint(der), cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(),
                           cert.not_valid_after_utc.strftime("%Y-%m-%d"), names)


_STARTTLS = {  # what to say before the handshake, and how a good reply starts
    "imap": (b"a STARTTLS\r\n", b"a OK"),
    "pop3": (b"STLS\r\n", b"+OK"),
    "smtp": (b"STARTTLS\r\n", b"220"),
}


def _read_reply(sock: socket.socket, done: Callable[[bytes], bool], limit: int = 65536) -> bytes:
    data = b""
    while not done(data):
        chunk = sock.recv(4096)
        if not chunk or len(data) > limit:
            raise OSError("the server closed the connection before TLS")
        data += chunk
    return data


def fetch_certificate(kind: str, host: str, port: int, security: str, timeout: float = 15.0) -> bytes:
    """The DER certificate the server presents, without trusting it (never used to log in)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if security == "starttls":
            line_end = lambda d: d.endswith(b"\r\n")  # noqa: E731
            _read_reply(sock, line_end)                                  # greeting
            if kind == "smtp":
                sock.sendall(b"EHLO tui-mail\r\n")
                _read_reply(sock, lambda d: any(ln[3:4] == b" " for ln in d.split(b"\r\n")))
            command, ok = _STARTTLS[kind]
            sock.sendall(command)
            if kind == "imap":
                reply = _read_reply(sock, lambda d: b"\r\na " in b"\r\n" + d and d.endswith(b"\r\n"))
                reply = reply[reply.rfind(b"a "):] if not reply.startswith(b"a ") else reply
            else:
                reply = _read_reply(sock, line_end)
            if not reply.startswith(ok):
                raise OSError(f"the server refused STARTTLS: {reply[:100]!r}")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with ctx.wrap_socket(sock, server_hostname=host) as tls:
            return tls.getpeercert(binary_form=True) or b""
    finally:
        sock.close()
