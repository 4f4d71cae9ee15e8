"""A crash between the peer's 250 and our record resends that one message, not a batch (issue 17).

Two relay processes on loopback: crepes.fr (submission, static route) relays to hamburger.edu
(local Maildir). crepes.fr runs with a test hook that SIGKILLs the process at the worst
moment — right after the N-th onward delivery got its 250 and before its outcome is
recorded. After a restart, every message is in bob's Maildir, and exactly one is there twice:
the one inside SMTP's unavoidable window. (Before issue 17 the outcomes of a whole batch were
recorded together, and a kill resent all of them.)"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiosmtplib

from relay.users import UserDB

PASSWORD = "crash-test-pw"
SEQ = re.compile(rb"^X-Seq: (\d+)\r?$", re.M)

# Runs the relay with QueueRunner._sent_now wrapped — the scheduler's synchronous report of a
# 250, which records the entry as done: SIGKILL after the N-th onward 250, before that record.
# Pipelining matters here: the connection sends the next message's content right after the
# 250 (same step of the loop), so a record made any later would put two messages in the window.
CRASH_HOOK = """
import os, signal, sys
from relay.queue import runner
n, seen = int(sys.argv[1]), [0]
sent_now = runner.QueueRunner._sent_now
def crashing_sent_now(self, qid, recipients):
    seen[0] += 1
    if seen[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return sent_now(self, qid, recipients)
runner.QueueRunner._sent_now = crashing_sent_now
from relay.cli import main
sys.exit(main(sys.argv[2:]))
"""


class Relay:
    def __init__(self, root: Path, name: str, toml: str, user: str):
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.config = self.dir / "relay.toml"
        self.config.write_text(toml)
        self.data = self.dir / "data"
        self.data.mkdir(mode=0o700)
        UserDB(self.data / "users").add(user, PASSWORD)
        self.proc: subprocess.Popen | None = None

    async def start(self, crash_after: int = 0) -> dict:
        state = self.data / "relay.state.json"
        if state.exists():
            state.unlink()  # a SIGKILLed relay leaves its state file behind
        args = ["start", "--foreground", "--quiet-stderr", "--config", str(self.config), "--data-dir", str(self.data)]
        cmd = ([sys.executable, "-c", CRASH_HOOK, str(crash_after), *args] if crash_after
               else [sys.executable, "-m", "relay", *args])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                st = json.loads(state.read_text())
                if st["pid"] == self.proc.pid:
                    return st["listeners"]
            except (OSError, ValueError, KeyError):
                pass
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            await asyncio.sleep(0.02)
        raise AssertionError(f"{self.dir.name} did not start")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(15)
            self.proc.stderr.close()
            self.proc = None

    def queue_files(self) -> list[str]:
        active = self.data / "queue" / "active"
        return os.listdir(active) if active.exists() else []

    def delivered(self, rcpt: str) -> Counter:
        seqs: Counter = Counter()
        for sub in ("new", "cur"):
            d = self.data / "mail" / rcpt / sub
            for name in os.listdir(d) if d.exists() else []:
                m = SEQ.search((d / name).read_bytes())
                seqs[int(m.group(1))] += 1
        return seqs


def body(seq: int) -> bytes:
    return (f"From: alice@crepes.fr\r\nTo: bob@hamburger.edu\r\nSubject: crash {seq}\r\nX-Seq: {seq}\r\n\r\n"
            f"message {seq}\r\n").encode()


async def test_sigkill_between_the_peers_250_and_the_record_resends_one_message(tmp_path, port_factory):
    ham_port = port_factory()
    hamburger = Relay(tmp_path, "hamburger.edu", (
        f'hostname = "hamburger.edu"\ndomains = ["hamburger.edu"]\n[listen]\nsmtp = "127.0.0.1:{ham_port}"\n'
        'submission = ""\nimap = ""\npop3 = ""\n'), "bob@hamburger.edu")
    crepes = Relay(tmp_path, "crepes.fr", (
        'hostname = "crepes.fr"\ndomains = ["crepes.fr"]\n[listen]\nsmtp = ""\nsubmission = "127.0.0.1:0"\n'
        'imap = ""\npop3 = ""\n[queue]\nfirst_retry = "1s"\n'
        # one connection, so the window holds exactly one message; with more connections it holds at
        # most one per connection (the soak in bench/onward_soak.py measures that)
        '[delivery]\nmax_connections_per_destination = 1\n'
        f'[routes]\n"hamburger.edu" = "127.0.0.1:{ham_port}"\n'), "alice@crepes.fr")
    total, crash_after = 60, 25
    try:
        await hamburger.start()
        listeners = await crepes.start(crash_after=crash_after)
        port = listeners["submission"][1]
        acked = 0
        try:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10,
                                       username="alice@crepes.fr", password=PASSWORD) as smtp:
                for seq in range(total):
                    await smtp.sendmail("alice@crepes.fr", ["bob@hamburger.edu"], body(seq))
                    acked += 1
        except (aiosmtplib.SMTPException, OSError):
            pass  # the relay died under us; what it acknowledged is what counts
        assert crepes.proc.wait(15) == -signal.SIGKILL
        crepes.proc.stderr.close()
        crepes.proc = None
        # restart without the hook: recovery sends what was not recorded
        await crepes.start()
        deadline = time.monotonic() + 20
        while (crepes.queue_files() or hamburger.queue_files()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert crepes.queue_files() == [] and hamburger.queue_files() == []
    finally:
        crepes.stop()
        hamburger.stop()
    got = hamburger.delivered("bob@hamburger.edu")
    assert acked >= crash_after
    assert set(range(acked)) <= set(got), f"lost: {sorted(set(range(acked)) - set(got))}"
    dupes = {s: n for s, n in got.items() if n > 1}
    # exactly the one message whose 250 arrived just before the kill, once more
    assert len(dupes) == 1 and set(dupes.values()) == {2}, dupes
