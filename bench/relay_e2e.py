"""End-to-end relay benchmark: submission at crepes.fr → file in bob's Maildir at hamburger.edu.

    python bench/relay_e2e.py                  # 1,000 messages over 10 submission sessions
    python bench/relay_e2e.py --quick          # 100 messages
    python bench/relay_e2e.py --messages 5000 --sessions 20
    python bench/relay_e2e.py --rate 200       # a steady offered load of 200 msg/s instead of flat out
    python bench/relay_e2e.py --postfix        # and the same load through two Postfix instances

Two relays run as separate processes (``python -m relay start --foreground``) under a temp dir
on free loopback ports: crepes.fr (submission with AUTH, static route for hamburger.edu) and
hamburger.edu (inbound SMTP, local Maildir delivery). This process is the load: N sessions
each log in once as alice@crepes.fr and send their share of 1 KB messages back to back, while
a watcher polls bob's ``new/`` every 2 ms and matches each file to its submission by an
``X-Bench-Seq`` header.

With ``--postfix`` the same load then goes through two Postfix instances configured under temp
dirs (tests/postfix_peer.py): the first accepts from loopback without AUTH (mynetworks) and
relays hamburger.edu to the second by a transport map; the second delivers into bob's Maildir
(virtual(8)). Like our relays they speak opportunistic STARTTLS between them
(``smtp_tls_security_level = may`` / ``smtpd_tls_security_level = may`` with a self-signed
certificate; ``--postfix-tls none`` for the stock plaintext hop). Stock otherwise: up to 20
parallel deliveries per destination.

Reported side by side (relay | Postfix | ratio): the offered load, submitted msg/s (first MAIL →
last 250), end-to-end msg/s (first MAIL → last file in bob's Maildir) and its share of the
submitted rate, latency from the start of each message's submission to its file appearing
(p50/p95/max; the 2 ms polling is part of it), CPU per message (user+sys of all the processes
of both hops from /proc — for Postfix the master, its live daemons and the ones it reaped —
independent of the load others put on the machine), how many SMTP connections the first hop
opened to the second, and the load average before and after.

Issue 14's goal: at ``--rate 200`` end to end ≥ 0.8× the accept rate and p95 < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.config import load_config  # noqa: E402
from relay.users import UserDB  # noqa: E402

PASSWORD = "bench-password"
SEQ = re.compile(rb"^X-Bench-Seq: (\d+)\r?$", re.M)


def proc_cpu(pid: int, children: bool = False) -> float:
    """CPU seconds (user+sys) of a process from /proc, plus its reaped children's if asked."""
    try:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def postfix_cpu(masters: list[int]) -> float:
    """All CPU the Postfix instances used so far: each master with what it reaped, plus its
    daemons still alive (smtpd, smtp, qmgr, cleanup, virtual, ...)."""
    total = sum(proc_cpu(m, children=True) for m in masters)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int((Path("/proc") / entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid in masters:
                total += proc_cpu(int(entry))
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def message(i: int) -> bytes:
    head = (f"From: Alice <alice@crepes.fr>\r\nTo: <bob@hamburger.edu>\r\nSubject: bench {i}\r\n"
            f"X-Bench-Seq: {i}\r\nMessage-ID: <{i}.{time.time_ns()}@crepes.fr>\r\n\r\n").encode()
    line = b"Ketchup or mustard? The quick brown fox jumps over the lazy dog. 0123456789\r\n"
    body = line * ((1024 - len(head)) // len(line) + 1)
    return (head + body)[:1022] + b"\r\n"


class Relay:
    """One relay process with its own config and data dir."""

    def __init__(self, root: Path, name: str, toml: str, user: str):
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.config = self.dir / "relay.toml"
        self.config.write_text(toml)
        self.cfg = load_config(self.config, self.dir / "data")
        self.cfg.data_dir.mkdir(mode=0o700)
        UserDB(self.cfg.users_file).add(user, PASSWORD)
        self.proc: subprocess.Popen | None = None

    uvloop = False  # --uvloop: run the relays on uvloop's event loop (a measurement, not a feature)

    def start(self) -> None:
        run = (["-c", "import sys, uvloop; uvloop.install(); from relay.cli import main; sys.exit(main(sys.argv[1:]))"]
               if self.uvloop else ["-m", "relay"])
        self.proc = subprocess.Popen(
            [sys.executable, *run, "start", "--foreground", "--quiet-stderr",
             "--config", str(self.config), "--data-dir", str(self.cfg.data_dir)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "stderr", "wb"))

    def wait_ready(self, ports: list[int], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.dir.name} exited: {(self.dir / 'stderr').read_text()[-2000:]}")
            try:
                for p in ports:
                    socket.create_connection(("127.0.0.1", p), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"{self.dir.name} did not come up in {timeout:.0f}s")

    def cpu_seconds(self) -> float:
        """User + system CPU time the relay process has used so far (Linux /proc)."""
        try:
            fields = (Path("/proc") / str(self.proc.pid) / "stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError, AttributeError):
            return float("nan")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def watch(maildir: Path, total: int, arrived: dict[int, float], deadline: float) -> None:
    seen: set[str] = set()
    while len(arrived) < total and time.monotonic() < deadline:
        try:
            names = os.listdir(maildir)
        except FileNotFoundError:
            names = []
        now = time.monotonic()
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            with open(maildir / name, "rb") as f:
                m = SEQ.search(f.read(4096))
            if m:
                arrived.setdefault(int(m.group(1)), now)
        await asyncio.sleep(0.002)


async def submit(port: int, seqs: list[int], started: dict[int, float], accepted: dict[int, float],
                 schedule: dict[int, float] | None = None, auth: bool = True) -> None:
    login = {"username": "alice@crepes.fr", "password": PASSWORD} if auth else {}
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=60, **login) as smtp:
        for i in seqs:
            data = message(i)
            if schedule is not None:  # steady offered load: wait for this message's slot
                await asyncio.sleep(max(0.0, schedule[i] - time.monotonic()))
            started[i] = time.monotonic()
            await smtp.sendmail("alice@crepes.fr", ["bob@hamburger.edu"], data)
            accepted[i] = time.monotonic()


async def run(total: int, sessions: int, sub_port: int, maildir: Path, rate: float = 0.0, auth: bool = True) -> dict:
    started: dict[int, float] = {}
    accepted: dict[int, float] = {}
    arrived: dict[int, float] = {}
    t0 = time.monotonic()
    watcher = asyncio.create_task(watch(maildir, total, arrived, t0 + 120 + total * 0.05))
    shares = [list(range(s, total, sessions)) for s in range(sessions)]
    # with --rate, message i is due at t0 + i/rate; a late session does not catch up faster
    schedule = {i: t0 + 0.2 + i / rate for i in range(total)} if rate else None
    await asyncio.gather(*(submit(sub_port, share, started, accepted, schedule, auth) for share in shares))
    t_accepted = max(accepted.values())
    await watcher
    if len(arrived) < total:
        raise SystemExit(f"only {len(arrived)} of {total} messages arrived in bob's Maildir")
    lat = sorted((arrived[i] - started[i]) * 1000 for i in range(total))
    return {"submitted_rate": total / (t_accepted - t0), "e2e_rate": total / (max(arrived.values()) - t0),
            "p50": statistics.median(lat), "p95": lat[int(0.95 * (len(lat) - 1))], "max": lat[-1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="100 messages")
    ap.add_argument("--rate", type=float, default=0.0, help="steady offered load in msg/s (default: flat out)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, Maildirs)")
    ap.add_argument("--postfix", action="store_true", help="also run the load through two Postfix instances")
    ap.add_argument("--uvloop", action="store_true", help="run both relays on uvloop (pip install uvloop)")
    ap.add_argument("--postfix-tls", choices=("may", "none"), default="may",
                    help="STARTTLS between the two Postfix instances (may, as our relays) or none (stock)")
    args = ap.parse_args(argv)
    total = 100 if args.quick else args.messages
    Relay.uvloop = args.uvloop
    tmp = Path(tempfile.mkdtemp(prefix="tui-mail-e2e-"))
    ham_port, crepes_smtp, crepes_sub = free_port(), free_port(), free_port()
    common = '[queue]\nfirst_retry = "1s"\n'
    hamburger = Relay(tmp, "hamburger.edu", (
        f'hostname = "hamburger.edu"\ndomains = ["hamburger.edu"]\n[listen]\nsmtp = "127.0.0.1:{ham_port}"\n'
        f'submission = ""\nimap = ""\npop3 = ""\n{common}'), "bob@hamburger.edu")
    crepes = Relay(tmp, "crepes.fr", (
        f'hostname = "crepes.fr"\ndomains = ["crepes.fr"]\n[listen]\nsmtp = "127.0.0.1:{crepes_smtp}"\n'
        f'submission = "127.0.0.1:{crepes_sub}"\nimap = ""\npop3 = ""\n{common}'
        f'[routes]\n"hamburger.edu" = "127.0.0.1:{ham_port}"\n'), "alice@crepes.fr")
    try:
        hamburger.start()
        crepes.start()
        hamburger.wait_ready([ham_port])
        crepes.wait_ready([crepes_smtp, crepes_sub])
        maildir = hamburger.cfg.mail_dir / "bob@hamburger.edu" / "new"
        load = f"offered at {args.rate:g} msg/s" if args.rate else "flat out"
        print(f"relay e2e: {total} messages of 1 KB, {args.sessions} submission sessions {load}, "
              f"crepes.fr → hamburger.edu on loopback (data in {tmp})")
        cpu0 = crepes.cpu_seconds(), hamburger.cpu_seconds()
        load = [os.getloadavg()[0]]
        r = asyncio.run(run(total, args.sessions, crepes_sub, maildir, args.rate))
        cpu = crepes.cpu_seconds() - cpu0[0], hamburger.cpu_seconds() - cpu0[1]
        load.append(os.getloadavg()[0])
    finally:
        crepes.stop()
        hamburger.stop()
    log = crepes.cfg.log_file.read_text(errors="replace") if crepes.cfg.log_file.exists() else ""
    r["connections"] = log.count("smtp: connected to")
    r["cpu"] = (cpu[0] + cpu[1]) / total * 1000
    r["cpu_detail"] = f"crepes.fr {cpu[0] / total * 1000:.2f} + hamburger.edu {cpu[1] / total * 1000:.2f}"
    r["load"] = load
    p = run_postfix(total, args.sessions, args.rate, args.postfix_tls) if args.postfix else None
    print_table(r, p, args.rate, args.postfix_tls)
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def print_table(r: dict, p: dict | None, rate: float, postfix_tls: str) -> None:
    offered = f"{rate:g} msg/s" if rate else "flat out"
    rows = [("offered load", offered, offered, None),
            ("submitted (msg/s)", f"{r['submitted_rate']:.1f}", p and f"{p['submitted_rate']:.1f}",
             p and r["submitted_rate"] / p["submitted_rate"]),
            ("end to end (msg/s)", f"{r['e2e_rate']:.1f}", p and f"{p['e2e_rate']:.1f}", p and r["e2e_rate"] / p["e2e_rate"]),
            ("end to end / submitted", f"{r['e2e_rate'] / r['submitted_rate']:.2f}",
             p and f"{p['e2e_rate'] / p['submitted_rate']:.2f}", None),
            ("end to end / Postfix's submitted", p and f"{r['e2e_rate'] / p['submitted_rate']:.2f}", "", None),
            ("latency p50 (ms)", f"{r['p50']:.1f}", p and f"{p['p50']:.1f}", p and r["p50"] / p["p50"]),
            ("latency p95 (ms)", f"{r['p95']:.1f}", p and f"{p['p95']:.1f}", p and r["p95"] / p["p95"]),
            ("latency max (ms)", f"{r['max']:.1f}", p and f"{p['max']:.1f}", p and r["max"] / p["max"]),
            ("CPU per message, both hops (ms)", f"{r['cpu']:.2f}", p and f"{p['cpu']:.2f}", p and r["cpu"] / p["cpu"]),
            ("SMTP connections hop 1 → hop 2", str(r["connections"]), p and str(p["connections"]), None),
            ("load average before → after", "{:.1f} → {:.1f}".format(*r["load"]),
             p and "{:.1f} → {:.1f}".format(*p["load"]), None)]
    w = max(len(n) for n, *_ in rows)
    print(f"  {'':{w}}  {'relay':>14}  {'Postfix':>14}  {'ratio':>6}")
    for name, ours, theirs, ratio in rows:
        print(f"  {name:{w}}  {ours or '':>14}  {theirs or ('' if p else 'not run'):>14}  "
              f"{'' if ratio is None else f'{ratio:.2f}':>6}")
    print(f"  relay CPU: {r['cpu_detail']} ms per message{' (uvloop)' if Relay.uvloop else ''}; "
          "the relays use STARTTLS between the hops, "
          f"Postfix {'too' if postfix_tls == 'may' else 'does not (--postfix-tls none)'}")
    if rate:
        ok = r["e2e_rate"] >= 0.8 * r["submitted_rate"] and r["p95"] < 1000
        print(f"  goal (end to end >= 0.8x submitted, p95 < 1 s at {rate:g} msg/s offered): {'met' if ok else 'NOT met'}")


def run_postfix(total: int, sessions: int, rate: float, tls: str = "may") -> dict:
    """The same load through Postfix A (relaying by transport map) → Postfix B (Maildir)."""
    from tests.postfix_peer import Postfix, make_cert

    class RelayingPostfix(Postfix):
        def __init__(self, next_hop: int):
            super().__init__(domain="crepes.fr", users=("alice",))
            self.next_hop = next_hop

        def _config(self) -> str:
            return (super()._config().replace("virtual_mailbox_domains = static:all", "virtual_mailbox_domains = crepes.fr")
                    + f"transport_maps = texthash:{self.conf_dir}/transport\n"
                    + ("smtp_tls_security_level = may\nsmtp_tls_loglevel = 1\n" if tls == "may" else ""))

        def start(self, timeout: float = 15.0):
            self.conf_dir.mkdir(parents=True, exist_ok=True)
            (self.conf_dir / "transport").write_text(f"hamburger.edu smtp:[127.0.0.1]:{self.next_hop}\n")
            return super().start(timeout)

    class TLSPostfix(Postfix):
        def _config(self) -> str:
            if tls != "may":
                return super()._config()
            cert, key = make_cert(self.conf_dir)
            return super()._config() + (f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {cert}\n"
                                        f"smtpd_tls_key_file = {key}\n")

    b = TLSPostfix(domain="hamburger.edu", users=("bob",))
    a = RelayingPostfix(b.port)
    try:
        b.start()
        a.start()
        masters = [m for m in (a._master_pid(), b._master_pid()) if m]
        cpu0, load = postfix_cpu(masters), [os.getloadavg()[0]]
        r = asyncio.run(run(total, sessions, a.port, b.maildir("bob") / "new", rate, auth=False))
        r["cpu"] = (postfix_cpu(masters) - cpu0) / total * 1000
        r["load"] = load + [os.getloadavg()[0]]
        log = a.log_text()
        # one "TLS connection established" line per connection (smtp_tls_loglevel = 1); a
        # plaintext connection leaves no line of its own
        r["connections"] = log.count("TLS connection established to") or "?"
        if tls == "may" and r["connections"] == "?":
            print("  warning: Postfix A's log shows no TLS connection to Postfix B")
        return r
    finally:
        a.cleanup()
        b.cleanup()


if __name__ == "__main__":
    sys.exit(main())
