"""Pure SMTP accept/reject rules (relay/smtp/policy.py) and SASL decoding (relay/smtp/auth.py)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.smtp import policy
from relay.smtp.auth import b64, decode_plain

LOCAL = {"example.org"}
USERS = {"bob@example.org"}


def rcpt(address, *, count=0, authenticated=False, smtputf8=False, max_recipients=1000):
    return policy.check_recipient(address, count=count, max_recipients=max_recipients, authenticated=authenticated,
                                  is_local_domain=lambda d: d in LOCAL, user_exists=lambda a: a.lower() in USERS,
                                  smtputf8=smtputf8)


@pytest.mark.parametrize("address, authenticated, expected", [
    ("bob@example.org", False, None),
    ("BOB@Example.ORG", False, None),
    ("bob@example.org.", False, "501 5.1.3"),
    ("carol@example.org", False, "550 5.1.1"),
    ("carol@example.org", True, "550 5.1.1"),      # AUTH does not create local users
    ("x@elsewhere.net", False, "554 5.7.1"),
    ("x@example.org.elsewhere.net", False, "554 5.7.1"),
    ("x@elsewhere.net", True, None),
    ("x@[192.0.2.1]", False, "554 5.7.1"),
    ("no-at-sign", False, "501 5.1.3"),
    ("@example.org", False, "501 5.1.3"),
    ("a b@example.org", False, "501 5.1.3"),
    ("x@bad..domain", True, "501 5.1.3"),
])
def test_recipient_rules(address, authenticated, expected):
    reply = rcpt(address, authenticated=authenticated)
    if expected is None:
        assert reply is None
    else:
        assert reply.startswith(expected)


def test_recipient_limits_and_utf8():
    assert rcpt("bob@example.org", count=999) is None
    assert rcpt("bob@example.org", count=1000).startswith("452 4.5.3")
    assert rcpt("bob@example.org", count=2, max_recipients=2) == policy.TOO_MANY_RCPTS
    assert rcpt("jörg@elsewhere.net", authenticated=True).startswith("553 5.6.7")
    assert rcpt("jörg@elsewhere.net", authenticated=True, smtputf8=True) is None


@pytest.mark.parametrize("sender, smtputf8, ok", [
    ("", False, True), ("a@b.c", False, True), ("jörg@b.c", False, False), ("jörg@b.c", True, True),
    ("nonsense", False, False), ("a@", False, False),
])
def test_sender_rules(sender, smtputf8, ok):
    assert (policy.check_sender(sender, smtputf8=smtputf8) is None) == ok


@pytest.mark.parametrize("data, expected", [
    (b"Subject: x\r\n\r\nbody\r\n", None),
    (b"", None),
    (b"Subject: x\r\n\r\nbo\ndy\r\n", policy.BARE_NEWLINE),
    (b"Subject: x\r\n\r\nbo\rdy\r\n", policy.BARE_NEWLINE),
    (b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<x@y>\r\n", policy.BARE_NEWLINE),
    (b"Subject: x\r\n\r\nhello\r.\r\n", policy.BARE_NEWLINE),
    (b"Subject: x\r\n\r\nhello\r\r\n", policy.BARE_NEWLINE),
    (b"Subject: x\r\n\r\nnul\x00\r\n", policy.NO_NUL),
])
def test_data_rules(data, expected):
    assert policy.check_data(data, max_hops=50) == expected


@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")),
                max_size=20))
def test_crlf_only_data_is_accepted(lines):
    data = b"".join(line + b"\r\n" for line in lines if not line.lower().startswith(b"received:"))
    assert policy.check_data(data, max_hops=50) is None


@given(st.binary(max_size=200))
def test_no_bare_cr_or_lf_ever_passes(data):
    if policy.check_data(data, max_hops=10 ** 6) is None:
        assert b"\r" not in data.replace(b"\r\n", b"") and b"\n" not in data.replace(b"\r\n", b"")


def test_hop_count_only_in_the_header():
    hops = b"Received: from a by b; date\r\n" * 3
    assert policy.count_received(hops + b"Subject: x\r\n\r\nReceived: in the body\r\n") == 3
    assert policy.check_data(hops + b"\r\nbody\r\n", max_hops=3) == policy.TOO_MANY_HOPS
    assert policy.check_data(hops + b"\r\nbody\r\n", max_hops=4) is None


def test_received_header_and_protocol_names():
    h = policy.received_header(helo="crepes.fr", client_ip="192.0.2.7", client_host=None, by="mx.example.org",
                               protocol="ESMTPSA", queue_id="ABC123", recipient="bob@example.org",
                               date="Mon, 23 Nov 2026 10:00:00 +0000")
    assert h == (b"Received: from crepes.fr (unknown [192.0.2.7])\r\n\tby mx.example.org (tui-mail relay) "
                 b"with ESMTPSA id ABC123\r\n\tfor <bob@example.org>; Mon, 23 Nov 2026 10:00:00 +0000\r\n")
    evil = policy.received_header(helo="x\r\nBcc: everyone", client_ip="::1", client_host=None, by="h",
                                  protocol="SMTP", queue_id="Q", recipient=None, date="d")
    assert evil.count(b"\r\n") == 2 and b"Bcc: everyone\r\n" not in evil
    assert policy.protocol_name(esmtp=True, tls=False, authenticated=False) == "ESMTP"
    assert policy.protocol_name(esmtp=True, tls=True, authenticated=True) == "ESMTPSA"
    assert policy.protocol_name(esmtp=False, tls=False, authenticated=False) == "SMTP"


def test_sasl_plain_decoding():
    assert decode_plain(b"\x00bob@example.org\x00pw") == ("bob@example.org", "pw")
    assert decode_plain(b"bob@example.org\x00bob@example.org\x00pw") == ("bob@example.org", "pw")
    assert decode_plain(b"admin@example.org\x00bob@example.org\x00pw") is None  # no proxy auth
    assert decode_plain(b"only-two\x00parts") is None
    assert decode_plain(b"\x00\xff\x00pw") is None
    assert b64(base64.b64encode(b"hi").decode()) == b"hi"
    assert b64("not base64!") is None
