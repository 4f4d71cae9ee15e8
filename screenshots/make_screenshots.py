"""Regenerate screenshots/{main,reader,composer,search,trace}.svg from the real app.

The app runs headless (Textual's Pilot) at 120x36 against a real IMAP server: a throwaway
Dovecot (tests/peers.py) holding the deterministic demo mail (tui_mail.demo_data), read
through the real ImapStore, so the trace screenshot shows a real IMAP dialogue. Without
Dovecot the script falls back to the local Maildir store. Never edit the SVGs by hand.

    .venv/bin/python screenshots/make_screenshots.py
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tui_mail import demo_data  # noqa: E402
from tui_mail.ui.app import MailApp, UISettings  # noqa: E402
from tui_mail.ui.services import Account  # noqa: E402
from tui_mail.ui.widgets.message_list import MessageList  # noqa: E402

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
SIZE = (120, 36)
OUT = ROOT / "screenshots"


def seed_messages() -> list[bytes]:
    """Bulk mail first (older), then the ketchup thread, a newsletter, an attachment and a
    non-ASCII message: everything the list and reader have to show."""
    out = list(demo_data.bulk(60, NOW, to=demo_data.BOB))
    out += [raw for _, raw in demo_data.classic_thread(NOW)]
    out += [demo_data.newsletter(NOW), demo_data.with_attachment(NOW), demo_data.non_ascii(NOW)]
    return out


async def until(pilot, cond, timeout=15.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        await pilot.pause()
        await asyncio.sleep(0.05)
        if loop.time() > end:
            raise RuntimeError("the app did not reach the expected state")
    await pilot.pause()


async def shoot(app: MailApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        ml = lambda: app.main_screen.query_one(MessageList)  # noqa: E731
        await until(pilot, lambda: getattr(app, "main_screen", None) is not None
                    and app.main_screen.is_mounted and ml().current_summary is not None
                    and app.main_screen.preview.uid is not None)
        await pilot.press("j", "j")
        await until(pilot, lambda: app.main_screen.preview.uid == ml().current_uid)
        app.save_screenshot("main.svg", str(OUT))

        await pilot.press("enter")
        await until(pilot, lambda: getattr(app.screen, "view", None) is not None)
        app.save_screenshot("reader.svg", str(OUT))
        await pilot.press("r")
        await until(pilot, lambda: type(app.screen).__name__ == "ComposeScreen")
        app.screen.query_one("#cc").value = "carol@crepes.fr, chef@"
        await pilot.pause()
        app.save_screenshot("composer.svg", str(OUT))
        await pilot.press("escape", "y")
        await until(pilot, lambda: type(app.screen).__name__ == "ReaderScreen")
        await pilot.press("q")
        await until(pilot, lambda: app.screen is app.main_screen)

        await pilot.press("slash", *"ketchup", "enter")
        await until(pilot, lambda: app.main_screen.search_query and "server" in app.main_screen.status.note
                    and app.main_screen.preview.uid == ml().current_uid)
        app.save_screenshot("search.svg", str(OUT))
        await pilot.press("escape")

        await pilot.press("f2")
        await until(pilot, lambda: getattr(app.screen, "seen", 0) > 0)
        app.save_screenshot("trace.svg", str(OUT))


def main() -> int:
    os.environ.pop("NO_COLOR", None)
    settings = UISettings(mark_read="never", cursor_blink=False)
    with tempfile.TemporaryDirectory(prefix="tui-shots-") as d:
        tmp = Path(d)
        dc = None
        try:
            if shutil.which("dovecot") or os.path.exists("/usr/sbin/dovecot"):
                from peers import Dovecot

                from tui_mail.store.imap import ImapStore

                dc = Dovecot(tmp / "dovecot")
                dc.add_user("bob", "secret")
                for raw in seed_messages():
                    dc.deliver("bob", raw)
                dc.start()
                store = ImapStore("bob", "127.0.0.1", dc.imap_port, "bob", "secret", security="none")
            else:
                from tui_mail.store.local import LocalStore

                store = LocalStore(tmp / "mail")
                store.connect()
                for name in ("Sent", "Drafts", "Trash", "Archive"):
                    store.create_folder(name)
                for raw in seed_messages():
                    store.append("INBOX", raw)
            from tui_mail.accounts import submit_via
            from tui_mail.send.outbox import Outbox
            from tui_mail.send.smtp import SmtpSettings, SmtpSubmitter

            submitter = SmtpSubmitter(SmtpSettings("127.0.0.1", 2587, security="none"))
            outbox = Outbox(tmp / "outbox", send=submitter.send).open()
            account = Account("bob@hamburger", store, "bob@hamburger.edu", "Bob Hamburger",
                              submit=submit_via(outbox), outbox=outbox.store)
            app = MailApp([account], settings, clock=lambda: NOW)
            asyncio.run(shoot(app))
            outbox.close()
        finally:
            if dc is not None:
                dc.cleanup()
    for name in ("main", "reader", "composer", "search", "trace"):
        print(OUT / f"{name}.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
