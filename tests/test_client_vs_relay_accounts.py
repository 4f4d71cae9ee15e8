"""Integration: configured accounts (config.toml, password_command, STARTTLS with the relay's
self-signed certificate as cafile) against our relay — `tui-mail account test`, `tui-mail send`
and the UI's Account (open_account) for an IMAP and a POP3 account.

The commands are synchronous (asyncio.run inside), so they run in the test thread while the
relay serves from its own thread (tests/test_client_vs_relay.py: Relay)."""

from __future__ import annotations

import email
import email.policy
import io as _io
import os
from pathlib import Path

import pytest
from rich.console import Console

from tests.test_client_vs_relay import BOB, PW, Relay, imap_store, inbox_total, wait_for
from tui_mail import config
from tui_mail.commands import Io, main


@pytest.fixture
def relay(tmp_path):
    r = Relay(tmp_path / "relay")
    r.start()
    yield r
    r.stop()


def run(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    out, err = _io.StringIO(), _io.StringIO()
    code = main(argv, Io(out=Console(file=out, width=300), err=Console(file=err, width=300),
                         stdin=_io.StringIO(stdin), interactive=False))
    return code, out.getvalue(), err.getvalue()


def password_command(tmp_path: Path) -> str:
    f = tmp_path / "bob.pw"
    f.write_text(PW, encoding="utf-8")
    os.chmod(f, 0o600)
    return f"cat '{f}'"


def save_accounts(relay: Relay, tmp_path: Path) -> None:
    from relay.tls import self_signed_paths

    cafile = str(self_signed_paths(relay.cfg)[0])
    assert Path(cafile).exists()
    cmd = password_command(tmp_path)

    def server(kind: str, cls=config.Server, **kw):
        return cls("127.0.0.1", relay.ports[kind], security="starttls", user=BOB,
                   password_command=cmd, cafile=cafile, **kw)

    config.save_account(config.Account(name="imap", address=BOB, display_name="Bob",
                                       imap=server("imap"), smtp=server("submission")))
    config.save_account(config.Account(name="pop", address=BOB, display_name="Bob",
                                       pop3=server("pop3", config.Pop3Server, mode="keep"),
                                       smtp=server("submission")))


def test_account_test_over_starttls_with_the_relays_certificate(relay, tmp_path):
    save_accounts(relay, tmp_path)
    code, out, err = run(["account", "test", "imap"])
    assert code == 0, out + err
    assert "✓ IMAP" in out and "IDLE" in out and "MOVE" in out and "✓ SMTP" in out
    code, out, err = run(["account", "test", "pop"])
    assert code == 0, out + err
    assert "✓ POP3" in out and "UIDL" in out and "✓ SMTP" in out
    assert PW not in out + err


def test_account_test_names_a_wrong_password_in_plain_words(relay, tmp_path):
    from relay.tls import self_signed_paths

    bad = tmp_path / "bad.pw"
    bad.write_text("not it")
    os.chmod(bad, 0o600)
    config.save_account(config.Account(
        name="bad", address=BOB,
        imap=config.Server("127.0.0.1", relay.ports["imap"], security="starttls", user=BOB,
                           password_command=f"cat '{bad}'", cafile=str(self_signed_paths(relay.cfg)[0]))))
    code, out, err = run(["account", "test", "bad"])
    assert code == 1, out + err
    assert "✗ IMAP" in out and "Traceback" not in out + err and "not it" not in out + err


def test_send_command_submits_over_starttls_and_files_sent_in_the_relay(relay, tmp_path):
    save_accounts(relay, tmp_path)
    attachment = tmp_path / "notes.txt"
    attachment.write_text("attached text\n")
    code, out, err = run(["send", "--account", "imap", "--to", BOB, "--subject", "Café notes",
                          "--attach", str(attachment)], stdin="Hello me,\nsee attached.\n")
    assert code == 0, out + err
    s = imap_store(relay)
    try:
        assert wait_for(lambda: inbox_total(s) == 1)
        (uid,) = s.folder_state("INBOX").uids
        summ = s.summaries("INBOX", [uid])[uid]
        assert summ.subject == "Café notes" and summ.from_addr == BOB and summ.has_attachment
        (sent_uid,) = s.folder_state("Sent").uids
        sent = s.summaries("Sent", [sent_uid])[sent_uid]
        assert sent.subject == "Café notes" and not sent.unread
        msg = email.message_from_bytes(s.fetch_message("INBOX", uid, full=True), policy=email.policy.default)
        (att,) = list(msg.iter_attachments())
        assert att.get_filename() == "notes.txt" and att.get_content() == "attached text\n"
        assert "see attached" in msg.get_body(("plain",)).get_content()
    finally:
        s.close()
        s.cache.close()


def test_open_account_pop3_submit_then_sync_downloads_it(relay, tmp_path):
    from tui_mail.accounts import open_account
    from tui_mail.secrets import password_for

    save_accounts(relay, tmp_path)
    acct = open_account(config.load_config().account("pop"), password_for)
    store = acct.store
    try:
        from tui_mail.mail.compose import Draft, build_message

        composed = build_message(Draft(from_=acct.identity, to=BOB, subject="via the UI path",
                                       body="round trip\n", identity="pop"))
        result = acct.submit(composed.data, composed.sender, list(composed.recipients))
        assert result.sent, result
        watcher = imap_store(relay)
        try:
            assert wait_for(lambda: inbox_total(watcher) == 1)
        finally:
            watcher.close()
            watcher.cache.close()
        r = store.sync()
        assert (r.on_server, r.downloaded) == (1, 1)
        (uid,) = store.folder_state("INBOX").uids
        assert store.summaries("INBOX", [uid])[uid].subject == "via the UI path"
        # a POP3 account files its Sent copy locally
        (sent_uid,) = store.folder_state("Sent").uids
        assert store.summaries("Sent", [sent_uid])[sent_uid].subject == "via the UI path"
    finally:
        store.close()
        acct.submit.outbox.close()
