"""The SMTP side of a sink: RelayHandler with sink rules, storing into the sink mailbox.

Messages skip the queue on purpose: they go straight into the catch-all mailbox (one
``UserStore.append``, fsynced, before the 250), so there is no queue entry that the onward
scheduler could ever pick up; "never deliver onward" holds by construction, not by a flag.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from email.utils import formatdate

from aiosmtpd.smtp import MISSING, Envelope, Session

from relay.config import RelayConfig
from relay.log import maillog
from relay.queue.spool import new_queue_id
from relay.sink import SINK_USER, envelope
from relay.smtp import policy
from relay.smtp.handlers import RelayHandler, RelaySMTP
from relay.store.mailbox import UserStore
from relay.users import AuthThrottle

STORE_FAILED = "451 4.3.0 Error: cannot write to the sink mailbox"


class SinkHandler(RelayHandler):
    """Both listeners behave alike: AUTH offered, required off loopback, any recipient."""

    def __init__(self, cfg: RelayConfig, users, throttle: AuthThrottle, *, submission: bool,
                 listen_host: str, store: Callable[[], UserStore]):
        super().__init__(cfg, None, users, throttle, submission=submission)  # type: ignore[arg-type]
        self.listen_host = listen_host
        self.store = store

    def _needs_auth(self, session: Session) -> bool:
        peer = session.peer[0] if isinstance(session.peer, tuple) and session.peer else ""
        return envelope.requires_auth(self.listen_host, peer) and not session.authenticated

    async def handle_EHLO(self, server: RelaySMTP, session: Session, envelope_: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        lines = [r[4:] for r in responses]
        keep = [lines[0], "PIPELINING"] + [x for x in lines[1:] if x != "HELP"] + ["ENHANCEDSTATUSCODES"]
        return [f"250-{x}" for x in keep[:-1]] + [f"250 {keep[-1]}"]

    async def handle_AUTH(self, server, session, envelope_, args):
        return MISSING

    async def handle_MAIL(self, server: RelaySMTP, session: Session, envelope_: Envelope, address: str,
                          mail_options: list[str]) -> str:
        if self._needs_auth(session):
            return policy.AUTH_REQUIRED
        if address == "<>":
            address = ""
        smtputf8 = any(o.upper() == "SMTPUTF8" for o in mail_options)
        reply = policy.check_sender(address, smtputf8=smtputf8)
        if reply:
            return reply
        envelope_.mail_from = address
        envelope_.mail_options.extend(mail_options)
        return policy.OK

    async def handle_RCPT(self, server: RelaySMTP, session: Session, envelope_: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if self._needs_auth(session):
            return policy.AUTH_REQUIRED
        smtputf8 = any(o.upper() == "SMTPUTF8" for o in envelope_.mail_options)
        reply = envelope.check_recipient(address, count=len(envelope_.rcpt_tos),
                                         max_recipients=self.cfg.queue.max_recipients, smtputf8=smtputf8)
        if reply:
            return reply
        envelope_.rcpt_tos.append(address)
        envelope_.rcpt_options.extend(rcpt_options)
        return policy.OK_RCPT

    async def handle_DATA(self, server: RelaySMTP, session: Session, envelope_: Envelope) -> str:
        data = envelope_.original_content or b""
        client = self._client(session)
        reply = policy.check_data(data, max_hops=self.cfg.queue.max_hops)
        if reply:
            maillog().info("NOQUEUE: reject: DATA from %s: %s; from=<%s>", client, reply, envelope_.mail_from)
            return reply
        qid = new_queue_id()
        rcpts = list(envelope_.rcpt_tos)
        peer = session.peer if isinstance(session.peer, tuple) else ("unknown", 0)
        received = policy.received_header(
            helo=session.host_name or "unknown", client_ip=peer[0], client_host=None, by=self.cfg.hostname,
            protocol=policy.protocol_name(esmtp=session.extended_smtp, tls=session.ssl is not None,
                                          authenticated=bool(session.authenticated)),
            queue_id=qid, recipient=None, date=formatdate(localtime=True))
        message = (envelope.envelope_headers(envelope_.mail_from or "", rcpts) + received
                   + envelope.strip_envelope_headers(data))
        self.in_data += 1
        self._idle.clear()
        try:
            await asyncio.to_thread(self.store().append, "INBOX", message)
        except Exception as e:   # a full disk, a broken index: tell the client to retry
            maillog().error("%s: sink store failed: %s", qid, e)
            return STORE_FAILED
        finally:
            self.in_data -= 1
            if not self.in_data:
                self._idle.set()
        maillog().info("%s: client=%s, from=<%s>, nrcpt=%d, size=%d (sink: kept, not delivered)",
                       qid, client, envelope_.mail_from, len(rcpts), len(message))
        return f"250 2.0.0 Ok: kept as {qid} (sink)"


__all__ = ["SinkHandler", "SINK_USER"]
