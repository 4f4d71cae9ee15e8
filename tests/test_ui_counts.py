"""Folder counts stay fresh while the app runs (periodic STATUS / index refresh), and the
status bar always names the folder whose rows the list shows, with that list's count. Real
LocalStore (a Maildir, what a POP3 account reads); mail is dropped into it from outside."""

from __future__ import annotations

import time

from test_ui_app import mlist, settle
from test_ui_real import NOW, SIZE, seeded_local
from tests.peers import make_message
from tui_mail.ui.app import MailApp, UISettings
from tui_mail.ui.screens import main as main_module
from tui_mail.ui.services import Account


def drop_into(maildir, folder: str, data: bytes, n: int) -> None:
    """What another program (a delivery agent, a sync tool) does to a Maildir."""
    sub = maildir / ("." + folder if folder != "INBOX" else "")
    for i in range(n):
        name = f"{time.time():.6f}.ext{i}.host"
        (sub / "tmp" / name).write_bytes(data)
        (sub / "tmp" / name).rename(sub / "new" / name)


async def test_counts_follow_mail_that_arrives_unannounced(tmp_path, monkeypatch):
    monkeypatch.setattr(main_module, "COUNTS_REFRESH_SECONDS", 0.3)
    store = seeded_local(tmp_path / "mail")
    app = MailApp([Account("alice", store, "alice@crepes.fr")], UISettings(mark_read="never"),
                  clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        main = app.main_screen
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        inbox = len(mlist(app).rows)
        assert (main.status.folder, main.status.total) == ("INBOX", inbox)
        # another folder fills up: its count in the tree follows without a key press
        drop_into(tmp_path / "mail", "Archive", make_message(1), 3)
        await settle(pilot, app, lambda: (main.tree.info("alice", "Archive").total or 0) == 3, timeout=10)
        # the status bar changes with the rows, never before them
        main.open_folder(main.accounts["alice"], "Archive")
        assert main.status.folder == "INBOX" and main.status.total == len(mlist(app).rows)
        await settle(pilot, app, lambda: main.status.folder == "Archive")
        assert main.status.total == len(mlist(app).rows) == 3
        # the open folder grows behind our back: rows and status follow
        drop_into(tmp_path / "mail", "Archive", make_message(2), 2)
        await settle(pilot, app, lambda: len(mlist(app).rows) == 5 and main.status.total == 5, timeout=10)
