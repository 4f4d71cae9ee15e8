"""The relay's outgoing SMTP connection (RFC 5321 client), with PIPELINING (RFC 2920).

:class:`SMTPConnection` speaks to one server over asyncio streams: greeting, EHLO (HELO when
EHLO is refused), STARTTLS, AUTH PLAIN/LOGIN, and one mail transaction at a time by
:meth:`SMTPConnection.transaction`. When the server advertises PIPELINING, MAIL FROM, every
RCPT TO and DATA go out in one write and the replies are read in order afterwards (RFC 2920
§3.1: DATA is the last command of the group), so a transaction costs two round trips
(commands, then message) instead of 3 + recipients.

Each wait has its own timeout, the RFC 5321 §4.5.3.2 ones by default (see :class:`Timeouts`):
TCP connect, the 220 greeting, every command (MAIL/RCPT/EHLO/RSET), the 354 after DATA, every
block of message data written, and the reply after the final dot. A timeout, a dropped link or
a malformed reply raises :class:`LinkError` (a ``ConnectionError``): the connection is unusable.
A well-formed refusal of a setup step raises :class:`ReplyError`. Transaction replies are
returned, not raised: every recipient is judged on its own.

Why hand-written rather than aiosmtplib (which the relay used before and the mail client still
uses): aiosmtplib reads exactly one reply per command it sent and discards bytes that arrive
while no command is pending, so pipelined replies are lost; and it has one timeout for TCP
connect plus greeting and one for the 354 plus the final reply, where RFC 5321 asks for
different ones. The pure parts (:func:`parse_reply_line`, :func:`parse_ehlo`,
:func:`encode_data`, :func:`command`) are tested on bytes in tests/test_relay_smtp_client.py.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from relay.config import DeliveryConfig

MAX_REPLY_LINES = 100
MAX_LINE = 2048          # RFC 5321 4.5.3.1.5 says 512 for a reply line; be lenient
DATA_BLOCK = 64 * 1024   # message data is written (and timed) in blocks of this size


_D = DeliveryConfig  # the one place the defaults live (``[delivery]`` in relay.toml)


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait. The defaults are ``[delivery]``'s (relay/config.py
    :class:`~relay.config.DeliveryConfig`, the RFC 5321 §4.5.3.2 values), never repeated here."""

    connect: float = _D.connect_timeout
    greeting: float = _D.greeting_timeout
    command: float = _D.command_timeout
    data_init: float = _D.data_timeout
    data_block: float = _D.data_block_timeout
    data_done: float = _D.data_done_timeout

    @classmethod
    def from_config(cls, d: DeliveryConfig, command: float | None = None) -> Timeouts:
        """A relay's configured ``[delivery]`` timeouts (``command`` overrides MAIL/RCPT's)."""
        return cls(connect=d.connect_timeout, greeting=d.greeting_timeout,
                   command=d.command_timeout if command is None else command,
                   data_init=d.data_timeout, data_block=d.data_block_timeout, data_done=d.data_done_timeout)


class Reply(NamedTuple):
    code: int
    text: str  # lines joined by "\n", without the codes

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400


class LinkError(ConnectionError):
    """The connection broke, timed out or talked nonsense; it cannot be used any more."""


class ReplyError(Exception):
    """The server refused a setup step (greeting, EHLO, STARTTLS, AUTH) with a proper reply."""

    def __init__(self, reply: Reply, what: str):
        self.reply, self.what = reply, what
        super().__init__(f"{what}: {reply.code} {' '.join(reply.text.split())}")


# ---- pure helpers ------------------------------------------------------------------------

def parse_reply_line(line: bytes) -> tuple[int, bool, str]:
    """``b"250-SIZE 100\\r\\n"`` → (250, True, "SIZE 100"); ValueError when it is no reply."""
    if len(line) < 3 or not line[:3].isdigit() or (len(line) > 3 and line[3:4] not in b"- \r\n"):
        raise ValueError(f"malformed SMTP reply line {line[:80]!r}")
    code = int(line[:3])
    if not 200 <= code <= 599:
        raise ValueError(f"SMTP reply code out of range in {line[:80]!r}")
    return code, line[3:4] == b"-", line[4:].decode("utf-8", "replace").strip(" \t\r\n")


def parse_ehlo(text: str) -> dict[str, str]:
    """EHLO reply text (its lines after the first) → {keyword (lower case): parameters}."""
    out: dict[str, str] = {}
    for line in text.split("\n")[1:]:
        key, _, params = line.strip().partition(" ")
        if key:
            out[key.lower()] = params.strip()
    return out


_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def encode_data(data: bytes) -> bytes:
    """Message bytes as they go after 354: CRLF line ends, dot-stuffed, CRLF.CRLF at the end."""
    data = _LINE_ENDS.sub(b"\r\n", data)
    data = _LEADING_DOT.sub(b"..", data)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def command(verb: str, arg: str = "", options: list[str] | tuple = (), encoding: str = "ascii") -> bytes:
    """One command line; refuses CR/LF in arguments (no command injection from an address)."""
    text = " ".join([verb + (arg and " " + arg), *options]) if arg or options else verb
    if "\r" in text or "\n" in text:
        raise ValueError("CR or LF inside an SMTP command argument")
    return text.encode(encoding) + b"\r\n"


def path(address: str) -> str:
    return f"<{address}>"


# ---- the connection ----------------------------------------------------------------------

@dataclass(eq=False)
class Envelope:
    """One message to send: envelope, raw bytes, MAIL parameters; ``tag`` is the caller's."""

    sender: str
    rcpts: list[str]
    data: bytes
    options: list[str] | tuple = ()
    utf8: bool = False
    tag: object = None

    def mail_command(self) -> bytes:
        return command("MAIL", "FROM:" + path(self.sender), self.options, "utf-8" if self.utf8 else "ascii")

    def rcpt_commands(self) -> list[bytes]:
        enc = "utf-8" if self.utf8 else "ascii"
        return [command("RCPT", "TO:" + path(r), (), enc) for r in self.rcpts]

    def commands(self) -> bytes:
        """MAIL, every RCPT and DATA: one pipelined group (RFC 2920)."""
        return self.mail_command() + b"".join(self.rcpt_commands()) + b"DATA\r\n"


@dataclass
class Transaction:
    """The replies to one MAIL/RCPT.../DATA exchange (``data`` None when DATA was not reached)."""

    mail: Reply
    rcpts: list[Reply]
    data: Reply | None


class SMTPConnection:
    def __init__(self, local_hostname: str, timeouts: Timeouts = Timeouts()):
        self.local_hostname = local_hostname
        self.timeouts = timeouts
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.extensions: dict[str, str] = {}
        self.greeting: Reply | None = None
        self.encrypted = False
        self.pipelined = 0  # transactions sent pipelined (tests, bench)

    # ---- low level ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.writer is not None and not self.writer.is_closing()

    def supports(self, ext: str) -> bool:
        return ext.lower() in self.extensions

    async def _read_reply(self, timeout: float, waiting_for: str) -> Reply:
        reader = self.reader
        if reader is None:
            raise LinkError("not connected")
        lines: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        line = await reader.readline()
                    except (ValueError, asyncio.LimitOverrunError):
                        raise LinkError(f"reply line too long while waiting for {waiting_for}") from None
                    if not line.endswith(b"\n"):
                        raise LinkError(f"connection closed while waiting for {waiting_for}")
                    try:
                        code, more, text = parse_reply_line(line)
                    except ValueError as e:
                        raise LinkError(str(e)) from None
                    lines.append(text)
                    if not more:
                        return Reply(code, "\n".join(lines))
                    if len(lines) >= MAX_REPLY_LINES:
                        raise LinkError(f"reply of more than {MAX_REPLY_LINES} lines")
        except TimeoutError:
            raise LinkError(f"timed out after {timeout:g}s waiting for {waiting_for}") from None
        except OSError as e:
            raise LinkError(f"connection lost waiting for {waiting_for}: {e}") from None

    async def _send(self, data: bytes, timeout: float) -> None:
        writer = self.writer
        if writer is None or writer.is_closing():
            raise LinkError("connection lost")
        try:
            writer.write(data)
            async with asyncio.timeout(timeout):
                await writer.drain()
        except TimeoutError:
            raise LinkError(f"timed out after {timeout:g}s sending to the server") from None
        except OSError as e:
            raise LinkError(f"connection lost while sending: {e}") from None

    async def execute(self, line: bytes, timeout: float | None = None, what: str = "") -> Reply:
        t = self.timeouts.command if timeout is None else timeout
        await self._send(line, t)
        return await self._read_reply(t, what or line.split(b" ", 1)[0].strip().decode("ascii", "replace"))

    # ---- session set-up -----------------------------------------------------------------

    async def connect(self, host: str, port: int, *, tls_context: ssl.SSLContext | None = None,
                      server_hostname: str | None = None) -> Reply:
        """TCP (and TLS for smtps) within ``connect``, then the greeting within ``greeting``."""
        try:
            async with asyncio.timeout(self.timeouts.connect):
                self.reader, self.writer = await asyncio.open_connection(
                    host, port, ssl=tls_context, server_hostname=server_hostname if tls_context else None,
                    limit=MAX_LINE)
        except TimeoutError:
            raise LinkError(f"timed out after {self.timeouts.connect:g}s") from None
        self.encrypted = tls_context is not None
        greeting = await self._read_reply(self.timeouts.greeting, "the greeting")
        self.greeting = greeting
        if greeting.code != 220:
            raise ReplyError(greeting, "greeting")
        return greeting

    async def ehlo(self) -> Reply:
        reply = await self.execute(command("EHLO", self.local_hostname), what="the EHLO reply")
        if reply.code == 250:
            self.extensions = parse_ehlo(reply.text)
            return reply
        if reply.code in (500, 502, 504):  # an old server: HELO, no extensions
            helo = await self.execute(command("HELO", self.local_hostname), what="the HELO reply")
            if helo.code == 250:
                self.extensions = {}
                return helo
            reply = helo
        raise ReplyError(reply, "EHLO refused")

    async def starttls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        reply = await self.execute(b"STARTTLS\r\n", what="the STARTTLS reply")
        if reply.code != 220:
            raise ReplyError(reply, "STARTTLS refused")
        assert self.writer is not None
        try:
            async with asyncio.timeout(self.timeouts.command):
                await self.writer.start_tls(context, server_hostname=server_hostname)
        except TimeoutError:
            raise LinkError("timed out in the TLS handshake") from None
        self.encrypted = True
        self.extensions = {}

    async def auth(self, user: str, password: str) -> None:
        """AUTH PLAIN (or LOGIN when only that is offered); one try. Never logs the secret."""
        methods = self.extensions.get("auth", "").upper().split()
        if "PLAIN" in methods or not methods:
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode("ascii")
            reply = await self.execute(b"AUTH PLAIN " + token.encode() + b"\r\n", what="the AUTH reply")
        elif "LOGIN" in methods:
            reply = await self.execute(b"AUTH LOGIN\r\n", what="the AUTH reply")
            for secret in (user, password):
                if reply.code != 334:
                    break
                reply = await self.execute(base64.b64encode(secret.encode()) + b"\r\n", what="the AUTH reply")
        else:
            raise ReplyError(Reply(504, f"no common AUTH mechanism (server offers {' '.join(methods)})"), "AUTH")
        if reply.code != 235:
            raise ReplyError(reply, "AUTH failed")

    # ---- mail ---------------------------------------------------------------------------

    async def transaction(self, sender: str, rcpts: list[str], data: bytes, options: list[str] | tuple = (),
                          *, utf8: bool = False) -> Transaction:
        """MAIL FROM, RCPT TO for each recipient, DATA and the message; replies as they came.

        Pipelined when the server offers PIPELINING (:meth:`transactions` with one message).
        The message is sent only when MAIL and at least one RCPT were accepted and DATA said
        354; otherwise (pipelined DATA already accepted) a lone dot ends the empty message, as
        RFC 2920 §3.1 asks."""
        env = Envelope(sender, rcpts, data, options, utf8)
        t = self.timeouts
        if self.supports("pipelining"):
            out: list[Transaction] = []
            await self.transactions(env, lambda: None, lambda _e, tx: out.append(tx), rset_after_failure=False)
            return out[0]
        mail = await self.execute(env.mail_command(), what="the MAIL FROM reply")
        if mail.code // 100 != 2:
            return Transaction(mail, [], None)
        rreplies = [await self.execute(c, what="a RCPT TO reply") for c in env.rcpt_commands()]
        if not any(r.code // 100 == 2 for r in rreplies):
            return Transaction(mail, rreplies, None)
        go = await self.execute(b"DATA\r\n", t.data_init, "the DATA reply")
        if go.code != 354:
            return Transaction(mail, rreplies, go)
        return Transaction(mail, rreplies, await self._send_data(data))

    async def transactions(self, first: Envelope, follow: Callable[[], Envelope | None],
                           done: Callable[[Envelope, Transaction], None], *, rset_after_failure: bool = True) -> None:
        """Several messages back to back on a PIPELINING connection, one round trip each.

        RFC 2920 §3.1 allows the message content to be the *first* command of a group, so the
        content of one message, its final dot and the next message's MAIL, RCPTs and DATA go
        out in one write (``follow()`` is asked for the next message while this one's 354 is
        in hand; None ends the chain), and the server can answer the dot and the next
        envelope in one write too. ``done(envelope, transaction)`` is called as soon as each
        message's last reply is read, before anything of the next one is read, so a caller
        records every outcome at the earliest moment. A transaction that did not end with the
        reply to its content is followed by RSET (pipelined with the next envelope).

        On a broken link the exception propagates; the messages ``done`` was not called for
        are not delivered by this connection: the one whose content was sent (if any) is
        uncertain, as after any lost final reply, the next one was never sent."""
        t = self.timeouts
        env = first
        self.pipelined += 1
        await self._send(env.commands(), t.command)
        rset_pending = False
        while True:
            if rset_pending:
                reset = await self._read_reply(t.command, "the RSET reply")
                if reset.code != 250:
                    raise LinkError(f"RSET answered {reset.code}")
            mail = await self._read_reply(t.command, "the MAIL FROM reply")
            rreplies = [await self._read_reply(t.command, "a RCPT TO reply") for _ in env.rcpts]
            go = await self._read_reply(t.data_init, "the DATA reply")
            if go.code != 354:
                done(env, Transaction(mail, rreplies, go))
            elif mail.code // 100 != 2 or not any(r.code // 100 == 2 for r in rreplies):
                await self._send(b".\r\n", t.data_block)
                await self._read_reply(t.data_done, "the reply to an empty message")
                done(env, Transaction(mail, rreplies, None))
            else:
                nxt = follow()
                wire = encode_data(env.data)
                tail = nxt.commands() if nxt is not None else b""
                for i in range(0, len(wire), DATA_BLOCK):
                    last = i + DATA_BLOCK >= len(wire)
                    await self._send(wire[i:i + DATA_BLOCK] + tail if last else wire[i:i + DATA_BLOCK], t.data_block)
                final = await self._read_reply(t.data_done, "the reply after the message")
                done(env, Transaction(mail, rreplies, final))
                if nxt is None:
                    return
                self.pipelined += 1
                env, rset_pending = nxt, False
                continue
            # the transaction ended without the message: RSET, pipelined with the next envelope
            if not rset_after_failure:
                return
            nxt = follow()
            if nxt is None:
                await self.rset()
                return
            self.pipelined += 1
            await self._send(b"RSET\r\n" + nxt.commands(), t.command)
            env, rset_pending = nxt, True

    async def _send_data(self, data: bytes) -> Reply:
        wire = encode_data(data)
        for i in range(0, len(wire), DATA_BLOCK):
            await self._send(wire[i:i + DATA_BLOCK], self.timeouts.data_block)
        return await self._read_reply(self.timeouts.data_done, "the reply after the message")

    async def rset(self) -> None:
        reply = await self.execute(b"RSET\r\n", what="the RSET reply")
        if reply.code != 250:
            raise LinkError(f"RSET answered {reply.code}")

    async def quit(self, timeout: float = 5.0) -> None:
        try:
            await self._send(b"QUIT\r\n", timeout)
            await self._read_reply(timeout, "the QUIT reply")
        except (LinkError, OSError):
            pass
        finally:
            await self.close()

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()
            try:
                async with asyncio.timeout(2):
                    await writer.wait_closed()
            except (OSError, TimeoutError, ssl.SSLError):
                pass

    def abort(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.transport.abort()
