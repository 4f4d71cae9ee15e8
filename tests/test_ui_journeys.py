"""A mutt/aerc user's journeys against real stores: the local Maildir store (what a POP3
account reads) and real SMTP submission to an aiosmtpd server on port 0, driven by keys.

Reply marks the original \\Answered, forward $Forwarded (list glyph, is:answered); a draft
opens again in the composer (Enter in Drafts) and sending it removes it; forward as attachment
(F); passing over mail never marks it read."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from keyburst import burst, typed
from test_ui_app import mlist, settle
from test_ui_relay_undo import until
from peers import dovecot_available
from test_ui_real import NOW, SIZE, local_app, smtp_sink  # noqa: F401  (fixture)
from tui_mail.store.base import ANSWERED, DRAFT, FORWARDED, SEEN
from tui_mail.ui.app import MailApp, UISettings
from tui_mail.ui.rows import UNICODE, Columns, row_cells
from tui_mail.ui.screens.compose import ComposeScreen


def uid_of(app, subject: str) -> int:
    ml = mlist(app)
    return next(u for u in ml.rows if (s := ml.summaries.get(u)) and s.subject == subject)


async def on_message(pilot, app, subject: str) -> int:
    await settle(pilot, app, lambda: any(s.subject == subject for s in mlist(app).summaries.values()))
    uid = uid_of(app, subject)
    mlist(app).set_cursor(mlist(app).row_of(uid))
    await pilot.pause()
    return uid


async def test_reply_marks_answered_forward_marks_forwarded(tmp_path, smtp_sink):  # noqa: F811
    app, store, outbox = local_app(tmp_path, smtp_sink.port)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        uid = await on_message(pilot, app, "Recipe for Saturday")
        # r then the reply text as one burst: the keys wait for the composer
        burst(app, "r", *typed("Yes, I'll come."), "ctrl+s")
        await settle(pilot, app, lambda: len(smtp_sink.messages) == 1 and app.screen is app.main_screen,
                     timeout=10)
        reply = message_from_bytes(smtp_sink.messages[0][2], policy=policy.default)
        assert reply["Subject"] == "Re: Recipe for Saturday"
        assert reply.get_content().startswith("Yes, I'll come.")
        await settle(pilot, app, lambda: ANSWERED in store.summaries("INBOX", [uid])[uid].flags)
        await settle(pilot, app, lambda: mlist(app).summaries[uid].answered)
        cells = row_cells(mlist(app).summaries[uid], Columns.for_width(100), NOW, UNICODE)
        assert UNICODE.answered in cells[0]
        # forward as attachment (F): the original rides along as message/rfc822
        burst(app, "F", *typed("dave@x.org"), "ctrl+s")
        await settle(pilot, app, lambda: len(smtp_sink.messages) == 2 and app.screen is app.main_screen,
                     timeout=10)
        fwd = message_from_bytes(smtp_sink.messages[1][2], policy=policy.default)
        assert smtp_sink.messages[1][1] == ["dave@x.org"]
        assert [p.get_content_type() for p in fwd.iter_attachments()] == ["message/rfc822"]
        await settle(pilot, app, lambda: FORWARDED in store.summaries("INBOX", [uid])[uid].flags)
        # is:answered finds it
        burst(app, "slash", *typed("is:answered"), "enter")
        await settle(pilot, app, lambda: app.main_screen.search_query == "is:answered"
                     and list(mlist(app).rows) == [uid])
    outbox.close()


async def test_draft_is_recalled_with_enter_and_sending_removes_it(tmp_path, smtp_sink):  # noqa: F811
    app, store, outbox = local_app(tmp_path, smtp_sink.port)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        burst(app, "c", *typed("bob@hamburger.edu"), "tab", "tab", "tab", *typed("Half written"),
              "tab", *typed("First thoughts."), "ctrl+d")
        await settle(pilot, app, lambda: len(store.folder_state("Drafts").uids) == 1)
        burst(app, "escape")
        await settle(pilot, app, lambda: app.screen is app.main_screen)
        assert len(store.folder_state("Drafts").uids) == 1          # leaving kept the draft
        draft_uid = store.folder_state("Drafts").uids[0]
        assert DRAFT in store.summaries("Drafts", [draft_uid])[draft_uid].flags
        app.main_screen.tree.select_folder("alice", "Drafts")
        await settle(pilot, app, lambda: app.main_screen.folder == "Drafts" and mlist(app).current_uid == draft_uid)
        # Enter recalls it; Escape without changes leaves it in Drafts
        burst(app, "enter")
        await settle(pilot, app, lambda: isinstance(app.screen, ComposeScreen))
        assert app.screen.query_one("#subject").value == "Half written"
        burst(app, "escape")
        await settle(pilot, app, lambda: app.screen is app.main_screen)
        assert store.folder_state("Drafts").uids == (draft_uid,)
        # recall again, finish it and send: the draft is gone, the mail went out
        burst(app, "enter", *typed(" And more."), "ctrl+s")
        await settle(pilot, app, lambda: smtp_sink.messages and not store.folder_state("Drafts").uids,
                     timeout=10)
    msg = message_from_bytes(smtp_sink.messages[0][2], policy=policy.default)
    assert msg["Subject"] == "Half written" and smtp_sink.messages[0][1] == ["bob@hamburger.edu"]
    assert "First thoughts. And more." in msg.get_content()
    outbox.close()


async def test_moving_the_cursor_never_marks_read_the_preview_does_after_the_delay(tmp_path):
    from test_ui_real import seeded_local
    from tui_mail.ui.services import Account

    store = seeded_local(tmp_path / "mail")
    app = MailApp([Account("alice", store, "alice@crepes.fr")], UISettings(mark_read_delay=0.4),
                  clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: app.main_screen.preview.uid is not None)
        ml = mlist(app)
        unread_before = {u for u in ml.rows if ml.summaries[u].unread}
        assert len(unread_before) >= 2
        burst(app, *["j"] * (len(ml.rows) - 1), *["k"] * (len(ml.rows) - 1))   # over every message
        await app.keys_settled()
        await settle(pilot, app)
        assert {u for u, s in store.summaries("INBOX", ml.rows).items() if SEEN not in s.flags} == unread_before
        first = ml.current_uid
        if first in unread_before:      # resting on it for the delay marks it read
            await settle(pilot, app, lambda: SEEN in store.summaries("INBOX", [first])[first].flags)
        # the reader marks on open
        burst(app, "j")
        await app.keys_settled()
        second = ml.current_uid
        burst(app, "enter")
        await settle(pilot, app, lambda: SEEN in store.summaries("INBOX", [second])[second].flags)


def _server_flags(port: int, folder: str, uid: int) -> str:
    """FLAGS of one message as Dovecot itself reports them (imaplib, not the app's store)."""
    import imaplib

    with imaplib.IMAP4("127.0.0.1", port) as imap:
        imap.login("bob", "secret")
        imap.select(folder, readonly=True)
        typ, data = imap.uid("FETCH", str(uid), "(FLAGS)")
        assert typ == "OK", data
        return b" ".join(d if isinstance(d, bytes) else d[0] for d in data if d).decode()


def draft_saved(app) -> bool:
    """The composer on screen saved its draft on purpose (Ctrl+D) and nothing changed since."""
    return isinstance(app.screen, ComposeScreen) and app.screen.keep_draft and not app.screen.dirty


async def on_imap_message(pilot, app, subject: str) -> int:
    await until(pilot, lambda: any(s.subject == subject for s in mlist(app).summaries.values()))
    uid = uid_of(app, subject)
    mlist(app).set_cursor(mlist(app).row_of(uid))
    await pilot.pause()
    return uid


async def _recall_and_send(pilot, app, smtp_sink, sent_before: int, extra: str) -> None:
    """Open Drafts, Enter on the (only) draft, type ``extra`` and send it."""
    main = app.main_screen
    main.tree.select_folder("bob", "Drafts")
    await until(pilot, lambda: main.folder == "Drafts" and mlist(app).current_uid is not None, timeout=10)
    burst(app, "enter", *typed(extra), "ctrl+s")
    await until(pilot, lambda: len(smtp_sink.messages) == sent_before + 1 and app.screen is main,
                 timeout=15)


@pytest.mark.skipif(not dovecot_available(), reason="dovecot not installed")
async def test_a_recalled_reply_or_forward_flags_the_original_on_dovecot(tmp_path, smtp_sink):  # noqa: F811
    """The draft of a reply remembers its original (X-tui-mail-Origin, never sent): sent after
    being recalled from Drafts it sets \\Answered on Dovecot; a recalled forward $Forwarded."""
    from peers import Dovecot
    from tui_mail.accounts import sent_copy_to, submit_via
    from tui_mail.send.outbox import Outbox
    from tui_mail.send.smtp import SmtpSettings, SmtpSubmitter
    from tui_mail.store.imap import ImapStore
    from tui_mail.ui.services import Account

    dc = Dovecot(tmp_path / "dovecot", idle_interval=1)
    dc.add_user("bob", "secret")
    dc.seed("bob", 6)
    dc.start()
    outbox = None
    try:
        store = ImapStore("bob", "127.0.0.1", dc.imap_port, "bob", "secret", security="none", poll_interval=1)
        submitter = SmtpSubmitter(SmtpSettings("127.0.0.1", smtp_sink.port, security="none"))
        outbox = Outbox(tmp_path / "outbox", send=submitter.send, sent_copy=sent_copy_to(store)).open()
        app = MailApp([Account("bob", store, "bob@example.org", submit=submit_via(outbox), outbox=outbox.store)],
                      UISettings(mark_read="never"), clock=lambda: NOW)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: mlist(app).current_summary is not None, timeout=10)
            # reply, save as a draft (Ctrl+D), leave: the original is not answered yet
            uid = await on_imap_message(pilot, app, "Message 3 about topic 3")
            burst(app, "r", *typed("Will answer properly."), "ctrl+d")
            await until(pilot, lambda: draft_saved(app), timeout=10)
            burst(app, "escape")
            await until(pilot, lambda: app.screen is app.main_screen)
            assert "\\Answered" not in _server_flags(dc.imap_port, "INBOX", uid)
            # recall it from Drafts and send: now the original is \Answered on the server
            await _recall_and_send(pilot, app, smtp_sink, 0, " Done.")
            await until(pilot, lambda: "\\Answered" in _server_flags(dc.imap_port, "INBOX", uid), timeout=10)
            sent = message_from_bytes(smtp_sink.messages[0][2], policy=policy.default)
            assert sent["In-Reply-To"] == "<msg3@example.com>" and sent["Subject"] == "Re: Message 3 about topic 3"
            assert not any(k.lower().startswith("x-tui-mail") for k in sent.keys())   # stays private
            # the same for a forward: $Forwarded once the recalled draft goes out
            app.main_screen.tree.select_folder("bob", "INBOX")
            await until(pilot, lambda: app.main_screen.folder == "INBOX" and mlist(app).current_uid, timeout=10)
            fuid = await on_imap_message(pilot, app, "Message 5 about topic 5")
            burst(app, "f", *typed("dave@x.org"), "ctrl+d")
            await until(pilot, lambda: draft_saved(app), timeout=10)
            burst(app, "escape")
            await until(pilot, lambda: app.screen is app.main_screen)
            assert "$Forwarded" not in _server_flags(dc.imap_port, "INBOX", fuid)
            await _recall_and_send(pilot, app, smtp_sink, 1, "")
            await until(pilot, lambda: "$Forwarded" in _server_flags(dc.imap_port, "INBOX", fuid), timeout=10)
            assert smtp_sink.messages[1][1] == ["dave@x.org"]
            assert "\\Answered" not in _server_flags(dc.imap_port, "INBOX", fuid)
    finally:
        if outbox is not None:
            outbox.close()
        dc.cleanup()
