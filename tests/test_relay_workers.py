"""The multi-process relay (relay/workers.py) under SIGKILL and graceful stop.

Real processes all the way: ``python -m relay start --foreground`` with ``[process] workers =
2`` (a master owning the queue, two workers serving SMTP on the master's sockets), real SMTP
senders (aiosmtplib), real Maildirs. Every message answered 250 must be delivered exactly once
to each recipient after a restart, whoever was killed: a worker (the master restarts it), the
master (the workers follow it), or all of them at once. Duplicates are counted and reported.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiosmtplib
import pytest

from relay.config import parse_config
from relay.errors import ConfigError
from relay.server import pid_alive
from relay.users import UserDB
from relay.workers import worker_count

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
RCPTS = ["bob@example.org", "alice@example.org"]
SENDERS = 12


def body_for(seq: int) -> bytes:
    return (f"From: load@test\r\nTo: bob@example.org\r\nSubject: load {seq}\r\nX-Seq: {seq}\r\n\r\n".encode()
            + (f"line {seq} ".encode() * 30 + b"\r\n") * 6)


class Relay:
    """One multi-process relay in the foreground; ``state`` is its relay.state.json."""

    def __init__(self, tmp: Path, config: str = CONFIG):
        self.cfg = tmp / "relay.toml"
        self.cfg.write_text(config)
        self.data = tmp / "data"
        self.proc: subprocess.Popen | None = None
        self.state: dict = {}
        db = UserDB(self.data / "users")
        for r in RCPTS:
            db.add(r, "pw")

    async def start(self) -> int:
        state = self.data / "relay.state.json"
        if state.exists():
            state.unlink()  # a SIGKILLed master leaves its state file behind
        self.proc = subprocess.Popen([sys.executable, "-m", "relay", "start", "--foreground", "--quiet-stderr",
                                      "--config", str(self.cfg), "--data-dir", str(self.data)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                st = json.loads(state.read_text())
                if st["pid"] == self.proc.pid and len(st["workers"]) == 2:
                    self.state = st
                    return st["listeners"]["smtp"][1]
            except (OSError, ValueError, KeyError):
                pass
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            await asyncio.sleep(0.02)
        raise AssertionError("relay did not start")

    def read_state(self) -> dict:
        return json.loads((self.data / "relay.state.json").read_text())

    @property
    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.state["workers"]]

    def reap(self) -> None:
        self.proc.wait(30)
        self.proc.stderr.close()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.reap()

    def queue_files(self) -> list[str]:
        active = self.data / "queue" / "active"
        return os.listdir(active) if active.exists() else []

    def delivered(self, rcpt: str) -> list[bytes]:
        root = self.data / "mail" / rcpt
        out = []
        for sub in ("new", "cur"):
            d = root / sub
            if d.exists():
                out += [(d / n).read_bytes() for n in os.listdir(d)]
        return out

    async def drain(self) -> None:
        deadline = time.monotonic() + 30
        while self.queue_files() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert self.queue_files() == []


async def wait_gone(pids: list[int], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if pid_alive(p)]}"
        await asyncio.sleep(0.02)


class Load:
    """SENDERS connections sending numbered messages one after another (reconnecting on errors)."""

    def __init__(self):
        self.seqs = iter(range(1, 10 ** 9))
        self.acked: set[int] = set()
        self.sent_in_full: set[int] = set()

    async def sender(self, port: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=5, start_tls=False)
            try:
                await smtp.connect()
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.05)   # a worker is being restarted, or the relay is gone
                continue
            try:
                while not stop.is_set():
                    seq = next(self.seqs)
                    await smtp.mail("load@test")
                    for r in RCPTS:
                        await smtp.rcpt(r)
                    self.sent_in_full.add(seq)   # from here on the relay may have it
                    resp = await smtp.data(body_for(seq))
                    if resp.code == 250:
                        self.acked.add(seq)
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.05)
            finally:
                smtp.close()

    async def run_until(self, port: int, action, rng: random.Random, more: int = 30) -> None:
        """Send until ``more`` further 250s, wait a random moment, run ``action``, send on 0.5 s."""
        stop = asyncio.Event()
        tasks = [asyncio.create_task(self.sender(port, stop)) for _ in range(SENDERS)]
        target = len(self.acked) + more
        deadline = time.monotonic() + 20
        while len(self.acked) < target and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(rng.uniform(0.0, 0.4))
        await action()
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)


def check_exactly_once(relay: Relay, load: Load) -> None:
    print(f"acknowledged: {len(load.acked)}, sent in full: {len(load.sent_in_full)}")
    assert len(load.acked) >= 60, "the load generator hardly got anything through"
    dupes_all = {}
    for rcpt in RCPTS:
        seqs = Counter()
        for data in relay.delivered(rcpt):
            m = re.search(rb"^X-Seq: (\d+)\r$", data, re.M)
            assert m, data[:200]
            seq = int(m.group(1))
            seqs[seq] += 1
            assert data.endswith(body_for(seq)), f"message {seq} damaged"
        dupes_all[rcpt] = sorted(s for s, n in seqs.items() if n > 1)
        missing = load.acked - set(seqs)
        assert not missing, f"acknowledged but never delivered to {rcpt}: {sorted(missing)}"
        unknown = set(seqs) - load.sent_in_full
        assert not unknown, f"delivered but never sent: {sorted(unknown)}"
    print(f"duplicates: {sum(len(d) for d in dupes_all.values())} {dupes_all}")
    assert not any(dupes_all.values()), f"delivered twice: {dupes_all}"


def rng_for_test() -> random.Random:
    seed = os.environ.get("RELAY_KILL_SEED") or str(time.time_ns())
    print(f"RELAY_KILL_SEED={seed}")
    return random.Random(seed)


async def test_sigkill_a_worker_under_load_master_restarts_it(tmp_path):
    rng = rng_for_test()
    relay, load = Relay(tmp_path), Load()
    try:
        port = await relay.start()
        victim = rng.choice(relay.worker_pids)

        async def kill_worker() -> None:
            os.kill(victim, signal.SIGKILL)

        await load.run_until(port, kill_worker, rng)
        # the master restarts it (back-off 0.2 s) and says so in the state file
        deadline = time.monotonic() + 15
        while True:
            st = relay.read_state()
            pids = [w["pid"] for w in st["workers"]]
            if victim not in pids and all(pid_alive(p) for p in pids):
                break
            assert time.monotonic() < deadline, st
            await asyncio.sleep(0.05)
        assert sum(w["restarts"] for w in st["workers"]) == 1
        # the restarted worker serves: more mail gets through after the kill
        before = len(load.acked)

        async def nothing() -> None:
            pass
        await load.run_until(port, nothing, rng, more=20)
        assert len(load.acked) >= before + 20
        await relay.drain()   # the master delivers everything, the dead worker's share included
    finally:
        relay.stop()
    check_exactly_once(relay, load)


async def test_sigkill_the_master_under_load_workers_follow_then_restart_delivers(tmp_path):
    rng = rng_for_test()
    relay, load = Relay(tmp_path), Load()
    try:
        port = await relay.start()
        workers = relay.worker_pids

        async def kill_master() -> None:
            relay.proc.send_signal(signal.SIGKILL)

        await load.run_until(port, kill_master, rng)
        relay.reap()
        await wait_gone(workers)   # PR_SET_PDEATHSIG: no worker outlives the master
        print(f"queue files left by the kill: {len(relay.queue_files())}")
        await relay.start()
        await relay.drain()
    finally:
        relay.stop()
    check_exactly_once(relay, load)


async def test_sigkill_everything_twice_under_load_then_restart_delivers(tmp_path):
    rng = rng_for_test()
    relay, load = Relay(tmp_path), Load()
    try:
        for _ in range(2):
            port = await relay.start()
            pids = [relay.proc.pid, *relay.worker_pids]

            async def kill_all() -> None:
                for p in pids:
                    os.kill(p, signal.SIGKILL)

            await load.run_until(port, kill_all, rng)
            relay.reap()
            await wait_gone(pids)
            print(f"queue files left by the kill: {len(relay.queue_files())}")
        await relay.start()
        await relay.drain()
    finally:
        relay.stop()
    check_exactly_once(relay, load)


async def test_graceful_stop_finishes_open_transactions_in_every_worker(tmp_path):
    relay = Relay(tmp_path)
    try:
        port = await relay.start()
        workers = relay.worker_pids
        # several sessions in the middle of DATA (spread over the workers by the kernel)
        conns = []
        for i in range(6):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            assert (await r.readline()).startswith(b"220")
            w.write(b"EHLO c\r\nMAIL FROM:<load@test>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
            lines = []
            while not lines or not lines[-1].startswith(b"354"):
                lines.append(await r.readline())
            w.write(body_for(1000 + i)[:200])   # half a message: the transaction is open
            await w.drain()
            conns.append((r, w, 1000 + i))
        relay.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        # no new connections once stopping, but the open transactions may finish
        for r, w, seq in conns:
            w.write(body_for(seq)[200:] + b".\r\n")
            await w.drain()
            reply = await asyncio.wait_for(r.readline(), 10)
            assert reply.startswith(b"250"), reply
            w.close()
        await asyncio.to_thread(relay.reap)
        await wait_gone(workers)
        assert not (relay.data / "relay.state.json").exists()
        assert not (relay.data / "control.sock").exists()
        await relay.start()   # what the master did not deliver before stopping goes out now
        await relay.drain()
        got = sorted(int(re.search(rb"^X-Seq: (\d+)\r$", d, re.M).group(1)) for d in relay.delivered("bob@example.org"))
        assert got == [1000 + i for i in range(6)]
    finally:
        relay.stop()


async def test_status_lists_the_workers_and_stop_stops_them_all(tmp_path):
    relay = Relay(tmp_path)
    cli = [sys.executable, "-m", "relay", "--config", str(relay.cfg), "--data-dir", str(relay.data)]
    try:
        await relay.start()
        out = subprocess.run([*cli, "status"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert "workers: 2" in out.stdout
        for pid in relay.worker_pids:
            assert re.search(rf"worker \d  pid {pid}  up \d+s  restarts 0  cpu [\d.]+s  rss \d+ MB", out.stdout), out.stdout
        workers = relay.worker_pids
        out = subprocess.run([*cli, "stop"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "relay stopped" in out.stdout, out
        assert not any(pid_alive(p) for p in workers)
        relay.reap()
    finally:
        relay.stop()


def test_process_workers_setting():
    cfg = parse_config('[process]\nworkers = 3\n', data_dir="/x")
    assert worker_count(cfg) == 3
    auto = parse_config("", data_dir="/x")
    assert auto.process.workers == "auto"
    assert worker_count(auto) == max(1, min(os.cpu_count() or 1, 4))
    sink = parse_config('[process]\nworkers = 3\n[sink]\nenabled = true\n', data_dir="/x")
    assert worker_count(sink) == 1   # the sink is one process
    for bad in ("0", "17", '"many"', "true", "2.5"):
        with pytest.raises(ConfigError, match="process.workers"):
            parse_config(f"[process]\nworkers = {bad}\n", data_dir="/x")


def test_failed_logins_count_in_every_worker(tmp_path):
    """The throttle's failure counts are shared: failures recorded by another process (a worker)
    slow the next attempt here; a success clears the address, not the account."""
    from relay.sharedlimits import SharedAuthThrottle

    path = tmp_path / "auth.table"
    SharedAuthThrottle.create(path)
    here = SharedAuthThrottle(path, base=0.5, maximum=15.0, account_maximum=4.0)
    assert here.delay("192.0.2.7", "bob@example.org") == 0.0
    code = ("import sys; from relay.sharedlimits import SharedAuthThrottle as T; "
            "t = T(sys.argv[1], base=0.5); [t.failed('192.0.2.7', 'bob@example.org') for _ in range(3)]")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
    assert here.delay("192.0.2.7") == 2.0                       # 0.5 · 2² after three failures
    assert here.delay("198.51.100.1", "bob@example.org") == 2.0  # the account, from anywhere
    assert here.delay("198.51.100.1") == 0.0
    other = SharedAuthThrottle(path, base=0.5)                  # a second worker
    other.succeeded("192.0.2.7", "bob@example.org")
    assert here.delay("192.0.2.7") == 0.0
    assert here.delay("198.51.100.1", "bob@example.org") == 2.0
    SharedAuthThrottle.create(path)                             # a new master start: forgotten
    assert SharedAuthThrottle(path).delay("198.51.100.1", "bob@example.org") == 0.0
    here.close()
    other.close()


TLS_CONFIG = CONFIG.replace('pop3 = ""\n', 'pop3 = ""\nimaps = "127.0.0.1:0"\npop3s = "127.0.0.1:0"\n'
                            'submissions = "127.0.0.1:0"\n')


async def test_implicit_tls_listeners_are_served_by_the_workers(tmp_path):
    """[listen] submissions/imaps/pop3s with workers: mail submitted over implicit TLS is read back
    over IMAPS (several connections, so both workers serve some) and POP3S."""
    import imaplib
    import poplib
    import smtplib
    import ssl

    relay = Relay(tmp_path, TLS_CONFIG)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        await relay.start()
        lst = relay.state["listeners"]

        def session() -> list:
            with smtplib.SMTP_SSL(*lst["submissions"], context=ctx, timeout=20) as s:
                s.login("bob@example.org", "pw")
                s.sendmail("bob@example.org", ["alice@example.org"],
                           b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: over TLS\r\n\r\nhi\r\n")
            deadline = time.monotonic() + 20
            while not relay.delivered("alice@example.org") and time.monotonic() < deadline:
                time.sleep(0.05)
            seen = []
            for _ in range(4):
                m = imaplib.IMAP4_SSL(*lst["imaps"], ssl_context=ctx, timeout=20)
                m.login("alice@example.org", "pw")
                assert m.select("INBOX") == ("OK", [b"1"])
                seen.append(m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1])
                m.logout()
            p = poplib.POP3_SSL(*lst["pop3s"], context=ctx, timeout=20)
            p.user("alice@example.org")
            p.pass_("pw")
            seen.append(p.stat()[0])
            p.quit()
            return seen

        seen = await asyncio.to_thread(session)
        assert seen == [b"Subject: over TLS\r\n\r\n"] * 4 + [1]
    finally:
        relay.stop()
