"""The whole path on one machine: SMTP into the RelayServer, local delivery, POP3 out."""

from __future__ import annotations

import asyncio
import poplib
import smtplib

from relay.config import parse_config
from relay.server import RelayServer
from relay.users import AuthThrottle
from tests.test_relay_smtp_support import PASSWORDS, add_users

MESSAGE = (b"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.org>\r\nSubject: by pop\r\n"
           b"Message-ID: <p1@example.org>\r\n\r\nHello Bob\r\n.dot line\r\n")


async def test_smtp_in_pop3_out(tmp_path):
    cfg = parse_config('hostname = "mx.example.org"\ndomains = ["example.org"]\n'
                       '[listen]\nsmtp = "127.0.0.1:0"\nsubmission = ""\nimap = ""\n'
                       'pop3 = "127.0.0.1:0"\n', None, tmp_path / "relay")
    srv = RelayServer(cfg, throttle=AuthThrottle(base=0.01), grace=1.0)
    add_users(srv)
    await srv.start()
    try:
        shost, sport = srv.addresses["smtp"]
        phost, pport = srv.addresses["pop3"]

        def send():
            with smtplib.SMTP(shost, sport) as s:
                s.sendmail("alice@example.org", ["bob@example.org"], MESSAGE)

        await asyncio.to_thread(send)

        def fetch() -> list[bytes] | None:
            c = poplib.POP3(phost, pport, timeout=10)
            try:
                c.user("bob@example.org")
                c.pass_(PASSWORDS["bob@example.org"])
                if c.stat()[0] == 0:
                    return None
                lines = c.retr(1)[1]
                c.dele(1)
                return lines
            finally:
                c.quit()

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        lines = None
        while lines is None and loop.time() < deadline:
            lines = await asyncio.to_thread(fetch)
            if lines is None:
                await asyncio.sleep(0.05)
        assert lines is not None
        got = b"".join(line + b"\r\n" for line in lines)
        assert got.startswith(b"Return-Path: <alice@example.org>\r\nDelivered-To: bob@example.org\r\n")
        assert got.endswith(MESSAGE)
        root = cfg.mail_dir / "bob@example.org"
        assert list((root / "cur").iterdir()) == [] and list((root / "new").iterdir()) == []
    finally:
        await srv.stop()
