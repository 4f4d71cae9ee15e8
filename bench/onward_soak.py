"""Soak: SIGKILL both relays under load, then count what was lost and what arrived twice.

    python bench/onward_soak.py                   # 60 s of load, a kill every 2-5 s
    python bench/onward_soak.py --duration 20 --senders 2

A tool, not a CI test (it runs for a minute and its figures depend on the machine). Two relay
processes on loopback, as in bench/relay_e2e.py: crepes.fr (submission, static route) relays
to hamburger.edu (Maildir). ``--senders`` sessions submit 1 KB messages to crepes.fr back to
back, each tagged with a sequence number; every 2-5 s one of the two relays, picked at random,
is SIGKILLed and started again at once. At the end the load stops, both relays drain their
queues, and bob's Maildir is counted against what crepes.fr acknowledged:

* lost: acknowledged with 250 by crepes.fr, never in bob's Maildir (must be 0);
* duplicated: extra copies in bob's Maildir. SMTP cannot avoid the messages inside the window
  between the receiver committing a message and the sender recording its 250: at most one per
  open connection per kill (``--connections 1`` shows the one-per-kill bound);
* never sent: in the Maildir without ever having been sent in full (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiosmtplib

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from relay_e2e import PASSWORD, Relay, free_port, message  # noqa: E402

SEQ = re.compile(rb"^X-Bench-Seq: (\d+)\r?$", re.M)


class Restartable(Relay):
    def __init__(self, *a, ports: list[int], **kw):
        super().__init__(*a, **kw)
        self.ports = ports
        self.kills = 0

    def restart(self) -> None:
        state = self.cfg.state_file
        if state.exists():
            state.unlink()  # a SIGKILLed relay leaves its state file behind
        self.start()
        self.wait_ready(self.ports)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def queue_files(self) -> list[str]:
        active = self.cfg.queue_dir / "active"
        return os.listdir(active) if active.exists() else []


async def sender(port: int, seqs, acked: set[int], sent_in_full: set[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10,
                               username="alice@crepes.fr", password=PASSWORD)
        try:
            await smtp.connect()
            while not stop.is_set():
                seq = next(seqs)
                await smtp.mail("alice@crepes.fr")
                await smtp.rcpt("bob@hamburger.edu")
                sent_in_full.add(seq)  # from here on crepes.fr may have it (DATA could complete)
                resp = await smtp.data(message(seq))
                if resp.code == 250:
                    acked.add(seq)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.05)  # the relay is down: try again shortly
        finally:
            smtp.close()


async def soak(args, crepes: Restartable, hamburger: Restartable, sub_port: int) -> dict:
    rng = random.Random(args.seed)
    acked: set[int] = set()
    sent_in_full: set[int] = set()
    seqs = iter(range(10 ** 9))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(sender(sub_port, seqs, acked, sent_in_full, stop)) for _ in range(args.senders)]
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.duration:
        await asyncio.sleep(rng.uniform(2.0, 5.0))
        victim = rng.choice([crepes, hamburger])
        victim.kill()
        await asyncio.to_thread(victim.restart)
        print(f"  {time.monotonic() - t0:5.1f}s  killed and restarted {victim.dir.name:<14} "
              f"(accepted so far {len(acked)})", flush=True)
    stop.set()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - t0
    deadline = time.monotonic() + args.drain
    while (crepes.queue_files() or hamburger.queue_files()) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return {"acked": acked, "sent_in_full": sent_in_full, "elapsed": elapsed,
            "left": len(crepes.queue_files()) + len(hamburger.queue_files())}


def delivered(maildir_root: Path) -> Counter:
    seqs: Counter = Counter()
    for sub in ("new", "cur"):
        d = maildir_root / sub
        for name in os.listdir(d) if d.exists() else []:
            with open(d / name, "rb") as f:
                m = SEQ.search(f.read(4096))
            if m:
                seqs[int(m.group(1))] += 1
    return seqs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load with kills")
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--drain", type=float, default=60.0, help="seconds allowed to empty the queues at the end")
    ap.add_argument("--connections", type=int, default=4,
                    help="crepes.fr's max_connections_per_destination (messages in flight to hamburger.edu)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(10 ** 6)
    tmp = Path(tempfile.mkdtemp(prefix="tui-mail-soak-"))
    ham_port, crepes_sub = free_port(), free_port()
    common = '[queue]\nfirst_retry = "1s"\nretry_interval = "2s"\n'
    hamburger = Restartable(tmp, "hamburger.edu", (
        f'hostname = "hamburger.edu"\ndomains = ["hamburger.edu"]\n[listen]\nsmtp = "127.0.0.1:{ham_port}"\n'
        f'submission = ""\nimap = ""\npop3 = ""\n{common}'), "bob@hamburger.edu", ports=[ham_port])
    crepes = Restartable(tmp, "crepes.fr", (
        f'hostname = "crepes.fr"\ndomains = ["crepes.fr"]\n[listen]\nsmtp = ""\n'
        f'submission = "127.0.0.1:{crepes_sub}"\nimap = ""\npop3 = ""\n{common}'
        f'[delivery]\nmax_connections_per_destination = {args.connections}\n'
        f'[routes]\n"hamburger.edu" = "127.0.0.1:{ham_port}"\n'), "alice@crepes.fr", ports=[crepes_sub])
    print(f"onward soak: {args.senders} senders for {args.duration:.0f}s, up to {args.connections} connection(s) "
          f"crepes.fr -> hamburger.edu, a SIGKILL of either relay every 2-5 s, --seed {args.seed} (data in {tmp})")
    try:
        hamburger.restart()
        crepes.restart()
        r = asyncio.run(soak(args, crepes, hamburger, crepes_sub))
    finally:
        crepes.stop()
        hamburger.stop()
    got = delivered(hamburger.cfg.mail_dir / "bob@hamburger.edu")
    acked, sent = r["acked"], r["sent_in_full"]
    lost = acked - set(got)
    extra = sum(n - 1 for n in got.values() if n > 1)
    never_sent = set(got) - sent
    kills = crepes.kills + hamburger.kills
    print(f"  accepted       {len(acked):8d} messages in {r['elapsed']:.0f}s ({len(acked) / r['elapsed']:.0f} msg/s)")
    print(f"  kills          {kills:8d} (crepes.fr {crepes.kills}, hamburger.edu {hamburger.kills})")
    print(f"  lost           {len(lost):8d}")
    print(f"  duplicated     {extra:8d} extra copies ({extra / max(1, kills):.2f} per kill)")
    print(f"  never sent     {len(never_sent):8d}")
    print(f"  left queued    {r['left']:8d}")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if lost or never_sent or r["left"] else 0


if __name__ == "__main__":
    sys.exit(main())
