"""RelayServer: the relay's lifecycle — open listeners, run the queue, shut down gracefully.

``await RelayServer(cfg).start()`` creates the data dir, loads users, makes the TLS context,
recovers the queue, starts the queue runner and opens the SMTP listeners (port 0 allowed;
the bound addresses land in ``server.addresses`` and in ``relay.state.json``). ``await stop()``
closes the listeners, lets open SMTP transactions finish (up to ``grace`` seconds), stops the
runner after its attempts in progress, and removes the state file.

Other protocols (IMAP, POP3) add their ``asyncio.Server`` objects to ``self.extra_servers`` in
the marked place in :meth:`start`; :meth:`stop` closes them.

Roles (issue 14, relay/workers.py): ``"single"`` is all of the above in one process.
``"master"`` owns the queue (spool recovery, runner, onward delivery, DSNs, control socket) and
opens no listener of its own; ``"worker"`` serves SMTP/submission/IMAP/POP3 on listening
sockets it inherited (``listen_sockets``, name → socket) and owns no queue: its SMTP handlers
store queue files and call ``on_queued(entry)`` (the worker tells the master).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path

from relay.config import Address, RelayConfig
from relay.control import QueueServices, start_queue_services
from relay.errors import RelayError
from relay.events import ChangeBus
from relay.private import private_dir
from relay.queue.runner import QueueRunner
from relay.queue.spool import Spool
from relay.smtp.handlers import RelayHandler
from relay.store.registry import MailStore
from relay.tls import server_context
from relay.users import AuthThrottle, UserDB


class ListenError(RelayError):
    """A listener could not be opened (port in use, no permission)."""


ACCEPT_BURST = 1       # connections a worker accepts per wake-up: the least busy worker takes most


def listen_args(relay, name: str, addr: Address) -> dict:
    """Keyword arguments for ``create_server``/``start_server``: host and port, or the
    inherited socket of a worker (accepting one connection per wake-up, so the kernel's wake-up
    of every waiting worker spreads new connections over the workers instead of one taking a
    burst; relay/workers.py restores the listen backlog afterwards)."""
    sock = getattr(relay, "listen_sockets", {}).get(name)
    if sock is None:
        return {"host": addr.host, "port": addr.port, "reuse_address": True}
    return {"sock": sock, "backlog": ACCEPT_BURST}


async def open_listener(name: str, addr: Address, factory, relay=None) -> asyncio.Server:
    kw = listen_args(relay, name, addr)
    try:
        return await asyncio.get_running_loop().create_server(factory, **kw)
    except OSError as e:
        raise ListenError(f"cannot listen for {name} on {addr}: {e.strerror or e}"
                          " (is another relay running? change [listen] " + name + " in relay.toml)") from None


def bound_address(server: asyncio.Server) -> tuple[str, int]:
    sock = server.sockets[0]
    host, port = sock.getsockname()[:2]
    return host, port


class RelayServer:
    def __init__(self, cfg: RelayConfig, *, throttle: AuthThrottle | None = None, grace: float = 10.0,
                 role: str = "single", listen_sockets: dict[str, socket.socket] | None = None,
                 on_queued=None):
        if role not in ("single", "master", "worker"):
            raise ValueError(f"unknown role {role!r}")
        self.cfg = cfg
        self.role = role
        self.listen_sockets = dict(listen_sockets or {})
        self.on_queued = on_queued    # worker: called with each committed QueueEntry
        self.spool_factory = Spool
        self.grace = grace
        self.bus = ChangeBus()
        self.throttle = throttle or AuthThrottle()
        self.users: UserDB = UserDB(cfg.users_file)
        self.spool: Spool | None = None
        self.runner: QueueRunner | None = None
        self.queue_services: QueueServices | None = None
        self.ssl_context = None
        self.addresses: dict[str, tuple[str, int]] = {}
        self.smtp_handlers: dict[str, RelayHandler] = {}
        self.servers: dict[str, asyncio.Server] = {}
        self.extra_servers: list[asyncio.Server] = []  # IMAP, POP3, … (closed on stop)
        self.mail_store: MailStore | None = None      # users' mailboxes, shared by IMAP and POP3
        self.sink = None                               # relay/sink/service.py SinkService in sink mode
        self.started = False

    async def start(self) -> None:
        cfg = self.cfg
        for d in (cfg.data_dir, cfg.queue_dir, cfg.mail_dir):
            private_dir(d)   # 0700: queue files, mailboxes and the log are nobody else's
        self.ssl_context = await asyncio.to_thread(server_context, cfg)
        self.spool = self.spool_factory(cfg.queue_dir)
        self.mail_store = MailStore(cfg.mail_dir, self.bus)
        if self.role == "worker":
            await self._start_listeners()
            self.started = True
            return
        self.runner = QueueRunner(cfg, self.spool, self.bus, self.users)
        # issue 6: onward SMTP delivery, DSNs and the control socket (relay/control.py)
        self.queue_services = await start_queue_services(self)
        if cfg.sink.enabled:   # issue 15: catch everything, deliver nothing onward
            from relay.sink.service import SinkService
            self.sink = SinkService(self)
            self.sink.prepare()
            self.sink.no_onward()
        await self.runner.start()
        self.started = True
        if self.role == "single":
            await self._start_listeners()
            self.write_state()   # the master writes its own, with the workers (relay/workers.py)

    async def _start_listeners(self) -> None:
        cfg = self.cfg
        on_queued = self.on_queued if self.role == "worker" else self.runner.add
        try:
            for name, addr, submission in (("smtp", cfg.listen.smtp, False),
                                           ("submission", cfg.listen.submission, True)):
                if addr is None:
                    continue
                handler = (self.sink.smtp_handler(name, addr, submission) if self.sink else
                           RelayHandler(cfg, self.spool, self.users, self.throttle, submission=submission,
                                        on_queued=on_queued))
                self.smtp_handlers[name] = handler
                srv = await open_listener(name, addr, handler.factory(self.ssl_context), self)
                self.servers[name] = srv
                self.addresses[name] = bound_address(srv)

            # ---- other protocols: IMAP / POP3 listeners go here ---------------------------------
            # e.g. srv = await start_imap_server(self, ...); self.extra_servers.append(srv)
            #      self.addresses["imap"] = bound_address(srv)
            from relay.imap.server import start_for_relay as start_imap
            if (srv := await start_imap(self)) is not None:
                self.extra_servers.append(srv)
                self.addresses["imap"] = bound_address(srv)
            from relay.pop3.server import start_for_relay as start_pop3
            if (srv := await start_pop3(self)) is not None:
                self.extra_servers.append(srv)
                self.addresses["pop3"] = bound_address(srv)
            if self.sink is not None and (bound := await self.sink.start_http()) is not None:
                self.addresses["http"] = bound
            from relay.tls_listeners import start_implicit_tls  # [listen] imaps/pop3s/submissions
            await start_implicit_tls(self)
            # -------------------------------------------------------------------------------------
        except BaseException:
            await self.stop()
            raise

    def write_state(self, **extra) -> None:
        state = {"pid": os.getpid(), "started": time.time(), "hostname": self.cfg.hostname,
                 "listeners": {k: list(v) for k, v in self.addresses.items()}, **extra}
        path = self.cfg.state_file
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")
        os.replace(tmp, path)

    async def stop(self) -> None:
        """Graceful: stop accepting, finish open transactions, stop the runner, close all."""
        # IMAP sessions are cancelled by their server's close(); wait for them to end, or the
        # loop may close first and leave their sockets open (ResourceWarning, asyncio errors)
        sessions = [t for srv in self.extra_servers for t in list(getattr(srv, "imap_connections", ()))]
        for srv in list(self.servers.values()) + self.extra_servers:
            srv.close()
        await asyncio.gather(*(h.drain(self.grace) for h in self.smtp_handlers.values()))
        for srv in list(self.servers.values()) + self.extra_servers:
            await srv.wait_closed()
        if sessions:
            await asyncio.wait(sessions, timeout=self.grace)
        if self.sink is not None:
            await self.sink.close()
        if self.queue_services is not None:
            await self.queue_services.close()
            self.queue_services = None
        if self.runner is not None:
            await self.runner.stop(self.grace)
            self.runner = None
        if self.spool is not None:
            self.spool.close()
        self.servers.clear()
        self.extra_servers.clear()
        if self.mail_store is not None:
            self.mail_store.close()
            self.mail_store = None
        if self.started and self.role != "worker":
            try:
                state = json.loads(self.cfg.state_file.read_text())
                if state.get("pid") == os.getpid():
                    self.cfg.state_file.unlink()
            except (OSError, ValueError):
                pass
        self.started = False

    async def authenticate(self, user: str, password: str) -> bool:
        """Check a login for IMAP/POP3 (scrypt is slow on purpose: off the event loop)."""
        return await asyncio.to_thread(self.users.authenticate, user, password)

    async def __aenter__(self) -> RelayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


def read_state(cfg: RelayConfig) -> dict | None:
    """The running relay's state file, or None if absent/unreadable."""
    try:
        return json.loads(Path(cfg.state_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, exited but not yet reaped, counts as gone)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def can_connect(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
