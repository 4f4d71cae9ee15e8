"""Display helpers: short dates relative to "now", human sizes, terminal-safe header text."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tui_mail.mail.format import human_size, sanitize, short_date, truncate

NOW = datetime(2026, 11, 23, 9, 41, tzinfo=timezone.utc)


@pytest.mark.parametrize("when, expected", [
    (datetime(2026, 11, 23, 14, 5, tzinfo=timezone.utc), "14:05"),
    (datetime(2026, 11, 23, 0, 0, tzinfo=timezone.utc), "00:00"),
    (datetime(2026, 3, 3, 8, 0, tzinfo=timezone.utc), "Mar 03"),
    (datetime(2026, 11, 22, 23, 59, tzinfo=timezone.utc), "Nov 22"),
    (datetime(2025, 3, 3, 8, 0, tzinfo=timezone.utc), "2025-03-03"),
    (datetime(2027, 1, 1, tzinfo=timezone.utc), "2027-01-01"),
    (None, ""),
])
def test_short_date(when, expected):
    assert short_date(when, NOW) == expected


def test_short_date_uses_the_viewers_time_zone():
    plus2 = timezone(timedelta(hours=2))
    now = datetime(2026, 11, 24, 1, 0, tzinfo=plus2)
    # 23:30 UTC on the 23rd is 01:30 on the 24th for this reader: "today".
    assert short_date(datetime(2026, 11, 23, 23, 30, tzinfo=timezone.utc), now) == "01:30"


def test_short_date_naive_is_utc():
    assert short_date(datetime(2026, 11, 23, 7, 0), NOW) == "07:00"


@pytest.mark.parametrize("size, expected", [
    (0, "0"), (512, "512"), (999, "999"), (1000, "1.0K"), (1229, "1.2K"), (15 * 1024, "15K"),
    (999 * 1024, "999K"), (1023 * 1024, "1.0M"), (int(3.4 * 1024 ** 2), "3.4M"),
    (int(1.1 * 1024 ** 3), "1.1G"), (None, ""), (-1, ""),
])
def test_human_size(size, expected):
    assert human_size(size) == expected


@given(st.integers(min_value=0, max_value=10 ** 15))
def test_human_size_is_always_short(size):
    assert 1 <= len(human_size(size)) <= 4


@pytest.mark.parametrize("raw, expected", [
    ("plain", "plain"),
    ("a\tb\r\nc", "a b c"),
    ("\x1b[2J\x1b[31mred\x1b[0m", "red"),
    ("title\x1b]0;pwned\x07 here", "title here"),
    ("nul\x00bell\x07del\x7f", "nulbelldel"),
    ("bidi \u202egnp.exe", "bidi gnp.exe"),
    ("c1 \x9b31m", "c1 31m"),
    ("emoji 👩\u200d💻 ok", "emoji 👩\u200d💻 ok"),
])
def test_sanitize(raw, expected):
    assert sanitize(raw) == expected


def test_sanitize_keeps_newlines_when_asked():
    assert sanitize("one\r\ntwo\rthree\x1b[1m\tx", keep_newlines=True) == "one\ntwo\nthree    x"


@given(st.text())
def test_sanitize_never_leaves_controls(text):
    out = sanitize(text)
    assert not any(ord(ch) < 32 or 0x7f <= ord(ch) < 0xa0 for ch in out)


def test_truncate():
    assert truncate("hello world", 5) == "hell…"
    assert truncate("hello", 5) == "hello"
    assert truncate("hello", 0) == ""
    assert truncate("hello", 1) == "h"
