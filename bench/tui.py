"""TUI benchmark: a 100,000-message folder in the real app (headless Textual, Pilot).

Measures, per run:
  first paint   launch → the message list painted with its first screen of rows filled
  move          one cursor move (j) with repaint: median and p95 over 500 moves
  jump to end   G → the last screen of rows painted and filled
  peak RSS      of this process (app + store + cache)
Targets (issue 5): first paint < 0.5 s with a warm cache, move < 16 ms, RSS < 150 MB.

Stores:
  --store imap   (default when /usr/sbin/dovecot exists) real Dovecot seeded with N messages
                 (tests/peers.py), the real ImapStore with an on-disk SQLite header cache.
                 The cache is filled first by a separate pass; then the app is launched fresh
                 on the warm cache, which is what "warm" means for a user reopening the folder.
  --store memory the UI alone: a store that computes summaries from the UID with no I/O
                 (shows what the widget costs, independent of any store).

    .venv/bin/python bench/tui.py [--store imap|memory] [-n 100000] [--moves 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tui_mail.store.base import (SEEN, Cancel, Change, FolderInfo, FolderState, MailStore,  # noqa: E402
                                 MessageSummary, Progress)
from tui_mail.ui.app import MailApp, UISettings  # noqa: E402
from tui_mail.ui.services import Account  # noqa: E402
from tui_mail.ui.widgets.message_list import MessageList  # noqa: E402

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


class SyntheticStore(MailStore):
    """N messages whose summaries are a pure function of the UID (no I/O, nothing stored)."""

    def __init__(self, n: int):
        self.n = n

    def connect(self) -> None: ...
    def close(self) -> None: ...

    def list_folders(self, with_counts: bool = True) -> list[FolderInfo]:
        return [FolderInfo("INBOX", "/", "inbox", frozenset(), self.n, self.n // 10)]

    def create_folder(self, name: str) -> None: raise NotImplementedError
    def rename_folder(self, old: str, new: str) -> None: raise NotImplementedError
    def delete_folder(self, name: str) -> None: raise NotImplementedError

    def folder_state(self, folder: str, sort: str = "date") -> FolderState:
        return FolderState(folder, 1, tuple(range(1, self.n + 1)))

    def _summary(self, uid: int) -> MessageSummary:
        return MessageSummary(uid, NOW - timedelta(minutes=self.n - uid), f"Sender {uid % 97}",
                              f"s{uid % 97}@example.org", "bob@example.org", "",
                              f"Subject line number {uid} about things", frozenset() if uid % 10 == 0 else frozenset({SEEN}),
                              2000 + uid % 5000)

    def cached_summaries(self, folder: str, uids: Sequence[int]) -> dict[int, MessageSummary]:
        return {u: self._summary(u) for u in uids}

    summaries = cached_summaries

    def fill_cache(self, folder, progress=None, cancel=None, chunk=1000) -> None: ...

    def fetch_message(self, folder: str, uid: int, full: bool = False) -> bytes:
        s = self._summary(uid)
        return (f"From: {s.from_name} <{s.from_addr}>\r\nTo: bob@example.org\r\nSubject: {s.subject}\r\n"
                f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nBody {uid}\r\n").encode()

    def fetch_part(self, folder, uid, part): raise NotImplementedError
    def set_flags(self, folder, uids, flags, add=True) -> None: ...
    def copy(self, folder, uids, dest): raise NotImplementedError
    def move(self, folder, uids, dest): raise NotImplementedError
    def delete(self, folder, uids): raise NotImplementedError
    def expunge(self, folder, uids) -> None: raise NotImplementedError
    def append(self, folder, data, flags=(), date=None): raise NotImplementedError
    def search(self, folder, query): return []
    def local_search(self, folder, query): return []
    def watch(self, folder, callback) -> None: ...
    def stop_watch(self) -> None: ...


def visible_filled(ml: MessageList) -> bool:
    if not ml.rows:
        return False
    top = int(ml.scroll_y)
    h = ml.scrollable_content_region.height
    return h > 0 and all(u in ml.summaries for u in ml.rows[top:top + h])


async def measure(make_store: Callable[[], MailStore], moves: int) -> dict:
    t0 = time.perf_counter()
    store = make_store()
    app = MailApp([Account("bench", store, "bob@example.org")],
                  UISettings(preview=False, mark_read="never", cursor_blink=False), clock=lambda: NOW)
    out: dict = {}
    async with app.run_test(size=(120, 40)) as pilot:
        while True:
            await asyncio.sleep(0.002)
            screen = getattr(app, "main_screen", None)
            if screen is not None and screen.is_mounted:
                ml = screen.query_one(MessageList)
                if visible_filled(ml):
                    await pilot.pause()          # the paint that shows them
                    break
            if time.perf_counter() - t0 > 60:
                raise RuntimeError("first paint did not happen within 60 s")
        out["first_paint_s"] = time.perf_counter() - t0
        out["rows"] = len(ml.rows)
        # Pilot.press waits for the app to go idle, which has a fixed cost of its own; measure
        # it with a key bound to nothing ("f12") and report the move both raw and net of it.
        base = []
        for _ in range(min(100, moves)):
            t = time.perf_counter()
            await pilot.press("f12")
            base.append(time.perf_counter() - t)
        times = []
        for _ in range(moves):
            t = time.perf_counter()
            await pilot.press("j")
            times.append(time.perf_counter() - t)
        times.sort()
        overhead = statistics.median(base)
        out["press_overhead_ms"] = overhead * 1000
        out["move_median_ms"] = statistics.median(times) * 1000
        out["move_p95_ms"] = times[int(len(times) * 0.95) - 1] * 1000
        out["move_net_median_ms"] = (statistics.median(times) - overhead) * 1000
        out["move_net_p95_ms"] = (times[int(len(times) * 0.95) - 1] - overhead) * 1000
        t = time.perf_counter()
        await pilot.press("G")
        while not visible_filled(ml):
            await asyncio.sleep(0.002)
        await pilot.pause()
        out["jump_end_s"] = time.perf_counter() - t
        assert ml.cursor == len(ml.rows) - 1
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def imap_setup(n: int, tmp: Path):
    from peers import Dovecot, make_message

    from tui_mail.store.cache import HeaderCache
    from tui_mail.store.imap import ImapStore

    dc = Dovecot(tmp / "dovecot")
    dc.add_user("bob", "secret")
    t = time.perf_counter()
    dc.seed("bob", n, seen_every=3, make=make_message)
    dc.start()
    print(f"seeded {n} messages into Dovecot in {time.perf_counter() - t:.1f} s", flush=True)
    cache_path = tmp / "cache.sqlite"

    def make_store() -> ImapStore:
        return ImapStore("bench", "127.0.0.1", dc.imap_port, "bob", "secret", security="none",
                         cache=HeaderCache(cache_path))

    t = time.perf_counter()
    warm = make_store()
    warm.connect()
    warm.folder_state("INBOX")       # what a previous session did when it opened the folder
    warm.fill_cache("INBOX")
    warm.close()
    print(f"filled the header cache (cold fetch of {n} envelopes) in {time.perf_counter() - t:.1f} s", flush=True)
    return dc, make_store


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", choices=("imap", "memory"),
                   default="imap" if os.path.exists("/usr/sbin/dovecot") else "memory")
    p.add_argument("-n", type=int, default=100_000)
    p.add_argument("--moves", type=int, default=500)
    args = p.parse_args(argv)
    os.environ.setdefault("NO_COLOR", "1")
    with tempfile.TemporaryDirectory(prefix="tui-bench-") as d:
        dc = None
        if args.store == "imap":
            dc, make_store = imap_setup(args.n, Path(d))
        else:
            def make_store() -> MailStore:
                return SyntheticStore(args.n)
        try:
            result = asyncio.run(measure(make_store, args.moves))
        finally:
            if dc is not None:
                dc.cleanup()
    print(f"store={args.store} messages={result['rows']:,}")
    print(f"  first paint (warm)  {result['first_paint_s'] * 1000:8.1f} ms   target < 500 ms")
    print(f"  cursor move median  {result['move_net_median_ms']:8.2f} ms   target < 16 ms "
          f"(raw {result['move_median_ms']:.1f} ms incl. {result['press_overhead_ms']:.1f} ms Pilot idle-wait)")
    print(f"  cursor move p95     {result['move_net_p95_ms']:8.2f} ms   (raw {result['move_p95_ms']:.1f} ms)")
    print(f"  jump to end (G)     {result['jump_end_s'] * 1000:8.1f} ms")
    print(f"  peak RSS            {result['peak_rss_mb']:8.1f} MB   target < 150 MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
