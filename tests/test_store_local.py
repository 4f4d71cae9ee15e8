"""LocalStore over a real Maildir++ tree in a temp dir: UIDs, flags in file names, folder ops,
move/copy/delete/expunge/append, index rebuilds, and watch() polling."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path

import pytest

from tui_mail.errors import FolderError, MessageGone, ProtocolError
from tui_mail.store.base import ANSWERED, DELETED, FLAGGED, SEEN, Change
from tui_mail.store.local import INDEX_NAME, LocalStore, diff_states, split_name, summary_fields


def msg(i: int, *, subject: str | None = None, date: str | None = None, attach: bool = False) -> bytes:
    m = EmailMessage()
    m["From"] = f"Sender {i} <s{i}@example.com>"
    m["To"] = "Bob <bob@example.org>, carol@example.org"
    m["Subject"] = subject if subject is not None else f"Message {i}"
    m["Date"] = date or f"Thu, 0{1 + i % 9} Jan 2026 10:00:00 +0000"
    m["Message-ID"] = f"<m{i}@example.com>"
    m.set_content(f"body {i}\n")
    if attach:
        m.add_attachment(b"\x00\x01binary", maintype="application", subtype="octet-stream",
                         filename="data.bin")
    return m.as_bytes()


@pytest.fixture
def store(tmp_path):
    s = LocalStore(tmp_path / "mail", poll_interval=0.05)
    s.connect()
    yield s
    s.close()


def drop_in(root: Path, data: bytes, name: str, sub: str = "new") -> Path:
    """Another program delivering into the Maildir (tmp → new)."""
    tmp = root / "tmp" / name
    tmp.write_bytes(data)
    dest = root / sub / name
    os.rename(tmp, dest)
    return dest


def test_split_name_and_flags():
    assert split_name("1.M2P3.h,S=9:2,RS") == ("1.M2P3.h,S=9", frozenset({ANSWERED, SEEN}))
    assert split_name("1.M2P3.h") == ("1.M2P3.h", frozenset())
    assert split_name("1.x:2,FT") == ("1.x", frozenset({FLAGGED, DELETED}))


def test_summary_fields_decodes_and_survives_garbage():
    f = summary_fields(msg(1, subject="Caf\u00e9 \u2615", attach=True))
    assert f["subject"] == "Caf\u00e9 \u2615" and f["from_addr"] == "s1@example.com"
    assert f["has_attachment"] == 1 and f["from_name"] == "Sender 1"
    bad = b"From: <<<\r\nDate: not a date\r\nSubject: =?utf-8?q?broken\r\n\r\nbody"
    g = summary_fields(bad)
    assert g["date"] is None and g["size"] == len(bad)


def test_append_assigns_uids_and_survives_reopen(tmp_path, store):
    uids = [store.append("INBOX", msg(i)) for i in range(3)]
    assert uids == [1, 2, 3]
    state = store.folder_state("INBOX", sort="arrival")
    v = state.uidvalidity
    store.close()
    again = LocalStore(tmp_path / "mail")
    again.connect()
    try:
        st = again.folder_state("inbox", sort="arrival")
        assert st.uids == (1, 2, 3) and st.uidvalidity == v
        assert again.append("INBOX", msg(9)) == 4
        assert again.fetch_message("INBOX", 2) == msg(1)
    finally:
        again.close()


def test_files_written_via_tmp_new_and_never_rewritten(store):
    uid = store.append("INBOX", msg(1))
    root = store.root
    assert os.listdir(root / "tmp") == []
    (name,) = os.listdir(root / "new")
    ino = os.stat(root / "new" / name).st_ino
    store.set_flags("INBOX", [uid], [SEEN, FLAGGED])
    (cur,) = os.listdir(root / "cur")
    assert cur == name + ":2,FS"
    assert os.stat(root / "cur" / cur).st_ino == ino  # renamed, not rewritten
    store.set_flags("INBOX", [uid], [FLAGGED], add=False)
    assert os.listdir(root / "cur") == [name + ":2,S"]
    assert store.summaries("INBOX", [uid])[uid].flags == {SEEN}


def test_keywords_kept_in_index(store):
    uid = store.append("INBOX", msg(1), flags=[SEEN, "$Label1"])
    assert store.summaries("INBOX", [uid])[uid].flags == {SEEN, "$Label1"}
    store.set_flags("INBOX", [uid], ["$Label1"], add=False)
    assert store.summaries("INBOX", [uid])[uid].flags == {SEEN}


def test_external_delivery_and_removal_are_seen(store):
    store.append("INBOX", msg(1))
    drop_in(store.root, msg(2), "999.M1P1.other")
    st = store.folder_state("INBOX", sort="arrival")
    assert st.uids == (1, 2)
    s = store.summaries("INBOX", [2])[2]
    assert s.subject == "Message 2" and s.unread
    # another program marks it read (rename into cur/) and deletes the first
    os.rename(store.root / "new" / "999.M1P1.other", store.root / "cur" / "999.M1P1.other:2,S")
    (first,) = os.listdir(store.root / "new")
    os.unlink(store.root / "new" / first)
    st = store.folder_state("INBOX", sort="arrival")
    assert st.uids == (2,)
    assert not store.summaries("INBOX", [2])[2].unread
    with pytest.raises(MessageGone):
        store.fetch_message("INBOX", 1)


def test_sorting(store):
    store.append("INBOX", msg(1, subject="b", date="Mon, 05 Jan 2026 10:00:00 +0000"))
    store.append("INBOX", msg(2, subject="a", date="Fri, 02 Jan 2026 10:00:00 +0000"))
    store.append("INBOX", msg(3, subject="c", date="Sat, 03 Jan 2026 10:00:00 +0000", attach=True))
    assert store.folder_state("INBOX").uids == (2, 3, 1)
    assert store.folder_state("INBOX", "subject").uids == (2, 1, 3)
    assert store.folder_state("INBOX", "arrival").uids == (1, 2, 3)
    assert store.folder_state("INBOX", "size").uids[-1] == 3
    s = store.summaries("INBOX", [3])[3]
    assert s.has_attachment and s.date == datetime(2026, 1, 3, 10, tzinfo=timezone.utc)
    assert s.to == "Bob <bob@example.org>, carol@example.org"


def test_folder_ops_and_roles(store):
    for name in ("Sent", "Trash", "Projects/2026"):
        store.create_folder(name)
    assert (store.root / ".Projects.2026" / "maildirfolder").exists()
    folders = {f.name: f for f in store.list_folders()}
    assert set(folders) == {"INBOX", "Sent", "Trash", "Projects", "Projects/2026"}
    assert folders["INBOX"].role == "inbox" and folders["Sent"].role == "sent"
    assert folders["Trash"].role == "trash" and folders["Projects/2026"].parts == ["Projects", "2026"]
    with pytest.raises(FolderError):
        store.create_folder("Sent")
    with pytest.raises(FolderError):
        store.create_folder("bad.name")
    uid = store.append("Projects/2026", msg(1))
    store.rename_folder("Projects", "Work")
    assert {f.name for f in store.list_folders(False)} == {"INBOX", "Sent", "Trash", "Work", "Work/2026"}
    assert store.fetch_message("Work/2026", uid) == msg(1)
    with pytest.raises(FolderError):
        store.delete_folder("Work")  # has a subfolder
    store.delete_folder("Work/2026")
    with pytest.raises(FolderError):
        store.folder_state("Work/2026")
    assert store.folder_for_role("sent") == "Sent"


def test_counts(store):
    store.append("INBOX", msg(1), flags=[SEEN])
    store.append("INBOX", msg(2))
    (inbox,) = [f for f in store.list_folders() if f.name == "INBOX"]
    assert (inbox.total, inbox.unread) == (2, 1)


def test_copy_move_delete_expunge(store):
    store.create_folder("Archive")
    a = store.append("INBOX", msg(1), flags=[FLAGGED])
    b = store.append("INBOX", msg(2))
    assert store.copy("INBOX", [a], "Archive") == {a: 1}
    assert store.summaries("Archive", [1])[1].flags == {FLAGGED}
    assert store.move("INBOX", [b], "Archive") == {b: 2}
    assert store.folder_state("INBOX").uids == (a,)
    assert store.fetch_message("Archive", 2) == msg(2)
    # delete without a Trash creates one and moves there; inside Trash it expunges
    moved = store.delete("Archive", [1])
    assert moved == {1: 1} and store.folder_for_role("trash") == "Trash"
    assert store.delete("Trash", [1]) == {}
    assert store.folder_state("Trash").uids == ()
    store.expunge("INBOX", [a])
    assert store.folder_state("INBOX").uids == ()
    assert os.listdir(store.root / "cur") == [] and os.listdir(store.root / "new") == []
    with pytest.raises(MessageGone):
        store.move("INBOX", [a], "Archive")


def test_moved_message_gets_new_uid_never_reused(store):
    store.create_folder("Other")
    u1 = store.append("INBOX", msg(1))
    store.move("INBOX", [u1], "Other")
    u2 = store.append("INBOX", msg(2))
    assert u2 == u1 + 1  # UIDs are never reused within a UIDVALIDITY


def test_fetch_part(store):
    uid = store.append("INBOX", msg(1, attach=True))
    assert store.fetch_part("INBOX", uid, "1") == b"body 1\n"
    assert store.fetch_part("INBOX", uid, "2") == b"\x00\x01binary"
    with pytest.raises(ProtocolError):
        store.fetch_part("INBOX", uid, "7")
    single = store.append("INBOX", msg(2))
    assert store.fetch_part("INBOX", single, "1") == b"body 2\n"


def test_lost_index_gives_new_uidvalidity(tmp_path, store):
    store.append("INBOX", msg(1))
    v = store.folder_state("INBOX").uidvalidity
    store.close()
    for suffix in ("", "-wal", "-shm"):
        p = tmp_path / "mail" / (INDEX_NAME + suffix)
        if p.exists():
            p.unlink()
    time.sleep(1.01)  # uidvalidity is a timestamp in seconds
    again = LocalStore(tmp_path / "mail")
    with again:
        st = again.folder_state("INBOX")
        assert st.uids == (1,) and st.uidvalidity != v


def test_outbox_root_name_and_role(tmp_path):
    with LocalStore(tmp_path / "outbox", root_name="Outbox") as ob:
        (f,) = ob.list_folders()
        assert (f.name, f.role) == ("Outbox", "outbox")
        assert ob.append("Outbox", msg(1)) == 1
        assert ob.folder_for_role("outbox") == "Outbox"


def test_diff_states():
    assert diff_states("F", {1: "", 2: "S"}, {2: "", 3: ""}) == [
        Change("F", "exists", (3,)), Change("F", "expunge", (1,)), Change("F", "flags", (2,))]


def test_watch_reports_new_mail_flags_and_expunge(store):
    store.append("INBOX", msg(1))
    seen: list[Change] = []
    got = threading.Event()

    def cb(change: Change) -> None:
        seen.append(change)
        got.set()

    store.watch("INBOX", cb)
    try:
        drop_in(store.root, msg(2), "5.M1P1.elsewhere")
        assert got.wait(3)
        assert seen[0] == Change("INBOX", "exists", (2,))
        got.clear()
        store.set_flags("INBOX", [1], [SEEN])
        assert got.wait(3)
        assert seen[-1] == Change("INBOX", "flags", (1,))
        got.clear()
        store.expunge("INBOX", [2])
        assert got.wait(3)
        assert seen[-1] == Change("INBOX", "expunge", (2,))
    finally:
        store.stop_watch()
    assert store._watch_thread is None


def test_threads_share_one_store(store):
    errors = []

    def work(base: int) -> None:
        try:
            for i in range(10):
                store.append("INBOX", msg(base + i))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k * 100,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.folder_state("INBOX").uids == tuple(range(1, 31)) or \
        sorted(store.folder_state("INBOX").uids) == list(range(1, 31))


def test_local_search_over_the_header_cache_schema(store):
    pytest.importorskip("tui_mail.mail.search")
    store.create_folder("Archive")
    a = store.append("INBOX", msg(1, subject="ketchup recipe"))
    b = store.append("INBOX", msg(2, subject="mustard"), flags=[SEEN])
    c = store.append("Archive", msg(3, subject="more ketchup"))
    assert store.search("INBOX", "subject:ketchup") == [a]
    assert sorted(store.local_search(None, "ketchup")) == [("Archive", c), ("INBOX", a)]
    assert store.search("INBOX", "is:unread") == [a]
    store.set_flags("INBOX", [a], [SEEN])             # flags are refreshed before searching
    assert store.search("INBOX", "is:unread") == []
    assert store.search("INBOX", "body:\"body 2\"") == [b]
    store.expunge("INBOX", [a])
    assert store.search("INBOX", "ketchup") == []
    store.rename_folder("Archive", "Old")
    assert store.local_search(None, "ketchup") == [("Old", 1)]
    from tui_mail.errors import SearchSyntaxError
    with pytest.raises(SearchSyntaxError):
        store.search("INBOX", "since:yesterday-ish")


def test_configured_roles_override_names(tmp_path):
    with LocalStore(tmp_path / "m", roles={"sent": "Outgoing"}) as s:
        s.create_folder("Sent")
        s.create_folder("Outgoing")
        roles = {f.name: f.role for f in s.list_folders(False)}
        assert roles == {"INBOX": "inbox", "Sent": None, "Outgoing": "sent"}
        assert s.folder_for_role("sent") == "Outgoing"


def test_summary_fields_decode_encoded_words_from_headers_only():
    raw = (b"From: =?utf-8?q?Ren=C3=A9e?= <renee@example.fr>\r\nTo: =?iso-8859-1?q?J=FCrgen?= <j@x.de>\r\n"
           b"Subject: =?utf-8?b?w6l0w6kgYXUgY2Fmw6k=?=\r\nDate: Tue, 06 Jan 2026 09:30:00 -0500\r\n"
           b"Content-Type: text/plain\r\n\r\nbody")
    f = summary_fields(raw)
    assert f["from_name"] == "Ren\u00e9e" and f["from_addr"] == "renee@example.fr"
    assert f["to_"] == "J\u00fcrgen <j@x.de>" and f["subject"] == "\u00e9t\u00e9 au caf\u00e9"
    assert f["date"] == datetime(2026, 1, 6, 14, 30, tzinfo=timezone.utc).timestamp()
    assert f["has_attachment"] == 0
    pdf = b"From: a@b\r\nContent-Type: application/pdf\r\n\r\n%PDF"
    assert summary_fields(pdf)["has_attachment"] == 1


def test_two_processes_share_one_maildir_without_uid_clashes(tmp_path):
    """The TUI and `tui-mail send` may open the same store: UIDs stay unique and agreed."""
    import subprocess
    import sys

    root = tmp_path / "shared"
    with LocalStore(root) as s:
        s.append("INBOX", msg(0))
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from tui_mail.store.local import LocalStore\n"
            "from tests.test_store_local import msg\n"
            "s = LocalStore(%r); s.connect()\n"
            "for i in range(15): s.append('INBOX', msg(int(sys.argv[1]) + i)); s.folder_state('INBOX')\n"
            "s.close()\n") % (str(Path(__file__).resolve().parent.parent), str(root))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(base)]) for base in (100, 200)]
    with LocalStore(root) as s:
        for _ in range(10):
            s.folder_state("INBOX")
        for p in procs:
            assert p.wait(timeout=60) == 0
        st = s.folder_state("INBOX", sort="arrival")
        assert sorted(st.uids) == list(range(1, 32))
        subjects = {x.subject for x in s.summaries("INBOX", st.uids).values()}
        assert len(subjects) == 31


def test_big_message_indexed_from_its_header_block(store):
    big = msg(1, attach=False).replace(b"body 1\n", b"x" * (3 << 20) + b"\n")
    drop_in(store.root, big, "77.M1P1.big")
    (uid,) = store.folder_state("INBOX").uids
    s = store.summaries("INBOX", [uid])[uid]
    assert s.size == len(big) and s.subject == "Message 1"
