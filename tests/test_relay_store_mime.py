"""Pure tests for relay.store.mime (ENVELOPE, BODYSTRUCTURE, SEARCH columns), names and maildir
name helpers: byte strings in, values out."""

from __future__ import annotations

from pathlib import Path

import email
import email.policy
from datetime import datetime, timezone

import pytest

from relay.store import maildir, mime, names
from relay.store.types import StoreError

SIMPLE = (b"Return-Path: <a@x.org>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0100\r\n"
          b"From: Alice Example <alice@x.org>\r\nTo: bob@y.org, \"Carol C\" <carol@y.org>\r\n"
          b"Cc: dave@z.org\r\nSubject: =?utf-8?q?caf=C3=A9?= and\r\n more\r\n"
          b"Message-ID: <m1@x.org>\r\nIn-Reply-To: <m0@x.org>\r\n\r\nline one\r\nline two\r\n")

MULTI = (b"From: a@x.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
         b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
         b"preamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
         b"Content-Transfer-Encoding: quoted-printable\r\n\r\nh=C3=A9\r\nsecond\r\n"
         b"--b1\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n"
         b"--b2\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--b2--\r\n"
         b"--b1\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\n"
         b"Content-Disposition: attachment; filename=\"r.pdf\"\r\n"
         b"Content-Transfer-Encoding: base64\r\nContent-ID: <c1>\r\n\r\nAAAA\r\n"
         b"--b1\r\nContent-Type: message/rfc822\r\n\r\nFrom: in@x.org\r\nSubject: inner\r\n\r\n"
         b"inner body\r\n--b1--\r\nepilogue\r\n")


def test_envelope_fields_raw_and_unfolded():
    env = mime.envelope(SIMPLE)
    assert env[0] == b"Mon, 23 Nov 2026 09:00:00 +0100"
    assert env[1] == b"=?utf-8?q?caf=C3=A9?= and more"
    assert env[2] == [[b"Alice Example", None, b"alice", b"x.org"]]
    assert env[3] == env[2] and env[4] == env[2]          # sender, reply-to default to from
    assert env[5] == [[None, None, b"bob", b"y.org"], [b"Carol C", None, b"carol", b"y.org"]]
    assert env[6] == [[None, None, b"dave", b"z.org"]]
    assert env[7] is None
    assert env[8] == b"<m0@x.org>" and env[9] == b"<m1@x.org>"


def test_envelope_of_headerless_message():
    env = mime.envelope(b"\r\njust a body\r\n")
    assert env == [None] * 10


def test_bodystructure_single_part_counts_exact_bytes():
    bs = mime.bodystructure(SIMPLE)
    body = SIMPLE.split(b"\r\n\r\n", 1)[1]
    assert bs[:8] == [b"text", b"plain", [b"charset", b"us-ascii"], None, None, b"7bit",
                      len(body), 2]


def test_bodystructure_lf_only_and_missing_final_newline():
    bs = mime.bodystructure(b"Subject: x\n\nabc\ndef")
    assert bs[6] == 8 and bs[7] == 1          # sizes as sent with CRLF; last line unterminated


def test_bodystructure_nested_multipart():
    bs = mime.bodystructure(MULTI)
    text, alt, pdf, msg = bs[:4]
    assert bs[4] == b"mixed" and bs[5] == [b"boundary", b"b1"]
    assert text[:8] == [b"text", b"plain", [b"charset", b"utf-8"], None, None,
                        b"quoted-printable", len(b"h=C3=A9\r\nsecond"), 1]
    assert alt[0][:2] == [b"text", b"html"] and alt[1] == b"alternative"
    assert alt[0][6] == len(b"<p>x</p>")
    assert pdf[:7] == [b"application", b"pdf", [b"name", b"r.pdf"], b"<c1>", None, b"base64", 4]
    assert pdf[8] == [b"attachment", [b"filename", b"r.pdf"]]
    inner = b"From: in@x.org\r\nSubject: inner\r\n\r\ninner body"
    assert msg[:7] == [b"message", b"rfc822", None, None, None, b"7bit", len(inner)]
    assert msg[7][1] == b"inner" and msg[7][2] == [[None, None, b"in", b"x.org"]]
    assert msg[8][:2] == [b"text", b"plain"] and msg[8][6] == len(b"inner body")
    assert msg[9] == 3


def test_bodystructure_part_bytes_decode_like_email_package():
    m = email.message_from_bytes(MULTI, policy=email.policy.compat32)
    text = mime.bodystructure(MULTI)[0]
    start = MULTI.index(b"h=C3=A9")
    raw = MULTI[start:start + text[6]]
    assert raw == b"h=C3=A9\r\nsecond"
    assert m.get_payload()[0].get_payload(decode=True) == "hé\r\nsecond".encode()


def test_multipart_without_close_delimiter_and_digest_default():
    data = (b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n"
            b"Subject: one\r\n\r\nx\r\n--d\r\n\r\nSubject: two\r\n\r\ny")
    bs = mime.bodystructure(data)
    assert bs[2] == b"digest"
    assert [p[:2] for p in bs[:2]] == [[b"message", b"rfc822"]] * 2
    assert bs[0][7][1] == b"one" and bs[1][7][1] == b"two"


def test_multipart_with_no_parts_still_has_one():
    bs = mime.bodystructure(b"Content-Type: multipart/mixed; boundary=q\r\n\r\nnothing\r\n")
    assert bs[0][:2] == [b"text", b"plain"] and bs[1] == b"mixed"


def test_header_fields_decoded_for_search():
    h = mime.header_fields(SIMPLE)
    assert h.subject == "café and more"
    assert h.from_ == "Alice Example <alice@x.org>"
    assert "carol@y.org" in h.to and h.cc == "dave@z.org" and h.bcc == ""
    assert h.message_id == "<m1@x.org>"
    assert h.date == datetime(2026, 11, 23, 8, 0, tzinfo=timezone.utc).timestamp()


def test_header_fields_bad_date_and_8bit_subject():
    h = mime.header_fields("Date: yesterday\r\nSubject: Grüße\r\n\r\n".encode())
    assert h.date is None and h.subject == "Grüße"


@pytest.mark.parametrize("name,dirname", [
    ("Sent", ".Sent"), ("Archive/2025", ".Archive.2025"), ("Entwürfe", ".Entw&APw-rfe"),
    ("a.b/c", ".a&AC4-b.c"), ("R&D", ".R&-D"),
])
def test_folder_dirnames_round_trip(name, dirname):
    assert names.to_dirname(name) == dirname
    assert names.from_dirname(dirname) == name


@pytest.mark.parametrize("bad", ["", "../x", "a//b", "a/../b", "x/", "/x", "a\x00b", "a*", "a%",
                                 "~root", "a\\b", " lead", "x" * 600])
def test_unsafe_names_refused(bad):
    with pytest.raises(StoreError):
        names.normalize(bad)


def test_inbox_canonical_and_root_dir():
    assert names.normalize("inbox") == "INBOX"
    assert names.normalize("Inbox/Sub") == "INBOX/Sub"
    assert names.to_dirname("iNbOx") == ""
    assert names.from_dirname(".") is None and names.from_dirname("cur") is None


def test_maildir_info_round_trip():
    flags = {"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Forwarded", "Work"}
    name = maildir.cur_name("123.M1P2.host", flags)
    assert name == "123.M1P2.host:2,DFPRST"
    base, info = maildir.split_name(name)
    assert base == "123.M1P2.host"
    assert maildir.flags_from_info(info) == flags - {"Work"}
    assert maildir.split_name("plain") == ("plain", "")
    assert maildir.new_unique() != maildir.new_unique()


def test_imap_wire_encoding_matches_the_imap_encoder():
    from relay.imap.parser import encode
    for data in (SIMPLE, MULTI, b'Subject: "q" \\ back\r\nFrom: =?utf-8?q?x?= <a@b>\r\n\r\n',
                 "Subject: Grüße\r\n\r\n".encode(), b"Subject: " + b"x" * 1500 + b"\r\n\r\n"):
        env, body = mime.envelope(data), mime.bodystructure(data)
        assert mime.imap_encode(env) == encode(env)
        assert mime.imap_encode(body) == encode(body)
    assert mime.imap_encode([None, 1, b'a"b\\c', "é"]) == b'(NIL 1 "a\\"b\\\\c" {2}\r\n\xc3\xa9)'


def test_cached_wire_forms_are_what_the_server_sends():
    """The index caches ENVELOPE/BODYSTRUCTURE in exactly the server's form (no spaces between
    addresses or multipart parts), so FETCH sends the column as it is."""
    from relay.imap.parser import encode_body, encode_envelope
    many = (b"From: a@x.org, \"B b\" <b@x.org>\r\nTo: grp: c@x.org, d@x.org;, e@y.org\r\n"
            b"Cc: f@x.org, g@x.org\r\nSubject: \xc3\xa9 8-bit\r\n\r\nx\r\n")
    corpus = [p.read_bytes() for p in sorted((Path(__file__).parent / "corpus").glob("*.eml"))]
    for data in [SIMPLE, MULTI, many, b"", b"\r\n"] + corpus:
        env, body, _ = mime.analyse(data)
        assert mime.envelope_wire(env) == encode_envelope(env)
        assert mime.body_wire(body) == encode_body(body)
    env = mime.envelope(many)
    assert b'"x.org")("B b"' in mime.envelope_wire(env)
    assert b")(" in mime.body_wire(mime.bodystructure(MULTI))


def test_garbage_never_breaks_analysis():
    import random
    rnd = random.Random(7)
    pieces = [b"Content-Type: multipart/mixed; boundary=", b"b", b"\r\n", b"\n", b"--b", b"--b--",
              b":", b";", b'"', b"From: ", b"To: ", b"<", b">", b"(", b")", b",", b"=?utf-8?q?",
              b"?=", b"\xff\xfe", b"\x00", b"message/rfc822", b"Content-Type: ", b"text/plain",
              b"charset=", b"Subject: ", b" ", b"\t", b"a@b", b"Date: ", b"Mon, 99 Foo 2026",
              b"Content-Disposition: ", b"attachment;", b"grp:", b"\\"]
    for _ in range(3000):
        data = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 60)))
        env, body, fields = mime.analyse(data)
        assert len(env) == 10 and isinstance(body, list)
        assert mime.imap_encode(env).startswith(b"(") and mime.imap_encode(body).startswith(b"(")


def test_deep_nesting_is_capped():
    data = b"Content-Type: message/rfc822\r\n\r\n" * 200 + b"Subject: bottom\r\n\r\nx"
    body = mime.bodystructure(data)
    depth = 0
    while isinstance(body, list) and len(body) > 8 and isinstance(body[8], list) and body[0] == b"message":
        body = body[8]
        depth += 1
    assert 0 < depth <= 33


def test_deep_chain_encodes_as_a_valid_body():
    """Issue 10 item 12: the part cut off by the depth cap is one opaque part, so BODY and
    BODYSTRUCTURE still encode (a message/rfc822 there used to raise TypeError)."""
    from relay.imap.fetch import strip_extensions
    from relay.imap.parser import encode_body
    data = b"Content-Type: message/rfc822\r\n\r\n" * 40 + b"Subject: bottom\r\n\r\nx"
    bs = mime.bodystructure(data)
    wire = encode_body(bs) + encode_body(strip_extensions(bs))
    assert b'"application" "octet-stream"' in wire and wire.count(b"(") == wire.count(b")")


def test_rfc2231_continuations_merge_as_dovecot():
    assert mime.merge_rfc2231([("name*0*", "utf-8''%E2%82"), ("name*1*", "%AC"), ("name*2", ".txt"),
                               ("t*0", "a b"), ("t*1", " c"), ("x", "y")]) == [
        ("name*", "utf-8''%E2%82%AC.txt"), ("t", "a b c"), ("x", "y")]
    broken = [("n*1", "b"), ("n*2", "c")]          # no *0: left as written
    assert mime.merge_rfc2231(broken) == broken


def test_section_numbers_address_the_tree():
    """Part numbers (RFC 3501 6.4.5): a top-level message/rfc822 is part 1 and its own parts go
    on from there; an empty multipart has a placeholder part 1 with no bytes."""
    data = (b"Content-Type: message/rfc822\r\n\r\nSubject: in\r\n"
            b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\r\none\r\n--q\r\nX: 2\r\n\r\ntwo\r\n--q--\r\n")
    root = mime.parse_tree(data)
    one, two = mime.find_part(root, (1, 1)), mime.find_part(root, (1, 2))
    assert data[one.bs:one.be] == b"one" and data[two.hs:two.he] == b"X: 2\r\n\r\n"
    assert mime.find_part(root, (1, 3)) is None and mime.find_part(root, (2,)) is None
    empty = mime.parse_tree(b"Content-Type: multipart/mixed; boundary=q\r\n\r\nnothing\r\n")
    ph = mime.find_part(empty, (1,))
    assert ph is not None and ph.hs == ph.he == ph.bs == ph.be


def test_address_text_is_what_search_matches():
    assert mime.address_text(b"<user (c)@ (c) example.org>, x@y.z (Real)") == "user@example.org, Real <x@y.z>"
    assert mime.address_text(b"=?utf-8?q?J=C3=BCrgen?= <j@x.de>, grp: a@b.c;") == "Jürgen <j@x.de>, grp:, a@b.c"


def test_header_fields_split_like_the_compat32_parser():
    """mime.parse_header is a fast copy of BytesHeaderParser(policy=compat32)'s rules."""
    import random
    from email.parser import BytesHeaderParser
    from email.policy import compat32
    parser = BytesHeaderParser(policy=compat32)
    rnd = random.Random(11)
    pieces = [b"Subject: x", b"\r\n", b"\n", b"\r", b" cont", b"\tcont", b"From ", b"From: a@b",
              b":bad", b"noc", b"X-A:", b"\xff", b"To: a", b"=?utf-8?q?x?=", b"  ", b"\x00",
              b"Content-Type: text/plain; charset=x"]
    for _ in range(3000):
        raw = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 14)))
        want = [(k, str(v)) for k, v in parser.parsebytes(raw).raw_items()]
        assert list(mime.parse_header(raw).raw_items()) == want, raw
