"""What the cross-process user lock (relay/store/userlock.py) costs on the store's hot paths.

    .venv/bin/python bench/store_lock.py              # 20,000 messages
    .venv/bin/python bench/store_lock.py --size 2000  # a smoke run

One UserStore over a Maildir of N small messages; each call below is timed (median of many
repetitions) twice in the same run, interleaved round by round: with the store's real lock
(RLock + flock(LOCK_EX) on tui-mail-index.lock + one pread of the index generation + PRAGMA
data_version) and with a plain threading.RLock put in its place (what the store used before it was multi-process). The last
rows time the same calls when another process committed just before each one (so the staleness
check finds data_version moved and reloads what the store keeps in memory). A last table has
one, then two processes appending to one user at once (how much the user's lock serialises them).
Prints the load average: the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.store.mailbox import UserStore  # noqa: E402


def _fill(root: Path, n: int) -> None:
    for sub in ("tmp", "new", "cur"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / "cur" / f"{1700000000 + i}.M{i}P1.bench:2,{'S' if i % 3 else ''}").write_bytes(
            f"From: a{i}@example.org\r\nTo: b@example.org\r\nSubject: message {i}\r\n"
            f"Message-ID: <{i}@bench>\r\n\r\nbody {i}\r\n".encode())


def _time(fn, reps: int) -> float:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--appends", type=int, default=150,
                    help="appends per process for the 1-vs-2 appenders table (0: skip it)")
    a = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "u"
        _fill(root, a.size)
        store = UserStore(root, "u@example.org")
        store.state("INBOX")
        store.envelopes_wire("INBOX")      # analyse every row once (lazy first index)
        uids = store.state("INBOX").uids
        mid = uids[len(uids) // 2]
        real_lock, plain = store._lock, threading.RLock()
        calls = {
            "lock only (with: pass)": lambda: store.locked().__enter__() and store.locked().__exit__(),
            "version(INBOX)": lambda: store.version("INBOX"),
            "records([uid])": lambda: store.records("INBOX", [mid]),
            "flag_rows(50 UIDs)": lambda: store.flag_rows("INBOX", mid, mid + 49),
            "envelopes_wire(50 UIDs)": lambda: store.envelopes_wire("INBOX", uids[:50]),
            "first_unseen": lambda: store.first_unseen("INBOX"),
            "set_flags(1 UID, +\\Flagged/-)": lambda: (store.set_flags("INBOX", [mid], "add", ["\\Flagged"]),
                                                      store.set_flags("INBOX", [mid], "remove", ["\\Flagged"])),
        }
        res: dict[str, dict[str, list[float]]] = {k: {"lock": [], "plain": []} for k in calls}
        for _ in range(a.rounds):
            for name, fn in calls.items():
                for kind, lk in (("lock", real_lock), ("plain", plain)):
                    store._lock = lk
                    reps = a.reps if "set_flags" not in name else a.reps // 8
                    res[name][kind].append(_time(fn, reps))
        store._lock = real_lock
        # another process commits before each call: the staleness check reloads
        other = subprocess.Popen([sys.executable, "-c", (
            "import sys, time\nsys.path.insert(0, %r)\nfrom relay.store.mailbox import UserStore\n"
            "s = UserStore(__import__('pathlib').Path(%r), 'u@example.org')\n"
            "for line in sys.stdin:\n"
            "    s.subscribe('X' + line.strip()); print('ok', flush=True)\n")
            % (str(Path(__file__).resolve().parent.parent), str(root))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        stale = []
        for i in range(200):
            other.stdin.write(f"{i % 3}\n")
            other.stdin.flush()
            other.stdout.readline()
            t = time.perf_counter()
            store.version("INBOX")
            stale.append(time.perf_counter() - t)
        other.stdin.close()
        other.wait()
        store.close()
    print(f"\nstore of {a.size} messages; median µs per call (median over {a.rounds} rounds)\n")
    print(f"| call | RLock only (before) | UserLock (RLock + flock + generation + data_version) | cost |")
    print("|---|---|---|---|")
    for name in calls:
        p = statistics.median(res[name]["plain"]) * 1e6
        lk = statistics.median(res[name]["lock"]) * 1e6
        print(f"| {name} | {p:.1f} | {lk:.1f} | +{lk - p:.1f} µs ({lk / p:.2f}×) |")
    print(f"| version(INBOX) right after another process committed | | "
          f"{statistics.median(stale) * 1e6:.1f} | (reload) |")
    if a.appends:
        print(f"\n| appenders on one user ({a.appends} appends each) | appends/s |\n|---|---|")
        for n in (1, 2, 1, 2):
            print(f"| {n} process{'es' if n > 1 else ''} | {_appenders(n, a.appends):.0f} |")
    print(f"\nload average after: {os.getloadavg()}")


def _appenders(nproc: int, count: int) -> float:
    """``nproc`` processes each appending ``count`` 1 KB messages to one user at once: how far
    the user's lock lets them overlap (each APPEND's write and fsync happen outside it)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "u"
        UserStore(root, "u@example.org").close()
        code = ("import sys\nsys.path.insert(0, %r)\nfrom pathlib import Path\n"
                "from relay.store.mailbox import UserStore\n"
                "s = UserStore(Path(%r), 'u@example.org')\n"
                "msg = b'From: a@b.c\\r\\nSubject: hello\\r\\n\\r\\n' + b'line of text\\r\\n' * 70\n"
                "sys.stdin.readline()\n"
                "for i in range(%d): s.append('INBOX', msg)\ns.close()\n"
                % (str(Path(__file__).resolve().parent.parent), str(root), count))
        ps = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, text=True)
              for _ in range(nproc)]
        time.sleep(1.0)             # let them start before the clock does
        t = time.perf_counter()
        for p in ps:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in ps:
            p.stdin.close()
            p.wait()
        return nproc * count / (time.perf_counter() - t)


if __name__ == "__main__":
    main()
