"""The SQLite header cache: schema contract, batched upserts with FTS rows kept in step,
UIDVALIDITY drops, flags, removal, ordered UID lists and SQL/FTS queries."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from tui_mail.store.base import MessageSummary
from tui_mail.store.cache import CacheError, HeaderCache

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def summ(uid: int, subject: str = "", flags=(), frm=("Alice", "alice@example.com"), **kw) -> MessageSummary:
    return MessageSummary(uid=uid, date=T0 + timedelta(minutes=uid), from_name=frm[0], from_addr=frm[1],
                          to="Bob <bob@example.org>", cc="", subject=subject or f"Subject {uid}",
                          flags=frozenset(flags), size=100 + uid, **kw)


@pytest.fixture
def cache(tmp_path):
    c = HeaderCache(tmp_path / "c" / "cache.sqlite")
    yield c
    c.close()


def test_schema_is_exactly_the_contract(cache):
    cols = [r[1] for r in cache._db.execute("PRAGMA table_info(messages)")]
    assert cols == ["rowid", "account", "folder", "uidvalidity", "uid", "date", "from_name", "from_addr",
                    "to_addrs", "cc_addrs", "subject", "flags", "seen", "flagged", "answered", "deleted",
                    "draft", "size", "has_attachment", "message_id", "in_reply_to", "refs"]
    fts = [r[1] for r in cache._db.execute("PRAGMA table_info(messages_fts)")]
    assert fts == ["subject", "sender", "recipients", "body"]
    assert cache._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_put_get_round_trip_and_upsert_keeps_fts_in_step(cache):
    s = summ(7, "Ketchup recipe", flags={"\\Seen", "\\Flagged"}, has_attachment=True,
             message_id="<a@x>", in_reply_to="<b@x>", references=("<c@x>", "<b@x>"))
    cache.check_uidvalidity("acct", "INBOX", 1)
    assert cache.put("acct", "INBOX", 1, [(s, "tomatoes and vinegar")]) == 1
    assert cache.get("acct", "INBOX", [7, 8]) == {7: s}
    row = cache._db.execute("SELECT seen, flagged, answered, flags, date, refs FROM messages").fetchone()
    assert row == (1, 1, 0, "\\Flagged \\Seen", int(s.date.timestamp()), "<c@x> <b@x>")
    # update: same rowid, one FTS row, new text
    cache.put("acct", "INBOX", 1, [(summ(7, "Mustard recipe"), "")])
    assert cache._db.execute("SELECT count(*) FROM messages_fts").fetchone()[0] == 1
    assert cache.query("m.rowid IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?)",
                       ["mustard"]) == [("INBOX", 7)]
    assert cache.query("m.rowid IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?)",
                       ["ketchup"]) == []


def test_uidvalidity_change_drops_only_that_folder(cache):
    for folder in ("INBOX", "Sent"):
        cache.check_uidvalidity("acct", folder, 10)
        cache.put("acct", folder, 10, [(summ(u), "") for u in range(1, 6)])
    cache.save_order("acct", "INBOX", "date", [5, 4, 3, 2, 1])
    assert cache.check_uidvalidity("acct", "INBOX", 10) is False
    assert cache.check_uidvalidity("acct", "INBOX", 11) is True
    assert cache.count("acct", "INBOX") == 0 and cache.count("acct", "Sent") == 5
    assert cache.load_order("acct", "INBOX", "date") is None
    assert cache.folder_sync("acct", "INBOX").uidvalidity == 11
    assert cache._db.execute("SELECT count(*) FROM messages_fts").fetchone()[0] == 5


def test_flags_remove_sync_state_and_order(cache):
    cache.check_uidvalidity("a", "F", 3)
    cache.put("a", "F", 3, [(summ(u), "") for u in range(1, 11)])
    cache.update_flags("a", "F", {2: frozenset({"\\Seen", "$Work"}), 3: frozenset()})
    got = cache.get("a", "F", [2, 3])
    assert got[2].flags == {"\\Seen", "$Work"} and not got[2].unread and got[3].unread
    cache.remove("a", "F", [1, 2])
    assert cache.cached_uids("a", "F") == set(range(3, 11))
    assert cache._db.execute("SELECT count(*) FROM messages_fts").fetchone()[0] == 8
    cache.set_sync("a", "F", highestmodseq=42, uidnext=11)
    assert (cache.folder_sync("a", "F").highestmodseq, cache.folder_sync("a", "F").uidnext) == (42, 11)
    cache.save_order("a", "F", "date", list(range(100000, 0, -1)))
    assert cache.load_order("a", "F", "date")[:2] == (100000, 99999)
    assert cache.dates("a", "F")[3] == int((T0 + timedelta(minutes=3)).timestamp())
    cache.drop_folder("a", "F")
    assert cache.folder_sync("a", "F") is None and cache.count("a", "F") == 0


def test_query_filters_by_account_and_folder_newest_first(cache):
    cache.check_uidvalidity("a", "INBOX", 1)
    cache.put("a", "INBOX", 1, [(summ(u, flags={"\\Seen"} if u % 2 else ()), "") for u in range(1, 7)])
    cache.put("b", "INBOX", 1, [(summ(1), "")])
    assert cache.query("seen = ?", [0], account="a", folder="INBOX") == [("INBOX", 6), ("INBOX", 4), ("INBOX", 2)]
    assert len(cache.query("", [], account=None)) == 7
    assert cache.query("", [], account="a", limit=2) == [("INBOX", 6), ("INBOX", 5)]
    with pytest.raises(CacheError, match="local search failed"):
        cache.query("no_such_column = 1", [])


def test_unicode_search_ignores_diacritics(cache):
    cache.put("a", "INBOX", 1, [(summ(1, "Crème brûlée", frm=("José Núñez", "jose@example.es")), "Grüße")])
    fts = "m.rowid IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?)"
    assert cache.query(fts, ["creme"]) == [("INBOX", 1)]
    assert cache.query(fts, ["sender:nunez"]) == [("INBOX", 1)]
    assert cache.query(fts, ["body:grusse"]) == []      # ü→u, not ue
    assert cache.query(fts, ["body:gruße"]) == [("INBOX", 1)]
    cache.set_body_text("a", "INBOX", 1, "ketchup everywhere")
    assert cache.query(fts, ["body:ketchup"]) == [("INBOX", 1)]


def test_batched_insert_of_20000_is_fast_and_survives_reopen(tmp_path):
    path = tmp_path / "big.sqlite"
    c = HeaderCache(path)
    t = time.perf_counter()
    c.check_uidvalidity("a", "INBOX", 1)
    for start in range(1, 20001, 1000):
        c.put("a", "INBOX", 1, [(summ(u, f"topic {u % 13} message {u}"), f"body {u}") for u in range(start, start + 1000)])
    assert time.perf_counter() - t < 10
    c.close()
    c = HeaderCache(path)
    try:
        assert c.count("a", "INBOX") == 20000
        t = time.perf_counter()
        hits = c.query("m.rowid IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?)",
                       ["topic 7"], account="a", folder="INBOX")
        assert len(hits) == 20000 // 13 + (1 if 20000 % 13 >= 7 else 0)
        assert time.perf_counter() - t < 1
    finally:
        c.close()


def test_unopenable_cache_is_a_cache_error(tmp_path):
    bad = tmp_path / "notadb.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CacheError, match="cannot open the header cache"):
        HeaderCache(bad)


def test_local_search_glue_uses_the_search_compiler(cache):
    search = pytest.importorskip("tui_mail.mail.search")
    cache.put("a", "INBOX", 1, [(summ(1, "meaning of life", flags={"\\Seen"}), "ketchup")])
    cache.put("a", "INBOX", 1, [(summ(2, "other"), "")])
    assert hasattr(search, "to_sql")
    assert cache.search("subject:meaning", account="a", folder="INBOX") == [("INBOX", 1)]
    assert cache.search("is:unread", account="a") == [("INBOX", 2)]


def test_unindexed_bodies_are_told_apart_from_empty_ones(cache):
    cache.put("a", "F", 1, [(summ(1), None), (summ(2), ""), (summ(3), "text")])
    assert cache.unindexed_uids("a", "F") == [1]
    cache.put("a", "F", 1, [(summ(1), "now indexed")])
    assert cache.unindexed_uids("a", "F") == []
