"""The cross-process change feed: carries ChangeBus publishes between the relay's processes (the
master delivering mail, the workers serving IMAP and POP3), so IDLE, NOTIFY and NOOP in one
process hear at once of a delivery, APPEND, flag change or EXPUNGE made in another.

Each process with a feed binds a unix datagram socket ``<run_dir>/feed-<pid>.sock`` (run_dir
mode 0700, so only the relay's own user can send to it). ``ChangeBus.publish(user, folder)``
sends ``user NUL folder`` (UTF-8) to every other ``feed-*.sock`` in run_dir, then calls its own
listeners as before; a datagram received is published to the local bus only (never passed on,
so nothing loops). The list of peers is re-read when run_dir's mtime moves (a process bound or
removed its socket), so a publish costs one stat plus one sendto per peer; a socket whose process
is gone (ECONNREFUSED) is removed. Linux queues only ``net.unix.max_dgram_qlen`` (default 10)
datagrams per socket, so a burst (a batch of deliveries) can find a peer full: those hints wait in
the sender (once each: they are idempotent) and are sent again from its event loop every 2 ms
until there is room. A datagram is a hint, never the truth: the store holds the truth
(relay/store/userlock.py), and a session that misses a hint (more than MAX_BACKLOG waiting, a peer
starting) still sees the change at its next command. With no feed (one process, tests) the bus is
exactly in-process as before.

Why hand-written: this is ~100 lines over the standard library's socket and asyncio
add_reader; no package offers "fan a datagram out to sibling processes" without a broker, and a
broker (Redis, ZeroMQ) would be one more moving part for a 2-field message.

API (relay/workers.py)::

    feed = Feed(run_dir, bus)
    await feed.start()        # bind and start receiving in the running loop; bus.remote is set
    ...
    feed.close()              # unbind, remove the socket file, bus.remote unset
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import threading
import time
from pathlib import Path

from relay.events import ChangeBus

log = logging.getLogger("relay.feed")
PREFIX, SUFFIX = "feed-", ".sock"
MAX_DATAGRAM = 4096          # an address (≤ 320) and a folder name (≤ 1000 or so) fit easily
MAX_BACKLOG = 4096           # distinct hints kept per peer whose queue is full
RETRY_AFTER = 0.002          # seconds before sending them again


class Feed:
    def __init__(self, run_dir: Path, bus: ChangeBus, *, name: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.bus = bus
        # ``name`` (tests: two feeds in one process) defaults to the pid
        self.path = self.run_dir / f"{PREFIX}{name or os.getpid()}{SUFFIX}"
        self._sock: socket.socket | None = None     # bound, receives
        self._out: socket.socket | None = None      # unbound, sends (any thread)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._peers: list[str] = []
        self._peers_mtime = -1
        self._prefix = str(self.run_dir) + "/"      # what socket addresses start with
        self._dirfd = -1
        self._lock = threading.Lock()
        self._backlog: dict[str, dict[bytes, None]] = {}   # peer → hints waiting for room
        self._flush_scheduled = False
        self.sent = self.received = self.dropped = 0

    async def start(self) -> None:
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o700)
        try:
            os.unlink(self.path)            # left by a dead process that had our pid
        except FileNotFoundError:
            pass
        if len(str(self.path)) > 100:    # sun_path holds 108 bytes: go through the directory's fd
            self._dirfd = os.open(self.run_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            self._prefix = f"/proc/self/fd/{self._dirfd}/"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(self._prefix + self.path.name)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        out.setblocking(False)
        self._sock, self._out = sock, out
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)
        self.bus.remote = self.send

    def close(self) -> None:
        if self.bus.remote == self.send:
            self.bus.remote = None
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
            sock.close()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        with self._lock:              # not while another thread is sending through them
            if self._out is not None:
                self._out.close()
                self._out = None
            if self._dirfd >= 0:
                os.close(self._dirfd)
                self._dirfd = -1
            self._backlog.clear()

    # ------------------------------------------------------------------ sending (any thread)
    def _peer_list(self) -> list[str]:
        try:
            m = os.stat(self.run_dir).st_mtime_ns
        except FileNotFoundError:
            return []
        if m != self._peers_mtime:
            mine = self.path.name
            try:
                names = os.listdir(self.run_dir)
            except FileNotFoundError:
                names = []
            self._peers = [self._prefix + n for n in names
                           if n.startswith(PREFIX) and n.endswith(SUFFIX) and n != mine]
            # a directory's mtime moves in clock ticks (milliseconds): a socket bound in the tick
            # just listed would leave it unchanged, so a young mtime is looked at again next time
            self._peers_mtime = m if time.time_ns() - m > 100_000_000 else -1
        return self._peers

    def send(self, user: str, folder: str) -> None:
        """Tell every other process's feed that ``folder`` of ``user`` changed (bus.remote)."""
        if self._out is None:
            return
        data = f"{user}\0{folder}".encode("utf-8", "surrogateescape")
        if len(data) > MAX_DATAGRAM:
            return
        with self._lock:
            dead: list[str] = []
            try:
                peers = self._peer_list()
            except OSError as e:          # a hint is never worth failing the change it tells of
                log.warning("change feed: cannot list %s: %s", self.run_dir, e)
                return
            for peer in peers:
                waiting = self._backlog.get(peer)
                if waiting is not None:           # keep its order: queue behind what waits
                    self._queue(peer, waiting, data)
                elif self._send_one(peer, data, dead) is False:
                    self._queue(peer, self._backlog.setdefault(peer, {}), data)
            self._bury(dead)

    def _send_one(self, peer: str, data: bytes, dead: list[str]) -> bool | None:
        """True: sent; False: the peer's queue is full (try later); None: the peer is gone."""
        out = self._out
        if out is None:
            return None
        try:
            out.sendto(data, peer)
            self.sent += 1
            return True
        except (ConnectionRefusedError, FileNotFoundError):
            dead.append(peer)                     # its process is gone (or going)
            return None
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.ENOBUFS):
                return False
            log.warning("change feed: cannot tell %s: %s", peer, e)
            return None

    def _queue(self, peer: str, waiting: dict[bytes, None], data: bytes) -> None:
        """A full peer (Linux queues only net.unix.max_dgram_qlen = 10 datagrams by default):
        keep the hint, once (they are idempotent), and retry from the loop shortly."""
        if data in waiting:
            return
        if len(waiting) >= MAX_BACKLOG:
            self.dropped += 1                     # a hint lost, never mail: see the docstring
            return
        waiting[data] = None
        if not self._flush_scheduled and self._loop is not None and not self._loop.is_closed():
            self._flush_scheduled = True
            self._loop.call_soon_threadsafe(self._loop.call_later, RETRY_AFTER, self._flush)

    def _flush(self) -> None:
        with self._lock:
            self._flush_scheduled = False
            dead: list[str] = []
            for peer, waiting in list(self._backlog.items()):
                for data in list(waiting):
                    ok = self._send_one(peer, data, dead)
                    if ok is False:
                        break
                    del waiting[data]             # sent, or the peer is gone
                if not waiting or peer in dead:
                    del self._backlog[peer]
            self._bury(dead)
            if self._backlog and self._loop is not None and not self._loop.is_closed():
                self._flush_scheduled = True
                self._loop.call_later(RETRY_AFTER, self._flush)

    def _bury(self, dead: list[str]) -> None:
        for peer in dead:        # removing it moves run_dir's mtime: the list is re-read
            self._backlog.pop(peer, None)
            try:
                if not _pid_alive(peer):
                    os.unlink(self.run_dir / os.path.basename(peer))
            except OSError:
                pass

    # ------------------------------------------------------------------ receiving (the loop)
    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(256):          # drain, but let the loop breathe under a flood
            try:
                data = sock.recv(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("change feed: %s", e)
                return
            user, sep, folder = data.decode("utf-8", "surrogateescape").partition("\0")
            if not sep or not user or "\0" in folder or len(data) > MAX_DATAGRAM:
                continue
            self.received += 1
            try:
                self.bus.publish_local(user, folder or "INBOX")
            except Exception:
                log.exception("change feed: a listener failed")


def _pid_alive(sock_path: str) -> bool:
    """Whether the process named by a feed socket's file name still runs (a refused send to a
    live one means it is just starting or stopping: leave its socket alone)."""
    name = os.path.basename(sock_path)
    try:
        pid = int(name[len(PREFIX):-len(SUFFIX)])
    except ValueError:
        return False
    from relay.server import pid_alive   # (not at import: relay.server imports the store)
    return pid_alive(pid)
