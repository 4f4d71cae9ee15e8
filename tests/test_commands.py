"""`tui-mail account add|list|test` and `tui-mail send` run in-process against real servers:
Dovecot (IMAP/POP3), an aiosmtpd submission server with AUTH, and the account's Outbox.

The commands are synchronous (they call asyncio.run), so async tests run them in a thread
while the SMTP server keeps serving in the test's loop. The OS keyring is replaced by an
in-memory backend (the conftest default is the "null" backend, i.e. a headless box)."""

from __future__ import annotations

import asyncio
import io as _io
import tomllib
from pathlib import Path

import keyring
import keyring.backend
import pytest
from rich.console import Console

from tests.peers import dovecot, dovecot_tls  # noqa: F401  (fixtures)
from tests.postfix_peer import SmtpSink, free_port
from tui_mail import cli, config
from tui_mail.commands import Io, main


class MemoryKeyring(keyring.backend.KeyringBackend):
    priority = 1

    def __init__(self):
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.items.get((service, username))

    def set_password(self, service, username, password):
        self.items[(service, username)] = password

    def delete_password(self, service, username):
        self.items.pop((service, username), None)


@pytest.fixture
def memory_keyring():
    before = keyring.get_keyring()
    kr = MemoryKeyring()
    keyring.set_keyring(kr)
    yield kr
    keyring.set_keyring(before)


class Run:
    """Calls ``main(argv)`` with captured output."""

    def __init__(self, argv: list[str], stdin: str = "", interactive: bool = False):
        self.out_buf, self.err_buf = _io.StringIO(), _io.StringIO()
        io = Io(out=Console(file=self.out_buf, width=200), err=Console(file=self.err_buf, width=200),
                stdin=_io.StringIO(stdin), interactive=interactive)
        self.code = main(argv, io)
        self.out, self.err = self.out_buf.getvalue(), self.err_buf.getvalue()


async def run(argv, stdin: str = "", interactive: bool = False) -> Run:
    return await asyncio.to_thread(Run, argv, stdin, interactive)


def cfg_path() -> Path:
    return config.config_path()


def add_pop3_account(pop3_port: int, smtp_port: int, name: str = "home", smtp_user: str | None = None):
    acct = config.Account(
        name=name, address="bob@example.org", display_name="Bob",
        pop3=config.Pop3Server("127.0.0.1", pop3_port, security="none", user="bob"),
        smtp=config.Server("127.0.0.1", smtp_port, security="none", user=smtp_user))
    config.save_account(acct)
    return acct


# --- account add / list / test ---------------------------------------------------------------
async def test_account_add_tests_then_saves_and_list_and_test(dovecot, memory_keyring):  # noqa: F811
    dovecot.add_user("bob", "s3cret")
    async with SmtpSink(users={"bob": "s3cret"}) as sink:
        r = await run(["account", "add", "--name", "work", "--address", "bob@example.org",
                       "--display-name", "Bob B", "--imap", f"127.0.0.1:{dovecot.imap_port}",
                       "--security", "none", "--user", "bob", "--smtp", f"127.0.0.1:{sink.port}",
                       "--smtp-security", "none", "--password-stdin"], stdin="s3cret\n")
        assert r.code == 0, r.out + r.err
        assert "✓ IMAP" in r.out and "✓ SMTP" in r.out and "Saved account work" in r.out
        assert "s3cret" not in r.out + r.err
        doc = tomllib.loads(cfg_path().read_text())
        (acct,) = doc["accounts"]
        assert acct["imap"] == {"host": "127.0.0.1", "port": dovecot.imap_port, "security": "none", "user": "bob"}
        assert "s3cret" not in cfg_path().read_text()
        assert memory_keyring.items == {("tui-mail", "work"): "s3cret"}

        r = await run(["account", "list"])
        assert r.code == 0 and "work" in r.out and f"IMAP 127.0.0.1:{dovecot.imap_port} none as bob" in r.out

        r = await run(["account", "test", "work"])
        assert r.code == 0, r.out + r.err
        assert "✓ IMAP: logged in; offers" in r.out and "IDLE" in r.out and "AUTH" in r.out


async def test_account_add_refuses_bad_password_and_saves_nothing(dovecot, memory_keyring):  # noqa: F811
    dovecot.add_user("bob", "s3cret")
    r = await run(["account", "add", "--name", "x", "--address", "bob@example.org",
                   "--pop3", f"127.0.0.1:{dovecot.pop3_port}", "--security", "none", "--user", "bob",
                   "--smtp", f"127.0.0.1:{free_port()}", "--smtp-security", "none", "--password-stdin"],
                  stdin="wrong\n")
    assert r.code == 1
    assert "✗ POP3" in r.out and "refused the user name or password" in r.out
    assert "✗ SMTP" in r.out and "Cannot reach" in r.out and "not saved" in r.err
    assert not cfg_path().exists() and memory_keyring.items == {}


def test_account_add_headless_keyring_names_the_alternatives():
    r = Run(["account", "add", "--name", "x", "--address", "bob@example.org", "--imap", "127.0.0.1",
             "--smtp", "127.0.0.1", "--password-stdin", "--no-test"], stdin="pw\n")
    assert r.code == 2 and "password_command" in r.err and "keyring" in r.err
    assert "Traceback" not in r.err and not cfg_path().exists()


def test_account_add_with_password_command_needs_no_keyring(tmp_path):
    r = Run(["account", "add", "--name", "cmd", "--address", "bob@example.org", "--pop3", "pop.example.org",
             "--pop3-mode", "leave", "--leave-days", "3", "--smtp", "smtp.example.org:2525",
             "--password-command", "echo from-command", "--no-test"])
    assert r.code == 0, r.err
    (acct,) = config.load_config().accounts
    assert acct.pop3.mode == "leave" and acct.pop3.leave_days == 3 and acct.smtp.port == 2525
    assert acct.pop3.password_command == "echo from-command"
    assert "from-command" not in r.out


def test_account_add_prompts_when_interactive(memory_keyring):
    answers = "\n".join(["prompted", "carol@example.org", "Carol", "pop3", "pop.example.org:1110",
                         "none", "smtp.example.org", "starttls", "pw"]) + "\n"
    r = Run(["account", "add", "--no-test"], stdin=answers, interactive=True)
    assert r.code == 0, r.out + r.err
    (acct,) = config.load_config().accounts
    assert (acct.name, acct.display_name, acct.pop3.port, acct.pop3.security) == ("prompted", "Carol", 1110, "none")
    assert memory_keyring.items[("tui-mail", "prompted")] == "pw"


def test_account_add_missing_flags_is_usage_error():
    r = Run(["account", "add", "--name", "x"])
    assert r.code == 2 and "--address is required" in r.err


def test_account_test_unknown_and_list_empty():
    r = Run(["account", "list"])
    assert r.code == 0 and "No accounts yet" in r.out
    r = Run(["account", "test", "nope"])
    assert r.code == 2 and "no account named 'nope'" in r.err and "Traceback" not in r.err


def test_bad_config_is_one_line_exit_2():
    cfg_path().parent.mkdir(parents=True, exist_ok=True)
    cfg_path().write_text("[[accounts]]\nname = 'a'\naddress = 'nope'\n")
    r = Run(["account", "list"])
    assert r.code == 2 and "config.toml" in r.err and "address" in r.err
    assert len(r.err.strip().splitlines()) <= 2


# --- send ------------------------------------------------------------------------------------
async def test_send_with_attachment_files_sent_copy(tmp_path, memory_keyring):
    memory_keyring.set_password("tui-mail", "home", "smtp-pw")
    attachment = tmp_path / "notes.txt"
    attachment.write_text("attached text\n")
    async with SmtpSink(users={"bob": "smtp-pw"}) as sink:
        add_pop3_account(free_port(), sink.port, smtp_user="bob")
        r = await run(["send", "--account", "home", "--to", "alice@crepes.fr", "--cc", "carol@example.org",
                       "--bcc", "hidden@example.net", "--subject", "Caf\u00e9 notes",
                       "--attach", str(attachment)], stdin="Hello Alice,\nsee attached.\n")
    assert r.code == 0, r.out + r.err
    assert "Sent to 3 recipients" in r.out and "queued as SINK1" in r.out
    (got,) = sink.received
    assert got.recipients == ["alice@crepes.fr", "carol@example.org", "hidden@example.net"]
    msg = got.message
    assert msg["Subject"] == "Caf\u00e9 notes" and msg["From"] == "Bob <bob@example.org>" and msg["Bcc"] is None
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "notes.txt" and att.get_content() == "attached text\n"
    assert "see attached" in msg.get_body(("plain",)).get_content()
    from tui_mail.accounts import account_dir
    from tui_mail.store.local import LocalStore

    with LocalStore(account_dir("home") / "mail") as local:
        (uid,) = local.folder_state("Sent").uids
        assert local.summaries("Sent", [uid])[uid].subject == "Caf\u00e9 notes"


async def test_send_server_down_then_next_send_flushes(tmp_path):
    port = free_port()
    add_pop3_account(free_port(), port)
    r = await run(["send", "--account", "home", "--to", "alice@crepes.fr", "--subject", "first"], stdin="1\n")
    assert r.code == 1 and "not sent yet" in r.err and "Cannot reach" in r.err
    async with SmtpSink(port=port) as sink:
        # the first one is not due yet (backoff); --queue-only leaves the second queued too
        r = await run(["send", "--account", "home", "--to", "alice@crepes.fr", "--subject", "second",
                       "--queue-only"], stdin="2\n")
        assert r.code == 0 and "Queued in the Outbox" in r.out and sink.received == []
        r = await run(["send", "--account", "home", "--to", "alice@crepes.fr", "--subject", "third"], stdin="3\n")
        assert r.code == 0, r.err
    assert [m.message["Subject"] for m in sink.received] == ["second", "third"]


async def test_send_5xx_exit_1_with_reply():
    async with SmtpSink(rcpt_reply="550 5.1.1 <alice@crepes.fr>: no such user") as sink:
        add_pop3_account(free_port(), sink.port)
        r = await run(["send", "--account", "home", "--to", "alice@crepes.fr"], stdin="x\n")
    assert r.code == 1 and "no such user" in r.err and "marked failed" in r.err


def test_send_usage_errors():
    r = Run(["send", "--account", "home"])
    assert r.code == 2 and "at least one --to" in r.err
    r = Run(["send", "--to", "a@b.c"])
    assert r.code == 2 and "--account" in r.err
    add_pop3_account(free_port(), free_port())
    r = Run(["send", "--account", "home", "--to", "not an address"], stdin="x")
    assert r.code == 2 and "to" in r.err and "Traceback" not in r.err
    r = Run(["send", "--account", "home", "--to", "a@b.c", "--attach", "/no/such/file"], stdin="x")
    assert r.code == 2 and "Attachment not found" in r.err


def test_cli_dispatches_to_commands(capsys):
    assert cli.main(["account", "list"]) == 0
    assert "No accounts yet" in capsys.readouterr().out


def test_real_process_exit_codes_and_no_traceback():
    """`python -m tui_mail.cli …` as a script would run it (env-isolated XDG dirs)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    bad = subprocess.run([sys.executable, "-m", "tui_mail.cli", "send", "--account", "ghost",
                          "--to", "a@b.c"], input="body", capture_output=True, text=True, env=env,
                         timeout=60)
    assert bad.returncode == 2 and "no account named 'ghost'" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) <= 2
    usage = subprocess.run([sys.executable, "-m", "tui_mail.cli", "account", "frobnicate"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr and "Traceback" not in usage.stderr


async def test_account_test_pop3_stls_with_cafile_and_failures_in_plain_words(dovecot_tls, memory_keyring):  # noqa: F811
    dc = dovecot_tls
    dc.add_user("bob", "pw")
    memory_keyring.set_password("tui-mail", "tls", "pw")
    async with SmtpSink() as sink:
        config.save_account(config.Account(
            name="tls", address="bob@example.org",
            pop3=config.Pop3Server("127.0.0.1", dc.pop3_port, security="starttls", user="bob",
                                   cafile=str(dc.cert_file)),
            smtp=config.Server("127.0.0.1", sink.port, security="none")))
        r = await run(["account", "test", "tls"])
        assert r.code == 0, r.out + r.err
        assert "✓ POP3: logged in; offers" in r.out and "UIDL" in r.out and "✓ SMTP" in r.out
        # the same server without the CA: a plain-words TLS failure, exit 1
        config.save_account(config.Account(
            name="tls", address="bob@example.org",
            pop3=config.Pop3Server("127.0.0.1", dc.pop3s_port, security="tls", user="bob"),
            smtp=config.Server("127.0.0.1", sink.port, security="starttls")))
        r = await run(["account", "test", "tls"])
    assert r.code == 1
    assert "✗ POP3: TLS with 127.0.0.1" in r.out and "certificate" in r.out.lower()
    assert "✗ SMTP" in r.out and "STARTTLS" in r.out


async def test_send_from_imap_account_files_copy_on_the_server(dovecot, memory_keyring):  # noqa: F811
    import imaplib

    dovecot.add_user("bob", "imap-pw")
    memory_keyring.set_password("tui-mail", "work", "imap-pw")
    async with SmtpSink() as sink:
        config.save_account(config.Account(
            name="work", address="bob@example.org",
            imap=config.Server("127.0.0.1", dovecot.imap_port, security="none", user="bob"),
            smtp=config.Server("127.0.0.1", sink.port, security="none")))
        r = await run(["send", "--account", "work", "--to", "alice@crepes.fr", "--subject", "via IMAP acct"],
                      stdin="hello\n")
    assert r.code == 0, r.err
    conn = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    try:
        conn.login("bob", "imap-pw")
        typ, data = conn.status("Sent", "(MESSAGES)")
        assert typ == "OK" and b"MESSAGES 1" in data[0]
    finally:
        conn.logout()
