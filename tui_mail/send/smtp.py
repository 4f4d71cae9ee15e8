"""Message submission over SMTP (RFC 6409) with aiosmtplib, and the envelope rules it needs.

``SmtpSubmitter.send(message)`` connects with implicit TLS, STARTTLS or in the clear, logs in
when a user is set, and walks the dialogue step by step (EHLO, STARTTLS, AUTH, MAIL, RCPT,
DATA, QUIT) rather than calling ``sendmail()`` so every command and reply can go to the
protocol trace (AUTH masked) and every failure maps to one ``SendError``: network errors and
4xx replies are transient (``permanent=False``: the outbox retries), 5xx replies permanent
(with the server's code and text). A message is sent whole or not at all: when any recipient
is refused the transaction is reset, so a retry never reaches some recipients twice.

The envelope comes from the message itself (``envelope_of``): From (or Sender) as MAIL FROM,
every To, Cc and Bcc address as RCPT TO; the Bcc header is removed before the bytes go out.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import TYPE_CHECKING

from tui_mail.errors import AuthError, MailError, SendError
from tui_mail.lazy_import import on_first_use

if TYPE_CHECKING:
    from email.message import EmailMessage, Message

aiosmtplib = on_first_use("aiosmtplib")       # with email.policy: only when a message goes out

SECURITY = ("tls", "starttls", "none")

TraceSink = Callable[[str, str], None]


class SubmissionAuthError(SendError, AuthError):
    """The submission server refused the user name or password (permanent)."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 587
    security: str = "starttls"          # tls | starttls | none
    user: str | None = None
    # a str, or a callable asked at login time (keyring/password_command: no lookup until needed)
    password: str | Callable[[], str | None] | None = field(default=None, repr=False)
    timeout: float = 30.0
    cafile: str | None = None            # extra CA, added to the system's (self-signed or company)
    local_hostname: str | None = None
    tls_fingerprint: str | None = None   # "sha256:…": accept exactly this certificate (tui_mail.tls)
    tls_verify: bool = True              # False: no check, warned on every connect
    # auth = "oauth2": token(refresh) → access token, used with AUTH OAUTHBEARER/XOAUTH2
    oauth2: Callable[[bool], str] | None = field(default=None, repr=False)
    # total seconds for connect + greeting + EHLO/STARTTLS/AUTH, whatever the server's pace
    # (each reply is also bounded by ``timeout`` inside aiosmtplib)
    login_deadline: float = 60.0

    def __post_init__(self) -> None:
        if self.security not in SECURITY:
            raise ValueError(f"security must be one of {', '.join(SECURITY)}, not {self.security!r}")


@dataclass(frozen=True)
class SendResult:
    code: int
    reply: str                           # the server's answer to the end of DATA
    recipients: tuple[str, ...]


def _addresses(values: list[str]) -> list[str]:
    return [addr for _, addr in getaddresses(values) if addr and "@" in addr]


def envelope_of(msg: Message) -> tuple[str, list[str]]:
    """(MAIL FROM, RCPT TO list) of a composed message: From (or Sender); To, Cc, Bcc."""
    senders = _addresses(msg.get_all("Sender", []) or []) or _addresses(msg.get_all("From", []) or [])
    if not senders:
        raise SendError("The message has no From address.", permanent=True)
    unique: list[str] = []
    lowered: set[str] = set()
    for header in ("To", "Cc", "Bcc"):
        for addr in _addresses([str(v) for v in msg.get_all(header, []) or []]):
            if addr.lower() not in lowered:  # one RCPT per mailbox, first spelling wins
                lowered.add(addr.lower())
                unique.append(addr)
    if not unique:
        raise SendError("The message has no recipients (To, Cc or Bcc).", permanent=True)
    return senders[0], unique


def wire_bytes(msg: Message) -> bytes:
    """The bytes to transmit: the message with CRLF line ends and without its Bcc header."""
    from email import policy
    from email.parser import BytesParser

    out = BytesParser(policy=policy.SMTPUTF8).parsebytes(msg.as_bytes(policy=policy.SMTPUTF8))
    del out["Bcc"]
    return out.as_bytes(policy=policy.SMTPUTF8)


def strip_bcc(data: bytes) -> bytes:
    """The message bytes with every Bcc header (and its folded lines) removed, all else
    byte for byte as it was; bare LF line ends become CRLF."""
    if b"\r\n" not in data or b"\n" in data.replace(b"\r\n", b""):
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, body = data, b""
    kept: list[bytes] = []
    dropping = False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line[:4].lower() == b"bcc:"
        if not dropping:
            kept.append(line)
    return b"\r\n".join(kept) + (sep or b"\r\n\r\n") + body


def prepare(message: bytes | EmailMessage) -> tuple[str, list[str], bytes]:
    """(sender, recipients, bytes to send) for a message given as bytes or EmailMessage."""
    if not isinstance(message, (bytes, bytearray)):      # an EmailMessage
        sender, rcpts = envelope_of(message)
        return sender, rcpts, wire_bytes(message)
    from email import policy
    from email.parser import BytesParser

    sender, rcpts = envelope_of(BytesParser(policy=policy.SMTPUTF8).parsebytes(message, headersonly=True))
    return sender, rcpts, strip_bcc(message)


def _first_line(text: str) -> str:
    return " ".join(text.split())


class SmtpSubmitter:
    """One account's submission server; ``trace`` receives ("C"|"S", line)."""

    def __init__(self, settings: SmtpSettings, trace: TraceSink | None = None):
        self.settings = settings
        self.trace = trace

    # --- trace -------------------------------------------------------------------------
    def _c(self, line: str) -> None:
        if self.trace:
            self.trace("C", line)

    def _s(self, response) -> None:
        if self.trace:
            for line in (response.message or "").splitlines() or [""]:
                self.trace("S", f"{response.code} {line}")

    # --- connection --------------------------------------------------------------------
    def _password(self) -> str:
        pw = self.settings.password
        if callable(pw):
            try:
                pw = pw()
            except MailError as e:  # e.g. SecretError: no keyring; say so, keep the message queued
                raise SendError(f"No password for {self.settings.user!r} at {self.settings.host}: {e}") from None
        return pw or ""

    def _tls_context(self) -> ssl.SSLContext:
        from tui_mail.tls import client_context, log

        s = self.settings

        def warn(text: str) -> None:
            log.warning("%s", text)
            self._c(f"(warning: {text})")

        return client_context(cafile=s.cafile, tls_fingerprint=s.tls_fingerprint, tls_verify=s.tls_verify,
                              on_insecure=warn, where=f"SMTP {s.host}:{s.port}")

    async def _open(self) -> aiosmtplib.SMTP:
        s = self.settings
        client = aiosmtplib.SMTP(hostname=s.host, port=s.port, timeout=s.timeout,
                                 use_tls=s.security == "tls", start_tls=False,
                                 tls_context=self._tls_context() if s.security != "none" else None,
                                 local_hostname=s.local_hostname)
        self._c(f"(connect {s.host}:{s.port}{' TLS' if s.security == 'tls' else ''})")
        greeting = await client.connect()
        self._s(greeting)
        try:
            self._c(f"EHLO {client.local_hostname}")
            self._s(await client.ehlo())
            if s.security == "starttls":
                if not client.supports_extension("starttls"):
                    raise SendError(f"{s.host} does not offer STARTTLS; set security = \"tls\" "
                                    "(port 465) or \"none\" if you trust the network.", permanent=True)
                self._c("STARTTLS")
                self._s(await client.starttls())
                self._c(f"EHLO {client.local_hostname}")
                self._s(await client.ehlo())
            if s.user:
                if not client.supports_extension("auth"):
                    raise SendError(f"{s.host} does not offer AUTH on port {s.port}"
                                    + (" without TLS" if s.security == "none" else "")
                                    + "; check the port and security settings.", permanent=True)
                if s.oauth2 is not None:
                    from tui_mail.oauth2 import smtp_login

                    try:
                        _, reply = await smtp_login(client, s.user, s.oauth2, f"{s.host}:{s.port}", trace=self._c)
                    except aiosmtplib.SMTPAuthenticationError as e:
                        self._s(e)
                        raise SubmissionAuthError(f"{s.host} refused the OAuth2 token for {s.user!r}: {e.code} "
                                                  f"{_first_line(e.message)}", permanent=True, code=e.code) from None
                    self._s(reply)
                    return client
                self._c(f"AUTH {s.user} ****")
                try:
                    self._s(await client.login(s.user, self._password()))
                except aiosmtplib.SMTPAuthenticationError as e:
                    self._s(e)
                    raise SubmissionAuthError(
                        f"{s.host} refused the user name or password for {s.user!r}: "
                        f"{e.code} {_first_line(e.message)}", permanent=True, code=e.code) from None
        except BaseException:
            client.close()
            raise
        return client

    async def _close(self, client: aiosmtplib.SMTP) -> None:
        protocol = client.protocol
        if client.is_connected:
            try:
                self._c("QUIT")
                self._s(await client.quit())
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                client.close()
        # Over TLS the socket closes only after the TLS shutdown: give it a moment, or a loop
        # that ends right after sending (asyncio.run per message) leaves the socket open.
        for _ in range(100):
            if protocol is None or getattr(protocol, "transport", None) is None:
                break
            await asyncio.sleep(0.01)

    async def _run(self, step):
        """Run ``step(client)`` on a fresh connection, converting every failure."""
        s = self.settings
        client = None
        try:
            try:
                client = await asyncio.wait_for(self._open(), s.login_deadline)
            except asyncio.TimeoutError:
                raise SendError(f"{s.host}:{s.port} sent no complete greeting and login within "
                                f"{s.login_deadline:g} s (a slow or stalled server); the message stays in "
                                "the outbox and will be retried.") from None
            return await step(client)
        except SendError:
            raise
        except aiosmtplib.SMTPResponseException as e:
            self._s(e)
            permanent = 500 <= e.code < 600
            raise SendError(f"{s.host} answered {e.code} {_first_line(e.message)}",
                            permanent=permanent, code=e.code) from None
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPServerDisconnected,
                asyncio.TimeoutError, ConnectionError) as e:
            if isinstance(e.__cause__, ssl.SSLError) or isinstance(e, ssl.SSLError):
                cause = e if isinstance(e, ssl.SSLError) else e.__cause__
                raise SendError(f"TLS with {s.host}:{s.port} failed: {getattr(cause, 'reason', None) or cause}. "
                                "Check the security setting and the server's certificate.") from None
            raise SendError(f"Cannot reach {s.host}:{s.port} ({_first_line(str(e)) or type(e).__name__}); "
                            "the message stays in the outbox and will be retried.") from None
        except ssl.SSLError as e:
            raise SendError(f"TLS with {s.host}:{s.port} failed: {e.reason or e}. Check the security "
                            "setting and the server's certificate.") from None
        except (aiosmtplib.SMTPException, OSError) as e:
            raise SendError(f"Sending via {s.host}:{s.port} failed: {_first_line(str(e))}") from None
        finally:
            if client is not None:
                await self._close(client)

    # --- public ------------------------------------------------------------------------
    async def send(self, message: bytes | EmailMessage, sender: str | None = None,
                   recipients: list[str] | None = None,
                   before_mail: Callable[[], None] | None = None) -> SendResult:
        """Submit ``message``; the envelope is taken from it unless given. Raises SendError.
        ``before_mail()`` runs once connected and logged in, right before MAIL FROM: from
        there on the server may end up with the message (the outbox records "sending")."""
        if sender is None or recipients is None:
            env_from, env_to, data = prepare(message)
            sender = sender if sender is not None else env_from
            recipients = recipients if recipients is not None else env_to
        else:
            data = strip_bcc(message) if isinstance(message, bytes) else wire_bytes(message)
        from tui_mail.mail.addresses import envelope_address

        sender = envelope_address(sender)        # IDNA 2008: straße.de is not strasse.de
        recipients = [envelope_address(r) for r in recipients]

        async def transaction(client: aiosmtplib.SMTP) -> SendResult:
            needs_utf8 = not (sender + "".join(recipients)).isascii()
            options, encoding = [], "ascii"
            if needs_utf8:
                if not client.supports_extension("smtputf8"):
                    raise SendError(f"{self.settings.host} cannot take non-ASCII addresses "
                                    "(no SMTPUTF8).", permanent=True)
                options, encoding = ["SMTPUTF8"], "utf-8"
            if before_mail is not None:
                before_mail()
            self._c(f"MAIL FROM:<{sender}>" + (" SMTPUTF8" if options else ""))
            self._s(await client.mail(sender, options=options, encoding=encoding))
            for rcpt in recipients:
                self._c(f"RCPT TO:<{rcpt}>")
                try:
                    self._s(await client.rcpt(rcpt, encoding=encoding))
                except aiosmtplib.SMTPResponseException as e:
                    self._s(e)
                    self._c("RSET")
                    try:
                        self._s(await client.rset())
                    except (aiosmtplib.SMTPException, OSError):
                        pass
                    raise SendError(f"{self.settings.host} refused the recipient {rcpt}: {e.code} "
                                    f"{_first_line(e.message)}", permanent=500 <= e.code < 600,
                                    code=e.code) from None
            self._c(f"DATA ({len(data)} bytes)")
            reply = await client.data(data)
            self._s(reply)
            return SendResult(code=reply.code, reply=f"{reply.code} {_first_line(reply.message)}",
                              recipients=tuple(recipients))

        return await self._run(transaction)

    async def check(self) -> dict[str, str]:
        """Connect, secure and log in, then QUIT: the server's EHLO extensions (upper-case)."""
        async def caps(client: aiosmtplib.SMTP) -> dict[str, str]:
            return {k.upper(): v for k, v in client.esmtp_extensions.items()}

        return await self._run(caps)
