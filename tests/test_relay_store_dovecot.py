"""Dovecot is the oracle for ENVELOPE and BODYSTRUCTURE: the same messages, delivered to a
throwaway Dovecot and indexed by our store, must give the same structures (Dovecot's answer
parsed with imapclient's response parser). Skipped when Dovecot is not installed."""

from __future__ import annotations

import imaplib

from imapclient.response_parser import parse_response

from relay.store import MailStore
from tests.peers import dovecot, make_message  # noqa: F401  (fixture)

MESSAGES = [
    make_message(1),
    make_message(2, subject="=?utf-8?q?caf=C3=A9?= \"quoted\" (paren)",
                 sender='"Doe, John" <john@x.org>', to="undisclosed-recipients:;"),
    make_message(3, to="a@x.org, B <b@y.org>", extra_headers="Cc: c@z.org\r\nReply-To: r@x.org\r\n"
                 "In-Reply-To: <p@x>\r\nSender: s@x.org\r\nBcc: hidden@x.org\r\n"),
    make_message(4, body="no final newline"),
    b"Subject: no blank line, no body",
    b"\r\nbody only\r\n",
    (b"From: a@x.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
     b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
     b"preamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
     b"Content-Transfer-Encoding: quoted-printable\r\n\r\nh=C3=A9\r\nsecond\r\n"
     b"--b1\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n"
     b"--b2\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--b2--\r\n"
     b"--b1\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\n"
     b"Content-Disposition: attachment; filename=\"r.pdf\"\r\n"
     b"Content-Transfer-Encoding: base64\r\nContent-ID: <c1>\r\nContent-Description: report\r\n\r\n"
     b"AAAA\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nFrom: in@x.org\r\nSubject: inner\r\n\r\n"
     b"inner body\r\n--b1--\r\nepilogue\r\n"),
    (b"Content-Type: multipart/mixed; boundary=\"a b\"\r\n\r\n--a b\r\n"
     b"Content-Type: application/octet-stream; name*=utf-8''%E2%82%AC.txt\r\n"
     b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC.txt\r\n"
     b"Content-Language: en, de\r\nContent-Location: http://x/y\r\n\r\nabc\r\n"
     b"--a b\r\nContent-Disposition: inline\r\n\r\nx\r\n--a b--\r\n"),
    (b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: one\r\n\r\nx\r\n"
     b"--d\r\n\r\nSubject: two\r\n\r\ny\r\n--d--\r\n"),
    b"Subject: lf only\n\nline one\nline two\n",
    b"Content-Type: TEXT/HTML; CHARSET=ISO-8859-1\r\nSubject: upper\r\n\r\n<b>x</b>\r\n",
    (b"From: =?utf-8?q?J=C3=BCrgen?= <j@x.org> (a comment)\r\nTo: <bare@x.org>, local-only\r\n"
     b"Subject: folded\r\n\tacross lines\r\nContent-Transfer-Encoding: BASE64\r\n"
     b"Content-Type: text/plain; charset=\"utf-8\"; format=flowed\r\n\r\naGk=\r\n"),
    (b"Content-Type: multipart/mixed\r\nSubject: no boundary\r\n\r\nbody\r\n"),
    (b"Content-Type: multipart/related; boundary=x; type=\"text/html\"\r\n\r\n--x\r\n"
     b"Content-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative; boundary=y\r\n"
     b"Subject: deep\r\n\r\n--y\r\n\r\nplain\r\n--y\r\nContent-Type: text/html\r\n\r\n<i>h</i>\r\n"
     b"--y--\r\n\r\n--x--\r\n"),
    b"Content-Type: image/png\r\nContent-Disposition: inline; filename=a.png; size=3\r\n\r\nPNG",
    b"Subject: =?iso-8859-1?q?caf=E9?=\r\nDate: not a date\r\nMessage-ID: <x@y>\r\n\r\nhi\r\n",
]


def tuples(v):
    if isinstance(v, list):
        return tuple(tuples(x) for x in v)
    return v


def test_envelope_and_bodystructure_match_dovecot(dovecot, tmp_path):
    dovecot.add_user("bob", "pw")
    for m in MESSAGES:
        dovecot.deliver("bob", m)
    c = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    try:
        c.login("bob", "pw")
        c.select("INBOX", readonly=True)
        typ, data = c.uid("FETCH", "1:*", "(BODYSTRUCTURE ENVELOPE)")
        assert typ == "OK"
    finally:
        c.logout()
    theirs = {}
    parsed = parse_response(data)          # imaplib's list of lines and (line, literal) pairs
    for attrs in parsed[1::2]:
        d = dict(zip(attrs[::2], attrs[1::2]))
        theirs[d[b"UID"]] = d
    with MailStore(tmp_path / "mail") as store:
        u = store.user("bob@example.org")
        for i, m in enumerate(MESSAGES):
            (u.root / "new" / f"{1000 + i}.M1P1.host").write_bytes(m)
        st = u.state("INBOX")
        assert len(st.uids) == len(theirs) == len(MESSAGES)
        envs, bodies = u.envelopes("INBOX"), u.bodystructures("INBOX")
        for uid in st.uids:
            assert (uid, tuples(bodies[uid])) == (uid, theirs[uid][b"BODYSTRUCTURE"])
            assert (uid, tuples(envs[uid])) == (uid, theirs[uid][b"ENVELOPE"])


def test_dovecot_reads_our_maildir_folders_flags_and_bytes(dovecot, tmp_path):
    """Other Maildir tools see what we wrote: Dovecot serving a copy of our tree lists the same
    folders, the same flags (system flags and keywords, from the file names and the
    dovecot-keywords files) and the same bytes."""
    import os
    import re
    import shutil

    from relay.store.names import mutf7_decode, mutf7_encode

    flags = [[], ["\\Seen"], ["\\Seen", "\\Answered", "Work"], ["\\Flagged", "\\Draft"],
             ["\\Deleted", "\\Seen"]]
    with MailStore(tmp_path / "mail") as store:
        u = store.user("bob@example.org")
        u.create("Archive/2025")
        u.create("Entwürfe")
        for folder in ("INBOX", "Archive/2025", "Entwürfe"):
            for i, fl in enumerate(flags):
                u.append(folder, make_message(i), fl)
        u.copy("INBOX", [2], "Archive/2025", move=True)
        ours = {f.name for f in u.folders()}
        expected = {folder: [(sorted(r.flags), u.read(folder, r.uid))
                             for r in u.records(folder, u.state(folder).uids)] for folder in ours}
        root = u.root
    dovecot.add_user("bob", "pw")
    target = dovecot.maildir("bob")
    shutil.rmtree(target)
    shutil.copytree(root, target, ignore=shutil.ignore_patterns("tui-mail-*"))
    if os.getuid() == 0:
        for dirpath, dirnames, filenames in os.walk(target):
            for n in [dirpath] + [os.path.join(dirpath, x) for x in filenames]:
                os.chown(n, dovecot.uid, dovecot.gid)
    c = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    try:
        c.login("bob", "pw")
        typ, lines = c.list()
        theirs = set()
        for line in lines:
            name = line.decode().rsplit(" ", 1)[1].strip('"')
            theirs.add(mutf7_decode(name))
        assert theirs == ours
        for folder, want in expected.items():
            typ, _ = c.select('"' + mutf7_encode(folder) + '"', readonly=True)
            assert typ == "OK", folder
            if not want:
                continue
            typ, data = c.fetch("1:*", "(FLAGS BODY.PEEK[])")
            got = []
            for item in data:
                if isinstance(item, tuple):
                    fl = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode().split()
                    got.append((sorted(f for f in fl if f != "\\Recent"), item[1]))
            assert sorted(got) == sorted(want), folder     # UIDs are each server's own
    finally:
        c.logout()
