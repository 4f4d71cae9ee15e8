"""Dovecot is the oracle for SORT, THREAD and ESEARCH/ESORT: the same messages APPENDed with
the same INTERNALDATEs (so the same UIDs and arrival times) to Dovecot and to the relay's IMAP
server must give the same untagged answers to the same commands. Skipped when Dovecot is
not installed."""

from __future__ import annotations

import imaplib
import time

from tests.dovecot_oracle import answers_from_both, command
from tests.peers import dovecot  # noqa: F401  (fixture)

T0 = 1_700_000_000


def _msg(subject: str, frm: str = "a@x.org", to: str = "b@y.org", date: str | None = "",
         mid: str | None = "", extra: str = "", body: str = "body") -> bytes:
    h = [f"From: {frm}", f"To: {to}", f"Subject: {subject}"]
    if date is not None:
        h.append("Date: " + (date or "Mon, 13 Nov 2023 10:00:00 +0000"))
    if mid is not None:
        h.append(f"Message-ID: {mid}" if mid else f"Message-ID: <{abs(hash(subject + frm)) % 10**9}@x.org>")
    text = "\r\n".join(h) + "\r\n" + extra + "\r\n" + body + "\r\n"
    return text.encode("utf-8")


# (mtime offset, message): arrival order differs from UID order in places; some ties
MESSAGES = [
    (0, _msg("Hello world", "Zed <zed@x.org>", "Amy <amy@y.org>", "Tue, 14 Nov 2023 09:00:00 +0100",
             "<root@x.org>", "Cc: c1@z.org\r\n")),
    (5, _msg("Re: Hello world", "=?utf-8?q?=C3=89mile?= <emile@x.org>", "bob@y.org",
             "Tue, 14 Nov 2023 10:00:00 +0100", "<r1@x.org>",
             "In-Reply-To: <root@x.org>\r\nReferences: <root@x.org>\r\n")),
    (5, _msg("[list] Re: [list] Hello world (fwd)", "carl@x.org", "\"Dana D\" <dana@y.org>",
             "Tue, 14 Nov 2023 11:00:00 +0100", "<r2@x.org>",
             "References: <root@x.org> <r1@x.org>\r\n")),
    (2, _msg("Fwd: Another topic", "amy@x.org", "zoe@y.org", None, "<t2@x.org>",
             "Cc: Zed <a@z.org>\r\n", body="a much longer body " * 20)),
    (3, _msg("another topic", "Bea <bea@x.org>", "undisclosed-recipients:;",
             "Wed, 15 Nov 2023 08:00:00 -0500", "<t2b@x.org>")),
    (9, _msg("RE: [FWD: another topic]", "_under@x.org", "y@y.org", "not a date", "<t2c@x.org>",
             "In-Reply-To: <missing-parent@x.org>\r\n")),
    (9, _msg("Child of missing", "b@x.org", "c@y.org", "Thu, 16 Nov 2023 08:00:00 +0000",
             "<c1@x.org>", "References: <missing-parent@x.org>\r\n")),
    (7, _msg("Duplicate id", "d@x.org", "e@y.org", "Thu, 16 Nov 2023 09:00:00 +0000", "<root@x.org>")),
    (8, _msg("Loop a", "l@x.org", "m@y.org", "Fri, 17 Nov 2023 09:00:00 +0000", "<la@x.org>",
             "References: <lb@x.org>\r\n")),
    (8, _msg("Loop b", "l@x.org", "m@y.org", "Fri, 17 Nov 2023 10:00:00 +0000", "<lb@x.org>",
             "References: <la@x.org>\r\n")),
    (1, _msg("", "noname@x.org", "", "Sat, 18 Nov 2023 10:00:00 +0000", None)),
    (4, _msg("Re: re: Fw: hello WORLD", "\"Émile\" <z@x.org>", "Zoë <zoe@y.org>",
             "Sun, 19 Nov 2023 10:00:00 +0000", "<late@x.org>", "In-Reply-To: <nowhere@x.org>\r\n")),
    (6, _msg("=?utf-8?q?=C3=A9t=C3=A9?=", "=?iso-8859-1?q?Andr=E9?= <andre@x.org>", "b@y.org",
             "Mon, 20 Nov 2023 10:00:00 +0000", "<ete@x.org>")),
    (6, _msg("[PATCH 1/2] thing", "p@x.org", "q@y.org", "Mon, 20 Nov 2023 11:00:00 +0000",
             "<p1@x.org>", "Cc: \"Quoted, Name\" <qn@z.org>\r\n")),
    (6, _msg("[PATCH 2/2] thing", "p@x.org", "q@y.org", "Mon, 20 Nov 2023 11:00:00 +0000",
             "<p2@x.org>", "References: <p1@x.org>\r\nIn-Reply-To: <p1@x.org>\r\n")),
]

COMMANDS = [
    "SORT (ARRIVAL) UTF-8 ALL",
    "SORT (REVERSE ARRIVAL) UTF-8 ALL",
    "SORT (DATE) UTF-8 ALL",
    "SORT (REVERSE DATE) UTF-8 ALL",
    "SORT (SIZE) UTF-8 ALL",
    "SORT (SUBJECT) UTF-8 ALL",
    "SORT (REVERSE SUBJECT DATE) UTF-8 ALL",
    "SORT (FROM) UTF-8 ALL",
    "SORT (TO) UTF-8 ALL",
    "SORT (CC REVERSE ARRIVAL) UTF-8 ALL",
    "SORT (DISPLAYFROM) UTF-8 ALL",
    "SORT (REVERSE DISPLAYTO) UTF-8 ALL",
    "SORT (SUBJECT) UTF-8 FROM x.org NOT SUBJECT loop",
    "UID SORT (DATE SUBJECT) UTF-8 2:12",
    "THREAD REFERENCES UTF-8 ALL",
    "THREAD ORDEREDSUBJECT UTF-8 ALL",
    "UID THREAD REFERENCES UTF-8 ALL",
    "THREAD REFERENCES UTF-8 NOT SUBJECT hello",
    "SEARCH RETURN (COUNT MAX MIN) SUBJECT topic",
    "SEARCH RETURN () 3:7",
    "UID SEARCH RETURN (ALL COUNT) NOT SUBJECT loop",
    "SEARCH RETURN (COUNT) SUBJECT nothing-matches",
    "SORT RETURN (MIN MAX ALL COUNT) (REVERSE DATE) UTF-8 ALL",
    "UID SORT RETURN (ALL) (SUBJECT) UTF-8 ALL",
]


def _answers(port: int, user: str) -> dict[str, list[bytes]]:
    out = {}
    c = imaplib.IMAP4("127.0.0.1", port)
    try:
        c.login(user, "pw")
        for off, data in MESSAGES:      # same APPENDs: same UIDs and INTERNALDATEs on both
            when = time.gmtime(T0 + off * 3600)
            typ, _ = c.append("INBOX", "", '"' + time.strftime("%d-%b-%Y %H:%M:%S +0000", when) + '"',
                              data)
            assert typ == "OK"
        typ, _ = c.select("INBOX", readonly=True)
        assert typ == "OK"
        for cmd in COMMANDS:
            out[cmd] = [x for x in command(c, cmd)
                        if x.startswith(b"* ") and not x.startswith(b"* OK")]
    finally:
        c.logout()
    return out


async def test_sort_thread_esearch_match_dovecot(dovecot, tmp_path):
    theirs, ours = await answers_from_both(dovecot, tmp_path, _answers)
    assert all(ours[cmd] for cmd in COMMANDS)    # every command answered something
    for cmd in COMMANDS:
        assert (cmd, ours[cmd]) == (cmd, theirs[cmd])


QRESYNC_STEPS = ["STORE 2 +FLAGS.SILENT (\\Seen)", "STORE 5 +FLAGS.SILENT (\\Flagged)",
                 "STORE 3,6 +FLAGS.SILENT (\\Deleted)", "EXPUNGE"]


def _qresync_answers(port: int, user: str) -> dict[str, list[bytes]]:
    """The same QRESYNC dialogue on one server; MODSEQ values (each server counts its own)
    become N, UIDVALIDITY becomes V."""
    import re

    def norm(lines):
        # flag updates may come before or after VANISHED (both legal): compare them as a set,
        # without sequence numbers (each FETCH carries its UID under QRESYNC)
        keep = [x for x in lines if re.match(rb"\* (VANISHED|\d+ FETCH|\d+ EXPUNGE|OK \[CLOSED\])", x)]
        keep = [re.sub(rb"^\* \d+ FETCH", b"* n FETCH", re.sub(rb"MODSEQ \(\d+\)", b"MODSEQ (N)", x))
                for x in keep]
        return sorted(b"* OK [CLOSED]" if x.startswith(b"* OK [CLOSED]") else x for x in keep)

    a, b = imaplib.IMAP4("127.0.0.1", port), imaplib.IMAP4("127.0.0.1", port)
    out = {}
    try:
        for c in (a, b):
            c.login(user, "pw")
        for off, data in MESSAGES[:8]:
            a.append("INBOX", "", None, data)
        command(a, "ENABLE QRESYNC")
        sel = b"\n".join(command(a, "SELECT INBOX"))
        uv = int(re.search(rb"UIDVALIDITY (\d+)", sel).group(1))
        h0 = int(re.search(rb"HIGHESTMODSEQ (\d+)", sel).group(1))
        command(b, "SELECT INBOX")
        for step in QRESYNC_STEPS:
            command(b, step)
        out["NOOP"] = norm(command(a, "NOOP"))
        out["SELECT QRESYNC"] = norm(command(a, f"SELECT INBOX (QRESYNC ({uv} {h0}))"))
        out["SELECT QRESYNC known"] = norm(command(a, f"SELECT INBOX (QRESYNC ({uv} {h0} 1:4))"))
        out["CHANGEDSINCE VANISHED"] = norm(command(a, f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {h0} VANISHED)"))
        command(b, "STORE 1 +FLAGS.SILENT (\\Answered)")
        out["NOOP flags"] = norm(command(a, "NOOP"))
    finally:
        for c in (a, b):
            c.logout()
    return out


async def test_qresync_matches_dovecot(dovecot, tmp_path):
    """VANISHED instead of EXPUNGE, SELECT (QRESYNC …) with and without known UIDs, UID FETCH
    (CHANGEDSINCE … VANISHED) and flag updates with UIDs: the same lines as Dovecot."""
    theirs, ours = await answers_from_both(dovecot, tmp_path, _qresync_answers)
    assert theirs["NOOP"] and theirs["SELECT QRESYNC"]
    for k in theirs:
        assert (k, ours[k]) == (k, theirs[k])


BINARY_MESSAGES = [
    (b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
     b"caf=C3=A9 soft=\r\nbreak, trailing   \r\n=3D sign=20\r\nlast line=\r\n"),
    (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n"
     b"AAEC/w==\r\n--b\r\nContent-Transfer-Encoding: BASE64\r\nContent-Type: text/plain\r\n\r\n"
     b"aGVs\r\nbG8g d29y\r\nbGQ=\r\n--b\r\nContent-Transfer-Encoding: 8bit\r\n\r\nr\xc3\xa4w\r\n--b--\r\n"),
    (b"Content-Type: multipart/alternative; boundary=x\r\n\r\n--x\r\nContent-Type: message/rfc822\r\n\r\n"
     b"Subject: inner\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nin=\r\nner\r\n--x--\r\n"),
]
BINARY_FETCHES = ["FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1] BINARY.PEEK[1]<3.7>)",
                  "FETCH 2 (BINARY.PEEK[1] BINARY.SIZE[1] BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[3])",
                  "FETCH 3 (BINARY.PEEK[1] BINARY.SIZE[1] BINARY.PEEK[1.1] BINARY.SIZE[1.1])",
                  "FETCH 2 (BINARY.PEEK[] BINARY.SIZE[])"]


def _binary_answers(port: int, user: str) -> dict[str, bytes]:
    c = imaplib.IMAP4("127.0.0.1", port)
    out = {}
    try:
        c.login(user, "pw")
        for data in BINARY_MESSAGES:
            c.append("INBOX", "", None, data)
        c.select("INBOX", readonly=True)
        for cmd in BINARY_FETCHES:
            typ, data = c._simple_command(*cmd.split(" ", 1))
            assert typ == "OK", (cmd, data)
            _, got = c._untagged_response(typ, data, "FETCH")
            out[cmd] = b"|".join(x if isinstance(x, bytes) else b"<>".join(x) for x in got)
    finally:
        c.logout()
    return out


async def test_binary_matches_dovecot(dovecot, tmp_path):
    """BINARY[part]/BINARY.SIZE: quoted-printable (soft breaks, =XX, trailing spaces),
    base64 (line breaks, spaces, upper-case CTE), 8bit, a message/rfc822 part and its inside,
    partial ranges, and BINARY[] of the whole message: the same bytes as Dovecot."""
    theirs, ours = await answers_from_both(dovecot, tmp_path, _binary_answers)
    for cmd in BINARY_FETCHES:
        assert (cmd, ours[cmd]) == (cmd, theirs[cmd])


def _notify_answers(port: int, user: str) -> list[bytes]:
    """NOTIFY SET STATUS, then another session appends to Sent, flags and expunges there: the
    STATUS lines for Sent, as pushed without a command (UIDVALIDITY and MODSEQs normalised)."""
    import re
    import socket

    a, b = imaplib.IMAP4("127.0.0.1", port), imaplib.IMAP4("127.0.0.1", port)
    got: list[bytes] = []

    def sent_status(lines):
        return [re.sub(rb"(UIDVALIDITY|HIGHESTMODSEQ) \d+", rb"\1 N", x) for x in lines
                if x.startswith(b"* STATUS Sent ")]

    def wait_status(until: bytes):
        """Read pushed lines until a STATUS for Sent contains ``until``; keep that one (servers
        may report a burst of changes in one or several lines)."""
        a.sock.settimeout(10)
        while True:
            line = a.readline().rstrip(b"\r\n")
            if line.startswith(b"* STATUS Sent ") and until in line:
                got.extend(sent_status([line]))
                return

    try:
        for c in (a, b):
            c.login(user, "pw")
        command(a, "SELECT INBOX")
        got += sent_status(command(a, "NOTIFY SET STATUS (SELECTED (MessageNew MessageExpunge)) "
                                  "(PERSONAL (MessageNew MessageExpunge FlagChange))"))
        b.append("Sent", "", None, MESSAGES[0][1])
        wait_status(b"MESSAGES 1")
        b.select("Sent")
        b.store("1", "+FLAGS", "\\Seen")
        wait_status(b"UNSEEN 0")
        b.store("1", "+FLAGS", "\\Deleted")
        b.expunge()
        wait_status(b"MESSAGES 0")
        a.sock.settimeout(None)
    finally:
        for c in (a, b):
            try:
                c.logout()
            except (OSError, imaplib.IMAP4.error, socket.timeout):
                pass
    return got


async def test_notify_status_matches_dovecot(dovecot, tmp_path):
    theirs, ours = await answers_from_both(dovecot, tmp_path, _notify_answers, bus=True)
    assert len(theirs) == 4
    assert ours == theirs


LIST_SETUP = ["CREATE T", "CREATE T/a", "CREATE T/b", "CREATE T/b/c", "CREATE T/e", "CREATE T/d", "CREATE T/e/f", "SUBSCRIBE T/a", "SUBSCRIBE T/b/c",
              "SUBSCRIBE T/e/f", "SUBSCRIBE T/d", "DELETE T/d", "APPEND"]
LIST_COMMANDS = [
    'LIST "" "T/*"',
    'LIST (SUBSCRIBED) "" "T/*"',
    'LIST (SUBSCRIBED RECURSIVEMATCH) "" "T/%"',
    'LIST (SUBSCRIBED RECURSIVEMATCH) "" "T/%" RETURN (CHILDREN)',
    'LIST "" ("T/a" "T/b") RETURN (SUBSCRIBED CHILDREN)',
    'LIST "" "T/%" RETURN (STATUS (MESSAGES UNSEEN UIDNEXT))',
    'LIST (RECURSIVEMATCH SUBSCRIBED) "T/" "%"',
]


def _list_answers(port: int, user: str) -> dict[str, list[bytes]]:
    c = imaplib.IMAP4("127.0.0.1", port)
    out = {}
    try:
        c.login(user, "pw")
        for step in LIST_SETUP:
            if step == "APPEND":
                c.append("T/a", "", None, MESSAGES[0][1])
                continue
            typ, _ = c._simple_command(*step.split(" ", 1))
            assert typ == "OK", step
        for cmd in LIST_COMMANDS:
            out[cmd] = sorted(command(c, cmd))
    finally:
        c.logout()
    return out


async def test_list_extended_matches_dovecot(dovecot, tmp_path):
    """LIST-EXTENDED selection and return options and LIST-STATUS over a small tree with a
    deleted-but-subscribed mailbox: the same LIST/STATUS lines as Dovecot (order aside)."""
    theirs, ours = await answers_from_both(dovecot, tmp_path, _list_answers)
    for cmd in LIST_COMMANDS:
        assert (cmd, ours[cmd]) == (cmd, theirs[cmd])
