"""Onward delivery over SMTP: the relay acting as a client to the next hop.

:class:`RemoteDelivery` takes a queued message and the recipients still pending, groups them by
route (relay/routing.py) and returns a :class:`DeliveryResult` per recipient:
2xx → ``sent``, 4xx or no connection → ``deferred``, 5xx → ``failed``. Partial success within
one message is normal: every RCPT is judged on its own.

Connections are persistent and shared (RFC 5321 §4.5.4 habits, as Postfix does): all messages
for one destination go into that destination's :class:`_DestinationPool`, whose workers each
hold one SMTP connection and run several MAIL FROM transactions on it before QUIT. A worker
closes after ``max_messages_per_connection`` messages or after ``idle_timeout`` with nothing to
send. Another parallel connection (up to ``max_connections_per_destination``) opens only when
more than :data:`BACKLOG_PER_CONNECTION` messages wait per open one, or when messages have been
waiting without a break for :data:`SUSTAINED_BACKLOG` seconds (the destination is persistently
behind: one more connection per such period, a slow start like Postfix's). So a burst of 20
messages goes over one connection, and a steady flood over a few.

The client side of the wire is aiosmtplib (it writes CRLF line endings and dot-stuffs in
``data()``); we drive EHLO/STARTTLS/MAIL/RCPT/DATA one verb at a time because we need each
reply. Hand-written here, as pure functions: which extensions a message needs
(:func:`needs_smtputf8`, :func:`needs_8bitmime`), the hop count for loop detection
(:func:`count_received`), and the mapping of replies to results (:func:`result_from_reply`).

TLS: ``may`` = STARTTLS when offered, without certificate checks (what MX-to-MX TLS is in
practice; a failed handshake falls back to plaintext on a fresh connection), ``require`` = no
delivery without STARTTLS, ``smtps`` = TLS from the first byte; ``verify`` (smarthosts)
checks the certificate and host name. Passwords (smarthost AUTH) are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiosmtplib

from relay.config import RelayConfig
from relay.routing import Destination, Router, RoutingError

log = logging.getLogger(__name__)

BACKLOG_PER_CONNECTION = 32
"""Waiting messages per open connection before another parallel connection is opened."""

SUSTAINED_BACKLOG = 2.0
"""Seconds of uninterrupted backlog after which one more parallel connection is opened."""


# ---- results ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DeliveryResult:
    """What happened to one recipient: ``status`` is 'sent' | 'deferred' | 'failed'."""

    status: str
    code: int
    text: str
    enhanced: str = ""     # RFC 3463 status, e.g. "5.1.1"
    remote_mta: str = ""   # the server that answered, for the DSN's Remote-MTA

    @property
    def diagnostic(self) -> str:
        """The Diagnostic-Code of a DSN: ``smtp; 550 5.1.1 no such user``."""
        return f"smtp; {self.code} {self.text}".rstrip()


@dataclass(eq=False)
class OutboundMessage:
    """A queued message as the SMTP client needs it: envelope sender and the raw bytes."""

    sender: str          # "" is the null sender (bounces)
    data: bytes
    id: str = ""


_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b\s*")


def result_from_reply(code: int, message: str, remote: str = "") -> DeliveryResult:
    """Map one SMTP reply to a recipient result (2xx sent, 4xx deferred, 5xx failed)."""
    text = " ".join(message.split())
    m = _ENHANCED.match(text)
    status = "sent" if 200 <= code < 300 else "deferred" if 400 <= code < 500 else "failed"
    enhanced = m.group(0).strip() if m else {"sent": "2.0.0", "deferred": "4.0.0", "failed": "5.0.0"}[status]
    if code < 200 or code >= 600:  # nonsense from the server: try again later
        status, enhanced = "deferred", "4.0.0"
    return DeliveryResult(status, code, text, enhanced, remote)


def deferred(text: str, enhanced: str = "4.4.1", code: int = 451, remote: str = "") -> DeliveryResult:
    return DeliveryResult("deferred", code, text, enhanced, remote)


def failed(text: str, enhanced: str, code: int = 550, remote: str = "") -> DeliveryResult:
    return DeliveryResult("failed", code, text, enhanced, remote)


# ---- pure helpers about the message ----------------------------------------------------

def header_block(data: bytes) -> bytes:
    """The header section of a raw message (up to the first empty line)."""
    m = re.search(rb"\r?\n\r?\n", data)
    return data[: m.start()] if m else data


def count_received(data: bytes) -> int:
    """How many Received: trace headers the message carries (its hop count)."""
    return len(re.findall(rb"(?im)^received[ \t]*:", header_block(data)))


def needs_smtputf8(sender: str, recipients: Iterable[str], data: bytes) -> bool:
    """RFC 6531: non-ASCII in the envelope or in the header section needs SMTPUTF8."""
    if not sender.isascii() or not all(r.isascii() for r in recipients):
        return True
    return not header_block(data).isascii()


def needs_8bitmime(data: bytes) -> bool:
    return not data.isascii()


def _tls_context(verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ---- one SMTP connection ---------------------------------------------------------------

class SessionFailed(Exception):
    """The session to one destination cannot be used (connect, greeting, EHLO, TLS, AUTH)."""

    def __init__(self, result: DeliveryResult, *, try_next: bool = True):
        self.result = result
        self.try_next = try_next
        super().__init__(result.text)


class _Session:
    """One open SMTP connection to one destination; runs mail transactions on it."""

    def __init__(self, dest: Destination, cfg: RelayConfig, command_timeout: float):
        self.dest = dest
        self.cfg = cfg
        self.command_timeout = command_timeout
        self.smtp: aiosmtplib.SMTP | None = None
        self.messages = 0
        self.encrypted = False

    @property
    def remote(self) -> str:
        return self.dest.name or self.dest.host

    async def open(self, allow_tls: bool = True) -> None:
        d = self.dest
        smtp = aiosmtplib.SMTP(hostname=d.host, port=d.port, local_hostname=self.cfg.hostname,
                               timeout=self.cfg.delivery.connect_timeout, use_tls=d.tls == "smtps",
                               start_tls=False, validate_certs=d.verify,
                               tls_context=_tls_context(d.verify) if d.tls == "smtps" else None)
        self.smtp = smtp
        try:
            try:
                await smtp.connect()
            except aiosmtplib.SMTPResponseException as e:  # greeting was not 220
                raise SessionFailed(result_from_reply(e.code, e.message, self.remote)) from None
            except (aiosmtplib.SMTPException, OSError) as e:
                raise SessionFailed(deferred(f"connect to {d} failed: {_connect_error(e)}", "4.4.1")) from None
            smtp.timeout = self.command_timeout
            self.encrypted = d.tls == "smtps"
            await self._ehlo()
            if d.tls in ("may", "require") and allow_tls and smtp.supports_extension("starttls"):
                try:
                    await smtp.starttls(server_hostname=d.name or d.host, tls_context=_tls_context(d.verify))
                except aiosmtplib.SMTPResponseException as e:
                    if d.tls == "require":
                        raise SessionFailed(result_from_reply(e.code, f"STARTTLS refused: {e.message}", self.remote)) from None
                    raise _TLSFallback() from None
                except (ssl.SSLError, aiosmtplib.SMTPException, OSError) as e:
                    if d.tls == "require":
                        raise SessionFailed(deferred(f"TLS with {d} failed: {_oneline(e)}", "4.7.5")) from None
                    raise _TLSFallback() from None
                self.encrypted = True
                await self._ehlo()
            if d.tls == "require" and not self.encrypted:
                raise SessionFailed(deferred(f"{d} does not offer STARTTLS and the route requires TLS", "4.7.4"))
            if d.user:
                try:
                    await self._login(smtp, d)
                except aiosmtplib.SMTPResponseException as e:
                    # a wrong password is our configuration, not the recipient's fault: retry later
                    raise SessionFailed(deferred(f"authentication at {d} failed: {e.code} {_squash(e.message)}",
                                                 "4.7.0", remote=self.remote), try_next=False) from None
                except aiosmtplib.SMTPException as e:
                    raise SessionFailed(deferred(f"authentication with {d} failed: {_oneline(e)}", "4.7.0"),
                                        try_next=False) from None
        except BaseException:
            self.abort()
            raise

    async def _login(self, smtp: aiosmtplib.SMTP, d: Destination) -> None:
        """One mechanism, one try (aiosmtplib's login() walks every mechanism after a 535)."""
        methods = smtp.server_auth_methods
        timeout = self.cfg.delivery.connect_timeout
        if "plain" in methods or not methods:
            await smtp.auth_plain(d.user, d.password, timeout=timeout)
        elif "login" in methods:
            await smtp.auth_login(d.user, d.password, timeout=timeout)
        else:
            raise aiosmtplib.SMTPException(f"no common AUTH mechanism (server offers {', '.join(methods)})")

    async def _ehlo(self) -> None:
        assert self.smtp is not None
        try:
            await self.smtp.ehlo()
        except aiosmtplib.SMTPResponseException as e:
            raise SessionFailed(result_from_reply(e.code, f"EHLO refused: {e.message}", self.remote)) from None
        except (aiosmtplib.SMTPException, OSError) as e:
            raise SessionFailed(deferred(f"{self.dest} dropped the connection at EHLO: {_oneline(e)}")) from None

    async def send(self, msg: OutboundMessage, rcpts: list[str]) -> dict[str, DeliveryResult]:
        """One MAIL/RCPT/DATA transaction. Raises ConnectionError when the link breaks, and
        SessionFailed(try_next) on a 4xx to MAIL FROM (worth another MX)."""
        smtp = self.smtp
        assert smtp is not None
        self.messages += 1
        remote = self.remote
        utf8 = needs_smtputf8(msg.sender, rcpts, msg.data)
        if utf8 and not smtp.supports_extension("smtputf8"):
            r = failed(f"{remote} does not support SMTPUTF8, which this message needs", "5.6.7", 553, remote)
            return dict.fromkeys(rcpts, r)
        options: list[str] = []
        if smtp.supports_extension("size"):
            limit = smtp.esmtp_extensions.get("size", "")
            if limit.isdigit() and int(limit) and len(msg.data) > int(limit):
                r = failed(f"message of {len(msg.data)} bytes exceeds {remote}'s limit of {limit}", "5.3.4", 552, remote)
                return dict.fromkeys(rcpts, r)
            options.append(f"SIZE={len(msg.data)}")
        if needs_8bitmime(msg.data) and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        if utf8:
            options.append("SMTPUTF8")
        enc = "utf-8" if utf8 else "ascii"
        try:
            await smtp.mail(msg.sender, options=options, encoding=enc)
        except aiosmtplib.SMTPResponseException as e:
            await self._rset()
            r = result_from_reply(e.code, e.message, remote)
            if r.status == "deferred":
                raise SessionFailed(r) from None
            return dict.fromkeys(rcpts, r)
        results: dict[str, DeliveryResult] = {}
        accepted: list[str] = []
        for rcpt in rcpts:
            try:
                resp = await smtp.rcpt(rcpt, encoding=enc)
            except aiosmtplib.SMTPResponseException as e:
                results[rcpt] = result_from_reply(e.code, e.message, remote)
            else:
                accepted.append(rcpt)
                results[rcpt] = result_from_reply(resp.code, resp.message, remote)
        if not accepted:
            await self._rset()
            return results
        try:
            resp = await smtp.data(msg.data)
        except aiosmtplib.SMTPResponseException as e:
            r = result_from_reply(e.code, e.message, remote)
            await self._rset()
        else:
            r = result_from_reply(resp.code, resp.message, remote)
        for rcpt in accepted:
            results[rcpt] = r
        return results

    async def _rset(self) -> None:
        if self.smtp is not None and self.smtp.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await self.smtp.rset()

    async def close(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is not None and smtp.is_connected:
            try:
                await asyncio.wait_for(smtp.quit(), 5)
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                smtp.close()

    def abort(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is not None:
            smtp.close()


class _TLSFallback(Exception):
    """Opportunistic STARTTLS failed: reconnect in plaintext (as Postfix does)."""


async def open_session(dest: Destination, cfg: RelayConfig, command_timeout: float) -> _Session:
    s = _Session(dest, cfg, command_timeout)
    try:
        await s.open()
    except _TLSFallback:
        s = _Session(dest, cfg, command_timeout)
        await s.open(allow_tls=False)
    return s


def _connect_error(e: BaseException) -> str:
    """'connection refused' rather than aiosmtplib's 'Error connecting to … Connect call failed …'."""
    if isinstance(e, TimeoutError):
        return "timed out"
    cause = e.__cause__ if isinstance(e.__cause__, OSError) else e if isinstance(e, OSError) else None
    if cause is not None and cause.errno:
        return os.strerror(cause.errno).lower()
    return _oneline(e)


def _squash(text: str) -> str:
    return " ".join(text.split())


def _oneline(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ---- per-destination pools -------------------------------------------------------------

@dataclass(eq=False)
class _Job:
    msg: OutboundMessage
    rcpts: list[str]
    future: asyncio.Future = field(repr=False)


class _DestinationPool:
    """Messages waiting for one destination, and the workers (connections) draining them."""

    def __init__(self, owner: RemoteDelivery, dests: tuple[Destination, ...]):
        self.owner = owner
        self.dests = dests
        self.jobs: deque[_Job] = deque()
        self.workers: set[asyncio.Task] = set()
        self.wakeup = asyncio.Event()
        self.connections = 0
        self.backlog_since = 0.0  # when the job queue last became non-empty

    def submit(self, job: _Job) -> None:
        now = time.monotonic()
        if not self.jobs:
            self.backlog_since = now
        self.jobs.append(job)
        self.wakeup.set()
        limit = self.owner.cfg.delivery.max_connections_per_destination
        busy = len(self.workers)
        sustained = now - self.backlog_since >= SUSTAINED_BACKLOG
        if busy == 0 or (busy < limit and (len(self.jobs) > busy * BACKLOG_PER_CONNECTION or sustained)):
            self.backlog_since = now  # the next one only after another full period
            t = asyncio.get_running_loop().create_task(self._worker(), name=f"smtp-out {self.dests[0]}")
            self.workers.add(t)
            t.add_done_callback(self.workers.discard)
            self.owner._tasks.add(t)
            t.add_done_callback(self.owner._tasks.discard)

    async def _next_job(self, idle: float) -> _Job | None:
        deadline = time.monotonic() + idle
        if self.owner.closing:  # shutting down: what is still waiting is deferred by aclose()
            return None
        while not self.jobs:
            if self.owner.closing:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), remaining)
        return self.jobs.popleft()

    async def _connect(self, dests: Iterable[Destination]) -> tuple[_Session | None, DeliveryResult | None, int]:
        """Try destinations in order; returns (session, last error, index of the one used)."""
        last: DeliveryResult | None = None
        for i, d in enumerate(dests):
            try:
                session = await open_session(d, self.owner.cfg, self.owner.command_timeout)
            except SessionFailed as e:
                last = e.result
                if not e.try_next:
                    return None, last, i
                continue
            self.connections += 1
            self.owner.connections_opened += 1
            log.info("smtp: connected to %s%s (%d open to this destination)", d,
                     " with TLS" if session.encrypted else "", len(self.workers))
            return session, None, i
        return None, last, -1

    async def _worker(self) -> None:
        me = asyncio.current_task()
        session: _Session | None = None
        job: _Job | None = None
        index = 0
        cap = self.owner.cfg.delivery.max_messages_per_connection
        try:
            while True:
                job = await self._next_job(self.owner.idle_timeout if session else 0.0)
                if job is None:
                    # Leave the pool in the same step as seeing it empty, so a job submitted
                    # from now on starts a new worker instead of waiting for this one.
                    self.workers.discard(me)
                    return
                if job.future.done():  # the caller gave up (cancelled)
                    continue
                if session is not None and session.messages >= cap:
                    await session.close()
                    session = None
                reused = session is not None
                if session is None:
                    session, err, index = await self._connect(self.dests)
                    if session is None:
                        self.workers.discard(me)
                        self._fail_all(job, err)
                        return
                try:
                    results = await session.send(job.msg, job.rcpts)
                except SessionFailed as e:  # 4xx to MAIL FROM: worth trying the other MXes
                    results = await self._via_others(job, index, e.result)
                except (ConnectionError, aiosmtplib.SMTPException, OSError) as e:
                    session.abort()
                    session = None
                    if reused:  # an idle connection the server had dropped: once more, fresh
                        self.jobs.appendleft(job)
                        continue
                    results = dict.fromkeys(job.rcpts, deferred(f"connection to {self.dests[index]} lost: {_oneline(e)}"))
                if not job.future.done():
                    job.future.set_result(results)
        except asyncio.CancelledError:  # cut off by aclose(): the message stays queued
            self.workers.discard(me)
            if job is not None and not job.future.done():
                job.future.set_result(dict.fromkeys(job.rcpts, deferred("the relay is shutting down", "4.3.2", 421)))
            if session is not None:
                session.abort()
                session = None
            raise
        except Exception as e:  # never let a worker die silently with callers waiting
            self.workers.discard(me)
            log.exception("onward delivery worker for %s crashed", self.dests[0])
            if job is not None and not job.future.done():
                job.future.set_result(dict.fromkeys(job.rcpts, deferred(f"internal error: {_oneline(e)}", "4.3.0")))
            if self.jobs and not self.workers and not self.owner.closing:
                self.submit(self.jobs.popleft())
        finally:
            self.workers.discard(me)
            if session is not None:
                await session.close()

    async def _via_others(self, job: _Job, index: int, first: DeliveryResult) -> dict[str, DeliveryResult]:
        others = self.dests[index + 1:]
        session, err, _ = await self._connect(others)
        if session is None:
            return dict.fromkeys(job.rcpts, first)
        try:
            return await session.send(job.msg, job.rcpts)
        except SessionFailed as e:
            return dict.fromkeys(job.rcpts, e.result)
        except (ConnectionError, aiosmtplib.SMTPException, OSError) as e:
            session.abort()
            return dict.fromkeys(job.rcpts, deferred(f"connection to {session.dest} lost: {_oneline(e)}"))
        finally:
            await session.close()

    def _fail_all(self, job: _Job, err: DeliveryResult | None) -> None:
        """No destination answered: this job and everything queued behind it wait for a retry."""
        err = err or deferred("no destination could be reached")
        for j in [job, *self.jobs]:
            if not j.future.done():
                j.future.set_result(dict.fromkeys(j.rcpts, err))
        self.jobs.clear()


# ---- the public face -------------------------------------------------------------------

class RemoteDelivery:
    """Delivers queued messages to other servers; one instance per running relay.

    ``await deliver_message(msg, recipients)`` → ``{recipient: DeliveryResult}``; ``await
    aclose()`` QUITs every open connection. ``connections_opened`` counts SMTP connections made,
    for tests and the benchmark.
    """

    def __init__(self, cfg: RelayConfig, router: Router | None = None, *, idle_timeout: float = 5.0,
                 command_timeout: float = 300.0):
        self.cfg = cfg
        self.router = router or Router(cfg)
        self.idle_timeout = idle_timeout
        self.command_timeout = command_timeout
        self.closing = False
        self.connections_opened = 0
        self._pools: dict[tuple[Destination, ...], _DestinationPool] = {}
        self._tasks: set[asyncio.Task] = set()  # every worker ever started and not yet finished

    async def deliver_message(self, msg: OutboundMessage, recipients: Iterable[str]) -> dict[str, DeliveryResult]:
        rcpts = list(dict.fromkeys(recipients))
        if not rcpts:
            return {}
        hops = count_received(msg.data)
        if hops > self.cfg.queue.max_hops:
            r = failed(f"mail loop: the message has passed {hops} hops (limit {self.cfg.queue.max_hops})",
                       "5.4.6", 554)
            return dict.fromkeys(rcpts, r)
        by_domain: dict[str, list[str]] = {}
        results: dict[str, DeliveryResult] = {}
        for r in rcpts:
            local, at, domain = r.rpartition("@")
            if not at or not local or not domain:
                results[r] = failed(f"bad recipient address {r!r}", "5.1.3", 553)
            else:
                by_domain.setdefault(domain.lower(), []).append(r)
        by_route: dict[tuple[Destination, ...], list[str]] = {}
        for domain, group in by_domain.items():
            try:
                route = await self.router.route(domain)
            except RoutingError as e:
                res = (failed if e.permanent else deferred)(e.text, e.status, e.code)
                results.update(dict.fromkeys(group, res))
                continue
            by_route.setdefault(route.destinations, []).extend(group)
        if by_route and self.closing:
            for group in by_route.values():
                results.update(dict.fromkeys(group, deferred("the relay is shutting down", "4.3.2", 421)))
            return results
        loop = asyncio.get_running_loop()
        waits = []
        for dests, group in by_route.items():
            pool = self._pools.get(dests)
            if pool is None:
                pool = self._pools[dests] = _DestinationPool(self, dests)
            job = _Job(msg, group, loop.create_future())
            pool.submit(job)
            waits.append(job.future)
        try:
            for part in await asyncio.gather(*waits):
                results.update(part)
        except asyncio.CancelledError:
            for f in waits:
                f.cancel()
            raise
        return {r: results[r] for r in rcpts}

    async def deliver(self, entry, recipients: list[str]) -> dict[str, DeliveryResult]:
        """The queue runner's hook: ``entry`` is a spool QueueEntry (sender, id, read_message())."""
        data = await asyncio.to_thread(entry.read_message)
        return await self.deliver_message(OutboundMessage(entry.sender, data, entry.id), recipients)

    async def aclose(self, grace: float = 10.0) -> None:
        """Stop taking work, let the workers finish their current message (up to ``grace``
        seconds, then cut them off), QUIT every connection; waiting messages are deferred."""
        self.closing = True
        workers = list(self._tasks)
        for p in self._pools.values():
            p.wakeup.set()
        if workers:
            _, late = await asyncio.wait(workers, timeout=grace)
            for t in late:
                t.cancel()
            if late:
                await asyncio.wait(late)
        for p in self._pools.values():
            for j in p.jobs:
                if not j.future.done():
                    j.future.set_result(dict.fromkeys(j.rcpts, deferred("the relay is shutting down", "4.3.2", 421)))
            p.jobs.clear()
        self._pools.clear()

    async def __aenter__(self) -> RemoteDelivery:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
