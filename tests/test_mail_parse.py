"""Parsing into a MessageView: the corpus of tricky messages under tests/corpus/, IMAP part
numbering, HTML to text, charsets, saving attachments, and the header-only summary."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tui_mail.mail.addresses import Addr
from tui_mail.mail.charsets import decode_bytes, decode_words, normalize_charset
from tui_mail.mail.parse import (
    html_to_text, html_to_text_and_links, parse_message, safe_filename, save_attachment, save_bytes, summary_from_headers,
)
from tui_mail.store.base import MessageSummary

CORPUS = Path(__file__).parent / "corpus"


def load(name: str):
    return parse_message((CORPUS / name).read_bytes())


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.eml")), ids=lambda p: p.name)
def test_every_corpus_message_parses_and_shows_something_safe(path):
    raw = path.read_bytes()
    view = parse_message(raw)
    assert view.raw == raw
    assert not any(ord(c) < 32 and c not in "\n" for c in view.text)
    for att in view.attachments:
        assert att.part_id and att.filename and "/" in att.content_type and att.size >= 0
        view.part_bytes(att.part_id)  # every listed part can be fetched


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.eml")), ids=lambda p: p.name)
def test_summary_from_headers_agrees_with_the_full_parse(path):
    raw = path.read_bytes()
    header = raw.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in raw else raw.split(b"\n\n", 1)[0]
    view = parse_message(raw)
    summary = summary_from_headers(header + b"\r\n\r\n")
    assert summary["subject"] == view.subject
    assert summary["from_addr"] == view.from_addr
    assert summary["message_id"] == view.message_id
    assert summary["date"] == view.date


def test_encoded_words_joined_across_charsets_and_split_characters():
    v = load("encoded_words.eml")
    assert v.subject == "🍔 Burger and crêpes"   # ê split across two Q words
    assert v.from_ == [Addr("Crêpe, Alice", "alice@crepes.fr")]
    assert v.to == [Addr("Jörg", "jorg@example.de"), Addr("Bob", "bob@hamburger.edu")]
    assert v.date == datetime(2026, 11, 21, 5, 0, tzinfo=timezone.utc)
    assert v.message_id == "<enc.1@crepes.fr>"
    assert v.text == "Crêpes for everyone. \nSoft break.\n"
    assert v.problems == []


def test_unknown_charsets_fall_back_and_say_so():
    v = load("bad_charset.eml")
    assert v.subject == "café ok"
    assert v.text == "déjà vu\n"
    assert any("x-bogus" in p for p in v.problems)
    assert any("x-no-such-charset" in p for p in v.problems)


def test_iso_8859_1_is_read_as_windows_1252():
    assert load("mislabelled_latin1.eml").text == "He said “hello” – café.\n"


def test_undeclared_8bit_utf8_in_headers_and_body():
    v = load("undeclared_8bit.eml")
    assert v.subject == "Grüße aus Köln"
    assert v.from_[0].name == "Zoë"
    assert v.text == "Schöne Grüße!\n"


def test_nested_multipart_parts_and_numbering():
    v = load("nested_multipart.eml")
    assert v.text_source == "plain"
    assert v.text == "Plain version: see https://example.org/plain.\n"
    assert v.links == ["https://example.org/plain"]
    assert [(a.part_id, a.filename, a.content_type, a.inline) for a in v.attachments] == [
        ("2", "report.pdf", "application/pdf", False),
        ("3", "Inner message.eml", "message/rfc822", False),
    ]
    assert v.part_bytes("2") == b"%PDF-1.4 fake pdf\n"
    assert v.attachment("2").size == len(b"%PDF-1.4 fake pdf\n")
    # IMAP section numbers for every part (RFC 3501 §6.4.5)
    assert v.part_bytes("1.1").startswith(b"Plain version")
    assert v.part_bytes("1.2.1").startswith(b"<p>HTML version")
    assert v.part_bytes("1.2.2").startswith(b"\x89PNG")
    assert v.part_bytes("3.1") == b"Inner body."  # the CRLF before a boundary is the boundary's
    assert v.part_bytes("3.2").replace(b"\r\n", b"\n") == b"a,b\n1,2"
    inner = parse_message(v.part_bytes("3"))
    assert inner.subject == "Inner message"
    assert [a.filename for a in inner.attachments] == ["data.csv"]
    with pytest.raises(KeyError):
        v.part_bytes("9")


def test_html_alternative_chosen_when_plain_is_empty():
    v = load("alternative_empty_plain.eml")
    assert v.text_source == "html"
    assert "The real content" in v.text


def test_html_only_keeps_links_and_drops_scripts():
    v = load("html_only.eml")
    assert v.text_source == "html"
    assert "the article" in v.text and "[1]" in v.text
    assert "https://example.org/a?x=1&y=2" in v.text
    assert "alert" not in v.text and "color" not in v.text
    assert "* one" in v.text
    assert v.links == ["https://example.org/a?x=1&y=2", "mailto:editor@example.org"]


def test_missing_boundary_parameter_is_guessed():
    v = load("missing_boundary_param.eml")
    assert v.text == "hidden text\n"
    assert any("boundary" in p for p in v.problems)


def test_unterminated_multipart_keeps_what_arrived():
    v = load("unterminated_multipart.eml")
    assert v.text == "First part survives.\n"
    assert v.attachments[0].filename == "cut.bin"
    assert v.part_bytes("2") == b"\x00\x01\x02"
    assert v.problems


def test_bad_base64_decodes_what_it_can_and_reports():
    v = load("bad_base64.eml")
    assert v.text.startswith("Hello")
    assert any("base64" in p for p in v.problems)


def test_rfc2231_and_encoded_filenames():
    v = load("rfc2231_filename.eml")
    names = [a.filename for a in v.attachments]
    assert names[:3] == ["€ rates.pdf", "Grüße aus Köln.txt", "naïve.bin"]
    assert v.text == "see attached\n"


def test_bad_headers_do_not_stop_the_body():
    v = load("bad_headers.eml")
    assert v.text == "body survives\n"
    assert v.date is None and any("Date" in p for p in v.problems)
    assert v.references == ("<a@x>", "<b@x>")
    assert Addr("", "valid@example.org") in v.to


def test_signed_message_shows_the_signed_text():
    v = load("signed.eml")
    assert v.text == "Signed text.\n"
    assert [a.content_type for a in v.attachments] == ["application/pgp-signature"]


@pytest.mark.parametrize("name", ["empty.eml", "garbage.eml"])
def test_junk_does_not_crash(name):
    v = load(name)
    assert isinstance(v.text, str)


def test_lf_only_message():
    v = load("lf_only.eml")
    assert v.subject == "LF only" and v.text == "line one\nline two\n"


def test_deeply_nested_multipart():
    depth = 60
    head = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth))
    tail = "".join(f"\r\n--b{i}--\r\n" for i in reversed(range(depth)))
    raw = ("Subject: deep\r\nMIME-Version: 1.0\r\n" + head + "Content-Type: text/plain\r\n\r\ndeep text" + tail).encode()
    v = parse_message(raw)
    assert v.text.strip() == "deep text"


def test_plain_text_links_found():
    raw = b"Subject: l\r\n\r\nSee https://example.org/a_b?c=d, and www.example.com. Or <http://x.org/y>.\r\n"
    assert parse_message(raw).links == ["https://example.org/a_b?c=d", "www.example.com", "http://x.org/y"]


def test_inline_related_images_are_inline_attachments():
    m = EmailMessage(policy=SMTP)
    m["Subject"] = "html with image"
    m.set_content("plain")
    m.add_alternative('<p>hi <img src="cid:img1"></p>', subtype="html")
    m.get_payload()[1].add_related(b"\x89PNGdata", maintype="image", subtype="png", cid="<img1>")
    v = parse_message(m.as_bytes())
    assert v.text == "plain\n"
    # The image belongs to the HTML alternative, which is not the one shown: nothing listed.
    assert v.attachments == []
    m2 = EmailMessage(policy=SMTP)
    m2["Subject"] = "html only with image"
    m2.set_content('<p>hi <img src="cid:img1" alt="logo"></p>', subtype="html")
    m2.add_related(b"\x89PNGdata", maintype="image", subtype="png", cid="<img1>")
    v2 = parse_message(m2.as_bytes())
    assert v2.text_source == "html" and "logo" in v2.text
    assert [(a.part_id, a.content_type, a.inline, a.content_id) for a in v2.attachments] == [
        ("2", "image/png", True, "<img1>")]


def test_named_inline_text_is_shown_and_listed():
    raw = (b"Subject: t\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nsee below\r\n"
           b"--b\r\nContent-Type: text/plain; name=notes.txt\r\nContent-Disposition: inline; filename=notes.txt\r\n\r\n"
           b"the notes\r\n--b--\r\n")
    v = parse_message(raw)
    assert v.text == "see below\n\nthe notes\n"
    assert [(a.part_id, a.filename, a.inline) for a in v.attachments] == [("2", "notes.txt", True)]
    assert v.part_bytes("2") == b"the notes"


def test_encoded_comma_between_addresses_is_a_separator():
    raw = (b"To: =?utf-8?b?w5xu?= <u@x.org>\r\n =?utf-8?q?=2C?= v@y.org =?utf-8?b?LA==?= w@z.org\r\n"
           b"Subject: s\r\n\r\nb\r\n")
    assert [(a.name, a.addr) for a in parse_message(raw).to] == [("Ün", "u@x.org"), ("", "v@y.org"), ("", "w@z.org")]


def test_view_helpers():
    v = load("encoded_words.eml")
    assert v.from_name == "Crêpe, Alice" and v.from_addr == "alice@crepes.fr"
    assert v.header("message-id") == "<enc.1@crepes.fr>"
    assert v.header("X-Nope") == ""
    assert v.message.get_content_type() == "text/plain"


# --- charsets ----------------------------------------------------------------------------

@pytest.mark.parametrize("label, codec", [
    ("UTF-8", "utf-8"), ("utf8", "utf-8"), ("iso-8859-1", "cp1252"), ("gb2312", "gb18030"),
    ("ks_c_5601-1987", "cp949"), ("x-unknown", None), ("", None), (None, None),
    ("no-such", None), ("base64", None), ('"koi8-r"', "koi8-r"), ("utf-8*en", "utf-8"),
])
def test_normalize_charset(label, codec):
    assert normalize_charset(label) == codec


def test_decode_bytes_fallbacks():
    assert decode_bytes("é".encode(), "us-ascii") == ("Ã©", None)  # cp1252 superset, as browsers
    assert decode_bytes(b"\xff\xfe", "utf-8")[1]
    assert decode_bytes("é".encode(), None) == ("é", None)
    assert decode_bytes(b"\xe9", None)[0] == "é"


def test_decode_words_edge_cases():
    assert decode_words("=?utf-8?q?a?= =?utf-8?q?b?=") == ("ab", [])
    assert decode_words("=?utf-8?q?a?= x =?utf-8?q?b?=") == ("a x b", [])
    assert decode_words("=?UTF-8*en?Q?hi?=") == ("hi", [])
    assert decode_words("=?utf-8?b?w6k?=")[0] == "é"       # missing padding
    assert decode_words("no words") == ("no words", [])


# --- HTML ----------------------------------------------------------------------------------

def test_big_html_is_converted_whole():
    html = "<html><body>" + "".join(
        f'<p>Paragraph {i} <a href="https://x.org/{i}">link {i}</a> <b>bold</b>.</p>' for i in range(20000)) + "</body></html>"
    raw = ("Subject: big\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html).encode()
    v = parse_message(raw)
    assert not any("large" in p for p in v.problems)
    assert "Paragraph 0 link 0[1] bold." in v.text
    assert "Paragraph 19999 link 19999[20000] bold." in v.text
    assert "[20000] https://x.org/19999\n" in v.text
    assert len(v.links) == 20000 and v.links[19999] == "https://x.org/19999"


def test_huge_html_is_cut_and_says_so(monkeypatch):
    import tui_mail.mail.parse as parse_mod

    monkeypatch.setattr(parse_mod, "HTML_LIMIT", 4096)
    html = "".join(f'<p>Paragraph {i} <a href="https://x.org/{i}">link</a></p>' for i in range(1000))
    problems: list[str] = []
    text, links = parse_mod.html_to_text_and_links(html, problems)
    assert any("large" in p for p in problems)
    assert "Paragraph 0 " in text and "Paragraph 999 " not in text
    assert 0 < len(links) < 1000


def test_html_links_are_numbered_listed_and_only_safe_schemes():
    text, links = html_to_text_and_links(
        '<p><a href="https://a.org/x">first</a> <a href="javascript:alert(1)">js</a> '
        '<a href="#top">top</a> <a href="data:text/html,x">data</a> '
        '<a href="https://a.org/x">again</a> <a href="mailto:m@a.org">mail</a></p>')
    assert links == ["https://a.org/x", "mailto:m@a.org"]
    assert "first[1] js top data again[1] mail[2]" in text
    assert text.endswith("\n[1] https://a.org/x\n[2] mailto:m@a.org\n")
    assert "javascript" not in text and "data:" not in text


def test_html_tables_are_laid_out_in_columns():
    text = html_to_text("<table><tr><th>Name</th><th>Qty</th></tr><tr><td>apple</td><td>3</td></tr>"
                        "<tr><td>banana long</td><td>12</td></tr></table>")
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines == ["Name         Qty", "apple        3", "banana long  12"]


def test_html_blockquote_lines_are_marked_as_quoted():
    text = html_to_text("<p>Hi</p><blockquote>On Monday bob wrote:<p>line one<br>line two</p>"
                        "<blockquote>deeper</blockquote></blockquote><p>after</p>")
    assert text.splitlines() == ["Hi", "", "> On Monday bob wrote:", ">", "> line one", "> line two", ">",
                                 "> > deeper", "", "after"]


def test_html_images_show_alt_text_and_scripts_are_dropped():
    text = html_to_text('<script>evil()</script><style>p{}</style><p>x <img src="cid:a" alt="logo"></p>')
    assert text == "x [logo]\n"


def test_html_to_text_survives_junk():
    assert "text" in html_to_text("<p>text<table><tr><td><<<>>></p>")
    assert html_to_text("").strip() == ""


# --- saving --------------------------------------------------------------------------------

@pytest.mark.parametrize("name, safe", [
    ("report.pdf", "report.pdf"), ("../../etc/passwd\x01", "passwd"), ("..\\..\\win.ini", "win.ini"),
    (".bashrc", "bashrc"), ("-rf", "rf"), ("", "attachment"), ("...", "attachment"),
    ("CON.txt", "_CON.txt"), ('a<b>c:d"e|f?g*h', "a_b_c_d_e_f_g_h"), ("x\u202etxt.exe", "xtxt.exe"),
])
def test_safe_filename(name, safe):
    assert safe_filename(name) == safe


def test_safe_filename_limits_length_and_keeps_extension():
    name = safe_filename("é" * 300 + ".pdf")
    assert name.endswith(".pdf") and len(name.encode()) <= 200


def test_save_attachment_never_overwrites(tmp_path):
    v = load("nested_multipart.eml")
    first = save_attachment(v, "2", tmp_path)
    second = save_attachment(v, "2", tmp_path)
    third = save_attachment(v, "2", tmp_path)
    assert [p.name for p in (first, second, third)] == ["report.pdf", "report (1).pdf", "report (2).pdf"]
    assert first.read_bytes() == b"%PDF-1.4 fake pdf\n" == third.read_bytes()
    assert oct(os.stat(first).st_mode & 0o777) == "0o600"


def test_save_hostile_name_stays_in_directory(tmp_path):
    v = load("rfc2231_filename.eml")
    evil = [a for a in v.attachments if "passwd" in a.filename][0]
    path = save_attachment(v, evil.part_id, tmp_path)
    assert path.parent == tmp_path and path.name == "passwd"
    assert save_bytes(b"x", tmp_path, "€ rates.pdf").name == "€ rates.pdf"


# --- summary ---------------------------------------------------------------------------------

def test_summary_fits_message_summary():
    raw = (CORPUS / "nested_multipart.eml").read_bytes()
    fields = summary_from_headers(raw.split(b"\r\n\r\n")[0])
    s = MessageSummary(uid=7, flags=frozenset(), size=len(raw), **fields)
    assert s.from_name == "Carol" and s.to == "alice@crepes.fr" and s.has_attachment
    assert s.date == datetime(2026, 11, 22, 10, tzinfo=timezone.utc)


def test_summary_threading_fields_and_no_attachment_guess():
    hdr = (b"Subject: =?utf-8?q?R=C3=A9?=: x\r\nIn-Reply-To: <a@x> (comment)\r\n"
           b"References: <r@x>\r\n <a@x>\r\nContent-Type: text/plain\r\nCc: C <c@x.org>\r\n\r\n")
    s = summary_from_headers(hdr)
    assert s["subject"] == "Ré: x" and s["in_reply_to"] == "<a@x>"
    assert s["references"] == ("<r@x>", "<a@x>") and s["cc"] == "C <c@x.org>"
    assert s["has_attachment"] is False and s["date"] is None and s["from_name"] == ""


def test_summary_of_nothing():
    assert summary_from_headers(b"")["subject"] == ""


# --- robustness ------------------------------------------------------------------------------

_chunks = st.sampled_from([
    b"Subject: x\r\n", b"Content-Type: multipart/mixed; boundary=b\r\n", b"--b\r\n", b"--b--\r\n",
    b"\r\n", b"Content-Transfer-Encoding: base64\r\n", b"Content-Type: text/html; charset=bogus\r\n",
    b"=?utf-8?q?=C3?=", b"\xff\xfe\x00", b"<a href='x'>", b"Content-Type: message/rfc822\r\n",
    b"Content-Disposition: attachment; filename*=utf-8''%FF\r\n", b"AAAA====", b"\r\n\r\n",
])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_chunks, max_size=30))
def test_parse_never_raises_on_mime_fragments(chunks):
    v = parse_message(b"".join(chunks))
    for att in v.attachments:
        v.part_bytes(att.part_id)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400))
def test_parse_never_raises_on_random_bytes(data):
    parse_message(data)
