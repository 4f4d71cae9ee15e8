"""Benchmark: the IMAP client against hostile servers (issue 10, item 3).

Each case runs in a fresh subprocess (so its peak RSS is its own) against a small server in
this file (127.0.0.1, port 0): a ``{999999999}`` literal followed by an endless stream, a
greeting dripped at one byte per second, and STATUS answered without data. Prints how long the
client took, how it ended, and its peak RSS. ``--reference DIR`` runs the same cases with the
package found in DIR (an older checkout) side by side; ``--limit`` bounds each case.

Run: ``.venv/bin/python bench/hostile_servers.py [--reference DIR] [--limit 40]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def run_case(case: str) -> dict:
    from hostile_servers import HostileServer, elapsed, imap_session

    from tui_mail.store.imap import ImapStore

    def literal(conn, tag, verb, line):
        if verb == b"LIST":
            conn.send(b'* LIST (\\HasNoChildren) "/" {999999999}\r\n')
            conn.stream(b"x" * 65536, 400 * 1024 * 1024)
            return False
        conn.send(tag + b" OK done\r\n")
        return True

    def status(conn, tag, verb, line):
        if verb == b"LIST":
            conn.send(b'* LIST (\\HasNoChildren) "/" INBOX\r\n' + tag + b" OK LIST done\r\n")
        else:
            conn.send(tag + b" OK done\r\n")          # STATUS: OK, but no STATUS data
        return True

    behave = {"literal": lambda c: imap_session(c, literal),
              "slow-greeting": lambda c: c.drip(b"* OK slow" + b"." * 1000 + b"\r\n", every=1.0),
              "status-no-data": lambda c: imap_session(c, status)}[case]
    with HostileServer(behave) as srv:
        kw = dict(security="none", timeout=30.0)
        try:     # login_deadline = 10 s here (config default 60 s); older code has no such knob
            store = ImapStore("bench", "127.0.0.1", srv.port, "bob", "pw", login_deadline=10.0, **kw)
        except TypeError:
            store = ImapStore("bench", "127.0.0.1", srv.port, "bob", "pw", **kw)
        took, error = elapsed(store.list_folders)
        try:
            store.close()
        except Exception:  # noqa: BLE001
            pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    outcome = f"{type(error).__name__}: {error}" if error else "ok"
    return {"took": took, "rss": rss, "outcome": outcome}


def elsewhere(directory: str, case: str, limit: float) -> dict | None:
    env = dict(os.environ, PYTHONPATH=directory)
    start = time.monotonic()
    try:
        out = subprocess.run([sys.executable, __file__, "--one", case], env=env, cwd=directory,
                             capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"took": time.monotonic() - start, "rss": float("nan"), "outcome": f"still waiting after {limit:g} s"}
    lines = out.stdout.strip().splitlines()
    if not lines:
        return {"took": time.monotonic() - start, "rss": float("nan"),
                "outcome": (out.stderr.strip().splitlines() or ["crashed"])[-1][:80]}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference")
    ap.add_argument("--limit", type=float, default=40.0)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        sys.path.insert(0, os.environ.get("PYTHONPATH", str(ROOT)))
        print(json.dumps(run_case(args.one)))
        return
    print(f"{'server':<16} {'code':<10} {'time':>8} {'peak RSS':>9}  outcome")
    for case in ("literal", "slow-greeting", "status-no-data"):
        for label, directory in (("reference", args.reference), ("now", str(ROOT))):
            if directory is None:
                continue
            r = elsewhere(directory, case, args.limit)
            print(f"{case:<16} {label:<10} {r['took']:>7.1f}s {r['rss']:>7.0f}MB  {r['outcome'][:110]}")


if __name__ == "__main__":
    main()
