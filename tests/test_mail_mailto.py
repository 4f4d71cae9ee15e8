"""mailto: URLs (RFC 6068) → composer fields: pure parsing, hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tui_mail.mail.mailto import MAX_URL, MailtoError, is_mailto, parse_mailto


def test_address_and_subject():
    f = parse_mailto("mailto:bob@example.org?subject=hi")
    assert f.to == ["bob@example.org"] and f.subject == "hi" and f.body == "" and f.ignored == []


def test_rfc6068_examples():
    # §6.1 of RFC 6068
    assert parse_mailto("mailto:chris@example.com").to == ["chris@example.com"]
    f = parse_mailto("mailto:infobot@example.com?subject=current-issue")
    assert f.subject == "current-issue"
    f = parse_mailto("mailto:infobot@example.com?body=send%20current-issue%0D%0Asend%20index")
    assert f.body == "send current-issue\nsend index"
    f = parse_mailto("mailto:list@example.org?In-Reply-To=%3C3469A91.D10AF4C@example.com%3E")
    assert f.in_reply_to == "<3469A91.D10AF4C@example.com>"
    f = parse_mailto("mailto:joe@example.com?cc=bob@example.com&body=hello")
    assert f.cc == ["bob@example.com"] and f.body == "hello"
    f = parse_mailto("mailto:?to=joe@example.com&cc=bob@example.com&body=hello")
    assert f.to == ["joe@example.com"]
    f = parse_mailto("mailto:gorby%25kremvax@example.com")
    assert f.to == ["gorby%kremvax@example.com"]
    f = parse_mailto("mailto:%22not%40me%22@example.org")
    assert f.to == ['"not@me"@example.org']
    # §6.2: non-ASCII, percent-encoded UTF-8
    f = parse_mailto("mailto:user@example.org?subject=caf%C3%A9&body=caf%C3%A9")
    assert f.subject == "café" and f.body == "café"
    f = parse_mailto("mailto:user@%E7%B4%8D%E8%B1%86.example.org")
    assert f.to == ["user@納豆.example.org"]


def test_several_addresses_and_repeated_to_are_merged():
    f = parse_mailto("MAILTO:a@x.org,b@x.org?to=c@x.org&TO=d@x.org&bcc=e@x.org")
    assert f.to == ["a@x.org", "b@x.org", "c@x.org", "d@x.org"] and f.bcc == ["e@x.org"]
    assert f.address_text("to") == "a@x.org, b@x.org, c@x.org, d@x.org"


def test_plus_is_a_plus_and_fragment_is_ignored():
    f = parse_mailto("mailto:a+tag@x.org?subject=1+1#frag")
    assert f.to == ["a+tag@x.org"] and f.subject == "1+1"


def test_dangerous_headers_are_dropped_and_listed():
    f = parse_mailto("mailto:a@x.org?attach=/etc/passwd&from=ceo@x.org&X-Evil=1&subject=ok")
    assert f.subject == "ok" and f.ignored == ["attach", "from", "x-evil"]


def test_header_injection_is_flattened():
    f = parse_mailto("mailto:a@x.org%0D%0ABcc:%20victim@y.org?subject=hi%0D%0ABcc:%20v@y.org")
    assert f.subject == "hi Bcc: v@y.org"
    assert all("\n" not in a and "\r" not in a for a in f.to)


def test_not_a_mailto_or_too_long():
    assert is_mailto("MailTo:x") and not is_mailto("http://x")
    with pytest.raises(MailtoError):
        parse_mailto("https://example.org")
    with pytest.raises(MailtoError):
        parse_mailto("mailto:a@x.org?body=" + "x" * MAX_URL)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_never_raises_on_anything_after_the_scheme(tail):
    f = parse_mailto("mailto:" + tail)
    assert "\n" not in f.subject and all("\n" not in a for a in f.to + f.cc + f.bcc)
