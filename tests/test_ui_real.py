"""The TUI's flows against real stores: the local Maildir store (POP3 accounts' store), real
Dovecot over IMAP (tests/peers.py), and real SMTP submission through the durable outbox to an
aiosmtpd server on port 0 in the test's own loop."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from email import message_from_bytes, policy

import pytest
from aiosmtpd.smtp import SMTP as SMTPProtocol

from peers import Dovecot, dovecot_available
from test_ui_app import mlist, settle
from tui_mail import demo_data
from tui_mail.accounts import sent_copy_to, submit_via
from tui_mail.send.outbox import Outbox
from tui_mail.send.smtp import SmtpSettings, SmtpSubmitter
from tui_mail.store.base import FLAGGED, SEEN
from tui_mail.store.local import LocalStore
from tui_mail.ui.app import MailApp, UISettings
from tui_mail.ui.services import Account

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
SIZE = (120, 36)


def seeded_local(path) -> LocalStore:
    store = LocalStore(path)
    store.connect()
    for name in ("Sent", "Drafts", "Trash", "Archive"):
        store.create_folder(name)
    for raw in demo_data.alice_inbox(NOW):
        store.append("INBOX", raw)
    store.close()
    return LocalStore(path, poll_interval=0.1)


class Sink:
    def __init__(self):
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 Ok: queued as 1234"


@pytest.fixture
async def smtp_sink():
    sink = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTPProtocol(sink, hostname="sink.test"), "127.0.0.1", 0)
    sink.port = server.sockets[0].getsockname()[1]
    yield sink
    server.close()
    await server.wait_closed()


def local_app(tmp_path, smtp_port: int | None = None) -> tuple[MailApp, LocalStore, Outbox | None]:
    store = seeded_local(tmp_path / "mail")
    submit = outbox = None
    if smtp_port is not None:
        submitter = SmtpSubmitter(SmtpSettings("127.0.0.1", smtp_port, security="none"))
        outbox = Outbox(tmp_path / "outbox", send=submitter.send, sent_copy=sent_copy_to(store)).open()
        submit = submit_via(outbox)
    account = Account("alice", store, "alice@crepes.fr", "Alice Crêpe", submit=submit,
                      outbox=outbox.store if outbox else None)
    return MailApp([account], UISettings(), clock=lambda: NOW), store, outbox


async def test_local_store_read_flag_move_undo_search(tmp_path):
    app, store, _ = local_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        ml = mlist(app)
        total = len(ml.rows)
        assert total == len(demo_data.alice_inbox(NOW))
        # read: open the ketchup message in the reader
        every = store.summaries("INBOX", ml.rows)
        ketchup = next(u for u, s in every.items() if s.subject == "Re: Do you like ketchup?")
        ml.set_cursor(ml.row_of(ketchup))
        await pilot.press("enter")
        await settle(pilot, app, lambda: getattr(app.screen, "view", None) is not None)
        assert app.screen.view.subject == "Re: Do you like ketchup?"
        assert "ketchup" in app.screen.view.text.lower()
        await pilot.press("q")
        await settle(pilot, app, lambda: SEEN in store.cached_summaries("INBOX", [ketchup])[ketchup].flags)
        # flag and move to Archive, then undo the move
        await pilot.press("s")
        await settle(pilot, app, lambda: FLAGGED in store.summaries("INBOX", [ketchup])[ketchup].flags)
        await pilot.press("e")
        await settle(pilot, app, lambda: len(store.folder_state("Archive").uids) == 1)
        assert ketchup not in store.folder_state("INBOX").uids
        await pilot.press("z")
        await settle(pilot, app, lambda: len(store.folder_state("INBOX").uids) == total
                     and len(mlist(app).rows) == total)


async def test_local_store_search(tmp_path):
    pytest.importorskip("tui_mail.mail.search", reason="the query language module has not landed")
    app, store, _ = local_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        total = len(mlist(app).rows)
        await pilot.press("slash", *"subject:ketchup", "enter")
        await settle(pilot, app, lambda: app.errors or (app.main_screen.search_query
                                                        and 0 < len(mlist(app).rows) < total))
        assert not app.errors
        assert all("ketchup" in s.subject.lower() for u in mlist(app).rows
                   if (s := mlist(app).summaries.get(u)))


async def test_local_store_folder_ops_and_delete_undo(tmp_path):
    app, store, _ = local_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        uid = mlist(app).current_uid
        await pilot.press("d")
        await settle(pilot, app, lambda: len(store.folder_state("Trash").uids) == 1)
        await pilot.press("z")
        await settle(pilot, app, lambda: not store.folder_state("Trash").uids)
        await pilot.press("N", *"Projects", "enter")
        await settle(pilot, app, lambda: "Projects" in app.main_screen.tree.folders["alice"])
        app.main_screen.tree.select_folder("alice", "Projects")
        await settle(pilot, app, lambda: app.main_screen.folder == "Projects")
        await pilot.press("E", "end", *"-old", "enter")
        await settle(pilot, app, lambda: "Projects-old" in app.main_screen.tree.folders["alice"])
        await pilot.press("D", "y")
        await settle(pilot, app, lambda: "Projects-old" not in {f.name for f in store.list_folders(False)})
        del uid


async def test_compose_with_attachment_sends_through_outbox(tmp_path, smtp_sink):
    attachment = tmp_path / "recipe.txt"
    attachment.write_text("2 tomatoes, vinegar, sugar\n")
    app, store, outbox = local_app(tmp_path, smtp_sink.port)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        await pilot.press("c")
        await pilot.pause()
        screen = app.screen
        await pilot.press(*"bob@hamburger.edu")
        screen.query_one("#subject").value = "Homemade ketchup"
        screen.query_one("#body").load_text("Here is the recipe.\n")
        await pilot.press("ctrl+t")
        screen.query_one("#attach-path").value = str(attachment)
        await pilot.press("enter")
        assert screen.attachments == [str(attachment)]
        await pilot.press("ctrl+s")
        await settle(pilot, app, lambda: smtp_sink.messages and app.screen is app.main_screen, timeout=10)
    sender, rcpts, data = smtp_sink.messages[0]
    assert (sender, rcpts) == ("alice@crepes.fr", ["bob@hamburger.edu"])
    msg = message_from_bytes(data, policy=policy.default)
    assert msg["Subject"] == "Homemade ketchup"
    assert [p.get_filename() for p in msg.iter_attachments()] == ["recipe.txt"]
    store.connect()
    assert len(store.folder_state("Sent").uids) == 1          # the Sent copy
    outbox.close()


async def test_unsendable_mail_waits_in_the_outbox_folder(tmp_path, port_factory):
    app, store, outbox = local_app(tmp_path, port_factory())   # nothing listens there
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        await pilot.press("c")
        await pilot.pause()
        await pilot.press(*"bob@hamburger.edu")
        app.screen.query_one("#subject").value = "Later"
        await pilot.press("ctrl+s")
        try:
            await settle(pilot, app, lambda: app.screen is app.main_screen, timeout=10)
        except AssertionError:
            print("DBG", app.errors, [n.message for n in app._notifications], app.screen.query_one("#to").value)
            raise
        assert any("Outbox" in n.message for n in app._notifications)
        app.main_screen.list_folders(app.accounts[0])
        await settle(pilot, app, lambda: "Outbox" in app.main_screen.tree.folders["alice"])
        app.main_screen.tree.select_folder("alice", "Outbox")
        await settle(pilot, app, lambda: app.main_screen.folder == "Outbox" and mlist(app).current_summary)
        assert mlist(app).current_summary.subject == "Later"
    outbox.close()


needs_dovecot = pytest.mark.skipif(not dovecot_available(), reason="dovecot not installed")


@needs_dovecot
async def test_imap_against_dovecot_open_move_undo_idle(tmp_path):
    from tui_mail.store.imap import ImapStore

    dc = Dovecot(tmp_path / "dovecot", idle_interval=1)
    dc.add_user("bob", "secret")
    dc.seed("bob", 40, seen_every=2)
    dc.start()
    try:
        store = ImapStore("bob", "127.0.0.1", dc.imap_port, "bob", "secret", security="none",
                          poll_interval=1)
        app = MailApp([Account("bob", store, "bob@hamburger.edu")], UISettings(mark_read="never"),
                      clock=lambda: NOW)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot, app, lambda: mlist(app).current_summary is not None, timeout=10)
            ml = mlist(app)
            assert len(ml.rows) == 40
            assert app.main_screen.status.connection == "online"
            uid = ml.current_uid
            await pilot.press("m")
            await pilot.pause()
            await pilot.press(*"Trash", "enter")
            await settle(pilot, app, lambda: uid not in mlist(app).rows, timeout=10)
            await pilot.press("z")
            await settle(pilot, app, lambda: len(mlist(app).rows) == 40, timeout=10)
            dc.deliver("bob", demo_data.newsletter(NOW))
            # IDLE on a loaded 2-core machine (the whole suite beside it) once took over 15 s
            await settle(pilot, app, lambda: len(mlist(app).rows) == 41, timeout=30)
            assert any("new message" in n.message for n in app._notifications)
            lines = app.trace_buffer.since(0)
            assert any(l.direction == "C" and "LOGIN" in l.text.upper() for l in lines)
            assert not any("secret" in l.text for l in lines)
    finally:
        dc.cleanup()
