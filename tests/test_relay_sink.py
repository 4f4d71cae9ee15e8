"""Sink mode (issue 15): a relay that catches all mail for any recipient, keeps it in mailbox
``sink`` and never delivers onward, read over IMAP, POP3 and the HTTP JSON API."""

from __future__ import annotations

import asyncio
import base64
import imaplib
import json
import poplib
import shutil
import smtplib
import subprocess
import time
import urllib.error
import urllib.request
import email.policy
from email.message import EmailMessage

import pytest

from relay.config import parse_config
from relay.errors import ConfigError
from relay.server import RelayServer
from relay.sink import envelope
from relay.sink.query import QueryError, compile_query
from relay.users import AuthThrottle

PASSWORD = "sink-pw"


def sink_config(data_dir, *, smtp="127.0.0.1:0", extra=""):
    text = (f'hostname = "sink.test"\n[listen]\nsmtp = "{smtp}"\nsubmission = "127.0.0.1:0"\n'
            'imap = "127.0.0.1:0"\npop3 = "127.0.0.1:0"\nhttp = "127.0.0.1:0"\n'
            f'[sink]\nenabled = true\npassword = "{PASSWORD}"\n' + extra)
    return parse_config(text, None, data_dir)


@pytest.fixture
async def sink(tmp_path):
    srv = RelayServer(sink_config(tmp_path / "relay"), throttle=AuthThrottle(base=0.01, maximum=0.05), grace=2.0)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def api(srv, path: str, method: str = "GET", body: bytes | None = None, host: str | None = None):
    h, p = srv.addresses["http"]
    req = urllib.request.Request(f"http://{h}:{p}{path}", method=method, data=body)
    if host:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def api_json(srv, path, method="GET", body=None):
    status, data, _ = api(srv, path, method, body)
    return status, json.loads(data)


def send(srv, sender, rcpts, msg: bytes, listener="smtp"):
    host, port = srv.addresses[listener]
    with smtplib.SMTP(host, port, timeout=10) as s:
        return s.sendmail(sender, rcpts, msg)


def message(subject="welcome", to="Bob <bob@example.com>", body="Hello Bob", extra=b"") -> bytes:
    return (f"From: App <noreply@myapp.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            "Message-ID: <m1@myapp.test>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\n").encode() + extra + \
        f"\r\n{body}\r\n".encode()


# ---- pure rules ----------------------------------------------------------------------------

def test_requires_auth_only_off_loopback():
    assert not envelope.requires_auth("127.0.0.1", "127.0.0.1")
    assert not envelope.requires_auth("::1", "::1")
    assert envelope.requires_auth("0.0.0.0", "127.0.0.1")
    assert envelope.requires_auth("192.0.2.1", "192.0.2.7")
    assert envelope.requires_auth("127.0.0.1", "192.0.2.7")


def test_envelope_headers_from_the_sender_are_removed():
    data = (b"X-Envelope-To: <forged@evil>\r\nSubject: hi\r\nDelivered-To: a@b\r\n\tfolded@c\r\n"
            b"x-envelope-from: <boss@corp>\r\nReturn-Path: <x@y>\r\nTo: bob@x\r\n\r\n"
            b"X-Envelope-To: <in the body stays>\r\n")
    out = envelope.strip_envelope_headers(data)
    assert out == b"Subject: hi\r\nTo: bob@x\r\n\r\nX-Envelope-To: <in the body stays>\r\n"
    assert envelope.envelope_headers("a@b", ["c@d", "e@f"]) == (
        b"X-Envelope-From: <a@b>\r\nX-Envelope-To: <c@d>\r\nX-Envelope-To: <e@f>\r\n")


def test_query_language_compiles_and_reports_errors():
    assert compile_query("") == [("all",)]
    keys = compile_query('subject:"big news" -is:read')
    assert keys == [("header", "SUBJECT", "big news"), ("not", ("flag", "\\Seen", True))]
    for bad in ("nope:x", 'subject:"open', "is:purple", "since:someday", "- x"):
        with pytest.raises(QueryError):
            compile_query(bad)


def test_config_sink_and_http_listen():
    cfg = parse_config("[sink]\nenabled = true\n", None, "/tmp/x")
    assert cfg.sink.enabled and str(cfg.listen.http) == "127.0.0.1:8026"
    assert "zz" not in repr(parse_config('[sink]\npassword = "zz"\n', None, "/tmp/x"))
    assert parse_config("", None, "/tmp/x").listen.http is None
    with pytest.raises(ConfigError, match="loopback"):
        parse_config('[listen]\nhttp = "0.0.0.0:8026"\n', None, "/tmp/x")


# ---- SMTP in, IMAP/POP3/HTTP out -------------------------------------------------------------

async def test_any_recipient_any_domain_is_kept_with_the_envelope(sink):
    forged = message(extra=b"X-Envelope-To: <forged@evil.example>\r\nDelivered-To: boss@corp.example\r\n")
    refused = await asyncio.to_thread(send, sink, "noreply@myapp.test",
                                      ["bob@example.com", "hidden@elsewhere.org"], forged)
    assert refused == {}
    refused = await asyncio.to_thread(send, sink, "x@y.test", ["z@nowhere.invalid"],
                                      message(subject="second", to="z@nowhere.invalid"), "submission")
    assert refused == {}
    status, page = await asyncio.to_thread(api_json, sink, "/api/v1/messages")
    assert status == 200 and page["total"] == 2 and [m["Subject"] for m in page["messages"]] == ["second", "welcome"]
    first = page["messages"][1]
    assert first["EnvelopeFrom"] == "noreply@myapp.test"
    assert first["EnvelopeTo"] == ["bob@example.com", "hidden@elsewhere.org"]
    status, raw, headers = await asyncio.to_thread(api, sink, f"/api/v1/message/{first['ID']}/raw")
    assert status == 200 and headers["Content-Type"].startswith("message/rfc822")
    assert raw.startswith(b"X-Envelope-From: <noreply@myapp.test>\r\nX-Envelope-To: <bob@example.com>\r\n"
                          b"X-Envelope-To: <hidden@elsewhere.org>\r\nReceived: ")
    assert b"forged@evil" not in raw and b"boss@corp" not in raw

    def imap_view():
        h, p = sink.addresses["imap"]
        with imaplib.IMAP4(h, p) as im:
            im.login("sink", PASSWORD)
            im.select("INBOX")
            _, data = im.uid("SEARCH", None, "TO", "bob")
            uids = data[0].split()
            _, fetched = im.uid("FETCH", uids[0], "(BODY.PEEK[])")
            return uids, fetched[0][1]

    uids, body = await asyncio.to_thread(imap_view)
    assert uids == [first["ID"].encode()] and body == raw

    def pop_view():
        h, p = sink.addresses["pop3"]
        pop = poplib.POP3(h, p, timeout=10)
        try:
            pop.user("sink")
            pop.pass_(PASSWORD)
            return pop.stat()[0]
        finally:
            pop.quit()

    assert await asyncio.to_thread(pop_view) == 2


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
async def test_swaks_to_arbitrary_domains_and_the_search_language(sink):
    host, port = sink.addresses["smtp"]
    for to, subj in (("bob@hamburger.edu", "welcome aboard"), ("alice@crepes.fr", "welcome"),
                     ("bob@example.net", "invoice")):
        out = await asyncio.to_thread(subprocess.run, [
            "swaks", "--server", f"{host}:{port}", "--from", "app@myapp.test", "--to", to,
            "--header", f"Subject: {subj}", "--body", "text"], capture_output=True, timeout=30)
        assert out.returncode == 0, out.stdout[-500:]
    q = urllib.request.quote("to:bob subject:welcome")
    status, page = await asyncio.to_thread(api_json, sink, f"/api/v1/messages?query={q}")
    assert status == 200 and [m["To"][0]["Address"] for m in page["messages"]] == ["bob@hamburger.edu"]
    status, page = await asyncio.to_thread(api_json, sink, "/api/v1/search?query=-subject:welcome")
    assert [m["Subject"] for m in page["messages"]] == ["invoice"]
    status, err = await asyncio.to_thread(api_json, sink, "/api/v1/messages?query=bogus:1")
    assert status == 400 and "bogus" in err["error"]


async def test_parsed_message_attachments_and_delete(sink):
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@b.test", "Zoë <zoe@x.test>", "Report ✓"
    msg.set_content("plain text part")
    msg.add_alternative("<p>html <script>alert(1)</script></p>", subtype="html")
    msg.add_attachment(b"\x00\x01binary", maintype="application", subtype="octet-stream", filename="d.bin")
    msg.add_attachment("col1,col2\n", subtype="csv", filename="r.csv")
    await asyncio.to_thread(send, sink, "a@b.test", ["zoe@x.test"], msg.as_bytes(policy=email.policy.SMTP))
    status, page = await asyncio.to_thread(api_json, sink, "/api/v1/messages")
    mid = page["messages"][0]["ID"]
    assert page["messages"][0]["Attachments"] == 2
    status, full = await asyncio.to_thread(api_json, sink, f"/api/v1/message/{mid}")
    assert status == 200
    assert full["Subject"] == "Report ✓" and full["To"] == [{"Name": "Zoë", "Address": "zoe@x.test"}]
    assert full["Text"].strip() == "plain text part"
    assert full["HTML"].strip() == "<p>html <script>alert(1)</script></p>"   # data in JSON, not markup
    assert [(a["FileName"], a["Size"]) for a in full["Attachments"]] == [("d.bin", 8), ("r.csv", 11)]
    assert full["Headers"]["Subject"] == ["Report ✓"]
    status, data, headers = await asyncio.to_thread(api, sink, f"/api/v1/message/{mid}/attachment/0")
    assert status == 200 and data == b"\x00\x01binary" and "d.bin" in headers["Content-Disposition"]
    status, data, _ = await asyncio.to_thread(api, sink, f"/api/v1/message/{mid}/attachment/1")
    assert data == b"col1,col2\r\n"
    assert (await asyncio.to_thread(api, sink, f"/api/v1/message/{mid}/attachment/2"))[0] == 404
    assert (await asyncio.to_thread(api, sink, "/api/v1/message/999"))[0] == 404
    assert (await asyncio.to_thread(api, sink, "/api/v1/message/abc"))[0] == 404
    assert (await asyncio.to_thread(api_json, sink, "/api/v1/message/latest"))[1]["ID"] == mid
    # delete one, then all
    await asyncio.to_thread(send, sink, "a@b.test", ["y@x.test"], message(subject="two"))
    await asyncio.to_thread(send, sink, "a@b.test", ["y@x.test"], message(subject="three"))
    await asyncio.to_thread(send, sink, "a@b.test", ["y@x.test"], message(subject="four"))
    assert (await asyncio.to_thread(api_json, sink, f"/api/v1/message/{mid}", "DELETE")) == (200, {"deleted": 1})
    assert (await asyncio.to_thread(api_json, sink, "/api/v1/search?query=subject:four", "DELETE")) == (
        200, {"deleted": 1})
    assert (await asyncio.to_thread(api_json, sink, "/api/v1/search?query=", "DELETE"))[0] == 400
    status, page = await asyncio.to_thread(api_json, sink, "/api/v1/messages")
    assert [m["Subject"] for m in page["messages"]] == ["three", "two"]
    assert page["messages_unread"] == 2 and page["tags"] == []
    assert (await asyncio.to_thread(api_json, sink, "/api/v1/messages", "DELETE")) == (200, {"deleted": 2})
    status, page = await asyncio.to_thread(api_json, sink, "/api/v1/messages")
    assert page["total"] == 0


async def test_openapi_and_host_guard(sink):
    status, doc = await asyncio.to_thread(api_json, sink, "/api/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.") and "/api/v1/wait" in doc["paths"]
    status, body, _ = await asyncio.to_thread(api, sink, "/api/v1/messages", host="attacker.example")
    assert status == 403


async def test_wait_returns_on_delivery(sink):
    """The long poll is woken by the change bus when the message lands (latency figures:
    bench/sink_wait.py); a non-matching message does not end it."""
    q = urllib.request.quote("to:carol subject:reset")

    async def waiter():
        t0 = time.monotonic()
        status, body = await asyncio.to_thread(api_json, sink, f"/api/v1/wait?query={q}&timeout=20")
        return status, body, time.monotonic()

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0.2)
    await asyncio.to_thread(send, sink, "a@b.test", ["dave@x.test"], message(subject="reset", to="dave@x.test"))
    await asyncio.sleep(0.2)
    assert not task.done()
    await asyncio.to_thread(send, sink, "a@b.test", ["carol@x.test"], message(subject="reset", to="carol@x.test"))
    sent_at = time.monotonic()
    status, body, got_at = await task
    assert status == 200 and body["To"][0]["Address"] == "carol@x.test" and body["Text"].strip() == "Hello Bob"
    assert got_at - sent_at < 10    # woken by the delivery, not by the 20 s timeout
    # a message already there answers at once; after= waits for a newer one
    status, body = await asyncio.to_thread(api_json, sink, f"/api/v1/wait?query={q}&timeout=5")
    assert status == 200
    status, body = await asyncio.to_thread(api_json, sink, f"/api/v1/wait?query={q}&timeout=0.2&after={body['ID']}")
    assert status == 408


# ---- never onward; AUTH off loopback ---------------------------------------------------------

async def test_sink_never_connects_onward(tmp_path, monkeypatch):
    """A smarthost and a route point at a trap listener; in sink mode nothing ever connects
    to it, and no outbound connection is even attempted by the relay's event loop."""
    trapped = []

    async def on_conn(reader, writer):
        trapped.append(1)
        writer.close()

    trap = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    tport = trap.sockets[0].getsockname()[1]
    attempts = []
    loop = asyncio.get_running_loop()
    real = type(loop).create_connection

    async def spy(self, *args, **kw):
        attempts.append((args, kw.get("host"), kw.get("port")))
        return await real(self, *args, **kw)

    monkeypatch.setattr(type(loop), "create_connection", spy)
    cfg = sink_config(tmp_path / "relay", extra=f'[routes]\n"example.com" = "127.0.0.1:{tport}"\n'
                                                f'[smarthost]\nhost = "127.0.0.1"\nport = {tport}\nsecurity = "none"\n')
    srv = RelayServer(cfg, grace=2.0)
    await srv.start()
    try:
        for listener in ("smtp", "submission"):
            assert await asyncio.to_thread(send, srv, "a@b.test", ["bob@example.com", "x@other.org"],
                                           message(), listener) == {}
        await asyncio.sleep(0.5)
        status, page = await asyncio.to_thread(api_json, srv, "/api/v1/messages")
        assert page["total"] == 2
        assert srv.spool.count() == 0       # nothing was ever queued for onward delivery
    finally:
        await srv.stop()
        trap.close()
        await trap.wait_closed()
    assert trapped == [] and attempts == []


async def test_non_loopback_listener_requires_auth(tmp_path):
    srv = RelayServer(sink_config(tmp_path / "relay", smtp="0.0.0.0:0"),
                      throttle=AuthThrottle(base=0.01, maximum=0.05), grace=2.0)
    await srv.start()
    try:
        port = srv.addresses["smtp"][1]

        def talk():
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                s.ehlo("client.test")
                assert "auth" in s.esmtp_features
                before = s.docmd("MAIL FROM:<a@b.test>")
                bad = s.docmd("AUTH PLAIN " + base64.b64encode(b"\0sink\0wrong").decode())
                s.login("sink", PASSWORD)
                return before, bad, s.sendmail("a@b.test", ["anyone@anywhere.test"], message())

        before, bad, refused = await asyncio.to_thread(talk)
        assert before[0] == 530 and bad[0] == 535 and refused == {}
        # the loopback listener of the same relay needs no AUTH
        assert await asyncio.to_thread(send, srv, "a@b.test", ["c@d.test"], message(), "submission") == {}
    finally:
        await srv.stop()


def test_cli_start_sink_daemon(tmp_path):
    """`tui-mail relay start --sink` as a user runs it: detached, the banner names where the
    password is (never the password), mail for any domain is kept, `stop` ends it."""
    import sys

    conf = tmp_path / "relay.toml"
    conf.write_text('[listen]\nsmtp = "127.0.0.1:0"\nsubmission = "127.0.0.1:0"\nimap = "127.0.0.1:0"\n'
                    'pop3 = "127.0.0.1:0"\nhttp = "127.0.0.1:0"\n')
    base = [sys.executable, "-m", "tui_mail", "relay", "--config", str(conf), "--data-dir", str(tmp_path / "d")]
    out = subprocess.run(base + ["start", "--sink"], capture_output=True, text=True, timeout=60)
    try:
        assert out.returncode == 0, out.stderr
        assert "sink mode" in out.stdout and "sink.password" in out.stdout
        password = (tmp_path / "d" / "sink.password").read_text().strip()
        assert password and password not in out.stdout
        state = json.loads((tmp_path / "d" / "relay.state.json").read_text())
        smtp_port, http_port = state["listeners"]["smtp"][1], state["listeners"]["http"][1]
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as s:
            assert s.sendmail("a@b.test", ["x@y.example"], message()) == {}
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/v1/messages", timeout=10) as r:
            assert json.loads(r.read())["total"] == 1
    finally:
        subprocess.run(base + ["stop"], capture_output=True, timeout=60)


# ---- hostile bytes ---------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from relay.sink import message as sink_message  # noqa: E402

_LINES = st.lists(st.one_of(
    st.sampled_from([b"X-Envelope-To: <f@e>", b"Delivered-To: x", b" folded", b"\tfolded", b"Subject: s",
                     b"Content-Type: multipart/mixed; boundary=b", b"--b", b"--b--", b"",
                     b"Content-Disposition: attachment; filename*=utf-8''%ff%fe",
                     b"Content-Transfer-Encoding: base64", b"=?utf-8?b?////?=", b"From: \"\\\" <@>"]),
    st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))), max_size=30)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_LINES)
def test_hostile_messages_become_json_and_lose_forged_envelopes(lines):
    data = b"\r\n".join(lines) + b"\r\n"
    stripped = envelope.strip_envelope_headers(data)
    head = b"" if stripped.startswith(b"\r\n") else stripped.split(b"\r\n\r\n", 1)[0]   # no header: all body
    assert not any(line.lower().startswith((b"x-envelope-to:", b"delivered-to:"))
                   for line in head.split(b"\r\n"))
    full = sink_message.full("1", envelope.envelope_headers("a@b", ["c@d"]) + stripped,
                             read=False, created="")
    assert full["EnvelopeTo"] == ["c@d"]
    json.dumps(full)   # always serialisable: everything from the message is data


async def test_imap_expunge_is_seen_by_the_api(sink):
    for i in range(3):
        await asyncio.to_thread(send, sink, "a@b.test", [f"u{i}@x.test"], message(subject=f"m{i}"))

    def imap_delete_first():
        h, p = sink.addresses["imap"]
        with imaplib.IMAP4(h, p) as im:
            im.login("sink", PASSWORD)
            im.select("INBOX")
            im.uid("STORE", "1", "+FLAGS", "(\\Deleted \\Seen)")
            im.uid("STORE", "2", "+FLAGS", "(\\Seen)")
            im.expunge()

    await asyncio.to_thread(imap_delete_first)
    status, page = await asyncio.to_thread(api_json, sink, "/api/v1/messages")
    assert [(m["Subject"], m["Read"]) for m in page["messages"]] == [("m2", False), ("m1", True)]
    status, page = await asyncio.to_thread(api_json, sink, "/api/v1/messages?query=is:unread")
    assert [m["Subject"] for m in page["messages"]] == ["m2"]


async def test_parked_waits_are_bounded(sink, monkeypatch):
    import relay.sink.http as sink_http

    monkeypatch.setattr(sink_http, "MAX_WAITERS", 1)
    first = asyncio.create_task(asyncio.to_thread(api_json, sink, "/api/v1/wait?query=subject:none&timeout=1"))
    await asyncio.sleep(0.3)
    status, err = await asyncio.to_thread(api_json, sink, "/api/v1/wait?query=subject:none&timeout=1")
    assert status == 503 and "waits at once" in err["error"]
    assert (await first)[0] == 408
    assert (await asyncio.to_thread(api_json, sink, "/api/v1/wait?timeout=0.1"))[0] == 408   # the slot is free


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab :-"\\\\toisubjecfrmdyh2026-7?\u00e9\t')), max_size=60))
def test_query_compiler_takes_any_text(text):
    """Any text either compiles to search keys the relay's evaluator runs, or is a QueryError."""
    from relay.imap.search import BytesTarget, Evaluator, SearchContext

    try:
        keys = compile_query(text)
    except QueryError:
        return
    Evaluator(keys, SearchContext(1, 1)).matches(1, BytesTarget(message()))
