"""Onward delivery over SMTP: the relay acting as a client to the next hop.

:class:`RemoteDelivery` takes a queued message and the recipients still pending, groups them by
route (relay/routing.py) and returns a :class:`DeliveryResult` per recipient:
2xx → ``sent``, 4xx or no connection → ``deferred``, 5xx → ``failed``. Partial success within
one message is normal: every RCPT is judged on its own.

It is also the onward *scheduler* (the whole design is in relay/queue/runner.py's docstring):
each route (an ordered tuple of :class:`~relay.routing.Destination`) has a
:class:`_DestinationPool` — its own queue of messages, a concurrency window and dead-destination
state (the pure :class:`~relay.queue.destinations.DestinationState`) and the workers that each
hold one SMTP connection and run one message after another on it (connection reuse, up to
``max_messages_per_connection``, closed after ``idle_timeout`` with nothing to send). A
connection opens only when messages wait and no open one is free, within the window and the
relay-wide ``max_connections`` (handed out round-robin between destinations). A stalled,
slow or refusing destination therefore occupies its own window and nothing else.

The wire is relay/smtp_client.py (PIPELINING, the RFC 5321 §4.5.3.2 timeouts). Hand-written
here, as pure functions: which extensions a message needs (:func:`needs_smtputf8`,
:func:`needs_8bitmime`), the hop count for loop detection (:func:`count_received`), and the
mapping of replies to results (:func:`result_from_reply`).

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from relay.config import RelayConfig
from relay.queue.destinations import DestinationState, RoundRobin
from relay.routing import Destination, Router, RoutingError
from relay.smtp_client import Envelope, LinkError, ReplyError, SMTPConnection, Timeouts, Transaction

log = logging.getLogger(__name__)

INLINE_READ = 256 * 1024
"""Queue files smaller than this are read in the event loop (page cache); larger in a thread."""

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
    """A queued message as the SMTP client needs it: envelope sender and the raw bytes
    (``data``, or ``None`` and a ``load`` function that reads them when they are needed)."""

    sender: str          # "" is the null sender (bounces)
    data: bytes | None
    id: str = ""
    load: Callable[[], bytes] | None = field(default=None, repr=False)
    size: int = 0        # of the lazily loaded data, when known


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


_TLS_CONTEXTS: dict[bool, ssl.SSLContext] = {}


def _tls_context(verify: bool) -> ssl.SSLContext:
    """One client context per kind, made once: loading the system's CA store costs tens of
    milliseconds, which was paid again by every new connection. Without ``verify`` no CA
    store is needed at all (unauthenticated opportunistic TLS, as between MXes)."""
    ctx = _TLS_CONTEXTS.get(verify)
    if ctx is None:
        if verify:
            ctx = ssl.create_default_context()
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        _TLS_CONTEXTS[verify] = ctx
    return ctx


# ---- one SMTP connection ---------------------------------------------------------------

class SessionFailed(Exception):
    """The session to one destination cannot be used (connect, greeting, EHLO, TLS, AUTH)."""

    def __init__(self, result: DeliveryResult, *, try_next: bool = True):
        self.result = result
        self.try_next = try_next
        super().__init__(result.text)


def timeouts_for(cfg: RelayConfig, command_timeout: float | None = None) -> Timeouts:
    return Timeouts.from_config(cfg.delivery, command_timeout)


class _Session:
    """One open SMTP connection to one destination; runs mail transactions on it."""

    def __init__(self, dest: Destination, cfg: RelayConfig, timeouts: Timeouts):
        self.dest = dest
        self.cfg = cfg
        self.conn = SMTPConnection(cfg.hostname, timeouts)
        self.messages = 0
        self.pipelined = 0

    @property
    def remote(self) -> str:
        return self.dest.name or self.dest.host

    @property
    def encrypted(self) -> bool:
        return self.conn.encrypted

    async def open(self, allow_tls: bool = True) -> None:
        d, conn = self.dest, self.conn
        try:
            try:
                await conn.connect(d.host, d.port, tls_context=_tls_context(d.verify) if d.tls == "smtps" else None,
                                   server_hostname=d.name or d.host)
            except ReplyError as e:  # greeting was not 220
                raise SessionFailed(result_from_reply(e.reply.code, e.reply.text, self.remote)) from None
            except OSError as e:  # LinkError is a ConnectionError; refused, unreachable, TLS
                raise SessionFailed(deferred(f"connect to {d} failed: {_connect_error(e)}", "4.4.1")) from None
            await self._ehlo()
            if d.tls in ("may", "require") and allow_tls and conn.supports("starttls"):
                try:
                    await conn.starttls(_tls_context(d.verify), d.name or d.host)
                except ReplyError as e:
                    if d.tls == "require":
                        raise SessionFailed(result_from_reply(e.reply.code, f"STARTTLS refused: {e.reply.text}",
                                                              self.remote)) from None
                    raise _TLSFallback() from None
                except OSError as e:
                    if d.tls == "require":
                        raise SessionFailed(deferred(f"TLS with {d} failed: {_oneline(e)}", "4.7.5")) from None
                    raise _TLSFallback() from None
                await self._ehlo()
            if d.tls == "require" and not self.encrypted:
                raise SessionFailed(deferred(f"{d} does not offer STARTTLS and the route requires TLS", "4.7.4"))
            if d.user:
                try:
                    await conn.auth(d.user, d.password)
                except ReplyError as e:
                    # a wrong password is our configuration, not the recipient's fault: retry later
                    raise SessionFailed(deferred(f"authentication at {d} failed: {e.reply.code} {_squash(e.reply.text)}",
                                                 "4.7.0", remote=self.remote), try_next=False) from None
                except OSError as e:
                    raise SessionFailed(deferred(f"authentication with {d} failed: {_oneline(e)}", "4.7.0"),
                                        try_next=False) from None
        except BaseException:
            self.abort()
            raise

    async def _ehlo(self) -> None:
        try:
            await self.conn.ehlo()
        except ReplyError as e:
            raise SessionFailed(result_from_reply(e.reply.code, f"EHLO refused: {e.reply.text}", self.remote)) from None
        except OSError as e:
            raise SessionFailed(deferred(f"{self.dest} dropped the connection at EHLO: {_oneline(e)}")) from None

    def _prepare(self, msg: OutboundMessage, rcpts: list[str]) -> Envelope | dict[str, DeliveryResult]:
        """The envelope to send, or every recipient's result when the message cannot go here."""
        conn = self.conn
        assert msg.data is not None
        self.messages += 1
        remote = self.remote
        utf8 = needs_smtputf8(msg.sender, rcpts, msg.data)
        if utf8 and not conn.supports("smtputf8"):
            r = failed(f"{remote} does not support SMTPUTF8, which this message needs", "5.6.7", 553, remote)
            return dict.fromkeys(rcpts, r)
        options: list[str] = []
        if conn.supports("size"):
            limit = conn.extensions.get("size", "")
            if limit.isdigit() and int(limit) and len(msg.data) > int(limit):
                r = failed(f"message of {len(msg.data)} bytes exceeds {remote}'s limit of {limit}", "5.3.4", 552, remote)
                return dict.fromkeys(rcpts, r)
            options.append(f"SIZE={len(msg.data)}")
        if needs_8bitmime(msg.data) and conn.supports("8bitmime"):
            options.append("BODY=8BITMIME")
        if utf8:
            options.append("SMTPUTF8")
        env = Envelope(msg.sender, rcpts, msg.data, options, utf8)
        try:
            env.commands()
        except ValueError as e:  # CR/LF in an address: never sent
            return dict.fromkeys(rcpts, failed(f"bad address: {e}", "5.1.3", 553))
        return env

    def _judge(self, tx: Transaction, rcpts: list[str]) -> tuple[dict[str, DeliveryResult], bool, DeliveryResult | None]:
        """(results per recipient, whether the message went through, the 4xx to MAIL FROM
        that makes another MX worth trying)."""
        remote = self.remote
        if tx.mail.code // 100 != 2:
            r = result_from_reply(tx.mail.code, tx.mail.text, remote)
            return dict.fromkeys(rcpts, r), False, r if r.status == "deferred" else None
        results: dict[str, DeliveryResult] = {}
        accepted: list[str] = []
        for rcpt, reply in zip(rcpts, tx.rcpts):
            results[rcpt] = result_from_reply(reply.code, reply.text, remote)
            if reply.code // 100 == 2:
                accepted.append(rcpt)
        if not accepted or tx.data is None:
            return results, False, None
        r = result_from_reply(tx.data.code, tx.data.text, remote)
        for rcpt in accepted:
            results[rcpt] = r
        return results, r.status == "sent", None

    async def send(self, msg: OutboundMessage, rcpts: list[str]) -> dict[str, DeliveryResult]:
        """One MAIL/RCPT/DATA transaction (pipelined when offered). Raises ConnectionError when
        the link breaks, and SessionFailed(try_next) on a 4xx to MAIL FROM (worth another MX)."""
        env = self._prepare(msg, rcpts)
        if isinstance(env, dict):
            return env
        before = self.conn.pipelined
        tx = await self.conn.transaction(env.sender, env.rcpts, env.data, env.options, utf8=env.utf8)
        self.pipelined += self.conn.pipelined - before
        results, ok, mail_deferred = self._judge(tx, rcpts)
        if not ok:
            await self._rset()
        if mail_deferred is not None:
            raise SessionFailed(mail_deferred)
        return results

    async def send_chain(self, outstanding: list[_Job], follow: Callable[[], _Job | None],
                         finish: Callable[[_Job, dict[str, DeliveryResult]], None]) -> tuple[_Job, DeliveryResult] | None:
        """``outstanding[0]`` and whatever ``follow()`` hands over while a message is on the
        wire, back to back with one round trip each (:meth:`SMTPConnection.transactions`).
        ``finish(job, results)`` as each reply arrives. ``outstanding`` always holds the jobs
        handed to the wire whose outcome is not known yet (the caller's to settle when the
        link breaks). Returns the job whose MAIL FROM got a 4xx (worth another MX), if any;
        the chain stops there."""
        redo: list[tuple[_Job, DeliveryResult]] = []

        def envelope(job: _Job) -> Envelope | None:
            env = self._prepare(job.msg, job.rcpts)
            if isinstance(env, dict):
                finish(job, env)
                return None
            env.tag = job
            return env

        def nxt() -> Envelope | None:
            while not redo:
                job = follow()
                if job is None:
                    return None
                env = envelope(job)
                if env is not None:
                    outstanding.append(job)
                    return env
            return None

        def done(env: Envelope, tx: Transaction) -> None:
            job = env.tag
            outstanding.remove(job)
            results, _ok, mail_deferred = self._judge(tx, job.rcpts)
            if mail_deferred is not None:
                redo.append((job, mail_deferred))
            else:
                finish(job, results)

        first = envelope(outstanding[0])
        if first is None:
            outstanding.clear()
            return None
        before = self.conn.pipelined
        try:
            await self.conn.transactions(first, nxt, done)
        finally:
            self.pipelined += self.conn.pipelined - before
        return redo[0] if redo else None

    async def _rset(self) -> None:
        if self.conn.connected:
            with contextlib.suppress(OSError):
                await self.conn.rset()

    async def close(self) -> None:
        await self.conn.quit()

    def abort(self) -> None:
        self.conn.abort()


class _TLSFallback(Exception):
    """Opportunistic STARTTLS failed: reconnect in plaintext (as Postfix does)."""


async def open_session(dest: Destination, cfg: RelayConfig, timeouts: Timeouts) -> _Session:
    s = _Session(dest, cfg, timeouts)
    try:
        await s.open()
    except _TLSFallback:
        s = _Session(dest, cfg, timeouts)
        await s.open(allow_tls=False)
    return s


def _connect_error(e: BaseException) -> str:
    """'connection refused' rather than 'Multiple exceptions: [Errno 111] Connect call failed …'."""
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, LinkError):
        return _oneline(e)
    cause = e.__cause__ if isinstance(e.__cause__, OSError) else e if isinstance(e, OSError) else None
    if cause is not None and cause.errno:
        return os.strerror(cause.errno).lower()
    text = _oneline(e)
    if "Connect call failed" in text and "111" in text:
        return "connection refused"
    return text


def _squash(text: str) -> str:
    return " ".join(text.split())


def _oneline(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ---- the scheduler: per-destination queues, windows, shared slots ------------------------

@dataclass(eq=False)
class _Job:
    msg: OutboundMessage
    rcpts: list[str]
    future: asyncio.Future = field(repr=False)
    retried: bool = False


class _Slots:
    """The relay-wide cap on onward connections (``max_connections``), handed out round-robin
    to the destinations waiting for one (relay/queue/destinations.py :class:`RoundRobin`)."""

    def __init__(self, owner: RemoteDelivery, limit: int):
        self.owner, self.limit, self.used = owner, limit, 0
        self.waiting = RoundRobin()

    def take(self, pool: _DestinationPool) -> bool:
        if self.used < self.limit:
            self.used += 1
            return True
        self.waiting.want(pool.dests)
        for other in self.owner._pools.values():  # an idle connection elsewhere gives its slot up
            if other is not pool and other.waiting and not other.jobs:
                other.wakeup.set()
                break
        return False

    def release(self) -> None:
        self.used = max(0, self.used - 1)
        while self.waiting and self.used < self.limit:
            pool = self.owner._pools.get(self.waiting.next())
            if pool is not None:
                pool.pump()

    @property
    def contended(self) -> bool:
        return bool(self.waiting)


def destination_name(dests: tuple[Destination, ...]) -> str:
    return str(dests[0]) + (f" (+{len(dests) - 1} more)" if len(dests) > 1 else "")


class _DestinationPool:
    """One destination's queue of messages and the connections (workers) draining it."""

    def __init__(self, owner: RemoteDelivery, dests: tuple[Destination, ...]):
        self.owner = owner
        self.dests = dests
        d, q = owner.cfg.delivery, owner.cfg.queue
        self.state = DestinationState(destination_name(dests), cap=d.max_connections_per_destination,
                                      initial=d.initial_concurrency, dead_after=d.dead_after,
                                      backoff_base=max(1.0, q.first_retry), backoff_max=max(1.0, q.retry_interval))
        self.jobs: deque[_Job] = deque()
        self.workers: set[asyncio.Task] = set()
        self.starting = 0  # workers started that have not asked for a message yet
        self.waiting = 0   # workers waiting for a message (idle on an open connection)
        self.wakeup = asyncio.Event()

    @property
    def connections(self) -> int:
        return len(self.workers)

    @property
    def free(self) -> int:
        """Workers that will take the next queued message without a new connection."""
        return self.starting + self.waiting

    def submit(self, job: _Job) -> None:
        now = self.owner.clock()
        if job.msg.id:
            self.state.forget(job.msg.id)
        if self.state.is_dead(now):
            self._finish(job, dict.fromkeys(job.rcpts, self._dead_result(now)), note=False)
            return
        self.jobs.append(job)
        self.wakeup.set()
        self.pump()

    def pump(self) -> None:
        """Open connections while messages wait for one and the window and the slots allow."""
        if self.owner.closing:
            return
        now = self.owner.clock()
        while len(self.jobs) > self.free and self.state.may_open(now):
            if not self.owner.slots.take(self):
                return
            self.state.opening()
            self.starting += 1
            t = asyncio.get_running_loop().create_task(self._worker(), name=f"smtp-out {self.dests[0]}")
            self.workers.add(t)
            self.owner._tasks.add(t)
            t.add_done_callback(self.owner._tasks.discard)

    def _dead_result(self, now: float) -> DeliveryResult:
        s = self.state
        return deferred(f"{s.last_error} (not tried again before {_hms(s.dead_until)}: "
                        f"{s.failures} failed connections in a row)", "4.4.1")

    async def _next_job(self, idle: float) -> _Job | None:
        deadline = time.monotonic() + idle
        self.waiting += 1
        try:
            while not self.jobs:
                if self.owner.closing or (idle and self.owner.slots.contended):
                    return None  # shutting down, or another destination waits for this slot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), remaining)
            if self.owner.closing:  # shutting down: what is still waiting is deferred by aclose()
                return None
            return self.jobs.popleft()
        finally:
            self.waiting -= 1

    async def _connect(self, dests: Iterable[Destination]) -> tuple[_Session | None, DeliveryResult | None, int]:
        """Try destinations in order; returns (session, last error, index of the one used)."""
        last: DeliveryResult | None = None
        for i, d in enumerate(dests):
            try:
                session = await open_session(d, self.owner.cfg, self.owner.timeouts)
            except SessionFailed as e:
                last = e.result
                if not e.try_next:
                    return None, last, i
                continue
            self.owner.connections_opened += 1
            log.info("smtp: connected to %s%s (%d open to this destination)", d,
                     " with TLS" if session.encrypted else "", len(self.workers))
            return session, None, i
        return None, last, -1

    async def _load(self, job: _Job) -> dict[str, DeliveryResult] | None:
        """Read a lazily given message now; a result when it must not be sent at all."""
        msg = job.msg
        if msg.data is None:
            try:
                # a small queue file is in the page cache: reading it here costs less than a
                # thread hand-off; a big one is read in a thread so the loop never waits on disk
                msg.data = msg.load() if msg.size < INLINE_READ else await asyncio.to_thread(msg.load)
            except OSError as e:
                return dict.fromkeys(job.rcpts, deferred(f"cannot read the queue file: {e}", "4.3.0"))
            return self._check_hops(job)
        return None

    def _check_hops(self, job: _Job) -> dict[str, DeliveryResult] | None:
        msg = job.msg
        if msg.data is not None:
            hops = count_received(msg.data)
            if hops > self.owner.cfg.queue.max_hops:
                return dict.fromkeys(job.rcpts, failed(
                    f"mail loop: the message has passed {hops} hops (limit {self.owner.cfg.queue.max_hops})", "5.4.6", 554))
        return None

    def _follower(self, session: _Session, cap: int) -> Callable[[], _Job | None]:
        """The next queued message for a chain on ``session``, taken only if it can go at once
        (its file small enough to read here, the connection under its message cap)."""
        def take() -> _Job | None:
            while self.jobs and not self.owner.closing and session.messages < cap:
                job = self.jobs[0]
                if job.future.done():  # the caller gave up
                    self.jobs.popleft()
                    continue
                if job.msg.data is None and job.msg.size >= INLINE_READ:
                    return None  # a big file is read in a thread, by the worker's own loop
                self.jobs.popleft()
                if job.msg.data is None:
                    try:
                        job.msg.data = job.msg.load()
                    except OSError as e:
                        self._finish(job, dict.fromkeys(job.rcpts, deferred(f"cannot read the queue file: {e}", "4.3.0")))
                        continue
                    stop = self._check_hops(job)
                    if stop is not None:
                        self._finish(job, stop)
                        continue
                return job
            return None
        return take

    def _finish(self, job: _Job, results: dict[str, DeliveryResult], note: bool = True) -> None:
        """Hand a job its results; ``note=False`` for deferrals that only repeat the last error."""
        now = self.owner.clock()
        if any(r.status == "sent" for r in results.values()):
            self.state.message_delivered()
        late = next((r for r in results.values() if r.status == "deferred"), None)
        if late is not None:
            if note:
                self.state.note_error(now, late.text)
            if job.msg.id:
                self.owner._deferred_at[job.msg.id] = self.dests
        if not job.future.done():
            if job.msg.id and self.owner.on_sent is not None and results \
                    and all(r.status == "sent" for r in results.values()):
                # before this connection sends anything more: a pipelined chain writes the next
                # message's content right after this reply, in the same step of the loop
                self.owner.on_sent(job.msg.id, job.rcpts)
            job.future.set_result(results)

    async def _worker(self) -> None:
        me = asyncio.current_task()
        session: _Session | None = None
        job: _Job | None = None
        outstanding: list[_Job] = []  # handed to a pipelined chain, outcome not known yet
        chain_first: _Job | None = None
        index = 0
        cap = self.owner.cfg.delivery.max_messages_per_connection
        started = True
        try:
            while True:
                if started:
                    self.starting -= 1
                    started = False
                job = await self._next_job(self.owner.idle_timeout if session else 0.0)
                if job is None:
                    return
                if job.future.done():  # the caller gave up (cancelled)
                    job = None
                    continue
                stop = await self._load(job)
                if stop is not None:
                    self._finish(job, stop)
                    continue
                if session is not None and session.messages >= cap:
                    await session.close()
                    session = None
                    if self.owner.slots.contended:  # give the slot to the next destination in turn
                        self.jobs.appendleft(job)
                        job = None
                        return
                reused = session is not None
                if session is None:
                    now = self.owner.clock()
                    if self.state.is_dead(now):
                        self._defer_all(job, self._dead_result(now))
                        return
                    session, err, index = await self._connect(self.dests)
                    if session is None:
                        err = err or deferred("no destination could be reached")
                        died = self.state.connection_failed(self.owner.clock(), err.text)
                        self._finish(job, dict.fromkeys(job.rcpts, err))
                        job = None
                        if died:
                            log.warning("smtp: %s is dead until %s after %d failed connections: %s",
                                        self.state.name, _hms(self.state.dead_until), self.state.failures, err.text)
                            self._defer_all(None, self._dead_result(self.owner.clock()))
                            return
                        if self.state.active > self.state.limit():
                            return  # the window shrank: this connection slot goes
                        continue
                    self.state.connected()
                try:
                    if session.conn.supports("pipelining"):
                        # this message and whatever queues up meanwhile, one round trip each
                        outstanding[:] = [job]
                        chain_first, job = job, None
                        redo = await session.send_chain(outstanding, self._follower(session, cap), self._finish)
                        self.owner.pipelined += session.pipelined
                        session.pipelined = 0
                        if redo is None:
                            self.pump()
                            continue
                        job, first = redo
                        results = await self._via_others(job, index, first)
                    else:
                        results = await session.send(job.msg, job.rcpts)
                        self.owner.pipelined += session.pipelined
                        session.pipelined = 0
                except SessionFailed as e:  # 4xx to MAIL FROM: worth trying the other MXes
                    results = await self._via_others(job, index, e.result)
                except OSError as e:  # LinkError (timeouts, dropped link) is a ConnectionError
                    session.abort()
                    session = None
                    if outstanding:
                        # the first one's content may have been sent; the others never were
                        reused = reused or outstanding[0] is not chain_first
                        job = outstanding[0]
                        for later in reversed(outstanding[1:]):
                            self.jobs.appendleft(later)
                        outstanding.clear()
                    if job is None:
                        continue
                    if reused and not job.retried:  # an idle connection the server had dropped
                        job.retried = True
                        self.jobs.appendleft(job)
                        job = None
                        continue
                    text = f"connection to {self.dests[index]} lost: {_oneline(e)}"
                    self.state.connection_failed(self.owner.clock(), text)
                    results = dict.fromkeys(job.rcpts, deferred(text))
                self._finish(job, results)
                job = None
                self.pump()  # the window may have grown
        except asyncio.CancelledError:  # cut off by aclose(): the message stays queued
            for j in [job, *outstanding] if job is not None else outstanding:
                if not j.future.done():
                    j.future.set_result(dict.fromkeys(j.rcpts, deferred("the relay is shutting down", "4.3.2", 421)))
            if session is not None:
                session.abort()
                session = None
            raise
        except Exception as e:  # never let a worker die silently with callers waiting
            log.exception("onward delivery worker for %s crashed", self.dests[0])
            for j in [job, *outstanding] if job is not None else outstanding:
                if not j.future.done():
                    j.future.set_result(dict.fromkeys(j.rcpts, deferred(f"internal error: {_oneline(e)}", "4.3.0")))
        finally:
            self.workers.discard(me)
            if started:
                self.starting -= 1
            self.state.closed()
            self.owner.slots.release()
            if session is not None:
                await session.close()
            if self.jobs and not self.owner.closing:
                self.pump()

    async def _via_others(self, job: _Job, index: int, first: DeliveryResult) -> dict[str, DeliveryResult]:
        others = self.dests[index + 1:]
        session, err, _ = await self._connect(others)
        if session is None:
            return dict.fromkeys(job.rcpts, first)
        try:
            return await session.send(job.msg, job.rcpts)
        except SessionFailed as e:
            return dict.fromkeys(job.rcpts, e.result)
        except OSError as e:
            session.abort()
            return dict.fromkeys(job.rcpts, deferred(f"connection to {session.dest} lost: {_oneline(e)}"))
        finally:
            await session.close()

    def _defer_all(self, job: _Job | None, err: DeliveryResult) -> None:
        """The destination is dead: this job and everything queued behind it wait for a retry."""
        for j in [job, *self.jobs] if job is not None else list(self.jobs):
            self._finish(j, dict.fromkeys(j.rcpts, err), note=False)
        self.jobs.clear()

    def snapshot(self, now: float) -> dict:
        return self.state.snapshot(now, queued=len(self.jobs), sending=max(0, len(self.workers) - self.free),
                                   idle=self.waiting)


def _hms(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


# ---- the public face -------------------------------------------------------------------

class RemoteDelivery:
    """Delivers queued messages to other servers; one instance per running relay.

    ``await deliver_message(msg, recipients)`` → ``{recipient: DeliveryResult}``; ``await
    aclose()`` QUITs every open connection. ``connections_opened`` counts SMTP connections made,
    for tests and the benchmark; :meth:`destinations` is the per-destination state that
    ``relay queue list`` shows. The scheduling rules are in relay/queue/runner.py's docstring.
    """

    def __init__(self, cfg: RelayConfig, router: Router | None = None, *, idle_timeout: float = 5.0,
                 command_timeout: float | None = None, clock=time.time):
        self.cfg = cfg
        self.router = router or Router(cfg)
        self.idle_timeout = idle_timeout
        self.timeouts = timeouts_for(cfg, command_timeout)
        self.clock = clock
        self.closing = False
        self.connections_opened = 0
        self.pipelined = 0  # transactions sent with PIPELINING (RFC 2920)
        # on_sent(queue ID, recipients): called synchronously the moment a server accepted a
        # message, before the connection sends anything else (the queue runner records it)
        self.on_sent: Callable[[str, list[str]], None] | None = None
        self.slots = _Slots(self, cfg.delivery.max_connections)
        self._pools: dict[tuple[Destination, ...], _DestinationPool] = {}
        self._deferred_at: dict[str, tuple[Destination, ...]] = {}  # queue ID -> where it was last deferred
        self._tasks: set[asyncio.Task] = set()  # every worker ever started and not yet finished

    async def deliver_message(self, msg: OutboundMessage, recipients: Iterable[str]) -> dict[str, DeliveryResult]:
        rcpts = list(dict.fromkeys(recipients))
        if not rcpts:
            return {}
        if msg.data is not None:
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
            pool = self._pools.get(route.destinations)
            if pool is None:
                pool = self._pools[route.destinations] = _DestinationPool(self, route.destinations)
            pool.state.domains.add(domain)
        if by_route and self.closing:
            for group in by_route.values():
                results.update(dict.fromkeys(group, deferred("the relay is shutting down", "4.3.2", 421)))
            return results
        loop = asyncio.get_running_loop()
        waits = []
        for dests, group in by_route.items():
            job = _Job(msg, group, loop.create_future())
            self._pools[dests].submit(job)
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
        """The queue runner's hook: ``entry`` is a spool QueueEntry (sender, id, read_message()).
        The message bytes are read only when a connection is ready to send them, so a large
        backlog waiting for a slow destination costs no memory for its bodies."""
        return await self.deliver_message(OutboundMessage(entry.sender, None, entry.id, entry.read_message,
                                                          entry.size or INLINE_READ), recipients)

    # ---- what the queue runner and the control socket use -------------------------------

    def note_retry(self, queue_id: str, when: float) -> None:
        """The runner deferred ``queue_id`` until ``when``: count it as waiting at the
        destination that deferred it (``deferred until`` in ``relay queue list``)."""
        dests = self._deferred_at.pop(queue_id, None)
        pool = self._pools.get(dests) if dests else None
        if pool is not None:
            pool.state.waiting(queue_id, when)

    def forget(self, queue_id: str) -> None:
        """``queue_id`` left the queue."""
        self._deferred_at.pop(queue_id, None)
        for pool in self._pools.values():
            pool.state.forget(queue_id)

    def revive(self) -> None:
        """``relay queue flush``: try dead destinations again now."""
        for pool in self._pools.values():
            pool.state.revive()
            pool.state.retry_at.clear()

    def destinations(self) -> list[dict]:
        now = self.clock()
        return [p.snapshot(now) for p in sorted(self._pools.values(), key=lambda p: p.state.name)]

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
