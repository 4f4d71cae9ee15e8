"""The unified inbox across accounts and the in:all search over an account's folders, in the
running app against two real local Maildir stores (tui_mail.store.local) with real SMTP
submission through the outbox to an aiosmtpd server on port 0."""

from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime

from textual.widgets import Input

from test_ui_app import mlist, settle
from test_ui_real import NOW, SIZE, smtp_sink  # noqa: F401 - smtp_sink is a fixture
from tui_mail.accounts import sent_copy_to, submit_via
from tui_mail.send.outbox import Outbox
from tui_mail.send.smtp import SmtpSettings, SmtpSubmitter
from tui_mail.store.base import FLAGGED
from tui_mail.store.local import LocalStore
from tui_mail.store.virtual import VirtualStore, decode, encode
from tui_mail.ui.app import MailApp, UISettings
from tui_mail.ui.services import Account
from tui_mail.ui.virtual_views import UNIFIED, split_scope


def message(sender: str, to: str, subject: str, minutes: int) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, to, subject
    m["Date"] = format_datetime(NOW - timedelta(minutes=minutes))
    m["Message-ID"] = f"<{subject.replace(' ', '.')}.{minutes}@test>"
    m.set_content(f"{subject}\n")
    return bytes(m)


def store_with(path, inbox: list[bytes], extra: dict[str, list[bytes]] | None = None) -> LocalStore:
    store = LocalStore(path)
    store.connect()
    for name in ("Sent", "Drafts", "Trash", "Archive"):
        store.create_folder(name)
    for raw in inbox:
        store.append("INBOX", raw)
    for folder, raws in (extra or {}).items():
        for raw in raws:
            store.append(folder, raw)
    store.close()
    return LocalStore(path, poll_interval=0.1)


def account(tmp_path, name: str, address: str, store: LocalStore, port: int) -> Account:
    submitter = SmtpSubmitter(SmtpSettings("127.0.0.1", port, security="none"))
    outbox = Outbox(tmp_path / f"{name}-outbox", send=submitter.send, sent_copy=sent_copy_to(store)).open()
    return Account(name, store, address, name.capitalize(), submit=submit_via(outbox), outbox=outbox.store)


def two_accounts(tmp_path, port: int):
    a = store_with(tmp_path / "a", [message("Carol <carol@x.org>", "ann@a.example", f"for ann {i}", 10 * i + 5)
                                    for i in range(3)])
    b = store_with(tmp_path / "b", [message("Dave <dave@y.org>", "ben@b.example", f"for ben {i}", 10 * i)
                                    for i in range(3)])
    accounts = [account(tmp_path, "ann", "ann@a.example", a, port),
                account(tmp_path, "ben", "ben@b.example", b, port)]
    return MailApp(accounts, UISettings(mark_read="never"), clock=lambda: NOW), a, b


def real_uid(store: LocalStore, folder: str, subject: str) -> int:
    state = store.folder_state(folder)
    sums = store.cached_summaries(folder, list(state.uids))
    return next(u for u, s in sums.items() if s.subject == subject)


def test_keys_encode_where_a_message_lives():
    assert decode(encode(3, 4_000_000_000)) == (3, 4_000_000_000)
    assert split_scope("from:bob in:all  ketchup") == (True, "from:bob ketchup")
    assert split_scope("inbox:all main") == (False, "inbox:all main")


async def test_unified_inbox_lists_every_inbox_by_date_and_acts_on_the_right_account(tmp_path, smtp_sink):
    app, a, b = two_accounts(tmp_path, smtp_sink.port)
    async with app.run_test(size=SIZE) as pilot:
        main = app.main_screen
        await settle(pilot, app, lambda: mlist(app).current_summary is not None
                     and main.tree.info(UNIFIED, UNIFIED) is not None)
        main.tree.select_folder(UNIFIED, UNIFIED)
        ml = mlist(app)
        await settle(pilot, app, lambda: main.folder == UNIFIED and len(ml.rows) == 6
                     and all(u in ml.summaries for u in ml.rows))
        subjects = [ml.summaries[u].subject for u in ml.rows]
        assert subjects == ["for ben 0", "for ann 0", "for ben 1", "for ann 1", "for ben 2", "for ann 2"]
        assert isinstance(main.account.store, VirtualStore)
        # flag a message of ben's: ben's store has the flag on its own uid
        await pilot.press("g", "s")
        ben0 = real_uid(b, "INBOX", "for ben 0")
        await settle(pilot, app, lambda: FLAGGED in b.cached_summaries("INBOX", [ben0])[ben0].flags)
        # delete ann's newest: it goes to ann's Trash; undo puts it back in ann's INBOX
        await pilot.press("j", "d")
        await settle(pilot, app, lambda: len(ml.rows) == 5 and len(a.folder_state("Trash").uids) == 1)
        assert len(b.folder_state("Trash").uids) == 0
        await pilot.press("z")
        await settle(pilot, app, lambda: len(a.folder_state("INBOX").uids) == 3
                     and not a.folder_state("Trash").uids)
        # move ben's oldest to Archive (a folder both accounts have)
        await settle(pilot, app, lambda: len(ml.rows) == 6)
        await pilot.press("G")
        assert ml.current_summary.subject == "for ann 2"
        await pilot.press("k", "m")
        await settle(pilot, app, lambda: app.screen.query("Input"))
        await pilot.press(*"Archive", "enter")
        await settle(pilot, app, lambda: len(b.folder_state("Archive").uids) == 1)
        assert not a.folder_state("Archive").uids
        # reply to ann's message: the composer writes from ann's account
        await pilot.press("g", "j", "r")
        await settle(pilot, app, lambda: app.screen.query("#from"))
        assert "ann@a.example" in app.screen.query_one("#from", Input).value
        assert "carol@x.org" in app.screen.query_one("#to", Input).value


async def test_in_all_searches_every_folder_and_results_act_like_a_list(tmp_path):
    store = store_with(tmp_path / "a",
                       [message("Carol <carol@x.org>", "ann@a.example", "ketchup in the inbox", 5),
                        message("Carol <carol@x.org>", "ann@a.example", "mustard", 6)],
                       {"Archive": [message("Dave <dave@y.org>", "ann@a.example", "old ketchup talk", 50)],
                        "Sent": [message("Ann <ann@a.example>", "carol@x.org", "re: ketchup", 7)]})
    app = MailApp([Account("ann", store, "ann@a.example")], UISettings(mark_read="never"), clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        main = app.main_screen
        await settle(pilot, app, lambda: mlist(app).current_summary is not None
                     and main.tree.info("ann", "Archive") is not None)
        ml = mlist(app)
        await pilot.press("slash", *"in:all ketchup", "enter")
        await settle(pilot, app, lambda: main.search_query == "ketchup" and len(ml.rows) == 3
                     and all(u in ml.summaries for u in ml.rows))
        found = sorted(ml.summaries[u].subject for u in ml.rows)
        assert found == ["ketchup in the inbox", "old ketchup talk", "re: ketchup"]
        # open the archived one in the reader
        target = next(i for i, u in enumerate(ml.rows) if ml.summaries[u].subject == "old ketchup talk")
        ml.set_cursor(target)
        await pilot.press("enter")
        await settle(pilot, app, lambda: getattr(getattr(app.screen, "view", None), "subject", "") == "old ketchup talk")
        await pilot.press("escape")
        await settle(pilot, app, lambda: app.screen is main)
        # delete it from the results: it moves from Archive to Trash
        ml.set_cursor(next(i for i, u in enumerate(ml.rows) if ml.summaries[u].subject == "old ketchup talk"))
        await pilot.press("d")
        await settle(pilot, app, lambda: len(store.folder_state("Trash").uids) == 1 and len(ml.rows) == 2)
        assert not store.folder_state("Archive").uids
        # Esc: back to the inbox it started from
        await pilot.press("escape")
        await settle(pilot, app, lambda: main.folder == "INBOX" and main.account.name == "ann"
                     and len(ml.rows) == 2)


def test_unified_order_by_date_across_two_dovecot_accounts_with_cold_caches(tmp_path):
    """Real IMAP: two users on Dovecot, empty header caches; the virtual folder fetches the
    dates it needs and interleaves the two inboxes by date; flags and moves reach the right
    user on the server."""
    from peers import Dovecot, dovecot_available, make_message

    import pytest

    from tui_mail.store.cache import HeaderCache
    from tui_mail.store.imap import ImapStore
    from tui_mail.store.virtual import Source

    if not dovecot_available():
        pytest.skip("dovecot not installed")
    dc = Dovecot(tmp_path / "dovecot")
    try:
        for user, offset in (("ann", 0), ("ben", 1)):     # ben a minute after ann, each time
            dc.add_user(user, "pw")
            dc.seed(user, 4, make=lambda i, u=user, o=offset: make_message(
                i, subject=f"{u} {i}", date=NOW - timedelta(minutes=100 - 2 * i - o)))
        dc.start()
        stores = [ImapStore(u, "127.0.0.1", dc.imap_port, u, "pw", security="none",
                            cache=HeaderCache(tmp_path / f"{u}.sqlite")) for u in ("ann", "ben")]
        for s in stores:
            s.connect()
        unified = VirtualStore(UNIFIED, [Source(u, s, "INBOX") for u, s in zip(("ann", "ben"), stores)])
        assert unified.cached_folder_state(UNIFIED) is None            # nothing cached yet
        keys = unified.folder_state(UNIFIED).uids                       # oldest first
        subjects = [unified.summaries(UNIFIED, [k])[k].subject for k in keys]
        assert subjects == ["ann 0", "ben 0", "ann 1", "ben 1", "ann 2", "ben 2", "ann 3", "ben 3"]
        ben_newest = keys[-1]
        unified.set_flags(UNIFIED, [ben_newest], [FLAGGED])
        assert FLAGGED in stores[1].summaries("INBOX", [decode(ben_newest)[1]])[decode(ben_newest)[1]].flags
        mapping = unified.move(UNIFIED, [keys[-2]], "Trash")            # ann's newest
        assert decode(mapping[keys[-2]])[0] == 0
        assert len(stores[0].folder_state("Trash").uids) == 1 and not stores[1].folder_state("Trash").uids
        for s in stores:
            s.close()
    finally:
        dc.cleanup()
