"""Composing: Draft → message bytes + envelope, header injection refused, reply/reply-all/
forward rules, subjects, quoting, and drafts saved and resumed (property-tested round trips)."""

from __future__ import annotations

from datetime import datetime, timezone
from email import message_from_bytes, policy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tui_mail.demo_data import classic_thread, with_attachment
from tui_mail.errors import MailError
from tui_mail.mail.addresses import parse_addresses
from tui_mail.mail.compose import (
    AttachedData, ComposeError, Draft, attribution, base_subject, build_message, draft_from_bytes,
    draft_to_bytes, forward, forward_subject, guess_type, quote, reply, reply_all, reply_subject,
    trim_references,
)
from tui_mail.mail.parse import parse_message

NOW = datetime(2026, 11, 23, 9, 41, tzinfo=timezone.utc)
ME = "Alice Crêpe <alice@crepes.fr>"


def draft(**kw) -> Draft:
    base = dict(from_=ME, to="Bob Hamburger <bob@hamburger.edu>", subject="Do you like ketchup?",
                body="Hi Bob,\n\nDo you like ketchup?\n")
    base.update(kw)
    return Draft(**base)


def test_build_sets_the_required_headers():
    c = build_message(draft(), now=NOW)
    m = message_from_bytes(c.data, policy=policy.default)
    assert m["Date"] == "Mon, 23 Nov 2026 09:41:00 +0000"
    assert m["Message-ID"].endswith("@crepes.fr>") and m["Message-ID"] == c.message_id
    assert m["MIME-Version"] == "1.0"
    assert str(m["From"]) == "Alice Crêpe <alice@crepes.fr>"
    assert b"\r\n" in c.data and b"\n" not in c.data.replace(b"\r\n", b"")
    assert c.sender == "alice@crepes.fr" and c.recipients == ("bob@hamburger.edu",)
    assert not c.smtputf8 and c.data.isascii()
    v = parse_message(c.data)
    assert v.subject == "Do you like ketchup?" and v.text == "Hi Bob,\n\nDo you like ketchup?\n"


def test_utf8_subject_and_body_are_mime_encoded():
    c = build_message(draft(subject="Crêpes 🍔 " + "long " * 30, body="Grüße\n" + "x" * 2000), now=NOW)
    assert c.data.isascii()
    assert all(len(line) <= 998 for line in c.data.split(b"\r\n"))
    v = parse_message(c.data)
    assert v.subject == "Crêpes 🍔 " + ("long " * 30).strip()
    assert v.text == "Grüße\n" + "x" * 2000 + "\n"


def test_bcc_is_only_in_the_envelope():
    c = build_message(draft(cc="carol@crepes.fr", bcc="secret@hidden.org, bob@hamburger.edu"), now=NOW)
    assert b"secret" not in c.data and b"Bcc" not in c.data
    assert c.recipients == ("bob@hamburger.edu", "carol@crepes.fr", "secret@hidden.org")


@pytest.mark.parametrize("names", [
    ["0¡𐀀", "¡¡", "0"], ["00000000¡¡¡¡¡¡¡¡¡𐀀𐀀", ""], ["Ünïcødé " * 12, "Smith, John", "x"],
])
def test_non_ascii_names_never_merge_recipients(names):
    # CPython's folder can encode the comma between addresses (=?utf-8?q?=2C?=); ours must not
    from tui_mail.mail.addresses import Addr, format_for_input

    to = [Addr(" ".join(n.split()), f"u{i}@x{i}.org") for i, n in enumerate(names)]
    c = build_message(draft(to=format_for_input(to)), now=NOW)
    assert b"=2C?=" not in c.data
    assert parse_message(c.data).to == to
    assert draft_from_bytes(draft_to_bytes(draft(to=format_for_input(to)), now=NOW)).to == format_for_input(to)


def test_idna_domain_goes_out_as_ascii():
    c = build_message(draft(to="Jörg <jorg@bücher.example>"), now=NOW)
    assert not c.smtputf8
    assert c.recipients == ("jorg@xn--bcher-kva.example",)
    assert b"jorg@xn--bcher-kva.example" in c.data


def test_mail_options_say_what_the_server_must_support():
    assert build_message(draft(body="plain ascii"), now=NOW).mail_options == []
    assert build_message(draft(body="Grüße"), now=NOW).mail_options == []  # quoted-printable
    eight_bit = b"Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nd\xc3\xa9j\xc3\xa0\r\n"
    fwd = build_message(draft(parts=[AttachedData("x.eml", "message/rfc822", eight_bit)]), now=NOW)
    assert fwd.mail_options == ["BODY=8BITMIME"]
    assert parse_message(parse_message(fwd.data).part_bytes("2")).text == "déjà\n"


def test_utf8_local_part_needs_smtputf8():
    c = build_message(draft(to="Zoë <zoë@hamburger.edu>"), now=NOW)
    assert c.smtputf8
    assert c.mail_options == ["BODY=8BITMIME", "SMTPUTF8"]
    assert c.recipients == ("zoë@hamburger.edu",)
    assert "zoë@hamburger.edu".encode() in c.data
    assert parse_message(c.data).to[0].addr == "zoë@hamburger.edu"


@pytest.mark.parametrize("field, value", [
    ("subject", "hi\r\nBcc: victim@x.org"), ("subject", "hi\nX-Evil: 1"), ("subject", "a\rb"),
    ("to", "bob@x.org\r\nBcc: victim@x.org"), ("from_", "a@x.org\n"), ("in_reply_to", "<a@x>\n<b@x>"),
    ("subject", "nul\x00"),
])
def test_line_breaks_in_header_values_are_refused(field, value):
    with pytest.raises(ComposeError) as info:
        build_message(draft(**{field: value}), now=NOW)
    assert isinstance(info.value, MailError)
    assert info.value.field == field.rstrip("_")
    assert "line" in str(info.value) or "NUL" in str(info.value)


def test_line_break_in_references_refused():
    with pytest.raises(ComposeError):
        build_message(draft(references=("<a@x>\r\nX: y",)), now=NOW)


def test_bad_addresses_name_the_field_and_entry():
    with pytest.raises(ComposeError) as info:
        build_message(draft(to="bob@hamburger.edu, nope", cc="@x"), now=NOW)
    assert info.value.field == "to"
    assert [(b.position, b.text) for b in info.value.bad] == [(19, "nope")]


def test_no_recipients_and_bad_from():
    with pytest.raises(ComposeError, match="No recipients"):
        build_message(draft(to=""), now=NOW)
    with pytest.raises(ComposeError, match="exactly one"):
        build_message(draft(from_="a@x.org, b@x.org"), now=NOW)
    with pytest.raises(ComposeError) as info:
        build_message(draft(from_=""), now=NOW)
    assert info.value.field == "from"


def test_attachments_from_files_with_guessed_types(tmp_path):
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + bytes(range(256)))
    txt = tmp_path / "notes.txt"
    txt.write_text("café\n", encoding="utf-8")
    unknown = tmp_path / "blob.zzzunknown"
    unknown.write_bytes(b"\x00\x01")
    c = build_message(draft(attachments=[str(pdf), str(txt), str(unknown)],
                            parts=[AttachedData("inline.csv", "text/csv", b"a,b\n")]), now=NOW)
    v = parse_message(c.data)
    assert [(a.part_id, a.filename, a.content_type) for a in v.attachments] == [
        ("2", "report.pdf", "application/pdf"), ("3", "notes.txt", "text/plain"),
        ("4", "blob.zzzunknown", "application/octet-stream"), ("5", "inline.csv", "text/csv")]
    assert v.part_bytes("2") == pdf.read_bytes()
    assert v.part_bytes("3") == "café\n".encode()
    assert v.text == "Hi Bob,\n\nDo you like ketchup?\n"


def test_missing_attachment_file_is_a_compose_error(tmp_path):
    with pytest.raises(ComposeError, match="not found") as info:
        build_message(draft(attachments=[str(tmp_path / "gone.pdf")]), now=NOW)
    assert info.value.field == "attachments"


@pytest.mark.parametrize("path, ctype", [
    ("a.pdf", "application/pdf"), ("a.PNG", "image/png"), ("a.tar.gz", "application/gzip"),
    ("noext", "application/octet-stream"), ("a.eml", "message/rfc822"),
])
def test_guess_type(path, ctype):
    assert guess_type(path) == ctype


# --- subjects ----------------------------------------------------------------------------

@pytest.mark.parametrize("subject, expected", [
    ("Hello", "Re: Hello"), ("Re: Hello", "Re: Hello"), ("RE: re: Hello", "Re: Hello"),
    ("AW: Hello", "Re: Hello"), ("Re[2]: Hello", "Re: Hello"), ("SV:Hello", "Re: Hello"),
    ("Fwd: Hello", "Re: Fwd: Hello"), ("", "Re: "), ("Regarding: x", "Re: Regarding: x"),
])
def test_reply_subject(subject, expected):
    assert reply_subject(subject) == expected


@pytest.mark.parametrize("subject, expected", [
    ("Hello", "Fwd: Hello"), ("Fwd: Hello", "Fwd: Hello"), ("FW: fwd: Hello", "Fwd: Hello"),
    ("WG: Hello", "Fwd: Hello"), ("Re: Hello", "Fwd: Re: Hello"),
])
def test_forward_subject(subject, expected):
    assert forward_subject(subject) == expected


@pytest.mark.parametrize("subject, expected", [
    ("Re: AW: Fwd: hello  world", "hello world"), ("[list] Re: topic", "topic"),
    ("Re: [list] topic (fwd)", "topic"), ("plain", "plain"), ("Re:", ""),
])
def test_base_subject(subject, expected):
    assert base_subject(subject) == expected


# --- reply / forward ---------------------------------------------------------------------

def _thread():
    return [parse_message(raw) for _, raw in classic_thread(NOW)]


def test_reply_to_the_textbook_message():
    first = _thread()[0]
    r = reply(first, identities=["Bob Hamburger <bob@hamburger.edu>"])
    assert r.to == "Alice Crêpe <alice@crepes.fr>"
    assert r.from_ == "Bob Hamburger <bob@hamburger.edu>"
    assert r.subject == "Re: Do you like ketchup?"
    assert r.in_reply_to == "<ketchup.1@crepes.fr>" and r.references == ("<ketchup.1@crepes.fr>",)
    assert attribution(first) in r.body
    assert "> Do you like ketchup?\n> How about pickles?" in r.body
    c = build_message(r, now=NOW)
    m = message_from_bytes(c.data, policy=policy.default)
    assert m["In-Reply-To"] == "<ketchup.1@crepes.fr>" and m["References"] == "<ketchup.1@crepes.fr>"


def test_references_chain_grows_and_trims():
    second = _thread()[1]
    r = reply(second, identities=[ME])
    assert r.references == ("<ketchup.1@crepes.fr>", "<ketchup.2@hamburger.edu>")
    refs = tuple(f"<{i}@x>" for i in range(50))
    trimmed = trim_references(refs)
    assert len(trimmed) == 20 and trimmed[0] == "<0@x>" and trimmed[-1] == "<49@x>"


def _msg(headers: str, body: str = "Body line\n\n-- \nsig\n") -> bytes:
    return (headers.strip() + "\r\nDate: Sat, 21 Nov 2026 06:00:00 +0000\r\nMessage-ID: <m1@x.org>\r\n\r\n" + body).encode()


def test_reply_honours_reply_to_and_drops_the_signature():
    v = parse_message(_msg("From: Bob <bob@x.org>\r\nReply-To: List <list@x.org>\r\nTo: alice@crepes.fr\r\nSubject: s"))
    r = reply(v, identities=[ME])
    assert r.to == "List <list@x.org>"
    assert "> Body line" in r.body and "sig" not in r.body
    assert r.body.startswith("\n\nOn Sat, 21 Nov 2026 06:00 +0000, Bob wrote:\n")


def test_reply_all_removes_me_and_duplicates():
    v = parse_message(_msg("From: Bob <bob@x.org>\r\nTo: Alice <ALICE@crepes.fr>, carol@y.org, bob@x.org\r\n"
                           "Cc: dave@z.org, carol@y.org, alice@crepes.fr\r\nSubject: s"))
    r = reply_all(v, identities=[ME, "alice@other.org"])
    assert [a.addr for a in parse_addresses(r.to)] == ["bob@x.org", "carol@y.org"]
    assert [a.addr for a in parse_addresses(r.cc)] == ["dave@z.org"]
    assert r.from_ == "Alice Crêpe <alice@crepes.fr>"


def test_reply_from_the_identity_the_mail_was_sent_to():
    v = parse_message(_msg("From: bob@x.org\r\nTo: alice@other.org\r\nSubject: s"))
    assert reply(v, identities=[ME, "Work Alice <alice@other.org>"]).from_ == "Work Alice <alice@other.org>"
    assert reply(v, identities=[ME], from_="x@y.org").from_ == "x@y.org"


def test_reply_to_my_own_sent_message_goes_to_its_recipients():
    v = parse_message(_msg("From: alice@crepes.fr\r\nTo: bob@x.org\r\nSubject: s"))
    assert reply(v, identities=[ME]).to == "bob@x.org"
    assert reply_all(v, identities=[ME]).to == "bob@x.org"


def test_reply_all_when_only_i_remain_replies_to_the_sender():
    v = parse_message(_msg("From: bob@x.org\r\nTo: alice@crepes.fr\r\nSubject: s"))
    r = reply_all(v, identities=[ME])
    assert r.to == "bob@x.org" and r.cc == ""


def test_reply_with_signature():
    v = parse_message(_msg("From: bob@x.org\r\nTo: alice@crepes.fr\r\nSubject: s"))
    assert reply(v, identities=[ME], signature="Alice").body.endswith("\n-- \nAlice\n")


def test_quote_nests_existing_quotes():
    assert quote("a\n> b\n\nc\n\n") == "> a\n>> b\n>\n> c"


def _attachment_message():
    raw = with_attachment(NOW)
    return parse_message(raw[1] if isinstance(raw, tuple) else raw)


def test_forward_inline_carries_text_and_attachments():
    v = _attachment_message()
    f = forward(v, from_=ME)
    assert f.subject == "Fwd: " + v.subject and f.to == "" and f.in_reply_to == ""
    assert "---------- Forwarded message ----------" in f.body
    assert f"Subject: {v.subject}" in f.body and v.text.strip() in f.body
    assert [p.filename for p in f.parts] == [a.filename for a in v.attachments]
    c = build_message(Draft(**{**f.__dict__, "to": "bob@hamburger.edu"}), now=NOW)
    out = parse_message(c.data)
    assert [a.filename for a in out.attachments] == [a.filename for a in v.attachments]
    assert out.part_bytes("2") == v.part_bytes(v.attachments[0].part_id)


def test_forward_as_attachment_embeds_the_original():
    v = _attachment_message()
    f = forward(v, from_=ME, as_attachment=True)
    c = build_message(Draft(**{**f.__dict__, "to": "bob@hamburger.edu"}), now=NOW)
    out = parse_message(c.data)
    assert [(a.filename, a.content_type) for a in out.attachments] == [(v.subject + ".eml", "message/rfc822")]
    inner = parse_message(out.part_bytes(out.attachments[0].part_id))
    assert inner.subject == v.subject and inner.message_id == v.message_id
    assert [a.filename for a in inner.attachments] == [a.filename for a in v.attachments]


# --- drafts ------------------------------------------------------------------------------

def test_draft_round_trip_keeps_everything(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"attached")
    d = draft(cc="Carol <carol@crepes.fr>", bcc="secret@x.org", attachments=[str(f)],
              in_reply_to="<ketchup.1@crepes.fr>", references=("<ketchup.1@crepes.fr>",),
              identity="alice-work", body="Unfinished…\n")
    raw = draft_to_bytes(d, now=NOW)
    back = draft_from_bytes(raw)
    assert back.from_ == '"Alice Crêpe" <alice@crepes.fr>' or parse_addresses(back.from_) == parse_addresses(d.from_)
    assert parse_addresses(back.to) == parse_addresses(d.to)
    assert back.cc == "Carol <carol@crepes.fr>" and back.bcc == "secret@x.org"
    assert back.subject == d.subject and back.body == d.body
    assert back.in_reply_to == d.in_reply_to and back.references == d.references
    assert back.identity == "alice-work"
    assert back.parts == [AttachedData("a.txt", "text/plain", b"attached")]
    assert back.attachments == []


def test_incomplete_draft_keeps_typed_text_verbatim():
    d = Draft(from_=ME, to="bob@ham, Car", cc="", subject="", body="")
    back = draft_from_bytes(draft_to_bytes(d, now=NOW))
    assert back.to == "bob@ham, Car"
    msg = message_from_bytes(draft_to_bytes(d, now=NOW), policy=policy.default)
    assert msg["To"] is None and msg["X-tui-mail-To"] == "bob@ham, Car"


def test_draft_with_missing_attachment_still_saves(tmp_path):
    raw = draft_to_bytes(draft(attachments=[str(tmp_path / "gone.bin")]), now=NOW)
    assert b"X-tui-mail-Missing-Attachment: gone.bin" in raw


def test_draft_refuses_header_injection():
    with pytest.raises(ComposeError):
        draft_to_bytes(draft(subject="a\nb"), now=NOW)


_line = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"),
                                       blacklist_characters="\x85"), max_size=40)
_body = st.lists(_line, max_size=8).map(lambda ls: "\n".join(ls) + "\n" if ls else "")
_local = st.from_regex(r"[a-z0-9][a-z0-9.+_-]{0,8}[a-z0-9]", fullmatch=True).filter(lambda s: ".." not in s)
_addr = st.builds(lambda n, l, d: (" ".join(n.split()), f"{l}@{d}.org"), _line, _local,
                  st.from_regex(r"[a-z]{1,8}", fullmatch=True))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=_line, body=_body, to=st.lists(_addr, min_size=1, max_size=3),
       cc=st.lists(_addr, max_size=2), data=st.binary(max_size=200))
def test_compose_then_parse_round_trip(subject, body, to, cc, data):
    from tui_mail.mail.addresses import Addr, format_for_input

    to_addrs = [Addr(n, a) for n, a in to]
    cc_addrs = [Addr(n, a) for n, a in cc]
    d = Draft(from_=ME, to=format_for_input(to_addrs), cc=format_for_input(cc_addrs),
              subject=subject, body=body, parts=[AttachedData("d.bin", "application/octet-stream", data)])
    c = build_message(d, now=NOW)
    v = parse_message(c.data)
    assert v.subject == " ".join(subject.split()) or v.subject == subject.strip()
    assert v.text.rstrip("\n") == body.rstrip("\n").replace("\t", "    ") or not body.strip()
    assert [a.addr for a in v.to] == [a.addr for a in to_addrs]
    assert [a.name for a in v.to] == [a.name for a in to_addrs]
    assert [a.addr for a in v.cc] == [a.addr for a in cc_addrs]
    assert v.part_bytes(v.attachments[-1].part_id) == data
    assert v.problems == []
    back = draft_from_bytes(draft_to_bytes(d, now=NOW))
    assert parse_addresses(back.to) == to_addrs
    assert back.parts == d.parts


def test_a_draft_remembers_the_message_it_answers_and_never_sends_it():
    from tui_mail.mail import compose as mc

    d = mc.Draft(from_="a@x.org", to="b@y.org", subject="Re: hi", body="x", in_reply_to="<1@x>",
                 origin_flag="\\Answered", origin_id="<1@x>", origin_folder="Ärchiv/2026")
    back = mc.draft_from_bytes(mc.draft_to_bytes(d))
    assert (back.origin_flag, back.origin_id, back.origin_folder) == ("\\Answered", "<1@x>", "Ärchiv/2026")
    assert b"X-tui-mail" not in mc.build_message(back).data
    # a message in Drafts written by anyone cannot ask for another flag (\Deleted, \Seen …)
    raw = mc.draft_to_bytes(mc.Draft(from_="a@x.org", to="b@y.org", subject="s", body="x"))
    raw = raw.replace(b"MIME-Version", b"X-tui-mail-Origin: \\Deleted <1@x>\r\nMIME-Version", 1)
    hostile = mc.draft_from_bytes(raw)
    assert (hostile.origin_flag, hostile.origin_id) == ("", "")
