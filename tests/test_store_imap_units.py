"""Pure parts of the IMAP store: header-block summaries, payload decoding, role assignment,
ESEARCH parsing, and the protocol trace's credential masking. No sockets."""

from __future__ import annotations

from datetime import datetime, timezone

from tui_mail.store.base import FolderInfo
from tui_mail.store.imap import (HEADER_KEY, _assign_roles, _body_text, _esearch_all, decode_payload,
                                 decode_words, parse_appenduid, parse_header_block, summary_from_headers)
from tui_mail.store.trace import MASK, TraceMasker


def test_header_block_unfolds_keeps_first_and_survives_8bit():
    raw = (b"Subject: =?utf-8?q?Caf=C3=A9?=\r\n  and more\r\nSubject: second\r\n"
           b"From: J\xe9r\xf4me <j@x.fr>\r\nbroken line\r\n\r\n")
    h = parse_header_block(raw)
    assert h["subject"] == "=?utf-8?q?Caf=C3=A9?= and more"
    assert h["from"] == "Jérôme <j@x.fr>"
    assert decode_words(h["subject"]) == "Café and more"


def test_summary_from_headers():
    block = (b"Date: Tue, 06 Jan 2026 10:00:00 +0100\r\nFrom: \"Doe, Jane\" <jane@example.com>\r\n"
             b"To: a@x, =?iso-8859-1?q?J=F6rg?= <joerg@y.de>\r\nCc: c@z\r\nSubject: Re: plans\r\n"
             b"Message-ID: <m2@x>\r\nIn-Reply-To: <m1@x>\r\nReferences: <m0@x>\r\n <m1@x>\r\n"
             b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n")
    s = summary_from_headers(9, {HEADER_KEY: block, b"FLAGS": (b"\\Seen", b"\\Recent", b"$Work"),
                                 b"RFC822.SIZE": 1234})
    assert s.date == datetime(2026, 1, 6, 9, 0, tzinfo=timezone.utc)
    assert (s.from_name, s.from_addr) == ("Doe, Jane", "jane@example.com")
    assert s.to == "a@x, Jörg <joerg@y.de>" and s.cc == "c@z"
    assert s.flags == {"\\Seen", "$Work"} and s.size == 1234 and s.has_attachment
    assert (s.message_id, s.in_reply_to, s.references) == ("<m2@x>", "<m1@x>", ("<m0@x>", "<m1@x>"))
    empty = summary_from_headers(1, {})
    assert empty.date is None and empty.subject == "" and not empty.has_attachment
    bad_date = summary_from_headers(2, {HEADER_KEY: b"Date: someday\r\nFrom: x@y\r\n\r\n"})
    assert bad_date.date is None and bad_date.from_name == "x@y"


def test_payload_decoding_and_body_index_text():
    assert decode_payload(b"SGVsbG8g\r\nd29ybGQ=", "base64") == b"Hello world"
    assert decode_payload(b"SGVsbG8gd29yb", "BASE64") == b"Hello wor"   # cut mid-quantum: best effort
    assert decode_payload(b"caf=C3=A9 =\r\nok", "quoted-printable") == "café ok".encode()
    hdr = b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    assert _body_text(b"Gr=FC=DFe", hdr) == "Grüße"
    assert _body_text(b"--zz\r\nContent-Type: text/plain\r\n\r\nhi", b"Content-Type: multipart/mixed\r\n\r\n").endswith("hi")
    assert _body_text(None, hdr) == ""


def test_esearch_and_appenduid_parsing():
    assert _esearch_all(b'(TAG "A5") UID ALL 1:3,9,7:5') == [1, 2, 3, 9, 7, 6, 5]
    assert _esearch_all(b'(TAG "A5") UID') == []
    assert parse_appenduid(b"[APPENDUID 1700000000 42] Append completed.") == 42
    assert parse_appenduid(b"OK") is None


def test_roles_special_use_overrides_and_names():
    f = [FolderInfo("INBOX", "/", "inbox"), FolderInfo("Sent", "/", "sent"), FolderInfo("Old Sent", "/"),
         FolderInfo("[Gmail]/All Mail", "/"), FolderInfo("Deleted Items", "/"),
         FolderInfo("Projects/Trash", "/", selectable=False)]
    roles = {x.name: x.role for x in _assign_roles(f, {"sent": "Old Sent"})}
    assert roles == {"INBOX": "inbox", "Sent": None, "Old Sent": "sent", "[Gmail]/All Mail": "archive",
                     "Deleted Items": "trash", "Projects/Trash": None}


def test_trace_masks_login_authenticate_literals_and_pop3_smtp():
    m = TraceMasker()
    assert m.client(b'A1 LOGIN bob "p w"\r\n') == [f"A1 LOGIN bob {MASK}"]
    assert m.client(b"A2 AUTHENTICATE PLAIN AGJvYgBwdw==\r\n") == [f"A2 AUTHENTICATE PLAIN {MASK}"]
    assert m.server(b"A2 OK done\r\n") == "A2 OK done"
    assert m.client(b"A3 AUTHENTICATE LOGIN\r\n") == ["A3 AUTHENTICATE LOGIN"]
    m.server(b"+ VXNlcm5hbWU6\r\n")
    assert m.client(b"Ym9i\r\n") == [MASK]
    m.server(b"+ UGFzc3dvcmQ6\r\n")
    assert m.client(b"cHc=\r\n") == [MASK]
    m.server(b"A3 OK\r\n")
    assert m.client(b"A4 LOGIN bob {4}\r\n") == [f"A4 LOGIN bob {MASK}"]
    m.server(b"+ OK\r\n")
    assert m.client(b"pw12\r\n") == [MASK]
    assert m.server(b"A4 OK\r\n") == "A4 OK"
    assert m.client(b"A5 SELECT INBOX\r\n") == ["A5 SELECT INBOX"]
    assert m.client(b"PASS hunter2\r\n") == [f"PASS {MASK}"]
    assert m.client(b"AUTH PLAIN AGJvYgBwdw==\r\n") == [f"AUTH PLAIN {MASK}"]
    assert m.server(b"235 2.7.0 ok\r\n") == "235 2.7.0 ok"
    assert m.client(b"MAIL FROM:<a@b>\r\n") == ["MAIL FROM:<a@b>"]
    assert m.server_literal(10) == "<10 bytes>"
    long = m.client(b"\r\n".join(b"line %d" % i for i in range(50)))
    assert len(long) == 6 and "45 more lines" in long[-1]
