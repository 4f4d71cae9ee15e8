"""The client's search language, compiled to relay IMAP search keys (relay/imap/search.py).

    from:alice to:bob cc:carol subject:"meaning of life" body:ketchup
    since:2026-01-01 before:2026-02-01 since:7d is:unread is:flagged has:attachment -is:read
    bare words  "quoted phrases"

The same grammar as tui_mail/mail/search.py (which relay must not import), written again
here, small on purpose: every term must hold (AND), ``-`` negates, bare words match subject,
sender or body. Matching is the relay's IMAP SEARCH semantics: case-insensitive substring
over decoded headers and text. In a sink ``to:`` also matches the envelope recipients
(``X-Envelope-To``), so Bcc recipients are found too.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

from relay.errors import RelayError

MAX_QUERY = 2000
MAX_TERMS = 32


class QueryError(RelayError):
    """A query the language does not allow; the message names the token and its position."""


_KEYS = {"from", "to", "cc", "bcc", "subject", "body", "since", "before", "is", "has"}
_ALIASES = {"after": "since", "older": "before", "sub": "subject", "subj": "subject"}
_IS = {
    "unread": ("\\Seen", False), "unseen": ("\\Seen", False), "read": ("\\Seen", True),
    "seen": ("\\Seen", True), "flagged": ("\\Flagged", True), "starred": ("\\Flagged", True),
    "unflagged": ("\\Flagged", False), "answered": ("\\Answered", True),
    "replied": ("\\Answered", True), "unanswered": ("\\Answered", False),
    "deleted": ("\\Deleted", True), "draft": ("\\Draft", True),
}
_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}


def _value(text: str, i: int, start: int) -> tuple[str, int]:
    if i < len(text) and text[i] == '"':
        j, buf = i + 1, []
        while j < len(text) and text[j] != '"':
            if text[j] == "\\" and j + 1 < len(text):
                j += 1
            buf.append(text[j])
            j += 1
        if j >= len(text):
            raise QueryError(f"unterminated quote at position {start}")
        return "".join(buf), j + 1
    j = i
    while j < len(text) and not text[j].isspace() and text[j] != '"':
        j += 1
    return text[i:j], j


def _date(value: str, pos: int, today: date) -> date:
    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", value)
    if m:
        try:
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            pass
    low = value.lower()
    if low == "today":
        return today
    if low == "yesterday":
        return today - timedelta(days=1)
    rel = re.fullmatch(r"(\d{1,5})([dwmy])", low)
    if rel:
        return today - timedelta(days=int(rel.group(1)) * _DAYS[rel.group(2)])
    raise QueryError(f"bad date {value!r} at position {pos}: use YYYY-MM-DD, today, yesterday or 7d, 2w, 3m, 1y")


def _key(field: str, value: str, pos: int, today: date):
    if field == "text":
        return ("or", ("header", "SUBJECT", value), ("or", ("header", "FROM", value), ("body", value)))
    if field == "to":
        return ("or", ("header", "TO", value), ("or", ("header", "CC", value), ("header", "X-ENVELOPE-TO", value)))
    if field in ("from", "cc", "bcc", "subject"):
        return ("header", field.upper(), value)
    if field == "body":
        return ("body", value)
    if field in ("since", "before"):
        return ("date", "internal", field, _date(value, pos, today))
    if field == "is":
        if value.lower() not in _IS:
            raise QueryError(f"unknown is:{value} at position {pos} (known: {', '.join(sorted(_IS))})")
        flag, want = _IS[value.lower()]
        return ("flag", flag, want)
    if value.lower() != "attachment":
        raise QueryError(f"unknown has:{value} at position {pos} (known: attachment)")
    return ("header", "CONTENT-TYPE", "multipart/mixed")


def compile_query(text: str, today: date | None = None) -> list:
    """Query text → a list of relay IMAP search keys (ANDed); ``[("all",)]`` for nothing."""
    if len(text) > MAX_QUERY:
        raise QueryError(f"the query is longer than {MAX_QUERY} characters")
    today = today or date.today()
    keys: list = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start, negated = i, False
        if text[i] == "-":
            negated, i = True, i + 1
            if i >= n or text[i].isspace():
                raise QueryError(f"'-' at position {start} must be followed by a term")
        m = re.match(r"([A-Za-z]+):", text[i:])
        field = "text"
        if m and not text[i + m.end():].startswith("//"):
            field = _ALIASES.get(m.group(1).lower(), m.group(1).lower())
            if field not in _KEYS:
                raise QueryError(f"unknown search key {m.group(1)!r} at position {start} "
                                 f"(known: {', '.join(sorted(_KEYS))})")
            i += m.end()
        value, i = _value(text, i, start)
        if not value.strip():
            raise QueryError(f"a term at position {start} needs a value")
        key = _key(field, value, start, today)
        keys.append(("not", key) if negated else key)
        if len(keys) > MAX_TERMS:
            raise QueryError(f"more than {MAX_TERMS} terms")
    return keys or [("all",)]
