"""Against our relay over IMAP (no SORT: the order comes from the client's cache): undo of a
delete puts the message back at its sorted place, and its return is not announced as new mail;
mail that does arrive is."""

from __future__ import annotations

from test_ui_app import mlist
from tests.peers import make_message
from tests.test_client_vs_relay import imap_store, relay  # noqa: F401  (fixture)
from tui_mail.ui.app import MailApp, UISettings
from tui_mail.ui.services import Account

SIZE = (120, 36)


async def until(pilot, condition, timeout: float = 15.0) -> None:
    """Like test_ui_app.settle without waiting on workers (a reload cancels the one before)."""
    import asyncio

    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        assert loop.time() < end, "condition not reached"
        await pilot.pause()
        await asyncio.sleep(0.02)


def subjects(app) -> list[str]:
    ml = mlist(app)
    return [getattr(ml.summaries.get(u), "subject", None) for u in ml.rows]


async def test_undo_of_delete_returns_to_its_place_without_a_new_mail_toast(relay):  # noqa: F811
    relay.seed([make_message(7 - i) for i in range(8)])    # UIDs in reverse date order
    relay.start()
    store = imap_store(relay)
    app = MailApp([Account("bob", store, "bob@example.org")], UISettings(mark_read="never"))
    toasts: list[str] = []
    real_notify = app.notify

    def notify(message, **kw):
        toasts.append(str(message))
        real_notify(message, **kw)

    app.notify = notify
    try:
        async with app.run_test(size=SIZE) as pilot:
            # a cold cache paints in arrival order; once the dates are cached it is sorted
            newest_first = [f"Message {i} about topic {i % 13}" for i in range(7, -1, -1)]
            await until(pilot, lambda: subjects(app) == newest_first, timeout=15)
            before = subjects(app)
            mlist(app).set_cursor(3)
            await pilot.pause()
            gone = before[3]
            await pilot.press("d")
            await until(pilot, lambda: len(mlist(app).rows) == 7, timeout=10)
            await pilot.press("z")
            await until(pilot, lambda: subjects(app) == before, timeout=10)
            await until(pilot, lambda: app.main_screen.status.total == 8)
            assert not any("new message" in t for t in toasts), toasts
            assert app.main_screen.status.folder == "INBOX"
            # real new mail is still announced
            relay.deliver(make_message(99, subject="Really new"))
            await until(pilot, lambda: any("1 new message" in t for t in toasts), timeout=15)
            await until(pilot, lambda: subjects(app)[0] == "Really new")
            del gone
    finally:
        store.close()
        store.cache.close()
