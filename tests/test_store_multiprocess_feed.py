"""relay/feed.py: ChangeBus publishes carried between processes over unix datagram sockets, and
what that is for — an IMAP session idling in one process hearing at once of a delivery made by
another process, and of APPEND, flag changes and EXPUNGE made through an IMAP server in a third.
The servers are real relay IMAP servers in real processes (tests/feed_imap_server.py); the
latency figures are printed (bench/feed_latency.py measures them properly), never asserted."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from relay.events import ChangeBus
from relay.feed import Feed
from relay.store import MailStore

SERVER = Path(__file__).with_name("feed_imap_server.py")
USER, PASSWORD = "idle@example.org", "pw"


@pytest.fixture
def run_dir():
    # short: a unix socket path holds 108 bytes (Feed copes with longer ones through /proc)
    d = Path(tempfile.mkdtemp(prefix="feed", dir="/tmp"))
    yield d / "run"
    shutil.rmtree(d, ignore_errors=True)


async def test_publish_reaches_the_other_bus_once_and_never_echoes(run_dir):
    a_bus, b_bus = ChangeBus(), ChangeBus()
    a, b = Feed(run_dir, a_bus, name="a"), Feed(run_dir, b_bus, name="b")
    await a.start()
    await b.start()
    try:
        assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
        got_a, got_b = [], []
        a_bus.subscribe(USER, lambda u, f: got_a.append(f))
        b_bus.subscribe(USER, lambda u, f: got_b.append(f))
        a_bus.publish(USER, "INBOX")
        b_bus.publish(USER.upper(), "Sent/2026")
        for _ in range(100):
            if len(got_a) == 2 and len(got_b) == 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)              # nothing more may come (no re-broadcast loop)
        assert got_a == ["INBOX", "Sent/2026"]
        assert got_b == ["Sent/2026", "INBOX"] or sorted(got_b) == ["INBOX", "Sent/2026"]
        assert a.sent == 1 and b.sent == 1 and a.received == 1 and b.received == 1
    finally:
        a.close()
        b.close()
    assert not list(run_dir.iterdir())         # each removed its socket
    assert a_bus.remote is None


async def test_dead_peers_are_dropped_and_hostile_datagrams_ignored(run_dir):
    bus = ChangeBus()
    feed = Feed(run_dir, bus, name="live")
    await feed.start()
    try:
        # a socket file whose process died without removing it: bound once, then closed
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dead.bind(str(run_dir / "feed-999999999.sock"))
        dead.close()
        time.sleep(0.11)                       # let the directory's mtime age (see _peer_list)
        bus.publish(USER, "INBOX")
        assert not (run_dir / "feed-999999999.sock").exists()
        got = []
        bus.subscribe(USER, lambda u, f: got.append((u, f)))
        out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        for junk in (b"no separator", b"\0INBOX", USER.encode() + b"\0a\0b", b"x" * 5000,
                     USER.encode() + b"\0\xff\xfe folder"):
            try:
                out.sendto(junk, str(feed.path))
            except OSError:
                pass
        out.sendto(USER.encode() + b"\0Trash", str(feed.path))
        out.close()
        for _ in range(100):
            if got and got[-1][1] == "Trash":
                break
            await asyncio.sleep(0.01)
        assert got[-1] == (USER, "Trash")
        assert all(u == USER for u, _ in got) and len(got) <= 2   # at most the odd-bytes folder too
    finally:
        feed.close()


async def test_long_run_dir_paths_work_through_the_directory_fd(tmp_path):
    deep = Path(tempfile.mkdtemp(dir="/tmp")) / ("d" * 60) / ("e" * 60) / "run"
    try:
        a_bus, b_bus = ChangeBus(), ChangeBus()
        a, b = Feed(deep, a_bus, name="a"), Feed(deep, b_bus, name="b")
        await a.start()
        await b.start()
        got = []
        b_bus.subscribe(USER, lambda u, f: got.append(f))
        a_bus.publish(USER, "INBOX")
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        assert got == ["INBOX"]
        a.close()
        b.close()
    finally:
        shutil.rmtree(deep.parent.parent.parent, ignore_errors=True)


class Raw:
    """A raw IMAP connection (no library between the test and the bytes, for timing)."""

    def __init__(self, port: int) -> None:
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.n = 0
        self.line()
        self.cmd(f"LOGIN {USER} {PASSWORD}")

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("server closed")
            self.buf += chunk
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def cmd(self, text: str, literal: bytes | None = None) -> list[bytes]:
        self.n += 1
        tag = f"t{self.n}"
        if literal is None:
            self.s.sendall(f"{tag} {text}\r\n".encode())
        else:
            self.s.sendall(f"{tag} {text} {{{len(literal)}}}\r\n".encode())
            assert self.line().startswith(b"+")
            self.s.sendall(literal + b"\r\n")
        out = []
        while True:
            ln = self.line()
            if ln.startswith(tag.encode() + b" "):
                assert ln.split()[1] == b"OK", ln
                return out
            out.append(ln)

    def until(self, pattern: bytes) -> list[bytes]:
        seen = []
        while True:
            ln = self.line()
            seen.append(ln)
            if re.search(pattern, ln):
                return seen

    def close(self) -> None:
        self.s.close()


def _server(mail_dir: Path, run_dir: Path) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen([sys.executable, str(SERVER), str(mail_dir), str(run_dir), USER, PASSWORD],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return p, json.loads(p.stdout.readline())["port"]


def _stop(p: subprocess.Popen) -> None:
    p.stdin.close()
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    p.stdout.close()


async def test_delivery_and_changes_in_other_processes_reach_idle(tmp_path, run_dir):
    mail_dir = tmp_path / "mail"
    bus = ChangeBus()
    feed = Feed(run_dir, bus)                  # this process plays the master delivering mail
    await feed.start()
    store = MailStore(mail_dir, bus)
    u = store.user(USER)
    a, port_a = _server(mail_dir, run_dir)     # the idling session's process
    b, port_b = _server(mail_dir, run_dir)     # another session's process
    try:
        idler = Raw(port_a)
        assert any(b"0 EXISTS" in ln for ln in idler.cmd("SELECT INBOX"))
        idler.s.sendall(b"i1 IDLE\r\n")
        assert idler.line().startswith(b"+")
        lat = []
        for i in range(1, 21):
            t = time.perf_counter()
            u.append("INBOX", f"Subject: d{i}\r\nMessage-ID: <d{i}@x>\r\n\r\nx\r\n".encode())
            idler.until(rb"^\* %d EXISTS" % i)
            lat.append(time.perf_counter() - t)
        lat.sort()
        print(f"\ndelivery in this process -> IDLE EXISTS in another: median "
              f"{statistics.median(lat) * 1000:.2f} ms, p95 {lat[int(len(lat) * 0.95) - 1] * 1000:.2f} ms")

        other = Raw(port_b)                    # a session on another process changes things
        other.cmd("SELECT INBOX")
        other.cmd("APPEND INBOX (\\Seen)", b"Subject: appended\r\n\r\nx\r\n")
        idler.until(rb"^\* 21 EXISTS")
        other.cmd("STORE 2 +FLAGS (\\Flagged)")
        seen = idler.until(rb"^\* 2 FETCH .*\\Flagged")
        assert seen
        other.cmd("STORE 1 +FLAGS (\\Deleted)")
        other.cmd("EXPUNGE")
        idler.until(rb"^\* 1 EXPUNGE")
        idler.s.sendall(b"i1 DONE\r\n".replace(b"i1 ", b""))
        idler.until(rb"^i1 OK")
        uids_a = b" ".join(idler.cmd("UID SEARCH ALL"))
        uids_b = b" ".join(other.cmd("UID SEARCH ALL"))
        assert uids_a == uids_b and b" 1 " not in uids_a + b" "
        fa = idler.cmd("FETCH 1:* (UID FLAGS)")
        fb = other.cmd("FETCH 1:* (UID FLAGS)")
        assert len(fa) == len(fb) == 20
        recent_a = {i for i, ln in enumerate(fa) if b"\\Recent" in ln}
        recent_b = {i for i, ln in enumerate(fb) if b"\\Recent" in ln}
        assert recent_a and not recent_a & recent_b          # \Recent: one session each
        assert [ln.replace(b" \\Recent", b"").replace(b"\\Recent", b"") for ln in fa] == \
               [ln.replace(b" \\Recent", b"").replace(b"\\Recent", b"") for ln in fb]
        idler.close()
        other.close()
    finally:
        _stop(a)
        _stop(b)
        store.close()
        feed.close()


async def test_a_burst_larger_than_the_kernel_queue_arrives_whole(run_dir):
    """Linux queues 10 datagrams per unix socket by default: 300 distinct changes published
    while the receiver cannot read (same loop, busy) must all arrive once it can."""
    a_bus, b_bus = ChangeBus(), ChangeBus()
    a, b = Feed(run_dir, a_bus, name="a"), Feed(run_dir, b_bus, name="b")
    await a.start()
    await b.start()
    try:
        got = []
        b_bus.subscribe(USER, lambda u, f: got.append(f))
        want = [f"F{i}" for i in range(300)]
        for f in want:
            a_bus.publish(USER, f)
            a_bus.publish(USER, f)               # the same hint twice: at most twice received
        for _ in range(500):
            if set(got) >= set(want):
                break
            await asyncio.sleep(0.01)
        assert set(got) == set(want)
        assert len(got) <= 2 * len(want)
        assert a.dropped == 0
        qlen = int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
        if qlen < 2 * len(want):                 # the queue overflowed: waiting hints were merged
            assert len(got) < 2 * len(want)
    finally:
        a.close()
        b.close()
