"""Memory of the relay's IMAP server with many idle sessions on a big mailbox, side by side
with Dovecot on the same messages.

    .venv/bin/python bench/imap_idle_rss.py                    # 100 sessions, 100,000 messages
    .venv/bin/python bench/imap_idle_rss.py --sessions 20 --messages 10000

A Maildir of N messages (bench/imap_server.py's realistic 1–3 KB ones) is written once and
copied for each server. One client logs in, SELECTs INBOX and fetches every envelope (the index
is then complete, as for a mailbox a client has synced once) and logs out; then S clients log
in, SELECT INBOX and enter IDLE, and stay there. Figures:

- relay: VmRSS of its process (the IMAP server alone, started fresh with ``spawn`` so nothing
  of this script's memory is in it) before the S sessions and with them;
- Dovecot: the sum over its processes (master, auth, anvil, log, config, stats, one ``imap``
  per session) of RSS, and of PSS (proportional set size: a page shared by k processes counts
  1/k in each, so the libraries mapped by all of them are counted once), before and with.

Target (issue 14): relay RSS with 100 idle sessions and a 100,000-message mailbox < 300 MB.
The machine may be shared: the load average is printed.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from imap_server import USER, Raw, _relay_process, write_maildir  # noqa: E402


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it (by /proc's parent pids)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _tree_memory(root: int) -> tuple[float, float, int]:
    """(RSS MB, PSS MB, processes) summed over ``root``'s process tree."""
    pids = _descendants(root)
    return (sum(_status_kb(p, "VmRSS") for p in pids) / 1024,
            sum(_pss_kb(p) for p in pids) / 1024, len(pids))


def _sessions(port: int, user: str, n: int) -> list[Raw]:
    """``n`` clients logged in, INBOX selected, in IDLE (each waits for its ``+``)."""
    out = []
    for _ in range(n):
        c = Raw(port)
        c.cmd(f"LOGIN {user} secret")
        c.cmd("SELECT INBOX")
        c.n += 1
        c.sock.sendall(b"b%d IDLE\r\n" % c.n)
        line = c.readline()
        assert line.startswith(b"+"), line
        out.append(c)
    return out


def _warm(port: int, user: str, n: int) -> None:
    c = Raw(port)
    c.cmd(f"LOGIN {user} secret")
    c.cmd("SELECT INBOX")
    lines = c.cmd("FETCH 1:* (UID FLAGS ENVELOPE RFC822.SIZE)")
    assert len(lines) == n + 1, len(lines)
    c.close()


def _settle() -> None:
    time.sleep(1.0)     # let the servers finish what the last client started


def run_relay(src: Path, work: Path, n: int, sessions: int) -> dict:
    mail = work / "relay-mail"
    shutil.copytree(src, mail / USER)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_relay_process, args=(str(mail), child))
    proc.start()
    clients: list[Raw] = []
    try:
        port = parent.recv()
        res = {"started": _status_kb(proc.pid, "VmRSS") / 1024}
        _warm(port, USER, n)
        _settle()
        res["indexed, no session"] = _status_kb(proc.pid, "VmRSS") / 1024
        t0 = time.perf_counter()
        clients = _sessions(port, USER, sessions)
        res["open time"] = time.perf_counter() - t0
        _settle()
        res[f"{sessions} idle sessions"] = _status_kb(proc.pid, "VmRSS") / 1024
        res["peak (VmHWM)"] = _status_kb(proc.pid, "VmHWM") / 1024
        return res
    finally:
        for c in clients:
            c.close()
        parent.send(None)
        proc.join(20)
        if proc.is_alive():
            proc.kill()
            proc.join()


def run_dovecot(src: Path, work: Path, n: int, sessions: int) -> dict | None:
    try:
        from tests.peers import Dovecot, dovecot_available
    except ImportError:
        return None
    if not dovecot_available():
        return None
    dc = Dovecot(work / "dovecot", idle_interval=1)
    base_config = dc._config
    # room for the sessions: one imap process each, and more than the default 10 per user+IP
    dc._config = lambda: (base_config().replace("process_limit = 64", f"process_limit = {sessions + 20}")
                          + f"protocol imap {{\n  mail_max_userip_connections = {sessions + 20}\n}}\n")
    clients: list[Raw] = []
    try:
        md = dc.add_user("bob", "secret")
        shutil.rmtree(md)
        shutil.copytree(src, md)
        for dirpath, dirnames, filenames in os.walk(md):
            for name in [dirpath] + [os.path.join(dirpath, f) for f in filenames]:
                dc._chown(Path(name))
        dc.start()
        root = dc.proc.pid
        res = {"started": _tree_memory(root)}
        _warm(dc.imap_port, "bob", n)
        _settle()
        res["indexed, no session"] = _tree_memory(root)
        t0 = time.perf_counter()
        clients = _sessions(dc.imap_port, "bob", sessions)
        res["open time"] = time.perf_counter() - t0
        _settle()
        res[f"{sessions} idle sessions"] = _tree_memory(root)
        return res
    finally:
        for c in clients:
            c.close()
        dc.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--no-dovecot", action="store_true")
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="where the Maildirs go (default /dev/shm)")
    args = ap.parse_args()
    n, s = args.messages, args.sessions
    with tempfile.TemporaryDirectory(prefix="imaprss-", dir=args.dir) as tmp:
        work = Path(tmp)
        src = work / "src"
        write_maildir(src, n)
        print(f"== {n:,} messages, {s} idle sessions (LOGIN, SELECT INBOX, IDLE); load average "
              f"before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        ours = run_relay(src, work, n, s)
        theirs = None if args.no_dovecot else run_dovecot(src, work, n, s)
    print(f"{'':26} {'relay RSS':>10} {'dovecot RSS':>12} {'dovecot PSS':>12} {'procs':>6}")
    for k, v in ours.items():
        d = theirs.get(k) if theirs else None
        if k == "open time":
            ds = f"{d:11.2f}s" if d is not None else ""
            print(f"{'time to open the sessions':26} {v:9.2f}s {ds:>12}")
            continue
        if isinstance(d, tuple):
            print(f"{k:26} {v:8.1f}MB {d[0]:10.1f}MB {d[1]:10.1f}MB {d[2]:6d}")
        else:
            print(f"{k:26} {v:8.1f}MB")
    base, full = ours["indexed, no session"], ours[f"{s} idle sessions"]
    print(f"relay per session: {(full - base) * 1024 / s:.0f} KB", end="")
    if theirs:
        db, dfull = theirs["indexed, no session"], theirs[f"{s} idle sessions"]
        print(f"; Dovecot per session: {(dfull[0] - db[0]) * 1024 / s:.0f} KB RSS, "
              f"{(dfull[1] - db[1]) * 1024 / s:.0f} KB PSS")
    else:
        print()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
