"""The search language: parsing (errors name the token and position), IMAP criteria, SQL
over a real in-memory SQLite cache with FTS5 (results checked, not SQL text), and the pure
matcher — cross-checked against SQLite over a few hundred generated messages."""

from __future__ import annotations

import random
import sqlite3
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tui_mail.errors import MailError, SearchSyntaxError
from tui_mail.mail.search import Query, Term, fts_phrase, matches, parse, to_imap, to_sql

UTC = timezone.utc

SCHEMA = """
CREATE TABLE messages(rowid INTEGER PRIMARY KEY, account TEXT, folder TEXT, uidvalidity INTEGER,
  uid INTEGER, date INTEGER, from_name TEXT, from_addr TEXT, to_addrs TEXT, cc_addrs TEXT,
  subject TEXT, flags TEXT, seen INTEGER, flagged INTEGER, answered INTEGER, deleted INTEGER,
  draft INTEGER, size INTEGER, has_attachment INTEGER, message_id TEXT, in_reply_to TEXT, refs TEXT);
CREATE VIRTUAL TABLE messages_fts USING fts5(subject, sender, recipients, body,
  tokenize='unicode61 remove_diacritics 2');
"""

PEOPLE = [("Alice Crêpe", "alice@crepes.fr"), ("Bob Hamburger", "bob@hamburger.edu"),
          ("Carol Moules", "carol@crepes.fr"), ("Zoë Ångström", "zoe@hamburger.edu"),
          ("", "news@example.org")]
SUBJECTS = ["Do you like ketchup?", "The meaning of life", "Re: meaning of life, again",
            "Crème brûlée recipe", "Invoice 2026-01", "Weekend plans", "ketchupgate"]
BODIES = ["I like ketchup and pickles.", "Forty-two is the meaning of life.",
          "Nothing to see here.", "Bring the crème fraîche.", "life meaning of the",
          "Payment due; ketchup not included.", ""]


def _rows(n=300, seed=7):
    rnd = random.Random(seed)
    base = datetime(2025, 12, 1, tzinfo=UTC)
    rows = []
    for i in range(1, n + 1):
        fname, faddr = rnd.choice(PEOPLE)
        tos = rnd.sample(PEOPLE, 2)
        ccs = rnd.sample(PEOPLE, rnd.randint(0, 1))
        when = base + timedelta(hours=rnd.randint(0, 24 * 120))
        flags = [f for f, p in (("\\Seen", .6), ("\\Flagged", .2), ("\\Answered", .3)) if rnd.random() < p]
        rows.append(dict(
            rowid=i, uid=i, date=None if i % 50 == 0 else when, from_name=fname, from_addr=faddr,
            to=", ".join(f"{n} <{a}>" if n else a for n, a in tos),
            cc=", ".join(f"{n} <{a}>" if n else a for n, a in ccs),
            subject=rnd.choice(SUBJECTS), flags=frozenset(flags),
            has_attachment=rnd.random() < 0.25, body=rnd.choice(BODIES)))
    return rows


ROWS = _rows()


@pytest.fixture(scope="module")
def db():
    con = sqlite3.connect(":memory:")
    con.executescript(SCHEMA)
    for r in ROWS:
        ts = int(r["date"].timestamp()) if r["date"] else None
        con.execute("INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (
            r["rowid"], "acct", "INBOX", 1, r["uid"], ts, r["from_name"], r["from_addr"], r["to"],
            r["cc"], r["subject"], " ".join(sorted(r["flags"])), int("\\Seen" in r["flags"]),
            int("\\Flagged" in r["flags"]), int("\\Answered" in r["flags"]), 0, 0, 100,
            int(r["has_attachment"]), f"<{r['uid']}@x>", "", ""))
        con.execute("INSERT INTO messages_fts(rowid, subject, sender, recipients, body) VALUES (?,?,?,?,?)", (
            r["rowid"], r["subject"], f"{r['from_name']} {r['from_addr']}", f"{r['to']} {r['cc']}", r["body"]))
    yield con
    con.close()


def sql_uids(con, q: str) -> set[int]:
    where, params = to_sql(q, tz=UTC)
    return {u for (u,) in con.execute(f"SELECT m.uid FROM messages m WHERE {where}", params)}


def py_uids(q: str) -> set[int]:
    query = parse(q)
    return {r["uid"] for r in ROWS if matches(query, r, r["body"], tz=UTC)}


# --- parsing -------------------------------------------------------------------------------

def test_parse_the_brief_example():
    q = parse('from:alice to:bob subject:"meaning of life" body:ketchup since:2026-01-01 '
              'before:2026-02-01 is:unread is:read is:flagged is:answered has:attachment')
    assert [(t.field, t.value) for t in q.terms] == [
        ("from", "alice"), ("to", "bob"), ("subject", "meaning of life"), ("body", "ketchup"),
        ("since", date(2026, 1, 1)), ("before", date(2026, 2, 1)), ("is", "unread"), ("is", "read"),
        ("is", "flagged"), ("is", "answered"), ("has", "attachment")]
    assert q.terms[2].phrase and not q.terms[0].phrase
    assert q.terms[1].position == 11


def test_bare_words_phrases_and_negation():
    q = parse('ketchup "meaning of life" -pickles -from:bob -"bad phrase" -is:read')
    assert q.terms == (
        Term("text", "ketchup", False, False, 0), Term("text", "meaning of life", False, True, 8),
        Term("text", "pickles", True, False, 26), Term("from", "bob", True, False, 35),
        Term("text", "bad phrase", True, True, 45), Term("is", "read", True, False, 59))


def test_keys_are_case_insensitive_and_urls_are_words():
    q = parse("FROM:Alice https://example.org/x 12:30 Subject:hi")
    assert [(t.field, t.value) for t in q.terms] == [
        ("from", "Alice"), ("text", "https://example.org/x"), ("text", "12:30"), ("subject", "hi")]


@pytest.mark.parametrize("value, expected", [
    ("today", date(2026, 11, 23)), ("yesterday", date(2026, 11, 22)), ("7d", date(2026, 11, 16)),
    ("2w", date(2026, 11, 9)), ("1m", date(2026, 10, 24)), ("1y", date(2025, 11, 23)), ("0d", date(2026, 11, 23)),
])
def test_relative_dates(value, expected):
    q = parse(f"since:{value} -before:{value.upper()}", today=date(2026, 11, 23))
    assert [t.value for t in q.terms] == [expected, expected]
    assert isinstance(parse("since:today").terms[0].value, date)


def test_empty_query():
    assert parse("   ") == Query((), "   ") and not parse("")
    assert to_imap("") == ["ALL"]
    assert to_sql("") == ("1", [])


@pytest.mark.parametrize("text, token, position", [
    ("from:", "from:", 0),
    ("ketchup foo:bar", "foo:bar", 8),
    ('subject:"unterminated', 'subject:"unterminated', 0),
    ('x "open phrase', '"open phrase', 2),
    ("since:2026-13-01", "since:2026-13-01", 0),
    ("before:last-week", "before:last-week", 0),
    ("since:7x", "since:7x", 0),
    ("a is:sleepy", "is:sleepy", 2),
    ("has:kittens", "has:kittens", 0),
    ("a - b", "-", 2),
    ('""', '""', 0),
    ("from:@@@", "from:@@@", 0),
    ("-", "-", 0),
])
def test_syntax_errors_name_the_token(text, token, position):
    with pytest.raises(SearchSyntaxError) as info:
        parse(text)
    assert isinstance(info.value, MailError)
    assert info.value.token == token and info.value.position == position
    assert token in str(info.value) and str(position) in str(info.value)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list('abc -:"\\ é') + ["from:", "is:", "since:", "has:", "body:", "2026-01-01"]),
                max_size=20).map("".join))
def test_parser_never_crashes(text):
    try:
        q = parse(text)
    except SearchSyntaxError as exc:
        assert 0 <= exc.position <= len(text)
        assert exc.token == "" or exc.token in text
        return
    to_imap(q)
    to_sql(q, tz=UTC)
    matches(q, ROWS[0], ROWS[0]["body"], tz=UTC)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30))
def test_any_user_text_is_safe_in_sql_and_fts(text):
    con = sqlite3.connect(":memory:")
    try:
        con.executescript(SCHEMA)
        for q in (f'subject:"{text}"', text):
            try:
                where, params = to_sql(q, tz=UTC)
            except SearchSyntaxError:
                continue
            list(con.execute(f"SELECT m.uid FROM messages m WHERE {where}", params))
    finally:
        con.close()


# --- IMAP ----------------------------------------------------------------------------------

def test_imap_criteria():
    assert to_imap('from:alice since:2026-01-01 is:unread') == ["FROM", "alice", "SINCE", date(2026, 1, 1), "UNSEEN"]
    assert to_imap('subject:"meaning of life" -is:flagged has:attachment before:2026-02-01') == [
        "SUBJECT", "meaning of life", "NOT", "FLAGGED", "HEADER", "Content-Type", "multipart/mixed",
        "BEFORE", date(2026, 2, 1)]
    assert to_imap("ketchup -body:crème") == [
        "OR", "SUBJECT", "ketchup", "OR", "FROM", "ketchup", "BODY", "ketchup", "NOT", "BODY", "crème"]
    assert to_imap("is:read is:answered is:unanswered cc:carol to:bob") == [
        "SEEN", "ANSWERED", "UNANSWERED", "CC", "carol", "TO", "bob"]


def test_imap_criteria_serialise_with_imapclient():
    from imapclient.imapclient import _normalise_search_criteria

    out = _normalise_search_criteria(to_imap('subject:"crème brûlée" since:2026-01-05 -from:bob'), "UTF-8")
    assert out == [b"SUBJECT", b'"cr\xc3\xa8me br\xc3\xbbl\xc3\xa9e"', b"SINCE", b"05-Jan-2026", b"NOT", b"FROM", b"bob"]


# --- SQL vs the real cache ---------------------------------------------------------------------

def test_from_matches_name_or_address(db):
    got = sql_uids(db, "from:alice")
    assert got == {r["uid"] for r in ROWS if r["from_addr"] == "alice@crepes.fr"} and got


def test_phrase_order_matters_but_words_do_not(db):
    phrase = sql_uids(db, '"meaning of life"')
    assert phrase == {r["uid"] for r in ROWS if "meaning of life" in (r["subject"] + " " + r["body"]).lower()}
    words = sql_uids(db, "meaning life")
    assert phrase < words  # "life meaning of the" matches the words, not the phrase


def test_prefix_and_diacritics(db):
    assert sql_uids(db, "ketch") == {r["uid"] for r in ROWS if "ketchup" in (r["subject"] + r["body"]).lower()}
    creme = sql_uids(db, "creme")
    assert creme == {r["uid"] for r in ROWS if "crème" in (r["subject"] + r["body"]).lower()} and creme
    assert sql_uids(db, "from:angstrom") == {r["uid"] for r in ROWS if r["from_addr"] == "zoe@hamburger.edu"}


def test_flags_dates_and_attachments(db):
    assert sql_uids(db, "is:unread") == {r["uid"] for r in ROWS if "\\Seen" not in r["flags"]}
    assert sql_uids(db, "-is:flagged") == {r["uid"] for r in ROWS if "\\Flagged" not in r["flags"]}
    assert sql_uids(db, "has:attachment is:answered") == {
        r["uid"] for r in ROWS if r["has_attachment"] and "\\Answered" in r["flags"]}
    lo, hi = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    assert sql_uids(db, "since:2026-01-01 before:2026-02-01") == {
        r["uid"] for r in ROWS if r["date"] and lo <= r["date"] < hi}
    assert not sql_uids(db, "since:2030-01-01")


def test_negated_text(db):
    assert sql_uids(db, "-ketchup") == {r["uid"] for r in ROWS} - sql_uids(db, "ketchup")
    # to: and cc: both search every recipient (the cache has one FTS recipients column)
    assert sql_uids(db, "-to:bob") == {r["uid"] for r in ROWS if "bob@" not in r["to"] + r["cc"]}
    assert sql_uids(db, "to:bob") == sql_uids(db, "cc:bob")


def test_injection_attempts_are_just_text(db):
    for q in ['"x" OR 1=1 --', "subject:'; DROP TABLE messages; --", 'body:"NEAR(a b)"', "sender:* OR"]:
        try:
            sql_uids(db, q)
        except SearchSyntaxError:
            pass
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == len(ROWS)
    assert fts_phrase('a" OR "b', prefix=False) == '"a or b"'


QUERIES = [
    "ketchup", "from:alice", "from:bob is:unread", "to:carol", "cc:zoe", "subject:meaning",
    'subject:"meaning of life"', "body:pickles", "-ketchup -is:read", "crème", "creme brulee",
    "since:2026-02-01", "before:2026-01-15 has:attachment", "is:flagged -is:answered",
    "from:crepes.fr to:hamburger.edu", "-from:news ketch", "news", "life -body:meaning",
    'Re "meaning"', "invoice 2026", "is:answered since:2026-03-01 -has:attachment",
]


@pytest.mark.parametrize("q", QUERIES)
def test_sql_and_python_matcher_agree(db, q):
    assert sql_uids(db, q) == py_uids(q)


def test_search_speed_over_a_cache(db):
    import time

    t = time.perf_counter()
    for q in QUERIES:
        sql_uids(db, q)
    assert time.perf_counter() - t < 2.0  # generous; bench/ measures the real target


# --- matcher details -------------------------------------------------------------------------

def test_matcher_accepts_flag_booleans_and_unix_dates():
    fields = {"subject": "Hi", "from_name": "", "from_addr": "a@x.org", "seen": 0, "flagged": 1,
              "date": int(datetime(2026, 1, 10, tzinfo=UTC).timestamp())}
    assert matches("is:unread is:flagged since:2026-01-10", fields, tz=UTC)
    assert not matches("before:2026-01-10", fields, tz=UTC)
    assert matches("-body:x", fields, None)
    assert not matches("body:hi", fields, None)
    assert matches("hi", fields, None)
    assert matches("is:read", {"flags": "\\Seen \\Answered"}) and matches("is:replied", {"flags": "\\Seen \\Answered"})
