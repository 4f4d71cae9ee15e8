"""Dovecot is the oracle: the same POP3 script against Dovecot's pop3 and ours, over the same
messages, must give the same answers (+OK/-ERR per command, and byte-identical multi-line data
for LIST, RETR and TOP). Skipped when Dovecot is not installed."""

from __future__ import annotations

import asyncio
import socket

from relay.events import ChangeBus
from relay.pop3 import start_pop3_server
from relay.store import MailStore
from tests.peers import dovecot, make_message  # noqa: F401  (fixture)

MESSAGES = [
    make_message(1),
    make_message(2, body=".starts with a dot\n..two dots\n.\nend\n"),
    make_message(3, body="no final newline"),
    (b"From: a@x.org\r\nSubject: multipart\r\nMIME-Version: 1.0\r\n"
     b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\n"
     b"part one\r\n.dot\r\n--zz--\r\n"),
    b"Subject: empty body\r\n\r\n",
    b"Subject: written by a tool with LF line ends\n\nline one\n.dot\nline three\n",
]

SCRIPT = ["CAPA", "STAT", "LIST", "LIST 2", "LIST 9", "LIST x", "UIDL 9", "RETR 1", "RETR 2", "RETR 3",
          "RETR 4", "RETR 5", "RETR 6", "LIST 6", "TOP 6 1", "TOP 1 0", "TOP 2 2", "TOP 3 100", "TOP 4 1", "TOP 5 3", "TOP 9 1",
          "DELE 1", "DELE 1", "RETR 1", "TOP 1 0", "LIST 1", "STAT", "LIST", "RSET", "STAT", "DELE 2",
          "DELE 5", "NOOP", "QUIT"]
AFTER = ["STAT", "LIST", "RETR 1", "RETR 2", "UIDL", "QUIT"]
MULTI = {"CAPA", "LIST", "UIDL", "RETR", "TOP"}


def run_script(port: int, user: str, password: str, script: list[str]) -> list[tuple[str, bytes]]:
    """(status, multi-line body) per command; single-line answers keep only the status."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"+OK")
        for cmd in [f"USER {user}", f"PASS {password}"] + script:
            s.sendall(cmd.encode() + b"\r\n")
            first = f.readline()
            status = first.split(b" ", 1)[0].strip().decode()
            body = b""
            verb, _, arg = cmd.partition(" ")
            if status == "+OK" and verb in MULTI and (verb not in ("LIST", "UIDL") or not arg):
                while (line := f.readline()) != b".\r\n":
                    assert line, "connection closed inside a multi-line reply"
                    body += line
            out.append((cmd, status, body))
        f.close()
    return out


async def test_pop3_answers_match_dovecot(dovecot, tmp_path):
    dovecot.add_user("bob", "pw")
    for m in MESSAGES:
        dovecot.deliver("bob", m)
    store = MailStore(tmp_path / "mail", ChangeBus())
    u = store.user("bob@example.org")
    for i, m in enumerate(MESSAGES):
        (u.root / "new" / f"100{i}.M1P1.host").write_bytes(m)

    async def auth(user, pw):
        return (user, pw) == ("bob@example.org", "pw")

    server = await start_pop3_server("127.0.0.1", 0, store=store, authenticate=auth,
                                     ssl_context=None, allow_plaintext=True, hostname="mx.test")
    port = server.sockets[0].getsockname()[1]
    try:
        ours = await asyncio.to_thread(run_script, port, "bob@example.org", "pw", SCRIPT)
        theirs = await asyncio.to_thread(run_script, dovecot.pop3_port, "bob", "pw", SCRIPT)
        for (cmd, s1, b1), (_, s2, b2) in zip(ours, theirs):
            if cmd == "CAPA":
                caps1, caps2 = set(b1.split(b"\r\n")), set(b2.split(b"\r\n"))
                assert {b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING"} <= caps1 & caps2
                continue
            assert (cmd, s1) == (cmd, s2)
            assert (cmd, b1) == (cmd, b2)
        ours = await asyncio.to_thread(run_script, port, "bob@example.org", "pw", AFTER)
        theirs = await asyncio.to_thread(run_script, dovecot.pop3_port, "bob", "pw", AFTER)
        assert [x for x in ours[2:] if x[0] != "UIDL"] == [x for x in theirs[2:] if x[0] != "UIDL"]
        # UIDLs: same format (%08Xu%08Xv), same UIDs; UIDVALIDITY is each server's own
        [uidl1] = [x[2] for x in ours if x[0] == "UIDL"]
        [uidl2] = [x[2] for x in theirs if x[0] == "UIDL"]
        u1 = [line.split()[1][:8] for line in uidl1.splitlines()]
        u2 = [line.split()[1][:8] for line in uidl2.splitlines()]
        assert u1 == u2 == [b"00000001", b"00000003", b"00000004", b"00000006"]
    finally:
        server.close()
        await server.wait_closed()
        store.close()
