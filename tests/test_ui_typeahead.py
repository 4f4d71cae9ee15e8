"""Keys typed in one burst (a paste, a fast typist, tmux send-keys) land where they belong:
every key goes to the widget that has focus after the keys before it were handled
(tui_mail.ui.keyorder). Keys are queued the way the terminal's input thread queues them, all
at once, against a real LocalStore and, for sending, a real SMTP server on port 0."""

from __future__ import annotations

from email import message_from_bytes, policy

from keyburst import burst, paste, typed
from test_ui_app import mlist, settle
from test_ui_real import SIZE, local_app, smtp_sink  # noqa: F401  (fixture)
from tui_mail.ui.screens.compose import ComposeScreen


async def test_compose_burst_with_tabs_fills_each_field(tmp_path, smtp_sink):  # noqa: F811
    app, store, outbox = local_app(tmp_path, smtp_sink.port)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        burst(app, "c", *typed("bob@hamburger.edu"), "tab", *typed("cc@x.org"), "tab", "tab",
              *typed("Burst subject"), "tab", *typed("Body typed fast."))
        await app.keys_settled()
        screen = app.screen
        assert isinstance(screen, ComposeScreen)
        value = lambda name: screen.query_one(f"#{name}").value  # noqa: E731
        assert (value("to"), value("cc"), value("bcc"), value("subject")) == (
            "bob@hamburger.edu", "cc@x.org", "", "Burst subject")
        assert screen.query_one("#body").text.startswith("Body typed fast.")
        burst(app, "ctrl+s")
        await settle(pilot, app, lambda: smtp_sink.messages and app.screen is app.main_screen, timeout=10)
    sender, rcpts, data = smtp_sink.messages[0]
    assert rcpts == ["bob@hamburger.edu", "cc@x.org"]
    msg = message_from_bytes(data, policy=policy.default)
    assert msg["Subject"] == "Burst subject"
    assert msg.get_content().startswith("Body typed fast.")
    outbox.close()


async def test_pasted_address_list_then_typing(tmp_path):
    app, store, _ = local_app(tmp_path, 9)   # never sent: only the fields matter
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        burst(app, "c")
        paste(app, "Bob <bob@hamburger.edu>, carol@crepes.fr, Zoë <zoe@hamburger.edu>")
        burst(app, "tab", *typed("dave@x.org"), "tab", "tab", *typed("Paste"))
        await app.keys_settled()
        screen = app.screen
        assert screen.query_one("#to").value == (
            "Bob <bob@hamburger.edu>, carol@crepes.fr, Zoë <zoe@hamburger.edu>")
        assert screen.query_one("#cc").value == "dave@x.org"
        assert screen.query_one("#subject").value == "Paste"


async def test_search_burst_goes_to_the_search_bar_not_the_list(tmp_path):
    app, store, _ = local_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        total = len(mlist(app).rows)
        # every letter of this query is also a list command (d delete, s flag, e archive …)
        burst(app, "slash", *typed("subject:ketchup"), "enter")
        await app.keys_settled()
        await settle(pilot, app, lambda: app.main_screen.search_query == "subject:ketchup"
                     and 0 < len(mlist(app).rows) < total)
        assert len(store.folder_state("INBOX").uids) == total     # nothing was deleted/moved
        assert not store.folder_state("Trash").uids


async def test_keys_after_enter_wait_for_the_message_in_the_reader(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(tmp_path / "dl"))
    app, store, _ = local_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        ml = mlist(app)
        with_attachment = next(u for u in ml.rows if ml.summaries[u].has_attachment)
        ml.set_cursor(ml.row_of(with_attachment))
        await pilot.pause()
        fetch = store.fetch_message

        def slow_fetch(*args, **kw):          # a server a little far away
            import time
            time.sleep(0.5)
            return fetch(*args, **kw)

        monkeypatch.setattr(store, "fetch_message", slow_fetch)
        # Enter, then a (save attachment) and Enter (accept the path) before the message loaded
        burst(app, "enter", "a", "enter")
        await app.keys_settled()
        await settle(pilot, app, lambda: (tmp_path / "dl").exists() and any((tmp_path / "dl").iterdir()))
        assert type(app.screen).__name__ == "ReaderScreen"


async def test_keys_after_opening_a_folder_act_on_its_rows(tmp_path):
    app, store, _ = local_app(tmp_path)
    for i in range(3):                       # Archive: three messages, newest "Archived 2"
        store.append("Archive", f"Subject: Archived {i}\r\nFrom: a@b.c\r\nDate: Mon, 2{i} Nov 2026 10:00:00 +0000\r\n\r\nx\r\n".encode())
    async with app.run_test(size=SIZE) as pilot:
        main = app.main_screen
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        main.tree.focus()
        await pilot.pause()
        archive_line = main.tree._folder_nodes[("alice", "Archive")].line
        main.tree.cursor_line = archive_line
        await pilot.pause()
        fetch = store.folder_state

        def slow_state(*args, **kw):          # a server a little far away
            import time
            time.sleep(0.4)
            return fetch(*args, **kw)

        store.folder_state = slow_state
        burst(app, "enter", "j", "enter")      # open Archive, next message, open it
        await app.keys_settled()
        await settle(pilot, app, lambda: getattr(app.screen, "view", None) is not None)
        assert app.screen.view.subject == "Archived 1"
