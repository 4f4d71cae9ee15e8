"""Benchmark of the relay's IMAP server, side by side with Dovecot on the same messages.

    .venv/bin/python bench/imap_server.py            # 10,000 and 100,000 messages
    .venv/bin/python bench/imap_server.py --quick    # 2,000 messages, a smoke run

For each size N, a Maildir of N realistic 1–3 KB messages is written once (into cur/, as a
delivery agent would leave them), then copied for each server. Measured with one raw socket
client (no client library overhead in the timings):

- first index: the relay indexing the new Maildir on first SELECT (Dovecot: its own first SELECT)
- first FETCH envelopes: the first FETCH 1:* (UID FLAGS ENVELOPE RFC822.SIZE) after it (a server
  that analyses message headers lazily, as both do for a big new Maildir, pays for it here)
- LOGIN+SELECT (warm), FETCH 1:* (UID FLAGS ENVELOPE RFC822.SIZE), UID SEARCH SUBJECT,
  one BODY[] fetch (each the median of 3–5 runs), NOOP (median of 20; must be O(1) in N)
- IDLE latency: a message delivered into the Maildir (relay: through the store, which
  publishes on the ChangeBus as local delivery does; Dovecot: a file renamed into new/) until
  the idling client reads ``EXISTS``; p50 and max over several deliveries.

- UID FETCH 1:* (FLAGS) (median of 5), APPEND of one 1–3 KB message (median of 15)

Targets (issue 4): envelopes within 3x of Dovecot at 100,000; SEARCH SUBJECT < 0.3 s at 100,000;
IDLE p50 < 50 ms; NOOP O(1). Issue 14: LOGIN+SELECT of an indexed 100,000 ≤ 20 ms, UID FETCH
FLAGS and warm FETCH envelopes ≤ 1.2x Dovecot, APPEND ≤ 2x Dovecot, first index of 100,000
≤ 5 s. Memory with idle sessions: bench/imap_idle_rss.py. The ratio column is
relay / Dovecot of the same run (lower is better). The machine may be shared: the load average
is printed before and after each size.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import os
import random
import re
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from email.utils import format_datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.events import ChangeBus  # noqa: E402
from relay.imap.server import start_imap_server, stop_imap_server  # noqa: E402
from relay.store.registry import MailStore  # noqa: E402

USER = "bob@hamburger.edu"
WORDS = ("ketchup mustard crepe hamburger relay maildir envelope queue folder thread budget meeting "
         "invoice report draft review lunch travel project deadline").split()


def realistic(i: int, rnd: random.Random) -> bytes:
    date = _dt.datetime(2025, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(minutes=7 * i)
    subj = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 8)))
    if i % 1000 == 0:
        subj += " needle"
    lines = []
    size = rnd.randint(1000, 3000)
    while sum(len(x) + 2 for x in lines) < size:
        lines.append(" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(6, 12))))
    head = (f"Return-Path: <sender{i % 50}@crepes.fr>\r\n"
            f"Received: from mx.crepes.fr (mx.crepes.fr [192.0.2.{i % 250}]) by hamburger.edu; "
            f"{format_datetime(date)}\r\n"
            f"From: Sender {i % 50} <sender{i % 50}@crepes.fr>\r\nTo: Bob <bob@hamburger.edu>\r\n"
            f"Subject: {subj}\r\nDate: {format_datetime(date)}\r\nMessage-ID: <{i}.bench@crepes.fr>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n")
    return (head + "\r\n" + "\r\n".join(lines) + "\r\n").encode()


def write_maildir(root: Path, n: int) -> None:
    rnd = random.Random(42)
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    t0 = int(time.time()) - n
    for i in range(n):
        data = realistic(i, rnd)
        p = root / "cur" / f"{t0 + i}.M{i:08d}P1.bench,S={len(data)}:2,{'S' if i % 3 == 0 else ''}"
        p.write_bytes(data)


class Raw:
    """A raw IMAP client. Responses are read in bulk and split into lines by C code: a Python
    step per line (readline + a regex for literals) costs the client ~2 µs per FETCH line, about
    as much as the servers themselves spend on FETCH (FLAGS), and the client shares the machine's
    two cores with them. Both servers are read by the same code."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb", buffering=1 << 20)
        self.extra = b""       # bytes read past a tagged response (none in practice)
        self.readline()
        self.n = 0

    def readline(self) -> bytes:
        if self.extra:
            i = self.extra.find(b"\n")
            if i >= 0:
                line, self.extra = self.extra[:i + 1], self.extra[i + 1:]
                return line
            line, self.extra = self.extra, b""
            return line + self.f.readline()
        return self.f.readline()

    def cmd(self, text: str) -> list[bytes]:
        self.n += 1
        tag = b"b%d" % self.n
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        return self.until(tag)

    def until(self, tag: bytes) -> list[bytes]:
        """The response lines up to and including the tagged one (a literal stays in its line)."""
        needle = b"\r\n" + tag + b" "
        buf = bytearray(self.extra)
        self.extra = b""
        start = 0                      # where the tagged line may begin, at the earliest
        while True:
            if start == 0 and buf.startswith(tag + b" "):
                i = 0
            else:
                i = buf.find(needle, start)
                i = i + 2 if i >= 0 else -1
            if i >= 0:
                end = buf.find(b"\r\n", i)
                if end >= 0:
                    lines = _split_response(bytes(buf[:end + 2]))
                    if lines is not None and lines[-1].startswith(tag + b" "):
                        self.extra = bytes(buf[end + 2:])
                        if not lines[-1].startswith(tag + b" OK"):
                            raise RuntimeError(lines[-1])
                        return lines
                    start = end       # that was inside a literal: look further on
                    continue
                start = max(0, i - 2)     # the tagged line is still arriving
            else:
                start = max(0, len(buf) - len(needle))
            data = self.f.read1(1 << 20)
            if not data:
                raise ConnectionError("closed")
            buf += data

    def close(self) -> None:
        self.f.close()
        self.sock.close()


_LITERAL = re.compile(rb"\{(\d+)\}\r\n")
_LITERAL_END = re.compile(rb"\{(\d+)\}$")


def _split_response(data: bytes) -> list[bytes] | None:
    """Complete response lines (CRLF kept, literals inside their line); None if a literal
    runs past the end (more is to come)."""
    if not _LITERAL.search(data):
        lines = data.split(b"\r\n")
        lines.pop()                   # data ends with CRLF: the last piece is empty
        return [x + b"\r\n" for x in lines]
    out, pos = [], 0
    while pos < len(data):
        cur = pos
        while True:
            end = data.find(b"\r\n", cur)
            if end < 0:
                return None
            m = _LITERAL_END.search(data, max(cur, end - 24), end)
            if m is None:
                break
            cur = end + 2 + int(m.group(1))      # the line goes on after the literal
            if cur > len(data):
                return None
        out.append(data[pos:end + 2])
        pos = end + 2
    return out


def timed(fn):
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def measure(port: int, user: str, deliver, n: int) -> dict:
    res: dict = {}
    c = Raw(port)
    res["first SELECT"], _ = timed(lambda: (c.cmd(f"LOGIN {user} secret"), c.cmd("SELECT INBOX")))
    c.close()

    def best(fn, times=3):   # the machine may be shared: the median of a few runs
        runs = [timed(fn) for _ in range(times)]
        return statistics.median(t for t, _ in runs), runs[-1][1]

    clients = []

    def login_select():
        c = Raw(port)
        clients.append(c)
        c.cmd(f"LOGIN {user} secret")
        c.cmd("SELECT INBOX")
    res["LOGIN+SELECT"], _ = best(login_select, 5)
    for extra in clients[:-1]:
        extra.close()
    c = clients[-1]
    # the first one apart: a server that analyses messages lazily pays for it here
    res["first FETCH envelopes"], _ = timed(lambda: c.cmd("FETCH 1:* (UID FLAGS ENVELOPE RFC822.SIZE)"))
    res["FETCH 1:* envelopes"], lines = best(lambda: c.cmd("FETCH 1:* (UID FLAGS ENVELOPE RFC822.SIZE)"))
    assert len(lines) == n + 1, (len(lines), n)
    res["UID FETCH 1:* (FLAGS)"], lines = best(lambda: c.cmd("UID FETCH 1:* (FLAGS)"), 5)
    assert len(lines) == n + 1, (len(lines), n)
    res["UID SEARCH SUBJECT"], lines = best(lambda: c.cmd("UID SEARCH SUBJECT needle"))
    assert len(lines[0].split()) - 2 == (n + 999) // 1000, lines[0][:200]
    res["one BODY[] fetch"], _ = best(lambda: c.cmd(f"FETCH {n // 2} BODY.PEEK[]"), 5)
    noops = [timed(lambda: c.cmd("NOOP"))[0] for _ in range(20)]
    res["NOOP"] = statistics.median(noops)
    rnd = random.Random(11)
    appends = []
    for k in range(15):
        msg = realistic(10 * n + k, rnd)
        c.n += 1
        tag = b"b%d" % c.n
        t0 = time.perf_counter()
        c.sock.sendall(tag + b" APPEND INBOX (\\Seen) {%d}\r\n" % len(msg))
        assert c.readline().startswith(b"+")
        c.sock.sendall(msg + b"\r\n")
        c.until(tag)
        appends.append(time.perf_counter() - t0)
    res["APPEND"] = statistics.median(appends)
    lat = []
    for k in range(7):
        c.n += 1
        tag = b"b%d" % c.n
        c.sock.sendall(tag + b" IDLE\r\n")
        assert c.readline().startswith(b"+")
        t0 = time.perf_counter()
        deliver(k)
        while True:
            line = c.readline()
            if line.endswith(b"EXISTS\r\n"):
                break
        lat.append(time.perf_counter() - t0)
        c.sock.sendall(b"DONE\r\n")
        c.until(tag)
    res["IDLE latency p50"] = statistics.median(lat)
    res["IDLE latency max"] = max(lat)
    c.close()
    return res


def _relay_process(mail: str, conn) -> None:
    """The relay's IMAP server in its own process (as in production: the benchmark client must
    not share the server's GIL). Deliveries arrive over ``conn`` and go through the store, which
    publishes on the ChangeBus exactly as local delivery does."""
    async def main() -> None:
        bus = ChangeBus()
        store = MailStore(Path(mail), bus)

        async def auth(u, p):
            return p == "secret"

        server = await start_imap_server("127.0.0.1", 0, store=store.user, authenticate=auth, bus=bus,
                                         allow_plaintext=True)
        conn.send(server.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def pump() -> None:
            while True:
                msg = conn.recv()
                if msg is None:
                    loop.call_soon_threadsafe(stop.set)
                    return
                store.user(USER).append("INBOX", msg)

        threading.Thread(target=pump, daemon=True).start()
        await stop.wait()
        await stop_imap_server(server)
        store.close()

    asyncio.run(main())


def run_relay(src: Path, work: Path, n: int) -> dict:
    import multiprocessing as mp
    mail = work / "relay-mail"
    shutil.copytree(src, mail / USER)
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=_relay_process, args=(str(mail), child))
    proc.start()
    try:
        port = parent.recv()
        rnd = random.Random(7)
        return measure(port, USER, lambda k: parent.send(realistic(n + k, rnd)), n)
    finally:
        parent.send(None)
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()


def run_dovecot(src: Path, work: Path, n: int, fsync: str = "never") -> dict | None:
    try:
        from tests.peers import Dovecot, dovecot_available
    except ImportError:
        return None
    if not dovecot_available():
        return None
    dc = Dovecot(work / "dovecot", idle_interval=1)
    if fsync != "never":    # the test peer never fsyncs; the relay always fsyncs an APPEND
        base_config = dc._config
        dc._config = lambda: base_config().replace("mail_fsync = never", f"mail_fsync = {fsync}")
    try:
        md = dc.add_user("bob", "secret")
        shutil.rmtree(md)
        shutil.copytree(src, md)
        for dirpath, dirnames, filenames in os.walk(md):
            for name in [dirpath] + [os.path.join(dirpath, f) for f in filenames]:
                dc._chown(Path(name))   # Dovecot's mail processes run as nobody under root
        dc.start()
        rnd = random.Random(7)
        return measure(dc.imap_port, "bob", lambda k: dc.deliver("bob", realistic(n + k, rnd)), n)
    finally:
        dc.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2,000 messages only")
    ap.add_argument("--sizes", type=int, nargs="*", help="mailbox sizes (default 10000 100000)")
    ap.add_argument("--no-dovecot", action="store_true")
    ap.add_argument("--dovecot-fsync", choices=("never", "optimized", "always"), default="never",
                    help="Dovecot's mail_fsync (default never, as the test peer; the relay fsyncs "
                         "every APPENDed message: compare APPEND with 'always' or 'optimized' "
                         "on a real disk, --dir /tmp)")
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="where the Maildirs go (default /dev/shm: the shared disk here is the "
                         "bottleneck otherwise, for both servers alike)")
    args = ap.parse_args()
    sizes = args.sizes or ([2000] if args.quick else [10_000, 100_000])
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="imapbench-", dir=args.dir) as tmp:
            work = Path(tmp)
            src = work / "src"
            t, _ = timed(lambda: write_maildir(src, n))
            print(f"\n== {n:,} messages (written in {t:.1f} s), load average before: "
                  f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            ours = run_relay(src, work, n)
            theirs = None if args.no_dovecot else run_dovecot(src, work, n, args.dovecot_fsync)
            print(f"{'':24} {'relay':>10} {'dovecot':>10} {'ratio':>7}")
            for k, v in ours.items():
                d = theirs.get(k) if theirs else None
                ratio = f"{v / d:6.2f}x" if d else ""
                ds = f"{d * 1000:9.1f}ms" if d is not None else f"{'-':>11}"
                print(f"{k:24} {v * 1000:9.1f}ms {ds} {ratio:>7}")
            print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
