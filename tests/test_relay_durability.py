"""SIGKILL at a random moment under load: every message answered 250 is delivered exactly once
into each local mailbox after a restart, and nothing that was never sent in full appears."""

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

from relay.users import UserDB

CONFIG = """\
hostname = "mx.example.org"
domains = ["example.org"]
[listen]
smtp = "127.0.0.1:0"
submission = ""
imap = ""
pop3 = ""
"""
RCPTS = ["bob@example.org", "alice@example.org"]
SENDERS = 16


def body_for(seq: int) -> bytes:
    return (f"From: load@test\r\nTo: bob@example.org\r\nSubject: load {seq}\r\nX-Seq: {seq}\r\n\r\n".encode()
            + (f"line {seq} ".encode() * 40 + b"\r\n") * 8)


class Relay:
    def __init__(self, tmp: Path):
        self.cfg = tmp / "relay.toml"
        self.cfg.write_text(CONFIG)
        self.data = tmp / "data"
        self.proc: subprocess.Popen | None = None

    async def start(self) -> int:
        state = self.data / "relay.state.json"
        if state.exists():
            state.unlink()  # a SIGKILLed relay leaves its state file behind
        self.proc = subprocess.Popen([sys.executable, "-m", "relay", "start", "--foreground", "--quiet-stderr",
                                      "--config", str(self.cfg), "--data-dir", str(self.data)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                st = json.loads(state.read_text())
                if st["pid"] == self.proc.pid:
                    return st["listeners"]["smtp"][1]
            except (OSError, ValueError, KeyError):
                pass
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            await asyncio.sleep(0.02)
        raise AssertionError("relay did not start")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc.stderr.close()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
            self.proc.stderr.close()
            self.proc = None

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


async def load(port: int, seqs, acked: set[int], sent_in_full: set[int], stop: asyncio.Event) -> None:
    """One sender: messages one after another on one connection, reconnecting on errors."""
    while not stop.is_set():
        try:
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=5, start_tls=False)
            await smtp.connect()
        except (aiosmtplib.SMTPException, OSError):
            return
        try:
            while not stop.is_set():
                seq = next(seqs)
                await smtp.mail("load@test")
                for r in RCPTS:
                    await smtp.rcpt(r)
                sent_in_full.add(seq)  # from here on the relay may have it (DATA could complete)
                resp = await smtp.data(body_for(seq))
                if resp.code == 250:
                    acked.add(seq)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            return
        finally:
            smtp.close()


async def kill_under_load(relay: Relay, port: int, seqs, acked, sent_in_full, rng: random.Random) -> None:
    stop = asyncio.Event()
    senders = [asyncio.create_task(load(port, seqs, acked, sent_in_full, stop)) for _ in range(SENDERS)]
    # get some traffic going whatever the machine's load, then kill at a random moment
    target = len(acked) + 30
    deadline = time.monotonic() + 15
    while len(acked) < target and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(rng.uniform(0.0, 0.6))
    relay.kill()
    stop.set()
    await asyncio.gather(*senders)


async def test_sigkill_under_load_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random(os.environ.get("RELAY_KILL_SEED") or time.time_ns())
    relay = Relay(tmp_path)
    db = UserDB(relay.data / "users")
    for r in RCPTS:
        db.add(r, "pw")
    counter = iter(range(1, 10 ** 9))
    acked: set[int] = set()
    sent_in_full: set[int] = set()
    try:
        # round 1: kill while accepting and delivering
        port = await relay.start()
        await kill_under_load(relay, port, counter, acked, sent_in_full, rng)
        print(f"queue files left by the first kill: {len(relay.queue_files())}")
        # round 2: restart (recovery delivers the leftovers) and kill again under new load
        port = await relay.start()
        await kill_under_load(relay, port, counter, acked, sent_in_full, rng)
        # final restart: let the queue drain
        await relay.start()
        deadline = time.monotonic() + 20
        while relay.queue_files() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert relay.queue_files() == []
    finally:
        relay.stop()

    print(f"acknowledged: {len(acked)}, sent in full: {len(sent_in_full)}")
    assert len(acked) >= 60, "the load generator hardly got anything through"
    for rcpt in RCPTS:
        got = relay.delivered(rcpt)
        seqs = Counter()
        for data in got:
            m = re.search(rb"^X-Seq: (\d+)\r$", data, re.M)
            assert m, data[:200]
            seq = int(m.group(1))
            seqs[seq] += 1
            assert data.endswith(body_for(seq)), f"message {seq} damaged"
            assert data.startswith(f"Return-Path: <load@test>\r\nDelivered-To: {rcpt}\r\nReceived: ".encode())
        dupes = [s for s, n in seqs.items() if n > 1]
        assert dupes == [], f"delivered twice to {rcpt}: {dupes}"
        missing = acked - set(seqs)
        assert not missing, f"acknowledged but never delivered to {rcpt}: {sorted(missing)}"
        unknown = set(seqs) - sent_in_full
        assert not unknown, f"delivered but never sent: {sorted(unknown)}"
