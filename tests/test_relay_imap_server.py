"""The relay's IMAP server on 127.0.0.1 port 0 driven by real clients (stdlib imaplib and
imapclient, in worker threads) in the test's own event loop."""

from __future__ import annotations

import asyncio
import imaplib
import socket
import ssl
import time

import pytest
from imapclient import IMAPClient

from relay.events import ChangeBus
from relay.imap.server import start_imap_server, stop_imap_server
from tests.test_relay_imap_session import MemoryMailbox, msg


class Env:
    def __init__(self, server, mb, bus):
        self.server, self.mb, self.bus = server, mb, bus
        self.port = server.sockets[0].getsockname()[1]


@pytest.fixture
async def env():
    mb = MemoryMailbox()
    for i in range(1, 4):
        mb.append("INBOX", msg(i), [], None)
    bus = ChangeBus()

    async def auth(user, password):
        return (user, password) == ("bob", "secret")

    server = await start_imap_server("127.0.0.1", 0, store=lambda user: mb, authenticate=auth, bus=bus,
                                     ssl_context=None, allow_plaintext="loopback", hostname="hamburger.edu")
    yield Env(server, mb, bus)
    await stop_imap_server(server)


def run(fn):
    return asyncio.to_thread(fn)


async def test_imaplib_session(env):
    def client():
        with imaplib.IMAP4("127.0.0.1", env.port) as m:
            assert "IMAP4REV1" in m.capabilities and "AUTH=PLAIN" in m.capabilities
            typ, _ = m.login("bob", "secret")
            assert typ == "OK"
            typ, data = m.select("INBOX")
            assert (typ, data) == ("OK", [b"3"])
            typ, data = m.search(None, "ALL")
            assert data == [b"1 2 3"]
            typ, data = m.fetch("2", "(RFC822)")
            assert data[0][1] == msg(2)
            typ, data = m.uid("SEARCH", None, "SEEN")
            assert data == [b"2"]
            typ, data = m.store("1", "+FLAGS", "(\\Deleted)")
            typ, data = m.expunge()
            assert data == [b"1"]
            typ, data = m.list()
            assert any(d.endswith(b' "/" Sent') and b"\\Sent" in d for d in data)
            typ, data = m.append("Sent", "(\\Seen)", imaplib.Time2Internaldate(time.time()), msg(99))
            assert typ == "OK" and b"APPENDUID" in data[0]
            m.close()
            m.logout()
    await run(client)
    assert env.mb.state("INBOX").uids == [2, 3]
    assert env.mb.read("Sent", 1) == msg(99)


async def test_imapclient_session(env):
    def client():
        with IMAPClient("127.0.0.1", port=env.port, ssl=False) as c:
            c.login("bob", "secret")
            caps = c.capabilities()
            assert b"UIDPLUS" in caps and b"MOVE" in caps and b"CONDSTORE" in caps
            info = c.select_folder("INBOX")
            assert info[b"EXISTS"] == 3 and info[b"UIDNEXT"] == 4
            res = c.fetch(c.search("ALL"), ["UID", "FLAGS", "ENVELOPE", "RFC822.SIZE"])
            assert sorted(res) == [1, 2, 3]
            env1 = res[1][b"ENVELOPE"]
            assert env1.subject == b"msg 1" and env1.from_[0].mailbox == b"alice"
            assert res[3][b"RFC822.SIZE"] == len(msg(3))
            assert c.search(["SUBJECT", "msg 2"]) == [2]
            c.add_flags([3], [b"\\Flagged"])
            assert c.get_flags([3])[3] == (b"\\Flagged",)
            c.move([3], "Trash")
            assert c.search("ALL") == [1, 2]
            c.create_folder("Projects")
            assert any(name == "Projects" for _f, _d, name in c.list_folders())
            st = c.folder_status("Trash", ["MESSAGES", "UIDNEXT"])
            assert st[b"MESSAGES"] == 1
            folders = {name: flags for flags, _d, name in c.list_folders()}
            assert b"\\Trash" in folders["Trash"]
            body = c.fetch([1], ["BODY.PEEK[1]", "BODY[HEADER.FIELDS (SUBJECT)]"])[1]
            assert body[b"BODY[1]"] == b"hello world 1\r\n"
            assert body[b"BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: msg 1\r\n\r\n"
    await run(client)


async def test_idle_wakes_on_bus_publish(env):
    latencies = []
    loop = asyncio.get_running_loop()

    def client():
        with IMAPClient("127.0.0.1", port=env.port, ssl=False) as c:
            c.login("bob", "secret")
            c.select_folder("INBOX")
            for i in range(3):
                c.idle()
                t0 = time.perf_counter()
                asyncio.run_coroutine_threadsafe(deliver(i), loop).result()
                responses = c.idle_check(timeout=5)
                latencies.append(time.perf_counter() - t0)
                c.idle_done()
                assert (4 + i, b"EXISTS") in responses

    async def deliver(i):
        env.mb.append("INBOX", msg(10 + i), [], None)
        env.bus.publish("bob", "INBOX")

    await run(client)
    assert max(latencies) < 1.0  # the server's own poll interval is 5 s: only the bus explains this


async def test_malformed_input_keeps_session(env):
    def client():
        with socket.create_connection(("127.0.0.1", env.port)) as s:
            f = s.makefile("rwb")

            def say(line: bytes) -> bytes:
                """Send one line, return the next line the server sends."""
                f.write(line)
                f.flush()
                return f.readline()

            assert f.readline().startswith(b"* OK")
            for line in (b"a (NOOP\r\n", b"\r\n", b"b LOGIN\r\n", b"c FETCH 1 FLAGS\r\n"):
                assert b" BAD " in say(line)
            assert say(b"d LOGIN {3}\r\n").startswith(b"+ ")
            assert say(b"bob {6}\r\n").startswith(b"+ ")
            assert say(b"secret\r\n").startswith(b"d OK")
            assert say(b"e APPEND INBOX {999999999}\r\n").startswith(b"e BAD [TOOBIG]")
            assert say(b"f LOGOUT\r\n").startswith(b"* BYE")
            assert f.readline().startswith(b"f OK")
            f.close()
    await run(client)


async def test_login_disabled_without_tls_from_non_loopback_policy(env):
    mb = MemoryMailbox()

    async def auth(user, password):
        return True

    server = await start_imap_server("127.0.0.1", 0, store=lambda u: mb, authenticate=auth, bus=None,
                                     allow_plaintext=False)
    port = server.sockets[0].getsockname()[1]

    def client():
        with imaplib.IMAP4("127.0.0.1", port) as m:
            assert "LOGINDISABLED" in m.capabilities
            with pytest.raises(imaplib.IMAP4.error):
                m.login("bob", "x")
    try:
        await run(client)
    finally:
        await stop_imap_server(server)


async def test_starttls(env, tmp_path):
    from relay.tls import server_context  # noqa: F401  (exists: the relay's TLS helper)
    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    mb = MemoryMailbox()

    async def auth(user, password):
        return (user, password) == ("bob", "secret")

    server = await start_imap_server("127.0.0.1", 0, store=lambda u: mb, authenticate=auth, ssl_context=ctx,
                                     allow_plaintext=False)
    port = server.sockets[0].getsockname()[1]

    def client():
        cctx = ssl.create_default_context(cafile=str(cert))
        with imaplib.IMAP4("127.0.0.1", port) as m:
            assert "STARTTLS" in m.capabilities and "LOGINDISABLED" in m.capabilities
            m.starttls(ssl_context=cctx)
            assert "LOGINDISABLED" not in m.capabilities
            assert m.login("bob", "secret")[0] == "OK"
            assert m.select("INBOX")[0] == "OK"
    try:
        await run(client)
    finally:
        await stop_imap_server(server)


def _self_signed(tmp_path):
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    c, k = tmp_path / "cert.pem", tmp_path / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


async def test_autologout_after_idle_timeout():
    mb = MemoryMailbox()

    async def auth(user, password):
        return True

    server = await start_imap_server("127.0.0.1", 0, store=lambda u: mb, authenticate=auth, idle_timeout=0.3)
    port = server.sockets[0].getsockname()[1]

    def client():
        out = []
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            f = s.makefile("rb")
            out.append(f.readline())
            out.append(f.readline())          # nothing sent: the server gives up after 0.3 s
            s.sendall(b"a LOGIN x y\r\n")
            f.close()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"a LOGIN x y\r\nb IDLE\r\n")
            out += [f.readline(), f.readline(), f.readline()]   # OK, +, BYE (IDLE has the same limit)
            f.close()
        return out

    try:
        t0 = time.perf_counter()
        out = await run(client)
        assert out[1].startswith(b"* BYE Autologout")
        assert out[2].startswith(b"a OK") and out[3].startswith(b"+ ") and out[4].startswith(b"* BYE")
        assert time.perf_counter() - t0 < 3
    finally:
        await stop_imap_server(server)


async def test_failed_logins_are_throttled():
    from relay.users import AuthThrottle
    mb = MemoryMailbox()

    async def auth(user, password):
        return password == "right"

    throttle = AuthThrottle(base=0.2, maximum=1.0)
    server = await start_imap_server("127.0.0.1", 0, store=lambda u: mb, authenticate=auth, throttle=throttle)
    port = server.sockets[0].getsockname()[1]

    def client():
        times = []
        with imaplib.IMAP4("127.0.0.1", port) as m:
            for _ in range(3):
                t0 = time.perf_counter()
                with pytest.raises(imaplib.IMAP4.error):
                    m.login("bob", "wrong")
                times.append(time.perf_counter() - t0)
            assert m.login("bob", "right")[0] == "OK"
        return times

    try:
        times = await run(client)
        assert times[1] >= 0.2 and times[2] >= 0.4   # base, then 2x base: grows with failures
        assert throttle.delay("127.0.0.1") == 0      # a good login clears the IP's record
    finally:
        await stop_imap_server(server)


async def test_authenticate_plain_with_continuation(env):
    def client():
        with imaplib.IMAP4("127.0.0.1", env.port) as m:
            typ, _ = m.authenticate("PLAIN", lambda _challenge: b"\0bob\0secret")
            assert typ == "OK"
            assert m.select("INBOX")[1] == [b"3"]
        with imaplib.IMAP4("127.0.0.1", env.port) as m:
            with pytest.raises(imaplib.IMAP4.error):
                m.authenticate("PLAIN", lambda _challenge: b"\0bob\0nope")
    await run(client)


async def test_starttls_refuses_pipelined_plaintext(tmp_path):
    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    mb = MemoryMailbox()

    async def auth(user, password):
        return True

    server = await start_imap_server("127.0.0.1", 0, store=lambda u: mb, authenticate=auth, ssl_context=ctx)
    port = server.sockets[0].getsockname()[1]

    def client():
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            f = s.makefile("rb")
            f.readline()
            # an attacker in the middle appends a command after STARTTLS (CVE-2011-0411 class)
            s.sendall(b"a STARTTLS\r\nb LOGIN bob secret\r\n")
            first = f.readline()
            rest = f.read()
            f.close()
            return first, rest
    try:
        first, rest = await run(client)
        assert first.startswith(b"a OK") and rest == b""   # the injected LOGIN is never answered
    finally:
        await stop_imap_server(server)
