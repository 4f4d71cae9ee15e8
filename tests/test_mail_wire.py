"""Composed messages survive a real SMTP hop: aiosmtplib submits to an aiosmtpd server (both
in the test's own event loop, port 0), and what the server received parses back to the
draft. Proves the bytes and envelope (incl. SMTPUTF8 / 8BITMIME) are what servers accept."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import aiosmtplib
from aiosmtpd.smtp import SMTP as SMTPServer

from tui_mail.mail.compose import AttachedData, Draft, build_message, reply
from tui_mail.mail.parse import parse_message

NOW = datetime(2026, 11, 23, 9, 41, tzinfo=timezone.utc)


class Sink:
    def __init__(self):
        self.received = []

    async def handle_DATA(self, server, session, envelope):
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                              list(envelope.mail_options)))
        return "250 OK"


async def _send(composed):
    sink = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTPServer(sink, enable_SMTPUTF8=True, decode_data=False, hostname="sink.test"),
        "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await aiosmtplib.send(composed.data, sender=composed.sender, recipients=list(composed.recipients),
                              hostname="127.0.0.1", port=port, start_tls=False, use_tls=False,
                              mail_options=composed.mail_options, timeout=10)
    finally:
        server.close()
        await server.wait_closed()
    return sink.received


async def test_submit_and_read_back():
    draft = Draft(from_="Alice Crêpe <alice@crepes.fr>", to="Bob Hamburger <bob@hamburger.edu>",
                  cc="Carol <carol@crepes.fr>", bcc="secret@hidden.org",
                  subject="Crêpes ce soir ? 🍔", body="Salut Bob,\n\nÇa te dit ?\n.\nA line with a lone dot above.\n",
                  parts=[AttachedData("menu.pdf", "application/pdf", b"%PDF-1.4\n" + bytes(range(256)))])
    composed = build_message(draft, now=NOW)
    [(mail_from, rcpts, data, options)] = await _send(composed)
    assert mail_from == "alice@crepes.fr"
    assert rcpts == ["bob@hamburger.edu", "carol@crepes.fr", "secret@hidden.org"]
    assert b"secret@hidden.org" not in data
    view = parse_message(data)
    assert view.subject == draft.subject
    assert view.text == draft.body  # the dot-stuffed line came back intact
    assert view.part_bytes("2") == draft.parts[0].data
    assert view.message_id == composed.message_id

    # and the reply to what arrived threads onto it
    r = reply(view, identities=["bob@hamburger.edu"])
    r_composed = build_message(r, now=NOW)
    [(_, r_rcpts, r_data, _)] = await _send(r_composed)
    assert r_rcpts == ["alice@crepes.fr"]
    assert parse_message(r_data).in_reply_to == composed.message_id


async def test_smtputf8_address_goes_through():
    composed = build_message(Draft(from_="zoë@hamburger.edu", to="Jörg <jörg@bücher.example>",
                                   subject="Grüße", body="Hallo\n"), now=NOW)
    [(mail_from, rcpts, data, options)] = await _send(composed)
    assert "SMTPUTF8" in options
    assert mail_from == "zoë@hamburger.edu" and rcpts == ["jörg@bücher.example"]
    view = parse_message(data)
    assert view.to[0].addr == "jörg@bücher.example" and view.subject == "Grüße"
