"""SORT, THREAD and ESEARCH on a big mailbox: the relay's IMAP server beside Dovecot.

    .venv/bin/python bench/imap_sort.py                  # 10,000 and 100,000 messages
    .venv/bin/python bench/imap_sort.py --sizes 2000     # a smoke run

A Maildir of N messages in threads (a root and replies with In-Reply-To/References and
"Re:" subjects, several senders, spread dates) is written once and copied for each server;
after a first SELECT (the relay indexes the Maildir, Dovecot builds its index) each command
runs 3 times on one raw socket connection and the median is reported, plus the first run
(Dovecot fills its sort/thread caches then; the relay reads its index every time). The
answers of the two servers are compared too: the table says "same" when they are identical.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import random
import statistics
import sys
import tempfile
import time
from email.utils import format_datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import imap_server as base  # noqa: E402  (bench/imap_server.py: Raw, the relay process, Dovecot)

COMMANDS = [
    "SORT (SUBJECT) UTF-8 ALL",
    "SORT (REVERSE DATE) UTF-8 ALL",
    "SORT (FROM ARRIVAL) UTF-8 ALL",
    "SORT (DISPLAYFROM) UTF-8 ALL",
    "THREAD REFERENCES UTF-8 ALL",
    "THREAD ORDEREDSUBJECT UTF-8 ALL",
    "SORT RETURN (MIN MAX COUNT) (DATE) UTF-8 UNSEEN",
    "SEARCH RETURN (COUNT MIN MAX) SUBJECT budget",
]


def threaded(i: int, rnd: random.Random) -> bytes:
    date = _dt.datetime(2025, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(minutes=rnd.randint(0, 500_000))
    root = i - i % rnd.choice((1, 3, 5, 8))          # messages of a thread share a root number
    subj = f"{base.WORDS[root % len(base.WORDS)]} {base.WORDS[(root // 7) % len(base.WORDS)]} #{root}"
    head = [f"From: Sender {i % 53} <s{i % 53}@crepes.fr>", "To: Bob <bob@hamburger.edu>",
            f"Date: {format_datetime(date)}", f"Message-ID: <{i}.t@crepes.fr>"]
    if root != i:
        head += [f"Subject: Re: {subj}", f"In-Reply-To: <{i - 1}.t@crepes.fr>",
                 "References: " + " ".join(f"<{k}.t@crepes.fr>" for k in range(root, i))]
    else:
        head.append(f"Subject: {subj}")
    body = " ".join(rnd.choice(base.WORDS) for _ in range(rnd.randint(20, 200)))
    return ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode()


def write_maildir(root: Path, n: int) -> None:
    rnd = random.Random(5)
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    t0 = int(time.time()) - n
    for i in range(n):
        data = threaded(i, rnd)
        p = root / "cur" / f"{t0 + i}.M{i:08d}P1.bench,S={len(data)}:2,{'S' if i % 3 == 0 else ''}"
        p.write_bytes(data)
        os.utime(p, (t0 + i, t0 + i))


def measure(port: int, user: str) -> dict:
    c = base.Raw(port)
    c.cmd(f"LOGIN {user} secret")
    t0 = time.perf_counter()
    c.cmd("EXAMINE INBOX")
    out: dict = {"first EXAMINE": (time.perf_counter() - t0, None, None)}
    for cmd in COMMANDS:
        runs = []
        answer = None
        for _ in range(3):
            t0 = time.perf_counter()
            lines = c.cmd(cmd)
            runs.append(time.perf_counter() - t0)
            answer = [x for x in lines if x.startswith(b"* ") and b" OK " not in x[:6]]
            answer = [x.replace(b"b%d" % c.n, b"TAG") for x in answer]
        out[cmd] = (statistics.median(runs), runs[0], answer)
    c.close()
    return out


def run_relay(src: Path, work: Path) -> dict:
    import multiprocessing as mp
    import shutil
    mail = work / "relay-mail"
    shutil.copytree(src, mail / base.USER)
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=base._relay_process, args=(str(mail), child))
    proc.start()
    try:
        return measure(parent.recv(), base.USER)
    finally:
        parent.send(None)
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()


def run_dovecot(src: Path, work: Path) -> dict | None:
    import shutil
    try:
        from tests.peers import Dovecot, dovecot_available
    except ImportError:
        return None
    if not dovecot_available():
        return None
    dc = Dovecot(work / "dovecot")
    try:
        md = dc.add_user("bob", "secret")
        shutil.rmtree(md)
        shutil.copytree(src, md)
        for dirpath, _dirs, files in os.walk(md):
            for name in [dirpath] + [os.path.join(dirpath, f) for f in files]:
                dc._chown(Path(name))
        dc.start()
        return measure(dc.imap_port, "bob")
    finally:
        dc.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", help="mailbox sizes (default 10000 100000)")
    ap.add_argument("--no-dovecot", action="store_true")
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = ap.parse_args()
    for n in args.sizes or [10_000, 100_000]:
        with tempfile.TemporaryDirectory(prefix="imapsort-", dir=args.dir) as tmp:
            work = Path(tmp)
            t0 = time.perf_counter()
            write_maildir(work / "src", n)
            print(f"\n== {n:,} messages (written in {time.perf_counter() - t0:.1f} s)")
            ours = run_relay(work / "src", work)
            theirs = None if args.no_dovecot else run_dovecot(work / "src", work)
            diffs: list = []
            print("| command | relay median (first) | Dovecot median (first) | relay/Dovecot | answers |")
            print("|---|---|---|---|---|")
            for cmd, (med, first, ans) in ours.items():
                if theirs is None:
                    print(f"| {cmd} | {med * 1000:.0f} ms ({(first or med) * 1000:.0f}) | – | – | – |")
                    continue
                tmed, tfirst, tans = theirs[cmd]
                same = "–" if ans is None else ("same" if ans == tans else "DIFFERENT")
                print(f"| {cmd} | {med * 1000:.0f} ms ({(first or med) * 1000:.0f}) | "
                      f"{tmed * 1000:.0f} ms ({(tfirst or tmed) * 1000:.0f}) | {med / tmed:.1f}x | {same} |")
                if same == "DIFFERENT":
                    diffs.append((cmd, ans, tans))
            for cmd, ans, tans in diffs:
                print(f"\n{cmd}\n  relay:   {b' '.join(ans)[:300]!r}\n  Dovecot: {b' '.join(tans)[:300]!r}")


if __name__ == "__main__":
    main()
