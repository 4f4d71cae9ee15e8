"""tui_mail.accounts: a POP3 account's parts built from its config, end to end — Dovecot POP3
for reading, an aiosmtpd submission server, the Outbox and the local Sent copy."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from types import SimpleNamespace

import pytest

from tests.peers import dovecot  # noqa: F401  (fixture)
from tests.postfix_peer import SmtpSink, free_port
from tui_mail.accounts import (account_dir, data_dir, open_account, pop3_settings, smtp_settings,
                               submit_via)
from tui_mail.errors import MailError
from tui_mail.store.pop3 import Pop3Store


def account(pop3_port: int, smtp_port: int, **kw):
    return SimpleNamespace(
        name="home pop", address="bob@example.org", display_name="Bob B", signature="-- \nBob",
        imap=None,
        pop3=SimpleNamespace(host="127.0.0.1", port=pop3_port, security="none", user="bob"),
        smtp=SimpleNamespace(host="127.0.0.1", port=smtp_port, security="none", user=None), **kw)


def passwords(acct, kind: str) -> str | None:
    return {"pop3": "pop pass"}.get(kind)


def message() -> bytes:
    m = EmailMessage()
    m["From"] = "Bob B <bob@example.org>"
    m["To"] = "alice@crepes.fr"
    m["Subject"] = "from the account"
    m.set_content("hello\n")
    return m.as_bytes()


def test_paths_follow_env(tmp_path, monkeypatch):
    assert str(data_dir()).endswith("tui-mail") and "xdg" in str(data_dir())
    monkeypatch.setenv("TUI_MAIL_DATA", str(tmp_path / "d"))
    assert account_dir("home pop") == tmp_path / "d" / "accounts" / "home_pop"
    assert account_dir("../evil").parent == tmp_path / "d" / "accounts"


def test_settings_defaults():
    acct = account(0, 0)
    acct.pop3.port = None
    acct.pop3.security = "tls"
    p = pop3_settings(acct, "pw")
    assert (p.port, p.mode, p.user) == (995, "keep", "bob")
    acct.smtp.port = None
    acct.smtp.security = "starttls"
    assert smtp_settings(acct, None).port == 587
    with pytest.raises(MailError, match="no \\[smtp\\]"):
        smtp_settings(SimpleNamespace(name="x", smtp=None), None)


async def test_pop3_account_reads_and_sends(dovecot, tmp_path):  # noqa: F811
    dovecot.add_user("bob", "pop pass")
    dovecot.seed("bob", 2)
    async with SmtpSink() as sink:
        acct = account(dovecot.pop3_port, sink.port)
        ui = open_account(acct, passwords)
        try:
            assert isinstance(ui.store, Pop3Store) and ui.identity == "Bob B <bob@example.org>"
            ui.store.connect()
            assert (await asyncio.to_thread(ui.store.sync)).downloaded == 2
            result = await asyncio.to_thread(ui.submit, message(), "bob@example.org", ["alice@crepes.fr"])
            assert result.sent and "queued as" in result.detail
            assert sink.received[0].recipients == ["alice@crepes.fr"]
            sent = ui.store.folder_for_role("sent")
            assert sent == "Sent" and len(ui.store.folder_state("Sent").uids) == 1
            assert [f.role for f in ui.outbox.list_folders()] == ["outbox"]
        finally:
            ui.store.close()
            ui.outbox.close()


async def test_submit_waits_when_server_down(tmp_path):
    acct = account(free_port(), free_port())
    ui = open_account(acct, passwords)
    try:
        result = await asyncio.to_thread(ui.submit, message(), "bob@example.org",
                                         ["alice@crepes.fr", "hidden@example.net"])
        assert not result.sent and not result.permanent_failure and "Outbox" in result.detail
        (f,) = ui.outbox.list_folders()
        assert f.total == 1
        data = ui.outbox.fetch_message("Outbox", ui.outbox.folder_state("Outbox").uids[0])
        assert b"Bcc: hidden@example.net" in data   # the hidden recipient survives in the queue
        assert await asyncio.to_thread(ui.submit.flush) == []      # backoff: not due yet
        async with SmtpSink(port=acct.smtp.port) as sink:         # the server comes back
            (o,) = await asyncio.to_thread(ui.submit.flush, True)  # "send now"
        assert o.state == "filed" and sink.received[0].recipients == ["alice@crepes.fr", "hidden@example.net"]
        assert ui.outbox.folder_state("Outbox").uids == ()
    finally:
        ui.store.close()
        ui.outbox.close()


async def test_submit_permanent_failure():
    async with SmtpSink(rcpt_reply="550 5.7.1 relaying denied") as sink:
        acct = account(free_port(), sink.port)
        ui = open_account(acct, passwords)
        try:
            result = await asyncio.to_thread(ui.submit, message(), "bob@example.org", ["alice@crepes.fr"])
            assert not result.sent and result.permanent_failure and "relaying denied" in result.detail
        finally:
            ui.store.close()
            ui.outbox.close()


def test_submit_rejects_message_without_recipients(tmp_path):
    from tui_mail.send.outbox import Outbox

    async def never(data):  # pragma: no cover - must not be called
        raise AssertionError("sent")

    with Outbox(tmp_path / "ob", send=never) as ob:
        m = EmailMessage()
        m["From"] = "bob@example.org"
        m.set_content("x")
        result = submit_via(ob)(m.as_bytes(), "bob@example.org", [])
        assert result.permanent_failure and "recipients" in result.detail and ob.items() == []


async def test_journey_postfix_to_dovecot_pop3(dovecot, tmp_path):  # noqa: F811
    """Alice's account sends through a real Postfix, which delivers into the real Dovecot's
    Maildirs; Bob's POP3 account downloads it. Alice's Sent copy lands in her local Sent."""
    from tests.postfix_peer import Postfix, postfix_available

    if not postfix_available():
        pytest.skip("postfix not installed")
    dovecot.add_user("bob", "pop pass")
    dovecot.add_user("alice", "alice pass")
    pf = Postfix(mail_root=dovecot.mail_root)
    try:
        await asyncio.to_thread(pf.start)
        alice = account(dovecot.pop3_port, pf.port)
        alice.name, alice.address, alice.pop3.user = "alice", "alice@example.org", "alice"
        bob = account(dovecot.pop3_port, pf.port)
        m = EmailMessage()
        m["From"] = "Alice <alice@example.org>"
        m["To"] = "Bob <bob@example.org>"
        m["Subject"] = "Caf\u00e9 across the whole path"
        m.set_content("Postfix → Maildir → Dovecot → POP3\n")
        a_ui = open_account(alice, lambda acct, kind: "alice pass")
        b_ui = open_account(bob, passwords)
        try:
            result = await asyncio.to_thread(a_ui.submit, m.as_bytes(), "alice@example.org", ["bob@example.org"])
            assert result.sent, result.detail
            assert len(a_ui.store.folder_state("Sent").uids) == 1
            got = 0
            for _ in range(100):
                got = (await asyncio.to_thread(b_ui.store.sync)).downloaded
                if got:
                    break
                await asyncio.sleep(0.1)
            assert got == 1
            (uid,) = b_ui.store.folder_state("INBOX").uids
            assert b_ui.store.summaries("INBOX", [uid])[uid].subject == "Caf\u00e9 across the whole path"
        finally:
            for ui in (a_ui, b_ui):
                ui.store.close()
                ui.outbox.close()
    finally:
        await asyncio.to_thread(pf.cleanup)


async def test_imap_account_sent_copy_goes_to_the_servers_sent(dovecot):  # noqa: F811
    import imaplib

    dovecot.add_user("bob", "imap pass")
    async with SmtpSink() as sink:
        acct = SimpleNamespace(
            name="work", address="bob@example.org", display_name="", signature="", pop3=None,
            imap=SimpleNamespace(host="127.0.0.1", port=dovecot.imap_port, security="none", user="bob"),
            smtp=SimpleNamespace(host="127.0.0.1", port=sink.port, security="none", user=None))
        ui = open_account(acct, lambda a, kind: "imap pass")
        try:
            result = await asyncio.to_thread(ui.submit, message(), "bob@example.org", ["alice@crepes.fr"])
            assert result.sent, result.detail
        finally:
            await asyncio.to_thread(ui.store.close)
            ui.outbox.close()
    conn = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    try:
        conn.login("bob", "imap pass")
        conn.select("Sent", readonly=True)
        typ, data = conn.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"from the account" in data[0][1] and b"\\Seen" in data[0][0]
    finally:
        conn.logout()


async def test_missing_password_surfaces_on_use_not_at_startup(dovecot):  # noqa: F811
    from tui_mail.errors import SecretError

    def no_keyring(acct, kind):
        raise SecretError("No password store is available (set password_command)")

    async with SmtpSink(users={"bob": "pw"}) as sink:
        acct = account(dovecot.pop3_port, sink.port)
        acct.smtp.user = "bob"
        ui = open_account(acct, no_keyring)        # building the account asks for nothing
        try:
            result = await asyncio.to_thread(ui.submit, message(), "bob@example.org", ["alice@crepes.fr"])
            assert not result.sent and not result.permanent_failure
            assert "No password" in result.detail and "password_command" in result.detail
            with pytest.raises(SecretError):
                ui.store.sync()
        finally:
            ui.store.close()
            ui.outbox.close()
    assert sink.received == []
