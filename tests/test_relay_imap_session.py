"""The IMAP session state machine driven in memory (no sockets): command bytes in, response bytes
out, over an in-memory Mailbox that follows relay.imap.backend's contract. Real-store and
real-client tests live in tests/test_relay_imap_server.py."""

from __future__ import annotations

import base64
import datetime as dt
import re

import pytest

from relay.imap.backend import BackendError, FolderInfo, FolderState, MessageRecord
from relay.imap.parser import BadInput, Command, CommandReader
from relay.imap.session import Session, imap_date, list_pattern

DATE = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def msg(i: int, subject: str | None = None, body: str = "hello world") -> bytes:
    return (f"From: Alice <alice@crepes.fr>\r\nTo: bob@hamburger.edu\r\nSubject: {subject or f'msg {i}'}\r\n"
            f"Date: Fri, 02 Jan 2026 03:04:05 +0000\r\nMessage-ID: <{i}@crepes.fr>\r\n\r\n{body} {i}\r\n").encode()


class MemoryMailbox:
    """An in-memory backend.Mailbox: the contract the real store adapter also meets."""

    def __init__(self) -> None:
        self.boxes: dict[str, dict] = {}
        self.subs: set[str] = set()
        self.modseq = 1
        self.validity = 1000
        for name, use in (("INBOX", ""), ("Sent", "\\Sent"), ("Trash", "\\Trash")):
            self._new(name, use)
            self.subs.add(name)

    def _new(self, name: str, use: str = "") -> None:
        self.validity += 1
        self.boxes[name] = {"use": use, "uidnext": 1, "validity": self.validity, "msgs": {}, "ver": 0}

    def _box(self, name):
        if name not in self.boxes:
            raise BackendError("No such mailbox", "NONEXISTENT")
        return self.boxes[name]

    def _bump(self, b):
        b["ver"] += 1

    def folders(self):
        return [FolderInfo(n, b["use"]) for n, b in self.boxes.items()]

    def create(self, name):
        if name in self.boxes:
            raise BackendError("Mailbox exists", "ALREADYEXISTS")
        self._new(name)

    def delete(self, name):
        self._box(name)
        del self.boxes[name]

    def rename(self, old, new):
        b = self._box(old)
        if old == "INBOX":
            self._new(new)
            self.boxes[new]["msgs"], b["msgs"] = b["msgs"], {}
            self._bump(b)
        else:
            self.boxes[new] = self.boxes.pop(old)

    def subscriptions(self):
        return set(self.subs)

    def subscribe(self, name, on):
        (self.subs.add if on else self.subs.discard)(name)

    def version(self, folder):
        return self._box(folder)["ver"]

    def state(self, folder):
        b = self._box(folder)
        uids = sorted(b["msgs"])
        hms = max([m["rec"].modseq for m in b["msgs"].values()], default=1)
        return FolderState(b["validity"], b["uidnext"], max(hms, b.get("hms", 1)), uids, b["ver"])

    def records(self, folder, uids):
        msgs = self._box(folder)["msgs"]
        return [msgs[u]["rec"] for u in sorted(set(uids)) if u in msgs]

    def header(self, folder, uid, name):
        from relay.imap.search import BytesTarget
        return BytesTarget(self.read(folder, uid)).header(name)

    def envelope(self, folder, uid):
        return None

    def read(self, folder, uid):
        return self._box(folder)["msgs"][uid]["data"]

    def recent(self, folder):
        return set()

    def _next_modseq(self):
        self.modseq += 1
        return self.modseq

    def set_flags(self, folder, uids, mode, flags, unchangedsince=None):
        b = self._box(folder)
        changed, failed = [], []
        for u in uids:
            m = b["msgs"].get(u)
            if m is None:
                continue
            rec = m["rec"]
            if unchangedsince is not None and rec.modseq > unchangedsince:
                failed.append(u)
                continue
            new = (frozenset(flags) if mode == "set" else rec.flags | set(flags) if mode == "add"
                   else rec.flags - set(flags))
            if new != rec.flags:
                m["rec"] = MessageRecord(u, new, rec.size, rec.internaldate, self._next_modseq())
                b["hms"] = m["rec"].modseq
                changed.append(m["rec"])
        if changed:
            self._bump(b)
        return changed, failed

    def append(self, folder, data, flags, internaldate):
        b = self._box(folder)
        uid = b["uidnext"]
        b["uidnext"] += 1
        b["msgs"][uid] = {"data": data, "rec": MessageRecord(uid, frozenset(flags), len(data),
                                                              internaldate or DATE, self._next_modseq())}
        self._bump(b)
        return b["validity"], uid

    def copy(self, folder, uids, dest, *, move=False):
        src = self._box(folder)
        d = self._box(dest)
        olds, news = [], []
        for u in uids:
            m = src["msgs"].get(u)
            if m is None:
                continue
            _, nu = self.append(dest, m["data"], m["rec"].flags, m["rec"].internaldate)
            olds.append(u)
            news.append(nu)
            if move:
                del src["msgs"][u]
        if move:
            self._bump(src)
        return d["validity"], olds, news

    def expunge(self, folder, uids=None):
        b = self._box(folder)
        gone = [u for u, m in sorted(b["msgs"].items()) if "\\Deleted" in m["rec"].flags
                and (uids is None or u in uids)]
        for u in gone:
            del b["msgs"][u]
        if gone:
            self._bump(b)
        return gone


class Client:
    """Feeds command lines to a Session through the real CommandReader."""

    def __init__(self, mb: MemoryMailbox, **kw) -> None:
        async def auth(u, p):
            return (u, p) == ("bob", "secret")
        self.mb = mb
        self.s = Session(open_mailbox=lambda user: mb, authenticate=auth, **kw)
        self.reader = CommandReader()

    async def __call__(self, line: bytes | str) -> str:
        if isinstance(line, str):
            line = line.encode()
        self.reader.receive_data(line + b"\r\n")
        for ev in self.reader.events():
            if isinstance(ev, Command):
                await self.s.handle(ev)
            elif isinstance(ev, BadInput):   # as relay.imap.server answers it
                self.s.out.append(f"{ev.tag} BAD {ev.message}\r\n".encode())
            else:
                self.s.out.append(repr(ev).encode() + b"\r\n")
        return self.s.take_output().decode("utf-8", "replace")


@pytest.fixture
def mb():
    m = MemoryMailbox()
    for i in range(1, 6):
        m.append("INBOX", msg(i), ["\\Seen"] if i <= 2 else [], None)
    return m


@pytest.fixture
async def c(mb):
    cl = Client(mb)
    assert "OK" in await cl("a LOGIN bob secret")
    return cl


async def test_greeting_and_capabilities(mb):
    cl = Client(mb, allow_plaintext=False, tls_available=True)
    assert "LOGINDISABLED" in cl.s.greeting().decode() and "STARTTLS" in cl.s.greeting().decode()
    out = await cl("a LOGIN bob secret")
    assert out.startswith("a NO [PRIVACYREQUIRED]")
    cl2 = Client(mb)
    out = await cl2("t CAPABILITY")
    assert "AUTH=PLAIN" in out and "LOGINDISABLED" not in out and out.endswith("t OK Capability completed\r\n")


async def test_login_failure_and_state_checks(mb):
    cl = Client(mb)
    assert (await cl("a SELECT INBOX")).startswith("a BAD")
    assert (await cl("a LOGIN bob wrong")).startswith("a NO [AUTHENTICATIONFAILED]")
    assert (await cl("a LOGIN bob secret")).startswith("a OK [CAPABILITY")
    assert (await cl("b LOGIN bob secret")).startswith("b BAD")
    assert (await cl("c FETCH 1 FLAGS")).startswith("c BAD")
    assert (await cl("d FROB")).startswith("d BAD")


async def test_authenticate_plain_sasl_ir(mb):
    cl = Client(mb)
    tok = base64.b64encode(b"\0bob\0secret").decode()
    assert (await cl(f"a AUTHENTICATE PLAIN {tok}")).startswith("a OK")
    cl = Client(mb)
    assert await cl("a AUTHENTICATE PLAIN") == "+ \r\n"
    await cl.s.auth_continue(tok.encode())
    assert cl.s.take_output().startswith(b"a OK")
    cl = Client(mb)
    assert (await cl("a AUTHENTICATE PLAIN !!!")).startswith("a BAD")
    assert (await cl("a AUTHENTICATE CRAM-MD5")).startswith("a NO")


async def test_select_responses(c):
    out = await c("a SELECT INBOX")
    assert "* 5 EXISTS\r\n" in out and "* 0 RECENT\r\n" in out
    assert "* OK [UNSEEN 3]" in out and "[UIDVALIDITY " in out and "* OK [UIDNEXT 6]" in out
    assert "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)" in out
    assert "PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)" in out
    assert out.endswith("a OK [READ-WRITE] SELECT completed\r\n")
    assert (await c("b SELECT Nope")).startswith("b NO [NONEXISTENT]")


async def test_fetch_items(c):
    await c("a SELECT INBOX")
    out = await c("b FETCH 1:2 (UID FLAGS RFC822.SIZE INTERNALDATE)")
    size = len(msg(1))
    assert out.splitlines()[0] == (f'* 1 FETCH (UID 1 FLAGS (\\Seen) RFC822.SIZE {size} '
                                   f'INTERNALDATE "02-Jan-2026 03:04:05 +0000")')
    out = await c("c FETCH 3 ENVELOPE")
    assert ('ENVELOPE ("Fri, 02 Jan 2026 03:04:05 +0000" "msg 3" (("Alice" NIL "alice" "crepes.fr")) '
            '(("Alice" NIL "alice" "crepes.fr")) (("Alice" NIL "alice" "crepes.fr")) '
            '((NIL NIL "bob" "hamburger.edu")) NIL NIL NIL "<3@crepes.fr>")') in out
    out = await c("d FETCH 3 BODY.PEEK[]")
    assert f"BODY[] {{{size}}}\r\n" in out and msg(3).decode() in out and "FLAGS" not in out
    out = await c("e FETCH 3 BODY[TEXT]<0.5>")
    assert "* 3 FETCH (FLAGS (\\Seen) BODY[TEXT]<0> {5}\r\nhello)" in out
    out = await c("f FETCH 4 (BODY[HEADER.FIELDS (SUBJECT)])")
    assert "BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: msg 4\r\n\r\n" in out
    out = await c("g UID FETCH 5 BODYSTRUCTURE")
    assert '* 5 FETCH (UID 5 BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 15 1 NIL NIL NIL NIL))' in out
    assert (await c("h FETCH 9 FLAGS")).startswith("h BAD")
    assert (await c("h UID FETCH 9 FLAGS")) == "h OK FETCH completed\r\n"


async def test_examine_is_read_only(c, mb):
    out = await c("a EXAMINE INBOX")
    assert "[READ-ONLY]" in out
    out = await c("b FETCH 3 BODY[]")
    assert "FLAGS" not in out
    assert "\\Seen" not in mb.records("INBOX", [3])[0].flags
    assert (await c("c STORE 3 +FLAGS (\\Seen)")).startswith("c NO [READ-ONLY]")
    assert (await c("d EXPUNGE")).startswith("d NO")
    assert (await c("e MOVE 1 Trash")).startswith("e NO")


async def test_store_variants(c, mb):
    await c("a SELECT INBOX")
    out = await c("b STORE 3 +FLAGS (\\Flagged)")
    assert out == "* 3 FETCH (FLAGS (\\Flagged))\r\nb OK STORE completed\r\n"
    assert await c("c STORE 3 -FLAGS.SILENT (\\Flagged)") == "c OK STORE completed\r\n"
    out = await c("d UID STORE 1:2 FLAGS ($Label1 \\Answered)")
    assert "* 1 FETCH (UID 1 FLAGS (\\Answered $Label1))" in out
    assert "* 2 FETCH (UID 2 FLAGS (\\Answered $Label1))" in out
    assert mb.records("INBOX", [1])[0].flags == {"\\Answered", "$Label1"}
    assert (await c("e STORE 1 FOO (\\Seen)")).startswith("e BAD")
    assert (await c("e STORE 1 FLAGS (\\Bogus)")).startswith("e BAD")


async def test_condstore(c, mb):
    await c("a ENABLE CONDSTORE")
    await c("b SELECT INBOX")
    ms = mb.records("INBOX", [3])[0].modseq
    out = await c(f"c STORE 3 (UNCHANGEDSINCE {ms}) +FLAGS (\\Flagged)")
    assert re.search(r"\* 3 FETCH \(FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)", out)
    out = await c(f"d STORE 3 (UNCHANGEDSINCE {ms}) +FLAGS (\\Seen)")
    assert "d OK [MODIFIED 3]" in out
    new = mb.records("INBOX", [3])[0].modseq
    out = await c(f"e FETCH 1:* (FLAGS) (CHANGEDSINCE {new - 1})")
    assert out.count("FETCH (") == 1 and f"MODSEQ ({new})" in out
    out = await c(f"f SEARCH MODSEQ {new}")
    assert out.startswith(f"* SEARCH 3 (MODSEQ {new})")


async def test_search(c, mb):
    mb.append("INBOX", msg(6, subject="=?utf-8?q?Caf=C3=A9?= ketchup", body="pizza"), [], None)
    await c("a SELECT INBOX")
    assert (await c("b SEARCH SEEN")).startswith("* SEARCH 1 2\r\n")
    assert (await c("b SEARCH UNSEEN")).startswith("* SEARCH 3 4 5 6\r\n")
    assert (await c("b SEARCH SUBJECT \"msg 4\"")).startswith("* SEARCH 4\r\n")
    assert (await c("b SEARCH CHARSET UTF-8 SUBJECT \"café\"")).startswith("* SEARCH 6\r\n")
    assert (await c("b SEARCH BODY pizza")).startswith("* SEARCH 6\r\n")
    assert (await c("b SEARCH TEXT crepes")).startswith("* SEARCH 1 2 3 4 5 6\r\n")
    assert (await c("b SEARCH OR 1 3:4 NOT 4")).startswith("* SEARCH 1 3\r\n")
    assert (await c("b UID SEARCH UID 2:3")).startswith("* SEARCH 2 3\r\n")
    assert (await c("b SEARCH SENTON 2-Jan-2026 LARGER 10")).startswith("* SEARCH 1 2 3 4 5 6\r\n")
    assert (await c("b SEARCH BEFORE 1-Jan-2026")).startswith("* SEARCH\r\n")
    assert (await c("b SEARCH CHARSET KOI8-R ALL")).startswith("b NO [BADCHARSET")
    assert (await c("b SEARCH FOO")).startswith("b BAD")


async def test_copy_move_expunge(c, mb):
    await c("a SELECT INBOX")
    out = await c("b COPY 1:2 Trash")
    assert re.match(r"b OK \[COPYUID \d+ 1:2 1:2\] COPY completed", out)
    assert (await c("c COPY 1 Nope")).startswith("c NO [TRYCREATE]")
    out = await c("d MOVE 2 Sent")
    assert re.search(r"\* OK \[COPYUID \d+ 2 1\]", out) and "* 2 EXPUNGE\r\n" in out
    assert out.endswith("d OK MOVE completed\r\n")
    await c("e STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    out = await c("f EXPUNGE")
    assert out == "* 3 EXPUNGE\r\n* 1 EXPUNGE\r\nf OK EXPUNGE completed\r\n"   # highest first
    assert sorted(mb.state("INBOX").uids) == [3, 5]
    await c("g STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    out = await c("h UID EXPUNGE 5")
    assert out == "* 2 EXPUNGE\r\nh OK EXPUNGE completed\r\n"


async def test_concurrent_sessions_see_each_other(mb):
    a, b = Client(mb), Client(mb)
    for cl in (a, b):
        await cl("x LOGIN bob secret")
        await cl("y SELECT INBOX")
    await a("1 STORE 2 +FLAGS.SILENT (\\Deleted)")
    await a("2 EXPUNGE")
    # b is in the middle of working with sequence numbers: FETCH must not renumber
    out = await b("3 FETCH 3 UID")
    assert "EXPUNGE" not in out and "* 3 FETCH (UID 3)" in out
    out = await b("4 SEARCH ALL")
    assert " EXPUNGE\r\n" not in out and "4 OK [EXPUNGEISSUED]" in out   # 2 could not be searched
    mb.append("INBOX", msg(9), [], None)
    out = await a("5 STORE 1 +FLAGS.SILENT (\\Flagged)")
    # new mail may be told during STORE; RECENT follows EXISTS (as Dovecot sends it)
    assert out == "* 5 EXISTS\r\n* 0 RECENT\r\n5 OK STORE completed\r\n"
    out = await b("6 NOOP")
    assert "* 2 EXPUNGE\r\n" in out and "* 5 EXISTS\r\n" in out
    assert "* 1 FETCH (FLAGS (\\Flagged \\Seen))" in out
    out = await b("7 NOOP")
    assert out == "7 OK NOOP completed\r\n"
    out = await a("8 NOOP")
    assert out == "8 OK NOOP completed\r\n"


async def test_mailbox_management(c, mb):
    assert (await c("a CREATE Projects/2026")).startswith("a OK")
    assert (await c("a CREATE Projects/2026")).startswith("a NO [ALREADYEXISTS]")
    for bad in ("../etc", "a/../b", "a//b", ".hidden", "x*y", "50%", "back\\\\slash"):
        assert (await c(f'a CREATE "{bad}"')).startswith("a NO [CANNOT]"), bad
    assert (await c("a CREATE INBOX")).startswith("a NO")
    out = await c('b LIST "" *')
    assert out.splitlines()[0] == '* LIST (\\HasNoChildren) "/" INBOX' or out.splitlines()[0].startswith('* LIST (\\HasNoChildren) "/" "INBOX"')
    assert '* LIST (\\HasNoChildren \\Sent) "/" Sent' in out
    assert '"/" Projects/2026' in out
    out = await c('b LIST "" %')
    assert "Projects/2026" not in out
    out = await c('b LIST "" ""')
    assert out.startswith('* LIST (\\Noselect) "/" ""')
    assert (await c("c RENAME Projects/2026 Archive2026")).startswith("c OK")
    assert (await c("c RENAME Nope X")).startswith("c NO [NONEXISTENT]")
    assert (await c("c RENAME Sent Trash")).startswith("c NO [ALREADYEXISTS]")
    assert (await c("d DELETE Archive2026")).startswith("d OK")
    assert (await c("d DELETE INBOX")).startswith("d NO")
    assert (await c("e SUBSCRIBE Sent")).startswith("e OK")
    out = await c('f LSUB "" *')
    assert '* LSUB () "/" Sent' in out
    await c("g UNSUBSCRIBE Sent")
    assert '"/" Sent' not in await c('h LSUB "" *')
    out = await c("i CREATE Entw&APw-rfe")
    assert out.startswith("i OK") and "Entwürfe" in mb.boxes
    assert '"/" Entw&APw-rfe' in await c('j LIST "" Entw*')


async def test_status_append_namespace_id(c, mb):
    out = await c("a STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY RECENT HIGHESTMODSEQ)")
    assert re.match(r'\* STATUS INBOX \(MESSAGES 5 UNSEEN 3 UIDNEXT 6 UIDVALIDITY \d+ RECENT 0 HIGHESTMODSEQ \d+\)', out)
    data = msg(42)
    out = await c(b'b APPEND Sent (\\Seen) "05-Feb-2026 10:00:00 +0100" {%d+}\r\n' % len(data) + data)
    assert re.match(r"b OK \[APPENDUID \d+ 1\] APPEND completed", out)
    rec = mb.records("Sent", [1])[0]
    assert rec.flags == {"\\Seen"} and imap_date(rec.internaldate) == "05-Feb-2026 10:00:00 +0100"
    assert mb.read("Sent", 1) == data
    assert (await c(b"c APPEND Nope {1+}\r\nx")).startswith("c NO [TRYCREATE]")
    assert (await c("d NAMESPACE")).startswith('* NAMESPACE (("" "/")) NIL NIL')
    assert (await c("e ID NIL")).startswith('* ID ("name" "tui-mail relay"')


async def test_close_unselect_logout(c, mb):
    await c("a SELECT INBOX")
    await c("b STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert await c("c UNSELECT") == "c OK UNSELECT completed\r\n"
    assert len(mb.state("INBOX").uids) == 5
    await c("d SELECT INBOX")
    assert await c("e CLOSE") == "e OK CLOSE completed\r\n"
    assert len(mb.state("INBOX").uids) == 4
    assert (await c("f CLOSE")).startswith("f BAD")
    out = await c("g LOGOUT")
    assert out == "* BYE Logging out\r\ng OK Logout completed\r\n" and c.s.state == "logout"


async def test_idle_reports_changes(c, mb):
    await c("a SELECT INBOX")
    assert await c("b IDLE") == "+ idling\r\n"
    mb.append("INBOX", msg(7), [], None)
    c.s.sync(expunge=True)
    assert c.s.take_output() == b"* 6 EXISTS\r\n* 0 RECENT\r\n"
    c.s.idle_done(b"DONE")
    assert c.s.take_output() == b"b OK IDLE terminated\r\n"


@pytest.mark.parametrize("ref,pat,name,ok", [
    ("", "*", "a/b/c", True), ("", "%", "a/b", False), ("", "a/%", "a/b", True), ("", "a/%", "a/b/c", False),
    ("a/", "%", "a/b", True), ("", "inbox", "INBOX", True), ("", "In*", "INBOX", True), ("", "S*t", "Sent", True),
    ("", "s*", "Sent", False), ("", "*b", "a/b", True),
])
def test_list_patterns(ref, pat, name, ok):
    assert bool(list_pattern(ref, pat).match(name)) == ok


# ---------------------------------------------------------------------------------- fuzz
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

VERBS = ["NOOP", "SELECT", "EXAMINE", "FETCH", "UID FETCH", "STORE", "UID STORE", "SEARCH", "UID SEARCH",
         "COPY", "MOVE", "UID MOVE", "EXPUNGE", "UID EXPUNGE", "LIST", "LSUB", "STATUS", "CREATE", "DELETE",
         "RENAME", "SUBSCRIBE", "APPEND", "CLOSE", "UNSELECT", "CHECK", "ENABLE", "ID", "NAMESPACE", "FROB"]
ARGS = ["1", "*", "1:*", "2,4:5", "0", "INBOX", "Trash", '""', "()", "(FLAGS)", "FLAGS", "+FLAGS",
        "(\\Seen)", "BODY[]", "BODY[1.2]", "ALL", "SUBJECT", "x", "OR", "NOT", "(UID", ")", "{2+}\r\nab",
        "CHARSET", "UTF-8", "(CHANGEDSINCE 1)", "UID", "%", "Sent/x", "\\Deleted", "HEADER"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(VERBS), st.lists(st.sampled_from(ARGS), max_size=4)), max_size=6))
async def test_random_commands_always_get_a_tagged_answer(cmds):
    mb = MemoryMailbox()
    for i in range(1, 6):
        mb.append("INBOX", msg(i), [], None)
    cl = Client(mb)
    await cl("a LOGIN bob secret")
    for n, (verb, args) in enumerate(cmds):
        out = await cl(f"t{n} {verb} {' '.join(args)}".rstrip())
        last = out.rstrip("\r\n").rsplit("\r\n", 1)[-1]
        assert re.match(rf"t{n} (OK|NO|BAD)", last) or cl.s.idle_tag or "ContinuationNeeded" in out, out
    # still alive and sane
    assert (await cl("z NOOP")).endswith("z OK NOOP completed\r\n") or cl.s.idle_tag
