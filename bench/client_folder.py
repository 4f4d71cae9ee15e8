"""Benchmark: the IMAP client core on a huge folder (100,000 messages; --quick: 10,000).

Starts a throwaway Dovecot (tests/peers.py) on loopback, seeds the folder as Maildir files,
then measures, each client phase in a fresh process so peak RSS is the client's own:

- first window, server never indexed: login + ordered UID list + 50 envelopes, first-ever open
- first window, cold client cache: the same with an empty header cache (server index warm)
- fill: fetching every summary into the SQLite cache, in chunks
- first window, warm: from the cache alone (no network), and with the server round trip
  (login + UID SORT, envelopes from the cache)
- local search over the filled cache (FTS5 words, sender, flags), median of 5
- peak RSS of the client process

Targets (DESIGN.md §5): first window < 0.3 s cold / < 0.15 s warm, search < 100 ms,
RSS < 100 MB. Run: ``.venv/bin/python bench/client_folder.py [--quick] [--n N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WINDOW = 50
REPEAT = 5      # cold/warm runs, each in a fresh process; the median is reported


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _store(port: int, cache_path: str):
    from tui_mail.store.cache import HeaderCache
    from tui_mail.store.imap import ImapStore

    return ImapStore("bench", "127.0.0.1", port, "bob", "pw", security="none",
                     cache=HeaderCache(cache_path), timeout=120)


def _first_window(port: int, cache_path: str) -> tuple[float, int]:
    t = time.perf_counter()
    s = _store(port, cache_path)
    s.connect()
    state = s.folder_state("INBOX")
    got = s.summaries("INBOX", state.uids[-WINDOW:])
    dt = time.perf_counter() - t
    assert len(got) == min(WINDOW, len(state.uids)), len(got)
    s.close()
    s.cache.close()
    return dt, len(state.uids)


def client_phase(phase: str, port: int, cache_path: str) -> dict:
    """Runs in a child process; returns figures as a dict (printed as JSON). Modules are
    imported before the clock starts: the app has them loaded before it opens a folder."""
    import tui_mail.store.cache  # noqa: F401
    import tui_mail.store.imap  # noqa: F401

    out: dict = {}
    if phase in ("first", "cold"):
        out["window_s"], out["messages"] = _first_window(port, cache_path)
    elif phase == "fill":
        s = _store(port, cache_path)
        t = time.perf_counter()
        s.folder_state("INBOX")               # as the app does: open the folder, then fill
        s.fill_cache("INBOX", chunk=2000)
        out["fill_s"] = time.perf_counter() - t
        out["cached"] = s.cache.count("bench", "INBOX")
        s.close()
        s.cache.close()
    elif phase == "warm":
        from tui_mail.store.cache import HeaderCache
        from tui_mail.store.imap import ImapStore

        t = time.perf_counter()
        cache = HeaderCache(cache_path)
        s = ImapStore("bench", "127.0.0.1", port, "bob", "pw", security="none", cache=cache)
        st = s.cached_folder_state("INBOX")
        got = s.cached_summaries("INBOX", st.uids[-WINDOW:])
        out["paint_from_cache_s"] = time.perf_counter() - t
        assert len(got) == WINDOW
        s.close()
        cache.close()
        out["window_s"], out["messages"] = _first_window(port, cache_path)
    elif phase == "search":
        from tui_mail.store.cache import HeaderCache

        cache = HeaderCache(cache_path)
        fts = "m.rowid IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?)"
        queries = {"subject word (fts)": (fts, ['subject:"topic 7"']),
                   "sender (fts)": (fts, ["sender:sender42"]),
                   "two words anywhere (fts)": (fts, ["message 4242"]),
                   "unread and flagged": ("seen = 0 AND flagged = 1", [])}
        res = {}
        for name, (where, params) in queries.items():
            times, n = [], 0
            for _ in range(5):
                t = time.perf_counter()
                n = len(cache.query(where, params, account="bench", folder="INBOX"))
                times.append(time.perf_counter() - t)
            res[name] = {"median_ms": statistics.median(times) * 1000, "hits": n}
        try:
            from tui_mail.mail.search import to_sql  # noqa: F401
        except ImportError:
            res["query language"] = "tui_mail.mail.search not available: raw SQL/FTS only"
        else:
            for q, limit in (("subject:topic from:sender42", None), ("is:unread message", None),
                             ("is:unread message", 200)):
                times = []
                for _ in range(5):
                    t = time.perf_counter()
                    n = len(cache.search(q, account="bench", folder="INBOX", limit=limit))
                    times.append(time.perf_counter() - t)
                label = f"query {q!r}" + (f" first {limit}" if limit else "")
                res[label] = {"median_ms": statistics.median(times) * 1000, "hits": n}
        out["search"] = res
        cache.close()
    out["peak_rss_mb"] = _rss_mb()
    return out


_MUTT_RSS = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:], capture_output=True); dt = time.perf_counter() - t; "
             "print(r.returncode, dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")


def time_mutt(port: int, work: Path) -> dict | None:
    """mutt (neomutt's ancestor; neomutt is not installed here) opening the same folder in a
    pseudo-terminal (``script``) and quitting at once: cold (no header cache), then warm with
    its header cache filled. Wall time of the whole run and mutt's peak RSS."""
    mutt, script = shutil.which("mutt"), shutil.which("script")
    if not (mutt and script):
        return None
    hc = work / "mutt-hcache"
    hc.mkdir(exist_ok=True)
    out = {}
    for label, extra in (("cold", ""), ("fill", f"set header_cache={hc}\n"), ("warm", f"set header_cache={hc}\n")):
        rc = work / "muttrc"
        rc.write_text(f"set folder=imap://bob:pw@127.0.0.1:{port}/\nset spoolfile=+INBOX\nset quit=yes\n"
                      "set sort=date\nset mail_check=3600\nset timeout=3600\nset ssl_starttls=no\n"
                      f"set ssl_force_tls=no\n{extra}")
        cmd = f"{mutt} -n -F {rc} -e 'push <quit>'"
        env = {**os.environ, "TERM": "xterm", "COLUMNS": "120", "LINES": "40"}
        done = subprocess.run([sys.executable, "-c", _MUTT_RSS, script, "-qec", cmd, "/dev/null"],
                              capture_output=True, text=True, env=env, timeout=1800)
        code, secs, rss = done.stdout.split()
        if code != "0":
            return None
        out[label] = (float(secs), float(rss))
    return out


def _run_child(phase: str, port: int, cache_path: str) -> dict:
    cmd = [sys.executable, __file__, "--client", phase, str(port), cache_path]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise SystemExit(f"client phase {phase} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10,000 messages instead of 100,000")
    ap.add_argument("--n", type=int, help="number of messages")
    ap.add_argument("--client", nargs=3, metavar=("PHASE", "PORT", "CACHE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        phase, port, cache = args.client
        print(json.dumps(client_phase(phase, int(port), cache)))
        return

    from tests.peers import Dovecot, dovecot_available

    if not dovecot_available():
        raise SystemExit("dovecot is not installed (/usr/sbin/dovecot)")
    n = args.n or (10_000 if args.quick else 100_000)
    work = Path(tempfile.mkdtemp(prefix="bench-client-"))
    cache = str(work / "cache.sqlite")
    dc = Dovecot(work / "dovecot", idle_interval=30, pop3=False)
    try:
        dc.start()
        dc.add_user("bob", "pw")
        t = time.perf_counter()
        dc.seed("bob", n, seen_every=3)
        print(f"seeded {n} messages as Maildir files in {time.perf_counter() - t:.1f} s")
        first = _run_child("first", dc.imap_port, str(work / "first.sqlite"))
        colds = [_run_child("cold", dc.imap_port, str(work / f"cold{i}.sqlite")) for i in range(REPEAT)]
        fill = _run_child("fill", dc.imap_port, cache)
        warms = [_run_child("warm", dc.imap_port, cache) for _ in range(REPEAT)]
        search = _run_child("search", dc.imap_port, cache)
        mutt = time_mutt(dc.imap_port, work)
    finally:
        dc.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    def ok(v: float, target: float) -> str:
        return "ok" if v < target else "MISSED"

    def med(runs, key):
        vals = sorted(r[key] for r in runs)
        return statistics.median(vals), vals[0], vals[-1]

    cold_w, warm_c, warm_w = med(colds, "window_s"), med(warms, "paint_from_cache_s"), med(warms, "window_s")

    def line(label, m, target):
        return (f"{label:<35}: {m[0]:.3f} s  (min {m[1]:.3f}, max {m[2]:.3f})  target < {target}  "
                f"{ok(m[0], target)}")

    print(f"\nfolder: {colds[0]['messages']} messages, "
          f"window {WINDOW} envelopes, Dovecot on loopback; medians of {REPEAT} fresh processes")
    print(f"{'first window, server never indexed':<35}: {first['window_s']:.3f} s  (Dovecot builds its index)")
    print(line("first window, cold client cache", cold_w, 0.3))
    print(line("first window, warm (cache only)", warm_c, 0.15))
    print(line("first window, warm (+login, SORT)", warm_w, 0.15))
    print(f"{'fill the cache completely':<35}: {fill['fill_s']:.1f} s  ({fill['cached']} cached, "
          f"{fill['cached'] / fill['fill_s']:.0f} msg/s)")
    for name, r in search["search"].items():
        if isinstance(r, dict):
            print(f"local search {name:<40}: {r['median_ms']:.1f} ms ({r['hits']} hits)  "
                  f"target < 100  {ok(r['median_ms'], 100)}")
        else:
            print(f"local search: {r}")
    rss = max(r["peak_rss_mb"] for r in [first, fill, search, *colds, *warms])
    print(f"peak RSS (client process, max)     : {rss:.0f} MB  target < 100  {ok(rss, 100)}")
    if mutt:
        print(f"mutt 2.2 open folder + quit, cold  : {mutt['cold'][0]:.2f} s, peak RSS {mutt['cold'][1]:.0f} MB "
              "(whole folder's headers; neomutt not installed)")
        print(f"mutt 2.2, warm header cache        : {mutt['warm'][0]:.2f} s, peak RSS {mutt['warm'][1]:.0f} MB")
    else:
        print("mutt/neomutt: not timed (not installed or no pty via `script`)")


if __name__ == "__main__":
    main()
