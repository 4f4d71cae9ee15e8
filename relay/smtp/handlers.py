"""The SMTP listeners' glue: aiosmtpd protocol + our handler hooks → policy → spool.

Two flavours share one handler class:

* *inbound* (MX, default :2525): mail for local domains only, no AUTH; anything else is
  "554 5.7.1 Relay access denied".
* *submission* (default :2587): MAIL needs AUTH (PLAIN/LOGIN, relay/smtp/auth.py); AUTH is
  offered only after STARTTLS, or in plaintext from 127.0.0.1/::1 when
  ``[auth] allow_plaintext_loopback`` is true; authenticated senders may relay anywhere, but
  only as their own addresses (MAIL FROM and From:, plus ``[senders]`` aliases).

What aiosmtpd already does for us: the wire parsing, PIPELINING, STARTTLS, SIZE, 8BITMIME,
SMTPUTF8, line-length limits. What we add: ENHANCEDSTATUSCODES/PIPELINING in EHLO, the
accept/reject rules (policy.py), refusing bare CR/LF in DATA (SMTP smuggling), the Received
header, and the durable hand-off: 250 only after :meth:`Spool.store` has fsynced the queue file
and directory, 451 4.3.0 if it failed. Against hostile clients (issue 10): connection caps per
listener and address (421), ``[limits] max_errors`` then 421 and close, turns taken every 2 ms
of pipelined commands, rejections logged in aggregate, and our own DATA loop (one buffer per
message instead of aiosmtpd's one object per line).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from email.parser import BytesHeaderParser
from email.utils import formatdate, getaddresses

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session

from relay.config import RelayConfig
from relay.errors import QueueError
from relay.limits import listener_limiter
from relay.log import maillog
from relay.peer import is_loopback
from relay.queue.spool import QueueEntry, Spool, new_queue_id
from relay.smtp import policy
from relay.smtp.auth import Authenticator
from relay.users import AuthThrottle, UserDB

log = logging.getLogger(__name__)


# MAIL FROM:/RCPT TO: in the everyday shape <dot-atom@domain> [params]: parsed by this regex.
# aiosmtpd's _getaddr builds a typing.Protocol class on every call and runs the email package's
# full RFC 5322 parser (a fifth of a worker's CPU per message); anything else (quoted local
# parts, address literals, source routes, <>, UTF-8, comments) still goes through it, so the result
# is the same as aiosmtpd's for every input (tests/test_relay_workers_smtp.py, test_relay_smtp.py).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?:[ \t]+(.*))?", re.S)

REJECTS_LOGGED = 3        # RCPT rejections logged one by one per session; the rest as a count
YIELD_AFTER = 0.002       # seconds of pipelined commands before letting other connections run


_DATE: list = [0, ""]


def received_date() -> str:
    """The RFC 5322 date of our Received header, formatted once per second."""
    now = int(time.time())
    if _DATE[0] != now:
        _DATE[0], _DATE[1] = now, formatdate(now, localtime=True)
    return _DATE[1]


def header_senders(data: bytes) -> list[str] | None:
    """The addresses in the From: header(s) of a message, lower case (None: no From header)."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end + 4]
    values = BytesHeaderParser().parsebytes(head).get_all("From")
    if not values:
        return None
    return [addr.lower() for _, addr in getaddresses([str(v) for v in values])]


class _Stalled:
    """A reader for a session being hung up: aiosmtpd's loop waits here until the close."""

    async def readuntil(self, *args):
        await asyncio.Event().wait()

    async def readline(self):
        await asyncio.Event().wait()

    async def read(self, *args):
        await asyncio.Event().wait()

    _buffer = b""


class RelaySMTP(SMTP):
    """aiosmtpd's protocol with our limits and per-connection AUTH-over-plaintext decision."""

    def __init__(self, handler: RelayHandler, *, cfg: RelayConfig, tls_context, loop):
        # aiosmtpd sizes its line buffer from this attribute inside __init__.
        self.line_length_limit = cfg.queue.max_line_length
        super().__init__(handler, data_size_limit=cfg.queue.max_message_size, enable_SMTPUTF8=True,
                         decode_data=False, hostname=cfg.hostname, ident="ESMTP tui-mail relay",
                         tls_context=tls_context, require_starttls=False, auth_require_tls=True,
                         timeout=300, loop=loop)
        self.relay_handler = handler
        self.errors = 0             # 4xx/5xx replies sent in this session
        self.rejected_rcpts = 0     # RCPT rejections (logged one by one only up to REJECTS_LOGGED)
        self.refused: str | None = None
        self.admitted_ip: str | None = None
        self.closing = False
        self._last_yield = 0.0

    def _getaddr(self, arg: str):
        """aiosmtpd's address parsing, with a fast path for the usual ``<local@domain>`` (see
        _SIMPLE_PATH)."""
        m = _SIMPLE_PATH.fullmatch(arg)
        if m is None or "(" in (m.group(2) or ""):   # a comment: aiosmtpd's parser drops it
            return super()._getaddr(arg)
        addr = m.group(1)
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, m.group(2) or ""

    async def _handle_client(self) -> None:
        if self.refused is not None:   # over a connection cap: say so politely and hang up
            self._writer.write(f"421 4.7.0 {self.hostname} Error: {self.refused}, try again later\r\n".encode())
            self.transport.close()
            return
        await super()._handle_client()

    async def push(self, status) -> None:
        if self.closing:
            return
        response = status.encode("utf-8") if isinstance(status, str) else status
        if response[:1] in (b"4", b"5") and not response.startswith(b"421"):
            self.errors += 1
            if self.errors > self.relay_handler.cfg.limits.max_errors:
                # Postfix's smtpd_hard_error_limit: a client that keeps erring is cut off
                self.closing = True
                self._held.append(response + b"\r\n" + b"421 4.7.0 Error: too many errors\r\n")
                self._writer.write(b"".join(self._held))
                self._held.clear()
                self._hang_up()
                return
        now = self.loop.time()
        if now - self._last_yield > YIELD_AFTER and getattr(self._reader, "_buffer", b""):
            # a client pipelining thousands of commands must not hold the event loop: reading
            # buffered commands never waits, so take turns every couple of milliseconds (with
            # nothing buffered the next read waits anyway: no extra loop turn per reply)
            await asyncio.sleep(0)
            self._last_yield = self.loop.time()
        await self._push(response)

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA with one change: the message is collected in one bytearray instead
        of a list with one bytearray per line. aiosmtpd's list costs ~60 bytes per line, so a
        20 MB message of empty lines took 680 MB of memory before any login; now the cost is
        the message size. Same rules otherwise: end at CRLF.CRLF, dot-unstuffing, the size and
        line-length limits with their replies after the end of data, then handle_DATA."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data = bytearray()
        limit = self.data_size_limit
        state = ""                 # "", or the first problem: "too long" / "too much"
        in_line = False            # inside a line longer than the reader's limit
        received = 0
        turn = self.loop.time()
        while self.transport is not None:
            try:
                line = await self._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as e:
                state, in_line = state or "too long", True
                data.clear()
                received += len(await self._reader.read(e.consumed))
                continue
            if self.loop.time() - turn > YIELD_AFTER:   # megabytes of tiny lines: take turns
                await asyncio.sleep(0)
                turn = self.loop.time()
            if in_line:            # the end of an overlong line
                in_line = False
                received += len(line)
                continue
            if line == b".\r\n":
                break
            received += len(line)
            if not state and limit and received > limit:
                state = "too much"
                data.clear()
            if not state and len(line) > self.line_length_limit:
                state = "too long"
                data.clear()
            if not state:
                data += line[1:] if line.startswith(b".") else line
        else:
            return                 # the connection went away
        if state:
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)" if state == "too long"
                            else "552 Error: Too much mail data")
            self._set_post_data_state()
            return
        content = bytes(data)
        del data
        self.envelope.content = self.envelope.original_content = content
        # a graceful stop (RelayHandler.drain) waits while in_data: hold it until the reply is
        # out, or the stop could close the connection in push()'s yield between the end of the
        # transaction and its 250 (the message queued, the client never told)
        handler = self.relay_handler
        handler.in_data += 1
        handler._idle.clear()
        try:
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()
            await self.push("250 OK" if status is MISSING else status)
        finally:
            handler.in_data -= 1
            if not handler.in_data:
                handler._idle.set()

    def _hang_up(self) -> None:
        """Close after the last reply without losing it: stop executing commands (the handler
        loop waits on a reader that never answers), send FIN, drop what the client still
        pipelines for up to a second (4 MB), then close (closing with unread input would reset the
        connection and the client might never see the 421)."""
        real = self._reader
        self._reader = _Stalled()
        with contextlib.suppress(Exception):
            if self.transport.can_write_eof():
                self.transport.write_eof()

        async def drop_then_close() -> None:
            loop = asyncio.get_running_loop()
            end, dropped = loop.time() + 1.0, 0
            with contextlib.suppress(Exception):
                while (left := end - loop.time()) > 0 and dropped < 4 << 20:
                    data = await asyncio.wait_for(real.read(1 << 16), left)
                    if not data:
                        break
                    dropped += len(data)
            if self.transport is not None:
                self.transport.close()

        self._closer = asyncio.ensure_future(drop_then_close())

    async def _push(self, response: bytes) -> None:
        """Send a reply, but hold it while the client has more pipelined commands waiting in
        our input buffer (RFC 2920: replies may be grouped), as Postfix's smtpd does: one write
        for MAIL+RCPT+DATA replies instead of three. Safe because the held reply is flushed by
        the next push, which comes before any read that could wait on the client."""
        self._held.append(response + b"\r\n")
        buffered = getattr(self._reader, "_buffer", b"")
        # 250s and rejections (4xx/5xx but 421) wait while more commands are buffered: a flood
        # of rejected RCPTs goes out in batches, not one send each; 220 (STARTTLS), 221 (QUIT),
        # 334, 354 and 421 go out now
        if (response.startswith(b"250") or (response[:1] in (b"4", b"5") and not response.startswith(b"421"))) \
                and b"\n" in buffered and len(self._held) < 64:
            return
        self._writer.write(b"".join(self._held))
        self._held.clear()
        await self._writer.drain()

    def connection_made(self, transport) -> None:
        if not hasattr(self, "_held"):
            self._held: list[bytes] = []
        super().connection_made(transport)
        peer = self.session.peer
        host = peer[0] if isinstance(peer, tuple) and peer else ""
        if self.relay_handler.cfg.auth.allow_plaintext_loopback and is_loopback(host):
            self._auth_require_tls = False
        if self._original_transport is None:  # a new connection, not the STARTTLS upgrade
            self.refused = self.relay_handler.limiter.admit(host)
            if self.refused is None:
                self.admitted_ip = host
            self.relay_handler.connections.add(self)

    def connection_lost(self, error) -> None:
        self.relay_handler.connections.discard(self)
        if self.admitted_ip is not None:
            self.relay_handler.limiter.release(self.admitted_ip)
            self.admitted_ip = None
        if self.rejected_rcpts > REJECTS_LOGGED:
            maillog().info("NOQUEUE: reject: %d more RCPT from %s not logged one by one",
                           self.rejected_rcpts - REJECTS_LOGGED,
                           self.relay_handler._client(self.session))
        super().connection_lost(error)

    @property
    def in_transaction(self) -> bool:
        return self.envelope is not None and self.envelope.mail_from is not None

    def close_now(self) -> None:
        if self.transport is not None:
            self.transport.close()


class RelayHandler(Authenticator):
    """Hooks for one listener. ``on_queued(entry)`` is called after each accepted message."""

    def __init__(self, cfg: RelayConfig, spool: Spool, users: UserDB, throttle: AuthThrottle, *,
                 submission: bool, on_queued: Callable[[QueueEntry], None] | None = None):
        self.cfg, self.spool, self.users, self.throttle = cfg, spool, users, throttle
        self.submission = submission
        self.on_queued = on_queued
        self.connections: set[RelaySMTP] = set()
        self.in_data = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.listener = "submission" if submission else "smtp"
        self.limiter = listener_limiter(cfg, self.listener)

    # ---- session hooks ---------------------------------------------------------------------

    async def handle_EHLO(self, server: RelaySMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        lines = [r[4:] for r in responses]
        keep = [lines[0]]
        for ext in lines[1:]:
            if ext == "HELP" or (ext.startswith("AUTH") and not self.submission):
                continue
            keep.append(ext)
        keep[1:1] = ["PIPELINING"]
        keep.append("ENHANCEDSTATUSCODES")
        return [f"250-{x}" for x in keep[:-1]] + [f"250 {keep[-1]}"]

    async def handle_AUTH(self, server, session, envelope, args):
        if not self.submission:
            return policy.AUTH_NOT_OFFERED
        return MISSING  # let aiosmtpd run our auth_PLAIN / auth_LOGIN

    async def handle_MAIL(self, server: RelaySMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        if self.submission and not session.authenticated:
            return policy.AUTH_REQUIRED
        if address == "<>":   # the null sender: aiosmtpd (email's get_angle_addr) keeps the brackets
            address = ""
        smtputf8 = any(o.upper() == "SMTPUTF8" for o in mail_options)
        reply = policy.check_sender(address, smtputf8=smtputf8)
        if reply:
            return reply
        if self.submission:
            login = self._login(session)
            reply = policy.check_sender_login(address, login, self.cfg.allowed_senders(login))
            if reply:
                maillog().info("NOQUEUE: reject: MAIL from %s: %s; sasl_username=%s",
                               self._client(session), reply, login)
                return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return policy.OK

    async def handle_RCPT(self, server: RelaySMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        smtputf8 = any(o.upper() == "SMTPUTF8" for o in envelope.mail_options)
        reply = policy.check_recipient(
            address, count=len(envelope.rcpt_tos), max_recipients=self.cfg.queue.max_recipients,
            authenticated=bool(session.authenticated), is_local_domain=self.cfg.is_local_domain,
            user_exists=self.users.exists, smtputf8=smtputf8)
        if reply:
            server.rejected_rcpts += 1
            if server.rejected_rcpts <= REJECTS_LOGGED:
                maillog().info("NOQUEUE: reject: RCPT from %s: %s; from=<%s> to=<%s> proto=ESMTP helo=<%s>",
                               self._client(session), reply, envelope.mail_from, address, session.host_name)
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return policy.OK_RCPT

    async def handle_DATA(self, server: RelaySMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        client = self._client(session)
        reply = policy.check_data(data, max_hops=self.cfg.queue.max_hops)
        if not reply and self.submission:
            login = self._login(session)
            reply = policy.check_header_senders(header_senders(data), login, self.cfg.allowed_senders(login))
        if reply:
            maillog().info("NOQUEUE: reject: DATA from %s: %s; from=<%s>", client, reply, envelope.mail_from)
            return reply
        qid = new_queue_id()
        rcpts = list(envelope.rcpt_tos)
        peer = session.peer if isinstance(session.peer, tuple) else ("unknown", 0)
        auth_login = getattr(session.auth_data, "login", None)
        login = auth_login.decode() if isinstance(auth_login, bytes) else None
        received = policy.received_header(
            helo=session.host_name or "unknown", client_ip=peer[0], client_host=None, by=self.cfg.hostname,
            protocol=policy.protocol_name(esmtp=session.extended_smtp, tls=session.ssl is not None,
                                          authenticated=bool(session.authenticated)),
            queue_id=qid, recipient=rcpts[0] if len(rcpts) == 1 else None, date=received_date())
        meta = {"client": peer[0], "helo": session.host_name, "listener": self.listener}
        if login:
            meta["auth"] = login
        self.in_data += 1
        self._idle.clear()
        try:
            entry = await self.spool.store(envelope.mail_from or "", rcpts, received + data, meta, qid=qid,
                                           on_committed=self.on_queued)
        except (QueueError, OSError) as e:
            maillog().error("%s: queue write failed: %s", qid, e)
            return policy.QUEUE_FAILED
        finally:
            self.in_data -= 1
            if not self.in_data:
                self._idle.set()
        maillog().info("%s: client=%s%s", qid, client, f", sasl_username={login}" if login else "")
        maillog().info("%s: from=<%s>, size=%d, nrcpt=%d (queue active)", qid, entry.sender, entry.size, len(rcpts))
        return f"250 2.0.0 Ok: queued as {qid}"

    # ---- lifecycle ---------------------------------------------------------------------------

    @staticmethod
    def _login(session: Session) -> str:
        login = getattr(session.auth_data, "login", None)
        return login.decode("utf-8", "replace") if isinstance(login, bytes) else ""

    @staticmethod
    def _client(session: Session) -> str:
        # Postfix shows the reverse-DNS name here; we do no DNS on the accept path.
        peer = session.peer if isinstance(session.peer, tuple) else ("unknown",)
        return f"unknown[{peer[0]}]"

    def factory(self, tls_context) -> Callable[[], RelaySMTP]:
        loop = asyncio.get_running_loop()
        return lambda: RelaySMTP(self, cfg=self.cfg, tls_context=tls_context, loop=loop)

    async def drain(self, grace: float) -> None:
        """Let open transactions finish (up to ``grace`` s), then close every connection."""
        deadline = asyncio.get_running_loop().time() + grace
        while asyncio.get_running_loop().time() < deadline:
            if not self.in_data and not any(c.in_transaction for c in self.connections):
                break
            await asyncio.sleep(0.02)
        for c in list(self.connections):
            c.close_now()
        # connection_lost runs on the next loop iterations; give the handler tasks a moment.
        for _ in range(100):
            if not self.connections:
                break
            await asyncio.sleep(0.01)
