"""The pure POP3 state machine (relay.pop3.protocol): lines in, replies/requests out."""

from __future__ import annotations

from base64 import b64encode

import pytest

from relay.pop3 import protocol as p
from relay.pop3.protocol import (Authenticate, Fetch, Maildrop, Message, Pop3Machine, Reply,
                                 StartTLS, Update)


def machine(**kw) -> Pop3Machine:
    args = dict(hostname="mx.test", tls_active=False, tls_available=True, plaintext_allowed=True)
    args.update(kw)
    return Pop3Machine(**args)


def logged_in(sizes=(100, 200, 300)) -> Pop3Machine:
    m = machine()
    assert m.receive_line(b"USER bob@x.org\r\n") == Reply(b"+OK send PASS\r\n")
    req = m.receive_line(b"PASS secret with spaces\r\n")
    assert req == Authenticate("bob@x.org", "secret with spaces", "USER")
    drop = Maildrop([Message(i + 10, s, p.uidl_for(77, i + 10)) for i, s in enumerate(sizes)])
    assert m.auth_result("bob@x.org", drop).data == b"+OK bob@x.org has 3 messages (600 octets)\r\n"
    return m


def test_greeting_and_capabilities_depend_on_state_and_tls():
    m = machine()
    assert m.greeting() == b"+OK mx.test POP3 ready\r\n"
    caps = m.receive_line(b"CAPA").data.decode()
    assert caps.startswith("+OK") and caps.endswith("\r\n.\r\n")
    lines = caps.split("\r\n")[1:-2]
    assert {"TOP", "UIDL", "USER", "STLS", "RESP-CODES", "SASL PLAIN"} <= set(lines)
    m2 = machine(plaintext_allowed=False)
    lines = m2.receive_line(b"CAPA").data.decode().split("\r\n")
    assert "USER" not in lines and "STLS" in lines
    m2.tls_started()
    lines = m2.receive_line(b"CAPA").data.decode().split("\r\n")
    assert "USER" in lines and "STLS" not in lines
    m3 = logged_in()
    lines = m3.receive_line(b"capa").data.decode().split("\r\n")
    assert "USER" not in lines and "STLS" not in lines and "UIDL" in lines


def test_plaintext_refused_without_tls_and_stls_flow():
    m = machine(plaintext_allowed=False)
    assert m.receive_line(b"USER bob").data.startswith(b"-ERR [AUTH] plaintext")
    assert m.receive_line(b"AUTH PLAIN AGJvYgB4").data.startswith(b"-ERR [AUTH]")
    out = m.receive_line(b"STLS")
    assert out == StartTLS(b"+OK begin TLS negotiation\r\n")
    m.tls_started()
    assert m.receive_line(b"STLS").data.startswith(b"-ERR")
    assert m.receive_line(b"USER bob").data == b"+OK send PASS\r\n"
    assert machine(tls_available=False).receive_line(b"STLS").data.startswith(b"-ERR")


def test_pass_needs_user_and_failure_returns_to_authorization():
    m = machine()
    assert m.receive_line(b"PASS x").data == b"-ERR send USER first\r\n"
    m.receive_line(b"USER bob")
    assert isinstance(m.receive_line(b"PASS wrong"), Authenticate)
    assert m.auth_result("bob", None, "[AUTH] authentication failed").data == \
        b"-ERR [AUTH] authentication failed\r\n"
    assert m.state == p.AUTHORIZATION
    assert m.receive_line(b"STAT").data.startswith(b"-ERR")
    assert m.receive_line(b"PASS again").data == b"-ERR send USER first\r\n"


def test_auth_plain_inline_and_continued():
    blob = b64encode(b"\x00bob@x.org\x00pw d").decode()
    assert machine().receive_line(f"AUTH PLAIN {blob}".encode()) == Authenticate("bob@x.org", "pw d", "PLAIN")
    m = machine()
    assert m.receive_line(b"AUTH PLAIN") == Reply(b"+ \r\n")
    assert m.receive_line(blob.encode()) == Authenticate("bob@x.org", "pw d", "PLAIN")
    m = machine()
    m.receive_line(b"AUTH PLAIN")
    assert m.receive_line(b"*").data.startswith(b"-ERR")
    assert machine().receive_line(b"AUTH PLAIN !!!").data.startswith(b"-ERR malformed")
    other = b64encode(b"alice\x00bob\x00pw").decode()
    assert machine().receive_line(f"AUTH PLAIN {other}".encode()).data.startswith(b"-ERR")
    assert machine().receive_line(b"AUTH CRAM-MD5").data.startswith(b"-ERR unsupported")
    assert machine().receive_line(b"AUTH").data == b"+OK SASL mechanisms follow\r\nPLAIN\r\n.\r\n"


def test_stat_list_uidl():
    m = logged_in()
    assert m.receive_line(b"STAT").data == b"+OK 3 600\r\n"
    assert m.receive_line(b"LIST").data == b"+OK 3 messages (600 octets)\r\n1 100\r\n2 200\r\n3 300\r\n.\r\n"
    assert m.receive_line(b"LIST 2").data == b"+OK 2 200\r\n"
    assert m.receive_line(b"LIST 4").data.startswith(b"-ERR no such message")
    assert m.receive_line(b"LIST x").data.startswith(b"-ERR")
    assert m.receive_line(b"UIDL 1").data == b"+OK 1 0000000A0000004D\r\n"
    assert m.receive_line(b"UIDL").data.split(b"\r\n")[1:4] == [
        b"1 0000000A0000004D", b"2 0000000B0000004D", b"3 0000000C0000004D"]


def test_dele_rset_and_quit_update():
    m = logged_in()
    assert m.receive_line(b"DELE 2").data == b"+OK message 2 deleted\r\n"
    assert m.receive_line(b"DELE 2").data == b"-ERR message 2 already deleted\r\n"
    assert m.receive_line(b"RETR 2").data.startswith(b"-ERR")
    assert m.receive_line(b"STAT").data == b"+OK 2 400\r\n"
    assert b"2 200" not in m.receive_line(b"LIST").data
    assert m.receive_line(b"RSET").data == b"+OK maildrop has 3 messages (600 octets)\r\n"
    m.receive_line(b"DELE 1")
    m.receive_line(b"DELE 3")
    assert m.receive_line(b"QUIT") == Update([10, 12])
    assert m.state == p.UPDATE
    r = m.update_result(2)
    assert r.close and r.data == b"+OK mx.test POP3 signing off (1 messages left)\r\n"
    assert m.receive_line(b"NOOP").close


def test_quit_in_authorization_closes_without_update():
    r = machine().receive_line(b"QUIT")
    assert isinstance(r, Reply) and r.close and r.data.startswith(b"+OK")


def test_retr_and_top_requests_and_replies():
    m = logged_in()
    req = m.receive_line(b"RETR 1")
    assert req == Fetch(1, 10, None)
    data = b"Subject: x\r\n\r\n.dot\r\nline2\r\n"
    assert m.fetched(req, data).data == b"+OK 27 octets\r\nSubject: x\r\n\r\n..dot\r\nline2\r\n.\r\n"
    req = m.receive_line(b"TOP 1 1")
    assert req == Fetch(1, 10, 1)
    assert m.fetched(req, data).data == b"+OK top of message follows\r\nSubject: x\r\n\r\n..dot\r\n.\r\n"
    assert m.fetched(req, None).data.startswith(b"-ERR [SYS/TEMP]")
    assert m.receive_line(b"TOP 1").data.startswith(b"-ERR usage")
    assert m.receive_line(b"TOP 9 1").data.startswith(b"-ERR no such")


@pytest.mark.parametrize("body,wire", [
    (b"a\r\nb\r\n", b"a\r\nb\r\n"),
    (b"a\nb", b"a\r\nb\r\n"),                     # bare LF → CRLF, final line terminated
    (b".\r\n..x\r\n", b"..\r\n...x\r\n"),         # byte-stuffing at every line start
    (b"", b""),
    (b"x\r\n.\r\ny", b"x\r\n..\r\ny\r\n"),
])
def test_multiline_stuffing_and_line_ends(body, wire):
    assert p.multiline(b"+OK\r\n", body) == b"+OK\r\n" + wire + b".\r\n"


@pytest.mark.parametrize("lines,expect", [
    (0, b"A: 1\r\nB: 2\r\n\r\n"),
    (2, b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n"),
    (10, b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3"),
])
def test_top_cuts_after_header_and_n_lines(lines, expect):
    assert p.top(b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3", lines) == expect


def test_top_edge_cases():
    assert p.top(b"\r\nbody\r\nmore\r\n", 1) == b"\r\nbody\r\n"
    assert p.top(b"Only: header\r\n", 3) == b"Only: header\r\n"


def test_bad_commands_counted_and_session_closed_after_too_many():
    m = machine()
    for i in range(p.MAX_ERRORS - 1):
        r = m.receive_line(b"FOO")
        assert r.data.startswith(b"-ERR unknown command") and not r.close
    assert m.receive_line(b"X" * (p.MAX_LINE + 1)).close


def test_good_command_resets_error_count():
    m = machine()
    for _ in range(p.MAX_ERRORS - 1):
        m.receive_line(b"FOO")
    assert m.receive_line(b"USER bob").data.startswith(b"+OK")
    assert not m.receive_line(b"FOO").close


def test_transaction_commands_refused_before_login_and_auth_after():
    m = machine()
    for cmd in (b"STAT", b"LIST", b"UIDL", b"RETR 1", b"TOP 1 1", b"DELE 1", b"RSET", b"NOOP"):
        assert m.receive_line(cmd).data.startswith(b"-ERR")
    m = logged_in()
    for cmd in (b"USER x", b"PASS y", b"STLS", b"AUTH PLAIN"):
        assert m.receive_line(cmd).data.startswith(b"-ERR")
    assert m.receive_line(b"NOOP").data == b"+OK\r\n"


def test_decode_plain():
    assert p.decode_plain(b64encode(b"bob\x00bob\x00pw").decode()) == ("bob", "pw")
    assert p.decode_plain(b64encode(b"\x00\x00pw").decode()) is None
    assert p.decode_plain(b64encode(b"no nulls").decode()) is None


def test_random_input_never_raises_and_replies_are_crlf_lines():
    import random
    rnd = random.Random(3)
    words = ["USER", "PASS", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP",
             "CAPA", "AUTH", "STLS", "PLAIN", "1", "0", "-1", "99999999999", "x", "*", "", " ",
             "\t", "é", "\x00", "AGJvYgB4"]
    for _ in range(300):
        m = logged_in() if rnd.random() < 0.5 else machine()
        for _ in range(40):
            line = " ".join(rnd.choice(words) for _ in range(rnd.randint(0, 4)))
            out = m.receive_line(line.encode() + b"\r\n")
            if isinstance(out, Reply):
                if out.data:
                    assert out.data.endswith(b"\r\n")
                    assert out.data[:1] in (b"+", b"-")
                if out.close:
                    break
            elif isinstance(out, Authenticate):
                m.auth_result(out.user, None)
            elif isinstance(out, Fetch):
                m.fetched(out, b"Subject: s\r\n\r\nbody\r\n")
            elif isinstance(out, StartTLS):
                m.tls_started()
            elif isinstance(out, Update):
                m.update_result(len(out.uids))
                break
