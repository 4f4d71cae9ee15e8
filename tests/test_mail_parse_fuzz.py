"""Hypothesis fuzzing of the MIME layer: structured MIME trees (multipart kinds, message/rfc822,
transfer encodings, charsets, RFC 2047/2231 names, hostile bytes) serialised to bytes, then
byte-mutated (deletions, insertions, flips, truncation, duplicated ranges).

Properties: ``parse_message`` never raises; what it returns is bounded (parts listed ≤
MAX_PARTS, text ≤ MAX_TEXT_CHARS); ``summary_from_headers`` never raises; the reader's Rich
text (``render.message_text``) never raises and carries no terminal control character.

Bounded in CI (``TUI_MAIL_FUZZ_EXAMPLES``, default 40 examples per property, derandomized, 10 s
deadline per example for slow shared machines); a longer, random run:
``TUI_MAIL_FUZZ_EXAMPLES=2000 TUI_MAIL_FUZZ_RANDOM=1 pytest tests/test_mail_parse_fuzz.py``
(2000 × 3 properties: ~8 minutes on two busy cores).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tui_mail.mail.mime_limits import MAX_PARTS, MAX_TEXT_CHARS
from tui_mail.mail.parse import parse_message, summary_from_headers
from tui_mail.ui.render import message_text

EXAMPLES = int(os.environ.get("TUI_MAIL_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=10),
                derandomize=not os.environ.get("TUI_MAIL_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_BAD = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

HOSTILE_TEXT = st.sampled_from(["[/]", "[@click=app.quit]x[/]", "\x1b[2J", "\x1b]52;c;aGk=\x07", "\u202e",
                                "=?utf-8?q?=1B=5B2J?=", "\udcff", "\x00", "é", "😀", "", " ", "\r", "\n"])
TEXT = st.lists(st.one_of(HOSTILE_TEXT, st.text(max_size=20)), max_size=6).map("".join)
CTYPES = st.sampled_from(["text/plain", "text/html", "application/octet-stream", "image/png",
                          "text/rfc822-headers", "application/pdf", "text/x-unknown", "garbage", ""])
CTES = st.sampled_from(["7bit", "8bit", "base64", "quoted-printable", "binary", "x-uuencode", "bogus", ""])
CHARSETS = st.sampled_from(["utf-8", "iso-8859-1", "us-ascii", "utf-16", "x-bogus", "gb2312", ""])


def _header_value(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


@st.composite
def leaf(draw) -> bytes:
    ctype, cte, charset = draw(CTYPES), draw(CTES), draw(CHARSETS)
    name = draw(TEXT)
    body = draw(st.one_of(st.binary(max_size=300), TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))))
    if cte == "base64" and draw(st.booleans()):
        import base64
        body = base64.encodebytes(body)
    lines = [f"Content-Type: {ctype}" + (f"; charset={charset}" if charset else "")
             + (f'; name="{_header_value(name)}"' if draw(st.booleans()) else "")]
    if cte:
        lines.append(f"Content-Transfer-Encoding: {cte}")
    disposition = draw(st.sampled_from(["", "attachment", "inline", "bogus"]))
    if disposition:
        encoded = "".join(f"%{b:02X}" for b in name.encode("utf-8", "surrogatepass"))
        lines.append(f"Content-Disposition: {disposition}; filename*=utf-8''{encoded}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass") + body


def tree(depth: int):
    if depth <= 0:
        return leaf()
    return st.one_of(leaf(), multipart(depth), rfc822(depth))


@st.composite
def multipart(draw, depth: int) -> bytes:
    sub = draw(st.sampled_from(["mixed", "alternative", "related", "signed", "encrypted", "digest", "x-odd"]))
    boundary = draw(st.sampled_from(["B", "=_b", "a b", "x" * 70, "--", "B" * 3])) + str(depth)
    kids = draw(st.lists(tree(depth - 1), min_size=0, max_size=4))
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + kid + b"\r\n" for kid in kids)
    if draw(st.booleans()):
        body += b"--" + boundary.encode() + b"--\r\n"
    quoted = f'"{boundary}"' if draw(st.booleans()) else boundary
    return f"Content-Type: multipart/{sub}; boundary={quoted}\r\n\r\n".encode() + b"preamble\r\n" + body


@st.composite
def rfc822(draw, depth: int) -> bytes:
    return b"Content-Type: message/rfc822\r\n\r\n" + draw(message(depth - 1))


@st.composite
def message(draw, depth: int = 3) -> bytes:
    headers = [
        f"From: {_header_value(draw(TEXT))} <{_header_value(draw(TEXT))}@example.org>",
        f"To: {_header_value(draw(TEXT))}",
        f"Subject: {_header_value(draw(TEXT))}",
        f"Date: {_header_value(draw(st.sampled_from(['Mon, 23 Nov 2026 09:00:00 +0000', 'garbage', ''])))}",
        "MIME-Version: 1.0",
    ]
    head = ("\r\n".join(headers) + "\r\n").encode("utf-8", "surrogatepass")
    return head + draw(tree(depth))


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(message()))
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "delete", "insert", "dup", "truncate"]))
        i = draw(st.integers(0, len(data) - 1))
        j = min(len(data), i + draw(st.integers(1, 64)))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[i:j]
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b"\r\n", b"\r\n\r\n", b"--B1\r\n", b"=?", b"\x1b[2J", b"\x00",
                                              b"boundary=B1", b"\xff\xfe"]))
        elif op == "dup":
            data[i:i] = bytes(data[i:j]) * draw(st.integers(1, 20))
        else:
            del data[i:]
    return bytes(data)


def _check(raw: bytes) -> None:
    view = parse_message(raw)
    assert len(view.attachments) <= MAX_PARTS
    assert len(view.text) <= MAX_TEXT_CHARS
    summary_from_headers(raw.partition(b"\r\n\r\n")[0])
    plain = message_text(view).plain
    assert not _BAD.search(plain.replace("\t", "")), repr(_BAD.search(plain.replace("\t", "")))
    message_text(view, full_headers=True)
    for att in view.attachments[:3]:
        view.part_bytes(att.part_id)


@FUZZ
@given(message())
def test_structured_mime_trees_never_break_the_reader(raw):
    _check(raw)


@FUZZ
@given(mutated())
def test_mutated_mime_bytes_never_break_the_reader(raw):
    _check(raw)


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_never_break_the_reader(raw):
    _check(raw)
