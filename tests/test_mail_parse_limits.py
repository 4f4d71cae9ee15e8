"""Parsing work is bounded (issue 10, item 5): parts, part size, depth and text shown, and the
view says what it left out. Speed is measured by bench/parse_hostile.py, not asserted here."""

from __future__ import annotations

import base64
import os

from tui_mail.mail import mime_limits
from tui_mail.mail.mime_limits import CUT_HEADER, MAX_PARTS, bound_raw
from tui_mail.mail.parse import parse_message
from tui_mail.ui.render import DISPLAY_CHARS, message_text, raw_text


def many_parts(n: int, newline: str = "\r\n") -> bytes:
    nl = newline
    parts = "".join(f"--B{nl}Content-Type: text/plain{nl}Content-Disposition: attachment; filename=f{i}.txt{nl}"
                    f"{nl}part {i}{nl}" for i in range(n))
    return (f"From: a@example.org{nl}Subject: many{nl}MIME-Version: 1.0{nl}"
            f"Content-Type: multipart/mixed; boundary=B{nl}{nl}" + parts + f"--B--{nl}").encode()


def test_small_messages_are_parsed_as_they_are():
    raw = many_parts(10)
    assert bound_raw(raw).raw is raw and bound_raw(raw).complete
    view = parse_message(raw)
    assert len(view.attachments) == 10 and not view.problems and view.parts_left_out == 0


def test_parts_beyond_the_limit_are_counted_and_said():
    for newline in ("\r\n", "\n"):
        view = parse_message(many_parts(MAX_PARTS + 1234, newline))
        assert len(view.attachments) == MAX_PARTS
        assert view.parts_left_out == 1234
        assert "… 1,234 more parts not shown" in " ".join(view.problems)
        assert not any("close boundary" in p for p in view.problems)
        shown = message_text(view).plain
        assert "1,234 more parts not shown" in shown
        # saving still reads the real bytes of a listed part
        assert view.part_bytes(view.attachments[-1].part_id).strip() == f"part {MAX_PARTS - 1}".encode()


def test_a_huge_part_is_cut_for_display_but_saved_whole(monkeypatch):
    monkeypatch.setattr(mime_limits, "MAX_PART_BYTES", 64 * 1024)
    payload = os.urandom(300 * 1024)
    encoded = base64.encodebytes(payload).decode().replace("\n", "\r\n")
    text = "line of text\r\n" * 20000                       # 280 KB of text
    raw = ("From: a@example.org\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
           'Content-Type: multipart/mixed; boundary="X"\r\n\r\n'
           "--X\r\nContent-Type: text/plain\r\n\r\n" + text +
           '--X\r\nContent-Type: application/pdf; name="a.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
           + encoded + "--X--\r\n").encode()
    bounded = bound_raw(raw, max_part_bytes=64 * 1024)
    assert bounded.bodies_cut == 2 and len(bounded.raw) < 3 * 64 * 1024
    view = parse_message(raw)
    (att,) = view.attachments
    assert att.filename == "a.pdf" and abs(att.size - len(payload)) < 1024   # the real size
    assert view.part_bytes(att.part_id) == payload                         # every byte
    assert any("only its first" in p for p in view.problems)
    assert view.text.startswith("line of text\n") and len(view.text) < 70 * 1024
    assert CUT_HEADER not in dict(view.headers)


def test_single_part_cut_keeps_headers_and_says_so(monkeypatch):
    monkeypatch.setattr(mime_limits, "MAX_PART_BYTES", 32 * 1024)
    raw = (b"From: a@example.org\nSubject: qp\nContent-Transfer-Encoding: quoted-printable\n\n"
           + b"caf=C3=A9 =3D ok\n" * 10000)
    view = parse_message(raw)
    assert view.subject == "qp" and view.text.startswith("café = ok\n")
    assert any("only its first" in p for p in view.problems)
    assert [k for k, _ in view.headers] == ["From", "Subject", "Content-Transfer-Encoding"]


def test_depth_is_bounded_and_said():
    depth = 300
    head = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth))
    tail = "".join(f"\r\n--b{i}--\r\n" for i in reversed(range(depth)))
    raw = ("Subject: deep\r\nMIME-Version: 1.0\r\n" + head + "Content-Type: text/plain\r\n\r\ndeep" + tail).encode()
    view = parse_message(raw)
    assert any("nested deeper than" in p for p in view.problems)
    nested = ("Subject: m\r\nContent-Type: message/rfc822\r\n\r\n" * 200 + "Subject: in\r\n\r\nx").encode()
    view = parse_message(nested)                              # never raises
    assert view.subject == "m"


def test_text_shown_and_raw_source_are_cut_for_the_screen():
    raw = b"Subject: long\r\n\r\n" + b"0123456789 " * 7 + b"\r\n"
    raw = raw + (b"0123456789 " * 7 + b"\r\n") * (3 * DISPLAY_CHARS // 78)
    view = parse_message(raw)
    shown = message_text(view).plain
    assert len(shown) < DISPLAY_CHARS + 2000
    assert "more characters not shown" in shown
    assert "more characters of the source not shown" in raw_text(b"x" * (DISPLAY_CHARS * 5)).plain
