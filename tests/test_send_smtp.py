"""SMTP submission: envelope rules (pure), then real dialogues with an in-loop aiosmtpd server
(AUTH, STARTTLS, implicit TLS, scripted 4xx/5xx, server down) and a real Postfix."""

from __future__ import annotations

import asyncio
import email
import email.policy
from email.message import EmailMessage

import pytest

from tests.postfix_peer import SmtpSink, free_port, postfix  # noqa: F401  (fixture)
from tui_mail.errors import AuthError, SendError
from tui_mail.send.smtp import SmtpSettings, SmtpSubmitter, envelope_of, prepare, strip_bcc


def compose(bcc: str | None = "Hidden <hidden@example.net>", subject: str = "Hello") -> EmailMessage:
    m = EmailMessage()
    m["From"] = "Alice <alice@crepes.fr>"
    m["To"] = "Bob <bob@example.org>, carol@example.org"
    m["Cc"] = "BOB@example.org, dave@example.org"
    if bcc:
        m["Bcc"] = bcc
    m["Subject"] = subject
    m["Message-ID"] = "<t1@crepes.fr>"
    m.set_content("Hi Bob,\nsee you.\n")
    return m


def test_envelope_includes_bcc_and_dedups_case_insensitively():
    sender, rcpts = envelope_of(compose())
    assert sender == "alice@crepes.fr"
    assert rcpts == ["bob@example.org", "carol@example.org", "dave@example.org", "hidden@example.net"]


def test_prepare_strips_bcc_and_uses_crlf():
    sender, rcpts, data = prepare(compose().as_bytes())
    assert b"Bcc" not in data and b"hidden@example.net" not in data
    assert b"\r\nSubject: Hello\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert "hidden@example.net" in rcpts


def test_strip_bcc_is_byte_exact_otherwise():
    raw = (b"From: a@x.org\r\nBcc: one@x.org,\r\n two@x.org\r\nTo: b@x.org\r\n"
           b"bcc: three@x.org\r\nSubject: s\r\n\r\nBcc: in the body stays\r\n")
    assert strip_bcc(raw) == (b"From: a@x.org\r\nTo: b@x.org\r\nSubject: s\r\n\r\n"
                              b"Bcc: in the body stays\r\n")
    assert strip_bcc(b"From: a\nTo: b\n\nhi\n") == b"From: a\r\nTo: b\r\n\r\nhi\r\n"
    sender, rcpts, data = prepare(raw)
    assert rcpts == ["b@x.org", "one@x.org", "two@x.org", "three@x.org"] and data == strip_bcc(raw)


def test_envelope_errors_are_permanent():
    m = compose(bcc=None)
    del m["To"], m["Cc"]
    with pytest.raises(SendError) as e:
        envelope_of(m)
    assert e.value.permanent and "recipients" in str(e.value)
    m = compose()
    del m["From"]
    with pytest.raises(SendError, match="From"):
        envelope_of(m)


def test_settings_validate_security():
    with pytest.raises(ValueError):
        SmtpSettings("h", security="ssl")
    assert "hunter2" not in repr(SmtpSettings("h", user="u", password="hunter2"))


async def test_send_plain_with_trace():
    trace: list[tuple[str, str]] = []
    async with SmtpSink() as sink:
        sub = SmtpSubmitter(SmtpSettings("127.0.0.1", sink.port, "none"), trace=lambda d, l: trace.append((d, l)))
        result = await sub.send(compose())
    assert result.code == 250 and "queued as SINK1" in result.reply
    (got,) = sink.received
    assert got.sender == "alice@crepes.fr" and "hidden@example.net" in got.recipients
    assert got.message["Bcc"] is None and got.message["Subject"] == "Hello"
    lines = [f"{d}: {l}" for d, l in trace]
    assert "C: MAIL FROM:<alice@crepes.fr>" in lines and "C: QUIT" in lines
    assert any(l.startswith("S: 250") for l in lines)


async def test_starttls_and_auth(tmp_path):
    trace: list[str] = []
    async with SmtpSink(users={"alice": "s3cret pass"}, tls="starttls", cert_dir=tmp_path) as sink:
        ok = SmtpSettings("127.0.0.1", sink.port, "starttls", user="alice", password="s3cret pass",
                          cafile=sink.cafile)
        sub = SmtpSubmitter(ok, trace=lambda d, l: trace.append(f"{d}: {l}"))
        caps = await sub.check()
        assert "AUTH" in caps
        await sub.send(compose())
        assert len(sink.received) == 1 and sink.auth_attempts == ["alice", "alice"]
        assert "C: STARTTLS" in trace and "C: AUTH alice ****" in trace
        assert not any("s3cret" in line for line in trace)

        bad = SmtpSubmitter(SmtpSettings("127.0.0.1", sink.port, "starttls", user="alice",
                                         password="wrong", cafile=sink.cafile))
        with pytest.raises(AuthError) as e:
            await bad.send(compose())
        assert isinstance(e.value, SendError) and e.value.permanent and e.value.code == 535
        assert "wrong" not in str(e.value)

        untrusted = SmtpSubmitter(SmtpSettings("127.0.0.1", sink.port, "starttls", user="alice",
                                               password="s3cret pass"))
        with pytest.raises(SendError, match="TLS|certificate") as e:
            await untrusted.send(compose())
        assert not e.value.permanent


async def test_starttls_required_but_missing():
    async with SmtpSink() as sink:
        sub = SmtpSubmitter(SmtpSettings("127.0.0.1", sink.port, "starttls"))
        with pytest.raises(SendError, match="STARTTLS") as e:
            await sub.send(compose())
        assert e.value.permanent and sink.received == []


async def test_implicit_tls(tmp_path):
    async with SmtpSink(users={"bob": "pw"}, tls="tls", cert_dir=tmp_path) as sink:
        sub = SmtpSubmitter(SmtpSettings("127.0.0.1", sink.port, "tls", user="bob", password="pw",
                                         cafile=sink.cafile))
        await sub.send(compose(bcc=None))
        assert sink.received[0].recipients == ["bob@example.org", "carol@example.org", "dave@example.org"]


async def test_5xx_recipient_is_permanent_with_server_text():
    async with SmtpSink(rcpt_reply="550 5.1.1 <bob@example.org>: mailbox unknown") as sink:
        sub = SmtpSubmitter(SmtpSettings("127.0.0.1", sink.port, "none"))
        with pytest.raises(SendError) as e:
            await sub.send(compose())
    assert e.value.permanent and e.value.code == 550 and "mailbox unknown" in str(e.value)
    assert sink.received == []


async def test_4xx_data_is_transient():
    async with SmtpSink(data_reply="451 4.3.0 try again later") as sink:
        sub = SmtpSubmitter(SmtpSettings("127.0.0.1", sink.port, "none"))
        with pytest.raises(SendError) as e:
            await sub.send(compose())
    assert not e.value.permanent and e.value.code == 451 and "try again later" in str(e.value)


async def test_server_down_is_transient():
    sub = SmtpSubmitter(SmtpSettings("127.0.0.1", free_port(), "none", timeout=3))
    with pytest.raises(SendError) as e:
        await sub.send(compose())
    assert not e.value.permanent and "Cannot reach" in str(e.value)


async def test_submission_through_real_postfix(postfix):  # noqa: F811
    sub = SmtpSubmitter(SmtpSettings(postfix.host, postfix.port, "none"))
    caps = await sub.check()
    assert "PIPELINING" in caps
    m = compose(bcc="carol-hidden@example.org", subject="Caf\u00e9 via Postfix")
    result = await sub.send(m)
    assert result.code == 250 and "queued as" in result.reply
    (bob,) = postfix.wait_for("bob", 1)
    got = email.message_from_bytes(bob, policy=email.policy.default)
    assert got["Subject"] == "Caf\u00e9 via Postfix" and got["Bcc"] is None
    assert len(postfix.wait_for("catchall", 2)) == 2  # dave + the Bcc recipient
    hidden = [email.message_from_bytes(d, policy=email.policy.default) for d in postfix.messages("catchall")]
    assert {h["Delivered-To"] for h in hidden} == {"dave@example.org", "carol-hidden@example.org"}


async def test_smtputf8_addresses():
    m = EmailMessage(policy=email.policy.SMTPUTF8)
    m["From"] = "J\u00f6rg <j\u00f6rg@b\u00fccher.example>"
    m["To"] = "\u7528\u6237@\u4f8b\u5b50.example"
    m["Subject"] = "UTF-8 everywhere"
    m.set_content("hi\n")
    async with SmtpSink() as sink:
        trace: list[str] = []
        sub = SmtpSubmitter(SmtpSettings("127.0.0.1", sink.port, "none"), trace=lambda d, l: trace.append(l))
        await sub.send(m)
    (got,) = sink.received
    # UTF-8 local parts need SMTPUTF8; domains still go as IDNA 2008 A-labels
    assert got.sender == "j\u00f6rg@xn--bcher-kva.example" and got.recipients == ["\u7528\u6237@xn--fsqu00a.example"]
    assert "MAIL FROM:<j\u00f6rg@xn--bcher-kva.example> SMTPUTF8" in trace


async def test_idna2008_domains_on_the_wire_without_smtputf8():
    """bob@straße.de is xn--strae-oqa.de (IDNA 2008), never strasse.de (IDNA 2003's ß → ss):
    composed by build_message, submitted to a real SMTP server on loopback without SMTPUTF8
    that records MAIL FROM and RCPT TO."""
    from tests.postfix_peer import AioSMTP  # a sink without SMTPUTF8
    from tui_mail.mail.compose import Draft, build_message

    composed = build_message(Draft(from_="Jörg <joerg@bücher.example>", to="Bob <bob@straße.de>",
                                   cc="carol@faß.example", subject="IDNA", body="hi\n"))
    loop = asyncio.get_running_loop()
    sink = SmtpSink()
    server = await loop.create_server(lambda: AioSMTP(sink, loop=loop), "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        trace: list[str] = []
        sub = SmtpSubmitter(SmtpSettings("127.0.0.1", port, "none"), trace=lambda d, l: trace.append(l))
        await sub.send(composed.data, composed.sender, list(composed.recipients))
        await sub.send(composed.message)          # envelope taken from the headers
    finally:
        server.close()
        await server.wait_closed()
    first, second = sink.received
    for got in (first, second):
        assert got.sender == "joerg@xn--bcher-kva.example"
        assert got.recipients == ["bob@xn--strae-oqa.de", "carol@xn--fa-hia.example"]
        assert b"strasse" not in got.data and b"fass.example" not in got.data
        assert b"To: Bob <bob@xn--strae-oqa.de>" in got.data
    assert "RCPT TO:<bob@xn--strae-oqa.de>" in trace and not any("strasse" in line for line in trace)


async def test_smtputf8_refused_when_not_offered(tmp_path):
    m = compose(bcc=None)
    m.replace_header("To", "\u7528\u6237@example.org")
    from tests.postfix_peer import AioSMTP  # a sink without SMTPUTF8

    loop = asyncio.get_running_loop()
    sink = SmtpSink()
    server = await loop.create_server(lambda: AioSMTP(sink, loop=loop), "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(SendError, match="SMTPUTF8") as e:
            await SmtpSubmitter(SmtpSettings("127.0.0.1", port, "none")).send(m)
        assert e.value.permanent
    finally:
        server.close()
        await server.wait_closed()
