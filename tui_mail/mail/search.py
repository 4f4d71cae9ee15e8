"""The search language, parsed once and compiled three ways.

    from:alice to:bob cc:carol subject:"meaning of life" body:ketchup
    since:2026-01-01 before:2026-02-01 since:7d before:yesterday is:unread is:read is:flagged is:answered
    has:attachment  -is:flagged  bare words  "quoted phrases"

Every term must hold (AND); a leading ``-`` negates a term. Bare words and phrases match
subject, sender or body. Single words match as prefixes ("ketch" finds "ketchup"), phrases as
token sequences; case and diacritics are ignored (like SQLite's ``unicode61 remove_diacritics
2``). ``to:`` and ``cc:`` both match any recipient (To or Cc), as the cache keeps one
recipients column. ``since:D`` is on or after day D, ``before:D`` is strictly before D (IMAP semantics).

- ``parse(text) -> Query``: raises ``SearchSyntaxError`` naming the bad token and position.
- ``to_imap(query)``: an imapclient criteria list for ``UID SEARCH CHARSET UTF-8`` (flat
  prefix NOT/OR: imapclient drops the charset inside nested lists).
- ``to_sql(query) -> (where, params)`` over the cache's ``messages m`` / ``messages_fts``:
  text goes through one FTS5 MATCH with every user string quoted as an FTS phrase and passed
  as a parameter, so neither SQL nor FTS syntax can be injected.
- ``matches(query, fields, body)``: the same semantics in pure Python for Maildir stores.

Hand-written because the language is ours (Gmail-like), small, and must report positions.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo

from tui_mail.errors import SearchSyntaxError

TEXT_FIELDS = ("text", "from", "to", "cc", "subject", "body")
DATE_FIELDS = ("since", "before")
IS_VALUES = {
    "unread": ("seen", False), "read": ("seen", True), "seen": ("seen", True),
    "unseen": ("seen", False), "flagged": ("flagged", True), "starred": ("flagged", True),
    "unflagged": ("flagged", False), "answered": ("answered", True),
    "replied": ("answered", True), "unanswered": ("answered", False),
    "deleted": ("deleted", True), "draft": ("draft", True),
}
HAS_VALUES = ("attachment",)
KEYS = {"from", "to", "cc", "subject", "body", "since", "before", "is", "has"}
KEY_ALIASES = {"after": "since", "older": "before", "sub": "subject", "subj": "subject"}


@dataclass(frozen=True)
class Term:
    """One condition. ``field``: text|from|to|cc|subject|body|since|before|is|has.
    ``value``: the text (or date, or is:/has: word). ``phrase``: was quoted."""

    field: str
    value: str | date
    negated: bool = False
    phrase: bool = False
    position: int = 0


@dataclass(frozen=True)
class Query:
    terms: tuple[Term, ...] = ()
    text: str = ""

    def __bool__(self) -> bool:
        return bool(self.terms)


# --- lexing and parsing ----------------------------------------------------------------

_WORD_CHARS = re.compile(r"\w+", re.UNICODE)


def fold(text: str) -> str:
    """Case- and diacritic-insensitive form (what unicode61 remove_diacritics does)."""
    text = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def tokens(text: str) -> list[str]:
    """Search tokens: runs of letters/digits, folded."""
    return _WORD_CHARS.findall(fold(text).replace("_", " "))


def _read_value(text: str, i: int, start: int) -> tuple[str, bool, int]:
    """Read a bare or quoted value at ``i`` → (value, quoted, next index)."""
    n = len(text)
    if i < n and text[i] == '"':
        j = i + 1
        buf = []
        while j < n and text[j] != '"':
            if text[j] == "\\" and j + 1 < n:
                j += 1
            buf.append(text[j])
            j += 1
        if j >= n:
            raise SearchSyntaxError(f"unterminated quote in {text[start:]!r} at position {start}",
                                    text[start:], start)
        return "".join(buf), True, j + 1
    j = i
    while j < n and not text[j].isspace():
        if text[j] == '"':
            break
        j += 1
    return text[i:j], False, j


_RELATIVE_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}


def _parse_date(value: str, token: str, position: int, today: date | None) -> date:
    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", value)
    if m:
        try:
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            pass
    low = value.lower()
    rel = re.fullmatch(r"(\d{1,5})([dwmy])", low)
    if low in ("today", "yesterday") or rel:
        today = today or date.today()
        if low == "today":
            return today
        if low == "yesterday":
            return today - timedelta(days=1)
        return today - timedelta(days=int(rel.group(1)) * _RELATIVE_DAYS[rel.group(2)])
    raise SearchSyntaxError(f"bad date in {token!r} at position {position}: use YYYY-MM-DD, "
                            "today, yesterday or an age like 7d, 2w, 3m, 1y", token, position)


def parse(text: str, today: date | None = None) -> Query:
    """Parse a query string; raises SearchSyntaxError(token, position) on bad input.
    ``today`` anchors relative dates (since:7d, before:yesterday); default: the local date."""
    terms: list[Term] = []
    i = 0
    n = len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start = i
        negated = False
        if text[i] == "-":
            negated = True
            i += 1
            if i >= n or text[i].isspace():
                raise SearchSyntaxError(f"'-' at position {start} must be followed by a term", "-", start)
        m = re.match(r"([A-Za-z]+):", text[i:])
        key = None
        if m and not text[i + m.end():].startswith("//"):
            key = m.group(1).lower()
            key = KEY_ALIASES.get(key, key)
            value_at = i + m.end()
            value, quoted, i = _read_value(text, value_at, start)
            token = text[start:i]
            if key not in KEYS:
                raise SearchSyntaxError(
                    f"unknown search key {m.group(1)!r} in {token!r} at position {start} "
                    f"(known: {', '.join(sorted(KEYS))})", token, start)
            if not value.strip():
                raise SearchSyntaxError(f"{token!r} at position {start} needs a value", token, start)
            terms.append(_term(key, value, quoted, negated, token, start, today))
            continue
        value, quoted, i = _read_value(text, i, start)
        token = text[start:i]
        if not value.strip():
            if quoted:
                raise SearchSyntaxError(f"empty phrase {token!r} at position {start}", token, start)
            # a lone quote inside a word, e.g. ab"c: read the rest as a phrase
            raise SearchSyntaxError(f"unexpected {token!r} at position {start}", token, start)
        terms.append(_term("text", value, quoted, negated, token, start, today))
    return Query(tuple(terms), text)


def _term(key: str, value: str, quoted: bool, negated: bool, token: str, pos: int,
          today: date | None) -> Term:
    if key in DATE_FIELDS:
        return Term(key, _parse_date(value.strip(), token, pos, today), negated, False, pos)
    if key == "is":
        v = value.strip().lower()
        if v not in IS_VALUES:
            raise SearchSyntaxError(f"unknown {token!r} at position {pos} (use one of: "
                                    f"{', '.join(sorted(IS_VALUES))})", token, pos)
        return Term("is", v, negated, False, pos)
    if key == "has":
        v = value.strip().lower()
        if v not in HAS_VALUES:
            raise SearchSyntaxError(f"unknown {token!r} at position {pos} (use has:attachment)", token, pos)
        return Term("has", v, negated, False, pos)
    if not tokens(value):
        raise SearchSyntaxError(f"nothing to search for in {token!r} at position {pos}", token, pos)
    return Term(key, value, negated, quoted, pos)


# --- IMAP ------------------------------------------------------------------------------

_IMAP_IS = {
    "unread": ["UNSEEN"], "unseen": ["UNSEEN"], "read": ["SEEN"], "seen": ["SEEN"],
    "flagged": ["FLAGGED"], "starred": ["FLAGGED"], "unflagged": ["UNFLAGGED"],
    "answered": ["ANSWERED"], "replied": ["ANSWERED"], "unanswered": ["UNANSWERED"],
    "deleted": ["DELETED"], "draft": ["DRAFT"],
}


def _imap_term(t: Term) -> list:
    if t.field == "text":
        v = str(t.value)
        return ["OR", "SUBJECT", v, "OR", "FROM", v, "BODY", v]
    if t.field in ("from", "to", "cc", "subject", "body"):
        return [t.field.upper(), str(t.value)]
    if t.field == "since":
        return ["SINCE", t.value]
    if t.field == "before":
        return ["BEFORE", t.value]
    if t.field == "is":
        return list(_IMAP_IS[str(t.value)])
    if t.field == "has":
        # No standard IMAP key; messages with attachments are multipart/mixed at the top.
        return ["HEADER", "Content-Type", "multipart/mixed"]
    raise AssertionError(t.field)  # pragma: no cover


def to_imap(query: Query | str) -> list:
    """imapclient criteria for ``client.search(criteria, charset="UTF-8")``."""
    if isinstance(query, str):
        query = parse(query)
    out: list = []
    for t in query.terms:
        if t.negated:
            out.append("NOT")
        out.extend(_imap_term(t))
    return out or ["ALL"]


def imap_needs_utf8(criteria: Iterable) -> bool:
    return any(isinstance(c, str) and not c.isascii() for c in criteria)


# --- SQL over the cache ----------------------------------------------------------------

_FTS_COLUMNS = {
    "text": "{subject sender body}",
    "from": "sender",
    "to": "recipients",
    "cc": "recipients",
    "subject": "subject",
    "body": "body",
}
_SQL_IS = {
    "unread": "m.seen = 0", "unseen": "m.seen = 0", "read": "m.seen = 1", "seen": "m.seen = 1",
    "flagged": "m.flagged = 1", "starred": "m.flagged = 1", "unflagged": "m.flagged = 0",
    "answered": "m.answered = 1", "replied": "m.answered = 1", "unanswered": "m.answered = 0",
    "deleted": "m.deleted = 1", "draft": "m.draft = 1",
}


def fts_phrase(value: str, prefix: bool) -> str:
    """User text as an FTS5 string: tokens joined into one quoted phrase (quotes doubled),
    with ``*`` for a prefix query. Nothing of the user's text is FTS syntax."""
    toks = tokens(value)
    phrase = '"' + " ".join(toks).replace('"', '""') + '"'
    return phrase + " *" if prefix else phrase


def _fts_expr(t: Term) -> str:
    prefix = not t.phrase and len(tokens(str(t.value))) == 1
    return f"{_FTS_COLUMNS[t.field]} : {fts_phrase(str(t.value), prefix)}"


def _day_start(d: date, tz: tzinfo | None) -> int:
    return int(datetime.combine(d, time(0), tzinfo=tz).timestamp()) if tz else int(
        datetime.combine(d, time(0)).astimezone().timestamp())


_FTS_IN = "m.rowid IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?)"
_FTS_NOT_IN = "m.rowid NOT IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?)"


def to_sql(query: Query | str, tz: tzinfo | None = None) -> tuple[str, list]:
    """(where clause, params) for ``SELECT … FROM messages m WHERE <clause>``. Dates are
    days in ``tz`` (default: the local time zone)."""
    if isinstance(query, str):
        query = parse(query)
    clauses: list[str] = []
    params: list = []
    positive = [t for t in query.terms if t.field in _FTS_COLUMNS and not t.negated]
    if positive:
        clauses.append(_FTS_IN)
        params.append(" AND ".join(_fts_expr(t) for t in positive))
    for t in query.terms:
        if t.field in _FTS_COLUMNS:
            if t.negated:
                clauses.append(_FTS_NOT_IN)
                params.append(_fts_expr(t))
            continue
        if t.field == "since":
            clause = "m.date >= ?"
            params.append(_day_start(t.value, tz))  # type: ignore[arg-type]
        elif t.field == "before":
            clause = "m.date < ?"
            params.append(_day_start(t.value, tz))  # type: ignore[arg-type]
        elif t.field == "is":
            clause = _SQL_IS[str(t.value)]
        else:  # has:attachment
            clause = "m.has_attachment = 1"
        if t.negated:
            clause = f"NOT coalesce({clause}, 0)"
        clauses.append(clause)
    return (" AND ".join(clauses) or "1"), params


# --- pure matcher ----------------------------------------------------------------------

def _contains(hay_tokens: list[str], value: str, phrase: bool) -> bool:
    needle = tokens(value)
    if not needle:
        return False
    if len(needle) == 1 and not phrase:
        return any(tok.startswith(needle[0]) for tok in hay_tokens)
    k = len(needle)
    first = needle[0]
    for i, tok in enumerate(hay_tokens):
        if tok == first and hay_tokens[i:i + k] == needle:
            return True
    return False


def _flag(fields: Mapping, name: str) -> bool:
    if name in fields and fields[name] is not None:
        return bool(fields[name])
    flags = fields.get("flags") or ()
    if isinstance(flags, str):
        flags = flags.split()
    imap = {"seen": "\\Seen", "flagged": "\\Flagged", "answered": "\\Answered",
            "deleted": "\\Deleted", "draft": "\\Draft"}[name]
    return imap in flags


def _timestamp(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return float(value)


def matches(query: Query | str, fields: Mapping, body: str | None = None,
            tz: tzinfo | None = None) -> bool:
    """Does a message match? ``fields`` like MessageSummary (from_name, from_addr, to, cc,
    subject, date as datetime or unix seconds, flags or seen/flagged/… booleans,
    has_attachment). ``body=None`` means the body is unknown and treated as empty."""
    if isinstance(query, str):
        query = parse(query)
    cache: dict[str, list[str]] = {}

    def toks(name: str) -> list[str]:
        if name not in cache:
            if name == "sender":
                src = f"{fields.get('from_name', '')} {fields.get('from_addr', '')}"
            elif name == "body":
                src = body or ""
            else:
                src = str(fields.get(name, "") or "")
            cache[name] = tokens(src)
        return cache[name]

    for t in query.terms:
        if t.field in _FTS_COLUMNS:
            v = str(t.value)
            cols = {"text": ("subject", "sender", "body"), "from": ("sender",), "to": ("to", "cc"),
                    "cc": ("to", "cc"), "subject": ("subject",), "body": ("body",)}[t.field]
            ok = any(_contains(toks(c), v, t.phrase) for c in cols)
        elif t.field in DATE_FIELDS:
            ts = _timestamp(fields.get("date"))
            if ts is None:
                ok = False
            else:
                start = _day_start(t.value, tz)  # type: ignore[arg-type]
                ok = ts >= start if t.field == "since" else ts < start
        elif t.field == "is":
            flag, want = IS_VALUES[str(t.value)]
            ok = _flag(fields, flag) == want
        else:
            ok = bool(fields.get("has_attachment"))
        if ok == t.negated:
            return False
    return True
