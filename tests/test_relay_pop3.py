"""The relay's POP3 server with real clients (stdlib poplib, raw sockets) over a real store."""

from __future__ import annotations

import asyncio
import poplib
import socket
import ssl
from base64 import b64encode

import pytest

from relay.config import parse_config
from relay.delivery import deliver_local
from relay.events import ChangeBus
from relay.pop3 import start_pop3_server
from relay.store import MailStore
from relay.tls import server_context
from relay.users import AuthThrottle

ADDR = "bob@example.org"
PASSWORDS = {ADDR: "s3cret pass", "carol@example.org": "carol-pw"}


def message(n: int) -> bytes:
    return (f"From: Alice <alice@x.org>\r\nTo: {ADDR}\r\nSubject: message {n}\r\n"
            f"Message-ID: <{n}@x.org>\r\n\r\nfirst line {n}\r\n.leading dot\r\n..two dots\r\n"
            f"\r\nlast line\r\n").encode()


class Relay:
    def __init__(self, tmp_path, **kw):
        self.mail_dir = tmp_path / "mail"
        self.bus = ChangeBus()
        self.store = MailStore(self.mail_dir, self.bus)
        self.throttle = AuthThrottle(base=0.01, maximum=0.05)
        self.kw = kw
        self.attempts: list[str] = []
        self.server: asyncio.Server | None = None

    async def authenticate(self, user: str, password: str) -> bool:
        self.attempts.append(user)
        return PASSWORDS.get(user.lower()) == password

    async def start(self):
        kw = dict(ssl_context=None, allow_plaintext=True, hostname="mx.example.org")
        kw.update(self.kw)
        self.server = await start_pop3_server("127.0.0.1", 0, store=self.store,
                                              authenticate=self.authenticate,
                                              throttle=self.throttle, **kw)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        self.server.close()
        await self.server.wait_closed()
        self.store.close()

    def deliver(self, n: int) -> bytes:
        data = message(n)
        assert deliver_local(self.mail_dir, f"Q{n}", "alice@x.org", ADDR, data, "mx.test").status == "sent"
        return f"Return-Path: <alice@x.org>\r\nDelivered-To: {ADDR}\r\n".encode() + data

    def client(self, login: bool = True) -> poplib.POP3:
        c = poplib.POP3("127.0.0.1", self.port, timeout=10)
        if login:
            c.user(ADDR)
            c.pass_(PASSWORDS[ADDR])
        return c


@pytest.fixture
async def relay(tmp_path):
    r = await Relay(tmp_path).start()
    yield r
    await r.stop()


def tls_context(tmp_path) -> ssl.SSLContext:
    cfg = parse_config('hostname = "mx.example.org"\ndomains = ["example.org"]\n', None, tmp_path / "data")
    return server_context(cfg)


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def joined(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\r\n" for line in lines)


async def test_session_stat_list_uidl_retr_top_are_exact(relay):
    raw = [relay.deliver(i) for i in range(3)]

    def session():
        c = relay.client()
        try:
            assert c.getwelcome() == b"+OK mx.example.org POP3 ready"
            assert c.stat() == (3, sum(map(len, raw)))
            resp, listing, _ = c.list()
            assert [tuple(map(int, x.split())) for x in listing] == [(i + 1, len(r)) for i, r in enumerate(raw)]
            resp, uidls, _ = c.uidl()
            resp, lines, octets = c.retr(2)
            assert resp == f"+OK {len(raw[1])} octets".encode()
            assert joined(lines) == raw[1]          # poplib undoes the dot-stuffing
            resp, head, _ = c.top(3, 1)
            header = raw[2].split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            assert joined(head) == header + b"first line 2\r\n"
            return uidls
        finally:
            c.quit()

    uidls = await asyncio.to_thread(session)
    u = relay.store.user(ADDR)
    st = u.state("INBOX")
    assert [x.split()[1].decode() for x in uidls] == [f"{uid:08X}{st.uidvalidity:08X}" for uid in st.uids]
    # RETR marked message 2 \Seen for IMAP; TOP did not touch message 3
    flags = {r.uid: r.flags for r in u.records("INBOX")}
    assert flags == {1: frozenset(), 2: {"\\Seen"}, 3: frozenset()}


async def test_uidl_stable_across_flag_changes_and_sessions(relay):
    for i in range(3):
        relay.deliver(i)

    def uidl():
        c = relay.client()
        try:
            return c.uidl()[1]
        finally:
            c.quit()

    first = await asyncio.to_thread(uidl)
    relay.store.user(ADDR).set_flags("INBOX", [1, 3], "add", ["\\Flagged", "\\Seen", "Work"])
    assert await asyncio.to_thread(uidl) == first


async def test_deletions_apply_only_at_quit(relay):
    raw = [relay.deliver(i) for i in range(4)]

    def dele_then_drop():
        c = relay.client()
        c.dele(1)
        c.dele(2)
        assert c.stat()[0] == 2
        c.close()     # connection dropped without QUIT: nothing is deleted

    await asyncio.to_thread(dele_then_drop)
    await asyncio.sleep(0.05)
    assert len(relay.store.user(ADDR).state("INBOX").uids) == 4

    def dele_rset_dele_quit():
        c = relay.client()
        c.dele(1)
        c.rset()
        assert c.stat()[0] == 4
        c.dele(2)
        c.dele(4)
        assert c.quit().startswith(b"+OK")

    await asyncio.to_thread(dele_rset_dele_quit)
    u = relay.store.user(ADDR)
    assert u.state("INBOX").uids == [1, 3]
    assert [u.read("INBOX", 1), u.read("INBOX", 3)] == [raw[0], raw[2]]

    def again():
        c = relay.client()
        try:
            return c.stat()
        finally:
            c.quit()

    assert await asyncio.to_thread(again) == (2, len(raw[0]) + len(raw[2]))


async def test_one_session_per_maildrop(relay):
    relay.deliver(1)

    def locked():
        c1 = relay.client()
        c2 = relay.client(login=False)
        try:
            c2.user(ADDR)
            with pytest.raises(poplib.error_proto) as e:
                c2.pass_(PASSWORDS[ADDR])
            assert b"[IN-USE]" in e.value.args[0]
            c3 = poplib.POP3("127.0.0.1", relay.port, timeout=10)   # other users are fine
            c3.user("carol@example.org")
            c3.pass_(PASSWORDS["carol@example.org"])
            assert c3.stat() == (0, 0)
            c3.quit()
        finally:
            c1.quit()
            c2.quit()
        c4 = relay.client()            # released at QUIT
        assert c4.stat()[0] == 1
        c4.quit()

    await asyncio.to_thread(locked)


async def test_wrong_password_is_refused_and_throttled(relay):
    def bad():
        c = relay.client(login=False)
        try:
            c.user(ADDR)
            with pytest.raises(poplib.error_proto) as e:
                c.pass_("wrong")
            assert e.value.args[0].startswith(b"-ERR [AUTH]")
            c.user(ADDR)
            assert c.pass_(PASSWORDS[ADDR]).startswith(b"+OK")
        finally:
            c.quit()

    await asyncio.to_thread(bad)
    assert relay.attempts == [ADDR, ADDR]
    assert relay.throttle.delay("127.0.0.1") == 0.0      # success cleared the failure


async def test_plaintext_refused_until_stls(tmp_path):
    relay = await Relay(tmp_path, ssl_context=tls_context(tmp_path), allow_plaintext=False).start()
    try:
        relay.deliver(1)

        def session():
            c = poplib.POP3("127.0.0.1", relay.port, timeout=10)
            try:
                caps = c.capa()
                assert "STLS" in caps and "USER" not in caps
                with pytest.raises(poplib.error_proto) as e:
                    c.user(ADDR)
                assert b"[AUTH]" in e.value.args[0]
                c.stls(context=client_tls())
                caps = c.capa()
                assert "USER" in caps and "STLS" not in caps
                c.user(ADDR)
                c.pass_(PASSWORDS[ADDR])
                return c.retr(1)[1]
            finally:
                c.quit()

        lines = await asyncio.to_thread(session)
        assert joined(lines).endswith(b"last line\r\n")
    finally:
        await relay.stop()


async def test_raw_wire_stuffing_auth_plain_and_errors(relay):
    relay.deliver(5)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)

    async def cmd(line: bytes, multi: bool = False) -> bytes:
        writer.write(line + b"\r\n")
        await writer.drain()
        if not multi:
            return await reader.readline()
        out = b""
        while not out.endswith(b"\r\n.\r\n"):
            out += await reader.readline()
        return out

    try:
        assert (await reader.readline()).startswith(b"+OK")
        assert (await cmd(b"BOGUS")).startswith(b"-ERR unknown command")
        assert (await cmd(b"X" * 5000)).startswith(b"-ERR line too long")
        blob = b64encode(f"\x00{ADDR}\x00{PASSWORDS[ADDR]}".encode())
        assert (await cmd(b"AUTH PLAIN " + blob)).startswith(b"+OK")
        wire = await cmd(b"RETR 1", multi=True)
        assert b"\r\n..leading dot\r\n...two dots\r\n\r\nlast line\r\n.\r\n" in wire
        assert b"\n" not in wire.replace(b"\r\n", b"")
        assert (await cmd(b"NOOP")) == b"+OK\r\n"
        # pipelining (RFC 2449): several commands in one write, answers in order
        writer.write(b"STAT\r\nLIST 1\r\nUIDL 1\r\nNOOP\r\n")
        await writer.drain()
        answers = [await reader.readline() for _ in range(4)]
        assert [a[:3] for a in answers] == [b"+OK"] * 4
        assert answers[0].startswith(b"+OK 1 ") and answers[1].startswith(b"+OK 1 ")
        assert (await cmd(b"QUIT")).startswith(b"+OK")
        assert await reader.read() == b""
    finally:
        writer.close()
        await writer.wait_closed()


async def test_message_expunged_over_imap_during_session(relay):
    relay.deliver(1)
    relay.deliver(2)

    def session():
        c = relay.client()
        try:
            u = relay.store.user(ADDR)
            u.expunge("INBOX", [1], force=True)          # another client removes it meanwhile
            with pytest.raises(poplib.error_proto) as e:
                c.retr(1)
            assert b"[SYS/TEMP]" in e.value.args[0]
            c.dele(1)
            c.dele(2)
        finally:
            assert c.quit().startswith(b"+OK")

    await asyncio.to_thread(session)
    assert relay.store.user(ADDR).state("INBOX").uids == []


async def test_idle_timeout_closes_the_session(tmp_path):
    relay = await Relay(tmp_path, idle_timeout=0.2).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        try:
            assert (await reader.readline()).startswith(b"+OK")
            assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"-ERR autologout")
            assert await reader.read() == b""
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        await relay.stop()


async def test_many_messages_list_and_retr_all(relay):
    u = relay.store.user(ADDR)
    bodies = [message(i) * (1 + i % 5) for i in range(60)]
    for b in bodies:
        u.append("INBOX", b)

    def session():
        c = relay.client()
        try:
            assert c.stat() == (60, sum(map(len, bodies)))
            return [joined(c.retr(i)[1]) for i in range(1, 61)]
        finally:
            c.quit()

    assert await asyncio.to_thread(session) == bodies
    assert all("\\Seen" in r.flags for r in u.records("INBOX"))


def test_no_listener_left_behind(tmp_path):
    async def run():
        r = await Relay(tmp_path).start()
        port = r.port
        await r.stop()
        return port

    port = asyncio.run(run())
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


async def test_auth_plain_with_continuation(relay):
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        await reader.readline()
        writer.write(b"AUTH PLAIN\r\n")
        await writer.drain()
        assert await reader.readline() == b"+ \r\n"
        blob = b64encode(f"\x00{ADDR}\x00{PASSWORDS[ADDR]}".encode())
        writer.write(blob + b"\r\nSTAT\r\nQUIT\r\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"+OK bob@example.org has 0 messages")
        assert await reader.readline() == b"+OK 0 0\r\n"
        assert (await reader.readline()).startswith(b"+OK")
    finally:
        writer.close()
        await writer.wait_closed()


async def test_server_close_ends_open_sessions_without_deleting(tmp_path):
    relay = await Relay(tmp_path).start()
    relay.deliver(1)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        await reader.readline()
        writer.write(f"USER {ADDR}\r\nPASS {PASSWORDS[ADDR]}\r\nDELE 1\r\n".encode())
        await writer.drain()
        for _ in range(3):
            assert (await reader.readline()).startswith(b"+OK")
        relay.server.close()
        assert (await reader.readline()).startswith(b"-ERR [SYS/TEMP] server shutting down")
        assert await reader.read() == b""
        await relay.server.wait_closed()
        for _ in range(50):
            if not relay.server.pop3_sessions:
                break
            await asyncio.sleep(0.01)
        assert relay.server.pop3_sessions == set()
        assert relay.store.user(ADDR).state("INBOX").uids == [1]
    finally:
        writer.close()
        await writer.wait_closed()
        relay.store.close()


async def test_plaintext_injected_after_stls_is_ignored(tmp_path):
    relay = await Relay(tmp_path, ssl_context=tls_context(tmp_path), allow_plaintext=False).start()
    try:
        def attack():
            with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as raw:
                f = raw.makefile("rb")
                assert f.readline().startswith(b"+OK")
                raw.sendall(b"STLS\r\nUSER injected@example.org\r\n")
                assert f.readline().startswith(b"+OK begin TLS")
                f.close()
                with client_tls().wrap_socket(raw, server_hostname="mx.example.org") as tls:
                    tf = tls.makefile("rb")
                    tls.sendall(f"PASS {PASSWORDS[ADDR]}\r\n".encode())
                    answer = tf.readline()
                    tls.sendall(b"QUIT\r\n")
                    tf.readline()
                    tf.close()
                    return answer

        assert (await asyncio.to_thread(attack)) == b"-ERR send USER first\r\n"
        assert relay.attempts == []
    finally:
        await relay.stop()


def _non_loopback_ip() -> str | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.254", 9))       # no packet is sent: this only picks a route
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") else ip


async def test_plaintext_login_never_allowed_from_other_hosts(tmp_path):
    ip = _non_loopback_ip()
    if ip is None:
        pytest.skip("no non-loopback IPv4 address on this machine")
    relay = Relay(tmp_path, allow_plaintext=True)
    relay.server = await start_pop3_server(ip, 0, store=relay.store, authenticate=relay.authenticate,
                                           ssl_context=None, allow_plaintext=True, hostname="mx")
    port = relay.server.sockets[0].getsockname()[1]
    try:
        def session():
            c = poplib.POP3(ip, port, timeout=10)
            try:
                assert "USER" not in c.capa()
                with pytest.raises(poplib.error_proto) as e:
                    c.user(ADDR)
                assert b"[AUTH]" in e.value.args[0]
            finally:
                c.quit()

        await asyncio.to_thread(session)
        assert relay.attempts == []
    finally:
        await relay.stop()
