"""Benchmark: the relay under three hostile loads (issue 10, items 6, 8, 9).

Starts the relay the way users do (``python -m relay start --foreground`` on free loopback
ports, a user added with ``relay user add``), then measures:

- **literal attack**: six unauthenticated IMAP connections each announce and send a 62 MB
  literal before LOGIN; relay RSS before, peak (VmHWM) and after.
- **RCPT flood**: one inbound SMTP session pipelines 10,000 RCPT TO for a foreign domain
  (each rejected) while IMAP and POP3 clients send NOOP/CAPA every 10 ms; the worst and the
  95th-percentile round trip of those other protocols, and the flood's own duration.
  ``flood-no-cutoff`` raises ``[limits] max_errors`` so all 10,000 are answered (the yielding
  alone; a relay before issue 10 rejects that key, run it only on the current code).
- **append**: six logged-in clients APPEND 20 MB each in 1 MB writes; RSS mid-upload and peak.
- **smtp-data**: six strangers on the MX port each send 4 MB of empty lines as a message.
- **parallel guessing**: 30 connections from 127.0.0.1 guess a password over IMAP LOGIN for
  ``--guess-seconds`` (default 15); guesses answered per second, and how long the right
  password takes from 127.0.0.2 meanwhile.

Run: ``.venv/bin/python bench/relay_hostile.py [--src DIR] [--only literal,flood,guess]``.
``--src`` runs another source tree of the relay (e.g. an export of an older commit) for
before/after tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "bob@example.org", "right-password"

CONFIG = """\
hostname = "mx.example.org"
domains = ["example.org"]
[listen]
smtp = "127.0.0.1:0"
submission = "127.0.0.1:0"
imap = "127.0.0.1:0"
pop3 = "127.0.0.1:0"
"""


def _one_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """``field`` of the relay: its master plus every worker process (the children of ``pid``;
    for VmHWM the sum of each process's own peak, an upper bound)."""
    try:
        kids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        kids = []
    return _one_kb(pid, field) + sum(_one_kb(k, field) for k in kids)


class Relay:
    def __init__(self, src: Path, tmp: Path, extra: str = ""):
        self.src, self.tmp = src, tmp
        self.env = dict(os.environ, PYTHONPATH=str(src), XDG_CONFIG_HOME=str(tmp / "cfg"),
                        XDG_DATA_HOME=str(tmp / "xdg"))
        (tmp / "relay.toml").write_text(CONFIG + extra)
        self.opts = ["--config", str(tmp / "relay.toml"), "--data-dir", str(tmp / "data")]

    def start(self) -> None:
        subprocess.run([sys.executable, "-m", "relay", "user", "add", USER, "--password-stdin", *self.opts],
                       input=PASSWORD + "\n", text=True, env=self.env, check=True, capture_output=True,
                       cwd=self.src)   # python -m puts the cwd first on sys.path
        self.proc = subprocess.Popen([sys.executable, "-m", "relay", "start", "--foreground", "--quiet-stderr",
                                      *self.opts], env=self.env, stdout=subprocess.DEVNULL, cwd=self.src,
                                     stderr=open(self.tmp / "stderr.txt", "wb"))
        state = self.tmp / "data" / "relay.state.json"
        for _ in range(400):
            if state.exists():
                try:
                    self.listeners = json.loads(state.read_text())["listeners"]
                    return
                except ValueError:
                    pass
            time.sleep(0.05)
        raise SystemExit("relay did not start: " + (self.tmp / "stderr.txt").read_text()[-2000:])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _line(reader) -> bytes:
    return await reader.readline()


# --------------------------------------------------------------------------- literal attack
async def literal_attack(relay: Relay, n: int = 6, size: int = 62_000_000, plus: bool = False) -> dict:
    host, port = relay.listeners["imap"]
    pid = relay.proc.pid
    before = rss_kb(pid)
    chunk = b"x" * (1 << 20)
    outcomes = []

    async def one(i: int) -> str:
        r, w = await asyncio.open_connection(host, port)
        await r.readline()
        if plus:   # LITERAL+: the client sends the data without waiting for "+"
            w.write(b"a%d LOGIN {%d+}\r\n" % (i, size))
            reply = b"+"
        else:
            w.write(b"a%d LOGIN {%d}\r\n" % (i, size))
            await w.drain()
            reply = await asyncio.wait_for(r.readline(), 10)
        if not reply.startswith(b"+"):
            w.close()
            return "refused: " + reply.decode(errors="replace").strip()[:60]
        sent = 0
        try:
            while sent < size:
                w.write(chunk[: min(len(chunk), size - sent)])
                await w.drain()
                sent += min(len(chunk), size - sent)
        except ConnectionError:
            return f"closed after {sent // 1_000_000} MB: " + (await r.read(200)).decode(errors="replace").strip()[:50]
        w.write(b" pw\r\n")
        await w.drain()
        reply = await asyncio.wait_for(r.readline(), 30)
        w.close()
        return "sent all: " + reply.decode(errors="replace").strip()[:60]

    t0 = time.monotonic()
    outcomes = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    elapsed = time.monotonic() - t0
    await asyncio.sleep(0.5)
    return {"rss_before_mb": before / 1024, "rss_peak_mb": rss_kb(pid, "VmHWM") / 1024,
            "rss_after_mb": rss_kb(pid) / 1024, "seconds": elapsed,
            "outcomes": sorted({str(o) for o in outcomes})}


async def append_upload(relay: Relay, n: int = 6, size: int = 20_000_000) -> dict:
    """Logged-in users each APPEND a 20 MB message (under the 25 MiB limit), in 1 MB writes
    with a pause between them, as a slow client would; RSS while the uploads are in flight."""
    host, port = relay.listeners["imap"]
    pid = relay.proc.pid
    before = rss_kb(pid)
    chunk = b"x" * 1_000_000 + b"\r\n"
    mid = []
    logged_in = asyncio.Event()
    count = [0]
    after_login = []

    async def one(i: int) -> str:
        r, w = await asyncio.open_connection(host, port)
        await r.readline()
        w.write(b"l LOGIN %s %s\r\n" % (USER.encode(), PASSWORD.encode()))
        await w.drain()
        while not (await r.readline()).startswith(b"l "):
            pass
        count[0] += 1
        if count[0] == n:   # scrypt's 16 MB per login stays in malloc arenas: measure from here
            await asyncio.sleep(0.3)
            after_login.append(rss_kb(pid))
            logged_in.set()
        await logged_in.wait()
        body = b"Subject: big\r\n\r\n"
        total = len(body) + (size // len(chunk)) * len(chunk)
        w.write(b"a APPEND INBOX {%d}\r\n" % total)
        await w.drain()
        if not (await r.readline()).startswith(b"+"):
            return "refused"
        w.write(body)
        for k in range(size // len(chunk)):
            w.write(chunk)
            await w.drain()
            await asyncio.sleep(0.05)
            if i == 0 and k == 15:
                mid.append(rss_kb(pid))
        w.write(b"\r\n")
        await w.drain()
        line = b""
        while not line.startswith(b"a "):
            line = await r.readline()
        w.close()
        return line.decode(errors="replace").strip()[:40]

    outcomes = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    await asyncio.sleep(0.5)
    return {"rss_before_mb": before / 1024, "rss_after_logins_mb": after_login[0] / 1024,
            "rss_mid_upload_mb": (mid[0] if mid else 0) / 1024,
            "rss_peak_mb": rss_kb(pid, "VmHWM") / 1024, "rss_after_mb": rss_kb(pid) / 1024,
            "outcomes": sorted({str(o) for o in outcomes})}


async def smtp_data_lines(relay: Relay, n: int = 6, mb: int = 4) -> dict:
    """Strangers on the MX port each send a message of ``mb`` MB of empty lines (aiosmtpd kept
    one bytearray per line: ~60 bytes of memory per 2 bytes sent)."""
    host, port = relay.listeners["smtp"]
    pid = relay.proc.pid
    before = rss_kb(pid)

    async def one(i: int) -> str:
        r, w = await asyncio.open_connection(host, port)
        await r.readline()
        w.write(b"EHLO x\r\nMAIL FROM:<a@elsewhere.example>\r\nRCPT TO:<%s>\r\nDATA\r\n" % USER.encode())
        await w.drain()
        while not (line := await r.readline()).startswith(b"354"):
            if line[:1] in (b"4", b"5"):
                return line.decode(errors="replace").strip()[:40]
        w.write(b"Subject: blank\r\n\r\n")
        for _ in range(mb):
            w.write(b"\r\n" * 500_000)
            await w.drain()
        w.write(b".\r\n")
        await w.drain()
        line = await asyncio.wait_for(r.readline(), 120)
        w.close()
        return line.decode(errors="replace").strip()[:30]

    t = time.monotonic()
    outcomes = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    return {"rss_before_mb": before / 1024, "rss_peak_mb": rss_kb(pid, "VmHWM") / 1024,
            "seconds": time.monotonic() - t, "outcomes": sorted({str(o)[:14] for o in outcomes})}


# --------------------------------------------------------------------------- RCPT flood
FLOOD = r"""
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port))
f = s.makefile("rb")
f.readline()
s.sendall(b"EHLO flood.example\r\n")
while not f.readline().startswith(b"250 "):
    pass
t = time.perf_counter()
s.sendall(b"MAIL FROM:<x@flood.example>\r\n" + b"".join(
    b"RCPT TO:<victim%d@elsewhere.example>\r\n" % i for i in range(n)))
replies, last = 0, b""
try:
    while replies < n + 1:
        line = f.readline()
        if not line:
            break
        replies += 1
        last = line
except OSError:
    pass
print(f"{time.perf_counter() - t}\t{replies}\t{last.decode(errors='replace').strip()[:70]}")
"""

async def rcpt_flood(relay: Relay, n: int = 10_000) -> dict:
    stop = asyncio.Event()
    lat: dict[str, list[float]] = {"imap": [], "pop3": []}

    async def probe_imap():
        r, w = await asyncio.open_connection(*relay.listeners["imap"])
        await r.readline()
        i = 0
        while not stop.is_set():
            i += 1
            t = time.perf_counter()
            w.write(b"p%d NOOP\r\n" % i)
            await w.drain()
            while not (await r.readline()).startswith(b"p%d " % i):
                pass
            lat["imap"].append(time.perf_counter() - t)
            await asyncio.sleep(0.01)
        w.close()

    async def probe_pop3():
        r, w = await asyncio.open_connection(*relay.listeners["pop3"])
        await r.readline()
        while not stop.is_set():
            t = time.perf_counter()
            w.write(b"CAPA\r\n")
            await w.drain()
            while (await r.readline()) not in (b".\r\n", b""):
                pass
            lat["pop3"].append(time.perf_counter() - t)
            await asyncio.sleep(0.01)
        w.close()

    async def flood() -> tuple[float, int, str]:
        # in its own process, so reading 10,000 replies does not slow the probes' event loop
        host, port = relay.listeners["smtp"]
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", FLOOD, host, str(port), str(n),
                                                    stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        secs, replies, last = out.decode().split("\t", 2)
        return float(secs), int(replies), last.strip()

    probes = [asyncio.ensure_future(probe_imap()), asyncio.ensure_future(probe_pop3())]
    await asyncio.sleep(0.5)
    base = {k: list(v) for k, v in lat.items()}
    for v in lat.values():
        v.clear()
    secs, replies, last = await flood()
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*probes, return_exceptions=True)
    out = {"flood_seconds": secs, "flood_replies": replies, "flood_last_reply": last}
    for k, v in lat.items():
        out[f"{k}_idle_max_ms"] = max(base[k]) * 1000 if base[k] else None
        out[f"{k}_max_ms"] = max(v) * 1000 if v else None
        out[f"{k}_p95_ms"] = statistics.quantiles(v, n=20)[-1] * 1000 if len(v) > 2 else None
    return out


# --------------------------------------------------------------------------- guessing
async def imap_tls(host: str, port: int, source: str = "127.0.0.1"):
    """An IMAP connection from ``source`` after STARTTLS (plaintext LOGIN is for 127.0.0.1 only)."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    r, w = await asyncio.open_connection(sock=sock)
    await r.readline()
    w.write(b"s STARTTLS\r\n")
    await w.drain()
    while not (await r.readline()).startswith(b"s "):
        pass
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    await w.start_tls(ctx)
    return r, w


async def guessing(relay: Relay, conns: int = 30, seconds: float = 15.0) -> dict:
    host, port = relay.listeners["imap"]
    counts = {"no": 0, "other": 0}
    conns_made = await asyncio.gather(*(imap_tls(host, port) for _ in range(conns)), return_exceptions=True)
    deadline = time.monotonic() + seconds

    async def guesser(i: int):
        try:
            if isinstance(conns_made[i], BaseException):
                counts["other"] += 1
                return
            r, w = conns_made[i]
            k = 0
            while time.monotonic() < deadline:
                k += 1
                w.write(b"g%d LOGIN %s wrong%d-%d\r\n" % (k, USER.encode(), i, k))
                await w.drain()
                try:
                    line = await asyncio.wait_for(r.readline(), max(0.01, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                if not line:
                    counts["other"] += 1
                    # disconnected: reconnect, as an attacker would
                    r, w = await imap_tls(host, port)
                    continue
                counts["no" if b" NO " in line else "other"] += 1
            w.close()
        except (ConnectionError, OSError):
            counts["other"] += 1

    async def owner() -> tuple[float, str]:
        await asyncio.sleep(seconds / 2)
        t = time.monotonic()
        r, w = await imap_tls(host, port, "127.0.0.2")
        w.write(b"o1 LOGIN %s %s\r\n" % (USER.encode(), PASSWORD.encode()))
        await w.drain()
        line = await asyncio.wait_for(r.readline(), 60)
        w.close()
        return time.monotonic() - t, line.decode(errors="replace").strip()[:40]

    t0 = time.monotonic()
    own = asyncio.ensure_future(owner())
    await asyncio.gather(*(guesser(i) for i in range(conns)))
    secs = time.monotonic() - t0
    own_secs, own_reply = await own
    return {"guesses_answered": counts["no"], "other_replies": counts["other"], "seconds": secs,
            "guesses_per_s": counts["no"] / secs, "owner_login_s": own_secs, "owner_reply": own_reply}


async def main_async(args) -> None:
    results = {}
    plus = lambda relay: literal_attack(relay, plus=True)   # noqa: E731
    for name, fn in (("literal", literal_attack), ("literal+", plus), ("append", append_upload),
                     ("smtp-data", smtp_data_lines),
                     ("flood", rcpt_flood), ("flood-no-cutoff", rcpt_flood), ("guess", guessing)):
        if name not in args.only:
            continue
        # flood-no-cutoff: the error limit out of the way, to see the yielding alone
        extra = "[limits]\nmax_errors = 10000\n" if name == "flood-no-cutoff" else ""
        with tempfile.TemporaryDirectory() as d:
            relay = Relay(Path(args.src).resolve(), Path(d), extra)
            relay.start()
            try:
                if name == "guess":
                    results[name] = await fn(relay, seconds=args.guess_seconds)
                else:
                    results[name] = await fn(relay)
            finally:
                relay.stop()
    print(f"relay source: {args.src}")
    for name, res in results.items():
        print(f"\n{name}")
        print(f"  {'measure':<22} value")
        for k, v in res.items():
            print(f"  {k:<22} {v:.1f}" if isinstance(v, float) else f"  {k:<22} {v}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=str(ROOT), help="source tree holding the relay package")
    p.add_argument("--only", default="literal,literal+,append,smtp-data,flood,guess")
    p.add_argument("--guess-seconds", type=float, default=15.0)
    args = p.parse_args()
    args.only = set(args.only.split(","))
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
