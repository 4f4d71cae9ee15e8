"""relay/smtp_client.py: the pure reply/EHLO/data helpers on bytes, then PIPELINING and the
RFC 5321 timeouts against real servers on loopback (a scripted raw server that keeps every
byte, and aiosmtpd)."""

from __future__ import annotations

import asyncio
import time

import pytest

from relay.smtp_client import (
    Envelope,
    LinkError,
    ReplyError,
    SMTPConnection,
    Timeouts,
    command,
    encode_data,
    parse_ehlo,
    parse_reply_line,
)
from tests.test_relay_remote import Receiver, ScriptedServer

PIPE_EHLO = "250-scripted\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 1000000"


# ---- pure ----------------------------------------------------------------------------------

def test_parse_reply_line():
    assert parse_reply_line(b"250-SIZE 1000\r\n") == (250, True, "SIZE 1000")
    assert parse_reply_line(b"250 ok\r\n") == (250, False, "ok")
    assert parse_reply_line(b"354\r\n") == (354, False, "")
    for bad in (b"hello\r\n", b"25\r\n", b"2500 x\r\n", b"099 x\r\n", b"700 x\r\n", b"250x\r\n"):
        with pytest.raises(ValueError):
            parse_reply_line(bad)


def test_parse_ehlo():
    ext = parse_ehlo("mx.example greets you\nPIPELINING\nSIZE 1000\nauth PLAIN LOGIN\n8BITMIME")
    assert ext == {"pipelining": "", "size": "1000", "auth": "PLAIN LOGIN", "8bitmime": ""}


def test_encode_data_normalises_stuffs_and_terminates():
    assert encode_data(b"a\nb\r\n.c\r..d\r\n") == b"a\r\nb\r\n..c\r\n...d\r\n.\r\n"
    assert encode_data(b"no final newline") == b"no final newline\r\n.\r\n"
    assert encode_data(b"") == b".\r\n"


def test_command_refuses_injection():
    assert command("MAIL", "FROM:<a@b>", ["SIZE=10"]) == b"MAIL FROM:<a@b> SIZE=10\r\n"
    assert command("RSET") == b"RSET\r\n"
    with pytest.raises(ValueError):
        command("RCPT", "TO:<a@b>\r\nDATA")
    with pytest.raises(UnicodeEncodeError):
        command("RCPT", "TO:<jürgen@b>")  # ascii unless the transaction is SMTPUTF8
    assert command("RCPT", "TO:<jürgen@b>", encoding="utf-8") == "RCPT TO:<jürgen@b>\r\n".encode()


# ---- on the wire -----------------------------------------------------------------------------

async def connected(server, **timeouts) -> SMTPConnection:
    conn = SMTPConnection("crepes.fr", Timeouts(**{"connect": 2, "greeting": 2, "command": 2, "data_init": 2,
                                                   "data_block": 2, "data_done": 2, **timeouts}))
    await conn.connect("127.0.0.1", server.port)
    await conn.ehlo()
    return conn


async def test_pipelined_transaction_sends_the_group_in_one_go():
    s = await ScriptedServer(EHLO=PIPE_EHLO).start()
    try:
        conn = await connected(s)
        tx = await conn.transaction("a@crepes.fr", ["b@h.edu", "c@h.edu"], b"Subject: x\r\n\r\nhi\r\n")
        assert tx.mail.code == 250 and [r.code for r in tx.rcpts] == [250, 250] and tx.data.code == 250
        assert conn.pipelined == 1
        assert s.commands[1:5] == ["MAIL FROM:<a@crepes.fr>", "RCPT TO:<b@h.edu>", "RCPT TO:<c@h.edu>", "DATA"]
        assert s.wire_data == [b"Subject: x\r\n\r\nhi\r\n.\r\n"]
        await conn.quit()
    finally:
        await s.stop()


async def test_pipelined_all_recipients_refused_ends_with_a_lone_dot():
    # a server that (wrongly, but RFC 2920 plans for it) says 354 although no RCPT was accepted
    s = await ScriptedServer(EHLO=PIPE_EHLO, RCPT="550 5.1.1 no such user").start()
    try:
        conn = await connected(s)
        tx = await conn.transaction("a@crepes.fr", ["x@h.edu"], b"secret body\r\n")
        assert [r.code for r in tx.rcpts] == [550] and tx.data is None
        assert s.wire_data == [b".\r\n"]  # the message itself never went out
        await conn.rset()  # and the connection is still in step
        await conn.quit()
    finally:
        await s.stop()


async def chain(conn: SMTPConnection, envs: list[Envelope]) -> list[tuple[Envelope, object]]:
    """Run ``envs`` as one chain; (envelope, transaction) in the order ``done`` was called."""
    later, got = list(envs[1:]), []
    await conn.transactions(envs[0], lambda: later.pop(0) if later else None, lambda e, tx: got.append((e, tx)))
    return got


async def test_a_chain_sends_the_next_envelope_with_the_content():
    # the server answers a final dot only once the next command is there (or after 1 s):
    # a client that waited for the 250 before its next MAIL would show False here
    s = await ScriptedServer(EHLO=PIPE_EHLO, hold_dot=1.0).start()
    try:
        conn = await connected(s)
        envs = [Envelope("a@crepes.fr", [f"b{i}@h.edu"], f"Subject: {i}\r\n\r\nbody {i}\r\n".encode()) for i in range(3)]
        got = await chain(conn, envs)
        assert [e for e, _ in got] == envs and all(tx.data.code == 250 for _, tx in got)
        assert s.next_before_dot == [True, True, False]
        assert s.wire_data == [f"Subject: {i}\r\n\r\nbody {i}\r\n.\r\n".encode() for i in range(3)]
        assert [c for c in s.commands if c.startswith("MAIL")] == ["MAIL FROM:<a@crepes.fr>"] * 3
        assert conn.pipelined == 3
        await conn.quit()
    finally:
        await s.stop()


async def test_a_chain_resets_after_a_message_that_could_not_go():
    # the second message's only recipient is refused: a lone dot, then RSET pipelined with
    # the third envelope; the third still goes through on the same connection
    s = await ScriptedServer(EHLO=PIPE_EHLO, RCPT=["250 OK", "550 5.1.1 no such user", "250 OK"]).start()
    try:
        conn = await connected(s)
        envs = [Envelope("a@crepes.fr", [f"b{i}@h.edu"], f"body {i}\r\n".encode()) for i in range(3)]
        got = await chain(conn, envs)
        assert [e for e, _ in got] == envs
        (_, t0), (_, t1), (_, t2) = got
        assert t0.data.code == 250 and t1.rcpts[0].code == 550 and t1.data is None and t2.data.code == 250
        assert s.wire_data == [b"body 0\r\n.\r\n", b".\r\n", b"body 2\r\n.\r\n"]
        third = s.commands.index("RCPT TO:<b2@h.edu>")
        assert s.commands[third - 2:third] == ["RSET", "MAIL FROM:<a@crepes.fr>"]
        assert s.connections == 1
        await conn.quit()
    finally:
        await s.stop()


async def test_without_pipelining_commands_go_one_by_one_and_stop_early():
    s = await ScriptedServer(RCPT="550 no").start()
    try:
        conn = await connected(s)
        tx = await conn.transaction("a@crepes.fr", ["x@h.edu"], b"body\r\n")
        assert conn.pipelined == 0 and tx.data is None and "DATA" not in s.commands
        await conn.quit()
    finally:
        await s.stop()


async def test_against_aiosmtpd_and_our_own_helo_fallback():
    r = await Receiver().start()
    try:
        conn = await connected(r)
        tx = await conn.transaction("a@crepes.fr", ["b@hamburger.edu"], b"Subject: hi\r\n\r\n.dot\r\n")
        assert tx.data.code == 250 and r.messages[0]["data"] == b"Subject: hi\r\n\r\n.dot\r\n"
        await conn.quit()
    finally:
        await r.stop()
    old = await ScriptedServer(EHLO="502 what", HELO="250 old server").start()
    try:
        conn = await connected(old)
        assert conn.extensions == {} and old.commands[:2] == ["EHLO crepes.fr", "HELO crepes.fr"]
        await conn.quit()
    finally:
        await old.stop()


async def test_greeting_timeout_is_its_own():
    writers = []

    async def tarpit(reader, writer):  # accepts, never says 220
        writers.append(writer)
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(tarpit, "127.0.0.1", 0)
    try:
        conn = SMTPConnection("crepes.fr", Timeouts(connect=5, greeting=0.3))
        started = time.monotonic()
        with pytest.raises(LinkError, match="timed out after 0.3s waiting for the greeting"):
            await conn.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        assert time.monotonic() - started < 2
        conn.abort()
    finally:
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()


async def test_slow_final_reply_hits_the_data_done_timeout():
    class Slow(Receiver):
        async def handle_DATA(self, server, session, envelope):
            await asyncio.sleep(5)
            return "250 late"

    r = await Slow().start()
    try:
        conn = await connected(r, data_done=0.3)
        with pytest.raises(LinkError, match="after the message"):
            await conn.transaction("a@crepes.fr", ["b@hamburger.edu"], b"x\r\n")
        conn.abort()
    finally:
        await r.stop()


async def test_refused_greeting_is_a_reply_error():
    s = await ScriptedServer(GREETING="554 go away").start()
    try:
        conn = SMTPConnection("crepes.fr", Timeouts(connect=2, greeting=2))
        with pytest.raises(ReplyError) as e:
            await conn.connect("127.0.0.1", s.port)
        assert e.value.reply.code == 554
        await conn.close()
    finally:
        await s.stop()


async def test_pipelined_delivery_into_a_real_postfix(tmp_path):
    """The onward scheduler against Postfix (which offers PIPELINING): bytes intact, one
    connection, every transaction pipelined."""
    from relay.config import parse_config
    from relay.remote import OutboundMessage, RemoteDelivery
    from tests.postfix_peer import Postfix, postfix_available

    if not postfix_available():
        pytest.skip("postfix not installed")
    pf = Postfix()
    try:
        try:
            await asyncio.to_thread(pf.start)
        except (RuntimeError, OSError, KeyError) as e:
            pytest.skip(f"postfix cannot run here: {e}")
        cfg = parse_config(f'hostname = "crepes.fr"\n[routes]\n"example.org" = "127.0.0.1:{pf.port}"\n', None,
                           tmp_path / "data")
        msgs = [(f"From: a@crepes.fr\r\nTo: bob@example.org\r\nSubject: pipelined {i}\r\nMessage-ID: <{i}@crepes.fr>\r\n"
                 f"Date: Fri, 4 Dec 2026 08:00:00 +0000\r\n\r\n.dot {i}\r\nbody\r\n").encode() for i in range(5)]
        async with RemoteDelivery(cfg) as rd:
            for m in msgs:
                res = await rd.deliver_message(OutboundMessage("a@crepes.fr", m), ["bob@example.org", "carol@example.org"])
                assert {r.status for r in res.values()} == {"sent"} and all(r.code == 250 for r in res.values())
            assert rd.connections_opened == 1 and rd.pipelined == 5
        got = await asyncio.to_thread(pf.wait_for, "bob", 5)
        # Postfix stores with LF line ends, after its own Return-Path/Received lines
        assert sorted(g[g.index(b"From: a@crepes.fr"):] for g in got) == sorted(m.replace(b"\r\n", b"\n") for m in msgs)
    finally:
        await asyncio.to_thread(pf.cleanup)
