"""The onward SMTP client against real SMTP servers on loopback (aiosmtpd in the test's loop, or
a scripted raw server where we need to see or control the exact bytes)."""

from __future__ import annotations

import asyncio
import datetime
import ssl

import pytest
from aiosmtpd.smtp import SMTP as SMTPServerProtocol

from relay.config import parse_config
from relay.remote import (
    DeliveryResult,
    OutboundMessage,
    RemoteDelivery,
    count_received,
    needs_8bitmime,
    needs_smtputf8,
    result_from_reply,
)
from relay.routing import Router
from tests.dnsserver import DNSServer

MSG = (b"From: alice@crepes.fr\r\nTo: bob@hamburger.edu\r\nSubject: hi\r\n"
       b"Message-ID: <1@crepes.fr>\r\n\r\nHello Bob.\r\n")


# ---- receivers ---------------------------------------------------------------------------

class Receiver:
    """An aiosmtpd server on 127.0.0.1:0 in the running loop that records what arrives."""

    def __init__(self, *, rcpt_replies: dict[str, str] | None = None, mail_reply: str | None = None,
                 tls_context: ssl.SSLContext | None = None, smtputf8: bool = True, host: str = "127.0.0.1",
                 data_size_limit: int = 33554432):
        self.rcpt_replies = rcpt_replies or {}
        self.mail_reply = mail_reply
        self.tls_context = tls_context
        self.smtputf8 = smtputf8
        self.host = host
        self.data_size_limit = data_size_limit
        self.messages: list[dict] = []
        self.connections = 0
        self.protocols: list[SMTPServerProtocol] = []
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> Receiver:
        loop = asyncio.get_running_loop()

        def factory():
            self.connections += 1
            p = SMTPServerProtocol(self, hostname="hamburger.edu", enable_SMTPUTF8=self.smtputf8,
                                   tls_context=self.tls_context, data_size_limit=self.data_size_limit)
            self.protocols.append(p)
            return p

        self.server = await loop.create_server(factory, self.host, port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for p in self.protocols:
                if p.transport is not None:
                    p.transport.close()
            await self.server.wait_closed()
            await asyncio.sleep(0)  # let aiosmtpd's handler tasks see the close
            self.server = None

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "data": envelope.original_content, "options": list(envelope.mail_options),
                              "tls": session.ssl is not None, "peer_helo": session.host_name})
        return "250 2.0.0 Ok: queued"


class ScriptedServer:
    """A raw SMTP server that answers from a script and keeps every byte it receives.

    ``replies`` maps a verb (GREETING, EHLO, MAIL, RCPT, DATA, DOT) to the reply line, or to a
    list of them used in turn (the last one sticks); "DROP" closes the connection instead.
    DATA content is captured exactly as it came over the wire (still dot-stuffed), read line
    by line so that whatever the client pipelined after the final dot stays in the stream.
    ``hold_dot``: before answering a final dot, wait up to that many seconds for the client's
    next command; ``next_before_dot`` records per message whether it came (the client
    pipelined its next envelope with the content, RFC 2920 §3.1)."""

    def __init__(self, hold_dot: float = 0.0, **replies: str | list[str]):
        self.replies = {"GREETING": "220 scripted ESMTP", "EHLO": "250-scripted\r\n250-8BITMIME\r\n250 SIZE 1000000",
                        "MAIL": "250 OK", "RCPT": "250 OK", "DATA": "354 go", "DOT": "250 2.0.0 taken",
                        "RSET": "250 OK", "QUIT": "221 bye", **replies}
        self.wire_data: list[bytes] = []
        self.commands: list[str] = []
        self.hold_dot = hold_dot
        self.next_before_dot: list[bool] = []
        self.connections = 0
        self.server = None
        self.port = 0
        self._tasks: set[asyncio.Task] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self, host: str = "127.0.0.1") -> ScriptedServer:
        self.server = await asyncio.start_server(self._client, host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
        for w in self._writers:
            w.close()
        await self.server.wait_closed()
        await asyncio.sleep(0.01)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections += 1
        self._writers.append(writer)

        def say(line: str | list[str]):
            if isinstance(line, list):
                line = line.pop(0) if len(line) > 1 else line[0]
            if line == "DROP":
                writer.transport.abort()
                raise ConnectionResetError("scripted drop")
            writer.write(line.encode() + b"\r\n")

        held: bytes | None = None
        try:
            say(self.replies["GREETING"])
            if not self.replies["GREETING"].startswith("220"):
                await writer.drain()
                return
            while line := (held if held is not None else await reader.readline()):
                held = None
                cmd = line.decode("utf-8", "replace").rstrip("\r\n")
                self.commands.append(cmd)
                verb = cmd.split(" ", 1)[0].split(":", 1)[0].upper()
                if verb == "DATA":
                    say(self.replies["DATA"])
                    await writer.drain()
                    if not self.replies["DATA"].startswith("354"):
                        continue
                    buf = b""
                    while not (buf.endswith(b"\r\n.\r\n") or buf == b".\r\n"):
                        chunk = await reader.readline()
                        if not chunk:
                            return
                        buf += chunk
                    self.wire_data.append(buf)
                    if self.hold_dot:
                        try:
                            held = await asyncio.wait_for(reader.readline(), self.hold_dot) or None
                        except TimeoutError:
                            held = None
                        self.next_before_dot.append(held is not None)
                    say(self.replies["DOT"])
                elif verb in self.replies:
                    say(self.replies[verb])
                else:
                    say("502 unknown")
                await writer.drain()
                if verb == "QUIT":
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def cfg_for(tmp_path, routes: dict[str, int] | None = None, extra: str = "", dns_port: int | None = None):
    toml = 'hostname = "crepes.fr"\ndomains = ["crepes.fr"]\n' + extra
    if dns_port:
        toml += f'[dns]\nnameservers = ["127.0.0.1:{dns_port}"]\n'
    if routes:
        toml += "[routes]\n" + "".join(f'"{d}" = "127.0.0.1:{p}"\n' for d, p in routes.items())
    return parse_config(toml, None, tmp_path / "data")


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


# ---- pure helpers --------------------------------------------------------------------------

def test_reply_mapping():
    assert result_from_reply(250, "2.0.0 Ok") == DeliveryResult("sent", 250, "2.0.0 Ok", "2.0.0")
    r = result_from_reply(550, "5.1.1 <x@y>: no such\n user")
    assert (r.status, r.enhanced, r.text) == ("failed", "5.1.1", "5.1.1 <x@y>: no such user")
    assert r.diagnostic == "smtp; 550 5.1.1 <x@y>: no such user"
    assert result_from_reply(451, "try later").enhanced == "4.0.0"
    assert result_from_reply(421, "bye", "mx").status == "deferred"
    assert result_from_reply(999, "??").status == "deferred"


def test_received_count_only_looks_at_headers():
    data = b"Received: a\r\nreceived : b\r\nRECEIVED:c\r\nX: y\r\n\r\nReceived: in the body\r\n"
    assert count_received(data) == 3
    assert count_received(b"Received: a\n\nReceived: b\n") == 1


def test_extension_needs():
    assert not needs_smtputf8("a@b.fr", ["c@d.fr"], MSG)
    assert needs_smtputf8("", ["jos\u00e9@d.fr"], MSG)
    assert needs_smtputf8("a@b.fr", ["c@d.fr"], "Subject: caf\u00e9\r\n\r\nx".encode())
    assert not needs_smtputf8("a@b.fr", ["c@d.fr"], "Subject: x\r\n\r\ncaf\u00e9".encode())
    assert needs_8bitmime("Subject: x\r\n\r\ncaf\u00e9".encode())
    assert not needs_8bitmime(MSG)


# ---- delivery against aiosmtpd -------------------------------------------------------------

async def test_delivers_bytes_intact_with_ehlo_hostname(tmp_path, receiver):
    cfg = cfg_for(tmp_path, {"hamburger.edu": receiver.port})
    async with RemoteDelivery(cfg) as rd:
        res = await rd.deliver_message(OutboundMessage("alice@crepes.fr", MSG), ["bob@hamburger.edu"])
    assert res["bob@hamburger.edu"].status == "sent"
    assert res["bob@hamburger.edu"].code == 250
    (m,) = receiver.messages
    assert m["data"] == MSG and m["from"] == "alice@crepes.fr" and m["to"] == ["bob@hamburger.edu"]
    assert m["peer_helo"] == "crepes.fr"
    assert "SIZE=%d" % len(MSG) in m["options"]


async def test_per_recipient_results(tmp_path):
    r = await Receiver(rcpt_replies={"nobody@hamburger.edu": "550 5.1.1 no such user",
                                     "full@hamburger.edu": "452 4.2.2 mailbox full"}).start()
    try:
        cfg = cfg_for(tmp_path, {"hamburger.edu": r.port})
        async with RemoteDelivery(cfg) as rd:
            res = await rd.deliver_message(OutboundMessage("alice@crepes.fr", MSG),
                                           ["bob@hamburger.edu", "nobody@hamburger.edu", "full@hamburger.edu"])
        assert res["bob@hamburger.edu"].status == "sent"
        assert (res["nobody@hamburger.edu"].status, res["nobody@hamburger.edu"].enhanced) == ("failed", "5.1.1")
        assert (res["full@hamburger.edu"].status, res["full@hamburger.edu"].code) == ("deferred", 452)
        assert res["nobody@hamburger.edu"].remote_mta == "127.0.0.1"
        assert [m["to"] for m in r.messages] == [["bob@hamburger.edu"]]
    finally:
        await r.stop()


async def test_all_recipients_refused_sends_no_data(tmp_path):
    r = await Receiver(rcpt_replies={"x@hamburger.edu": "550 5.1.1 unknown"}).start()
    try:
        async with RemoteDelivery(cfg_for(tmp_path, {"hamburger.edu": r.port})) as rd:
            res = await rd.deliver_message(OutboundMessage("alice@crepes.fr", MSG), ["x@hamburger.edu"])
            assert res["x@hamburger.edu"].status == "failed"
            # the connection stays usable for the next message
            res = await rd.deliver_message(OutboundMessage("alice@crepes.fr", MSG), ["bob@hamburger.edu"])
            assert res["bob@hamburger.edu"].status == "sent"
        assert len(r.messages) == 1 and r.connections == 1
    finally:
        await r.stop()


async def test_sender_refused_permanently_fails_everyone(tmp_path):
    r = await Receiver(mail_reply="553 5.7.1 sender rejected").start()
    try:
        async with RemoteDelivery(cfg_for(tmp_path, {"hamburger.edu": r.port})) as rd:
            res = await rd.deliver_message(OutboundMessage("alice@crepes.fr", MSG), ["a@hamburger.edu", "b@hamburger.edu"])
        assert {v.status for v in res.values()} == {"failed"}
        assert res["a@hamburger.edu"].enhanced == "5.7.1"
    finally:
        await r.stop()


async def test_null_sender_is_sent_as_empty_path(tmp_path, receiver):
    async with RemoteDelivery(cfg_for(tmp_path, {"hamburger.edu": receiver.port})) as rd:
        res = await rd.deliver_message(OutboundMessage("", MSG), ["bob@hamburger.edu"])
    assert res["bob@hamburger.edu"].status == "sent"
    assert receiver.messages[0]["from"] == "<>"  # aiosmtpd reports the null path literally


async def test_consecutive_messages_share_one_connection(tmp_path, receiver):
    async with RemoteDelivery(cfg_for(tmp_path, {"hamburger.edu": receiver.port})) as rd:
        msgs = [OutboundMessage("alice@crepes.fr", MSG.replace(b"hi", b"hi %d" % i)) for i in range(20)]
        for m in msgs:  # one after another, as a destination that keeps up sees them
            res = await rd.deliver_message(m, ["bob@hamburger.edu"])
            assert res["bob@hamburger.edu"].status == "sent"
        assert rd.connections_opened == 1
    assert receiver.connections == 1
    assert [m["data"] for m in receiver.messages] == [m.data for m in msgs]


async def test_a_burst_opens_at_most_the_window(tmp_path, receiver):
    cfg = cfg_for(tmp_path, {"hamburger.edu": receiver.port},
                  "[delivery]\ninitial_concurrency = 1\nmax_connections_per_destination = 1\n")
    async with RemoteDelivery(cfg) as rd:
        msgs = [OutboundMessage("alice@crepes.fr", MSG.replace(b"hi", b"hi %d" % i)) for i in range(20)]
        results = await asyncio.gather(*(rd.deliver_message(m, ["bob@hamburger.edu"]) for m in msgs))
        assert all(r["bob@hamburger.edu"].status == "sent" for r in results)
        assert rd.connections_opened == 1
    assert receiver.connections == 1
    assert sorted(m["data"] for m in receiver.messages) == sorted(m.data for m in msgs)


async def test_a_burst_goes_as_one_chain_one_round_trip_each(tmp_path):
    # queued messages follow each other on the open connection: content + final dot + the
    # next envelope in one write (the server sees the next MAIL before it answers the dot)
    s = await ScriptedServer(EHLO="250-scripted\r\n250-PIPELINING\r\n250 SIZE 1000000", hold_dot=1.0).start()
    try:
        cfg = cfg_for(tmp_path, {"hamburger.edu": s.port},
                      "[delivery]\ninitial_concurrency = 1\nmax_connections_per_destination = 1\n")
        async with RemoteDelivery(cfg) as rd:
            msgs = [OutboundMessage("alice@crepes.fr", MSG.replace(b"hi", b"hi %d" % i)) for i in range(10)]
            results = await asyncio.gather(*(rd.deliver_message(m, ["bob@hamburger.edu"]) for m in msgs))
            assert all(r["bob@hamburger.edu"].status == "sent" for r in results)
            assert rd.pipelined == 10
        assert s.connections == 1 and len(s.wire_data) == 10
        assert s.next_before_dot.count(True) >= 8  # all but the first (sent alone) and the last
        assert s.next_before_dot[-1] is False
    finally:
        await s.stop()


async def test_an_accepted_message_is_reported_before_the_next_content_leaves(tmp_path, monkeypatch):
    # the queue runner records a message as done from on_sent; in a chain the next message's
    # content follows the 250 at once, so the report must come before that write (otherwise a
    # crash in between would resend two messages of one connection, not one)
    from relay.smtp_client import SMTPConnection

    events: list[tuple[str, object]] = []
    send = SMTPConnection._send

    async def spy(self, data, timeout):
        events.append(("write", bytes(data)))
        return await send(self, data, timeout)

    monkeypatch.setattr(SMTPConnection, "_send", spy)
    s = await ScriptedServer(EHLO="250-scripted\r\n250-PIPELINING\r\n250 SIZE 1000000", hold_dot=1.0).start()
    try:
        cfg = cfg_for(tmp_path, {"hamburger.edu": s.port},
                      "[delivery]\ninitial_concurrency = 1\nmax_connections_per_destination = 1\n")
        async with RemoteDelivery(cfg) as rd:
            rd.on_sent = lambda qid, rcpts: events.append(("sent", qid))
            msgs = [OutboundMessage("a@crepes.fr", MSG.replace(b"Hello Bob.", b"Hello Bob %d." % i), id=f"Q{i}")
                    for i in range(5)]
            results = await asyncio.gather(*(rd.deliver_message(m, ["bob@hamburger.edu"]) for m in msgs))
        assert all(r["bob@hamburger.edu"].status == "sent" for r in results)
        assert s.next_before_dot.count(True) >= 3  # it was a chain
        for i in range(4):
            reported = events.index(("sent", f"Q{i}"))
            next_content = next(k for k, (kind, data) in enumerate(events)
                                if kind == "write" and b"Hello Bob %d." % (i + 1) in data)
            assert reported < next_content, i
    finally:
        await s.stop()


async def test_a_link_lost_inside_a_chain_loses_nothing(tmp_path):
    # the server takes the first message, then drops the link instead of answering the second
    # one's dot (whose write carried the third envelope): the second's fate is unknown, so
    # it is sent again (SMTP's window); the third was never sent and goes on a new connection
    s = await ScriptedServer(EHLO="250-scripted\r\n250-PIPELINING\r\n250 SIZE 1000000",
                             DOT=["250 2.0.0 taken", "DROP", "250 2.0.0 taken"]).start()
    try:
        cfg = cfg_for(tmp_path, {"hamburger.edu": s.port},
                      "[delivery]\ninitial_concurrency = 1\nmax_connections_per_destination = 1\n")
        async with RemoteDelivery(cfg) as rd:
            msgs = [OutboundMessage("alice@crepes.fr", MSG.replace(b"hi", b"hi %d" % i)) for i in range(3)]
            results = await asyncio.gather(*(rd.deliver_message(m, ["bob@hamburger.edu"]) for m in msgs))
        assert [r["bob@hamburger.edu"].status for r in results] == ["sent"] * 3
        assert s.connections == 2
        got = [w.replace(b"\r\n.\r\n", b"\r\n") for w in s.wire_data]
        # every message arrived; only the one inside the window arrived twice
        assert sorted(set(got)) == sorted({m.data for m in msgs})
        assert len(got) == 4 and got.count(msgs[1].data) == 2
    finally:
        await s.stop()


async def test_messages_per_connection_cap(tmp_path, receiver):
    cfg = cfg_for(tmp_path, {"hamburger.edu": receiver.port},
                  "[delivery]\nmax_messages_per_connection = 5\nmax_connections_per_destination = 1\n")
    async with RemoteDelivery(cfg) as rd:
        await asyncio.gather(*(rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["bob@hamburger.edu"])
                               for _ in range(20)))
    assert receiver.connections == 4 and len(receiver.messages) == 20


async def test_parallel_connections_are_capped(tmp_path, receiver):
    cfg = cfg_for(tmp_path, {"hamburger.edu": receiver.port}, "[delivery]\nmax_connections_per_destination = 3\n")
    async with RemoteDelivery(cfg) as rd:
        await asyncio.gather(*(rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["bob@hamburger.edu"])
                               for _ in range(200)))
    assert 1 < receiver.connections <= 3
    assert len(receiver.messages) == 200


async def test_idle_connection_closed_by_server_is_replaced(tmp_path, receiver):
    async with RemoteDelivery(cfg_for(tmp_path, {"hamburger.edu": receiver.port})) as rd:
        await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["bob@hamburger.edu"])
        for p in receiver.protocols:  # the server hangs up on the idle connection
            p.transport.close()
        await asyncio.sleep(0.05)
        res = await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["bob@hamburger.edu"])
    assert res["bob@hamburger.edu"].status == "sent"
    assert receiver.connections == 2 and len(receiver.messages) == 2


async def test_idle_timeout_quits(tmp_path, receiver):
    async with RemoteDelivery(cfg_for(tmp_path, {"hamburger.edu": receiver.port}), idle_timeout=0.1) as rd:
        await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["bob@hamburger.edu"])
        for _ in range(250):  # the worker says QUIT and ends shortly after 0.1 s idle
            if not rd._tasks:
                break
            await asyncio.sleep(0.02)
        assert not rd._tasks
        await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["bob@hamburger.edu"])
    assert receiver.connections == 2


async def test_connection_refused_is_deferred(tmp_path, port_factory):
    cfg = cfg_for(tmp_path, {"hamburger.edu": port_factory()})
    async with RemoteDelivery(cfg) as rd:
        res = await asyncio.gather(*(rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["bob@hamburger.edu"])
                                     for _ in range(3)))
    for r in res:
        r = r["bob@hamburger.edu"]
        assert r.status == "deferred" and "connect to 127.0.0.1:" in r.text and r.enhanced == "4.4.1"


async def test_loop_detection_fails_without_connecting(tmp_path, receiver):
    cfg = cfg_for(tmp_path, {"hamburger.edu": receiver.port}, "[queue]\nmax_hops = 5\n")
    looped = b"Received: from x by y\r\n" * 6 + MSG
    async with RemoteDelivery(cfg) as rd:
        res = await rd.deliver_message(OutboundMessage("a@crepes.fr", looped), ["bob@hamburger.edu"])
        ok = await rd.deliver_message(OutboundMessage("a@crepes.fr", b"Received: x\r\n" * 5 + MSG), ["bob@hamburger.edu"])
    r = res["bob@hamburger.edu"]
    assert (r.status, r.code, r.enhanced) == ("failed", 554, "5.4.6") and "loop" in r.text
    assert ok["bob@hamburger.edu"].status == "sent"
    assert len(receiver.messages) == 1


async def test_smtputf8_used_when_needed_and_offered(tmp_path, receiver):
    data = "From: jos\u00e9@crepes.fr\r\nSubject: caf\u00e9\r\n\r\nol\u00e9\r\n".encode()
    async with RemoteDelivery(cfg_for(tmp_path, {"hamburger.edu": receiver.port})) as rd:
        res = await rd.deliver_message(OutboundMessage("jos\u00e9@crepes.fr", data), ["b\u00f6b@hamburger.edu"])
    assert res["b\u00f6b@hamburger.edu"].status == "sent"
    (m,) = receiver.messages
    assert m["data"] == data and m["from"] == "jos\u00e9@crepes.fr"
    assert "SMTPUTF8" in m["options"] and "BODY=8BITMIME" in m["options"]


async def test_smtputf8_needed_but_not_offered_fails(tmp_path):
    r = await Receiver(smtputf8=False).start()
    try:
        async with RemoteDelivery(cfg_for(tmp_path, {"hamburger.edu": r.port})) as rd:
            res = await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["b\u00f6b@hamburger.edu"])
        assert (res["b\u00f6b@hamburger.edu"].status, res["b\u00f6b@hamburger.edu"].enhanced) == ("failed", "5.6.7")
        assert not r.messages
    finally:
        await r.stop()


async def test_size_limit_of_the_receiver_is_respected(tmp_path):
    r = await Receiver(data_size_limit=2000).start()
    try:
        async with RemoteDelivery(cfg_for(tmp_path, {"hamburger.edu": r.port})) as rd:
            res = await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG + b"x" * 3000 + b"\r\n"), ["bob@hamburger.edu"])
        assert (res["bob@hamburger.edu"].status, res["bob@hamburger.edu"].enhanced) == ("failed", "5.3.4")
    finally:
        await r.stop()


# ---- the exact bytes on the wire -----------------------------------------------------------

async def test_wire_is_crlf_and_dot_stuffed(tmp_path):
    s = await ScriptedServer().start()
    try:
        body = b"Subject: dots\n\n.hidden line\r\n..two dots\rbare cr\nlast line without newline"
        async with RemoteDelivery(cfg_for(tmp_path, {"hamburger.edu": s.port})) as rd:
            res = await rd.deliver_message(OutboundMessage("a@crepes.fr", body), ["bob@hamburger.edu"])
        assert res["bob@hamburger.edu"].status == "sent"
        (wire,) = s.wire_data
        assert wire == (b"Subject: dots\r\n\r\n..hidden line\r\n...two dots\r\nbare cr\r\n"
                        b"last line without newline\r\n.\r\n")
        assert b"\r\n" not in wire.replace(b"\r\n", b"") and b"\n" not in wire.replace(b"\r\n", b"")
        assert s.commands[0] == "EHLO crepes.fr"
        assert s.commands[-1] == "QUIT"
    finally:
        await s.stop()


async def test_greeting_421_tries_next_then_defers(tmp_path):
    s = await ScriptedServer(GREETING="421 4.3.2 too busy").start()
    try:
        async with RemoteDelivery(cfg_for(tmp_path, {"hamburger.edu": s.port})) as rd:
            res = await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["bob@hamburger.edu"])
        r = res["bob@hamburger.edu"]
        assert (r.status, r.code, r.enhanced) == ("deferred", 421, "4.3.2")
    finally:
        await s.stop()


async def test_data_rejection_applies_to_accepted_recipients(tmp_path):
    s = await ScriptedServer(DOT="554 5.6.0 content rejected").start()
    try:
        async with RemoteDelivery(cfg_for(tmp_path, {"hamburger.edu": s.port})) as rd:
            res = await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["a@hamburger.edu", "b@hamburger.edu"])
        assert {(r.status, r.enhanced) for r in res.values()} == {("failed", "5.6.0")}
    finally:
        await s.stop()


# ---- MX path -------------------------------------------------------------------------------

async def test_first_mx_down_delivers_via_second(tmp_path, receiver):
    zone = ("hamburger.edu. 60 IN MX 10 mx1.hamburger.edu.\n"
            "hamburger.edu. 60 IN MX 20 mx2.hamburger.edu.\n"
            "mx1.hamburger.edu. 60 IN A 127.0.0.2\n"      # nothing listens there
            "mx2.hamburger.edu. 60 IN A 127.0.0.1\n")
    async with DNSServer(zone) as dns:
        cfg = cfg_for(tmp_path, dns_port=dns.port)
        async with RemoteDelivery(cfg, Router(cfg, mx_port=receiver.port)) as rd:
            res = await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["bob@hamburger.edu"])
    assert res["bob@hamburger.edu"].status == "sent"
    assert res["bob@hamburger.edu"].remote_mta == "mx2.hamburger.edu"
    assert len(receiver.messages) == 1


async def test_mail_from_4xx_moves_on_to_the_next_mx(tmp_path):
    busy = await ScriptedServer(MAIL="451 4.3.0 try again").start("127.0.0.1")
    good = await Receiver(host="127.0.0.3").start(busy.port)
    zone = ("hamburger.edu. 60 IN MX 10 mx1.hamburger.edu.\n"
            "hamburger.edu. 60 IN MX 20 mx2.hamburger.edu.\n"
            "mx1.hamburger.edu. 60 IN A 127.0.0.1\n"
            "mx2.hamburger.edu. 60 IN A 127.0.0.3\n")
    try:
        async with DNSServer(zone) as dns:
            cfg = cfg_for(tmp_path, dns_port=dns.port)
            async with RemoteDelivery(cfg, Router(cfg, mx_port=busy.port)) as rd:
                res = await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["bob@hamburger.edu"])
        assert res["bob@hamburger.edu"].status == "sent"
        assert len(good.messages) == 1 and busy.connections == 1
    finally:
        await good.stop()
        await busy.stop()


async def test_routing_errors_become_results(tmp_path):
    zone = "nomail.example. 60 IN MX 0 .\n"
    async with DNSServer(zone, servfail=("broken.example",)) as dns:
        cfg = cfg_for(tmp_path, dns_port=dns.port)
        async with RemoteDelivery(cfg) as rd:
            res = await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG),
                                           ["x@nomail.example", "y@broken.example", "not-an-address"])
    assert (res["x@nomail.example"].status, res["x@nomail.example"].code) == ("failed", 556)
    assert res["y@broken.example"].status == "deferred"
    assert res["not-an-address"].status == "failed"


# ---- TLS -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server_tls(tmp_path_factory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hamburger.edu")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    return ctx


async def test_opportunistic_starttls_with_self_signed_cert(tmp_path, server_tls):
    r = await Receiver(tls_context=server_tls).start()
    try:
        async with RemoteDelivery(cfg_for(tmp_path, {"hamburger.edu": r.port})) as rd:
            res = await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["bob@hamburger.edu"])
        assert res["bob@hamburger.edu"].status == "sent"
        assert r.messages[0]["tls"] is True and r.messages[0]["data"] == MSG
    finally:
        await r.stop()


async def test_require_tls_without_starttls_defers(tmp_path, receiver):
    toml = f'[routes]\n"hamburger.edu" = {{ host = "127.0.0.1", port = {receiver.port}, require_tls = true }}\n'
    cfg = parse_config('hostname = "crepes.fr"\n' + toml, None, tmp_path / "data")
    async with RemoteDelivery(cfg) as rd:
        res = await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["bob@hamburger.edu"])
    r = res["bob@hamburger.edu"]
    assert (r.status, r.enhanced) == ("deferred", "4.7.4") and "STARTTLS" in r.text
    assert not receiver.messages


async def test_require_tls_with_starttls_delivers(tmp_path, server_tls):
    r = await Receiver(tls_context=server_tls).start()
    try:
        toml = f'[routes]\n"hamburger.edu" = {{ host = "127.0.0.1", port = {r.port}, require_tls = true }}\n'
        cfg = parse_config('hostname = "crepes.fr"\n' + toml, None, tmp_path / "data")
        async with RemoteDelivery(cfg) as rd:
            res = await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["bob@hamburger.edu"])
        assert res["bob@hamburger.edu"].status == "sent" and r.messages[0]["tls"]
    finally:
        await r.stop()


class SlowReceiver(Receiver):
    """Takes a while to say 250 after DATA, like a server that fsyncs each message."""

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.02)
        return await super().handle_DATA(server, session, envelope)


async def test_slow_start_opens_more_connections_under_backlog(tmp_path):
    r = await SlowReceiver().start()
    try:
        cfg = cfg_for(tmp_path, {"hamburger.edu": r.port}, "[delivery]\ninitial_concurrency = 1\n")
        async with RemoteDelivery(cfg) as rd:
            async def producer(n: int):  # like the queue runner: several messages in flight at once
                for i in range(n):
                    res = await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["bob@hamburger.edu"])
                    assert res["bob@hamburger.edu"].status == "sent"

            await asyncio.gather(*(producer(12) for _ in range(8)))
            (dest,) = rd.destinations()
            assert dest["window"] == 4 and dest["delivered"] == 96 and dest["state"] == "ok"
        assert len(r.messages) == 96
        assert 1 < r.connections <= 4  # max_connections_per_destination
    finally:
        await r.stop()


# ---- smarthost -----------------------------------------------------------------------------

class AuthReceiver(Receiver):
    def __init__(self, password: str):
        super().__init__()
        self.password = password
        self.logins: list[tuple[str, bool]] = []

    async def start(self, port: int = 0) -> AuthReceiver:
        from aiosmtpd.smtp import AuthResult

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login == b"alice" and auth_data.password == self.password.encode()
            self.logins.append((mechanism, ok))
            return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535

        loop = asyncio.get_running_loop()

        def factory():
            self.connections += 1
            p = SMTPServerProtocol(self, hostname="smarthost.example", authenticator=authenticator,
                                   auth_require_tls=False)
            self.protocols.append(p)
            return p

        self.server = await loop.create_server(factory, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self


def smarthost_cfg(tmp_path, port: int, password: str):
    toml = (f'hostname = "crepes.fr"\n[smarthost]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
            f'user = "alice"\npassword = "{password}"\n')
    return parse_config(toml, None, tmp_path / "data")


async def test_smarthost_with_auth_carries_all_domains(tmp_path, caplog):
    r = await AuthReceiver("s3cret").start()
    try:
        async with RemoteDelivery(smarthost_cfg(tmp_path, r.port, "s3cret")) as rd:
            res = await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG),
                                           ["bob@hamburger.edu", "carol@elsewhere.example"])
        assert {v.status for v in res.values()} == {"sent"}
        assert r.logins and all(ok for _, ok in r.logins)
        assert sorted(rcpt for m in r.messages for rcpt in m["to"]) == ["bob@hamburger.edu", "carol@elsewhere.example"]
        assert r.connections == 1  # both domains share the smarthost's pool
        assert "s3cret" not in caplog.text
    finally:
        await r.stop()


async def test_smarthost_wrong_password_defers(tmp_path):
    r = await AuthReceiver("right").start()
    try:
        async with RemoteDelivery(smarthost_cfg(tmp_path, r.port, "wrong")) as rd:
            res = await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["bob@hamburger.edu"])
        v = res["bob@hamburger.edu"]
        assert (v.status, v.enhanced) == ("deferred", "4.7.0") and "535" in v.text and "wrong" not in v.text
        assert not r.messages
    finally:
        await r.stop()


async def test_broken_opportunistic_tls_falls_back_to_plaintext(tmp_path):
    # The server offers STARTTLS and says 220, but cannot actually speak TLS.
    s = await ScriptedServer(EHLO="250-scripted\r\n250-STARTTLS\r\n250 8BITMIME", STARTTLS="220 go ahead").start()
    try:
        async with RemoteDelivery(cfg_for(tmp_path, {"hamburger.edu": s.port}, "[delivery]\nconnect_timeout = 2\n"),
                                  command_timeout=2) as rd:
            res = await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["bob@hamburger.edu"])
        assert res["bob@hamburger.edu"].status == "sent"
        assert s.connections == 2 and len(s.wire_data) == 1
        assert s.commands.count("STARTTLS") == 1  # not tried again on the plaintext retry
    finally:
        await s.stop()


async def test_aclose_cuts_off_a_hanging_transaction(tmp_path):
    class Stuck(Receiver):
        async def handle_DATA(self, server, session, envelope):
            await asyncio.sleep(30)
            return "250 too late"

    r = await Stuck().start()
    try:
        rd = RemoteDelivery(cfg_for(tmp_path, {"hamburger.edu": r.port}))
        pending = asyncio.ensure_future(rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["bob@hamburger.edu"]))
        queued = asyncio.ensure_future(rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["carol@hamburger.edu"]))
        await asyncio.sleep(0.2)
        started = asyncio.get_running_loop().time()
        await rd.aclose(grace=0.2)
        assert asyncio.get_running_loop().time() - started < 2
        for fut, rcpt in ((pending, "bob@hamburger.edu"), (queued, "carol@hamburger.edu")):
            res = (await fut)[rcpt]
            assert (res.status, res.code) == ("deferred", 421) and "shutting down" in res.text
    finally:
        await r.stop()


# ---- the scheduler: fair share of the relay-wide connection slots --------------------------

async def test_a_large_backlog_does_not_starve_a_small_destination(tmp_path):
    big, small = await SlowReceiver().start(), await Receiver().start()
    try:
        cfg = cfg_for(tmp_path, {"big.example": big.port, "small.example": small.port},
                      "[delivery]\nmax_connections = 1\nmax_messages_per_connection = 5\n")
        async with RemoteDelivery(cfg) as rd:
            backlog = [asyncio.ensure_future(rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), [f"u{i}@big.example"]))
                       for i in range(40)]
            await asyncio.sleep(0.05)  # the only slot is busy with big.example's backlog
            res = await rd.deliver_message(OutboundMessage("a@crepes.fr", MSG), ["v@small.example"])
            assert res["v@small.example"].status == "sent"
            # small.example got the slot when the big one's connection had sent its 5, not after all 40
            assert len(big.messages) <= 10
            assert all(r[k].status == "sent" for r in await asyncio.gather(*backlog) for k in r)
            assert len(big.messages) == 40 and big.connections >= 8  # it gave the slot back every 5
    finally:
        await big.stop()
        await small.stop()
