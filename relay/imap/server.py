"""Thin asyncio glue around the sans-I/O IMAP core: sockets, TLS upgrade, IDLE wake-ups, timeouts.

Per connection: bytes from the socket go into a parser.CommandReader; each Command is run by a
session.Session whose output is written back. IDLE waits on the relay's ChangeBus (delivery,
APPEND, COPY/MOVE, EXPUNGE publish ``(user, folder)``), so a delivery reaches an idling client
in milliseconds instead of after a poll interval; a slow timer also catches files dropped into
the Maildir from outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import tempfile
from collections.abc import Awaitable, Callable

from relay.events import ChangeBus
from relay.imap.parser import MAX_LITERAL, BadInput, Command, CommandReader, ContinuationNeeded, RawLine
from relay.imap.session import Session
from relay.limits import ConnectionLimiter, listener_limiter, warn_limited
from relay.peer import is_loopback

log = logging.getLogger("relay.imap")

IDLE_RECHECK = 5.0       # seconds between cheap checks for outside changes while idling
SPOOL_LITERAL = 1 << 20  # literals from this size on are streamed to a temporary file
LOGIN_LITERAL = 8192     # largest literal before login (LOGIN/AUTHENTICATE need a few bytes;
                         # Dovecot's login process allows 4 KB): no megabytes from strangers


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, store, authenticate,
                 ssl_context, bus: ChangeBus | None, throttle, allow_plaintext, hostname: str,
                 idle_timeout: float, implicit_tls: bool, login_timeout: float = 60.0,
                 max_literal: int = MAX_LITERAL, spool_dir=None) -> None:
        self.reader, self.writer = reader, writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer = str(peer[0])
        plaintext_ok = allow_plaintext if allow_plaintext != "loopback" else is_loopback(self.peer)
        self.bus, self.idle_timeout = bus, idle_timeout
        self.login_timeout = min(login_timeout, idle_timeout)
        self.max_literal = max_literal
        self.spool_dir = spool_dir
        self.ssl_context = ssl_context
        self.session = Session(open_mailbox=store, authenticate=authenticate, hostname=hostname,
                               tls_active=implicit_tls, tls_available=ssl_context is not None and not implicit_tls,
                               allow_plaintext=bool(plaintext_ok), throttle=throttle, peer=self.peer)
        self.session.flush = self.flush
        self.session.max_append = max_literal      # a CATENATE result is a message too
        self.protocol = CommandReader(max_literal=min(LOGIN_LITERAL, max_literal))
        self.wake = asyncio.Event()
        self.changed: set[str] = set()      # folders the change bus named since the last look
        self._unsub: Callable[[], None] | None = None

    async def flush(self) -> None:
        data = self.session.take_output()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    def _on_change(self, user: str, folder: str) -> None:
        loop = self._loop
        loop.call_soon_threadsafe(self._woken, folder)

    def _woken(self, folder: str) -> None:
        self.changed.add(folder)
        self.wake.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            self.writer.write(self.session.greeting())
            await self.writer.drain()
            await self._serve()
        except TimeoutError:
            with contextlib.suppress(Exception):
                self.writer.write(b"* BYE Autologout; idle for too long\r\n")
                await asyncio.wait_for(self.writer.drain(), 1.0)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            if self._unsub:
                self._unsub()
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def _spool_literal(self, size: int) -> None:
        """Receive a big literal into an unlinked temporary file (0600, in the relay's data dir)
        so a slow upload holds 64 KB of memory, not the whole message, until it is complete."""
        with tempfile.TemporaryFile(dir=self.spool_dir) as f:
            head = self.protocol.take_buffered()
            f.write(head)
            got = len(head)
            while got < size:
                data = await asyncio.wait_for(self.reader.read(min(1 << 16, size - got)), self.idle_timeout)
                if not data:
                    raise ConnectionError("client went away during a literal")
                f.write(data)
                got += len(data)
            f.seek(0)
            literal = f.read()
        self.protocol.supply_literal(literal)

    async def _linger(self, seconds: float = 1.0, limit: int = 4 << 20) -> None:
        """After a BYE to a client that is still sending: send FIN, then read and drop its
        data for a moment, so closing does not reset the connection before the BYE is read."""
        with contextlib.suppress(Exception):
            if self.writer.can_write_eof():
                self.writer.write_eof()
            loop = asyncio.get_running_loop()
            end, dropped = loop.time() + seconds, 0
            while dropped < limit and (left := end - loop.time()) > 0:
                data = await asyncio.wait_for(self.reader.read(1 << 16), left)
                if not data:
                    break
                dropped += len(data)

    async def _read(self) -> bytes:
        timeout = self.login_timeout if self.session.user is None else self.idle_timeout
        if self.session.notify is not None:
            return await self._read_notifying(timeout)
        return await asyncio.wait_for(self.reader.read(65536), timeout)

    async def _read_notifying(self, timeout: float) -> bytes:
        """Wait for input while NOTIFY is on: store changes are told between commands as they
        happen (RFC 5465), woken by the change bus, never by polling."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        read_task = asyncio.ensure_future(self.reader.read(65536))
        try:
            while True:
                if self.wake.is_set():
                    self.wake.clear()
                    changed, self.changed = self.changed, set()
                    self.session.notify_poll(changed)
                    await self.flush()
                wake_task = asyncio.ensure_future(self.wake.wait())
                done, _ = await asyncio.wait({read_task, wake_task}, timeout=max(0.0, deadline - loop.time()),
                                             return_when=asyncio.FIRST_COMPLETED)
                wake_task.cancel()
                if read_task in done:
                    return read_task.result()
                if not done:
                    raise TimeoutError("idle timeout")
        finally:
            if not read_task.done():
                read_task.cancel()
                with contextlib.suppress(BaseException):
                    await read_task

    async def _serve(self) -> None:
        s = self.session
        while s.state != "logout":
            ev = self.protocol.next_event()
            if ev is None and (size := self.protocol.literal_pending()) >= SPOOL_LITERAL:
                await self._spool_literal(size)
                continue
            if ev is None:
                data = await self._read()
                if not data:
                    return
                self.protocol.receive_data(data)
                continue
            if isinstance(ev, ContinuationNeeded):
                self.writer.write(b"+ Ready for literal data\r\n")
                await self.writer.drain()
                continue
            if isinstance(ev, BadInput):
                too_big = ev.message.startswith("[TOOBIG]")
                if too_big and s.user is None and self.protocol._skip:
                    # a LITERAL+ literal over the pre-login limit is on its way: don't read it
                    warn_limited(log, "imap-prelogin-literal", "imap [%s]: literal too large before login; closing",
                                 self.peer)
                    self.writer.write(b"* BYE [TOOBIG] Literal too large before login\r\n")
                    await self.writer.drain()
                    await self._linger()
                    return
                self.writer.write(f"{ev.tag} BAD {ev.message}\r\n".encode())
                await self.writer.drain()
                continue
            if isinstance(ev, RawLine):
                if s.auth_tag is not None:
                    self.protocol.raw_lines = False
                    await s.auth_continue(ev.line)
                    await self._after_login()
                    await self.flush()
                continue
            assert isinstance(ev, Command)
            await s.handle(ev)
            await self.flush()
            if s.auth_tag is not None:
                self.protocol.raw_lines = True
            await self._after_login()
            if s.want_starttls:
                s.want_starttls = False
                await self._starttls()
            if s.idle_tag is not None:
                await self._idle()

    async def _after_login(self) -> None:
        s = self.session
        if s.user is not None:
            self.protocol.max_literal = self.max_literal   # APPEND up to max_message_size
        if s.user is not None and self._unsub is None and self.bus is not None:
            self._unsub = self.bus.subscribe(s.user, self._on_change)

    async def _starttls(self) -> None:
        if self.protocol._buf:
            # data pipelined after STARTTLS is a plaintext injection attempt (CVE-2011-0411 class)
            raise ConnectionError("data after STARTTLS")
        await self.writer.start_tls(self.ssl_context)
        self.session.tls_active = True
        self.session.tls_available = False

    async def _idle(self) -> None:
        s = self.session
        self.protocol.raw_lines = True
        read_task: asyncio.Task | None = None
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.idle_timeout
            while s.idle_tag is not None:
                ev = self.protocol.next_event()
                if ev is not None:
                    if isinstance(ev, RawLine):
                        s.idle_done(ev.line)
                        await self.flush()
                        break
                    continue
                if read_task is None:
                    read_task = asyncio.ensure_future(self.reader.read(65536))
                wake_task = asyncio.ensure_future(self.wake.wait())
                timeout = min(IDLE_RECHECK, max(0.0, deadline - loop.time()))
                done, _ = await asyncio.wait({read_task, wake_task}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                wake_task.cancel()
                if read_task in done:
                    data = read_task.result()
                    read_task = None
                    if not data:
                        raise ConnectionError("client went away while idling")
                    self.protocol.receive_data(data)
                    deadline = loop.time() + self.idle_timeout
                    continue
                if loop.time() >= deadline:
                    raise TimeoutError("idle timeout")
                self.wake.clear()
                s.sync(expunge=True)
                if s.notify is not None:
                    changed, self.changed = self.changed, set()
                    s.notify_poll(changed)
                await self.flush()
        finally:
            self.protocol.raw_lines = False
            if read_task is not None and not read_task.done():
                read_task.cancel()
                with contextlib.suppress(BaseException):
                    await read_task


async def start_imap_server(host: str, port: int, *, store: Callable, authenticate: Callable[[str, str], Awaitable[bool]],
                            ssl_context: ssl.SSLContext | None = None, bus: ChangeBus | None = None,
                            throttle=None, allow_plaintext: bool | str = "loopback",
                            hostname: str = "localhost", idle_timeout: float = 1800,
                            implicit_tls: bool = False, login_timeout: float = 60.0,
                            max_literal: int = MAX_LITERAL, spool_dir=None,
                            limiter: ConnectionLimiter | None = None, listen: dict | None = None) -> asyncio.Server:
    """Listen for IMAP on host:port (0 = any free port), or as ``listen`` says (a worker's
    inherited socket: relay/server.py listen_args).

    ``store(user) -> backend.Mailbox`` opens a user's mail; ``authenticate(user, password)``
    checks a login. ``allow_plaintext``: True, False, or "loopback" (LOGIN without TLS only from
    127.0.0.1 and ::1, see relay/peer.py). With ``implicit_tls`` the listener speaks TLS from the
    first byte (993). Before login a client has ``login_timeout`` seconds of silence and
    literals of LOGIN_LITERAL bytes; after it ``idle_timeout`` and ``max_literal`` (APPEND),
    literals from SPOOL_LITERAL bytes on arriving in a temporary file in ``spool_dir``.
    ``limiter`` caps open connections (over it: ``* BYE`` and close).
    """
    conns: set[asyncio.Task] = set()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ip = str((writer.get_extra_info("peername") or ("?",))[0])
        if limiter is not None and (why := limiter.admit(ip)) is not None:
            with contextlib.suppress(Exception):
                writer.write(f"* BYE {why}, try again later\r\n".encode())
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            return
        try:
            await _serve_client(reader, writer)
        finally:
            if limiter is not None:
                limiter.release(ip)

    async def _serve_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer, store=store, authenticate=authenticate, ssl_context=ssl_context,
                          bus=bus, throttle=throttle, allow_plaintext=allow_plaintext, hostname=hostname,
                          idle_timeout=idle_timeout, implicit_tls=implicit_tls, login_timeout=login_timeout,
                          max_literal=max_literal, spool_dir=spool_dir)
        task = asyncio.current_task()
        if task is not None:
            conns.add(task)
        try:
            await conn.run()
        except asyncio.CancelledError:
            # close() below ends the session: finish normally, since Python 3.11's
            # StreamReaderProtocol logs an error for a cancelled client_connected_cb task
            pass
        except Exception:  # a bug in one session must not take the listener down
            log.exception("IMAP session from %s failed", conn.peer)
        finally:
            if task is not None:
                conns.discard(task)

    where = listen or {"host": host, "port": port, "reuse_address": True}
    server = await asyncio.start_server(on_client, **where, ssl=ssl_context if implicit_tls else None, limit=1 << 20)
    server.imap_connections = conns  # type: ignore[attr-defined]
    plain_close = server.close

    def close() -> None:
        """Stop listening and end the open sessions (RelayServer.stop only calls close())."""
        plain_close()
        for t in list(conns):
            t.cancel()

    server.close = close  # type: ignore[method-assign]
    return server


async def start_for_relay(relay) -> asyncio.Server | None:
    """Open the IMAP listener of a relay.server.RelayServer (None when [listen] imap = "").

    Shares the relay's ChangeBus, auth throttle, TLS context and user database; the mailbox
    store is ``relay.mail_store``."""
    cfg = relay.cfg
    addr = cfg.listen.imap
    if addr is None:
        return None
    from relay.server import listen_args
    try:
        return await start_imap_server(
            addr.host, addr.port, store=relay.mail_store.user, authenticate=relay.authenticate,
            ssl_context=relay.ssl_context, bus=relay.bus, throttle=relay.throttle,
            allow_plaintext="loopback" if cfg.auth.allow_plaintext_loopback else False,
            hostname=cfg.hostname, idle_timeout=cfg.limits.idle_timeout, login_timeout=cfg.limits.login_timeout,
            max_literal=cfg.queue.max_message_size, spool_dir=cfg.data_dir,
            limiter=listener_limiter(cfg, "imap"), listen=listen_args(relay, "imap", addr))
    except OSError as e:
        from relay.server import ListenError
        raise ListenError(f"cannot listen for imap on {addr}: {e.strerror or e}"
                          " (is another relay running? change [listen] imap in relay.toml)") from None


async def stop_imap_server(server: asyncio.Server, grace: float = 2.0) -> None:
    """Close the listener and end open sessions (they get a BYE by losing the socket)."""
    conns: set[asyncio.Task] = getattr(server, "imap_connections", set())
    waiting = list(conns)
    server.close()
    if waiting:
        await asyncio.wait(waiting, timeout=grace)
    await server.wait_closed()
