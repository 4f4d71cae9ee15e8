"""The Dovecot launcher in tests/peers.py works: login, seeding, restart, TLS, clean stop."""

from __future__ import annotations

import imaplib
import poplib
import ssl

from tests.peers import Dovecot, _live_group_members, dovecot, dovecot_tls  # noqa: F401


def _imap_login(dc: Dovecot, user="bob", password="pw") -> imaplib.IMAP4:
    m = imaplib.IMAP4(dc.host, dc.imap_port, timeout=5)
    m.login(user, password)
    return m


def test_seeded_messages_are_served_in_order_over_imap_and_pop3(dovecot):
    dovecot.add_user("bob", "pw")
    dovecot.seed("bob", 30, seen_every=10)
    m = _imap_login(dovecot)
    try:
        assert m.select("INBOX") == ("OK", [b"30"])
        typ, data = m.uid("SORT", "(DATE)", "UTF-8", "ALL")
        assert data[0].split() == [str(i).encode() for i in range(1, 31)]
        typ, data = m.uid("FETCH", "1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"Message 0 about topic 0" in data[0][1]
        typ, data = m.search(None, "SEEN")
        assert len(data[0].split()) == 3
    finally:
        m.logout()
    p = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=5)
    try:
        p.user("bob")
        p.pass_("pw")
        assert p.stat()[0] == 30
    finally:
        p.quit()


def test_wrong_password_is_refused(dovecot):
    dovecot.add_user("bob", "pw")
    m = imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=5)
    try:
        try:
            m.login("bob", "nope")
        except imaplib.IMAP4.error as e:
            assert "AUTHENTICATIONFAILED" in str(e)
        else:
            raise AssertionError("login with a wrong password succeeded")
    finally:
        m.shutdown()


def test_special_use_folders_and_delivery(dovecot):
    dovecot.add_user("bob", "pw")
    m = _imap_login(dovecot)
    try:
        typ, lines = m.list()
        text = b"\n".join(lines)
        for use in (b"\\Sent", b"\\Drafts", b"\\Trash", b"\\Junk"):
            assert use in text
        dovecot.deliver("bob", b"Subject: hi\r\n\r\nbody\r\n", folder="Sent")
        assert m.select("Sent") == ("OK", [b"1"])
    finally:
        m.logout()


def test_restart_keeps_ports_users_and_mail_and_stop_leaves_nothing(dovecot):
    dovecot.add_user("bob", "pw")
    dovecot.seed("bob", 5)
    m = _imap_login(dovecot)
    m.select("INBOX")
    typ, data = m.response("UIDVALIDITY")
    uidvalidity = data[0]
    m.logout()
    pid = dovecot.proc.pid
    dovecot.restart()
    assert not _live_group_members(pid)
    m = _imap_login(dovecot)
    try:
        assert m.select("INBOX") == ("OK", [b"5"])
        assert m.response("UIDVALIDITY")[1][0] == uidvalidity
    finally:
        m.logout()
    pid = dovecot.proc.pid
    dovecot.stop()
    dovecot.stop()  # idempotent
    assert not _live_group_members(pid)


def test_tls_variant_offers_imaps_and_starttls(dovecot_tls):
    dc = dovecot_tls
    dc.add_user("bob", "pw")
    ctx = ssl.create_default_context(cafile=str(dc.cert_file))
    m = imaplib.IMAP4_SSL(dc.host, dc.imaps_port, ssl_context=ctx, timeout=5)
    try:
        m.login("bob", "pw")
        assert m.select("INBOX")[0] == "OK"
    finally:
        m.logout()
    m = imaplib.IMAP4(dc.host, dc.imap_port, timeout=5)
    try:
        assert "STARTTLS" in m.capabilities
        m.starttls(ssl_context=ctx)
        m.login("bob", "pw")
    finally:
        m.logout()
