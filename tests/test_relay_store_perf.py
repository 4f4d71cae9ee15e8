"""The store's speed paths stay correct: the MessagePack index encoding and the upgrade of an
index written with marshal (schema 6), the cached UID list and the indexed first-unseen that
SELECT reads instead of every row, checked against a fresh read of the index while two store
users (as two relay sessions do) append, flag, expunge and another Maildir tool changes files."""

from __future__ import annotations

import marshal
import os
import re
import sqlite3
from pathlib import Path

from relay.store import MailStore, index, mime

ADDR = "bob@example.org"


def msg(n: int) -> bytes:
    return (f"From: Alice <alice@x.org>\r\nTo: {ADDR}\r\nSubject: message {n}\r\n"
            f"Message-ID: <{n}@x.org>\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            f"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody {n}\r\n--b--\r\n").encode()


def test_pack_round_trips_mime_structures():
    data = msg(1)
    env, body = mime.envelope(data), mime.bodystructure(data)
    for value in (env, body):
        blob = index.pack(value)
        assert index.unpack(blob) == value
        assert mime.imap_encode(index.unpack(blob)) == mime.imap_encode(value)


def _downgrade_to_marshal(path, broken_uid=None):
    """Rewrite an index as relay schema 6 left it: marshal blobs, schema '6'."""
    db = sqlite3.connect(path)
    for folder, uid, env, body in db.execute(
            "SELECT folder, uid, envelope, bodystructure FROM messages").fetchall():
        e = marshal.dumps(index.unpack(env))
        b = marshal.dumps(index.unpack(body))
        if uid == broken_uid:
            e = b"\xff\x00not marshal"
        db.execute("UPDATE messages SET envelope=?, bodystructure=? WHERE folder=? AND uid=?",
                   (e, b, folder, uid))
    db.execute("UPDATE meta SET value='6' WHERE key='schema'")
    db.commit()
    db.close()


def test_marshal_index_is_upgraded_on_first_open_keeping_uids(tmp_path):
    with MailStore(tmp_path / "mail") as s:
        u = s.user(ADDR)
        for n in range(4):
            u.append("INBOX", msg(n), ["\\Seen"] if n % 2 else [])
        before = u.state("INBOX")
        envs, bodies = u.envelopes("INBOX"), u.bodystructures("INBOX")
        path = u.root / index.FILENAME
    _downgrade_to_marshal(path)
    with MailStore(tmp_path / "mail") as s:
        u = s.user(ADDR)
        st = u.state("INBOX")
        assert (st.uidvalidity, st.uids, st.uidnext) == (before.uidvalidity, before.uids, before.uidnext)
        assert u.envelopes("INBOX") == envs and u.bodystructures("INBOX") == bodies
        assert [r.flags for r in u.records("INBOX")] == [frozenset(), {"\\Seen"}] * 2
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == str(index.SCHEMA_VERSION)
    for env, body in db.execute("SELECT envelope, bodystructure FROM messages"):
        index.unpack(env), index.unpack(body)       # MessagePack now, not marshal
        assert not env.startswith(b"[")             # marshal's list type code
    db.close()


def test_schema_7_wire_columns_are_rewritten_in_the_sent_form_on_open(tmp_path):
    """Schema 7 cached the wire columns with spaces between addresses and parts; the upgrade
    to 8 re-encodes them from the MessagePack columns (no file read), keeping UIDs, and leaves
    rows not analysed yet alone."""
    two = msg(1).replace(f"To: {ADDR}".encode(), f"To: {ADDR}, carol@x.org".encode())
    with MailStore(tmp_path / "mail") as s:
        u = s.user(ADDR)
        u.append("INBOX", two)
        u.append("INBOX", msg(2))
        before = u.state("INBOX")
        path = u.root / index.FILENAME
    db = sqlite3.connect(path)                      # as schema 7 left it
    for uid, env, body in db.execute("SELECT uid, envelope, bodystructure FROM messages").fetchall():
        db.execute("UPDATE messages SET envelope_wire=?, body_wire=? WHERE uid=?",
                   (mime.imap_encode(index.unpack(env)), mime.imap_encode(index.unpack(body)), uid))
    db.execute("UPDATE messages SET envelope_wire=x'' WHERE uid=2")     # pending analysis
    db.execute("UPDATE meta SET value='7' WHERE key='schema'")
    db.commit()
    db.close()
    with MailStore(tmp_path / "mail") as s:
        u = s.user(ADDR)
        st = u.state("INBOX")
        assert (st.uidvalidity, st.uids) == (before.uidvalidity, before.uids)
        wire = u._db.execute("SELECT envelope_wire, body_wire FROM messages WHERE uid=1").fetchone()
        assert wire == (mime.envelope_wire(mime.envelope(two)), mime.body_wire(mime.bodystructure(two)))
        assert b")(" in wire[0]
        assert u._db.execute("SELECT envelope_wire FROM messages WHERE uid=2").fetchone() == (b"",)
        assert u._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == (str(index.SCHEMA_VERSION),)


def test_unreadable_marshal_row_is_reanalysed_from_its_file(tmp_path):
    with MailStore(tmp_path / "mail") as s:
        u = s.user(ADDR)
        for n in range(3):
            u.append("INBOX", msg(n))
        envs = u.envelopes("INBOX")
        path = u.root / index.FILENAME
    _downgrade_to_marshal(path, broken_uid=2)
    with MailStore(tmp_path / "mail") as s:
        u = s.user(ADDR)
        u.version("INBOX")                          # a sync re-analyses the queued folder
        assert u.envelopes("INBOX") == envs
        assert u._stale == {}


def _truth(u, folder="INBOX"):
    """What the index says, read row by row (no cache)."""
    rows = u._db.execute("SELECT m.uid, m.flags FROM messages m JOIN folders f ON f.id=m.folder "
                         "WHERE f.name=? ORDER BY m.uid", (folder,)).fetchall()
    unseen = [uid for uid, fl in rows if "\\Seen" not in fl.split()]
    return [uid for uid, _ in rows], (unseen[0] if unseen else None)


def _check(u):
    cached = list(u.state("INBOX").uids)         # syncs first: then the truth is current
    uids, first = _truth(u)
    assert cached == uids
    assert u.first_unseen("INBOX") == first
    assert u.status("INBOX")["MESSAGES"] == len(uids)


def test_cached_uids_and_first_unseen_follow_every_change(tmp_path):
    with MailStore(tmp_path / "mail") as s:
        a = s.user(ADDR)
        _check(a)
        for n in range(6):
            a.append("INBOX", msg(n), ["\\Seen"])
        _check(a)
        a.set_flags("INBOX", [3], "remove", ["\\Seen"])
        _check(a)
        assert a.first_unseen("INBOX") == 3
        a.set_flags("INBOX", [1, 2], "set", ["$Work"])      # a keyword, not \Seen
        _check(a)
        assert a.first_unseen("INBOX") == 1
        a.set_flags("INBOX", [1, 2, 3], "add", ["\\Seen", "\\Deleted"])
        _check(a)
        assert a.first_unseen("INBOX") is None
        assert a.expunge("INBOX") == [1, 2, 3]
        _check(a)
        a.copy("INBOX", [4], "INBOX", move=True)            # MOVE into itself: new UID
        _check(a)
        a.copy("INBOX", [5], "Archive")
        _check(a)
        # another Maildir tool: deliver into new/, mark one unseen by renaming, delete one
        cur = a.root / "cur"
        (a.root / "new" / "1700000000.Mx.host").write_bytes(msg(99))
        seen6 = next(p for p in cur.iterdir() if p.name.endswith(":2,S") and "bench" not in p.name)
        os.rename(seen6, cur / seen6.name[:-1])
        _check(a)
        os.unlink(next(iter(sorted(cur.iterdir()))))
        _check(a)


def test_two_store_users_of_one_index_see_each_others_changes(tmp_path):
    """Two MailStores on one Maildir (as two processes would be): neither trusts a stale
    cached UID list."""
    s1, s2 = MailStore(tmp_path / "mail"), MailStore(tmp_path / "mail")
    try:
        a, b = s1.user(ADDR), s2.user(ADDR)
        for n in range(4):
            a.append("INBOX", msg(n), ["\\Seen"])
        _check(a), _check(b)
        b.append("INBOX", msg(10))
        _check(a), _check(b)
        assert a.first_unseen("INBOX") == 5
        a.set_flags("INBOX", [2], "add", ["\\Deleted"])
        a.expunge("INBOX")
        _check(b), _check(a)
        b.set_flags("INBOX", [5], "add", ["\\Seen"])
        a.append("INBOX", msg(11))
        _check(b), _check(a)
        assert list(b.state("INBOX").uids) == [1, 3, 4, 5, 6]
    finally:
        s1.close()
        s2.close()


def test_big_first_sync_indexes_lazily_and_analyses_on_first_use(tmp_path, monkeypatch):
    """Many files at once are indexed from the directory only; ENVELOPE, BODYSTRUCTURE and the
    SEARCH columns are analysed on first use (also after a restart, and in a copy's target)."""
    from relay.store import mailbox
    monkeypatch.setattr(mailbox, "LAZY_BATCH", 3)
    root = tmp_path / "mail" / ADDR
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    for n in range(6):
        (root / "cur" / f"{1700000000 + n}.M{n}P1.host:2,{'S' if n % 2 else ''}").write_bytes(msg(n))
    with MailStore(tmp_path / "mail") as s:
        u = s.user(ADDR)
        assert list(u.state("INBOX").uids) == [1, 2, 3, 4, 5, 6]
        assert u._pending
        recs = u.records("INBOX")
        assert [r.vsize for r in recs] == [len(msg(n)) for n in range(6)]
        assert u.first_unseen("INBOX") == 1
        assert u.envelope("INBOX", 2) == mime.envelope(msg(1))     # analysed on demand
        assert u.bodystructures_wire("INBOX", [3]) == {3: mime.body_wire(mime.bodystructure(msg(2)))}
        u.copy("INBOX", [4, 5], "Archive")
    with MailStore(tmp_path / "mail") as s:                      # pending survives a restart
        u = s.user(ADDR)
        assert u._pending
        assert u.search_header("Archive", "subject", "message 4") == {2}
        assert u.search_header("INBOX", "subject", "message 5") == {6}
        assert u.header_fields("INBOX")[1].subject == "message 0"
        assert u.envelopes_wire("INBOX") == {uid: mime.envelope_wire(mime.envelope(msg(uid - 1)))
                                             for uid in range(1, 7)}
        assert [row[4] for row in u.sort_fields("INBOX")] == [f"message {n}" for n in range(6)]
        assert u._pending == set()                               # all analysed now
    with MailStore(tmp_path / "mail") as s:
        assert s.user(ADDR)._pending == set()


async def test_fetch_flags_built_by_sqlite_equals_row_by_row(tmp_path, monkeypatch):
    """FETCH (FLAGS) of a contiguous run is written by the store's SQLite in one statement;
    its answer is byte for byte the row-by-row one (keywords announced first, \\Recent, MODSEQ,
    CHANGEDSINCE, a view holding messages another session expunged)."""
    from relay.store.mailbox import UserStore
    from tests.test_relay_imap_session import Client

    used = []
    real = UserStore.render_flag_rows

    def spy(self, *a, **kw):
        text = real(self, *a, **kw)
        used.append(text is not None)
        return text
    monkeypatch.setattr(UserStore, "render_flag_rows", spy)

    async def both(cl, cmd):
        told = await cl("n NOOP")      # changes of the other session reported apart
        used.clear()
        fast = await cl(cmd)
        sql_used = any(used)
        with monkeypatch.context() as m:
            m.setattr(UserStore, "render_flag_rows", None)
            slow = await cl(cmd)
        fetch = lambda text: [x for x in text.splitlines() if x.startswith("* ") and " FETCH " in x]   # noqa: E731
        assert fetch(fast) == fetch(slow) and fetch(fast)
        return told + fast, sql_used

    with MailStore(tmp_path / "mail") as s:
        u = s.user(ADDR)
        for n in range(12):
            u.append("INBOX", msg(n), [["\\Seen"], [], ["\\Flagged", "\\Seen"], ["$Work"]][n % 4])
        u.claim_recent("INBOX", list(range(1, 9)))      # 9..12 stay \Recent
        a, b = Client(None), Client(None)
        for cl in (a, b):
            cl.s.open_mailbox = lambda user: u
            cl.s.authenticate = _yes
            assert "OK" in await cl("l LOGIN bob x")
        assert "OK" in await a("s SELECT INBOX")
        fast, sql = await both(a, "f1 FETCH 1:* (FLAGS)")
        assert sql and "\\Recent" in fast and "$Work" in fast
        _, sql = await both(a, "f2 UID FETCH 2:7 (FLAGS MODSEQ)")
        assert sql
        modseq = u.state("INBOX").highestmodseq
        assert "OK" in await b("s SELECT INBOX")
        assert "OK" in await b("st STORE 3 +FLAGS (\\Answered $Other)")
        fast, sql = await both(a, f"f3 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})")
        assert sql and "MODSEQ" in fast and "$Other" in fast
        assert 0 <= fast.index("* FLAGS") < fast.index(" FETCH ")   # the new keyword told first
        assert "OK" in await b("st STORE 5 +FLAGS (\\Deleted)")
        assert "OK" in await b("e EXPUNGE")
        used.clear()
        out = await a("f4 FETCH 1:* (FLAGS)")        # a's view still holds UID 5: row by row
        assert used and not any(used) and "* 5 FETCH" not in out and "* 12 FETCH" in out
        assert "* 5 EXPUNGE" in await a("n NOOP")
        _, sql = await both(a, "f5 FETCH 1:* (FLAGS)")           # a gap in the UIDs now
        assert sql


async def _yes(user, password):
    return True


async def test_fetch_from_index_columns_equals_row_by_row(tmp_path, monkeypatch):
    """FETCH of items the index answers alone (UID FLAGS MODSEQ RFC822.SIZE INTERNALDATE
    ENVELOPE BODYSTRUCTURE BODY) is built from the index rows with the cached wire forms; byte for
    byte the row-by-row answer: literals, \\Recent, a keyword another session set (announced
    first), CHANGEDSINCE, a view holding a message another session expunged, a lazily indexed
    folder."""
    import datetime as dt

    from relay.store import mailbox
    from relay.store.mailbox import UserStore
    from tests.test_relay_imap_session import Client

    used = []
    real = UserStore.fetch_rows

    def spy(self, *a, **kw):
        used.append(1)
        return real(self, *a, **kw)
    monkeypatch.setattr(UserStore, "fetch_rows", spy)

    async def both(cl, cmd, expect_fast=True, noop=True):
        told = await cl("n NOOP") if noop else ""
        used.clear()
        fast = await cl(cmd)
        assert bool(used) == expect_fast
        with monkeypatch.context() as m:
            m.setattr(UserStore, "fetch_rows", None)
            slow = await cl(cmd)
        fetch = lambda text: [x for x in text.splitlines() if x.startswith("* ") and " FETCH " in x]   # noqa: E731
        assert fetch(fast) == fetch(slow) and fetch(fast)
        return told + fast

    items = "(UID FLAGS MODSEQ RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE BODY)"
    with MailStore(tmp_path / "mail") as s:
        u = s.user(ADDR)
        for n in range(12):
            data = msg(n)
            if n == 4:
                data = data.replace(b"Subject: message 4", "Subject: Grüße aus Köln".encode())
                data = data.replace(f"To: {ADDR}".encode(), f"To: {ADDR}, carol@x.org".encode())
            when = dt.datetime(2026, 1, 1 + n, 9, n, tzinfo=dt.timezone(dt.timedelta(minutes=60 * (n % 3) - 90)))
            u.append("INBOX", data, [["\\Seen"], [], ["\\Flagged", "\\Seen"], ["$Work"]][n % 4], when)
        u.claim_recent("INBOX", list(range(1, 9)))      # 9..12 stay \Recent
        a, b = Client(None), Client(None)
        for cl in (a, b):
            cl.s.open_mailbox = lambda user: u
            cl.s.authenticate = _yes
            assert "OK" in await cl("l LOGIN bob x")
        assert "OK" in await a("s SELECT INBOX")
        out = await both(a, f"f FETCH 1:* {items}")
        assert "\\Recent" in out and "{" in out and '"example.org")(NIL NIL "carol"' in out
        await both(a, "f UID FETCH 2:7 (FLAGS RFC822.SIZE ENVELOPE)")
        modseq = u.state("INBOX").highestmodseq
        assert "OK" in await b("s SELECT INBOX")
        assert "OK" in await b("st STORE 3 +FLAGS (\\Answered $Other)")
        out = await both(a, f"f UID FETCH 1:* (FLAGS ENVELOPE) (CHANGEDSINCE {modseq})")
        assert "$Other" in out and 0 <= out.index("* FLAGS") < out.index(" FETCH ")
        assert "OK" in await b("st STORE 5 +FLAGS (\\Deleted)")
        assert "OK" in await b("e EXPUNGE")
        out = await both(a, "f FETCH 1:* (FLAGS ENVELOPE)", noop=False)   # a's view holds UID 5
        assert "* 5 FETCH" not in out and "* 12 FETCH" in out
        await both(a, "f FETCH 4:6 (UID ENVELOPE)", noop=False)
        assert "OK" in await a("n NOOP")
        await both(a, f"f FETCH 1:* {items}")                   # a gap in the UIDs now
        await both(a, "f FETCH 2:* (UID FLAGS BODY[HEADER.FIELDS (SUBJECT)])", expect_fast=False)
    monkeypatch.setattr(mailbox, "LAZY_BATCH", 5)               # a folder indexed lazily
    src = tmp_path / "lazy"
    (src / "cur").mkdir(parents=True)
    for n in range(8):
        (src / "cur" / f"{1000 + n}.M{n}P1.h,S=1:2,{'S' if n % 2 else ''}").write_bytes(msg(n))
    with MailStore(tmp_path / "mail2") as s:
        u = s.user(ADDR)
        import shutil
        shutil.copytree(src / "cur", u.root / "cur", dirs_exist_ok=True)
        c = Client(None)
        c.s.open_mailbox = lambda user: u
        c.s.authenticate = _yes
        assert "OK" in await c("l LOGIN bob x")
        assert "OK" in await c("s SELECT INBOX")
        assert u._pending
        out = await both(c, f"f FETCH 1:* {items}")
        assert "message 7" in out and not u._pending


def test_folders_made_by_other_tools_show_up_despite_the_listing_cache(tmp_path):
    """folders() reuses the root's listing while its mtime stays; a folder another tool
    makes (also one whose cur/ comes a moment after the directory) still shows up."""
    with MailStore(tmp_path / "mail") as s:
        u = s.user(ADDR)
        before = {f.name for f in u.folders()}
        (u.root / ".Made").mkdir()
        assert {f.name for f in u.folders()} == before          # no cur/ yet: not a folder
        (u.root / ".Made" / "cur").mkdir()                       # root mtime unchanged
        (u.root / ".Made" / "new").mkdir()
        (u.root / ".Made" / "tmp").mkdir()
        assert {f.name for f in u.folders()} == before | {"Made"}
        for sub in ("cur", "new", "tmp"):
            (u.root / ".Other" / sub).mkdir(parents=True)
        assert {f.name for f in u.folders()} == before | {"Made", "Other"}


def test_append_fsyncs_the_file_and_then_cur(tmp_path, monkeypatch):
    """APPEND: the message file is fsynced before its rename into cur/, and cur/ after it, so
    the name survives a power loss as well as the bytes."""
    from relay.store import maildir
    with MailStore(tmp_path / "mail") as s:
        u = s.user(ADDR)
        u.state("INBOX")
        synced = []
        real_fsync, real_open = os.fsync, os.open
        opened: dict[int, str] = {}

        def spy_open(path, flags, *a, **kw):
            fd = real_open(path, flags, *a, **kw)
            opened[fd] = str(path)
            return fd

        def spy_fsync(fd):
            synced.append(opened.get(fd, "?"))
            return real_fsync(fd)
        monkeypatch.setattr(maildir.os, "open", spy_open)
        monkeypatch.setattr(maildir.os, "fsync", spy_fsync)
        u.append("INBOX", msg(1))
        assert len(synced) == 2
        assert Path(synced[0]).parent == u.root / "tmp" and Path(synced[1]) == u.root / "cur"


def _scan_status(u, folder):
    """STATUS figures counted from the rows (what the counts table must equal)."""
    (fid,) = u._db.execute("SELECT id FROM folders WHERE name=?", (folder,)).fetchone()
    n, unseen, size = u._db.execute(
        "SELECT count(*), total(instr(' '||flags||' ', ' \\Seen ') = 0), total(size) FROM messages "
        "WHERE folder=?", (fid,)).fetchone()
    return {"MESSAGES": n, "UNSEEN": int(unseen), "SIZE": int(size)}


def test_status_counts_kept_by_triggers_match_a_scan(tmp_path, monkeypatch):
    """STATUS MESSAGES/UNSEEN/SIZE come from counts the index's triggers keep: equal to a scan
    after appends, flag changes (here and by another tool), copy, move, expunge, a lazy index,
    and filled once for an index made before the counts existed."""
    from relay.store import mailbox

    def same(u, *folders):
        for folder in folders:
            st = u.status(folder)
            assert {k: st[k] for k in ("MESSAGES", "UNSEEN", "SIZE")} == _scan_status(u, folder), folder

    with MailStore(tmp_path / "mail") as s:
        u = s.user(ADDR)
        for n in range(6):
            u.append("INBOX", msg(n), ["\\Seen"] if n % 2 else [])
        same(u, "INBOX")
        u.set_flags("INBOX", [1, 2], "add", ["\\Seen", "$Work"])
        u.set_flags("INBOX", [3], "remove", ["\\Seen"])
        same(u, "INBOX")
        u.copy("INBOX", [1, 2, 3], "Archive")
        u.copy("INBOX", [4], "Trash", move=True)
        same(u, "INBOX", "Archive", "Trash")
        u.set_flags("INBOX", [5], "add", ["\\Deleted"])
        u.expunge("INBOX")
        same(u, "INBOX")
        cur = u.root / "cur"
        name = next(p for p in os.listdir(cur) if p.endswith(":2,"))
        os.rename(cur / name, cur / (name + "S"))                # another tool marks it seen
        os.unlink(cur / next(p for p in sorted(os.listdir(cur))))  # and deletes one
        u.state("INBOX")
        same(u, "INBOX")
        path = u.root / index.FILENAME
    db = sqlite3.connect(path)                 # as an index made before the counts table
    db.execute("DROP TABLE folder_counts")
    db.execute("DELETE FROM meta WHERE key='counts'")
    db.commit()
    db.close()
    monkeypatch.setattr(mailbox, "LAZY_BATCH", 3)
    with MailStore(tmp_path / "mail") as s:
        u = s.user(ADDR)
        same(u, "INBOX", "Archive", "Trash")
        for n in range(4):                     # a lazy first index of new files
            (u.root / "new" / f"{2000 + n}.M{n}P9.h").write_bytes(msg(10 + n))
        u.state("INBOX")
        same(u, "INBOX")
        u.append("INBOX", msg(20))             # the per-row trigger is back after the bulk
        same(u, "INBOX")
        u.delete("Archive")
        assert u.status("Trash")["MESSAGES"] == 1


async def test_sparse_fetch_after_other_sessions_expunge_answers_the_right_messages(tmp_path):
    """FETCH 1,6,9 while another session expunged 2,3,4,6,7,8: the index holds three rows in
    UIDs 1..9 (1, 5, 9), as many as the set names, but not the same ones: sequence 6 is gone
    (no line), 5 is not asked for."""
    from tests.test_relay_imap_session import Client

    with MailStore(tmp_path / "mail") as s:
        u = s.user(ADDR)
        for n in range(10):
            u.append("INBOX", msg(n))
        a, b = Client(None), Client(None)
        for cl in (a, b):
            cl.s.open_mailbox = lambda user: u
            cl.s.authenticate = _yes
            assert "OK" in await cl("l LOGIN bob x")
            assert "OK" in await cl("s SELECT INBOX")
        assert "OK" in await b("st UID STORE 2:4,6:8 +FLAGS (\\Deleted)")
        assert "OK" in await b("e EXPUNGE")
        out = await a("f FETCH 1,6,9 (UID FLAGS MODSEQ ENVELOPE)")
        assert re.findall(r"\* (\d+) FETCH \(UID (\d+)", out) == [("1", "1"), ("9", "9")]
        assert "message 4" not in out and "message 0" in out and "message 8" in out
