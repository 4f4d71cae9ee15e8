"""TUI benchmark: a 100,000-message IMAP folder (Dovecot) in the real app, neomutt side by side.

One run seeds Dovecot with N messages (tests/peers.py), writes a tui-mail config and an empty
XDG tree under a temp dir, fills tui-mail's header cache once (what a previous session left
behind) and then measures, each in a fresh process, ``--runs`` times (medians reported):

  first screen, real terminal   ``tui-mail`` (and ``neomutt``) started in a detached tmux at
                                120×40; the clock runs from ``tmux new-session`` until
                                ``capture-pane`` shows at least ``--rows`` index lines
                                ("Message N about topic M"). warm = cache from a previous
                                session (tui-mail's SQLite cache; neomutt's header cache filled
                                by a first run); cold = an empty cache.
  first paint, in process       headless app (Textual's run_test) from the start of the child
                                interpreter to the first frame that shows the list's rows
                                filled (hook on App._display, the frame the terminal would get);
                                and the process's CPU time until then, which other processes'
                                load inflates far less than the wall time
  cursor move                   one ``j`` sent as the terminal driver sends it → the frame with
                                the cursor on the next row; keys 40 ms apart (key-repeat
                                speed). "in view": the cursor moves inside the visible rows;
                                "scrolling": every move scrolls the list one line.
  jump to end                   ``G`` → the last screen of rows painted and filled
  threads                       ``t`` on the 100k folder → threaded rows shown (threading runs
                                in a worker) and the slowest key→frame while it ran
  peak RSS                      of the headless app process
The load average is printed before and after: the numbers are only comparable within a run.

Each checkout measured is byte-compiled first (``compileall``), as ``pip install`` leaves an
installed package: with PYTHONDONTWRITEBYTECODE set (as in our CI and helper shells) and no
``__pycache__``, every start would otherwise compile all of tui_mail's sources (~80 ms CPU).

``--code DIR`` runs tui-mail from another checkout too (e.g. ``git archive`` of an older
commit) in the same run, for before/after figures on the same machine state.

    .venv/bin/python bench/tui.py [-n 100000] [--runs 5] [--moves 200] [--no-neomutt]
                                  [--code /path/to/old/checkout] [--store memory]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

T_START = time.perf_counter()
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
INDEX_LINE = re.compile(r"Message \d+ about topic \d+")
PYTHON = sys.executable
RUN_APP = "from tui_mail.cli import main; raise SystemExit(main())"


# --- setup ------------------------------------------------------------------------------------
def setup_imap(n: int, tmp: Path):
    """Seeded, running Dovecot; config + XDG dirs; tui-mail's cache filled (warm)."""
    from peers import Dovecot, make_message

    dc = Dovecot(tmp / "dovecot")
    dc.add_user("bob", "secret")
    t = time.perf_counter()
    dc.seed("bob", n, seen_every=3, make=make_message)
    dc.start()
    print(f"seeded {n:,} messages into Dovecot in {time.perf_counter() - t:.1f} s", flush=True)
    for d in ("config", "data", "cache", "home"):
        (tmp / d).mkdir(exist_ok=True)
    cfg = tmp / "config" / "config.toml"
    cfg.write_text(f"""[ui]
mark_read = "never"

[[accounts]]
name = "bench"
address = "bob@example.org"
[accounts.imap]
host = "127.0.0.1"
port = {dc.imap_port}
security = "none"
user = "bob"
password_command = "echo secret"
""")
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp / "config"), XDG_DATA_HOME=str(tmp / "data"),
               XDG_CACHE_HOME=str(tmp / "cache"), TUI_MAIL_CONFIG=str(cfg), HOME=str(tmp / "home"),
               TEXTUAL_ANIMATIONS="none")
    env.pop("NO_COLOR", None)
    t = time.perf_counter()
    subprocess.run([PYTHON, __file__, "--child", "fill"], env=dict(env, PYTHONPATH=str(ROOT)), check=True)
    print(f"filled tui-mail's header cache ({n:,} envelopes) in {time.perf_counter() - t:.1f} s", flush=True)
    return dc, env


def child_fill() -> None:
    from tui_mail import config as cfgmod
    from tui_mail.accounts import imap_store

    account = cfgmod.load_config().accounts[0]
    store = imap_store(account, lambda: "secret")
    store.connect()
    store.folder_state("INBOX")      # what a previous session did when it opened the folder
    store.fill_cache("INBOX")
    store.close()


# --- first screen in a real terminal (tmux) ---------------------------------------------------
def tmux_first_screen(command: str, env: dict, rows: int, timeout: float = 60.0,
                      quit_keys: str | None = None) -> float:
    """Seconds from starting ``command`` in a fresh 120×40 tmux until ``rows`` index lines show."""
    sock = f"tuibench-{os.getpid()}"
    tmux = ["tmux", "-L", sock, "-f", "/dev/null"]
    subprocess.run(tmux + ["kill-server"], env=env, capture_output=True)
    t0 = time.perf_counter()
    subprocess.run(tmux + ["new-session", "-d", "-x", "120", "-y", "40", "-s", "b", command],
                   env=env, check=True)
    subprocess.run(tmux + ["set-option", "-t", "b", "remain-on-exit", "off"], env=env, capture_output=True)
    try:
        while True:
            screen = subprocess.run(tmux + ["capture-pane", "-p", "-t", "b"], env=env,
                                    capture_output=True, text=True).stdout
            if len(INDEX_LINE.findall(screen)) >= rows:
                elapsed = time.perf_counter() - t0
                break
            if subprocess.run(tmux + ["has-session", "-t", "b"], env=env, capture_output=True).returncode:
                raise RuntimeError(f"{command!r} exited before showing the index")
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"no index within {timeout} s; screen:\n{screen}")
            time.sleep(0.008)
        if quit_keys:        # leave cleanly (neomutt writes its header cache as it goes)
            subprocess.run(tmux + ["send-keys", "-t", "b", quit_keys], env=env, capture_output=True)
            end = time.perf_counter() + 15
            while time.perf_counter() < end:
                alive = subprocess.run(tmux + ["has-session", "-t", "b"], env=env, capture_output=True)
                if alive.returncode != 0:
                    break
                time.sleep(0.05)
        return elapsed
    finally:
        subprocess.run(tmux + ["kill-server"], env=env, capture_output=True)


def neomutt_rc(tmp: Path, port: int, hcache: Path) -> Path:
    rc = tmp / "neomuttrc"
    rc.write_text(f"""set folder = "imap://bob@127.0.0.1:{port}/"
set imap_pass = "secret"
set spoolfile = "+INBOX"
set header_cache = "{hcache}/"
set message_cachedir = "{tmp / 'neomutt-bodies'}"
set ssl_starttls = no
set ssl_force_tls = no
set imap_check_subscribed = no
set mail_check_stats = no
set record = ""
set postponed = ""
set sort = reverse-date
set quit = yes
set help = yes
""")
    return rc


# --- the headless app (child process) ---------------------------------------------------------
def visible_filled(ml) -> bool:
    if not ml.rows:
        return False
    top = int(ml.scroll_y)
    h = ml.scrollable_content_region.height
    return h > 0 and all(u in ml.summaries for u in ml.rows[top:top + h])


class SyntheticStore:
    """--store memory: N summaries computed from the UID, no I/O (what the widget alone costs)."""

    @staticmethod
    def make(n: int):
        from tui_mail.store.base import SEEN, FolderInfo, FolderState, MailStore, MessageSummary

        class Store(MailStore):
            def connect(self) -> None: ...
            def close(self) -> None: ...
            def list_folders(self, with_counts: bool = True):
                return [FolderInfo("INBOX", "/", "inbox", frozenset(), n, n // 10)]
            def create_folder(self, name): raise NotImplementedError
            def rename_folder(self, old, new): raise NotImplementedError
            def delete_folder(self, name): raise NotImplementedError
            def folder_state(self, folder, sort="date"):
                return FolderState(folder, 1, tuple(range(1, n + 1)))
            def _summary(self, uid):
                return MessageSummary(uid, NOW - timedelta(minutes=n - uid), f"Sender {uid % 97}",
                                      f"s{uid % 97}@example.org", "bob@example.org", "",
                                      f"Message {uid} about topic {uid % 13}",
                                      frozenset() if uid % 10 == 0 else frozenset({SEEN}), 2000 + uid % 5000)
            def cached_summaries(self, folder, uids):
                return {u: self._summary(u) for u in uids}
            summaries = cached_summaries
            def fill_cache(self, folder, progress=None, cancel=None, chunk=1000) -> None: ...
            def fetch_message(self, folder, uid, full=False):
                s = self._summary(uid)
                return (f"From: {s.from_name} <{s.from_addr}>\r\nSubject: {s.subject}\r\n\r\nBody\r\n").encode()
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

        return Store()


async def headless(moves: int, memory_n: int | None) -> dict:
    try:             # as `tui-mail` (tui_mail.ui.run.main) starts: no GC until the first screen
        from tui_mail.ui import startup
        startup.hold()
    except ImportError:     # an older checkout (--code) without it
        pass
    from textual import events

    from tui_mail.ui.app import MailApp, UISettings
    if memory_n:
        from tui_mail.ui.services import Account
        accounts = [Account("bench", SyntheticStore.make(memory_n), "bob@example.org")]
        settings = UISettings(mark_read="never", cursor_blink=False)
    else:
        from tui_mail.ui.run import build, parse_args
        from tui_mail.ui.trace import TraceBuffer
        trace = TraceBuffer()
        accounts, settings = build(parse_args([]), trace)
    app = MailApp(accounts, settings)
    out: dict = {}
    frame = asyncio.Event()
    frames: list[float] = []
    display = app._display

    def on_display(screen, renderable) -> None:      # the frame a terminal would be sent
        display(screen, renderable)
        if renderable is None:
            return
        now = time.perf_counter()
        frames.append(now)
        frame.set()
        if "first_paint_s" not in out:
            main = getattr(app, "main_screen", None)
            if main is not None and main.is_mounted and visible_filled(main.message_list):
                out["first_paint_s"] = now - T_START
                out["first_paint_cpu_s"] = time.process_time()    # CPU since exec: robust to load

    app._display = on_display
    async with app.run_test(size=(120, 40)):
        while "first_paint_s" not in out:
            await asyncio.sleep(0.002)
            if time.perf_counter() - T_START > 60:
                raise RuntimeError("no first paint within 60 s")
        main = app.main_screen
        ml = main.message_list
        out["rows"] = len(ml.rows)
        await asyncio.sleep(1.0)       # let the server check and the cache fill start settle

        async def key(k: str, char: str | None, done) -> float:
            frame.clear()
            t = time.perf_counter()
            app._driver.send_message(events.Key(k, char))
            while True:
                try:
                    await asyncio.wait_for(frame.wait(), 5)
                except asyncio.TimeoutError:     # no frame: counted, the run goes on
                    out["keys_without_frame"] = out.get("keys_without_frame", 0) + 1
                    return time.perf_counter() - t
                if done():
                    return time.perf_counter() - t
                frame.clear()

        async def moves_of(n: int) -> list[float]:
            times = []
            for _ in range(n):
                want = ml.cursor + 1
                times.append(await key("j", "j", lambda: ml.cursor == want))
                await asyncio.sleep(0.04)
            return times

        height = ml.scrollable_content_region.height
        in_view = []
        for _ in range(max(1, moves // max(1, height - 2))):
            await key("g", "g", lambda: ml.cursor == 0)
            await asyncio.sleep(0.05)
            in_view += await moves_of(height - 2)
        out["move_in_view"] = in_view
        await key("g", "g", lambda: ml.cursor == 0)
        await moves_of(height - 1)                       # cursor at the bottom edge
        out["move_scrolling"] = await moves_of(moves)
        last = len(ml.rows) - 1
        t = time.perf_counter()
        await key("G", "G", lambda: ml.cursor == last and visible_filled(ml))
        out["jump_end_s"] = time.perf_counter() - t
        # threads: the worker threads 100k summaries; keys must stay quick meanwhile
        await key("g", "g", lambda: ml.cursor == 0)
        await asyncio.sleep(0.3)
        t = time.perf_counter()
        rows_before = ml.rows
        app._driver.send_message(events.Key("t", "t"))
        during = []
        while ml.rows is rows_before and time.perf_counter() - t < 60:
            during.append(await key("j", "j", lambda: True))
            await asyncio.sleep(0.04)
        out["threads_s"] = time.perf_counter() - t
        out["threads_key_max_ms"] = max(during) * 1000 if during else 0.0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# --- the parent: run everything, print the table -------------------------------------------------
def median(xs):
    return statistics.median(xs) if xs else float("nan")


def p95(xs):
    xs = sorted(xs)
    return xs[max(0, int(len(xs) * 0.95) - 1)] if xs else float("nan")


def run_child_headless(env: dict, moves: int, code: Path | None, memory_n: int | None) -> dict:
    e = dict(env, PYTHONPATH=str(code or ROOT))
    argv = [PYTHON, __file__, "--child", "headless", "--moves", str(moves)]
    if memory_n:
        argv += ["--memory-n", str(memory_n)]
    done = subprocess.run(argv, env=e, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"headless child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def tui_command(code: Path | None) -> str:
    """The app from ``code`` (default: the checkout this script is in, not the installed one)."""
    pre = f"PYTHONPATH={shlex.quote(str(code or ROOT))} "
    return f"{pre}{shlex.quote(PYTHON)} -c {shlex.quote(RUN_APP)}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", choices=("imap", "memory"), default="imap")
    p.add_argument("-n", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--moves", type=int, default=200)
    p.add_argument("--rows", type=int, default=12, help="index lines that make a screen usable")
    p.add_argument("--no-neomutt", action="store_true")
    p.add_argument("--code", type=Path, help="another checkout of tui-mail to measure too")
    p.add_argument("--child", choices=("fill", "headless"), help=argparse.SUPPRESS)
    p.add_argument("--memory-n", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child == "fill":
        child_fill()
        return 0
    if args.child == "headless":
        print(json.dumps(asyncio.run(headless(args.moves, args.memory_n))))
        return 0

    versions = [("tui-mail", None)] + ([("tui-mail@" + args.code.name, args.code)] if args.code else [])
    for _, code in versions:      # as installed: bytecode present (see the docstring)
        subprocess.run([PYTHON, "-m", "compileall", "-q", str((code or ROOT) / "tui_mail"),
                        str((code or ROOT) / "relay")], check=True, stdout=subprocess.DEVNULL)
    load_before = os.getloadavg()
    results: dict[str, dict[str, list]] = {}
    with tempfile.TemporaryDirectory(prefix="tui-bench-") as d:
        tmp = Path(d)
        dc = None
        try:
            if args.store == "imap":
                dc, env = setup_imap(args.n, tmp)
            else:
                env = dict(os.environ, XDG_CACHE_HOME=str(tmp), XDG_CONFIG_HOME=str(tmp),
                           XDG_DATA_HOME=str(tmp))
            for i in range(args.runs):          # versions interleaved: same load for each
                for label, code in versions:
                    r = results.setdefault(label, {})
                    h = run_child_headless(env, args.moves, code, args.n if args.store == "memory" else 0)
                    for k, v in h.items():
                        r.setdefault(k, []).append(v)
                    if args.store == "imap":     # quit with q, as a user does (the cache stays clean)
                        r.setdefault("warm", []).append(tmux_first_screen(tui_command(code), env, args.rows,
                                                                          quit_keys="q"))
                        cold_cache = tmp / f"cold-cache-{label}-{i}"
                        cold_cache.mkdir()
                        r.setdefault("cold", []).append(tmux_first_screen(
                            tui_command(code), dict(env, XDG_CACHE_HOME=str(cold_cache)), args.rows,
                            quit_keys="q"))
                        shutil.rmtree(cold_cache, ignore_errors=True)
                    print(f"  {label} run {i + 1}: first paint {h['first_paint_s'] * 1000:.0f} ms"
                          + (f", tmux warm {r['warm'][-1] * 1000:.0f} ms, cold {r['cold'][-1] * 1000:.0f} ms"
                             if "warm" in r else ""), flush=True)
            if args.store == "imap" and not args.no_neomutt and shutil.which("neomutt"):
                r = results.setdefault("neomutt", {})
                for i in range(args.runs):
                    hcache = tmp / f"hcache-{i}"
                    hcache.mkdir()
                    rc = neomutt_rc(tmp, dc.imap_port, hcache)
                    cmd = f"neomutt -n -F {shlex.quote(str(rc))}"
                    r.setdefault("cold", []).append(tmux_first_screen(cmd, env, args.rows, quit_keys="q"))
                    r.setdefault("warm", []).append(tmux_first_screen(cmd, env, args.rows, quit_keys="q"))
                    print(f"  neomutt run {i + 1}: cold {r['cold'][-1] * 1000:.0f} ms, "
                          f"warm {r['warm'][-1] * 1000:.0f} ms", flush=True)
        finally:
            if dc is not None:
                dc.cleanup()
    load_after = os.getloadavg()
    ms = lambda xs: f"{median(xs) * 1000:7.0f}" if xs else "      –"  # noqa: E731
    print()
    print(f"store={args.store} messages={args.n:,} runs={args.runs} (medians) "
          f"load average before {load_before[0]:.2f} after {load_after[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'':34}" + "".join(f"{label:>18}" for label in results))
    rows = [
        ("first screen warm, tmux (ms)", lambda r: ms(r.get("warm")), "≤ 400"),
        ("first screen cold, tmux (ms)", lambda r: ms(r.get("cold")), "≤ 600"),
        ("first paint warm, in process (ms)", lambda r: ms(r.get("first_paint_s")), ""),
        ("  its CPU time since exec (ms)", lambda r: ms(r.get("first_paint_cpu_s")), ""),
        ("cursor move in view p50 (ms)", lambda r: f"{median(sum(r.get('move_in_view', []), [])) * 1000:7.1f}"
         if r.get("move_in_view") else "      –", ""),
        ("cursor move in view p95 (ms)", lambda r: f"{p95(sum(r.get('move_in_view', []), [])) * 1000:7.1f}"
         if r.get("move_in_view") else "      –", "≤ 16"),
        ("cursor move scrolling p50 (ms)", lambda r: f"{median(sum(r.get('move_scrolling', []), [])) * 1000:7.1f}"
         if r.get("move_scrolling") else "      –", ""),
        ("cursor move scrolling p95 (ms)", lambda r: f"{p95(sum(r.get('move_scrolling', []), [])) * 1000:7.1f}"
         if r.get("move_scrolling") else "      –", "≤ 16"),
        ("jump to end G (ms)", lambda r: ms(r.get("jump_end_s")), ""),
        ("thread 100k, t → shown (ms)", lambda r: ms(r.get("threads_s")), ""),
        ("slowest key while threading (ms)", lambda r: f"{median(r['threads_key_max_ms']):7.1f}"
         if r.get("threads_key_max_ms") else "      –", ""),
        ("keys that got no frame in 5 s", lambda r: f"{sum(r.get('keys_without_frame', [])):7d}", ""),
        ("peak RSS (MB)", lambda r: f"{median(r['peak_rss_mb']):7.1f}" if r.get("peak_rss_mb") else "      –", "< 100"),
    ]
    for name, get, target in rows:
        print(f"{name:34}" + "".join(f"{get(r):>18}" for r in results.values()) + f"   {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
