"""Two IMAP sessions of one user on DIFFERENT worker processes of the real multi-process relay
(``tui-mail relay start`` with ``[process] workers = 2``): sequence numbers, UIDs, flags, EXPUNGE
and IDLE must agree as if one process served both (issue 14). Which worker holds a connection is
read from /proc: the server side of the TCP connection (local port = the IMAP port, remote port =
the client's) is a socket inode, found among the open files of exactly one worker."""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relay.users import UserDB

USER, PASSWORD = "bob@example.org", "pw"
CONFIG = """\
hostname = "mx.example.org"
domains = ["example.org"]
[listen]
smtp = "127.0.0.1:0"
submission = ""
imap = "127.0.0.1:0"
pop3 = ""
[process]
workers = 2
"""

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")


def _server_inode(imap_port: int, client_port: int) -> int | None:
    """The inode of the relay's end of the connection from ``client_port`` (/proc/net/tcp)."""
    want_local, want_remote = f"0100007F:{imap_port:04X}", f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1] == want_local and f[2] == want_remote:
            return int(f[9])
    return None


def _worker_of(conn: socket.socket, imap_port: int, workers: list[int]) -> int | None:
    client_port = conn.getsockname()[1]
    for _ in range(100):                 # the server's accept() may not have happened yet
        inode = _server_inode(imap_port, client_port)
        if inode:
            target = f"socket:[{inode}]"
            for pid in workers:
                try:
                    fds = os.listdir(f"/proc/{pid}/fd")
                except FileNotFoundError:
                    continue
                for fd in fds:
                    try:
                        if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                            return pid
                    except OSError:
                        continue
        time.sleep(0.02)
    return None


class Imap:
    """A raw IMAP session (bytes as sent; no library between the test and the server)."""

    def __init__(self, port: int) -> None:
        self.s = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.buf = b""
        self.n = 0
        assert self.line().startswith(b"* OK")

    def login(self) -> None:
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
        tag = f"t{self.n}".encode()
        if literal is None:
            self.s.sendall(tag + b" " + text.encode() + b"\r\n")
        else:
            self.s.sendall(tag + b" " + text.encode() + b" {%d}\r\n" % len(literal))
            assert self.line().startswith(b"+")
            self.s.sendall(literal + b"\r\n")
        out = []
        while True:
            ln = self.line()
            if ln.startswith(tag + b" "):
                assert ln.split()[1] == b"OK", ln
                return out
            out.append(ln)

    def until(self, pattern: bytes) -> list[bytes]:
        seen = []
        while True:
            seen.append(self.line())
            if re.search(pattern, seen[-1]):
                return seen

    def idle(self) -> None:
        self.s.sendall(b"idle IDLE\r\n")
        assert self.line().startswith(b"+")

    def done(self) -> list[bytes]:
        self.s.sendall(b"DONE\r\n")
        return self.until(rb"^idle OK")

    def close(self) -> None:
        try:
            self.s.sendall(b"z LOGOUT\r\n")
        except OSError:
            pass
        self.s.close()


def _view(c: Imap) -> list[tuple[int, int, frozenset]]:
    """(sequence number, UID, flags without \\Recent) of every message, as the session sees it."""
    out = []
    for ln in c.cmd("FETCH 1:* (UID FLAGS)"):
        m = re.match(rb"\* (\d+) FETCH \((?:UID (\d+) FLAGS \(([^)]*)\)|FLAGS \(([^)]*)\) UID (\d+))\)", ln)
        assert m, ln
        seq = int(m[1])
        uid = int(m[2] or m[5])
        flags = (m[3] if m[3] is not None else m[4]).decode().split()
        out.append((seq, uid, frozenset(f for f in flags if f != "\\Recent")))
    return out


def _recent(c: Imap) -> set[int]:
    return {int(re.match(rb"\* \d+ FETCH \(UID (\d+)", ln)[1])
            for ln in c.cmd("FETCH 1:* (UID FLAGS)") if b"\\Recent" in ln
            and re.match(rb"\* \d+ FETCH \(UID (\d+)", ln)}


def test_two_sessions_on_different_workers_agree(tmp_path):
    cfg, data = tmp_path / "relay.toml", tmp_path / "data"
    cfg.write_text(CONFIG)
    UserDB(data / "users").add(USER, PASSWORD)
    proc = subprocess.Popen([sys.executable, "-m", "relay", "start", "--foreground", "--quiet-stderr",
                             "--config", str(cfg), "--data-dir", str(data)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    conns: list[Imap] = []
    try:
        state_file = data / "relay.state.json"
        deadline = time.monotonic() + 40
        st = None
        while time.monotonic() < deadline:
            try:
                st = json.loads(state_file.read_text())
                if st["pid"] == proc.pid and len(st.get("workers", [])) == 2:
                    break
            except (OSError, ValueError, KeyError):
                pass
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        else:
            raise AssertionError("the relay with 2 workers did not start")
        imap_port, smtp_port = st["listeners"]["imap"][1], st["listeners"]["smtp"][1]
        workers = [w["pid"] for w in st["workers"]]

        # sessions until two are on different workers (the kernel picks the accepting worker)
        by_worker: dict[int, Imap] = {}
        for _ in range(40):
            c = Imap(imap_port)
            conns.append(c)
            w = _worker_of(c.s, imap_port, workers)
            assert w in workers, "a connection served by no worker"
            by_worker.setdefault(w, c)
            if len(by_worker) == 2:
                break
        assert len(by_worker) == 2, "every connection landed on one worker"
        a, b = by_worker[workers[0]], by_worker[workers[1]]
        a.login()
        b.login()

        # mail delivered by the master (SMTP → queue → local delivery), seen by both
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=15) as s:
            for i in range(3):
                s.sendmail("alice@x.org", [USER], f"Subject: m{i}\r\nMessage-ID: <m{i}@x>\r\n\r\nhi\r\n")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            st_a = a.cmd("STATUS INBOX (MESSAGES)")
            if b"MESSAGES 3" in b" ".join(st_a):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the master's deliveries never showed")
        assert any(b"3 EXISTS" in ln for ln in a.cmd("SELECT INBOX"))
        assert any(b"3 EXISTS" in ln for ln in b.cmd("SELECT INBOX"))
        assert _view(a) == _view(b)

        lat = {"master delivery": [], "APPEND on the other worker": []}
        b.idle()
        n = 3
        for i in range(5):
            # a delivery by the master wakes the IDLE on worker B
            t = time.perf_counter()
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=15) as s:
                t = time.perf_counter()
                s.sendmail("alice@x.org", [USER], f"Subject: d{i}\r\n\r\nhi\r\n")
            n += 1
            b.until(rb"^\* %d EXISTS" % n)
            lat["master delivery"].append(time.perf_counter() - t)
            # an APPEND on worker A wakes the IDLE on worker B
            t = time.perf_counter()
            a.cmd("APPEND INBOX (\\Seen)", f"Subject: a{i}\r\n\r\nappended\r\n".encode())
            n += 1
            b.until(rb"^\* %d EXISTS" % n)
            lat["APPEND on the other worker"].append(time.perf_counter() - t)
        # a burst (more than the 10 datagrams Linux queues per socket): the last EXISTS comes
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=15) as s:
            for i in range(30):
                s.sendmail("alice@x.org", [USER], f"Subject: burst {i}\r\n\r\nhi\r\n")
        n += 30
        t = time.perf_counter()
        b.until(rb"^\* %d EXISTS" % n)
        print(f"\nlast EXISTS of a 30-message burst {(time.perf_counter() - t) * 1000:.0f} ms after its last 250")
        for k, v in lat.items():
            print(f"\n{k} -> IDLE EXISTS on another worker: median {statistics.median(v) * 1000:.1f} ms,"
                  f" max {max(v) * 1000:.1f} ms")

        a.cmd("NOOP")
        # flags set on worker A reach B's IDLE as FETCH
        a.cmd("STORE 2 +FLAGS (\\Flagged $Important)")
        seen = b.until(rb"^\* 2 FETCH .*\\Flagged")
        assert b"$Important" in seen[-1]
        # EXPUNGE on A: B hears which sequence numbers went, in order
        a.cmd("STORE 1,4 +FLAGS (\\Deleted)")
        exp_a = [ln for ln in a.cmd("EXPUNGE") if ln.endswith(b"EXPUNGE")]
        # (either order is right: ascending with each number shifted, or descending)
        assert exp_a in ([b"* 1 EXPUNGE", b"* 3 EXPUNGE"], [b"* 4 EXPUNGE", b"* 1 EXPUNGE"]), exp_a
        exp_b = [ln for ln in b.until(rb"^\* \d+ EXPUNGE") if ln.endswith(b"EXPUNGE")]
        exp_b += [ln for ln in b.until(rb"^\* \d+ EXPUNGE") if ln.endswith(b"EXPUNGE")]
        assert exp_b == exp_a
        b.done()
        b.cmd("NOOP")
        va, vb = _view(a), _view(b)
        assert va == vb and len(va) == n - 2
        assert [s for s, _, _ in va] == list(range(1, n - 1))
        uids = [u for _, u, _ in va]
        assert uids == sorted(uids) and len(set(uids)) == len(uids)
        # flags set on B reach A at its next command
        b.cmd("UID STORE %d +FLAGS (\\Answered)" % uids[0])
        noop = a.cmd("NOOP")
        assert any(b"\\Answered" in ln and b"FETCH" in ln for ln in noop), noop
        assert _view(a) == _view(b)
        assert a.cmd("UID SEARCH ALL") == b.cmd("UID SEARCH ALL")
        # \Recent: a message is recent in one session only
        ra, rb = _recent(a), _recent(b)
        assert ra | rb and not ra & rb
        # UIDVALIDITY and UIDNEXT agree
        sa = b" ".join(a.cmd("STATUS INBOX (UIDVALIDITY UIDNEXT MESSAGES)"))
        sb = b" ".join(b.cmd("STATUS INBOX (UIDVALIDITY UIDNEXT MESSAGES)"))
        assert sa == sb
    finally:
        for c in conns:
            c.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stderr.close()
