"""asyncio glue for the POP3 server: sockets, TLS upgrade, timeouts, the per-maildrop lock, and
store/auth calls on behalf of the pure state machine in relay/pop3/protocol.py.

Blocking work (password hashing inside ``authenticate`` is the caller's business; store reads,
flag updates and expunges here) runs in worker threads so one slow session never stalls the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import weakref
from collections.abc import Awaitable, Callable

from relay.pop3.protocol import (MAX_LINE, Authenticate, Fetch, Maildrop, Message, Pop3Machine,
                                 Reply, StartTLS, Update, err, uidl_for)
from relay.limits import ConnectionLimiter, listener_limiter
from relay.peer import is_loopback
from relay.store import MailStore, StoreError

log = logging.getLogger("relay.pop3")
Authenticator = Callable[[str, str], Awaitable[bool]]
_IN_USE: "weakref.WeakKeyDictionary[MailStore, set[str]]" = weakref.WeakKeyDictionary()


async def start_pop3_server(host: str, port: int, *, store: MailStore, authenticate: Authenticator,
                            ssl_context: ssl.SSLContext | None, throttle=None,
                            allow_plaintext: bool = True, hostname: str = "localhost",
                            idle_timeout: float = 600.0, login_timeout: float = 60.0,
                            limiter: ConnectionLimiter | None = None,
                            implicit_tls: bool = False, listen: dict | None = None) -> asyncio.Server:
    """Listen for POP3 on host:port (port 0: any free port), or as ``listen`` says (a worker's
    inherited socket: relay/server.py listen_args).

    ``authenticate(user, password) -> bool`` checks credentials; ``throttle`` (a
    relay.users.AuthThrottle) slows guessing per client IP and account. ``ssl_context``
    enables STLS.
    ``allow_plaintext``: USER/PASS without TLS from loopback clients (never from others).
    ``login_timeout``/``idle_timeout``: silence allowed before/after login; ``limiter`` caps
    open connections (over it: ``-ERR [SYS/TEMP]`` and close).
    ``implicit_tls``: TLS from the first byte (POP3S, port 995) with ``ssl_context``.
    """
    in_use = _IN_USE.setdefault(store, set())
    sessions: set[Pop3Session] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ip = str((writer.get_extra_info("peername") or ("?",))[0])
        if limiter is not None and (why := limiter.admit(ip)) is not None:
            with contextlib.suppress(Exception):
                writer.write(err(f"[SYS/TEMP] {why}, try again later"))
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            return
        try:
            await serve(reader, writer)
        finally:
            if limiter is not None:
                limiter.release(ip)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Pop3Session(reader, writer, store=store, authenticate=authenticate,
                              ssl_context=ssl_context, throttle=throttle,
                              allow_plaintext=allow_plaintext, hostname=hostname,
                              idle_timeout=idle_timeout, in_use=in_use, login_timeout=login_timeout)
        sessions.add(session)
        try:
            await session.run()
        finally:
            sessions.discard(session)

    where = listen or {"host": host, "port": port}
    server = await asyncio.start_server(handle, **where, limit=MAX_LINE * 4,
                                        ssl=ssl_context if implicit_tls else None)
    # Closing the listener also ends the open sessions (without UPDATE: nothing is deleted),
    # so RelayServer.stop's generic close() + wait_closed() leaves no session behind.
    close_listener = server.close

    def close() -> None:
        close_listener()
        for s in list(sessions):
            s.shutdown()

    server.close = close  # type: ignore[method-assign]
    server.pop3_sessions = sessions  # type: ignore[attr-defined]
    return server


class Pop3Session:
    def __init__(self, reader, writer, *, store: MailStore, authenticate: Authenticator,
                 ssl_context, throttle, allow_plaintext: bool, hostname: str, idle_timeout: float,
                 in_use: set[str], login_timeout: float = 60.0) -> None:
        self.reader, self.writer = reader, writer
        self.store, self.authenticate, self.throttle = store, authenticate, throttle
        self.ssl_context = ssl_context
        self.idle_timeout, self.login_timeout = idle_timeout, min(login_timeout, idle_timeout)
        self.in_use = in_use
        self.locked: str | None = None
        self.drop_lock = None           # relay.store.userlock.MaildropLock while logged in
        self.user_store = None
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.ip = peer[0]
        self.machine = Pop3Machine(hostname=hostname, tls_active=writer.get_extra_info("sslcontext") is not None,
                                   tls_available=ssl_context is not None,
                                   plaintext_allowed=allow_plaintext and is_loopback(self.ip))

    def shutdown(self) -> None:
        """The server is stopping: say so (best effort) and drop the connection."""
        if not self.writer.is_closing():
            try:
                self.writer.write(err("[SYS/TEMP] server shutting down"))
            except (ConnectionError, RuntimeError):
                pass
            self.writer.close()

    async def run(self) -> None:
        try:
            await self._send(self.machine.greeting())
            while True:
                line = await self._read_line()
                if line is None:
                    break
                out = self.machine.receive_line(line)
                reply = await self._fulfil(out)
                if reply is None:
                    continue
                if reply.data:
                    await self._send(reply.data)
                if reply.close:
                    break
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as e:
            log.info("pop3 [%s]: connection lost: %s", self.ip, e)
        finally:
            if self.locked is not None:
                self.in_use.discard(self.locked)
                self.locked = None
            if self.drop_lock is not None:
                self.drop_lock.release()
                self.drop_lock = None
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, ssl.SSLError):
                pass

    async def _send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def _read_line(self) -> bytes | None:
        try:
            timeout = self.login_timeout if self.user_store is None else self.idle_timeout
            return await asyncio.wait_for(self._readline(), timeout)
        except asyncio.TimeoutError:
            await self._send(err("autologout; idle for too long"))
            return None

    async def _readline(self) -> bytes | None:
        """One line, or None at EOF; an overlong line is discarded and answered with -ERR."""
        try:
            line = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError as e:
            await self.reader.readexactly(e.consumed)
            while True:
                try:
                    await self.reader.readuntil(b"\n")
                    break
                except asyncio.LimitOverrunError as e2:
                    await self.reader.readexactly(e2.consumed)
            return b"X" * (MAX_LINE + 1)
        return line

    # -------------------------------------------------------------- requests from the machine
    async def _fulfil(self, out) -> Reply | None:
        if isinstance(out, Reply):
            return out
        if isinstance(out, Authenticate):
            return await self._authenticate(out)
        if isinstance(out, Fetch):
            return await self._fetch(out)
        if isinstance(out, StartTLS):
            # Plaintext pipelined after STLS must not count as said under TLS (the STARTTLS
            # command-injection attack, CVE-2011-0411 and kin): drop whatever is buffered.
            buffered = len(getattr(self.reader, "_buffer", b""))
            if buffered:
                log.warning("pop3 [%s]: %d bytes sent after STLS before the handshake dropped",
                            self.ip, buffered)
                self.reader._buffer.clear()  # type: ignore[attr-defined]
            await self._send(out.reply)
            await self.writer.start_tls(self.ssl_context)
            self.machine.tls_started()
            return None
        if isinstance(out, Update):
            return await self._update(out)
        raise TypeError(f"unexpected machine output {out!r}")

    async def _authenticate(self, req: Authenticate) -> Reply:
        try:
            if self.throttle is not None:
                good = await self.throttle.check(self.ip, req.user, lambda: self.authenticate(req.user, req.password))
            else:
                good = await self.authenticate(req.user, req.password)
        except Exception:   # a broken user database must not kill the server
            log.exception("pop3 [%s]: authentication backend failed", self.ip)
            return self.machine.auth_result(req.user, None, "[SYS/TEMP] authentication unavailable")
        if not good:
            log.warning("pop3 [%s]: %s authentication failed for %s", self.ip, req.mechanism,
                        req.user[:64] or "<empty>")
            return self.machine.auth_result(req.user, None, "[AUTH] authentication failed")
        address = req.user.strip().lower()
        if address in self.in_use:
            return self.machine.auth_result(req.user, None, "[IN-USE] maildrop is locked by another session")
        self.in_use.add(address)
        self.locked = address
        try:
            self.user_store = await asyncio.to_thread(self.store.user, address)
            # the in_use set above is this process; the flock is every relay process (workers)
            self.drop_lock = self.user_store.maildrop_lock()
            if self.drop_lock is None:
                self.in_use.discard(address)
                self.locked = None
                return self.machine.auth_result(req.user, None, "[IN-USE] maildrop is locked by another session")
            maildrop = await asyncio.to_thread(_load_maildrop, self.user_store)
        except (StoreError, OSError) as e:
            self.in_use.discard(address)
            self.locked = None
            if self.drop_lock is not None:
                self.drop_lock.release()
                self.drop_lock = None
            log.error("pop3 [%s]: cannot open the maildrop of %s: %s", self.ip, address, e)
            return self.machine.auth_result(req.user, None, "[SYS/TEMP] cannot open the maildrop")
        log.info("pop3 [%s]: %s logged in (%s), %d messages", self.ip, address, req.mechanism,
                 len(maildrop.messages))
        return self.machine.auth_result(address, maildrop)

    async def _fetch(self, req: Fetch) -> Reply:
        u = self.user_store

        def read() -> bytes | None:
            try:
                data = u.read("INBOX", req.uid)
                if req.lines is None:
                    u.set_flags("INBOX", [req.uid], "add", ["\\Seen"])
                return data
            except StoreError:
                return None

        return self.machine.fetched(req, await asyncio.to_thread(read))

    async def _update(self, req: Update) -> Reply:
        if not req.uids:
            return self.machine.update_result(0)
        try:
            removed = await asyncio.to_thread(self.user_store.expunge, "INBOX", req.uids, force=True)
        except (StoreError, OSError) as e:
            log.error("pop3 [%s]: expunge failed for %s: %s", self.ip, self.locked, e)
            return self.machine.update_result(0, str(e))
        return self.machine.update_result(len(req.uids))


def _load_maildrop(u) -> Maildrop:
    st = u.state("INBOX")
    return Maildrop([Message(r.uid, r.vsize, uidl_for(st.uidvalidity, r.uid))
                     for r in u.records("INBOX", st.uids)])


async def start_for_relay(relay) -> asyncio.Server | None:
    """Open the POP3 listener of a relay.server.RelayServer (None when [listen] pop3 = "").

    Shares the relay's user database, auth throttle and TLS context; the mailbox store is
    ``relay.mail_store``."""
    cfg = relay.cfg
    addr = cfg.listen.pop3
    if addr is None:
        return None
    from relay.server import listen_args
    try:
        return await start_pop3_server(addr.host, addr.port, store=relay.mail_store,
                                       authenticate=relay.authenticate, ssl_context=relay.ssl_context,
                                       throttle=relay.throttle,
                                       allow_plaintext=cfg.auth.allow_plaintext_loopback,
                                       hostname=cfg.hostname, idle_timeout=min(cfg.limits.idle_timeout, 600.0),
                                       login_timeout=cfg.limits.login_timeout,
                                       limiter=listener_limiter(cfg, "pop3"),
                                       listen=listen_args(relay, "pop3", addr))
    except OSError as e:
        from relay.server import ListenError
        raise ListenError(f"cannot listen for pop3 on {addr}: {e.strerror or e}"
                          " (is another relay running? change [listen] pop3 in relay.toml)") from None
