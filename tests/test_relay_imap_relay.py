"""The whole relay (RelayServer) with its IMAP listener: a message sent by SMTP reaches an IDLE
client as EXISTS, byte-exact; logins go through the relay's user database and throttle."""

from __future__ import annotations

import asyncio
import smtplib
import time

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from relay.config import parse_config
from relay.imap.server import IDLE_RECHECK
from relay.server import RelayServer
from relay.users import AuthThrottle

pytest.importorskip("relay.store.registry")

MESSAGE = (b"From: Alice <alice@crepes.fr>\r\nTo: Bob <bob@example.org>\r\nSubject: ketchup\r\n"
           b"Message-ID: <1@crepes.fr>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\n\r\nDo you like ketchup?\r\n")


@pytest.fixture
async def relay(tmp_path):
    text = ('hostname = "mx.example.org"\ndomains = ["example.org"]\n'
            '[listen]\nsmtp = "127.0.0.1:0"\nsubmission = ""\nimap = "127.0.0.1:0"\npop3 = ""\n')
    srv = RelayServer(parse_config(text, None, tmp_path / "relay"),
                      throttle=AuthThrottle(base=0.05, maximum=0.2), grace=2.0)
    srv.users.add("bob@example.org", "bob-secret")
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def test_smtp_delivery_reaches_idle_client(relay):
    ihost, iport = relay.addresses["imap"]
    shost, sport = relay.addresses["smtp"]

    def client():
        with IMAPClient(ihost, port=iport, ssl=False) as c:
            c.login("bob@example.org", "bob-secret")
            folders = {name for _f, _d, name in c.list_folders()}
            assert {"INBOX", "Sent", "Trash"} <= folders
            c.select_folder("INBOX")
            c.idle()
            t0 = time.perf_counter()
            with smtplib.SMTP(shost, sport) as s:
                s.sendmail("alice@crepes.fr", ["bob@example.org"], MESSAGE)
            resp = c.idle_check(timeout=10)
            elapsed = time.perf_counter() - t0
            c.idle_done()
            assert (1, b"EXISTS") in resp
            body = c.fetch([1], ["BODY.PEEK[]"])
            data = next(iter(body.values()))[b"BODY[]"]
            assert data.endswith(MESSAGE) and data.startswith(b"Return-Path: <alice@crepes.fr>\r\n")
            return elapsed

    elapsed = await asyncio.to_thread(client)
    print(f"SMTP → IDLE EXISTS: {elapsed * 1000:.1f} ms")
    assert elapsed < IDLE_RECHECK  # bus-driven: without the ChangeBus only the periodic recheck would see it


async def test_login_uses_relay_users(relay):
    ihost, iport = relay.addresses["imap"]

    def client():
        with IMAPClient(ihost, port=iport, ssl=False) as c:
            caps = c.capabilities()
            assert b"STARTTLS" in caps and b"AUTH=PLAIN" in caps   # relay cert; loopback plaintext ok
            with pytest.raises(LoginError):
                c.login("bob@example.org", "wrong")
            c.login("bob@example.org", "bob-secret")
            assert c.select_folder("INBOX")[b"EXISTS"] == 0

    await asyncio.to_thread(client)


async def test_starttls_with_the_relays_certificate(relay):
    import ssl
    ihost, iport = relay.addresses["imap"]

    def client():
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE   # the relay's self-signed certificate
        with IMAPClient(ihost, port=iport, ssl=False) as c:
            c.starttls(ctx)
            c.login("bob@example.org", "bob-secret")
            return c.select_folder("INBOX")[b"EXISTS"]

    assert await asyncio.to_thread(client) == 0


async def test_stop_ends_open_sessions(relay):
    ihost, iport = relay.addresses["imap"]
    c = await asyncio.to_thread(IMAPClient, ihost, port=iport, ssl=False)
    try:
        await asyncio.to_thread(c.login, "bob@example.org", "bob-secret")
        await relay.stop()
        with pytest.raises(Exception):
            await asyncio.to_thread(c.noop)
    finally:
        try:
            c.shutdown()
        except OSError:
            pass
