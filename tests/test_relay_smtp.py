"""The relay's SMTP listeners against real clients (smtplib, aiosmtplib, raw sockets)."""

from __future__ import annotations

import asyncio
import re
import shutil
import smtplib
import ssl
import time

import aiosmtplib
import pytest

from relay.remote import DeliveryResult
from relay.server import RelayServer
from relay.users import AuthThrottle
from tests.test_relay_smtp_support import (  # noqa: F401  (fixture)
    PASSWORDS, QUEUED, RawSMTP, add_users, maildir_messages, relay, relay_config, wait_delivered)

MESSAGE = (b"From: Alice <alice@crepes.fr>\r\nTo: Bob <bob@example.org>\r\nSubject: ketchup\r\n"
           b"Message-ID: <1@crepes.fr>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\n\r\n"
           b"Do you like ketchup?\r\n.leading dot stays\r\n\r\nH\xc3\xa9 8bit body\r\n")


def _client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def test_inbound_delivery_is_byte_exact(relay):
    host, port = relay.addresses["smtp"]

    def send():
        with smtplib.SMTP(host, port) as s:
            s.ehlo("crepes.fr")
            code, msg = s.docmd("MAIL FROM:<alice@crepes.fr> BODY=8BITMIME")
            assert code == 250
            assert s.docmd("RCPT TO:<Bob@Example.org>")[0] == 250
            code, msg = s.data(MESSAGE)
            return code, msg

    code, msg = await asyncio.to_thread(send)
    assert code == 250
    qid = QUEUED.match(b"250 " + msg).group(1).decode()
    [path] = await wait_delivered(relay, "bob@example.org", 1)
    assert path.name.startswith(qid + ".") and path.name.endswith(".mx.example.org")
    got = path.read_bytes()
    head = b"Return-Path: <alice@crepes.fr>\r\nDelivered-To: Bob@Example.org\r\n"
    assert got.startswith(head)
    rest = got[len(head):]
    m = re.match(rb"Received: from crepes\.fr \(unknown \[127\.0\.0\.1\]\)\r\n\tby mx\.example\.org "
                 rb"\(tui-mail relay\) with ESMTP id " + qid.encode() +
                 rb"\r\n\tfor <Bob@Example\.org>; [^\r\n]+\r\n", rest)
    assert m, rest[:300]
    assert rest[m.end():] == MESSAGE
    # the queue is empty again once delivered
    await relay.runner.wait_idle()
    assert relay.spool.count() == 0


async def test_delivery_publishes_change_and_multiple_local_recipients(relay):
    seen = []
    unsub = relay.bus.subscribe("alice@example.org", lambda u, f: seen.append((u, f)))
    try:
        host, port = relay.addresses["smtp"]
        resp = await aiosmtplib.send(MESSAGE, sender="x@crepes.fr", recipients=["bob@example.org", "alice@example.org"],
                                     hostname=host, port=port, start_tls=False)
        assert "queued as" in resp[1]
        assert len(await wait_delivered(relay, "bob@example.org", 1)) == 1
        assert len(await wait_delivered(relay, "alice@example.org", 1)) == 1
        await relay.runner.wait_idle()
        assert seen == [("alice@example.org", "INBOX")]
        # without a single recipient the Received header names none
        data = maildir_messages(relay, "alice@example.org")[0].read_bytes()
        assert b"\tfor <" not in data.split(b"\r\n\r\n")[0]
    finally:
        unsub()


async def test_ehlo_extensions_per_listener(relay):
    inbound = await RawSMTP.connect(relay.addresses["smtp"])
    sub = await RawSMTP.connect(relay.addresses["submission"])
    try:
        exts_in = (await inbound.cmd(b"EHLO client.test")).decode()
        exts_sub = (await sub.cmd(b"EHLO client.test")).decode()
        for ext in ("SIZE 26214400", "8BITMIME", "SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES", "STARTTLS"):
            assert ext in exts_in and ext in exts_sub
        assert "AUTH" not in exts_in
        assert "AUTH LOGIN PLAIN" in exts_sub  # plaintext allowed on loopback by default
        assert exts_in.splitlines()[-1].startswith("250 ")
        assert (await inbound.cmd(b"AUTH PLAIN AGJvYgBib2I=")).startswith(b"503 5.5.1")
    finally:
        await inbound.close()
        await sub.close()


async def test_open_relay_refused_on_both_listeners(relay):
    inbound = await RawSMTP.connect(relay.addresses["smtp"])
    sub = await RawSMTP.connect(relay.addresses["submission"])
    try:
        await inbound.cmd(b"EHLO spammer.test")
        assert (await inbound.cmd(b"MAIL FROM:<bob@example.org>")).startswith(b"250")
        assert (await inbound.cmd(b"RCPT TO:<victim@elsewhere.net>")).startswith(b"554 5.7.1")
        assert (await inbound.cmd(b"RCPT TO:<victim@example.org.elsewhere.net>")).startswith(b"554 5.7.1")
        assert (await inbound.cmd(b"DATA")).startswith(b"503")
        await sub.cmd(b"EHLO spammer.test")
        assert (await sub.cmd(b"MAIL FROM:<bob@example.org>")).startswith(b"530 5.7.0")
        assert (await sub.cmd(b"RCPT TO:<victim@elsewhere.net>")).startswith(b"503")
    finally:
        await inbound.close()
        await sub.close()
    assert relay.spool.count() == 0


async def test_unknown_local_user_rejected_at_rcpt(relay):
    c = await RawSMTP.connect(relay.addresses["smtp"])
    try:
        await c.cmd(b"EHLO a.test")
        await c.cmd(b"MAIL FROM:<a@a.test>")
        reply = await c.cmd(b"RCPT TO:<nobody@example.org>")
        assert reply.startswith(b"550 5.1.1 <nobody@example.org>")
        assert (await c.cmd(b"RCPT TO:<bob@example.org>")).startswith(b"250 2.1.5")
        assert (await c.cmd(b"RCPT TO:<not an address>")).startswith(b"5")
    finally:
        await c.close()


class DeferringRemote:
    """Onward delivery stand-in: records what it was handed and keeps it queued."""

    def __init__(self):
        self.calls = []

    async def deliver(self, entry, recipients):
        self.calls.append((entry.id, list(recipients)))
        return dict.fromkeys(recipients, DeliveryResult("deferred", 451, "next hop unreachable (test)", "4.4.1"))


async def test_submission_auth_plain_and_login_then_relay(relay):
    host, port = relay.addresses["submission"]
    remote = relay.runner.remote = DeferringRemote()

    def send(mech):
        with smtplib.SMTP(host, port) as s:
            s.ehlo("laptop")
            s.user, s.password = "Bob@example.org", PASSWORDS["bob@example.org"]
            code, _ = s.auth(mech, getattr(s, "auth_" + mech.lower()))
            assert code == 235
            # the From: header must be the login's own address (issue 10: sender identity)
            msg = MESSAGE.replace(b"From: Alice <alice@crepes.fr>", b"From: Bob <bob@example.org>")
            return s.sendmail("bob@example.org", ["friend@elsewhere.net", "alice@example.org"], msg)

    assert await asyncio.to_thread(send, "PLAIN") == {}
    assert await asyncio.to_thread(send, "LOGIN") == {}
    assert len(await wait_delivered(relay, "alice@example.org", 2)) == 2
    await relay.runner.wait_idle()
    # the remote recipient went to onward delivery only, and stays queued with the reason
    entries = relay.spool.entries()
    assert len(entries) == 2
    assert sorted(remote.calls) == sorted((e.id, ["friend@elsewhere.net"]) for e in entries)
    for e in entries:
        r = e.recipient("friend@elsewhere.net")
        assert r.status == "deferred" and r.text == "next hop unreachable (test)" and r.attempts == 1
        assert e.recipient("alice@example.org").status == "sent"
        assert e.next_attempt > time.time() + 30
        assert e.meta["auth"] == "bob@example.org"
    data = maildir_messages(relay, "alice@example.org")[0].read_bytes()
    assert b"with ESMTPA id" in data


async def test_auth_failure_and_throttle(relay):
    host, port = relay.addresses["submission"]
    smtp = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False)
    await smtp.connect()
    try:
        await smtp.ehlo()
        delays = []
        for _ in range(4):
            t0 = time.monotonic()
            with pytest.raises(aiosmtplib.SMTPAuthenticationError) as ei:
                await smtp.login("bob@example.org", "wrong")
            delays.append(time.monotonic() - t0)
            assert ei.value.code == 535
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await smtp.login("ghost@example.org", "whatever")
        # the first failure waited for nothing, the fourth for base * 2**2 = 0.2 s
        assert delays[3] >= 0.2
        assert delays[3] > delays[0]
        assert relay.throttle.delay("127.0.0.1") == 0.4
        resp = await smtp.login("bob@example.org", PASSWORDS["bob@example.org"])
        assert resp.code == 235
        assert relay.throttle.delay("127.0.0.1") == 0.0
    finally:
        await smtp.quit()


async def test_starttls_required_for_auth_when_plaintext_loopback_off(tmp_path):
    cfg = relay_config(tmp_path / "r", "[auth]\nallow_plaintext_loopback = false\n")
    srv = RelayServer(cfg, throttle=AuthThrottle(base=0.01), grace=1.0)
    add_users(srv)
    await srv.start()
    try:
        c = await RawSMTP.connect(srv.addresses["submission"])
        try:
            ehlo = await c.cmd(b"EHLO laptop")
            assert b"AUTH" not in ehlo and b"STARTTLS" in ehlo
            assert (await c.cmd(b"AUTH PLAIN AGJvYgBib2I=")).startswith(b"538 5.7.11")
        finally:
            await c.close()

        host, port = srv.addresses["submission"]

        def send():
            with smtplib.SMTP(host, port) as s:
                s.ehlo("laptop")
                s.starttls(context=_client_ctx())
                code, ext = s.ehlo("laptop")
                assert b"AUTH LOGIN PLAIN" in ext and b"STARTTLS" not in ext
                s.login("alice@example.org", PASSWORDS["alice@example.org"])
                msg = MESSAGE.replace(b"<alice@crepes.fr>", b"<alice@example.org>")   # the login's own From
                return s.sendmail("alice@example.org", ["bob@example.org"], msg)

        assert await asyncio.to_thread(send) == {}
        [p] = await wait_delivered(srv, "bob@example.org", 1)
        assert b"with ESMTPSA id" in p.read_bytes()
        # inbound STARTTLS too, with aiosmtplib
        host, port = srv.addresses["smtp"]
        await aiosmtplib.send(MESSAGE, sender="x@y.test", recipients=["bob@example.org"], hostname=host, port=port,
                              start_tls=True, tls_context=_client_ctx())
        msgs = await wait_delivered(srv, "bob@example.org", 2)
        assert any(b"with ESMTPS id" in m.read_bytes() for m in msgs)
    finally:
        await srv.stop()
    # the self-signed pair was made on first start and is reused
    assert (cfg.certs_dir / "relay.crt").exists() and oct((cfg.certs_dir / "relay.key").stat().st_mode & 0o777) == "0o600"


async def test_size_limit_line_length_and_recipient_count(tmp_path):
    cfg = relay_config(tmp_path / "r", "[queue]\nmax_message_size = 4096\nmax_recipients = 2\n")
    async with RelayServer(cfg, grace=1.0) as srv:
        add_users(srv)
        c = await RawSMTP.connect(srv.addresses["smtp"])
        try:
            assert b"SIZE 4096" in await c.cmd(b"EHLO a.test")
            assert (await c.cmd(b"MAIL FROM:<a@a.test> SIZE=5000")).startswith(b"552")
            assert (await c.cmd(b"MAIL FROM:<a@a.test>")).startswith(b"250")
            assert (await c.cmd(b"RCPT TO:<bob@example.org>")).startswith(b"250")
            assert (await c.cmd(b"RCPT TO:<alice@example.org>")).startswith(b"250")
            assert (await c.cmd(b"RCPT TO:<bob@example.org>")).startswith(b"452 4.5.3")
            assert (await c.cmd(b"DATA")).startswith(b"354")
            await c.send(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 80 + b".\r\n")
            assert (await c.reply()).startswith(b"552")
            # a line over 1000 octets
            await c.cmd(b"MAIL FROM:<a@a.test>")
            await c.cmd(b"RCPT TO:<bob@example.org>")
            await c.cmd(b"DATA")
            await c.send(b"Subject: long\r\n\r\n" + b"y" * 1200 + b"\r\n.\r\n")
            assert (await c.reply()).startswith(b"500")
            # and the session is still usable
            await c.cmd(b"MAIL FROM:<a@a.test>")
            await c.cmd(b"RCPT TO:<bob@example.org>")
            await c.cmd(b"DATA")
            await c.send(b"Subject: fine\r\n\r\nok\r\n.\r\n")
            assert QUEUED.match(await c.reply())
        finally:
            await c.close()
        assert len(await wait_delivered(srv, "bob@example.org", 1)) == 1


async def test_hop_count_loop_detection(relay):
    c = await RawSMTP.connect(relay.addresses["smtp"])
    try:
        await c.cmd(b"EHLO a.test")
        await c.cmd(b"MAIL FROM:<a@a.test>")
        await c.cmd(b"RCPT TO:<bob@example.org>")
        await c.cmd(b"DATA")
        hops = b"".join(b"Received: from h%d by h%d; Mon, 23 Nov 2026 09:00:00 +0000\r\n" % (i, i + 1) for i in range(50))
        await c.send(hops + b"Subject: loop\r\n\r\nbody\r\n.\r\n")
        assert (await c.reply()).startswith(b"554 5.4.6")
        await c.cmd(b"MAIL FROM:<a@a.test>")
        await c.cmd(b"RCPT TO:<bob@example.org>")
        await c.cmd(b"DATA")
        await c.send(hops[: hops.index(b"Received: from h49")] + b"Subject: ok\r\n\r\nbody\r\n.\r\n")
        assert QUEUED.match(await c.reply())  # 49 + ours = 50 hops: still fine
    finally:
        await c.close()


SMUGGLING_VECTORS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n",
    "CR.CR": b"\r.\r",
}


@pytest.mark.parametrize("name", list(SMUGGLING_VECTORS))
async def test_smtp_smuggling_vectors_are_refused(relay, name):
    """A second message hidden behind a non-standard end-of-data must never be queued."""
    vector = SMUGGLING_VECTORS[name]
    c = await RawSMTP.connect(relay.addresses["smtp"])
    try:
        await c.cmd(b"EHLO a.test")
        await c.cmd(b"MAIL FROM:<alice@example.org>")
        await c.cmd(b"RCPT TO:<bob@example.org>")
        assert (await c.cmd(b"DATA")).startswith(b"354")
        smuggled = (b"Subject: outer\r\n\r\nhello" + vector +
                    b"MAIL FROM:<admin@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
                    b"Subject: smuggled\r\n\r\nevil\r\n.\r\n")
        await c.send(smuggled)
        reply = await c.reply()
        assert reply.startswith(b"550 5.5.2"), reply
        # nothing else arrives: the server waits for the next command
        assert (await c.cmd(b"NOOP")).startswith(b"250")
    finally:
        await c.close()
    await asyncio.sleep(0.05)
    assert relay.spool.count() == 0
    assert maildir_messages(relay, "bob@example.org") == []


async def test_bare_lf_in_body_is_refused(relay):
    c = await RawSMTP.connect(relay.addresses["smtp"])
    try:
        await c.cmd(b"HELO a.test")
        await c.cmd(b"MAIL FROM:<a@a.test>")
        await c.cmd(b"RCPT TO:<bob@example.org>")
        await c.cmd(b"DATA")
        await c.send(b"Subject: x\r\n\r\nline one\nline two\r\n.\r\n")
        assert (await c.reply()).startswith(b"550 5.5.2")
    finally:
        await c.close()
    assert relay.spool.count() == 0


async def test_queue_write_failure_answers_451(relay):
    shutil.rmtree(relay.spool.active_dir)  # the rename into active/ will fail
    c = await RawSMTP.connect(relay.addresses["smtp"])
    try:
        await c.cmd(b"EHLO a.test")
        await c.cmd(b"MAIL FROM:<a@a.test>")
        await c.cmd(b"RCPT TO:<bob@example.org>")
        await c.cmd(b"DATA")
        await c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        assert (await c.reply()).startswith(b"451 4.3.0")
        relay.spool.active_dir.mkdir()
        await c.cmd(b"MAIL FROM:<a@a.test>")
        await c.cmd(b"RCPT TO:<bob@example.org>")
        await c.cmd(b"DATA")
        await c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        assert QUEUED.match(await c.reply())
    finally:
        await c.close()


async def test_stop_finishes_open_transaction(relay):
    c = await RawSMTP.connect(relay.addresses["smtp"])
    idle = await RawSMTP.connect(relay.addresses["smtp"])
    try:
        await c.cmd(b"EHLO a.test")
        await c.cmd(b"MAIL FROM:<a@a.test>")
        await c.cmd(b"RCPT TO:<bob@example.org>")
        stopping = asyncio.create_task(relay.stop())
        await asyncio.sleep(0.1)
        assert not stopping.done()
        # new connections are refused while the open transaction may finish
        with pytest.raises(OSError):
            await asyncio.open_connection(*relay.addresses["smtp"])
        await c.cmd(b"DATA")
        await c.send(b"Subject: last one\r\n\r\nbody\r\n.\r\n")
        assert QUEUED.match(await c.reply())
        await asyncio.wait_for(stopping, 5)
        assert await idle.reader.read() == b""  # idle sessions were closed
    finally:
        await c.close()
        await idle.close()
    [p] = maildir_messages(relay, "bob@example.org")
    assert b"last one" in p.read_bytes()


async def test_pipelined_transaction(relay):
    c = await RawSMTP.connect(relay.addresses["smtp"])
    try:
        await c.cmd(b"EHLO a.test")
        await c.send(b"MAIL FROM:<a@a.test>\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
        replies = [await c.reply() for _ in range(4)]
        assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"354"]
        await c.send(b"Subject: piped\r\n\r\n..dot-stuffed\r\n.\r\n")
        assert QUEUED.match(await c.reply())
    finally:
        await c.close()
    [p] = await wait_delivered(relay, "bob@example.org", 1)
    assert p.read_bytes().endswith(b"\r\n\r\n.dot-stuffed\r\n")


async def test_starttls_command_injection_is_discarded(relay):
    """Commands pipelined after STARTTLS in plaintext must not run inside the TLS session."""
    c = await RawSMTP.connect(relay.addresses["smtp"])
    try:
        await c.cmd(b"EHLO a.test")
        await c.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
        assert (await c.reply()).startswith(b"220")
        await c.writer.start_tls(_client_ctx())
        ehlo = await c.cmd(b"EHLO a.test")
        assert ehlo.startswith(b"250-mx.example.org") and b"STARTTLS" not in ehlo
        # no transaction was started by the injected MAIL: a fresh MAIL succeeds (not 503 nested)
        assert (await c.cmd(b"MAIL FROM:<real@a.test>")).startswith(b"250")
        assert (await c.cmd(b"NOOP")).startswith(b"250")
    finally:
        await c.close()


def test_fast_address_parsing_agrees_with_aiosmtpd():
    """RelaySMTP._getaddr's fast path for ``<local@domain>`` gives what aiosmtpd's RFC 5322
    parser gives, and leaves everything unusual to it."""
    from aiosmtpd.smtp import SMTP

    from relay.smtp.handlers import RelaySMTP

    ours = object.__new__(RelaySMTP)  # only local_part_limit is read
    ours.local_part_limit = 64
    ref = object.__new__(SMTP)
    ref.local_part_limit = 64
    cases = ["<alice@crepes.fr>", "<bob@hamburger.edu> SIZE=1024 BODY=8BITMIME", "<a.b+c_d@x-y.example>\tSMTPUTF8",
             "<o'neil!#$%&*/=?^`{|}~@x.org>", "<a@b>x", "<a@b> (comment) SIZE=1", "<\"quoted local\"@x.org>",
             "<>", "<> SIZE=10", "<a..b@x.org>", "<.a@x.org>", "<a@[127.0.0.1]>", "<@relay.org:a@x.org>",
             "a@x.org", " <a@x.org>", "<a@x.org", "<a@-x.org>", "<" + "l" * 65 + "@x.org>", "<" + "l" * 64 + "@x.org>",
             "<jürgen@x.org>", "<a@x.org>  ", ""]
    for arg in cases:
        assert ours._getaddr(arg) == ref._getaddr(arg), arg
