"""Opening a POP3 inbox logs in to the server once, not once per reload (issue 12: three
logins within 2 s). Real demo world: bob on POP3 at the hamburger.edu relay; the logins are
counted in the protocol trace the app records."""

from __future__ import annotations

import asyncio

from test_demo_ui import account, world  # noqa: F401  (fixture)
from test_ui_app import mlist, settle
from tui_mail.ui.demo_app import build_demo_app


def logins(app, name: str) -> int:
    return sum(1 for line in app.trace_buffer.since(0)
               if line.account == name and line.direction == "C" and line.text.upper().startswith(("USER ", "AUTH ", "APOP ")))


async def test_opening_a_pop3_inbox_logs_in_once(world):  # noqa: F811
    world.start(bulk_in_background=False)
    app = build_demo_app(world, ascii_only=True)
    async with app.run_test(size=(160, 45)) as pilot:
        main = app.main_screen
        await settle(pilot, app, lambda: main.account is not None and main.folder == "INBOX"
                     and mlist(app).current_summary is not None, timeout=15)
        bob = account(app, "bob")
        main.open_folder(bob, "INBOX")
        await settle(pilot, app, lambda: main.account is bob and len(mlist(app).rows) > 0, timeout=15)
        await asyncio.sleep(2.0)                 # the reloads that new mail sets off
        await settle(pilot, app)
        assert logins(app, "bob") == 1, [line.text for line in app.trace_buffer.since(0) if line.account == "bob"]
        # switching away and back does not log in again before the check interval
        main.open_folder(account(app, "alice"), "INBOX")
        await settle(pilot, app, lambda: main.account.name == "alice")
        main.open_folder(bob, "INBOX")
        await settle(pilot, app, lambda: main.account is bob and len(mlist(app).rows) > 0)
        await asyncio.sleep(1.0)
        await settle(pilot, app)
        assert logins(app, "bob") == 1
