"""What keeps the TUI fast, checked as behaviour (timings live in bench/tui.py): threading runs
in a worker from light cache rows, a cursor move repaints two rows, the key bar is one widget
that shows and presses the same keys Textual's Footer would."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from test_ui_app import mlist, settle
from test_ui_real import SIZE, local_app
from tui_mail.store.base import MessageSummary
from tui_mail.store.cache import HeaderCache
from tui_mail.ui.messages import ThreadsReady
from tui_mail.ui.threads import thread_order
from tui_mail.ui.widgets.key_bar import KeyBar
from tui_mail.ui.widgets.message_list import MessageList


def summary(uid: int, subject: str, mid: str, irt: str = "", refs: tuple[str, ...] = (),
            minutes: int = 0) -> MessageSummary:
    return MessageSummary(uid, datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=minutes),
                          "A", "a@x.org", "b@x.org", "", subject, frozenset(), 100,
                          message_id=mid, in_reply_to=irt, references=refs)


def test_thread_fields_from_the_cache_thread_like_full_summaries(tmp_path):
    sums = [summary(1, "Plan", "<1@x>", minutes=1),
            summary(2, "Re: Plan", "<2@x>", "<1@x>", ("<1@x>",), minutes=2),
            summary(3, "Other", "<3@x>", minutes=3),
            summary(4, "Re: Re: Plan", "<4@x>", "<2@x>", ("<1@x>", "<2@x>"), minutes=4),
            summary(5, "Re: Other", "<5@x>", minutes=5)]          # no references: by subject
    cache = HeaderCache(tmp_path / "c.sqlite")
    cache.put("acct", "INBOX", 7, [(s, None) for s in sums])
    fields = cache.thread_fields("acct", "INBOX")
    assert {f.uid for f in fields} == {1, 2, 3, 4, 5}
    by_uid = {f.uid: f for f in fields}
    assert by_uid[4].references == "<1@x> <2@x>" and by_uid[4].date == int(sums[3].date.timestamp())
    rows = (5, 4, 3, 2, 1)                                          # newest first
    assert thread_order(rows, by_uid) == thread_order(rows, {s.uid: s for s in sums})
    order, depth = thread_order(rows, by_uid)
    assert order[:2] == [3, 5] and depth == {5: 1, 2: 1, 4: 2}
    cache.close()


async def test_threads_are_built_in_a_worker_from_the_store(tmp_path):
    app, store, _ = local_app(tmp_path)
    seen: list = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        ml = mlist(app)
        rows = tuple(ml.rows)
        await pilot.press("t")
        await settle(pilot, app, lambda: ml.depth)
        ready = [m for m in seen if isinstance(m, ThreadsReady)]
        assert ready and ready[-1].rows == rows
        every = store.summaries("INBOX", list(rows))
        assert list(ml.rows) == thread_order(rows, every)[0]
        assert app.main_screen.status.progress == ""
        await pilot.press("t")                                  # off again: the folder order
        await settle(pilot, app, lambda: not ml.depth)
        assert tuple(ml.rows) == rows


async def test_a_cursor_move_repaints_only_the_two_rows_it_touches(tmp_path):
    app, _store, _ = local_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        ml = mlist(app)
        painted: list[int] = []
        original = MessageList.render_line

        def spy(self, y):
            painted.append(y)
            return original(self, y)

        MessageList.render_line = spy
        try:
            await pilot.pause()
            painted.clear()
            await pilot.press("j")
            await pilot.pause()
            await pilot.pause()
        finally:
            MessageList.render_line = original
        assert ml.cursor == 1
        assert sorted(set(painted)) == [0, 1]


async def test_key_bar_lists_the_keys_that_work_and_a_click_presses_one(tmp_path):
    app, _store, _ = local_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        bar = app.main_screen.query_one(KeyBar)
        text = "".join(segment.text for segment in bar.render_line(0))
        shown = [b for _n, b, _e, _t in app.main_screen.active_bindings.values() if b.show]
        for binding in shown:
            assert f" {app.get_key_display(binding)} " in text
        assert "Search" in text and "Open" in text
        start = text.index(" / Search")
        await pilot.click(KeyBar, offset=(start + 2, 0))
        await settle(pilot, app, lambda: app.main_screen.query_one("#search").display)


FIRST_FRAME_PROBE = r'''
import asyncio, json, sys
from tui_mail.ui import startup
startup.hold()
from tui_mail.ui.run import build, parse_args
from tui_mail.ui.trace import TraceBuffer
from tui_mail.ui.app import MailApp

HEAVY = ("imapclient", "aiosmtplib", "email.policy", "tui_mail.mail.parse", "tui_mail.store.pop3")
trace = TraceBuffer()
accounts, settings = build(parse_args([]), trace)
app = MailApp(accounts, settings, trace=trace)
seen = {}
display = app._display

def first_frame(screen, renderable):
    display(screen, renderable)
    if renderable is not None and "rows" not in seen:
        ml = app.main_screen.message_list
        seen.update(rows=len(ml.rows), subjects=[ml.summaries[u].subject for u in ml.rows[:3] if u in ml.summaries],
                    loaded=[m for m in HEAVY if m in sys.modules], gc_on=__import__("gc").isenabled(),
                    client=accounts[0].store._client is not None)

app._display = first_frame

async def main():
    async with app.run_test(size=(120, 40)):
        while "rows" not in seen:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.2)
        seen["gc_later"] = __import__("gc").isenabled()

asyncio.run(main())
print(json.dumps(seen))
'''


def test_the_first_frame_shows_cached_rows_before_any_network_or_heavy_import(tmp_path):
    """A warm start: the very first frame the terminal gets has the inbox's rows from the
    header cache, while the IMAP server (here: a port nobody listens on) has not been asked
    yet, and imapclient, aiosmtplib, email.policy and the message parser are not even loaded
    (they cost ~40 ms of start-up; bench/tui.py measures the time)."""
    import json
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:           # a free port: connecting to it is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for d in ("config", "data", "cache"):
        (tmp_path / d).mkdir()
    cfg = tmp_path / "config" / "config.toml"
    cfg.write_text(f'[[accounts]]\nname = "warm"\naddress = "bob@example.org"\n[accounts.imap]\n'
                   f'host = "127.0.0.1"\nport = {port}\nsecurity = "none"\nuser = "bob"\n'
                   'password_command = "echo secret"\n'
                   '[accounts.smtp]\nhost = "127.0.0.1"\nport = 1\nsecurity = "none"\n')
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CACHE_HOME=str(tmp_path / "cache"), TUI_MAIL_CONFIG=str(cfg), HOME=str(tmp_path))
    cache = HeaderCache(tmp_path / "cache" / "tui-mail" / "warm.sqlite")
    sums = [summary(u, f"Cached subject {u}", f"<{u}@x>", minutes=u) for u in range(1, 501)]
    cache.put("warm", "INBOX", 9, [(s, None) for s in sums])
    cache.check_uidvalidity("warm", "INBOX", 9)
    cache.save_order("warm", "INBOX", "date", [s.uid for s in sums])
    cache.close()
    done = subprocess.run([sys.executable, "-c", FIRST_FRAME_PROBE], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["rows"] == 500
    assert seen["subjects"] == ["Cached subject 500", "Cached subject 499", "Cached subject 498"]
    assert seen["loaded"] == [] and seen["client"] is False     # no imapclient: no connect tried yet
    assert seen["gc_on"] is False and seen["gc_later"] is True      # held until the rows were out


async def test_a_big_folder_is_threaded_by_the_server_when_it_offers_thread(tmp_path, monkeypatch):
    """Dovecot offers THREAD=REFERENCES: from SERVER_THREADS_FROM messages on (lowered here)
    `t` asks the server (UID THREAD in the protocol trace) and shows the same rows and
    indents as threading on the client does."""
    import pytest

    from peers import Dovecot, dovecot_available, make_message
    from test_ui_relay_undo import until
    from tui_mail.store.imap import ImapStore
    from tui_mail.ui.app import MailApp, UISettings
    from tui_mail.ui.screens import main as main_screen
    from tui_mail.ui.services import Account

    if not dovecot_available():
        pytest.skip("dovecot not installed")
    dc = Dovecot(tmp_path / "dovecot")
    dc.add_user("bob", "secret")
    parents = {2: [1], 4: [1, 2], 5: [3], 7: [1, 2, 4], 8: [6]}
    for i in range(1, 10):
        refs = " ".join(f"<msg{p}@example.com>" for p in parents.get(i, []))
        extra = f"References: {refs}\r\nIn-Reply-To: <msg{parents[i][-1]}@example.com>\r\n" if refs else ""
        dc.deliver("bob", make_message(i, subject=f"Topic {i}" if i not in parents else "Re: x", extra_headers=extra))
    dc.start()
    monkeypatch.setattr(main_screen, "SERVER_THREADS_FROM", 1)
    store = ImapStore("bob", "127.0.0.1", dc.imap_port, "bob", "secret", security="none")
    app = MailApp([Account("bob", store, "bob@example.org")], UISettings(mark_read="never"))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(mlist(app).rows) == 9 and app.main_screen.status.connection == "online")
            flat = tuple(mlist(app).rows)
            await until(pilot, lambda: all(u in mlist(app).summaries for u in flat))
            await pilot.press("t")
            await until(pilot, lambda: tuple(mlist(app).rows) != flat)
            server_order, server_depth = list(mlist(app).rows), dict(mlist(app).depth)
            assert any("THREAD REFERENCES" in line.text for line in app.trace_buffer.since(0))
            local = thread_order(flat, {f.uid: f for f in store.thread_fields("INBOX", list(flat))})
            assert (server_order, server_depth) == (list(local[0]), local[1])
            subject = {u: s.subject for u, s in mlist(app).summaries.items()}
            assert [subject[u] for u in server_order[:3]] == ["Topic 9", "Topic 6", "Re: x"]  # newest first
            assert sorted(server_depth.values()) == [1, 1, 1, 2, 3]
    finally:
        store.close()
        dc.cleanup()
