"""Pure tests of relay.imap.fetch (sections, partials, BODYSTRUCTURE) and relay.imap.search."""

from __future__ import annotations

import datetime as dt

import pytest

from relay.imap import fetch as F
from relay.imap.parser import encode_body
from relay.store import mime
from relay.imap.parser import CommandReader, encode, parse_fetch_items, parse_search
from relay.imap.search import BytesTarget, Evaluator, SearchContext, body_text, decode_text

MULTI = (
    b"From: Alice <alice@crepes.fr>\r\n"
    b"To: Bob <bob@hamburger.edu>, carol@x.org\r\n"
    b"Subject: =?utf-8?q?Cr=C3=AApes?= and ketchup\r\n"
    b"Date: Mon, 05 Jan 2026 10:00:00 +0100\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Caf=C3=A9 au lait\r\n"
    b"--XX\r\n"
    b"Content-Type: multipart/alternative; boundary=YY\r\n"
    b"\r\n"
    b"--YY\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"plain part\r\n"
    b"--YY\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>html part</p>\r\n"
    b"--YY--\r\n"
    b"--XX\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b"From: Dave <dave@d.org>\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--XX\r\n"
    b"Content-Type: application/pdf; name=\"a b.pdf\"\r\n"
    b"Content-Disposition: attachment; filename=\"a b.pdf\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--XX--\r\n"
    b"epilogue\r\n"
)

SIMPLE = b"Subject: hi\r\nX-Spam: yes\r\n  folded\r\nFrom: a@b.c\r\n\r\nline one\r\nline two\r\n"


def att(text: str):
    r = CommandReader()
    r.receive_data(b"a FETCH 1 " + text.encode() + b"\r\n")
    (cmd,) = list(r.events())
    (a,) = parse_fetch_items(cmd.args[1])
    return a


@pytest.mark.parametrize("spec,expected", [
    ("BODY[]", MULTI),
    ("BODY[1]", b"Caf=C3=A9 au lait"),
    ("BODY[1.MIME]", b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"),
    ("BODY[2.1]", b"plain part"),
    ("BODY[2.2]", b"<p>html part</p>"),
    ("BODY[2.2.MIME]", b"Content-Type: text/html\r\n\r\n"),
    ("BODY[3]", b"Subject: inner\r\nFrom: Dave <dave@d.org>\r\n\r\ninner body"),
    ("BODY[3.HEADER]", b"Subject: inner\r\nFrom: Dave <dave@d.org>\r\n\r\n"),
    ("BODY[3.TEXT]", b"inner body"),
    ("BODY[3.1]", b"inner body"),
    ("BODY[3.HEADER.FIELDS (FROM)]", b"From: Dave <dave@d.org>\r\n\r\n"),
    ("BODY[4]", b"JVBERi0xLjQK"),
    ("BODY[HEADER.FIELDS (SUBJECT DATE)]",
     b"Subject: =?utf-8?q?Cr=C3=AApes?= and ketchup\r\nDate: Mon, 05 Jan 2026 10:00:00 +0100\r\n\r\n"),
    ("BODY[1]<0.4>", b"Caf="), ("BODY[1]<4.100>", b"C3=A9 au lait"), ("BODY[1]<100.5>", b""),
    ("BODY[5]", None), ("BODY[2.3]", None), ("BODY[1.2]", None),
])
def test_sections_multipart(spec, expected):
    a = att(spec)
    got = F.section_bytes(MULTI, a)
    if expected is None:
        assert got is None
    else:
        assert F.apply_partial(got, a.partial) == expected


def test_header_and_text_sections():
    assert F.section_bytes(MULTI, att("BODY[TEXT]")).startswith(b"preamble\r\n--XX")
    hdr = F.section_bytes(MULTI, att("BODY[HEADER]"))
    assert hdr.endswith(b'boundary="XX"\r\n\r\n') and MULTI.startswith(hdr)
    not_fields = F.section_bytes(MULTI, att("BODY[HEADER.FIELDS.NOT (SUBJECT DATE MIME-VERSION content-type)]"))
    assert not_fields == b"From: Alice <alice@crepes.fr>\r\nTo: Bob <bob@hamburger.edu>, carol@x.org\r\n\r\n"


@pytest.mark.parametrize("spec,expected", [
    ("BODY[1]", b"line one\r\nline two\r\n"), ("BODY[TEXT]", b"line one\r\nline two\r\n"),
    ("BODY[HEADER.FIELDS (X-SPAM)]", b"X-Spam: yes\r\n  folded\r\n\r\n"),
    ("BODY[HEADER.FIELDS (NOPE)]", b"\r\n"), ("BODY[2]", None),
])
def test_sections_simple(spec, expected):
    assert F.section_bytes(SIMPLE, att(spec)) == expected


def test_top_level_header_and_text_need_no_mime_parse():
    """BODY[HEADER], [TEXT], [HEADER.FIELDS (…)] and [HEADER.FIELDS.NOT (…)] of the message
    itself come from split_header alone: the same bytes as through the MIME tree's root."""
    from pathlib import Path
    from relay.imap.parser import FetchAtt
    corpus = [p.read_bytes() for p in sorted((Path(__file__).parent / "corpus").glob("*.eml"))]
    for data in [MULTI, b"", b"\r\n", b"Subject: x\r\n", b"Subject: x\n\nbody\n", b"\r\nbody"] + corpus:
        root = mime.parse_tree(data)
        for text in ("HEADER", "TEXT", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            att = FetchAtt("BODY[]", (), text, ("SUBJECT", "FROM") if "FIELDS" in text else ())
            want = {"HEADER": data[root.hs:root.he], "TEXT": data[root.bs:root.be]}.get(text)
            if want is None:
                want = F._filter_fields(data[root.hs:root.he], att.fields, text.endswith(".NOT"))
            assert F.section_bytes(data, att) == want


def test_lf_only_message():
    data = b"Subject: x\n\nbody\n"
    assert F.section_bytes(data, att("BODY[HEADER]")) == b"Subject: x\n\n"
    assert F.section_bytes(data, att("BODY[TEXT]")) == b"body\n"


def test_no_body():
    data = b"Subject: x\r\n"
    assert F.section_bytes(data, att("BODY[HEADER]")) == data
    assert F.section_bytes(data, att("BODY[TEXT]")) == b""


def test_bodystructure_multipart():
    bs = mime.bodystructure(MULTI)      # the one BODYSTRUCTURE builder (relay.store.mime)
    wire = encode(bs)
    # as Dovecot: lower case, line count = line breaks (the CRLF before a boundary is not content)
    assert wire.startswith(b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 17 0 NIL NIL NIL NIL)'
                           b' (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0')
    assert b'"message" "rfc822" NIL NIL NIL "7bit" 53 (NIL "inner" (("Dave" NIL "dave" "d.org"))' in wire
    assert b' 3 NIL NIL NIL NIL) ("application"' in wire
    assert b'"application" "pdf" ("name" "a b.pdf") NIL NIL "base64" 12 NIL ("attachment" ("filename" "a b.pdf")) NIL NIL)' in wire
    assert wire.endswith(b' "mixed" ("boundary" "XX") NIL NIL NIL)')
    body = encode_body(F.strip_extensions(bs))
    assert body.endswith(b' "mixed")') and b'"alternative")' in body


def test_envelope():
    env = mime.envelope(MULTI)
    assert env[0] == b"Mon, 05 Jan 2026 10:00:00 +0100"
    assert env[1] == b"=?utf-8?q?Cr=C3=AApes?= and ketchup"
    assert env[2] == [[b"Alice", None, b"alice", b"crepes.fr"]] == env[3] == env[4]
    assert env[5] == [[b"Bob", None, b"bob", b"hamburger.edu"], [None, None, b"carol", b"x.org"]]
    assert env[6] is None and env[9] is None


def test_decode_and_body_text():
    assert decode_text(b"=?utf-8?q?Cr=C3=AApes?= and ketchup") == "Crêpes and ketchup"
    assert decode_text(b"=?bogus?q?x?=") == "=?bogus?q?x?="
    text = body_text(MULTI)
    assert "Café au lait" in text and "html part" in text and "inner body" in text and "JVBER" not in text


DAY = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.timezone.utc)


def search(query: bytes, data=MULTI, flags=(), uid=7, seq=3, count=10, recent=frozenset()):
    r = CommandReader()
    r.receive_data(b"a SEARCH " + query + b"\r\n")
    (cmd,) = list(r.events())
    _, keys = parse_search(cmd.args)
    target = BytesTarget(data, uid=uid, flags=flags, internaldate=DAY, modseq=4)
    return Evaluator(keys, SearchContext(count, 20, frozenset(recent))).matches(seq, target)


@pytest.mark.parametrize("query,ok", [
    (b"ALL", True), (b"SUBJECT crepes", False), ('CHARSET UTF-8 SUBJECT "CRÊPES"'.encode(), True),
    (b"SUBJECT ketchup", True), (b"SUBJECT mustard", False), (b"FROM alice@crepes", True),
    (b"FROM ALICE", True), (b"TO carol", True), (b"CC carol", False), (b"BCC x", False),
    (b'HEADER MIME-Version ""', True), (b'HEADER X-Nope ""', False), (b"HEADER content-type mixed", True),
    (b"BODY lait", True), ('CHARSET UTF-8 BODY "café"'.encode(), True), (b"BODY preamble", False),
    (b"BODY inner", True), (b"TEXT alice", True), (b"TEXT lait", True), (b"TEXT zzz", False),
    (b"LARGER 100", True), (b"SMALLER 100", False), (b"LARGER 100000", False),
    (b"ON 5-Jan-2026", True), (b"BEFORE 5-Jan-2026", False), (b"SINCE 5-Jan-2026", True),
    (b"BEFORE 6-Jan-2026", True), (b"SENTON 5-Jan-2026", True), (b"SENTBEFORE 5-Jan-2026", False),
    (b"SENTSINCE 6-Jan-2026", False), (b"SEEN", False), (b"UNSEEN", True), (b"NOT SEEN", True),
    (b"OR SEEN ANSWERED", False), (b"OR SEEN SUBJECT ketchup", True), (b"3", True), (b"1:2", False),
    (b"1:*", True), (b"*", False), (b"UID 7", True), (b"UID 1:6", False), (b"UID 5:*", True),
    (b"MODSEQ 4", True), (b"MODSEQ 5", False), (b"KEYWORD $Work", False), (b"UNKEYWORD $Work", True),
    (b"NEW", False), (b"OLD", True), (b"RECENT", False), (b"(SUBJECT ketchup FROM alice)", True),
    (b"(SUBJECT ketchup FROM bob)", False), (b"NOT (SUBJECT ketchup FROM bob)", True),
])
def test_search_eval(query, ok):
    assert search(query) is ok


def test_search_flags_and_recent():
    assert search(b"SEEN FLAGGED KEYWORD $Work", flags={"\\Seen", "\\Flagged", "$Work"})
    assert search(b"NEW", recent={7}) and search(b"RECENT", recent={7}) and not search(b"OLD", recent={7})
    assert not search(b"NEW", recent={7}, flags={"\\Seen"})


def test_search_without_date_header():
    # a message without Date: counts as sent at the epoch (Dovecot's behaviour)
    assert not search(b"SENTSINCE 1-Jan-2000", data=SIMPLE)
    assert search(b"SENTBEFORE 1-Jan-2000", data=SIMPLE) and search(b"SENTON 1-Jan-1970", data=SIMPLE)
    assert search(b"HEADER X-Spam folded", data=SIMPLE)


def test_strip_extensions_gives_body():
    body = F.strip_extensions(mime.bodystructure(MULTI))
    assert body[-1] == b"mixed" and body[1][-1] == b"alternative"
    assert body[0] == [b"text", b"plain", [b"charset", b"utf-8"], None, None, b"quoted-printable", 17, 0]
    assert F.strip_extensions(mime.bodystructure(SIMPLE)) == mime.bodystructure(SIMPLE)[:8]
