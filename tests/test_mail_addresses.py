"""Typed address lists: what parses, what is refused (with position and text), display,
IDNA domains and UTF-8 local parts (RFC 6532)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tui_mail.errors import MailError
from tui_mail.mail.addresses import (
    Addr, AddressError, check_addresses, dedup, domain_to_ascii, domain_to_unicode, envelope_address,
    format_addresses, format_for_input, from_header_value, parse_address, parse_addresses,
    quote_name, validate_addr_spec,
)


def test_the_brief_example():
    assert parse_addresses("Alice <alice@crepes.fr>, bob@hamburger.edu") == [
        Addr("Alice", "alice@crepes.fr"), Addr("", "bob@hamburger.edu")]


@pytest.mark.parametrize("text, expected", [
    ('"Crêpe, Alice" <alice@crepes.fr>', [Addr("Crêpe, Alice", "alice@crepes.fr")]),
    ("<bob@hamburger.edu>", [Addr("", "bob@hamburger.edu")]),
    ("bob@hamburger.edu (Bob H.)", [Addr("Bob H.", "bob@hamburger.edu")]),
    ("a@x.org; b@y.org", [Addr("", "a@x.org"), Addr("", "b@y.org")]),
    ("a@x.org,, ,b@y.org,", [Addr("", "a@x.org"), Addr("", "b@y.org")]),
    ("  Bob   Hamburger   <bob@hamburger.edu>  ", [Addr("Bob Hamburger", "bob@hamburger.edu")]),
    ('"quoted \\"name\\"" <q@x.org>', [Addr('quoted "name"', "q@x.org")]),
    ('"john doe"@example.org', [Addr("", '"john doe"@example.org')]),
    ("first.last+tag@sub.example.co.uk", [Addr("", "first.last+tag@sub.example.co.uk")]),
    ("user@[192.0.2.1]", [Addr("", "user@[192.0.2.1]")]),
    ("user@[IPv6:2001:db8::1]", [Addr("", "user@[IPv6:2001:db8::1]")]),
    ("bob@localhost", [Addr("", "bob@localhost")]),
    ("=?utf-8?q?Zo=C3=AB?= <zoe@x.org>", [Addr("Zoë", "zoe@x.org")]),
    ("Zoë <zoë@bücher.example>", [Addr("Zoë", "zoë@bücher.example")]),
    ("用户@例子.广告", [Addr("", "用户@例子.广告")]),
    ("", []),
    ("   ", []),
])
def test_valid_lists(text, expected):
    assert parse_addresses(text) == expected


@pytest.mark.parametrize("text, bad_text, position, reason_part", [
    ("bob", "bob", 0, "missing '@'"),
    ("alice@crepes.fr, bob", "bob", 17, "missing '@'"),
    ("a@x.org, @y.org", "@y.org", 9, "nothing before"),
    ("a@", "a@", 0, "nothing after"),
    ("a..b@x.org", "a..b@x.org", 0, "'..'"),
    (".a@x.org", ".a@x.org", 0, "start or end"),
    ("a b@x.org", "a b@x.org", 0, "<…>"),
    ("Bob bob@x.org", "Bob bob@x.org", 0, "<…>"),
    ("a@-x.org", "a@-x.org", 0, "bad domain label"),
    ("a@x..org", "a@x..org", 0, "empty label"),
    ("a@x.org.", "a@x.org.", 0, "empty label"),
    ("a@x_y.org", "a@x_y.org", 0, "bad domain label"),
    ("Bob <bob@x.org", "Bob <bob@x.org", 0, "missing '>'"),
    ("Bob <bob@x.org> trailing", "Bob <bob@x.org> trailing", 0, "after '>'"),
    ('"unclosed <a@x.org>', '"unclosed <a@x.org>', 0, "unbalanced quote"),
    ("a@x.org, b@[1.2.3]", "b@[1.2.3]", 9, "literal"),
    ("a(b@x.org", "a(b@x.org", 0, "parenthesis"),
    ("a\x01b@x.org", "a\x01b@x.org", 0, "control"),
    ("a@" + "x" * 64 + ".org", "a@" + "x" * 64 + ".org", 0, "bad domain label"),
    ("x" * 65 + "@x.org", "x" * 65 + "@x.org", 0, "64 bytes"),
    ("bob>@x.org", "bob>@x.org", 0, "'>' without '<'"),
])
def test_invalid_entries_point_at_the_entry(text, bad_text, position, reason_part):
    with pytest.raises(AddressError) as info:
        parse_addresses(text)
    err = info.value
    assert isinstance(err, MailError) and isinstance(err, ValueError)
    assert err.text == bad_text
    assert err.position == position
    assert text[err.position:err.position + len(err.text)] == err.text
    assert reason_part in err.bad[0].reason
    assert repr(bad_text) in str(err)


def test_all_bad_entries_are_reported_and_good_ones_kept():
    good, bad = check_addresses("ok@x.org, nope, also@y.org, @bad")
    assert [a.addr for a in good] == ["ok@x.org", "also@y.org"]
    assert [(b.position, b.text) for b in bad] == [(10, "nope"), (28, "@bad")]
    with pytest.raises(AddressError, match="and 1 more"):
        parse_addresses("ok@x.org, nope, also@y.org, @bad")


def test_parse_address_requires_exactly_one():
    assert parse_address("Alice <a@x.org>") == Addr("Alice", "a@x.org")
    with pytest.raises(AddressError):
        parse_address("a@x.org, b@x.org")
    with pytest.raises(AddressError):
        parse_address("")


def test_idna_conversion_both_ways():
    assert domain_to_ascii("bücher.example") == "xn--bcher-kva.example"
    assert domain_to_unicode("xn--bcher-kva.example") == "bücher.example"
    assert domain_to_ascii("plain.org") == "plain.org"
    assert domain_to_unicode("xn--a.org") == "xn--a.org"  # not valid punycode: left alone
    a = Addr("", "jörg@bücher.example")
    assert a.ascii_addr == "jörg@xn--bcher-kva.example"
    assert a.needs_smtputf8
    assert not Addr("", "jorg@bücher.example").needs_smtputf8


def test_display_and_input_formats():
    addrs = [Addr("Crêpe, Alice", "alice@crepes.fr"), Addr("", "bob@xn--bcher-kva.example")]
    assert format_addresses(addrs) == "Crêpe, Alice <alice@crepes.fr>, bob@bücher.example"
    typed = format_for_input(addrs)
    assert typed == '"Crêpe, Alice" <alice@crepes.fr>, bob@xn--bcher-kva.example'
    assert parse_addresses(typed) == addrs
    assert str(Addr("Bob", "bob@x.org")) == "Bob <bob@x.org>"


@pytest.mark.parametrize("name, quoted", [
    ("Bob", "Bob"), ("Bob Smith", "Bob Smith"), ("Smith, Bob", '"Smith, Bob"'),
    ('Say "hi"', '"Say \\"hi\\""'), ("a.b", '"a.b"'), ("", '""'),
])
def test_quote_name(name, quoted):
    assert quote_name(name) == quoted


def test_dedup_is_case_insensitive_and_excludes():
    addrs = parse_addresses("A <a@X.org>, a@x.org, b@y.org, me@home.org, B@Y.ORG")
    assert [a.addr for a in dedup(addrs, exclude=["ME@home.org"])] == ["a@X.org", "b@y.org"]
    assert dedup(addrs, exclude=[Addr("", "a@x.org")])[0].addr == "b@y.org"


def test_from_header_value_is_lenient():
    assert from_header_value("undisclosed-recipients:;") == []
    got = from_header_value('"Last, First" <f@x.org>, junk, g@y.org')
    assert [a.addr for a in got] == ["f@x.org", "g@y.org"]
    assert got[0].name == "Last, First"


def test_validate_addr_spec_accepts_utf8_local_parts():
    assert validate_addr_spec("δοκιμή@παράδειγμα.δοκιμή") is None
    assert validate_addr_spec("a\u00a0b@x.org") is not None  # NBSP is a space


_atom = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-/=?^_`{|}~éü", min_size=1, max_size=12)
_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_name = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20)


@given(st.lists(st.tuples(_name, _atom, st.lists(_label, min_size=1, max_size=3)), max_size=4))
def test_format_for_input_round_trips(entries):
    addrs = [Addr(" ".join(name.split()), f"{local}@{'.'.join(labels)}") for name, local, labels in entries]
    assert parse_addresses(format_for_input(addrs)) == addrs


@given(st.text(max_size=80))
def test_check_addresses_never_raises(text):
    good, bad = check_addresses(text)
    for b in bad:
        assert text[b.position:b.position + len(b.text)] == b.text


def test_idna_2008_keeps_sharp_s_and_final_sigma():
    # IDNA 2003 (Python's "idna" codec) maps ß → ss: a different, someone else's domain
    assert domain_to_ascii("straße.de") == "xn--strae-oqa.de" != "strasse.de"
    assert domain_to_ascii("Bücher.Example") == "xn--bcher-kva.example"      # UTS 46 maps case
    assert domain_to_unicode("xn--strae-oqa.de") == "straße.de"
    assert Addr("", "bob@straße.de").ascii_addr == "bob@xn--strae-oqa.de"
    assert envelope_address("bob@straße.de") == "bob@xn--strae-oqa.de"
    assert envelope_address("jörg@straße.de") == "jörg@xn--strae-oqa.de"   # local part kept
    assert envelope_address("bob@example.org") == "bob@example.org"
    with pytest.raises(ValueError):
        domain_to_ascii("a\u200db.example")   # ZWJ outside a joining context: refused by IDNA 2008


def test_email_validator_has_the_last_word_and_local_names_are_allowed():
    # caught by email-validator, not by our own rules
    assert "idna" in (validate_addr_spec("a@xn--zz.org") or "").lower()
    assert "two dashes" in (validate_addr_spec("a@ab--c.org") or "")
    # special-use names are fine for a client of a local relay or test server
    assert validate_addr_spec("alice@localhost") is None
    assert validate_addr_spec("alice@mail.test") is None
    assert validate_addr_spec("bob@straße.de") is None
    good, bad = check_addresses("ok@x.org, a@xn--zz.org")
    assert [a.addr for a in good] == ["ok@x.org"] and bad[0].position == 10
