"""The multi-process relay (issue 14): one master, N workers, so the relay uses every core.

``[process] workers = "auto" | N`` (relay.toml). With one worker the relay is one process,
exactly :class:`~relay.server.RelayServer` with ``role="single"``. With more, ``tui-mail relay
start`` runs a **master** (:class:`Master`) that

* binds every listening socket once (:func:`bind_listeners`), so port 0 and "port in use" work
  and are reported once, as before;
* owns the queue: spool recovery, the one :class:`~relay.queue.runner.QueueRunner` (local and
  onward delivery, DSNs, retry schedule, per-destination windows), the control socket and
  ``relay.state.json`` (which lists the workers);
* starts N **workers**, each a fresh ``python -m relay _worker`` subprocess that inherits the
  listening sockets (``pass_fds``) and serves SMTP, submission, IMAP, POP3 and the implicit-TLS
  ports on them with its own asyncio loop (``RelayServer(role="worker")``). The kernel wakes
  every process waiting on a listening socket and one wins each ``accept()``; a worker accepts
  one connection per wake-up (relay/server.py ``ACCEPT_BURST``) and then leaves the next ones
  to the other workers for 2 ms (:class:`TakeTurnsSocket`), so a burst of connections is shared
  out instead of going to whichever worker woke first;
* restarts a worker that dies, with back-off (0.2 s doubling to 10 s; reset after 30 s up);
* on SIGTERM (``relay stop``) stops accepting, SIGTERMs the workers (each finishes its open
  SMTP transactions within the grace time and exits), then stops the runner and removes the
  state file.

**Hand-over of accepted mail.** A worker's SMTP handler writes the queue file as a single
process does (unique ID, fsync of file and directory before the 250; the group commit runs in
the worker's loop, relay/queue/spool.py :class:`LoopCommitSpool`), then writes ``queued <ID>``
(one line per commit batch) on its link to the master, a Unix stream socketpair made per worker
at spawn (one end passed with ``pass_fds``: no path, no permissions to get wrong, no datagram
queue limit — Linux allows 10 datagrams in a Unix datagram socket's queue by default). The
master loads the entry (:meth:`QueueRunner.adopt`) and delivers at once. The master also
rescans the spool every ``RESCAN_INTERVAL`` seconds and at start, so a lost notice (a worker
killed between its fsync and the write) only delays a message, never loses it. Nothing the
master does is in the 250's path.

**Why this design.** *Not SO_REUSEPORT*: each worker would bind its own socket, so port 0
could not work (every worker would get another port), "port in use" would be discovered N
times, and connections waiting in a dying worker's accept queue are reset; one socket bound
by the master and shared keeps them queued for the surviving workers. *Not fork()*: the
master runs an event loop with threads (the spool writer, delivery executors); forking such a
process copies locks held by other threads and the loop's selector state, which Python warns
about and which deadlocks in practice. A fresh interpreter per worker costs ~0.4 s at start and
shares nothing by accident. *One queue owner*: the retry heap, the per-destination windows
and dead-destination state are per relay, so the runner lives in one process only.

**Shared by all workers** (tables all workers map, relay/sharedlimits.py): the ``[limits]``
connection caps, so ``max_connections`` and ``max_connections_per_ip`` mean what they say for
the whole relay; the failed-login counts of the AUTH/LOGIN throttle, per client address and per
account, so guessing through several workers is slowed as through one. **Per worker** (each
has its own copy): the throttle's one-attempt-at-a-time lock per address and its "logged in
here before" exemption; the verified-login cache; the in-process ChangeBus, which relay/feed.py (started in the master and
in every worker) bridges to the other processes, so IDLE hears of a delivery by the master or a
change made through another worker at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from relay.config import RelayConfig
from relay.errors import RelayError
from relay.log import maillog
from relay.private import private_dir
from relay.queue.spool import LoopCommitSpool
from relay.sharedlimits import SharedAuthThrottle, SharedTable

log = logging.getLogger("relay.workers")

AUTO_MAX = 4              # "auto": os.cpu_count(), at most this many workers
LISTEN_BACKLOG = 1024     # the kernel's accept queue of each shared listening socket
READY_TIMEOUT = 30.0      # seconds for the workers to come up at start
RESCAN_INTERVAL = 2.0     # seconds between the master's spool rescans (lost notices)
BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 0.2, 10.0, 30.0
STOP_EXTRA = 5.0          # seconds past the grace time before a stopping worker is killed
LISTENERS = ("smtp", "submission", "imap", "pop3", "imaps", "pop3s", "submissions")
_QID = re.compile(r"[0-9A-F]{8,40}")


def worker_count(cfg: RelayConfig) -> int:
    """How many worker processes ``cfg`` asks for (1 = a single process). The sink is one process."""
    if cfg.sink.enabled:
        return 1
    w = cfg.process.workers
    if w == "auto":
        return max(1, min(os.cpu_count() or 1, AUTO_MAX))
    return int(w)


def bind_listeners(cfg: RelayConfig) -> dict[str, socket.socket]:
    """Bind and listen on every configured listener once (the master); ListenError otherwise.

    A host name with several addresses binds its first IPv4 one (else its first)."""
    from relay.server import ListenError

    out: dict[str, socket.socket] = {}
    try:
        for name in LISTENERS:
            addr = getattr(cfg.listen, name)
            if addr is None:
                continue
            try:
                infos = socket.getaddrinfo(addr.host, addr.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
                family, _, proto, _, sockaddr = next((i for i in infos if i[0] == socket.AF_INET), infos[0])
                s = socket.socket(family, socket.SOCK_STREAM, proto)
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if family == socket.AF_INET6:
                        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s.bind(sockaddr)
                    s.listen(LISTEN_BACKLOG)
                    s.setblocking(False)
                except BaseException:
                    s.close()
                    raise
            except OSError as e:
                raise ListenError(f"cannot listen for {name} on {addr}: {e.strerror or e}"
                                  f" (is another relay running? change [listen] {name} in relay.toml)") from None
            out[name] = s
    except BaseException:
        for s in out.values():
            s.close()
        raise
    return out


# ---- the master ------------------------------------------------------------------------------

@dataclass
class WorkerSlot:
    index: int
    proc: asyncio.subprocess.Process | None = None
    link: socket.socket | None = None        # the master's end of the socketpair
    reader_task: asyncio.Task | None = None
    started: float = 0.0
    restarts: int = 0
    ready: asyncio.Event | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class Master:
    """The daemon process of a multi-process relay (module doc). ``start()``/``stop()`` and
    ``addresses`` as :class:`~relay.server.RelayServer` has, so the CLI runs either."""

    def __init__(self, cfg: RelayConfig, workers: int, *, grace: float = 10.0, log_stderr: bool = False):
        from relay.server import RelayServer

        self.cfg = cfg
        self.n = workers
        self.grace = grace
        self.log_stderr = log_stderr
        self.core = RelayServer(cfg, role="master", grace=grace)
        self.sockets: dict[str, socket.socket] = {}
        self.addresses: dict[str, tuple[str, int]] = {}
        self.slots = [WorkerSlot(i + 1) for i in range(workers)]
        self.started_at = time.time()
        self.stopping = False
        self.feed = None
        self.adopted = 0            # entries taken in from workers' notices
        self.rescued = 0            # entries the rescan found that no notice announced
        self._tasks: set[asyncio.Task] = set()

    # -- lifecycle --

    async def start(self) -> None:
        private_dir(self.cfg.data_dir)
        self.sockets = bind_listeners(self.cfg)    # before anything else: "port in use" fails fast
        private_dir(run_dir(self.cfg))
        SharedTable.create(limits_table(self.cfg), self.n)
        SharedAuthThrottle.create(auth_table(self.cfg))
        self.addresses = {k: tuple(s.getsockname()[:2]) for k, s in self.sockets.items()}
        try:
            await self.core.start()   # TLS certificate made once here, spool recovered, runner, control
            self.feed = await _start_feed(self.cfg, self.core.bus)   # local deliveries → workers' IDLE
            for slot in self.slots:
                await self._spawn(slot)
            await self._wait_ready()
            self._task(self._rescan_loop(), "spool-rescan")
            for slot in self.slots:
                self._task(self._watch(slot), f"watch-worker-{slot.index}")
        except BaseException:
            await self.stop()
            raise
        self.write_state()

    def _task(self, coro, name: str) -> asyncio.Task:
        t = asyncio.create_task(coro, name=name)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        for slot in self.slots:
            while not slot.ready.is_set():
                if slot.proc.returncode is not None:
                    raise RelayError(f"worker {slot.index} exited at start (status {slot.proc.returncode});"
                                     " see relay.stderr and relay.log in the data dir")
                if time.monotonic() > deadline:
                    raise RelayError(f"worker {slot.index} did not come up within {READY_TIMEOUT:.0f}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(slot.ready.wait(), 0.1)

    async def _spawn(self, slot: WorkerSlot) -> None:
        cfg = self.cfg
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = {name: s.fileno() for name, s in self.sockets.items()}
        args = [sys.executable, "-m", "relay", "_worker", "--data-dir", str(cfg.data_dir),
                *(["--config", str(cfg.path)] if cfg.path else []),
                "--index", str(slot.index), "--workers", str(self.n), "--master", str(os.getpid()),
                "--link", str(theirs.fileno()), "--fds", ",".join(f"{k}={v}" for k, v in fds.items())]
        if self.log_stderr:
            args.append("--log-stderr")
        try:
            slot.proc = await asyncio.create_subprocess_exec(
                *args, pass_fds=[*fds.values(), theirs.fileno()], stdin=subprocess.DEVNULL)
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        slot.link, slot.started, slot.ready = mine, time.time(), asyncio.Event()
        slot.reader_task = self._task(self._read_link(slot, mine), f"link-worker-{slot.index}")

    async def _read_link(self, slot: WorkerSlot, sock: socket.socket) -> None:
        """Notices from one worker: ``ready <pid>``, ``queued <ID> [<ID>…]``, one per line."""
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        runner = self.core.runner
        try:
            while line := await reader.readline():
                word, _, rest = line.decode("ascii", "replace").strip().partition(" ")
                if word == "queued" and runner is not None:
                    for qid in rest.split():
                        if _QID.fullmatch(qid) and runner.adopt(qid):
                            self.adopted += 1
                elif word == "ready":
                    slot.ready.set()
        except (ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def _watch(self, slot: WorkerSlot) -> None:
        """Restart the worker in ``slot`` whenever it dies, with back-off."""
        delay = BACKOFF_FIRST
        while True:
            rc = await slot.proc.wait()
            if self.stopping:
                return
            up = time.time() - slot.started
            if up > STABLE_AFTER:
                delay = BACKOFF_FIRST
            maillog().warning("warning: worker %d (pid %d) exited (%s) after %.1fs; restarting in %.1fs",
                              slot.index, slot.proc.pid, _exit_text(rc), up, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
            if self.stopping:
                return
            try:
                await self._spawn(slot)
            except OSError as e:
                maillog().error("error: cannot restart worker %d: %s", slot.index, e)
                continue
            slot.restarts += 1
            self.write_state()
            await self.rescan()   # whatever the dead worker committed without a notice

    async def rescan(self) -> int:
        """Adopt every queue file the runner does not know (lost notices); returns how many."""
        runner = self.core.runner
        if runner is None or self.core.spool is None:
            return 0
        ids = await asyncio.to_thread(self.core.spool.ids)
        n = sum(1 for qid in ids if runner.adopt(qid))
        if n:
            self.rescued += n
            maillog().info("queue: %d message(s) taken in by the spool rescan", n)
        return n

    async def _rescan_loop(self) -> None:
        while not self.stopping:
            await asyncio.sleep(RESCAN_INTERVAL)
            try:
                await self.rescan()
            except OSError as e:
                log.warning("spool rescan failed: %s", e)

    def write_state(self) -> None:
        self.core.addresses = dict(self.addresses)
        self.core.write_state(started=self.started_at, workers=[
            {"index": s.index, "pid": s.pid, "started": s.started, "restarts": s.restarts}
            for s in self.slots if s.proc is not None])

    async def stop(self) -> None:
        """Graceful: workers stop accepting and finish open transactions, then the queue stops."""
        self.stopping = True
        for t in list(self._tasks):
            if t.get_name().startswith(("spool-rescan", "watch-worker")):
                t.cancel()
        procs = [s.proc for s in self.slots if s.proc is not None and s.proc.returncode is None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        if procs:
            done, pending = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in procs],
                                               timeout=self.grace + STOP_EXTRA)
            for p in procs:
                if p.returncode is None:
                    maillog().warning("warning: worker pid %d did not stop in time; killed", p.pid)
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
            if pending:
                await asyncio.wait(pending, timeout=5)
        # the last notices: workers have exited, their links are at EOF after what they sent
        readers = [s.reader_task for s in self.slots if s.reader_task is not None]
        if readers:
            await asyncio.wait(readers, timeout=2)
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        await self.core.stop()
        if self.feed is not None:
            self.feed.close()
            self.feed = None
        for s in self.sockets.values():
            s.close()
        self.sockets.clear()

    async def __aenter__(self) -> Master:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


def _exit_text(rc: int) -> str:
    if rc < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-rc).name}"
    return f"status {rc}"


# ---- a worker ----------------------------------------------------------------------------------

class TakeTurnsSocket(socket.socket):
    """A worker's copy of a shared listening socket that, after accepting a connection, leaves
    the next ones to the other workers for up to ``TURN`` seconds.

    Every worker waiting on a listening socket is woken by a new connection, but the one that
    wins the first ``accept()`` is back in ``accept()`` first for the next: measured, 10
    connections arriving together went 10:0 or 9:1 to one of two workers. Declining (as "no
    connection waiting") right after an accept hands a burst out in turns; the decline ends
    after ``TURN``, so a connection that no other worker takes (they are busy) waits at most
    that long, and the declining worker's loop polls the socket meanwhile (a short busy wait,
    only while a connection is waiting)."""

    TURN = 0.002
    _next = 0.0

    def accept(self):
        if time.monotonic() < self._next:
            raise BlockingIOError(11, "another worker's turn")
        conn = super().accept()
        self._next = time.monotonic() + self.TURN
        return conn


class MasterLink:
    """A worker's end of its link to the master: ``queued`` notices, written without waiting
    (the transport buffers; a dead master only means the notices are lost, and the master's
    next start recovers the spool)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.writer: asyncio.StreamWriter | None = None
        self.lost = 0
        self._ids: list[str] = []     # queued IDs of this loop turn: one line, one write(2)

    async def open(self) -> None:
        _, self.writer = await asyncio.open_connection(sock=self.sock)

    def send(self, line: str) -> None:
        w = self.writer
        if w is None or w.is_closing():
            self.lost += 1
            return
        try:
            w.write(line.encode("ascii") + b"\n")
        except (OSError, RuntimeError):
            self.lost += 1

    def queued(self, entry) -> None:
        if not self._ids:
            asyncio.get_running_loop().call_soon(self._flush)
        self._ids.append(entry.id)

    def _flush(self) -> None:
        ids, self._ids = self._ids, []
        for i in range(0, len(ids), 200):
            self.send("queued " + " ".join(ids[i:i + 200]))

    async def close(self) -> None:
        if self._ids:
            self._flush()
        if self.writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer.drain(), 2)
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
            self.writer = None


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when the master dies (PR_SET_PDEATHSIG), so a killed master
    never leaves workers holding its listening sockets. Elsewhere the parent poll does it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)   # PR_SET_PDEATHSIG


def run_worker(cfg: RelayConfig, args) -> int:
    """``python -m relay _worker …`` (started by the master only)."""
    from relay.limits import raise_fd_limit
    from relay.log import setup_logging, teardown_logging
    from relay.private import private_umask

    _die_with_parent()
    logging._srcfile = None   # the mail log never shows caller info: skip finding it (logging HOWTO, Optimization)
    if os.getppid() != args.master:
        return 0   # the master is gone already
    sockets = {}
    for item in args.fds.split(","):
        name, _, fd = item.partition("=")
        if name not in LISTENERS or not fd.isdigit():
            raise RelayError(f"bad --fds item {item!r}")
        sockets[name] = TakeTurnsSocket(fileno=int(fd))
    link = socket.socket(fileno=args.link)
    import relay.limits
    relay.limits.shared_table = SharedTable(limits_table(cfg), args.index - 1, args.workers)
    private_umask()
    raise_fd_limit()
    handlers = setup_logging(cfg, foreground=args.log_stderr)
    try:
        return asyncio.run(_serve_worker(cfg, args, sockets, link))   # (uvloop measured: not faster)
    finally:
        teardown_logging(handlers)


async def _serve_worker(cfg: RelayConfig, args, sockets: dict[str, socket.socket], link_sock: socket.socket) -> int:
    from relay.limits import quiet_loop_errors
    from relay.server import RelayServer

    loop = asyncio.get_running_loop()
    quiet_loop_errors(loop)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    link = MasterLink(link_sock)
    await link.open()
    throttle = SharedAuthThrottle(auth_table(cfg))   # failed logins count in every worker
    server = RelayServer(cfg, role="worker", listen_sockets=sockets, on_queued=link.queued, throttle=throttle)
    server.spool_factory = LoopCommitSpool   # group commit in the loop: no thread hand-off
    feed = None
    try:
        await server.start()
        for s in sockets.values():
            s.listen(LISTEN_BACKLOG)   # create_server(backlog=ACCEPT_BURST) shrank the shared queue
        feed = await _start_feed(cfg, server.bus)
        link.send(f"ready {os.getpid()}")

        async def watch_parent() -> None:
            while os.getppid() == args.master:
                await asyncio.sleep(0.5)
            stop.set()

        watcher = asyncio.create_task(watch_parent())
        await stop.wait()
        watcher.cancel()
    finally:
        await server.stop()
        if feed is not None:
            feed.close()
        await link.close()
        throttle.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


async def _start_feed(cfg: RelayConfig, bus):
    """The cross-process change feed (relay/feed.py) of this process, started."""
    from relay.feed import Feed

    feed = Feed(run_dir(cfg), bus)
    await feed.start()
    return feed


def run_dir(cfg: RelayConfig) -> Path:
    """``<data_dir>/run``: the shared limits and login tables and the feed sockets (0700)."""
    return cfg.data_dir / "run"


def limits_table(cfg: RelayConfig) -> Path:
    return run_dir(cfg) / "limits.table"


def auth_table(cfg: RelayConfig) -> Path:
    return run_dir(cfg) / "auth.table"
