"""Fuzzing the relay's three wire protocols with Hypothesis (issue 10): structured commands
and byte mutations of them; and the MIME analysis the store runs on every delivered message.
Properties, for every input:

- no exception escapes a session (the IMAP parser + session, the POP3 machine, aiosmtpd with
  our SMTP handlers behind a real relay socket);
- every command gets a reply (IMAP: a tagged response for its tag, or a continuation; POP3:
  +OK/-ERR; SMTP: a numbered reply line) and the session goes on or ends politely;
- memory stays bounded (parser buffers never exceed their caps; tracemalloc peak per session).

CI runs a few seconds per protocol (``FUZZ_EXAMPLES``, default 60); a longer run:
``FUZZ_EXAMPLES=3000 .venv/bin/python -m pytest tests/test_relay_fuzz.py -q``.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
import tracemalloc

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from relay.config import parse_config
from relay.imap.parser import MAX_LINE, BadInput, Command, CommandReader, ContinuationNeeded, RawLine
from relay.imap.session import Session
from relay.pop3.protocol import (MAX_LINE as POP3_MAX_LINE, Authenticate, Fetch, Maildrop, Message,
                                 Pop3Machine, Reply, StartTLS, Update)
from relay.server import RelayServer
from relay.store.mailbox import UserStore
from relay.users import AuthThrottle

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 60,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])
MEMORY_CAP = 48 << 20     # bytes allocated at peak by one fuzzed session

MSG = (b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: hi\r\n"
       b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
       b"hello\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nx\r\n--b--\r\n")


# ------------------------------------------------------------------------------ mutation
@st.composite
def mutated(draw, base: bytes) -> bytes:
    """``base`` with a few random byte edits: flips, inserts, deletions, duplications."""
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup", "special"]))
        pos = draw(st.integers(0, max(0, len(data))))
        if op == "flip" and data:
            data[min(pos, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos:pos + draw(st.integers(1, 8))]
        elif op == "dup" and data:
            piece = bytes(data[pos:pos + draw(st.integers(1, 40))])
            data[pos:pos] = piece * draw(st.integers(1, 50))
        elif op == "special":
            data[pos:pos] = draw(st.sampled_from([b"\r\n", b"\n", b"\r", b"\x00", b"{5}\r\n", b"{999999999}\r\n",
                                                  b"{10+}\r\n", b"(", b")", b'"', b"\\", b"\xff\xfe", b"*",
                                                  b"[", b"]", b"<", b">", b" " * 100]))
    return bytes(data)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """Split ``data`` at arbitrary points, as TCP may."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points + [len(data)]:
        out.append(data[last:p])
        last = p
    return [c for c in out if c]


# ------------------------------------------------------------------------------ IMAP
ATOMS = ["1", "*", "1:*", "2:4,7", "*:1", "0", "4294967295", "4294967296", "99999999999999999999", "INBOX",
         "Sent", "Trash", "NIL", "\\Seen", "\\Deleted", "\\Flagged", "$Junk", "FLAGS", "UID", "ALL",
         "FAST", "FULL", "ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822.SIZE", "INTERNALDATE",
         "BODY[]", "BODY.PEEK[HEADER]", "BODY[1.2.HEADER.FIELDS (Subject)]<0.10>", "BODY[2.1.MIME]",
         "BODY[99.99.99]", "BINARY[1]", "RFC822", "RFC822.HEADER", "MODSEQ", "CHANGEDSINCE", "UNCHANGEDSINCE",
         "+FLAGS", "-FLAGS.SILENT", "(\\Seen)", "()", "SUBJECT", "FROM", "TEXT", "OR", "NOT", "SINCE",
         "1-Jan-2026", "32-Foo-99", "LARGER", "SMALLER", "CHARSET", "UTF-8", "KOI8-R", "MESSAGES", "UNSEEN",
         "UIDNEXT", "UIDVALIDITY", "RECENT", "HIGHESTMODSEQ", "\"\"", "\"a b\"", "\"quo\\\"te\"", "&-", "&AGE-",
         "&Jjo-", "&&&", "caf\xe9", "%", "*%*", "a/b", ".", "..", "/", "INBOX.Sub", "CONDSTORE", "QRESYNC",
         "PLAIN", "=", "(UID 1)", "(SUBJECT \"x\" (OR ALL NOT SEEN))", "((((((((((ALL))))))))))"]
VERBS = ["CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "AUTHENTICATE", "LOGIN", "SELECT", "EXAMINE", "CREATE",
         "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND", "CHECK", "CLOSE",
         "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "UID FETCH", "UID SEARCH",
         "UID STORE", "UID COPY", "UID MOVE", "UID EXPUNGE", "IDLE", "ENABLE", "ID", "NAMESPACE", "SORT",
         "THREAD", "UID SORT", "GETQUOTAROOT", "XYZZY", ""]


@st.composite
def imap_arg(draw, depth=0):
    kind = draw(st.sampled_from(["atom", "atom", "quoted", "literal", "list", "number"] if depth < 4 else
                                ["atom", "quoted", "number"]))
    if kind == "atom":
        return draw(st.sampled_from(ATOMS)).encode("utf-8")
    if kind == "number":
        return str(draw(st.integers(-5, 2 ** 64))).encode()
    if kind == "quoted":
        s = draw(st.text(max_size=20)).replace("\\", "\\\\").replace('"', '\\"')
        return b'"' + s.encode("utf-8", "surrogatepass") + b'"'
    if kind == "literal":
        body = draw(st.sampled_from([MSG, b"", b"x", b"\x00\xff", b"a" * 300]))
        plus = draw(st.booleans())
        return b"{%d%s}\r\n" % (len(body), b"+" if plus else b"") + body
    return b"(" + b" ".join(draw(st.lists(imap_arg(depth + 1), max_size=4))) + b")"


@st.composite
def imap_command(draw, n: int):
    tag = draw(st.sampled_from([f"t{n}", f"t{n}", "*", "+", "a{", "t" * 200]))
    verb = draw(st.sampled_from(VERBS))
    args = draw(st.lists(imap_arg(), max_size=5))
    return (tag + " " + verb).encode() + b"".join(b" " + a for a in args) + b"\r\n"


@st.composite
def imap_session(draw):
    prefix = b""
    if draw(st.booleans()):
        prefix = b"l1 LOGIN bob@example.org pw\r\n"
        if draw(st.booleans()):
            prefix += b"l2 SELECT INBOX\r\n"
    cmds = b"".join([draw(imap_command(i)) for i in range(draw(st.integers(1, 8)))])
    data = prefix + (draw(mutated(cmds)) if draw(st.booleans()) else cmds)
    return chunked(data, draw(st.lists(st.integers(0, 10 ** 6), max_size=6)))


class ImapDriver:
    """relay/imap/server.py's Connection loop, in memory (no sockets, no TLS)."""

    def __init__(self, store):
        async def auth(user, password):
            return password == "pw"
        self.reader = CommandReader(max_literal=8192)
        self.s = Session(open_mailbox=lambda u: store, authenticate=auth, allow_plaintext=True, peer="127.0.0.1")

        async def flush():
            self.out += self.s.take_output()
        self.s.flush = flush
        self.out = bytearray()

    async def feed(self, chunk: bytes) -> bool:
        s, r = self.s, self.reader
        r.receive_data(chunk)
        while (ev := r.next_event()) is not None:
            assert len(r._buf) <= MAX_LINE + 8192 + len(chunk)
            if isinstance(ev, ContinuationNeeded):
                continue
            if isinstance(ev, BadInput):
                self.out += f"{ev.tag} BAD {ev.message}\r\n".encode()
                continue
            if isinstance(ev, RawLine):
                if s.auth_tag is not None:
                    r.raw_lines = False
                    tag = s.auth_tag
                    await s.auth_continue(ev.line)
                    out = s.take_output()
                    assert re.search(rb"(^|\n)" + re.escape(tag.encode()) + rb" (OK|NO|BAD) ", out), out
                elif s.idle_tag is not None:
                    tag = s.idle_tag
                    s.idle_done(ev.line)
                    r.raw_lines = False
                    out = s.take_output()
                    assert re.search(rb"(^|\n)" + re.escape(tag.encode()) + rb" (OK|NO|BAD) ", out), out
                continue
            assert isinstance(ev, Command)
            await s.handle(ev)                          # must not raise
            out = s.take_output()
            self.out += out
            if s.auth_tag is not None or s.idle_tag is not None:
                assert out.startswith(b"+") or b"\r\n+" in out, out
                r.raw_lines = True
            else:
                assert re.search(rb"(^|\n)" + re.escape(ev.tag.encode()) + rb" (OK|NO|BAD) ", out), (ev, out[-300:])
            if s.user is not None:
                r.max_literal = 1 << 20
            s.want_starttls = False
            if s.state == "logout":
                return False
        return True


@pytest.fixture
def imap_store(tmp_path):
    store = UserStore(tmp_path / "bob", "bob@example.org")
    for i in range(3):
        store.append("INBOX", MSG.replace(b"hi", b"hi %d" % i), ["\\Seen"] if i else [])
    yield store
    store.close()


@FUZZ
@given(chunks=imap_session())
@example(chunks=[b"t0 CAPABILITY BODY[\xb1.2.HEADER.FIELDS (Subject)]<0.10>\r\n"])  # found: 8-bit in [..]
def test_fuzz_imap_parser_and_session(imap_store, chunks):
    async def run():
        d = ImapDriver(imap_store)
        for c in chunks:
            if not await d.feed(c):
                break
    tracemalloc.start()
    try:
        asyncio.run(run())
        assert tracemalloc.get_traced_memory()[1] < MEMORY_CAP
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------------------ POP3
POP3_VERBS = ["USER", "PASS", "APOP", "AUTH", "STLS", "CAPA", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE",
              "RSET", "NOOP", "QUIT", "XTND", "", "user", "Pass"]
POP3_ARGS = ["bob@example.org", "pw", "wrong", "1", "2", "0", "-1", "3", "99999999999999999999", "PLAIN",
             "AGJvYkBleGFtcGxlLm9yZwBwdw==", "*", "=", "a b c", "\xe9", "1 0", "1 -5", "2 99999999999"]


@st.composite
def pop3_session(draw):
    lines = []
    if draw(st.booleans()):
        lines += [b"USER bob@example.org\r\n", b"PASS pw\r\n"]
    for _ in range(draw(st.integers(1, 10))):
        verb = draw(st.sampled_from(POP3_VERBS))
        args = draw(st.lists(st.sampled_from(POP3_ARGS), max_size=3))
        lines.append((" ".join([verb, *args])).encode("utf-8") + b"\r\n")
    data = b"".join(lines)
    if draw(st.booleans()):
        data = draw(mutated(data))
    return data


def test_fuzz_pop3_line_splitting_matches_glue():
    """The glue hands the machine lines of at most MAX_LINE*4 bytes (StreamReader limit)."""
    assert POP3_MAX_LINE <= 4096


@FUZZ
@given(data=pop3_session())
def test_fuzz_pop3_machine(data):
    bodies = {1: MSG, 2: b"Subject: two\r\n\r\n.\r\n..x\r\n", 3: b"no header at all"}
    m = Pop3Machine(hostname="mx", tls_active=False, tls_available=True, plaintext_allowed=True)
    assert m.greeting().startswith(b"+OK")
    tracemalloc.start()
    try:
        _pop3_lines(m, data, bodies)
        assert tracemalloc.get_traced_memory()[1] < MEMORY_CAP
    finally:
        tracemalloc.stop()


def _pop3_lines(m, data, bodies):
    for raw in data.split(b"\n"):
        if not raw:
            continue
        line = raw + b"\n"
        if len(line) > POP3_MAX_LINE * 4:     # what Pop3Session._readline does with an overlong line
            line = b"X" * (POP3_MAX_LINE + 1)
        out = m.receive_line(line)
        if isinstance(out, Authenticate):
            good = out.user == "bob@example.org" and out.password == "pw"
            drop = Maildrop([Message(u, len(b), f"u{u}") for u, b in bodies.items()]) if good else None
            out = m.auth_result(out.user, drop, None if good else "[AUTH] authentication failed")
        elif isinstance(out, Fetch):
            out = m.fetched(out, bodies.get(out.uid))
        elif isinstance(out, StartTLS):
            assert out.reply.startswith(b"+OK")
            m.tls_started()
            continue
        elif isinstance(out, Update):
            out = m.update_result(len(out.uids))
        assert isinstance(out, Reply)
        if out.close and not out.data:
            break                                   # already closed: nothing more is read
        assert out.data.startswith((b"+OK", b"-ERR", b"+ ")) and out.data.endswith(b"\r\n"), out
        if out.data.startswith(b"+OK") and b"\r\n" in out.data[:-2] and not out.data.startswith(b"+ "):
            assert out.data.endswith(b"\r\n.\r\n")   # a multi-line reply is terminated
        if out.close:
            break


# ------------------------------------------------------------------------------ SMTP
SMTP_LINES = [b"EHLO fuzz.example", b"HELO fuzz.example", b"MAIL FROM:<a@elsewhere.example>",
              b"MAIL FROM:<>", b"MAIL FROM:<a@elsewhere.example> SIZE=999999999999",
              b"MAIL FROM:<a@elsewhere.example> BODY=8BITMIME SMTPUTF8", b"RCPT TO:<bob@example.org>",
              b"RCPT TO:<nobody@example.org>", b"RCPT TO:<x@elsewhere.example>", b"RCPT TO:<@a,@b:c@d>",
              b"RSET", b"NOOP", b"VRFY bob", b"EXPN x", b"HELP", b"AUTH PLAIN AGJvYgB3cm9uZw==", b"AUTH LOGIN",
              b"STARTTLS", b"BDAT 10", b"DATA", b"QUIT", b"", b"MAIL", b"RCPT TO:", b"\xff\xfe",
              b"MAIL FROM:<" + b"a" * 300 + b"@x.example>", b"EHLO " + b"h" * 600]


@st.composite
def smtp_session(draw):
    lines = [draw(st.sampled_from(SMTP_LINES)) for _ in range(draw(st.integers(1, 12)))]
    if draw(st.booleans()):
        lines = [draw(mutated(x)) for x in lines]
    return [x.replace(b"\r", b"").replace(b"\n", b"") for x in lines]


class RelayThread:
    """A RelayServer running in its own thread and loop for the duration of a test."""

    def __init__(self, tmp_path):
        text = ('hostname = "mx.example.org"\ndomains = ["example.org"]\n[listen]\nsmtp = "127.0.0.1:0"\n'
                'submission = "127.0.0.1:0"\nimap = ""\npop3 = ""\n[limits]\nmax_errors = 1000\n')
        self.srv = RelayServer(parse_config(text, None, tmp_path / "relay"),
                               throttle=AuthThrottle(base=0.0, maximum=0.0), grace=1.0)
        self.srv.users.add("bob@example.org", "pw")
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.errors: list[dict] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.set_exception_handler(lambda loop, ctx: self.errors.append(ctx))
        self.loop.run_until_complete(self.srv.start())
        self.ready.set()
        self.loop.run_forever()

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.srv.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def smtp_relay(tmp_path):
    r = RelayThread(tmp_path)
    yield r
    r.stop()


def _reply(f) -> bytes:
    """One whole SMTP reply (multi-line ends at 'ddd '), or b'' at EOF."""
    out = b""
    while True:
        line = f.readline()
        if not line:
            return out
        out += line
        assert re.match(rb"^[2-5]\d\d[ -]", line), line
        if line[3:4] == b" ":
            return out


@FUZZ
@given(lines=smtp_session(), listener=st.sampled_from(["smtp", "submission"]))
def test_fuzz_smtp_handlers_through_a_relay_socket(smtp_relay, lines, listener):
    with socket.create_connection(smtp_relay.srv.addresses[listener], timeout=10) as sock:
        f = sock.makefile("rb")
        assert _reply(f).startswith(b"220")
        for line in lines:
            sock.sendall(line + b"\r\n")
            reply = _reply(f)                       # every command gets a reply
            assert reply, f"no reply to {line!r}"
            code = reply[:3]
            if b"goodbye" in reply:                 # aiosmtpd's limit on unknown commands: 502, close
                assert code == b"502" and f.read() == b""
                break
            if code == b"354":                      # DATA: send a small message and its end
                sock.sendall(b"Subject: fuzz\r\n\r\n" + line + b"\r\n.\r\n")
                assert _reply(f)[:1] in (b"2", b"4", b"5")
            elif code == b"334":                    # AUTH challenge: answer it (wrongly)
                sock.sendall(b"Ym9i\r\n")
                r = _reply(f)
                if r.startswith(b"334"):
                    sock.sendall(b"d3Jvbmc=\r\n")
                    r = _reply(f)
                assert r[:1] in (b"2", b"4", b"5"), r
            elif code == b"220":                    # STARTTLS accepted: stop here
                break
            if code in (b"221", b"421"):
                assert f.read() == b""
                break
    assert not [e for e in smtp_relay.errors if "exception" in e], smtp_relay.errors


# ------------------------------------------------------------------------------ MIME (the index)
@st.composite
def mime_message(draw, depth=0):
    """A message with random headers and nesting (multipart, message/rfc822), maybe mangled."""
    headers = [b"From: " + draw(st.sampled_from([b"Alice <a@example.org>", b"=?utf-8?q?=C3=A9?= <x@y>",
                                                  b"undisclosed-recipients:;", b"<>", b"a@b, (c) d@e, \"q\\\"\" <f@g>",
                                                  b"\xff\xfe@x", b""])),
               b"Subject: " + draw(st.sampled_from([b"hi", b"=?utf-8?b?w6k=?=", b"=?x?q?broken", b"\x00\x01",
                                                    b"a" * 2000]))]
    kind = draw(st.sampled_from(["text", "text", "multipart", "rfc822"] if depth < 40 else ["text"]))
    if kind == "text":
        ctype = draw(st.sampled_from([b"text/plain; charset=utf-8", b"text/html; name*0*=utf-8''%C3%A9;name*1=x",
                                      b"application/octet-stream; name=\"../../x\"", b"text/plain; charset=\"",
                                      b"image/png; ;;; =", b"x"]))
        body = draw(st.sampled_from([b"hello\r\n", b"", b"=C3=A9=\r\n", b"\x00\xff" * 50, b"line\n" * 100]))
        return b"\r\n".join(headers + [b"Content-Type: " + ctype, b"", body])
    if kind == "rfc822":
        inner = draw(mime_message(depth + (1 if depth < 5 else 8)))
        return b"\r\n".join(headers + [b"Content-Type: message/rfc822", b"", inner])
    boundary = draw(st.sampled_from([b"b", b"=_x", b"a b", b"", b"--", b"x" * 100]))
    parts = [draw(mime_message(depth + 1)) for _ in range(draw(st.integers(0, 3)))]
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + boundary + b"--\r\n"
    return b"\r\n".join(headers + [b"Content-Type: multipart/mixed; boundary=\"" + boundary + b"\"", b"", body])


@FUZZ
@given(data=st.one_of(mime_message(), mime_message().flatmap(mutated)))
@example(data=b"Subject: =?utf-8?b?\x7f6k=?=\r\n\r\nx\r\n")   # found: bad base64 word
def test_fuzz_mime_index_analysis(data):
    """What the store indexes for every delivered message: a hostile sender controls all of it."""
    from relay.store import mime
    tracemalloc.start()
    try:
        env, body, fields = mime.analyse(data)
        assert mime.imap_encode(env).startswith(b"(") and mime.imap_encode(body).startswith(b"(")
        assert tracemalloc.get_traced_memory()[1] < MEMORY_CAP
    finally:
        tracemalloc.stop()
