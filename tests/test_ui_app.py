"""Pilot tests of the main flows against the in-memory store (UI logic); the same flows run
against real stores in test_ui_real.py."""

from __future__ import annotations

import asyncio

import pytest
from textual.worker import WorkerCancelled

from test_ui_fakestore import NOW, FakeStore, make_message, seeded_store
from tui_mail.store.base import FLAGGED, SEEN
from tui_mail.ui.app import MailApp, UISettings
from tui_mail.ui.services import Account, SubmitResult
from tui_mail.ui.widgets.message_list import MessageList

SIZE = (120, 36)


def make_app(store: FakeStore | None = None, **settings) -> tuple[MailApp, FakeStore, list]:
    store = store or seeded_store()
    sent: list = []

    def submit(data: bytes, sender: str, rcpts: list[str]) -> SubmitResult:
        sent.append((data, sender, rcpts))
        return SubmitResult(True, "250 2.0.0 Ok: queued")

    account = Account("bob", store, "bob@hamburger.edu", "Bob Hamburger", submit=submit)
    return MailApp([account], UISettings(**settings), clock=lambda: NOW), store, sent


async def settle(pilot, app: MailApp, until=lambda: True, timeout: float = 5.0) -> None:
    """Let workers finish and messages drain, until ``until()`` holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        await pilot.pause()
        try:
            await app.workers.wait_for_complete()
        except WorkerCancelled:     # an exclusive worker replaced by a newer one (a reload): done too
            pass
        await pilot.pause()
        if until():
            return
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


def mlist(app) -> MessageList:
    return app.main_screen.query_one(MessageList)


async def test_opens_inbox_with_newest_first_and_preview():
    app, store, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None
                     and app.main_screen.preview.uid is not None)
        ml = mlist(app)
        assert len(ml.rows) == 30
        assert ml.current_summary.subject == "Message number 0"
        assert app.main_screen.status.folder == "INBOX"
        assert "Message number 0" in str(app.main_screen.preview._body.render())
        # message 0 was unread; the preview marks it read once it rested there mark_read_delay
        assert SEEN not in store.folders["INBOX"][1][1]
        await settle(pilot, app, lambda: SEEN in store.folders["INBOX"][1][1])


async def ready(pilot, app):
    await settle(pilot, app, lambda: mlist(app).current_summary is not None)


async def test_keys_move_cursor_and_flag_then_undo():
    app, store, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("j", "j")
        ml = mlist(app)
        assert ml.cursor == 2
        uid = ml.current_uid
        await pilot.press("s")
        await settle(pilot, app, lambda: FLAGGED in store.folders["INBOX"][uid][1])
        assert ml.current_summary.flagged
        await pilot.press("z")
        await settle(pilot, app, lambda: FLAGGED not in store.folders["INBOX"][uid][1]
                     and not mlist(app).summaries.get(uid, ml.current_summary).flagged)
        await pilot.press("G")
        assert ml.cursor == 29
        await pilot.press("g")
        assert ml.cursor == 0


async def test_delete_goes_to_trash_and_undo_puts_it_back():
    app, store, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        uid = mlist(app).current_uid
        await pilot.press("d")
        await settle(pilot, app, lambda: uid not in store.folders["INBOX"] and uid not in mlist(app).rows)
        assert len(store.folders["Trash"]) == 1
        await pilot.press("z")
        await settle(pilot, app, lambda: len(store.folders["Trash"]) == 0 and len(mlist(app).rows) == 30)
        assert any(c[0] == "MOVE" and c[1] == "Trash" for c in store.calls)


async def test_bulk_move_with_fuzzy_picker():
    app, store, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("x", "x", "x")
        assert len(mlist(app).selection) == 3
        await pilot.press("m")
        await pilot.pause()
        await pilot.press("a", "r", "c", "enter")
        await settle(pilot, app, lambda: len(store.folders["Archive"]) == 3)
        await settle(pilot, app, lambda: len(mlist(app).rows) == 27 and not mlist(app).selection)


async def test_search_shows_results_like_a_folder_and_escape_leaves():
    store = seeded_store(5)
    store.add("INBOX", make_message(50, subject="Do you like ketchup?"))
    app, store, _ = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("slash")
        await pilot.press(*"ketchup", "enter")
        await settle(pilot, app, lambda: len(mlist(app).rows) == 1)
        assert mlist(app).current_summary.subject == "Do you like ketchup?"
        assert ("SEARCH", "INBOX", "ketchup") in store.calls
        await pilot.press("escape")
        await settle(pilot, app, lambda: len(mlist(app).rows) == 6)


async def test_folder_create_rename_delete():
    app, store, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("N")
        await pilot.pause()
        await pilot.press(*"Projects", "enter")
        await settle(pilot, app, lambda: "Projects" in app.main_screen.tree.folders["bob"])
        app.main_screen.tree.select_folder("bob", "Projects")
        await settle(pilot, app, lambda: app.main_screen.folder == "Projects")
        await pilot.press("E")
        await pilot.pause()
        await pilot.press("ctrl+u" if False else "end", *"2026", "enter")
        await settle(pilot, app, lambda: "Projects2026" in store.folders)
        await settle(pilot, app, lambda: app.main_screen.folder == "Projects2026")
        await pilot.press("D")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot, app, lambda: "Projects2026" not in store.folders
                     and app.main_screen.folder == "INBOX")


async def test_new_mail_arrives_without_a_keypress():
    app, store, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await settle(pilot, app, lambda: store.watcher is not None)
        store.deliver("INBOX", make_message(99, subject="Fresh news", when=NOW))
        await settle(pilot, app, lambda: len(mlist(app).rows) == 31)
        assert any("new message" in n.message for n in app._notifications)


async def test_compose_marks_bad_addresses_then_sends():
    app, store, sent = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("c")
        await pilot.pause()
        screen = app.screen
        screen.query_one("#to").value = "carol@crepes.fr, not an address"
        screen.query_one("#subject").value = "Ketchup?"
        screen.query_one("#body").focus()
        await pilot.pause()
        assert screen.query_one("#to").has_class("-invalid")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert sent == []
        screen.query_one("#to").value = "Carol <carol@crepes.fr>"
        await pilot.press("ctrl+s")
        await settle(pilot, app, lambda: len(sent) == 1 and app.screen is app.main_screen)
        data, sender, rcpts = sent[0]
        assert sender == "bob@hamburger.edu" and rcpts == ["carol@crepes.fr"]
        assert b"Subject: Ketchup?" in data


async def test_reply_prefills_and_discard_asks():
    app, store, sent = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("r")
        await settle(pilot, app, lambda: app.screen is not app.main_screen)
        screen = app.screen
        assert screen.query_one("#to").value.endswith("alice@crepes.fr>")
        assert screen.query_one("#subject").value == "Re: Message number 0"
        await pilot.press(*"Thanks")               # changed: leaving asks
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot, app, lambda: app.screen is app.main_screen)
        assert sent == []
        await pilot.press("r")                      # unchanged: Escape just closes
        await settle(pilot, app, lambda: app.screen is not app.main_screen)
        await pilot.press("escape")
        await settle(pilot, app, lambda: app.screen is app.main_screen)


async def test_reader_next_previous_and_raw():
    app, store, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("enter")
        await settle(pilot, app, lambda: getattr(app.screen, "view", None) is not None)
        reader = app.screen
        assert reader.view.subject == "Message number 0"
        await pilot.press("n")
        await settle(pilot, app, lambda: reader.view.subject == "Message number 1")
        await pilot.press("v")
        assert "Message-ID: <m1@crepes.fr>" in str(reader.query_one("#body").render())
        await pilot.press("q")
        assert app.screen is app.main_screen and mlist(app).cursor == 1


async def test_trace_screen_shows_masked_dialogue_and_help_lists_keys():
    app, store, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("f2")
        await settle(pilot, app, lambda: app.screen.seen > 0)
        lines = [str(s.text) for s in app.screen.query_one("RichLog").lines]
        assert any("C: LOGIN bob ****" in l for l in lines)
        await pilot.press("escape", "question_mark")
        await pilot.pause()
        from textual.widgets import DataTable
        assert app.screen.query_one(DataTable).row_count > 25


async def test_remapped_key_and_check_action_greys_out_undo():
    app, store, _ = make_app(keys={"archive": "a"})
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert app.main_screen.check_action("undo", ()) is None
        await pilot.press("a")
        await settle(pilot, app, lambda: len(store.folders["Archive"]) == 1)
        assert app.main_screen.check_action("undo", ()) is True


async def test_mouse_click_selects_and_double_click_opens():
    app, store, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        ml = mlist(app)
        await pilot.click(MessageList, offset=(20, 3))
        assert ml.cursor == 3
        await pilot.click(MessageList, offset=(20, 4), times=2)
        await settle(pilot, app, lambda: getattr(app.screen, "view", None) is not None)
        assert app.screen.view.subject == ml.summaries[ml.rows[4]].subject


async def test_sort_and_threads_reorder_rows():
    store = seeded_store(3)
    store.add("INBOX", make_message(40, subject="Re: Message number 2", in_reply_to="<m2@crepes.fr>",
                                    when=NOW))
    app, store, _ = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        ml = mlist(app)
        await settle(pilot, app, lambda: all(u in ml.summaries for u in ml.rows))
        assert ml.current_summary.subject == "Re: Message number 2"      # newest first
        await pilot.press("t")
        await settle(pilot, app, lambda: ml.depth)                        # threaded in a worker
        subjects = [ml.summaries[u].subject for u in ml.rows]
        assert subjects.index("Re: Message number 2") == subjects.index("Message number 2") + 1
        assert ml.depth == {ml.rows[subjects.index("Re: Message number 2")]: 1}
        await pilot.press("t", "o")                                       # threads off, sort by from
        await settle(pilot, app, lambda: app.main_screen.sort == "from" and not ml.depth)


async def test_autosave_keeps_a_draft_and_discard_removes_it():
    app, store, _ = make_app(autosave_seconds=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("c")
        await pilot.pause()
        await pilot.press(*"carol@crepes.fr")
        await settle(pilot, app, lambda: len(store.folders["Drafts"]) == 1 and b"carol@crepes.fr\r\n"
                     in next(iter(store.folders["Drafts"].values()))[0])
        await pilot.press("escape", "y")
        await settle(pilot, app, lambda: app.screen is app.main_screen and not store.folders["Drafts"])


async def test_store_errors_become_a_notification_and_the_list_recovers():
    app, store, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        del store.folders["Trash"]                      # the server lost the Trash folder
        uid = mlist(app).current_uid
        await pilot.press("d")
        await settle(pilot, app, lambda: app.errors)
        assert "Trash" in app.errors[0]
        await settle(pilot, app, lambda: uid in mlist(app).rows)


async def test_theme_from_settings_and_ascii_glyphs():
    app, store, _ = make_app(theme="nord", ascii=True, mark_read="never")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert app.theme == "nord"
        line = mlist(app).render_line(0).text
        assert line.startswith(" N") and "●" not in line


async def test_reader_saves_an_attachment(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(tmp_path / "dl"))
    app, store, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        ml = mlist(app)
        ml.set_cursor(ml.row_of(3))                   # message 2 carries data.bin
        await pilot.press("enter")
        await settle(pilot, app, lambda: getattr(app.screen, "view", None) is not None)
        assert [a.filename for a in app.screen.view.attachments] == ["data.bin"]
        reader = app.screen
        await pilot.press("a")                        # asks, with the download dir filled in
        assert app.screen.query_one("#answer").value == str(tmp_path / "dl" / "data.bin")
        await pilot.press("enter")
        await settle(pilot, app, lambda: app.screen is reader)
        assert (tmp_path / "dl" / "data.bin").read_bytes() == b"\x00\x01"
        await pilot.press("a", "enter")               # never overwrites
        await settle(pilot, app, lambda: (tmp_path / "dl" / "data (1).bin").exists())
        assert any("data (1).bin" in n.message and "not overwritten" in n.message
                   for n in app._notifications)
        await pilot.press("a", "escape")              # Esc closes the question, not the reader
        await settle(pilot, app, lambda: app.screen is reader)
        assert len(list((tmp_path / "dl").iterdir())) == 2
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "kept.bin").write_bytes(b"x")
        await pilot.press("a")
        app.screen.query_one("#answer").value = str(tmp_path / "elsewhere" / "ke")
        await pilot.press("tab")                      # path completion
        assert app.screen.query_one("#answer").value == str(tmp_path / "elsewhere" / "kept.bin")
        app.screen.query_one("#answer").value = str(tmp_path / "elsewhere") + "/"
        await pilot.press("enter")
        await settle(pilot, app, lambda: (tmp_path / "elsewhere" / "data.bin").exists())
        assert app.screen is reader


async def test_warm_start_paints_from_the_cache_before_the_server_answers():
    import threading

    class SlowServer(FakeStore):
        def __init__(self):
            super().__init__()
            self.server_answers = threading.Event()
            self.cache = {}

        def connect(self):
            self.server_answers.wait(10)
            super().connect()

        def cached_folder_state(self, folder, sort="date"):
            return self.folder_state(folder, sort) if folder == "INBOX" else None

        def cached_summaries(self, folder, uids):
            return self.summaries(folder, uids)

    store = SlowServer()
    for i in range(5):
        store.add("INBOX", make_message(i))
    app, store, _ = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        loop = asyncio.get_running_loop()
        end = loop.time() + 5
        while not (getattr(app, "main_screen", None) and len(mlist(app).rows) == 5
                   and mlist(app).current_summary is not None):
            await asyncio.sleep(0.02)
            assert loop.time() < end, "no warm paint"
        assert app.main_screen.status.connection == "connecting"     # painted before login
        store.server_answers.set()
        await settle(pilot, app, lambda: app.main_screen.status.connection == "online"
                     and ("bob", "INBOX") in app.main_screen._fresh)
        assert len(mlist(app).rows) == 5


async def test_reader_delete_takes_only_the_shown_message_and_moves_on():
    app, store, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("x")                        # a selection elsewhere must not be deleted
        await pilot.press("enter")
        await settle(pilot, app, lambda: getattr(app.screen, "view", None) is not None)
        shown = app.screen.uid
        await pilot.press("d")
        await settle(pilot, app, lambda: shown not in store.folders["INBOX"]
                     and app.screen.view is not None and app.screen.uid != shown)
        assert len(store.folders["Trash"]) == 1


async def test_palette_offers_trace_and_only_actions_that_can_run():
    app, store, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        titles = {c.title for c in app.get_system_commands(app.main_screen)}
        assert {"Protocol trace", "Keys", "Delete", "Reply", "New folder"} <= titles
        assert "Undo" not in titles                    # nothing to undo yet
        assert "Rename folder" not in titles           # INBOX cannot be renamed
