"""The client against hostile or broken servers (issue 10, item 3): small servers written here
(tests/hostile_servers.py, 127.0.0.1 port 0) and the real ImapStore / Pop3Store / SMTP submitter.

A huge literal is refused before it is read (memory stays bounded, the error names the server);
a server that drips its greeting or an answer a byte at a time is given up on within the
deadline; STATUS without data and garbage answers become MailErrors, never tracebacks."""

from __future__ import annotations

import tracemalloc

import pytest

from hostile_servers import HostileServer, elapsed, imap_session
from tui_mail.errors import ConnectError, MailError
from tui_mail.store.guard import ResponseTooLarge, ServerTooSlow
from tui_mail.store.imap import ImapStore


def store(port: int, **kw) -> ImapStore:
    kw.setdefault("timeout", 10.0)
    return ImapStore("hostile", "127.0.0.1", port, "bob", "secret", security="none", **kw)


def list_answer(extra: bytes):
    """LIST answered with ``extra`` (untagged lines), STATUS with nothing but OK."""
    def answer(conn, tag, verb, line):
        if verb == b"LIST":
            conn.send(extra + tag + b" OK LIST done\r\n")
        elif verb in (b"STATUS", b"NOOP", b"ENABLE"):
            conn.send(tag + b" OK done\r\n")
        else:
            conn.send(tag + b" BAD unknown\r\n")
        return True
    return answer


def test_a_huge_literal_is_refused_before_it_is_read():
    def answer(conn, tag, verb, line):
        if verb == b"LIST":
            conn.send(b'* LIST (\\HasNoChildren) "/" {999999999}\r\n')
            conn.stream(b"x" * 65536, 200 * 1024 * 1024)     # keeps sending if anyone reads
            return False
        conn.send(tag + b" OK\r\n")
        return True

    with HostileServer(lambda c: imap_session(c, answer)) as srv:
        s = store(srv.port, max_literal=1024 * 1024)
        tracemalloc.start()
        try:
            took, error = elapsed(lambda: s.list_folders())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            s.close()
    assert isinstance(error, ResponseTooLarge) and isinstance(error, MailError)
    assert f"127.0.0.1:{srv.port}" in str(error) and "999,999,999" in str(error)
    assert "max_literal_mb" in str(error)
    assert peak < 8 * 1024 * 1024, peak          # nothing like the announced 1 GB was held
    assert took < 5


def test_a_huge_literal_in_the_greeting_is_refused():
    with HostileServer(lambda c: (c.send(b"* OK {999999999}\r\n"), c.stream(b"y" * 65536, 50 * 2 ** 20))) as srv:
        s = store(srv.port, max_literal=1024 * 1024)
        took, error = elapsed(s.connect)
        s.close()
    assert isinstance(error, ResponseTooLarge) and f"127.0.0.1:{srv.port}" in str(error)


def test_a_greeting_at_one_byte_per_second_fails_within_the_deadline():
    with HostileServer(lambda c: c.drip(b"* OK slow ready\r\n", every=1.0)) as srv:
        s = store(srv.port, login_deadline=2.0)
        took, error = elapsed(s.connect)
        s.close()
    assert isinstance(error, ServerTooSlow) and isinstance(error, ConnectError)
    assert isinstance(error, TimeoutError)
    assert f"127.0.0.1:{srv.port}" in str(error) and "2 s" in str(error)
    assert 1.5 < took < 6, took


def test_an_answer_dripped_slowly_fails_within_the_command_deadline():
    def answer(conn, tag, verb, line):
        if verb == b"LIST":
            conn.drip(b'* LIST () "/" INBOX\r\n' + tag + b" OK\r\n", every=0.5)
            return False
        conn.send(tag + b" OK\r\n")
        return True

    with HostileServer(lambda c: imap_session(c, answer)) as srv:
        s = store(srv.port, command_deadline=2.0)
        s.connect()
        took, error = elapsed(lambda: s.list_folders(with_counts=False))
        s.close()
    assert isinstance(error, ServerTooSlow) and "listing folders" in str(error)
    assert f"127.0.0.1:{srv.port}" in str(error)
    assert took < 6, took                       # no silent retry doubling the wait


def test_status_without_data_leaves_the_counts_unknown():
    listing = b'* LIST (\\HasNoChildren) "/" INBOX\r\n* LIST (\\HasNoChildren) "/" Work\r\n'
    with HostileServer(lambda c: imap_session(c, list_answer(listing))) as srv:
        s = store(srv.port)
        try:
            folders = s.list_folders()
        finally:
            s.close()
    assert [f.name for f in folders] == ["INBOX", "Work"]
    assert all(f.total is None and f.unread is None for f in folders)


@pytest.mark.parametrize("garbage", [
    b"* LIST garbage((((\r\n",
    b'* LIST (\\Noselect "/" \r\n',
    b"* 12 FETCH (UID x FLAGS (\\Seen)\r\n",
    b"\x00\xff\xfe garbage\r\n",
])
def test_garbage_answers_become_errors_naming_the_server(garbage):
    with HostileServer(lambda c: imap_session(c, list_answer(garbage))) as srv:
        s = store(srv.port)
        try:
            took, error = elapsed(lambda: s.list_folders())
        finally:
            s.close()
    assert error is None or isinstance(error, MailError), repr(error)
    if error is not None:
        assert f"127.0.0.1:{srv.port}" in str(error)


@pytest.mark.parametrize("greeting", [b"HTTP/1.1 400 Bad Request\r\n\r\n", b"\r\n", b"* BYE go away\r\n",
                                      b"* OK " + b"A" * 2_000_000 + b"\r\n"])
def test_a_server_that_is_not_imap_gives_a_mail_error(greeting):
    with HostileServer(lambda c: (c.send(greeting), c.line())) as srv:
        s = store(srv.port, login_deadline=5.0)
        took, error = elapsed(s.connect)
        s.close()
    assert isinstance(error, MailError), repr(error)
    assert f"127.0.0.1:{srv.port}" in str(error)


# --- POP3 -----------------------------------------------------------------------------------

def pop3_session(conn, answer) -> None:
    conn.send(b"+OK hostile POP3\r\n")
    while not conn.stop.is_set():
        line = conn.line()
        if not line:
            return
        verb = line.split(b" ", 1)[0].strip().upper()
        if verb in (b"USER", b"PASS", b"NOOP", b"DELE", b"RSET"):
            conn.send(b"+OK\r\n")
        elif verb == b"CAPA":
            conn.send(b"+OK\r\nUIDL\r\nUSER\r\n.\r\n")
        elif verb == b"QUIT":
            conn.send(b"+OK bye\r\n")
            return
        elif not answer(conn, verb, line):
            return


def pop3_store(tmp_path, port: int, **kw):
    from tui_mail.store.pop3 import Pop3Settings, Pop3Store

    kw.setdefault("security", "none")
    settings = Pop3Settings(host="127.0.0.1", port=port, user="bob", password="pw",
                            timeout=10.0, **kw)
    return Pop3Store(tmp_path / "bob", settings)


def test_pop3_greeting_at_one_byte_per_second_fails_within_the_deadline(tmp_path):
    with HostileServer(lambda c: c.drip(b"+OK slow\r\n", every=1.0)) as srv:
        s = pop3_store(tmp_path, srv.port, login_deadline=2.0)
        took, error = elapsed(s.sync)
        s.close()
    assert isinstance(error, ServerTooSlow) and f"127.0.0.1:{srv.port}" in str(error)
    assert took < 6, took


def test_pop3_endless_message_is_refused_with_memory_bounded(tmp_path):
    def answer(conn, verb, line):
        if verb == b"UIDL":
            conn.send(b"+OK\r\n1 abc\r\n.\r\n")
        elif verb == b"RETR":
            conn.send(b"+OK here it comes\r\n")
            conn.stream(b"y" * 998 + b"\r\n", 100 * 1024 * 1024)
            return False
        else:
            conn.send(b"-ERR no\r\n")
        return True

    with HostileServer(lambda c: pop3_session(c, answer)) as srv:
        s = pop3_store(tmp_path, srv.port, max_message_bytes=1024 * 1024)
        tracemalloc.start()
        try:
            took, error = elapsed(s.sync)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            s.close()
    assert isinstance(error, ResponseTooLarge) and f"127.0.0.1:{srv.port}" in str(error)
    assert peak < 16 * 1024 * 1024, peak


def test_pop3_answer_dripped_slowly_fails_within_the_command_deadline(tmp_path):
    def answer(conn, verb, line):
        if verb == b"UIDL":
            conn.drip(b"+OK\r\n1 abc\r\n.\r\n", every=0.5)
            return False
        conn.send(b"-ERR no\r\n")
        return True

    with HostileServer(lambda c: pop3_session(c, answer)) as srv:
        s = pop3_store(tmp_path, srv.port, command_deadline=2.0)
        took, error = elapsed(s.sync)
        s.close()
    assert isinstance(error, ServerTooSlow) and "UIDL" in str(error), repr(error)
    assert took < 6, took


@pytest.mark.parametrize("listing", [b"+OK\r\nnot numbers at all\r\n.\r\n", b"+OK\r\n1\r\n.\r\n",
                                     b"garbage\r\n"])
def test_pop3_garbage_becomes_a_mail_error(tmp_path, listing):
    def answer(conn, verb, line):
        if verb == b"UIDL":
            conn.send(listing)
        elif verb in (b"LIST", b"RETR", b"TOP"):
            conn.send(b"+OK\r\nx y z\r\n.\r\n")
        else:
            conn.send(b"-ERR no\r\n")
        return True

    with HostileServer(lambda c: pop3_session(c, answer)) as srv:
        s = pop3_store(tmp_path, srv.port)
        took, error = elapsed(s.sync)
        s.close()
    assert error is None or isinstance(error, MailError), repr(error)


# --- SMTP -----------------------------------------------------------------------------------

async def test_smtp_greeting_dripped_fails_within_the_login_deadline():
    import asyncio

    from tui_mail.errors import SendError
    from tui_mail.send.smtp import SmtpSettings, SmtpSubmitter

    with HostileServer(lambda c: c.drip(b"220 slow.example ESMTP\r\n", every=1.0)) as srv:
        submitter = SmtpSubmitter(SmtpSettings("127.0.0.1", srv.port, security="none", timeout=30.0,
                                               login_deadline=2.0))
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(SendError) as info:
            await submitter.send(b"From: a@example.org\r\nTo: b@example.org\r\nSubject: x\r\n\r\nhi\r\n",
                                 "a@example.org", ["b@example.org"])
        took = loop.time() - start
    assert "within 2 s" in str(info.value) and f"127.0.0.1:{srv.port}" in str(info.value)
    assert not info.value.permanent and took < 6


# --- the limits come from config.toml ------------------------------------------------------

def test_limits_are_config_keys_checked_and_reach_the_stores(tmp_path):
    from tui_mail.accounts import imap_store, pop3_settings, smtp_settings
    from tui_mail.config import parse_config
    from tui_mail.errors import ConfigError

    text = """
[[accounts]]
name = "work"
address = "bob@example.org"
[accounts.imap]
host = "imap.example.org"
login_deadline = 20
command_deadline = 90
max_literal_mb = 8
[accounts.smtp]
host = "smtp.example.org"
login_deadline = 15
"""
    account = parse_config(text).accounts[0]
    pop = parse_config(text.replace("[accounts.imap]", "[accounts.pop3]")).accounts[0]
    store = imap_store(account, "pw")
    try:
        assert (store.login_deadline, store.command_deadline, store.max_literal) == (20, 90, 8 * 2 ** 20)
    finally:
        store.close()
    assert pop3_settings(pop, "pw").max_message_bytes == 8 * 2 ** 20
    assert pop3_settings(pop, "pw").login_deadline == 20
    assert smtp_settings(account, "pw").login_deadline == 15
    with pytest.raises(ConfigError, match="imap.max_literal_mb"):
        parse_config(text.replace("max_literal_mb = 8", "max_literal_mb = 100000"))
    with pytest.raises(ConfigError, match="smtp.login_deadline"):
        parse_config(text.replace("login_deadline = 15", 'login_deadline = "soon"'))


def test_a_tls_handshake_dripped_slowly_fails_within_the_deadline(tmp_path):
    """Port 993/995 servers that never finish the TLS handshake (bytes trickle, never TLS)."""
    import ssl

    drip = lambda c: c.drip(b"\x16\x03\x01" + b"\x00" * 200, every=0.5)   # noqa: E731
    with HostileServer(drip) as srv:
        s = ImapStore("hostile", "127.0.0.1", srv.port, "bob", "pw", security="tls",
                      ssl_context=ssl.create_default_context(), timeout=30.0, login_deadline=2.0)
        took, error = elapsed(s.connect)
        s.close()
        assert isinstance(error, ServerTooSlow) and took < 6, (repr(error), took)
        p = pop3_store(tmp_path, srv.port, login_deadline=2.0, security="tls")
        took, error = elapsed(p.sync)
        p.close()
        assert isinstance(error, ServerTooSlow) and took < 6, (repr(error), took)


async def test_smtp_endless_reply_is_refused_with_memory_bounded():
    """aiosmtplib caps one reply at 32 KB; the submitter turns that into a SendError."""
    from tui_mail.errors import SendError
    from tui_mail.send.smtp import SmtpSettings, SmtpSubmitter

    def endless(conn):
        conn.send(b"220 hostile ESMTP\r\n")
        conn.line()                                   # EHLO
        conn.stream(b"250-" + b"x" * 60 + b"\r\n", 200 * 1024 * 1024)

    with HostileServer(endless) as srv:
        submitter = SmtpSubmitter(SmtpSettings("127.0.0.1", srv.port, security="none", timeout=10.0))
        tracemalloc.start()
        try:
            with pytest.raises(SendError) as info:
                await submitter.send(b"From: a@example.org\r\nTo: b@example.org\r\nSubject: x\r\n\r\nhi\r\n",
                                     "a@example.org", ["b@example.org"])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert "127.0.0.1" in str(info.value) and peak < 8 * 1024 * 1024, (str(info.value), peak)
