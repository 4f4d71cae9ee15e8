"""Keys and layout (issue 12): j/k/g/G in the folder tree and its cursor staying on the open
folder, the preview's focus visible, every screen's keys remappable by id, the relay panel's
log following its tail at 40 rows. Real LocalStore / the real demo world."""

from __future__ import annotations

import logging

from test_demo_ui import world  # noqa: F401  (fixture)
from test_ui_app import mlist, settle
from test_ui_real import NOW, SIZE, seeded_local
from tui_mail.ui.app import MailApp, UISettings
from tui_mail.ui.demo_app import RelayPanel, build_demo_app
from tui_mail.ui.screens.reader import ReaderScreen
from tui_mail.ui.services import Account
from tui_mail.ui.widgets.folder_tree import FolderTree


def local(tmp_path, **settings):
    store = seeded_local(tmp_path / "mail")
    never_sent = lambda data, sender, rcpts: None  # noqa: E731  (composing only)
    return MailApp([Account("alice", store, "alice@crepes.fr", submit=never_sent)],
                   UISettings(mark_read="never", **settings), clock=lambda: NOW), store


def cursor_folder(app) -> str | None:
    node = app.main_screen.tree.cursor_node
    return node.data.folder if node is not None and node.data is not None else None


async def test_folder_tree_jkgG_and_cursor_stays_on_the_open_folder(tmp_path):
    app, store = local(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        main = app.main_screen
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        assert cursor_folder(app) == "INBOX"          # not the account line
        main.tree.focus()
        await pilot.press("j")
        assert cursor_folder(app) == "Drafts"
        await pilot.press("k")
        assert cursor_folder(app) == "INBOX"
        await pilot.press("G")
        last = cursor_folder(app)
        assert last not in ("INBOX", None)
        await pilot.press("g")
        assert main.tree.cursor_line == 0
        await pilot.press("j", "j", "enter")            # open Drafts
        await settle(pilot, app, lambda: main.folder == "Drafts" and main.status.folder == "Drafts")
        # a refresh and a search rebuild the tree: the cursor stays on the open folder
        await pilot.press("ctrl+r")
        await settle(pilot, app)
        assert cursor_folder(app) == "Drafts"
        await pilot.press("slash", *"ketchup", "enter")
        await settle(pilot, app, lambda: main.search_query == "ketchup")
        main.list_folders(main.account)
        await settle(pilot, app)
        assert cursor_folder(app) == "Drafts"


async def test_preview_focus_is_visible(tmp_path):
    app, store = local(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        main = app.main_screen
        await settle(pilot, app, lambda: main.preview.uid is not None)
        looks = lambda: (main.preview.styles.border_left, main.preview.styles.border_top,  # noqa: E731
                         main.preview.styles.background)
        before = looks()
        main.preview.focus()
        await pilot.pause()
        assert main.preview.has_focus and looks() != before
        main.preview.show_text("line\n" * 200)
        await pilot.pause()
        await pilot.press("j", "j", "j")
        assert main.preview.scroll_y == 3
        await pilot.press("k")
        assert main.preview.scroll_y == 2


async def test_reader_and_composer_keys_remap_by_id(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(tmp_path / "dl"))
    app, store = local(tmp_path, keys={"reader": {"close": "x", "raw": "w"},
                                       "composer.discard": "ctrl+g", "help.close": "z"})
    async with app.run_test(size=SIZE) as pilot:
        main = app.main_screen
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        await pilot.press("enter")
        await settle(pilot, app, lambda: isinstance(app.screen, ReaderScreen) and app.screen.view is not None)
        await pilot.press("w")
        assert app.screen.raw
        await pilot.press("q")                        # no longer bound
        assert isinstance(app.screen, ReaderScreen)
        await pilot.press("x")
        await settle(pilot, app, lambda: app.screen is main)
        await pilot.press("c")
        await settle(pilot, app, lambda: app.screen is not main)
        await pilot.press("ctrl+g")
        await settle(pilot, app, lambda: app.screen is main)
        await pilot.press("question_mark")
        await settle(pilot, app, lambda: app.screen is not main)
        rows = [tuple(str(c) for c in app.screen.query_one("DataTable").get_row_at(i))
                for i in range(app.screen.query_one("DataTable").row_count)]
        assert ("Reader", "x", "Back", "reader.close") in rows
        await pilot.press("z")
        await settle(pilot, app, lambda: app.screen is main)


async def test_relay_panel_log_follows_the_tail_at_40_rows(world):  # noqa: F811
    world.start(bulk_in_background=False)
    app = build_demo_app(world, ascii_only=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app, lambda: app.main_screen.folder == "INBOX", timeout=15)
        await pilot.press("f3")
        await settle(pilot, app, lambda: isinstance(app.screen, RelayPanel))
        from tui_mail.ui.demo_app import note

        for i in range(80):
            note("crepes.fr", f"log line {i:03d}")
        log = app.screen.query_one("#log")
        await settle(pilot, app, lambda: any("log line 079" in s.text for s in log.lines), timeout=5)
        await pilot.pause()
        assert log.max_scroll_y > 0 and log.scroll_y == log.max_scroll_y     # newest in view
        visible = app.screen.query_one("#log").render_line(log.size.height - 1).text
        assert "log line 079" in visible
        await pilot.press("k", "k")                   # scrolled up: stays put while lines come
        held = log.scroll_y
        note("crepes.fr", "one more")
        await settle(pilot, app, lambda: any("one more" in s.text for s in log.lines), timeout=5)
        assert log.scroll_y == held
        await pilot.press("G")                        # follow again
        assert log.scroll_y == log.max_scroll_y
    logging.getLogger("relay.demo").handlers[:] = []
