"""Dovecot as the oracle for the relay's IMAP server: run one client script (a plain function
of port and user, called in a thread) against a fresh Dovecot user and against the relay's IMAP
server over a fresh MailStore, and hand back both answers for the test to compare.

Usage::

    from tests.peers import dovecot  # noqa: F401  (fixture)
    from tests.dovecot_oracle import answers_from_both, command

    def _answers(port, user):        # log in as ``user`` / "pw", drive the server, return answers
        ...

    async def test_x(dovecot, tmp_path):
        theirs, ours = await answers_from_both(dovecot, tmp_path, _answers)
        assert ours == theirs
"""

from __future__ import annotations

import asyncio
import imaplib
from collections.abc import Callable
from typing import TypeVar

from relay.events import ChangeBus
from relay.imap.server import start_imap_server, stop_imap_server
from relay.store import MailStore

#: The login on both sides: Dovecot's user, the relay's user, and their one password.
DOVECOT_USER, RELAY_USER, PASSWORD = "bob", "bob@example.org", "pw"

T = TypeVar("T")


async def answers_from_both(dovecot, tmp_path, answers: Callable[[int, str], T], *,
                            bus: bool = False) -> tuple[T, T]:
    """(Dovecot's, the relay's) result of ``answers(port, user)``; Dovecot runs first. ``bus``:
    the relay's store and server share a ChangeBus (NOTIFY, IDLE across sessions)."""
    dovecot.add_user(DOVECOT_USER, PASSWORD)
    theirs = await asyncio.to_thread(answers, dovecot.imap_port, DOVECOT_USER)

    async def auth(user, password):
        return password == PASSWORD

    change_bus = ChangeBus() if bus else None
    with MailStore(tmp_path / "mail", change_bus) as store:
        store.user(RELAY_USER)
        server = await start_imap_server("127.0.0.1", 0, store=store.user, authenticate=auth,
                                         bus=change_bus, ssl_context=None, allow_plaintext="loopback",
                                         hostname="test")
        try:
            ours = await asyncio.to_thread(answers, server.sockets[0].getsockname()[1], RELAY_USER)
        finally:
            await stop_imap_server(server)
    return theirs, ours


def command(c: imaplib.IMAP4, cmd: str) -> list[bytes]:
    """Send ``cmd`` under a new tag, assert the tagged answer is OK, return every line before it
    (CRLF stripped) with the tag written as TAG: imaplib picks a random tag prefix per
    connection, so an echoed tag (ESEARCH's ``(TAG "…")``) could never compare equal as sent."""
    tag = c._new_tag()
    c.send(tag + b" " + cmd.encode() + b"\r\n")
    lines = []
    while True:
        line = c.readline()
        if line.startswith(tag + b" "):
            assert line.split()[1] == b"OK", (cmd, line)
            return lines
        lines.append(line.rstrip(b"\r\n").replace(tag, b"TAG"))
