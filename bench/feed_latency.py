"""Change → IDLE EXISTS latency across relay processes (relay/feed.py), side by side with the
same change made in the idling session's own process.

    .venv/bin/python bench/feed_latency.py [--n 100]

Two relay IMAP server processes (tests/feed_imap_server.py) share one mail directory and one
feed run dir; a raw client idles on server A. Timed from the first byte of a change until the
idler has read ``* N EXISTS``, interleaved round by round:

- same process: a second client APPENDs through server A (the in-process ChangeBus path)
- other worker: a second client APPENDs through server B (its bus → datagram → A's bus)
- master delivery: this process appends through its own UserStore and publishes (as the master
  delivering local mail does) → datagram → A

Target (issue 14): < 50 ms across processes. Prints median and p95 per path and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_store_multiprocess_feed import USER, Raw, _server, _stop  # noqa: E402

from relay.events import ChangeBus  # noqa: E402
from relay.feed import Feed  # noqa: E402
from relay.store import MailStore  # noqa: E402


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    a = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    tmp = Path(tempfile.mkdtemp(prefix="feedb", dir="/tmp"))
    mail_dir, run_dir = tmp / "mail", tmp / "run"
    bus = ChangeBus()
    feed = Feed(run_dir, bus)
    await feed.start()
    store = MailStore(mail_dir, bus)
    u = store.user(USER)
    pa, port_a = _server(mail_dir, run_dir)
    pb, port_b = _server(mail_dir, run_dir)
    res: dict[str, list[float]] = {"same process (APPEND via A)": [], "other worker (APPEND via B)": [],
                                   "master delivery (store + feed)": []}
    try:
        idler, same, other = Raw(port_a), Raw(port_a), Raw(port_b)
        idler.cmd("SELECT INBOX")
        idler.s.sendall(b"i IDLE\r\n")
        idler.line()
        n = 0
        msg = b"Subject: bench\r\n\r\nx\r\n"
        for _ in range(a.n):
            for name in res:
                n += 1
                t = time.perf_counter()
                if name.startswith("same"):
                    same.cmd("APPEND INBOX", msg)
                elif name.startswith("other"):
                    other.cmd("APPEND INBOX", msg)
                else:
                    u.append("INBOX", msg)
                idler.until(rb"^\* %d EXISTS" % n)
                res[name].append(time.perf_counter() - t)
        for c in (idler, same, other):
            c.close()
    finally:
        _stop(pa)
        _stop(pb)
        store.close()
        feed.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nchange → IDLE EXISTS, {a.n} changes per path, interleaved\n")
    print("| path | median ms | p95 ms |")
    print("|---|---|---|")
    for name, v in res.items():
        v.sort()
        print(f"| {name} | {statistics.median(v) * 1000:.2f} | {v[int(len(v) * 0.95) - 1] * 1000:.2f} |")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
