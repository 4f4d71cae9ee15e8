"""relay.store over real Maildirs in tmp_path: default folders, delivery pickup, UID stability,
flags in file names, copy/move/expunge, folder operations, crash recovery and notifications."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import threading

import pytest

from relay.delivery import already_delivered, deliver_local
from relay.events import ChangeBus
from relay.store import MailStore, StoreError, index, maildir, mime

ADDR = "bob@example.org"


def msg(n: int, subject: str | None = None) -> bytes:
    subject = subject if subject is not None else f"message {n}"
    return (f"From: Alice <alice@x.org>\r\nTo: {ADDR}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{n}@x.org>\r\nDate: Mon, 23 Nov 2026 09:00:{n % 60:02d} +0000\r\n\r\n"
            f"body {n}\r\n.leading dot\r\n").encode()


@pytest.fixture
def bus():
    return ChangeBus()


@pytest.fixture
def store(tmp_path, bus):
    s = MailStore(tmp_path / "mail", bus)
    yield s
    s.close()


def deliver(tmp_path, n: int, rcpt: str = ADDR) -> bytes:
    data = msg(n)
    res = deliver_local(tmp_path / "mail", f"Q{n:04d}", "alice@x.org", rcpt, data, "relay.test")
    assert res.status == "sent"
    return b"Return-Path: <alice@x.org>\r\nDelivered-To: " + rcpt.encode() + b"\r\n" + data


def test_new_user_gets_default_folders_with_special_use(store, tmp_path):
    u = store.user("Bob@Example.org")
    got = {f.name: f.special_use for f in u.folders()}
    assert got == {"INBOX": "", "Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash",
                   "Junk": "\\Junk", "Archive": "\\Archive"}
    assert [f.name for f in u.folders()][0] == "INBOX"
    assert u.subscriptions() == set(got)
    root = tmp_path / "mail" / ADDR
    for d in (".Sent", ".Drafts", ".Trash", ".Junk", ".Archive"):
        assert (root / d / "cur").is_dir() and (root / d / "maildirfolder").exists()
    assert store.user(ADDR) is u
    assert oct(root.stat().st_mode & 0o777) == "0o700"


def test_delivered_mail_is_indexed_and_moved_to_cur_keeping_unique_part(store, tmp_path):
    u = store.user(ADDR)
    raw = [deliver(tmp_path, i) for i in range(3)]
    st = u.state("INBOX")
    assert st.uids == [1, 2, 3] and st.uidnext == 4
    root = tmp_path / "mail" / ADDR
    assert os.listdir(root / "new") == []
    for i in range(3):
        from relay.delivery import unique_name
        name = unique_name(f"Q{i:04d}", ADDR, "relay.test")
        assert already_delivered(root, name)           # delivery's duplicate check still works
    assert [u.read("INBOX", uid) for uid in st.uids] == raw
    recs = u.records("INBOX")
    assert [r.size for r in recs] == [len(r) for r in raw]
    assert all(r.flags == frozenset() for r in recs)
    assert u.recent("INBOX") == {1, 2, 3} and u.recent("INBOX") == set()
    # nothing new: sync reports no change and the version stays
    v = u.version("INBOX")
    assert u.sync("INBOX") is False and u.version("INBOX") == v


def test_cached_envelope_bodystructure_and_search_columns(store, tmp_path):
    u = store.user(ADDR)
    raw = deliver(tmp_path, 7)
    u.append("INBOX", msg(8, "=?utf-8?q?Gr=C3=BC=C3=9Fe?= from Zürich"))
    assert u.envelope("INBOX", 1) == mime.envelope(raw)
    assert u.bodystructure("INBOX", 1) == mime.bodystructure(raw)
    assert u.envelopes("INBOX") == {1: mime.envelope(raw), 2: mime.envelope(u.read("INBOX", 2))}
    assert u.header_fields("INBOX", [2])[2].subject == "Grüße from Zürich"
    assert u.search_header("INBOX", "subject", "MESSAGE 7") == {1}
    assert u.search_header("INBOX", "subject", "GRÜSSE") == {2}      # full case folding: ß=ss
    assert u.search_header("INBOX", "subject", "züRICH") == {2}
    assert u.search_header("INBOX", "from", "alice@x") == {1, 2}
    assert u.header("INBOX", 1, "delivered-to") == ADDR.encode()
    assert u.header("INBOX", 1, "X-Missing") is None
    with pytest.raises(StoreError):
        u.search_header("INBOX", "received", "x")


def test_append_flags_internaldate_and_exact_bytes(store, tmp_path):
    u = store.user(ADDR)
    data = b"Subject: hi\r\n\r\nno final newline"
    when = dt.datetime(2024, 2, 29, 12, 30, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    uv, uid = u.append("Sent", data, ["\\Seen", "\\Answered", "Work"], when)
    assert uv == u.state("Sent").uidvalidity and uid == 1
    rec = u.records("Sent", [uid])[0]
    assert rec.flags == {"\\Seen", "\\Answered", "Work"}
    assert rec.internaldate == when and rec.internaldate.utcoffset() == dt.timedelta(hours=-5)
    assert u.read("Sent", uid) == data and u.read("Sent", uid, 9, 2) == b"hi"
    assert u.path("Sent", uid).name.endswith(":2,RSa")         # keyword letter a = Work
    assert (u.root / ".Sent" / "dovecot-keywords").read_text() == "0 Work\n"
    assert int(u.path("Sent", uid).stat().st_mtime) == int(when.timestamp())
    with pytest.raises(StoreError) as e:
        u.append("Nope", data)
    assert e.value.code == "TRYCREATE"
    with pytest.raises(StoreError):
        u.append("Sent", data, ["\\Bogus"])


def test_set_flags_modes_modseq_and_unchangedsince(store, tmp_path, bus):
    u = store.user(ADDR)
    for i in range(3):
        u.append("INBOX", msg(i))
    seen = []
    unsub = bus.subscribe(ADDR, lambda a, f: seen.append(f))
    m0 = u.state("INBOX").highestmodseq
    changed, failed = u.set_flags("INBOX", [1, 2], "add", ["\\Seen", "\\Flagged", "$Label1"])
    assert [r.uid for r in changed] == [1, 2] and failed == []
    assert all(r.modseq > m0 for r in changed)
    assert u.path("INBOX", 1).name.endswith(":2,FSa")
    changed, _ = u.set_flags("INBOX", [1, 2, 3], "add", ["\\Seen"])
    assert [r.uid for r in changed] == [3]                     # 1, 2 already had it
    changed, _ = u.set_flags("INBOX", [1], "remove", ["\\Flagged", "$Label1"])
    assert changed[0].flags == {"\\Seen"}
    changed, _ = u.set_flags("INBOX", [2], "set", ["\\Draft", "\\Recent"])
    assert changed[0].flags == {"\\Draft"} and u.path("INBOX", 2).name.endswith(":2,D")
    ms = u.records("INBOX", [1])[0].modseq
    u.set_flags("INBOX", [3], "add", ["Work"])
    before = u.version("INBOX")
    changed, failed = u.set_flags("INBOX", [1, 3], "add", ["\\Answered"], unchangedsince=ms)
    assert failed == [3] and [r.uid for r in changed] == [1]
    recs, gone = u.changes_since("INBOX", before)
    assert [r.uid for r in recs] == [1] and gone == []
    assert seen and set(seen) == {"INBOX"}
    unsub()


def test_uids_stable_across_restart_and_new_uidvalidity_when_index_lost(tmp_path):
    mail = tmp_path / "mail"
    with MailStore(mail) as s:
        u = s.user(ADDR)
        for i in range(4):
            u.append("INBOX", msg(i), ["\\Seen"] if i == 2 else [], None)
        u.append("Archive", msg(9), ["Work"])
        u.expunge("INBOX", [1], force=True)
        st1 = u.state("INBOX")
        names1 = {r.uid: r.name for r in u.records("INBOX")}
    with MailStore(mail) as s:
        u = s.user(ADDR)
        st2 = u.state("INBOX")
        assert (st2.uidvalidity, st2.uids, st2.uidnext) == (st1.uidvalidity, [2, 3, 4], 5)
        assert {r.uid: r.name for r in u.records("INBOX")} == names1
        assert u.records("Archive")[0].flags == {"Work"}
    os.unlink(mail / ADDR / index.FILENAME)
    for extra in ("-wal", "-shm"):
        p = mail / ADDR / (index.FILENAME + extra)
        if p.exists():
            os.unlink(p)
    with MailStore(mail) as s:
        u = s.user(ADDR)
        st3 = u.state("INBOX")
        assert st3.uidvalidity != st1.uidvalidity and st3.uids == [1, 2, 3]
        assert [r.flags for r in u.records("INBOX")] == [frozenset(), {"\\Seen"}, frozenset()]
        assert u.state("Archive").uids == [1]
        assert u.records("Archive")[0].flags == {"Work"}     # kept in the name, as Dovecot does
        assert {f.name for f in u.folders()} >= {"INBOX", "Sent", "Archive"}


def test_corrupt_index_is_moved_aside_and_rebuilt(tmp_path):
    mail = tmp_path / "mail"
    with MailStore(mail) as s:
        s.user(ADDR).append("INBOX", msg(1))
    (mail / ADDR / index.FILENAME).write_bytes(b"this is not sqlite" * 100)
    for extra in ("-wal", "-shm"):
        p = mail / ADDR / (index.FILENAME + extra)
        if p.exists():
            os.unlink(p)
    with MailStore(mail) as s:
        assert s.user(ADDR).state("INBOX").uids == [1]
    assert (mail / ADDR / (index.FILENAME + ".corrupt")).exists()


def test_copy_and_move_return_uid_maps_and_keep_bytes(store):
    u = store.user(ADDR)
    for i in range(4):
        u.append("INBOX", msg(i), ["\\Seen"] if i % 2 else [])
    data = [u.read("INBOX", i) for i in (1, 2, 3, 4)]
    uv, src, new = u.copy("INBOX", [2, 4, 99], "Archive")
    assert uv == u.state("Archive").uidvalidity and src == [2, 4] and new == [1, 2]
    assert u.read("Archive", 1) == data[1] and u.records("Archive", [1])[0].flags == {"\\Seen"}
    base = u.records("INBOX", [3])[0].name
    uv, src, new = u.copy("INBOX", [1, 3], "Archive", move=True)
    assert src == [1, 3] and new == [3, 4]
    assert u.state("INBOX").uids == [2, 4]
    assert u.records("Archive", [4])[0].name == base          # a move keeps the unique part
    assert [u.read("Archive", i) for i in (3, 4)] == [data[0], data[2]]
    recs, gone = u.changes_since("INBOX", 0)
    assert gone == [1, 3]
    uv, src, new = u.copy("Archive", [1], "Archive")       # copy to itself: a second message
    assert new == [5] and u.read("Archive", 5) == data[1]
    with pytest.raises(StoreError) as e:
        u.copy("INBOX", [2], "Missing")
    assert e.value.code == "TRYCREATE"
    assert u.envelope("Archive", 5) == mime.envelope(data[1])


def test_expunge_only_deleted_or_subset_or_forced(store):
    u = store.user(ADDR)
    for i in range(5):
        u.append("INBOX", msg(i))
    u.set_flags("INBOX", [1, 3, 5], "add", ["\\Deleted"])
    assert u.expunge("INBOX", [3, 4, 5]) == [3, 5]
    assert u.expunge("INBOX") == [1]
    assert u.expunge("INBOX", [4], force=True) == [4]
    assert u.state("INBOX").uids == [2]
    assert len(os.listdir(u.root / "cur")) == 1
    assert u.status("INBOX")["MESSAGES"] == 1


def test_changes_by_other_maildir_tools_are_picked_up(store, tmp_path):
    u = store.user(ADDR)
    for i in range(3):
        u.append("INBOX", msg(i))
    cur = u.root / "cur"
    p1, p2 = u.path("INBOX", 1), u.path("INBOX", 2)
    os.rename(p1, cur / maildir.cur_name(maildir.split_name(p1.name)[0], {"\\Seen", "\\Flagged"}))
    os.unlink(p2)
    (cur / "999.ext.host:2,S").write_bytes(msg(99))
    os.utime(cur, ns=(0, 1))        # mtimes can collide within a tick; make the change visible
    m = u.state("INBOX").highestmodseq
    st = u.state("INBOX")
    assert st.uids == [1, 3, 4]
    assert u.records("INBOX", [1])[0].flags == {"\\Seen", "\\Flagged"}
    assert u.records("INBOX", [4])[0].flags == {"\\Seen"}
    recs, gone = u.changes_since("INBOX", 0)
    assert gone == [2] and m == st.highestmodseq


def test_folder_create_delete_rename_hierarchy(store):
    u = store.user(ADDR)
    u.create("Projects/2025/Q1")
    names_ = {f.name: f for f in u.folders()}
    assert {"Projects", "Projects/2025", "Projects/2025/Q1"} <= names_.keys()
    assert names_["Projects"].has_children and not names_["Projects/2025/Q1"].has_children
    assert (u.root / ".Projects.2025.Q1" / "cur").is_dir()
    with pytest.raises(StoreError) as e:
        u.create("projects/2025/Q1".replace("projects", "Projects"))
    assert e.value.code == "ALREADYEXISTS"
    with pytest.raises(StoreError):
        u.create("inbox")
    u.append("Projects/2025", msg(1))
    u.subscribe("Projects/2025")
    u.rename("Projects", "Work/Old")
    got = {f.name for f in u.folders()}
    assert {"Work", "Work/Old", "Work/Old/2025", "Work/Old/2025/Q1"} <= got
    assert not any(n.startswith("Projects") for n in got)
    assert u.state("Work/Old/2025").uids == [1]
    assert "Work/Old/2025" in u.subscriptions() and "Projects/2025" not in u.subscriptions()
    with pytest.raises(StoreError) as e:
        u.rename("Work", "Sent")
    assert e.value.code == "ALREADYEXISTS"
    with pytest.raises(StoreError):
        u.rename("Work", "Work/Inner")
    u.delete("Work/Old")                   # has inferiors: becomes \Noselect
    f = {f.name: f for f in u.folders()}["Work/Old"]
    assert not f.selectable
    with pytest.raises(StoreError):
        u.state("Work/Old")
    with pytest.raises(StoreError):
        u.delete("Work/Old")
    u.delete("Work/Old/2025/Q1")
    u.delete("Work/Old/2025")
    u.delete("Work/Old")
    assert not (u.root / ".Work.Old").exists()
    u.create("Work/Old")                   # and it can come back
    with pytest.raises(StoreError) as e:
        u.delete("INBOX")
    assert e.value.code == "CANNOT"
    with pytest.raises(StoreError) as e:
        u.delete("Nope")
    assert e.value.code == "NONEXISTENT"


def test_rename_inbox_moves_messages_and_leaves_it_empty(store, tmp_path):
    u = store.user(ADDR)
    deliver(tmp_path, 1)
    deliver(tmp_path, 2)
    u.set_flags("INBOX", [2], "add", ["\\Seen"])
    uv = u.state("INBOX").uidvalidity
    u.rename("INBOX", "Old Mail")
    assert u.state("INBOX").uids == [] and u.state("INBOX").uidvalidity == uv
    assert u.state("Old Mail").uids == [1, 2]
    assert u.records("Old Mail", [2])[0].flags == {"\\Seen"}
    deliver(tmp_path, 3)
    assert u.state("INBOX").uids == [3]


def test_folders_created_by_other_tools_are_listed(store):
    u = store.user(ADDR)
    maildir.ensure(u.root / ".Lists.python")
    (u.root / ".Lists.python" / "new" / "1.a.b").write_bytes(msg(1))
    assert "Lists/python" in {f.name for f in u.folders()}
    assert u.state("Lists/python").uids == [1]
    maildir.ensure(u.root / ".Direct")
    assert u.state("Direct").uids == []


def test_bus_notifications_for_own_changes(store, bus):
    u = store.user(ADDR)
    seen: list[tuple[str, str]] = []
    unsub = bus.subscribe(ADDR, lambda a, f: seen.append((a, f)))
    u.append("INBOX", msg(1))
    u.copy("INBOX", [1], "Archive", move=True)
    u.set_flags("Archive", [1], "add", ["\\Deleted"])
    u.expunge("Archive")
    u.expunge("Archive")                                    # nothing to do: no event
    assert [f for _, f in seen] == ["INBOX", "Archive", "INBOX", "Archive", "Archive"]
    unsub()


def test_concurrent_delivery_and_appends_get_distinct_uids(store, tmp_path):
    u = store.user(ADDR)
    errors = []

    def deliverer():
        try:
            for i in range(30):
                deliver(tmp_path, 1000 + i)
                u.sync("INBOX")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def appender():
        try:
            for i in range(30):
                u.append("INBOX", msg(i))
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=deliverer), threading.Thread(target=appender)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    st = u.state("INBOX")
    assert st.uids == list(range(1, 61)) and st.uidnext == 61
    assert len(os.listdir(u.root / "cur")) == 60


def test_status_counts(store):
    u = store.user(ADDR)
    for i in range(3):
        u.append("Drafts", msg(i), ["\\Seen"] if i == 0 else [])
    s = u.status("Drafts")
    assert s["MESSAGES"] == 3 and s["UNSEEN"] == 2 and s["RECENT"] == 3 and s["UIDNEXT"] == 4
    assert s["SIZE"] == sum(len(msg(i)) for i in range(3))


def test_unsafe_addresses_and_names_refused(store):
    with pytest.raises(StoreError):
        store.user("../etc")
    u = store.user(ADDR)
    with pytest.raises(StoreError):
        u.create("../../escape")
    with pytest.raises(StoreError):
        u.create("a/../b")


def test_index_is_sqlite_wal(store):
    u = store.user(ADDR)
    with sqlite3.connect(u.root / index.FILENAME) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_name_clash_in_new_is_indexed_as_a_new_message(store):
    u = store.user(ADDR)
    (u.root / "new" / "1.same.host").write_bytes(msg(1))
    assert u.state("INBOX").uids == [1]
    (u.root / "new" / "1.same.host").write_bytes(msg(2))     # another tool reuses the name
    assert u.state("INBOX").uids == [1, 2]
    assert [u.read("INBOX", 1), u.read("INBOX", 2)] == [msg(1), msg(2)]
    assert u.records("INBOX", [1])[0].name == "1.same.host"
    assert u.records("INBOX", [2])[0].name != "1.same.host"


def test_lf_only_files_have_crlf_virtual_size_and_reads(store):
    u = store.user(ADDR)
    data = b"Subject: lf\n\nline one\nline two\n"
    (u.root / "new" / "2.lf.host").write_bytes(data)
    u.append("INBOX", msg(3))
    r1, r2 = u.records("INBOX", u.state("INBOX").uids)
    assert (r1.size, r1.vsize) == (len(data), len(data) + 4)
    assert r2.size == r2.vsize == len(msg(3))
    assert u.read("INBOX", 1) == data
    assert u.read("INBOX", 1, crlf=True) == data.replace(b"\n", b"\r\n")
    assert u.read("INBOX", 1, 4, 6, crlf=True) == b"ect: l"
    assert u.bodystructure("INBOX", 1)[6:8] == [len(b"line one\r\nline two\r\n"), 2]


def test_unicode_folder_names_on_disk(store):
    u = store.user(ADDR)
    u.create("Entwürfe/Privé")
    assert (u.root / ".Entw&APw-rfe.Priv&AOk-" / "cur").is_dir()
    assert "Entwürfe/Privé" in {f.name for f in u.folders()}
    u.append("Entwürfe/Privé", msg(1))
    assert u.state("Entwürfe/Privé").uids == [1]


def test_closed_store_refuses_calls(tmp_path):
    s = MailStore(tmp_path / "mail")
    u = s.user(ADDR)
    s.close()
    with pytest.raises(StoreError) as e:
        u.state("INBOX")
    assert e.value.code == "UNAVAILABLE"


def test_wire_forms_are_cached_and_follow_copies(store):
    u = store.user(ADDR)
    u.append("INBOX", msg(1))
    u.copy("INBOX", [1], "Archive")
    for folder in ("INBOX", "Archive"):
        assert u.envelopes_wire(folder) == {1: mime.envelope_wire(u.envelope(folder, 1))}
        assert u.bodystructures_wire(folder, [1]) == {1: mime.body_wire(u.bodystructure(folder, 1))}


def test_a_message_that_cannot_be_analysed_is_still_indexed(store, monkeypatch, caplog):
    u = store.user(ADDR)
    real = mime.analyse

    def picky(data):
        if b"poison" in data:
            raise ValueError("simulated parser bug")
        return real(data)

    monkeypatch.setattr(mime, "analyse", picky)
    (u.root / "new" / "1.a.host").write_bytes(msg(1))
    (u.root / "new" / "2.b.host").write_bytes(b"Subject: poison\r\n\r\nx\r\n")
    (u.root / "new" / "3.c.host").write_bytes(msg(3))
    assert u.state("INBOX").uids == [1, 2, 3]
    assert u.envelope("INBOX", 2) == [None] * 10
    assert u.bodystructure("INBOX", 2)[:2] == [b"text", b"plain"]
    assert u.read("INBOX", 2) == b"Subject: poison\r\n\r\nx\r\n"
    assert "cannot analyse message" in caplog.text


def test_concurrent_flag_changes_moves_and_expunges_stay_consistent(store, tmp_path):
    """Threads flagging, moving, expunging and syncing at once: afterwards the index and the
    Maildir agree exactly (every indexed file exists, every file is indexed once)."""
    u = store.user(ADDR)
    for i in range(60):
        u.append("INBOX", msg(i))
    errors: list[BaseException] = []

    def run(fn):
        def wrapper():
            try:
                fn()
            except BaseException as e:  # pragma: no cover - reported by the assert below
                errors.append(e)
        return threading.Thread(target=wrapper)

    def flagger():
        for k in range(40):
            u.set_flags("INBOX", list(range(1, 61, 3)), "add" if k % 2 else "remove", ["\\Seen", "K1"])

    def mover():
        for uid in range(2, 61, 3):
            u.copy("INBOX", [uid], "Archive", move=True)

    def expunger():
        for uid in range(3, 61, 3):
            u.set_flags("INBOX", [uid], "add", ["\\Deleted"])
            u.expunge("INBOX", [uid])

    def deliverer():
        for i in range(20):
            deliver(tmp_path, 500 + i)
            u.version("INBOX")

    threads = [run(f) for f in (flagger, mover, expunger, deliverer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for folder in ("INBOX", "Archive"):
        st = u.state(folder)
        recs = u.records(folder, st.uids)
        on_disk = sorted(os.listdir(u.root / ("cur" if folder == "INBOX" else ".Archive/cur")))
        assert sorted(u.path(folder, r.uid).name for r in recs) == on_disk
        assert len({r.name for r in recs}) == len(recs)
    assert len(u.state("INBOX").uids) == 20 + 20 and len(u.state("Archive").uids) == 20


def test_keywords_in_file_names_follow_moves_and_external_changes(store):
    u = store.user(ADDR)
    u.append("INBOX", msg(1), ["Beta", "Alpha"])
    assert (u.root / "dovecot-keywords").read_text() == "0 Alpha\n1 Beta\n"
    assert u.path("INBOX", 1).name.endswith(":2,ab")
    (u.root / ".Archive" / "dovecot-keywords").write_text("0 Other\n1 Beta\n")
    _, _, [new] = u.copy("INBOX", [1], "Archive", move=True)
    p = u.path("Archive", new)
    assert p.name.endswith(":2,bc")               # Beta is b there; Alpha got the next letter c
    assert u.records("Archive", [new])[0].flags == {"Alpha", "Beta"}
    os.rename(p, p.with_name(p.name.replace(":2,bc", ":2,Sa")))      # another tool's edit
    os.utime(p.parent, ns=(0, 2))
    u.sync("Archive")
    assert u.records("Archive", [new])[0].flags == {"\\Seen", "Other"}
    many = [f"kw{i:02d}" for i in range(30)]
    u.append("Drafts", msg(2), many)              # beyond 26 letters: index only
    assert u.records("Drafts")[0].flags == set(many)
    assert len((u.root / ".Drafts" / "dovecot-keywords").read_text().splitlines()) == 26


def test_cached_mime_data_of_an_older_analyser_is_refreshed(tmp_path, monkeypatch):
    """An index whose ENVELOPE/BODYSTRUCTURE/SEARCH columns came from an older relay.store.mime
    is re-analysed chunk by chunk as its folders sync, keeping UIDs and UIDVALIDITY."""
    from relay.store import mailbox
    monkeypatch.setattr(mailbox, "REFRESH_CHUNK", 2)
    odd = b"From: <>\r\nTo: a@b.c\r\nTo: d@e.f\r\nSubject: s\r\n\r\nbody\r\n"
    with MailStore(tmp_path / "mail") as s:
        u = s.user(ADDR)
        for _ in range(5):
            u.append("INBOX", odd)
        validity = u.state("INBOX").uidvalidity
        good = u.envelope("INBOX", 1)
        db = sqlite3.connect(u.root / index.FILENAME)       # as an older relay left it
        db.execute("UPDATE messages SET envelope=?, envelope_wire=?, hdr_to='old'",
                   (index.pack([None] * 10), mime.envelope_wire([None] * 10)))
        db.execute("UPDATE meta SET value='1' WHERE key='mime'")
        db.commit()
        db.close()
    with MailStore(tmp_path / "mail") as s:
        u = s.user(ADDR)
        st = u.state("INBOX")                                 # each sync refreshes a chunk
        assert st.uidvalidity == validity and st.uids == [1, 2, 3, 4, 5]
        for _ in range(3):
            u.version("INBOX")
        assert all(u.envelope("INBOX", uid) == good for uid in st.uids)
        assert u.envelopes_wire("INBOX")[5] == mime.envelope_wire(good)
        assert u.search_header("INBOX", "to", "d@e.f") == {1, 2, 3, 4, 5}
    with MailStore(tmp_path / "mail") as s:                   # done: nothing left to refresh
        assert s.user(ADDR)._stale == {}
