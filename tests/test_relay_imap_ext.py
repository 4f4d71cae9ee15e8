"""The relay's IMAP extensions over the real store, driven by imaplib on 127.0.0.1 port 0:
QRESYNC (VANISHED, SELECT … (QRESYNC …), CHANGEDSINCE … VANISHED, CLOSED), CONDSTORE enabling by
FETCH MODSEQ, LIST-EXTENDED / LIST-STATUS, BINARY, MULTIAPPEND, CATENATE."""

from __future__ import annotations

import asyncio
import imaplib
import re

import pytest

from relay.events import ChangeBus
from relay.imap.server import start_imap_server, stop_imap_server
from relay.store import MailStore

USER = "bob@example.org"


def msg(i: int, body: str = "") -> bytes:
    return (f"From: a{i}@x.org\r\nTo: {USER}\r\nSubject: message {i}\r\n"
            f"Message-ID: <m{i}@x.org>\r\n\r\n{body or f'body {i}'}\r\n").encode()


@pytest.fixture
async def server(tmp_path):
    async def auth(user, password):
        return (user, password) == (USER, "pw")

    bus = ChangeBus()
    with MailStore(tmp_path / "mail", bus) as store:
        u = store.user(USER)
        for i in range(1, 6):
            u.append("INBOX", msg(i))
        srv = await start_imap_server("127.0.0.1", 0, store=store.user, authenticate=auth, bus=bus,
                                      ssl_context=None, allow_plaintext="loopback", hostname="test")
        try:
            yield srv.sockets[0].getsockname()[1]
        finally:
            await stop_imap_server(srv)


class Client:
    """imaplib with raw commands: returns (untagged lines, tagged line)."""

    def __init__(self, port: int) -> None:
        self.c = imaplib.IMAP4("127.0.0.1", port)
        self.c.login(USER, "pw")

    def cmd(self, text: str | bytes, *literals: bytes) -> tuple[list[bytes], bytes]:
        tag = self.c._new_tag()
        line = (text.encode() if isinstance(text, str) else text)
        self.c.send(tag + b" " + line + b"\r\n")
        for lit in literals:
            self.c.send(lit + b"\r\n" if lit is literals[-1] else lit)
        out = []
        while True:
            ln = self.c.readline()
            while m := re.search(rb"\{(\d+)\}\r\n$", ln):
                ln += self.c.read(int(m.group(1))) + self.c.readline()
            if ln.startswith(tag + b" "):
                return out, ln.rstrip(b"\r\n")
            if not ln.startswith(b"+"):
                out.append(ln.rstrip(b"\r\n"))

    def ok(self, text: str | bytes, *literals: bytes) -> list[bytes]:
        lines, done = self.cmd(text, *literals)
        assert done.split()[1] == b"OK", (text, done)
        return lines

    def close(self) -> None:
        self.c.logout()


def run(fn):
    return asyncio.to_thread(fn)


async def test_qresync_vanished_and_resync(server):
    def client():
        a = Client(server)
        assert b"ENABLED QRESYNC" in a.ok("ENABLE QRESYNC")[0]
        lines = a.ok("SELECT INBOX")
        uv = int(re.search(rb"UIDVALIDITY (\d+)", b"\n".join(lines)).group(1))
        h0 = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\n".join(lines)).group(1))
        b = Client(server)
        b.ok("SELECT INBOX")
        b.ok("STORE 2 +FLAGS.SILENT (\\Seen)")
        b.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
        b.ok("EXPUNGE")
        lines = a.ok("NOOP")
        assert b"* VANISHED 3" in lines and not any(b"EXPUNGE" in x for x in lines)
        assert any(re.fullmatch(rb"\* 2 FETCH \(UID 2 MODSEQ \(\d+\) FLAGS \(\\Seen( \\Recent)?\)\)", x)
                   for x in lines)
        # a fresh session resyncs from the old MODSEQ
        c = Client(server)
        lines, done = c.cmd(f"SELECT INBOX (QRESYNC ({uv} {h0}))")
        assert b"BAD" in done                       # not enabled yet
        c.ok("ENABLE QRESYNC")
        lines = c.ok(f"SELECT INBOX (QRESYNC ({uv} {h0}))")
        assert b"* VANISHED (EARLIER) 3" in lines
        assert any(re.fullmatch(rb"\* 2 FETCH \(UID 2 FLAGS \(\\Seen\) MODSEQ \(\d+\)\)", x) for x in lines)
        lines = c.ok(f"SELECT INBOX (QRESYNC ({uv} {h0} 1:2,4:5))")
        assert b"* OK [CLOSED] Previous mailbox closed" in lines[0]
        assert not any(b"VANISHED" in x for x in lines)
        lines = c.ok(f"SELECT INBOX (QRESYNC ({uv + 1} {h0}))")     # other UIDVALIDITY: full resync
        assert not any(b"VANISHED" in x or b"FETCH" in x for x in lines)
        lines = c.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {h0} VANISHED)")
        assert lines[0] == b"* VANISHED (EARLIER) 3" and len(lines) == 2 and b"UID 2" in lines[1]
        _, done = c.cmd(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {h0} VANISHED)")
        assert b"BAD" in done                       # VANISHED needs UID FETCH
        for x in (a, b, c):
            x.close()

    await run(client)


async def test_fetch_modseq_enables_condstore(server):
    def client():
        a = Client(server)
        a.ok("SELECT INBOX")
        lines = a.ok("FETCH 1 MODSEQ")
        assert any(x.startswith(b"* OK [HIGHESTMODSEQ ") for x in lines)
        lines = a.ok("STORE 1 +FLAGS (\\Seen)")
        assert re.search(rb"MODSEQ \(\d+\)", lines[-1])
        assert not any(b"HIGHESTMODSEQ" in x for x in a.ok("FETCH 2 MODSEQ"))   # told once
        a.close()

    await run(client)


async def test_list_extended_and_status(server):
    def client():
        a = Client(server)
        for name in ("Work", "Work/a", "Work/b", "Play"):
            a.ok(f"CREATE {name}")
        a.ok("SUBSCRIBE Work/a")
        a.ok("CREATE Gone")
        a.ok("SUBSCRIBE Gone")
        a.ok("DELETE Gone")
        lines = a.ok('LIST (SUBSCRIBED) "" "*"')
        assert b'* LIST (\\Subscribed \\NonExistent) "/" Gone' in lines
        assert b'* LIST (\\Subscribed) "/" Work/a' in lines
        lines = a.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
        assert b'* LIST () "/" Work (CHILDINFO ("SUBSCRIBED"))' in lines
        lines = a.ok('LIST "" (Work Play) RETURN (CHILDREN SUBSCRIBED STATUS (MESSAGES UNSEEN))')
        assert lines == [b'* LIST (\\HasNoChildren) "/" Play', b"* STATUS Play (MESSAGES 0 UNSEEN 0)",
                         b'* LIST (\\HasChildren) "/" Work', b"* STATUS Work (MESSAGES 0 UNSEEN 0)"]
        lines = a.ok('LIST (SPECIAL-USE) "" "*"')
        assert lines and all(re.search(rb"\\(Sent|Drafts|Trash|Junk|Archive)", x) for x in lines)
        lines = a.ok('LIST "" INBOX RETURN (STATUS (MESSAGES UIDNEXT))')
        assert lines[1] == b"* STATUS INBOX (MESSAGES 5 UIDNEXT 6)"
        for bad in ('LIST (RECURSIVEMATCH) "" "*"', 'LIST (BOGUS) "" "*"', 'LIST "" "*" RETURN (BOGUS)'):
            assert b"BAD" in a.cmd(bad)[1]
        a.close()

    await run(client)


BINARY_MSG = (b"From: a@x.org\r\nSubject: bin\r\nMIME-Version: 1.0\r\n"
              b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
              b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
              b"caf=C3=A9 soft=\r\nbreak\r\n--b\r\nContent-Type: application/octet-stream\r\n"
              b"Content-Transfer-Encoding: binary\r\n\r\n\x00\x01\xff\r\nraw\r\n--b--\r\n")


async def test_binary_append_literal8_and_fetch(server):
    def client():
        a = Client(server)
        lines, done = a.cmd(b"APPEND INBOX ~{%d}" % len(BINARY_MSG), BINARY_MSG)
        assert b"OK [APPENDUID" in done
        a.ok("SELECT INBOX")
        lines = a.ok("FETCH 6 (BODY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[2] BINARY.PEEK[1] BINARY.PEEK[2]<1.2>)")
        resp = lines[0]
        assert b"\x00" not in resp.split(b"BINARY.SIZE")[0]        # stored as base64
        assert b"BINARY.SIZE[2] 8" in resp
        assert b"BINARY[2] ~{8}\r\n\x00\x01\xff\r\nraw" in resp
        assert "BINARY[1] ~{15}\r\ncafé softbreak".encode() in resp
        assert b"BINARY[2]<1> ~{2}\r\n\x01\xff" in resp
        lines = a.ok("FETCH 6 (FLAGS)")
        assert b"\\Seen" not in lines[0]                           # PEEK did not set \Seen
        a.close()

    await run(client)


async def test_multiappend_and_catenate(server):
    def client():
        a = Client(server)
        one, two = msg(10), msg(11)
        lines, done = a.cmd(b'APPEND INBOX (\\Seen) "01-Jan-2024 10:00:00 +0000" {%d}' % len(one),
                            one + b" {%d}\r\n" % len(two), two)
        assert re.search(rb"OK \[APPENDUID \d+ 6:7\]", done), done
        a.ok("SELECT INBOX")
        uv = int(re.search(rb"UIDVALIDITY (\d+)", b"\n".join(a.ok("SELECT INBOX"))).group(1))
        lines = a.ok("FETCH 6:7 (FLAGS INTERNALDATE)")
        assert b"\\Seen" in lines[0] and b"01-Jan-2024" in lines[0] and b"\\Seen" not in lines[1]
        text = b"Subject: joined\r\n\r\nfirst line\r\n"
        lines, done = a.cmd(b'APPEND INBOX CATENATE (TEXT {%d}' % len(text),
                            text + f' URL "/INBOX;UIDVALIDITY={uv}/;UID=1/;SECTION=TEXT"'.encode()
                            + b' URL "/INBOX/;UID=2/;PARTIAL=0.6")')
        assert b"OK [APPENDUID" in done, done
        lines = a.ok("UID FETCH 8 BODY.PEEK[]")
        assert lines[0].endswith(b"Subject: joined\r\n\r\nfirst line\r\nbody 1\r\nFrom: )")
        lines, done = a.cmd(f'APPEND INBOX CATENATE (URL "/INBOX;UIDVALIDITY={uv + 1}/;UID=1")')
        assert b'NO [BADURL "/INBOX;UIDVALIDITY=' in done
        lines, done = a.cmd('APPEND Nowhere CATENATE (URL "/INBOX/;UID=1")')
        assert b"NO [TRYCREATE]" in done
        # all or nothing: the second message's bad URL stores neither
        lines, done = a.cmd(b"APPEND INBOX {%d}" % len(one), one + b' CATENATE (URL "/INBOX/;UID=999")')
        assert b"NO [BADURL" in done
        assert b"* 8 EXISTS" not in b"".join(a.ok("NOOP")) and len(a.ok("SEARCH ALL")[0].split()) == 10
        a.close()

    await run(client)


async def test_context_search_and_sort_updates(server):
    """RETURN (UPDATE) keeps a SEARCH or SORT live: another session's flag change and
    expunge and a new message come as ADDTO/REMOVEFROM; CANCELUPDATE stops them."""
    def client():
        a, b = Client(server), Client(server)
        a.ok("SELECT INBOX")
        b.ok("SELECT INBOX")
        lines = a.ok("SEARCH RETURN (UPDATE ALL) SEEN")
        assert len(lines) == 1 and lines[0].startswith(b"* ESEARCH (TAG ") and lines[0].endswith(b'")')
        stag = lines[0].split(b'"')[1]
        lines = a.ok("UID SORT RETURN (UPDATE ALL) (REVERSE SUBJECT) UTF-8 UNSEEN")
        otag = lines[0].split(b'"')[1]
        assert lines[0].endswith(b"UID ALL 5,4,3,2,1")
        b.ok("STORE 2,4 +FLAGS.SILENT (\\Seen)")
        lines = a.ok("NOOP")
        assert b'* ESEARCH (TAG "%s") ADDTO (0 2,4)' % stag in lines
        # reverse subject order 5 4 3 2 1: 4 (position 2) and 2 (position 4) leave, last first
        assert b'* ESEARCH (TAG "%s") UID REMOVEFROM (4 2)' % otag in lines
        assert b'* ESEARCH (TAG "%s") UID REMOVEFROM (2 4)' % otag in lines
        b.ok("STORE 4 +FLAGS.SILENT (\\Deleted)")
        b.ok("EXPUNGE")
        b.ok(b"APPEND INBOX {%d}" % len(msg(9)), msg(9))
        lines = a.ok("NOOP")
        assert lines.index(b'* ESEARCH (TAG "%s") REMOVEFROM (0 4)' % stag) < lines.index(b"* 4 EXPUNGE")
        assert b'* ESEARCH (TAG "%s") UID ADDTO (1 6)' % otag in lines
        a.ok(b'CANCELUPDATE "%s" "%s"' % (stag, otag))
        b.ok("STORE 1 +FLAGS.SILENT (\\Seen)")
        assert not any(b"ESEARCH" in x for x in a.ok("NOOP"))
        a.close()
        b.close()

    await run(client)


async def test_notify_pushes_changes_between_commands(server):
    """NOTIFY SET: with no command running, another session's APPEND to the selected mailbox
    comes as EXISTS + FETCH, one to another mailbox as STATUS, a new folder as LIST."""
    def client():
        a, b = Client(server), Client(server)
        a.ok("SELECT INBOX")
        _, done = a.cmd("NOTIFY SET (PERSONAL (MessageNew MessageExpunge AnnotationChange))")
        assert b"NO [BADEVENT" in done
        lines = a.ok("NOTIFY SET STATUS (SELECTED (MessageNew (UID) MessageExpunge FlagChange)) "
                     "(PERSONAL (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange))")
        assert any(x.startswith(b"* STATUS Sent (MESSAGES 0 UIDNEXT 1 UIDVALIDITY ") for x in lines)
        assert not any(b"STATUS INBOX" in x for x in lines)          # the selected one: no STATUS
        a.c.sock.settimeout(10)

        def expect(*wanted: bytes) -> None:
            got = []
            while not all(any(w in g for g in got) for w in wanted):
                got.append(a.c.readline().rstrip(b"\r\n"))
            return got

        b.ok(b"APPEND Sent {%d}" % len(msg(7)), msg(7))
        expect(b"* STATUS Sent (MESSAGES 1 UIDNEXT 2 UIDVALIDITY ")    # as Dovecot
        b.ok(b"APPEND INBOX {%d}" % len(msg(8)), msg(8))
        expect(b"* 6 EXISTS", b"* 6 FETCH (UID 6)")
        b.ok("CREATE Projects")
        expect(b'* LIST () "/" Projects')
        b.ok("SUBSCRIBE Projects")
        expect(b'* LIST (\\Subscribed) "/" Projects')
        a.ok("NOTIFY NONE")
        b.ok(b"APPEND Sent {%d}" % len(msg(9)), msg(9))
        assert not any(b"STATUS" in x for x in a.ok("NOOP"))
        a.close()
        b.close()

    await run(client)


async def test_notify_selected_delayed_holds_expunges_until_a_command(server):
    def client():
        a, b = Client(server), Client(server)
        a.ok("SELECT INBOX")
        a.ok("NOTIFY SET (SELECTED-DELAYED (MessageNew MessageExpunge))")
        b.ok("SELECT INBOX")
        b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
        b.ok("EXPUNGE")
        b.ok(b"APPEND INBOX {%d}" % len(msg(6)), msg(6))
        a.c.sock.settimeout(10)
        pushed = []
        while b"* 6 EXISTS" not in pushed:          # new mail comes at once, numbered as before
            pushed.append(a.c.readline().rstrip(b"\r\n"))
        assert not any(b"EXPUNGE" in x for x in pushed)
        assert b"* 1 EXPUNGE" in a.ok("NOOP")        # the expunge at the next command
        a.close()
        b.close()

    await run(client)
