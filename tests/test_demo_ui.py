"""`tui-mail demo` driven end to end by Pilot: the real DemoApp over a real DemoWorld (two
in-process relays), alice on IMAP at crepes.fr and bob on POP3 at hamburger.edu. The tests
press keys like a user would and assert on what the screens show."""

from __future__ import annotations

import asyncio
import shutil
import threading

import pytest

from test_ui_app import mlist, settle
from tui_mail.demo import ALICE, BOB, PASSWORDS, DemoWorld
from tui_mail.ui.demo_app import RelayPanel, build_demo_app

SIZE = (160, 45)


@pytest.fixture
def world(tmp_path, monkeypatch):
    w = DemoWorld(tmp_path / "demo", bulk=30)
    w.setup()
    for k, v in w.client_env().items():
        monkeypatch.setenv(k, v)
    yield w
    w.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith(("relay-", "demo-"))]


def account(app, name):
    return next(a for a in app.accounts if a.name == name)


def uid_with(app, subject):
    ml = mlist(app)
    for uid in ml.rows:
        s = ml.summaries.get(uid)
        if s is not None and s.subject == subject:
            return uid
    return None


async def show_folder(pilot, app, name, folder, until, timeout=20.0):
    """Open ``folder`` of account ``name`` and re-open it until ``until()`` holds (a POP3
    account fetches when its folder is loaded; re-opening stands in for the user's refresh)."""
    main = app.main_screen
    acct = account(app, name)
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        main.open_folder(acct, folder)
        try:
            await settle(pilot, app, lambda: main.account is acct and main.folder == folder and until(),
                         timeout=1.0)
            return
        except AssertionError:
            if loop.time() > end:
                raise AssertionError(f"{name}/{folder}: condition not reached; rows="
                                     f"{[getattr(mlist(app).summaries.get(u), 'subject', None) for u in mlist(app).rows]}"
                                     f" errors={app.errors}")


async def compose_and_send(pilot, app, to, subject, body):
    await pilot.press("c")
    await pilot.pause()
    screen = app.screen
    screen.query_one("#to").value = to
    screen.query_one("#subject").value = subject
    screen.query_one("#body").load_text(body)
    await pilot.press("ctrl+s")
    await settle(pilot, app, lambda: app.screen is app.main_screen, timeout=10)


def panel_text(app) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, color_system=None)
    for wid in ("#q-crepes", "#q-hamburger"):
        console.print(app.screen.query_one(wid).content)
    log = "\n".join(strip.text for strip in app.screen.query_one("#log").lines)
    return console.export_text() + log + "\n"


async def test_journey_alice_to_bob_and_back_threaded(world):
    world.start(bulk_in_background=False)
    app = build_demo_app(world, ascii_only=True)
    async with app.run_test(size=SIZE) as pilot:
        main = app.main_screen
        await settle(pilot, app, lambda: main.account is not None and main.account.name == "alice"
                     and main.folder == "INBOX" and mlist(app).current_summary is not None, timeout=15)
        # Alice writes to bob, with herself in Cc so her INBOX holds the thread's root
        await pilot.press("c")
        await pilot.pause()
        screen = app.screen
        screen.query_one("#to").value = BOB
        screen.query_one("#cc").value = ALICE
        screen.query_one("#subject").value = "Lunch on Saturday"
        screen.query_one("#body").load_text("Crêpes at noon? Bring the ketchup.\n")
        await pilot.press("ctrl+s")
        await settle(pilot, app, lambda: app.screen is main, timeout=10)

        # Bob's POP3 account shows it
        await show_folder(pilot, app, "bob", "INBOX", lambda: uid_with(app, "Lunch on Saturday") is not None)
        ml = mlist(app)
        ml.set_cursor(ml.row_of(uid_with(app, "Lunch on Saturday")))
        await pilot.pause()
        await pilot.press("r")
        await settle(pilot, app, lambda: app.screen is not main and app.screen.query("#subject"))
        reply = app.screen
        assert reply.query_one("#subject").value == "Re: Lunch on Saturday"
        assert ALICE in reply.query_one("#to").value
        reply.query_one("#body").load_text("Noon is perfect. I'll bring pickles.\n")
        await pilot.press("ctrl+s")
        await settle(pilot, app, lambda: app.screen is main, timeout=10)

        # Alice's IMAP INBOX shows the reply; threaded, it sits under her own message
        await show_folder(pilot, app, "alice", "INBOX",
                          lambda: uid_with(app, "Re: Lunch on Saturday") is not None
                          and uid_with(app, "Lunch on Saturday") is not None)
        original = uid_with(app, "Lunch on Saturday")
        answer = uid_with(app, "Re: Lunch on Saturday")
        ml = mlist(app)
        assert ml.summaries[answer].in_reply_to.strip() == ml.summaries[original].message_id.strip()
        assert ml.depth.get(answer, 0) == 0                  # flat view: no indentation
        await pilot.press("t")
        await settle(pilot, app, lambda: main.threaded and mlist(app).depth)
        ml = mlist(app)
        assert ml.depth.get(original, 0) == 0
        assert ml.depth[answer] == 1
        assert ml.row_of(answer) == ml.row_of(original) + 1   # directly under the message it answers
        # the seeded ketchup thread: alice's INBOX holds bob's two replies (<ketchup.2>, <ketchup.4>);
        # the root and her own reply <ketchup.3> are in Sent, so <ketchup.4> hangs under <ketchup.2>
        # through References (its In-Reply-To, <ketchup.3>, is not in this folder)
        by_id = {ml.summaries[u].message_id.strip(): u for u in ml.rows if u in ml.summaries}
        k2, k4 = by_id["<ketchup.2@hamburger.edu>"], by_id["<ketchup.4@hamburger.edu>"]
        assert (ml.depth.get(k2, 0), ml.depth.get(k4, 0)) == (0, 1)
        assert ml.row_of(k4) == ml.row_of(k2) + 1
        assert "<ketchup.1@crepes.fr>" not in by_id
        # the trace screen's buffer holds both submissions' SMTP dialogues, never a password
        lines = app.trace_buffer.since(0)
        sent = [(l.account, l.text) for l in lines if l.direction == "C" and l.text.upper().startswith("MAIL FROM")]
        assert any(a == "alice" and t.startswith("MAIL FROM:<alice@crepes.fr>") for a, t in sent), sent
        assert any(a == "bob" and t.startswith("MAIL FROM:<bob@hamburger.edu>") for a, t in sent), sent
        assert not any(pw in l.text for l in lines for pw in PASSWORDS.values())
        await pilot.press("ctrl+q")


async def test_hamburger_down_defers_in_the_panel_then_delivers(world):
    world.start(bulk_in_background=False)
    app = build_demo_app(world, ascii_only=True)
    async with app.run_test(size=SIZE) as pilot:
        main = app.main_screen
        await settle(pilot, app, lambda: main.account is not None and mlist(app).current_summary is not None,
                     timeout=15)
        await pilot.press("f3")
        await settle(pilot, app, lambda: isinstance(app.screen, RelayPanel))
        await pilot.press("h")
        await settle(pilot, app, lambda: not world.relay("hamburger.edu").running, timeout=10)
        await settle(pilot, app, lambda: "stopped" in panel_text(app), timeout=5)
        await pilot.press("escape")
        await settle(pilot, app, lambda: app.screen is main)
        await compose_and_send(pilot, app, BOB, "While you were out", "The crêpes are cold now.\n")

        await pilot.press("f3")
        await settle(pilot, app, lambda: isinstance(app.screen, RelayPanel))
        await settle(pilot, app, lambda: "bob@hamburger.edu (deferred)" in panel_text(app), timeout=20)
        text = panel_text(app)
        assert "alice@crepes.fr" in text and "hamburger.edu" in text and "stopped" in text
        await pilot.press("h")
        await settle(pilot, app, lambda: world.relay("hamburger.edu").running, timeout=10)
        await settle(pilot, app, lambda: "(deferred)" not in panel_text(app)
                     and "status=sent" in panel_text(app), timeout=20)
        log = panel_text(app).splitlines()
        order = [next(i for i, line in enumerate(log) if needle in line) for needle in
                 ("hamburger.edu relay stopped", "status=deferred", "hamburger.edu relay started",
                  "status=sent")]
        assert order == sorted(order), log
        assert any("to=<bob@hamburger.edu>" in line and "status=sent" in line for line in log), log
        await pilot.press("escape")
        await settle(pilot, app, lambda: app.screen is main)
        await show_folder(pilot, app, "bob", "INBOX", lambda: uid_with(app, "While you were out") is not None)
        await pilot.press("ctrl+q")


async def test_unknown_recipient_bounce_shows_in_alices_inbox(world):
    world.start(bulk_in_background=False)
    app = build_demo_app(world, ascii_only=True)
    async with app.run_test(size=SIZE) as pilot:
        main = app.main_screen
        await settle(pilot, app, lambda: main.account is not None and main.account.name == "alice"
                     and mlist(app).current_summary is not None, timeout=15)
        await compose_and_send(pilot, app, "nobody@hamburger.edu", "Anyone there", "Hello?\n")

        def bounce():
            ml = mlist(app)
            return [u for u in ml.rows if (s := ml.summaries.get(u))
                    and "mailer-daemon" in s.from_addr.lower()]

        await show_folder(pilot, app, "alice", "INBOX", bounce)
        uid = bounce()[0]
        s = mlist(app).summaries[uid]
        assert (s.from_name, s.subject) == ("Mail Delivery System", "Undelivered Mail Returned to Sender")
        assert s.from_addr.lower() == "mailer-daemon@mail.crepes.fr"
        mlist(app).set_cursor(mlist(app).row_of(uid))
        await pilot.press("enter")
        await settle(pilot, app, lambda: getattr(app.screen, "view", None) is not None, timeout=10)
        assert app.screen.view.subject == "Undelivered Mail Returned to Sender"
        assert "nobody@hamburger.edu" in app.screen.view.text
        await pilot.press("q")
        await pilot.press("ctrl+q")


async def test_quit_then_stop_leaves_no_thread_and_no_temp_dir(tmp_path, monkeypatch):
    """What main() does around the UI: setup, env, start, app, quit, stop, rmtree."""
    root = tmp_path / "tui-mail-demo-x"
    world = DemoWorld(root, bulk=30)
    try:
        world.setup()
        for k, v in world.client_env().items():
            monkeypatch.setenv(k, v)
        world.start()
        app = build_demo_app(world, ascii_only=True)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot, app, lambda: mlist(app).current_summary is not None, timeout=15)
            await pilot.press("ctrl+q")
            await pilot.pause()
        assert app.return_code in (0, None)
    finally:
        world.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert not [t for t in threading.enumerate() if t.name.startswith(("relay-", "demo-"))]
    assert not root.exists()


def test_main_with_the_ui_quits_cleanly_and_removes_its_temp_dir(tmp_path, monkeypatch):
    """The real ``tui_mail.demo.main()`` (no --keep) with its UI driven by Pilot: the only
    piece replaced is ``run_demo_app``'s blocking ``App.run()``; the app it drives is the one
    ``build_demo_app`` builds over main()'s own world and environment."""
    import signal

    from tui_mail import demo
    from tui_mail.ui import demo_app

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(demo.tempfile, "tempdir", str(tmp))
    for k in DemoWorld(tmp_path / "unused").client_env():
        monkeypatch.setenv(k, "")                  # main() sets these; monkeypatch restores them
    # main() installs SIGTERM/SIGHUP handlers for its process: put pytest's back afterwards
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    seen = {}

    def run_with_pilot(world, ascii_only=False):
        async def drive():
            app = demo_app.build_demo_app(world, ascii_only)
            async with app.run_test(size=SIZE) as pilot:
                await settle(pilot, app, lambda: mlist(app).current_summary is not None, timeout=15)
                seen["root"] = world.root
                seen["listed"] = sorted(p.name for p in tmp.iterdir())
                seen["running"] = [d for d, h in world.relays.items() if h.running]
                await pilot.press("ctrl+q")
                await pilot.pause()
        asyncio.run(drive())

    monkeypatch.setattr(demo_app, "run_demo_app", run_with_pilot)
    try:
        assert demo.main(["--messages", "20", "--ascii"]) == 0
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert seen["running"] == ["crepes.fr", "hamburger.edu"]
    assert len(seen["listed"]) == 1 and seen["listed"][0].startswith("tui-mail-demo-")
    assert seen["root"].parent == tmp
    assert list(tmp.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith(("relay-", "demo-"))]


def test_queue_table_and_log_text_render_what_a_user_needs():
    """Pure: the panel's renderables from queue entries as the control socket reports them."""
    from rich.console import Console

    from tui_mail.ui.demo_app import log_text, queue_table

    now = 1_800_000_000.0
    entries = [
        {"id": "ABCDEF0123456789", "arrival": now - 75, "sender": ALICE, "next_attempt": now + 12,
         "recipients": [{"address": BOB, "status": "deferred", "text": "connect to 127.0.0.1:1 failed"}]},
        {"id": "FEDCBA", "arrival": now - 3, "sender": "", "next_attempt": now - 1,
         "recipients": [{"address": ALICE, "status": "failed", "text": "550 5.1.1 no such user"},
                        {"address": "carol@crepes.fr", "status": "sent"}]},
    ]
    console = Console(width=160, record=True, color_system=None)
    console.print(queue_table("crepes.fr", True, {"smtp": ("127.0.0.1", 2525)}, entries, now))
    console.print(queue_table("hamburger.edu", False, {}, [], now))
    console.print(log_text([(now, "crepes.fr", "ABC: to=<bob@hamburger.edu>, status=sent")]))
    out = console.export_text()
    assert "crepes.fr  ● running  2 messages queued   smtp :2525" in out
    assert "hamburger.edu  ○ stopped  queue empty" in out
    assert "ABCDEF012345 " in out and "ABCDEF0123456" not in out      # IDs cut to 12
    row1 = next(line for line in out.splitlines() if "ABCDEF012345" in line)
    assert "1m15s" in row1 and "bob@hamburger.edu (deferred)" in row1 and "12s" in row1
    assert "connect to 127.0.0.1:1 failed" in row1
    row2 = next(line for line in out.splitlines() if "FEDCBA" in line)
    assert "<>" in row2 and "now" in row2 and "550 5.1.1 no such user" in row2
    assert "alice@crepes.fr (failed)," in row2 and "carol@crepes.fr (sent)" in out   # wraps, never cut
    assert "   crepes.fr ABC: to=<bob@hamburger.edu>, status=sent" in out


def test_destinations_text_shows_the_schedulers_view():
    """Pure: one line per onward destination; hostile error text stays text."""
    from rich.console import Console

    from tui_mail.ui.demo_app import destinations_text

    now = 1_800_000_000.0
    dests = [
        {"destination": "127.0.0.1:2526", "domains": ["hamburger.edu"], "state": "ok", "active": 1, "window": 3,
         "queued": 2, "sending": 1, "waiting": 0, "delivered": 40, "last_error": "", "deferred_until": None,
         "dead_until": None},
        {"destination": "127.0.0.1:9", "domains": ["tarpit.test"], "state": "dead", "active": 0, "window": 1,
         "queued": 0, "sending": 0, "waiting": 5, "delivered": 0, "dead_until": now + 125,
         "deferred_until": now + 60, "last_error": "timed out [bold]waiting[/] for the greeting\x1b]52;c;eA==\x07"},
    ]
    console = Console(width=160, record=True, color_system=None)
    console.print(destinations_text(dests, now))
    ok, dead = console.export_text().splitlines()
    assert ok == "  → hamburger.edu 127.0.0.1:2526  ok  1/3 conns  3 queued  40 sent"
    assert dead.startswith("  → tarpit.test 127.0.0.1:9  DEAD  0/1 conns  5 queued  0 sent  dead for 2m05s")
    assert dead.endswith("timed out [bold]waiting[/] for the greeting␛]52;c;eA==␇")   # escapes made visible


async def test_first_screen_is_quick(world):
    """The issue asks for the first screen within a second or two; on this shared machine the
    bound is looser, and the measured figure is printed (pytest -s) for the README."""
    import time

    world.start(bulk_in_background=True)
    t0 = time.monotonic()
    app = build_demo_app(world, ascii_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None, timeout=15)
        elapsed = time.monotonic() - t0
        print(f"demo first screen with alice's INBOX: {elapsed:.2f} s")
        assert elapsed < 8.0
        await pilot.press("ctrl+q")
