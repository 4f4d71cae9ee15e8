"""relay.store with several processes on one user (issue 14: the multi-process relay): real
processes (tests/store_hammer.py) and the test process itself working on the same Maildir and
SQLite index at once, through relay/store/userlock.py's flock and data_version check.

Checked: UIDs unique and ascending per folder, UIDVALIDITY stable, nothing lost or duplicated,
every process's view converging on the index, \\Recent claimed by exactly one process, and a
process SIGKILLed mid-write leaving a store that reopens consistent (and never blocking the others).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from relay.delivery import deliver_local
from relay.store import maildir
from relay.store.mailbox import UserStore

HAMMER = Path(__file__).with_name("store_hammer.py")
ADDR = "u@example.org"


def _start(root: Path, name: str, mode: str, count: int, seed: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, str(HAMMER), str(root), name, mode, str(count), str(seed)],
                         stdout=subprocess.PIPE, text=True)
    assert json.loads(p.stdout.readline()) == {"ready": True}
    return p


def _message_ids(store: UserStore, folder: str) -> list[str]:
    return [h.message_id for h in store.header_fields(folder).values()]


def _consistent(store: UserStore, root: Path) -> None:
    """Index and Maildir agree: every cur/ file is indexed once, every row has its file, no
    staged copy or journal is left, and SQLite's own check passes."""
    db = sqlite3.connect(root / "tui-mail-index.sqlite")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for fid, name in db.execute("SELECT id, name FROM folders WHERE selectable=1").fetchall():
            path = root / maildir_dir(name)
            rows = dict(db.execute("SELECT base, filename FROM messages WHERE folder=?", (fid,)).fetchall())
            cur = maildir.listing(path, "cur")
            assert cur == rows, name
            assert not [n for n in os.listdir(path / "tmp") if n.startswith("relay-copy.")], name
            uids = [r[0] for r in db.execute("SELECT uid FROM messages WHERE folder=? ORDER BY uid", (fid,))]
            (uidnext,) = db.execute("SELECT uidnext FROM folders WHERE id=?", (fid,)).fetchone()
            assert not uids or uids[-1] < uidnext
    finally:
        db.close()


def maildir_dir(name: str) -> str:
    from relay.store import names
    return names.to_dirname(name)


def test_two_processes_and_a_deliverer_hammering_one_user(tmp_path):
    root = tmp_path / "mail" / ADDR
    mine = UserStore(root, ADDR)          # this process stays open all along: its view must follow
    validity0 = {f: mine.state(f).uidvalidity for f in ("INBOX", "Archive", "Trash")}
    n = 60
    procs = {name: _start(root, name, "mixed", n, seed) for name, seed in (("a", 1), ("b", 2))}

    delivered = []
    stop = threading.Event()

    def deliverer() -> None:          # the master's local delivery, straight into new/
        i = 0
        while not stop.is_set() and i < 40:
            data = f"Subject: d{i}\r\nMessage-ID: <d.{i}@deliver>\r\n\r\nhi\r\n".encode()
            assert deliver_local(tmp_path / "mail", f"Q{i}", "x@y.org", ADDR, data, "relay.test").status == "sent"
            delivered.append(i)
            i += 1
            mine.set_flags("INBOX", mine.state("INBOX").uids[-3:], "add", ["$seenbymain"])
            time.sleep(0.005)

    t = threading.Thread(target=deliverer)
    t.start()
    out: dict[str, list[dict]] = {}
    for name, p in procs.items():
        text, _ = p.communicate(timeout=240)
        assert p.returncode == 0
        out[name] = [json.loads(line) for line in text.splitlines()]
        assert out[name][-1]["done"] is True
    stop.set()
    t.join()

    # UIDs each process was given: unique across processes, ascending in each process's order
    given = collections.defaultdict(list)
    for name, events in out.items():
        per_folder = collections.defaultdict(list)
        for e in events:
            if e.get("op") in ("append", "copy", "move"):
                assert e["validity"] == validity0[e["folder"]]     # UIDVALIDITY stable
                per_folder[e["folder"]].append(e["uid"])
                given[e["folder"]].append(e["uid"])
            if e.get("op") == "state":
                assert e["validity"] == validity0["INBOX"]
                assert e["uids"] == sorted(set(e["uids"]))
        for folder, uids in per_folder.items():
            assert uids == sorted(uids) and len(set(uids)) == len(uids), (name, folder)
        versions = events[-1]["versions"]
        assert versions == sorted(versions)                       # HIGHESTMODSEQ never goes back
    for folder, uids in given.items():
        assert len(set(uids)) == len(uids), f"a UID of {folder} was handed out twice"

    # \Recent: every claim is disjoint from every other process's claims
    claims = {name: set().union(*(set(e["uids"]) for e in ev if e.get("op") == "recent"))
              for name, ev in out.items()}
    claims["main"] = mine.recent("INBOX")
    names_ = list(claims)
    for i, x in enumerate(names_):
        for y in names_[i + 1:]:
            assert not claims[x] & claims[y], f"\\Recent claimed by both {x} and {y}"
    assert mine.recent("INBOX") == set()

    # nothing lost or duplicated; the long-open store agrees with a fresh one
    fresh = UserStore(root, ADDR)
    try:
        for store in (mine, fresh):
            inbox = collections.Counter(_message_ids(store, "INBOX"))
            archive = collections.Counter(_message_ids(store, "Archive"))
            trash = collections.Counter(_message_ids(store, "Trash"))
            for name in procs:
                for i in range(n):
                    mid = f"<{name}.{i}@hammer>"
                    assert archive[mid] == 1, mid
                    assert trash[mid] == (1 if i % 4 == 0 else 0), mid
                    assert inbox[mid] == (1 if i % 4 in (2, 3) else 0), mid
            for i in delivered:
                assert inbox[f"<d.{i}@deliver>"] == 1
            assert sum(inbox.values()) == 2 * (n // 2) + len(delivered)
        for folder in ("INBOX", "Archive", "Trash"):
            a, b = mine.state(folder), fresh.state(folder)
            assert (a.uidvalidity, a.uidnext, a.highestmodseq, a.uids) == \
                   (b.uidvalidity, b.uidnext, b.highestmodseq, b.uids)
            assert a.uidvalidity == validity0[folder]
            assert mine.records(folder) == fresh.records(folder)          # flags converge
        for rec in fresh.records("INBOX"):
            mid = fresh.header_fields("INBOX", [rec.uid])[rec.uid].message_id
            if mid.startswith("<a.") or mid.startswith("<b."):
                i = int(mid.split(".")[1].split("@")[0])
                expect = {f"$by{mid[1]}"} | ({"\\Seen"} if i % 4 == 3 else set()) \
                    | ({"\\Draft"} if i % 5 == 0 else set())
                assert rec.flags - {"$seenbymain"} == expect, (mid, rec.flags)
        _consistent(fresh, root)
    finally:
        fresh.close()
        mine.close()


@pytest.mark.parametrize("delay", [0.25, 0.6, 1.1])
def test_sigkill_mid_write_leaves_a_consistent_store(tmp_path, delay):
    root = tmp_path / "mail" / ADDR
    mine = UserStore(root, ADDR)
    validity = {f: mine.state(f).uidvalidity for f in ("INBOX", "Archive", "Trash")}
    p = _start(root, "k", "loop", 0, int(delay * 100))
    # this process keeps writing while the other one works and is killed: it must never wait
    # forever on a lock the dead process held (the kernel drops a dead process's flock)
    stop = threading.Event()
    mine_done: list[int] = []

    def writer() -> None:
        j = 0
        while not stop.is_set():
            _, uid = mine.append("INBOX", f"Subject: m{j}\r\nMessage-ID: <m.{j}@main>\r\n\r\nx\r\n".encode())
            if j % 3 == 0:
                mine.copy("INBOX", [uid], "Trash", move=True)
            mine_done.append(j)
            j += 1

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(delay)
    os.kill(p.pid, signal.SIGKILL)
    text, _ = p.communicate(timeout=30)
    time.sleep(0.2)
    stop.set()
    t.join(timeout=30)
    assert not t.is_alive(), "a write in this process waited on the killed one's lock"
    reported = {json.loads(line)["i"] for line in text.splitlines() if '"append"' in line}
    assert reported, "the killed process never got going"
    assert mine_done, "this process never got to write"
    _, uid = mine.append("INBOX", b"Subject: after\r\nMessage-ID: <after@main>\r\n\r\nx\r\n")
    assert uid > 0
    mine.close()

    fresh = UserStore(root, ADDR)            # reopening recovers an interrupted COPY/MOVE
    try:
        inbox = collections.Counter(_message_ids(fresh, "INBOX"))
        trash = collections.Counter(_message_ids(fresh, "Trash"))
        archive = collections.Counter(_message_ids(fresh, "Archive"))
        for i in reported:
            mid = f"<k.{i}@hammer>"
            assert inbox[mid] + trash[mid] == 1, mid    # a MOVE is all or nothing: never both, never lost
            assert archive[mid] <= 1, mid
        for c in (inbox, trash, archive):
            assert max(c.values()) == 1                  # no message twice in a folder
        assert inbox["<after@main>"] == 1
        for j in mine_done:
            mid = f"<m.{j}@main>"
            assert (inbox[mid], trash[mid]) == ((0, 1) if j % 3 == 0 else (1, 0)), mid
        for folder in ("INBOX", "Archive", "Trash"):
            st = fresh.state(folder)
            assert st.uids == sorted(set(st.uids))
            assert st.uidvalidity == validity[folder]     # the index survived: UIDs stay valid
        _consistent(fresh, root)
        # and it goes on working: a new UID above every old one
        before = fresh.state("INBOX").uidnext
        _, uid = fresh.append("INBOX", b"Subject: later\r\n\r\nx\r\n")
        assert uid == before
    finally:
        fresh.close()


def test_second_store_sees_what_the_first_indexed_lazily_and_its_claims(tmp_path):
    """Two UserStore objects on one user stand for two processes (each has its own index
    connection and its own flock on the lock file): state one keeps in memory — folders with
    rows indexed without analysis, \\Recent claims, cached UID lists — must follow the other's
    commits."""
    from relay.store import mailbox
    root = tmp_path / "mail" / ADDR
    a, b = UserStore(root, ADDR), UserStore(root, ADDR)
    try:
        assert a.state("INBOX").uids == []                 # a caches the (empty) UID list
        n = mailbox.LAZY_BATCH
        for i in range(n):
            (root / "new" / f"17000000{i:05d}.M{i}P9.other").write_bytes(
                f"Subject: lazy {i}\r\nMessage-ID: <l.{i}@x>\r\n\r\nb\r\n".encode())
        st = b.state("INBOX")                               # b indexes them without analysis
        assert len(st.uids) == n
        env = a.envelopes_wire("INBOX", st.uids[:5])        # a must analyse them, not serve b''
        assert all(env[u] for u in st.uids[:5]), env
        assert a.header_fields("INBOX", st.uids[-1:])[st.uids[-1]].message_id == f"<l.{n - 1}@x>"
        assert a.state("INBOX").uids == st.uids             # a's cached list followed b
        got_b = b.claim_recent("INBOX", st.uids[:10])
        assert got_b == set(st.uids[:10])
        assert a.claim_recent("INBOX", st.uids[:20]) == set(st.uids[10:20])
        assert a.peek_recent("INBOX") == set(st.uids[20:])
        b.expunge("INBOX", st.uids[:3], force=True)
        assert a.state("INBOX").uids == st.uids[3:]
    finally:
        a.close()
        b.close()


async def test_pop3_maildrop_lock_holds_across_processes(tmp_path):
    """RFC 1939's exclusive maildrop lock must hold between workers: a session's lock taken in
    another process makes this process's POP3 login say [IN-USE], and the lock goes with the
    process that held it (SIGKILL included)."""
    import asyncio
    import poplib

    from relay.pop3 import start_pop3_server
    from relay.store import MailStore

    mail_dir = tmp_path / "mail"

    async def auth(user: str, password: str) -> bool:
        return (user, password) == (ADDR, "pw")

    store = MailStore(mail_dir)
    store.user(ADDR).append("INBOX", b"Subject: one\r\n\r\nx\r\n")
    server = await start_pop3_server("127.0.0.1", 0, store=store, authenticate=auth,
                                     ssl_context=None, allow_plaintext=True, hostname="t")
    port = server.sockets[0].getsockname()[1]
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; sys.path.insert(0, %r)\n"
        "from pathlib import Path\nfrom relay.store.mailbox import UserStore\n"
        "u = UserStore(Path(%r), %r)\nlock = u.maildrop_lock()\n"
        "print('held' if lock else 'refused', flush=True)\nsys.stdin.read()\n")
        % (str(Path(__file__).resolve().parent.parent), str(mail_dir / ADDR), ADDR)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"

        def login() -> tuple[int, int] | bytes:
            c = poplib.POP3("127.0.0.1", port, timeout=10)
            try:
                c.user(ADDR)
                c.pass_("pw")
            except poplib.error_proto as e:
                c.close()
                return e.args[0]
            st = c.stat()
            c.quit()
            return st

        refused = await asyncio.to_thread(login)
        assert isinstance(refused, bytes) and b"[IN-USE]" in refused
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        assert await asyncio.to_thread(login) == (1, len(b"Subject: one\r\n\r\nx\r\n"))
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdin.close()
        holder.stdout.close()
        server.close()
        await server.wait_closed()
        store.close()


def test_an_index_rebuilt_by_another_process_is_followed(tmp_path):
    """Another process found the index unusable and rebuilt it (moved aside, new UIDVALIDITY):
    a store that still has the old file open must switch to the new one, not go on alone."""
    root = tmp_path / "mail" / ADDR
    a = UserStore(root, ADDR)
    try:
        a.append("INBOX", b"Subject: one\r\n\r\nx\r\n")
        old_validity = a.state("INBOX").uidvalidity
        with a.locked():             # what index.connect does with a corrupt file, under the lock
            for suffix in ("", "-wal", "-shm"):
                p = root / ("tui-mail-index.sqlite" + suffix)
                if p.exists():
                    p.replace(root / ("tui-mail-index.sqlite" + suffix + ".corrupt"))
        b = UserStore(root, ADDR)     # rebuilds from the Maildir
        try:
            _, uid = b.append("INBOX", b"Subject: two\r\n\r\nx\r\n")
            st_b = b.state("INBOX")
            assert st_b.uidvalidity != old_validity and len(st_b.uids) == 2
            st_a = a.state("INBOX")
            assert (st_a.uidvalidity, st_a.uids) == (st_b.uidvalidity, st_b.uids)
            _, uid_a = a.append("INBOX", b"Subject: three\r\n\r\nx\r\n")
            assert uid_a == uid + 1
            assert b.state("INBOX").uids == st_b.uids + [uid_a]
        finally:
            b.close()
    finally:
        a.close()


def test_two_processes_racing_folder_operations(tmp_path):
    """create/delete/rename/append on shared and own folder names from two processes at once:
    only the errors a client could get (ALREADYEXISTS, NONEXISTENT, TRYCREATE), and afterwards
    the index's folders are the Maildir's folders, with every renamed folder and its message."""
    from relay.store import names
    root = tmp_path / "mail" / ADDR
    UserStore(root, ADDR).close()
    procs = {name: _start(root, name, "folders", 25, seed) for name, seed in (("a", 5), ("b", 6))}
    kept = []
    for name, p in procs.items():
        text, _ = p.communicate(timeout=240)
        assert p.returncode == 0
        last = json.loads(text.splitlines()[-1])
        assert last["done"] is True
        kept += last["kept"]
    fresh = UserStore(root, ADDR)
    try:
        listed = {f.name for f in fresh.folders() if f.selectable}
        on_disk = {names.from_dirname(n) for n in os.listdir(root)
                   if n.startswith(".") and (root / n / "cur").is_dir()} | {"INBOX"}
        assert listed == on_disk
        for folder in kept:
            assert folder in listed
            mid = _message_ids(fresh, folder)
            assert len(mid) == 1 and mid[0].startswith(f"<{folder[0]}.")
        _consistent(fresh, root)
    finally:
        fresh.close()


@pytest.mark.parametrize("meanwhile", ["nothing", "recreated", "renamed"])
def test_append_writes_its_file_outside_the_lock_and_copes_with_what_happened_meanwhile(
        tmp_path, monkeypatch, meanwhile):
    """APPEND writes and fsyncs the file before taking the user's lock; another process may
    delete, re-create or rename the folder in between (done here by a second store)."""
    from relay.store import StoreError
    root = tmp_path / "mail" / ADDR
    a, b = UserStore(root, ADDR), UserStore(root, ADDR)
    try:
        a.create("Box")
        real = maildir.write_tmp
        calls = []

        def write_tmp(path, data, mtime=None):
            out = real(path, data, mtime)
            calls.append(a.locked()._depth)
            if len(calls) > 1:
                return out           # the locked second try after the folder was re-created
            if meanwhile == "recreated":
                b.delete("Box")
                b.create("Box")
            elif meanwhile == "renamed":
                b.rename("Box", "Moved")
            return out

        monkeypatch.setattr(maildir, "write_tmp", write_tmp)
        data = b"Subject: racing\r\nMessage-ID: <race@x>\r\n\r\nx\r\n"
        if meanwhile == "renamed":
            with pytest.raises(StoreError) as e:
                a.append("Box", data)
            assert e.value.code == "TRYCREATE"
            assert b.state("Moved").uids == []
        else:
            _, uid = a.append("Box", data)
            assert b.state("Box").uids == [uid]
            assert b.read("Box", uid) == data
            assert [n for n in os.listdir(root / ".Box" / "tmp")] == []
        assert calls[0] == 0, "the file is written outside the lock"
    finally:
        a.close()
        b.close()
