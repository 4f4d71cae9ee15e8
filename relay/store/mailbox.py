"""One user's mail: Maildir++ folders plus the SQLite index, behind one lock.

``UserStore`` is the whole API the IMAP and POP3 servers use (see the package docstring for the
contract). Every method takes the user's lock (relay/store/userlock.py: a ``threading.RLock``
— sessions run in the asyncio loop, delivery and IMAP workers in threads — plus an exclusive
``flock`` shared with every other relay process that opens the same user, plus a look at SQLite's
``data_version`` that reloads what is kept in memory when another process committed), does its
file operations, then commits one index transaction, then publishes ``(address, folder)`` on the
ChangeBus (relay/feed.py carries that to the other processes). File first, index second:
after a crash the next sync reconciles the index with what is on disk.

Picking up mail dropped in from outside is cheap: each ``sync`` lists ``new/`` (usually empty)
and stats ``cur/``; only when ``cur/``'s mtime moved does it list ``cur/`` and compare names.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as _dt
import functools
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from relay.events import ChangeBus
from relay.store import copyjournal, index, maildir, mime, names
from relay.store.names import INBOX, SEPARATOR
from relay.store.types import (SYSTEM_FLAGS, FolderInfo, FolderState, HeaderFields, MessageRecord,
                               StoreError, offset_tz)
from relay.store.userlock import MaildropLock, UserLock

log = logging.getLogger("relay.store")
DEFAULT_FOLDERS = (("INBOX", ""), ("Sent", "\\Sent"), ("Drafts", "\\Drafts"),
                   ("Trash", "\\Trash"), ("Junk", "\\Junk"), ("Archive", "\\Archive"))
SPECIAL_USES = frozenset(s for _, s in DEFAULT_FOLDERS if s) | {"\\All", "\\Flagged"}
UIDVALIDITY_FILE = "tui-mail-uidvalidity"
_ROW = "uid, flags, size, internaldate, tzoffset, modseq, base, vsize"


_FLAGSETS: dict[str, frozenset[str]] = {}


def _flagset(text: str) -> frozenset[str]:
    """Flag text → frozenset, shared between records (most messages have one of a few sets)."""
    fs = _FLAGSETS.get(text)
    if fs is None:
        if len(_FLAGSETS) > 4096:
            _FLAGSETS.clear()
        fs = _FLAGSETS[text] = frozenset(text.split())
    return fs


def _record(row) -> MessageRecord:
    uid, flags, size, idate, tzo, modseq, base, vsize = row
    return MessageRecord(uid, _flagset(flags), size,
                         _dt.datetime.fromtimestamp(idate, offset_tz(tzo)), modseq, base, vsize)


def _check_flags(flags: Iterable[str]) -> set[str]:
    out = set()
    for f in flags:
        if f.startswith("\\"):
            if f.lower() == "\\recent":
                continue
            canon = next((s for s in SYSTEM_FLAGS if s.lower() == f.lower()), None)
            if canon is None:
                raise StoreError(f"unknown system flag {f}")
            out.add(canon)
        elif not f or any(c in f for c in ' (){%*"]\\') or any(ord(c) < 0x21 or ord(c) > 0x7e for c in f):
            raise StoreError(f"invalid keyword {f!r}")
        else:
            out.add(f)
    return out


def _note_keywords(db, folder_id: int, flags: Iterable[str]) -> None:
    """Remember the keywords (non-system flags) used in a folder."""
    kws = [(folder_id, k) for k in flags if not k.startswith("\\")]
    if kws:
        db.executemany("INSERT OR IGNORE INTO keywords VALUES (?, ?)", kws)


def _analysed(data: bytes, fn: str) -> tuple:
    """The cached columns of a message: ENVELOPE and BODYSTRUCTURE (packed and IMAP-encoded),
    the SEARCH header columns and References."""
    try:
        env, body, h = mime.analyse(data)
    except Exception:   # one odd message must not make its whole folder unusable
        log.exception("cannot analyse message %s; indexing it as text/plain", fn)
        env, body, h = [None] * 10, mime.bodystructure(b"\r\n" + data), HeaderFields(
            "", "", "", "", "", "", None)
    return (index.pack(env), index.pack(body), mime.envelope_wire(env),
            mime.body_wire(body), h.subject, h.from_, h.to, h.cc, h.bcc,
            h.message_id, h.date, h.references)


REFRESH_CHUNK = 2000    # stale cached messages re-analysed per sync of a folder
LAZY_BATCH = 1000       # a sync finding this many new files indexes them without analysis
# the cached columns of a message indexed but not analysed yet (envelope_wire = x'' marks it)
PENDING = (b"", b"", b"", b"", "", "", "", "", "", "", None, None)


@functools.lru_cache(maxsize=4096)
def _folder_path(root: Path, name: str) -> Path:
    """A folder's directory (every store call looks its folder up: Path joins cost µs)."""
    dn = names.to_dirname(name)
    return root / dn if dn else root


class _Folder:
    __slots__ = ("id", "name", "path", "uidvalidity", "uidnext", "highestmodseq",
                 "cur_mtime", "selectable", "special_use")

    def __init__(self, row, root: Path) -> None:
        (self.id, self.name, self.special_use, self.selectable, self.uidvalidity, self.uidnext,
         self.highestmodseq, self.cur_mtime) = row
        self.path = _folder_path(root, self.name)


class UserStore:
    """All folders of one address. Thread-safe; share one instance per user (MailStore does)."""

    def __init__(self, root: Path, address: str, bus: ChangeBus | None = None) -> None:
        self.root = root
        self.address = address
        self._bus = bus
        maildir.ensure(root)
        os.chmod(root, 0o700)
        # RLock + flock across processes + "did another process commit?" (userlock.py); held
        # from here on, so two processes opening a new user never both create its index
        self._lock = UserLock(root)
        with self._lock:
            self._open()
            self._lock.set_on_acquire(self._check_shared)

    def _open(self) -> None:
        self._db, created = index.connect(self.root)
        # the index's generation, kept in the lock file: a new index (first open, or rebuilt
        # after corruption) gets a new one, so other processes notice they hold a stale file
        ino = os.stat(self.root / index.FILENAME).st_ino
        gen = self._lock.generation()
        if created or not gen.startswith(b"%d:" % ino):
            gen = b"%d:%d" % (ino, time.time_ns())
            self._lock.set_generation(gen)
        self._index_gen = gen
        self._closed = False
        # folder id → ((uidnext, highestmodseq), ascending UIDs): SELECT of a big folder need not
        # read every row again. Every change of a folder's membership raises its HIGHESTMODSEQ,
        # so a key that no longer matches the index (a write anywhere, even by another process)
        # means rebuild; writes in here that keep membership or know the change re-key it.
        self._uid_cache: dict[int, tuple[tuple[int, int], list[int]]] = {}
        if created:
            self._bootstrap()
        self._recover()
        self._stale = self._mime_stale_ranges(created)
        self._reload_shared()

    def _check_shared(self) -> None:
        """Run by the lock each time this process takes it: if another process committed to
        the index since we last held it (SQLite's data_version moved), reload what we keep in
        memory: one PRAGMA; our own commits never move it. If another process replaced the
        index file (found it corrupt and rebuilt it: a new generation in the lock file, one
        pread), open the new one as a restart would, instead of going on alone with the old.
        (An index deleted by hand is rebuilt by the next process to open the user.)"""
        if self._closed:
            return
        if self._lock.generation() != self._index_gen:
            log.warning("%s: the index was replaced by another process; reopening it", self.address)
            self._db.close()
            self._open()
            return
        v = self._db.execute("PRAGMA data_version").fetchone()[0]
        if v != self._data_version:
            self._reload_shared()

    def _reload_shared(self) -> None:
        """Every in-memory copy of index state, rebuilt from the index (at open, and after
        another process wrote). Folder rows are read afresh by every call (_folder), \\Recent
        claims and keywords live only in the index, the UID lists check their key against the
        folder row on each use; what is left is the two meta-derived sets below."""
        self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        # folders that may hold rows indexed without analysis (meta 'lazy:<id>', see _fill)
        self._pending = {int(k.split(":", 1)[1]) for (k,) in self._db.execute(
            "SELECT key FROM meta WHERE key LIKE 'lazy:%'")}
        # folders whose cached columns an older relay.store.mime made (meta 'mime_todo:<id>')
        self._stale = {int(k.split(":", 1)[1]): tuple(int(x) for x in v.split()) for k, v in self._db.execute(
            "SELECT key, value FROM meta WHERE key LIKE 'mime_todo:%'")}

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()
            self._lock.close()

    def __enter__(self) -> "UserStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _bootstrap(self) -> None:
        """A new index (new user, or the old index was lost): register what is on disk, then
        the default folders that are missing. Messages are indexed by the first sync."""
        with self._tx():
            self._insert_folder(INBOX, "")
            for name in self._disk_folders():
                self._insert_folder(name, dict(DEFAULT_FOLDERS).get(name, ""))
        for name, use in DEFAULT_FOLDERS[1:]:
            if self._row(name) is None:
                self.create(name, special_use=use)
                self.subscribe(name)
        self.subscribe(INBOX)

    TMP_SWEEP_EVERY = 3600.0   # seconds between sweeps of stale tmp/ files while running

    def _recover(self) -> None:
        """Finish or undo COPY/MOVEs a crash interrupted (all or nothing, see copyjournal.py);
        delete tmp/ files older than 36 hours (a killed APPEND or delivery)."""
        for fid, name in self._db.execute("SELECT id, name FROM folders").fetchall():
            dn = names.to_dirname(name)
            path = self.root / dn if dn else self.root

            def committed(base: str, fid=fid) -> bool:
                return self._db.execute("SELECT 1 FROM messages WHERE folder=? AND base=?",
                                        (fid, base)).fetchone() is not None
            try:
                if copyjournal.recover(path, committed):
                    log.info("%s: finished or undid an interrupted copy into %s", self.address, name)
                copyjournal.sweep_tmp(path)
            except OSError as e:
                log.warning("%s: cannot clean up %s/tmp: %s", self.address, name, e)
        self._swept = time.monotonic()

    def _disk_folders(self) -> list[str]:
        """Folder directories in the Maildir root (ones other tools made too). The listing is
        reused while the root's mtime stays (a directory made or removed in it changes that)
        and no directory seen was still without its cur/ (made by a tool a moment later)."""
        mtime = maildir.mtime_ns(self.root)
        seen = getattr(self, "_disk_seen", None)
        if seen is not None and seen[0] == mtime and not seen[2]:
            return seen[1]
        out, partial = [], False
        with os.scandir(self.root) as it:
            for e in it:
                if e.name.startswith(".") and e.is_dir(follow_symlinks=False):
                    name = names.from_dirname(e.name)
                    if name and name != INBOX:
                        if os.path.isdir(os.path.join(e.path, "cur")):
                            out.append(name)
                        else:
                            partial = True
        out.sort()
        # a directory changed within the last clock tick may change again with the same
        # (coarse, ~4 ms) mtime: such a listing is not reused
        recent = time.time_ns() - mtime < 50_000_000
        self._disk_seen = (mtime, out, partial or recent)
        return out

    # ------------------------------------------------------------------ index helpers
    class _TxCtx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, et, ev, tb) -> None:
            self.db.execute("ROLLBACK" if et else "COMMIT")

    def _tx(self) -> "UserStore._TxCtx":
        if self._closed:
            raise StoreError("mail store is closed", "UNAVAILABLE")
        return UserStore._TxCtx(self._db)

    def _new_uidvalidity(self) -> int:
        """Time-based and strictly increasing per user. The last value is also kept in a small
        file next to the index, so an index rebuilt within the same second still differs."""
        row = self._db.execute("SELECT value FROM meta WHERE key='uidvalidity'").fetchone()
        last = int(row[0]) if row else 0
        marker = self.root / UIDVALIDITY_FILE
        try:
            last = max(last, int(marker.read_text().strip() or 0))
        except (FileNotFoundError, ValueError):
            pass
        v = max(int(time.time()) & 0x7FFFFFFF, last + 1)
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('uidvalidity', ?)", (str(v),))
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(f"{v}\n")
        os.replace(tmp, marker)
        return v

    def _insert_folder(self, name: str, special_use: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO folders (name, special_use, uidvalidity) "
                         "VALUES (?, ?, ?)", (name, special_use, self._new_uidvalidity()))

    def _row(self, name: str) -> _Folder | None:
        r = self._db.execute("SELECT id, name, special_use, selectable, uidvalidity, uidnext, "
                             "highestmodseq, cur_mtime FROM folders WHERE name=?", (name,)).fetchone()
        return _Folder(r, self.root) if r else None

    def _folder(self, name: str, *, selectable: bool = True, code: str = "NONEXISTENT") -> _Folder:
        if self._closed:
            raise StoreError("mail store is closed", "UNAVAILABLE")
        name = names.normalize(name)
        f = self._row(name)
        if f is None and name != INBOX:
            dn = names.to_dirname(name)
            if (self.root / dn / "cur").is_dir():      # created by another Maildir tool
                with self._tx():
                    self._insert_folder(name, "")
                f = self._row(name)
        if f is None or (selectable and not f.selectable):
            raise StoreError(f"no mailbox named {name}", code)
        return f

    def _notify(self, *folders: str) -> None:
        if self._bus is not None:
            for f in dict.fromkeys(folders):
                self._bus.publish(self.address, f)

    def _kwmap(self, f: _Folder, want: Iterable[str] = ()) -> dict[str, int]:
        """The folder's keyword → letter index, giving letters to new keywords in ``want``
        while a–z last (Dovecot's dovecot-keywords file, so other tools see them too)."""
        names = maildir.read_keywords(f.path)
        missing = sorted({k for k in want if not k.startswith("\\")
                          and k not in maildir.FLAG_LETTERS and k not in names})
        if missing and len(names) < maildir.MAX_KEYWORDS:
            names += missing[:maildir.MAX_KEYWORDS - len(names)]
            maildir.write_keywords(f.path, names)
        return {n: i for i, n in enumerate(names) if n}

    # ------------------------------------------------------------------ sync with the disk
    def sync(self, folder: str = INBOX) -> bool:
        """Pick up files delivered to new/ or changed in cur/ by other programs; True if the
        index changed. Cheap when nothing happened (one listing of new/, one stat)."""
        with self._lock:
            if time.monotonic() - self._swept > self.TMP_SWEEP_EVERY:
                self._recover()
            return self._sync(self._folder(folder))

    # ------------------------------------------------------------------ cache refresh
    def _mime_stale_ranges(self, created: bool) -> dict[int, tuple[int, int]]:
        """Folders whose cached ENVELOPE/BODYSTRUCTURE/SEARCH columns were made by an older
        relay.store.mime (meta 'mime' < mime.CACHE_VERSION): folder id → (next uid, last uid)
        still to re-analyse. Kept in meta, so a refresh cut short goes on at the next start."""
        db = self._db
        row = db.execute("SELECT value FROM meta WHERE key='mime'").fetchone()
        if row is None or row[0] != str(mime.CACHE_VERSION):
            with self._tx():
                if not created:
                    for fid, uidnext in db.execute("SELECT id, uidnext FROM folders").fetchall():
                        if uidnext > 1:
                            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                       (f"mime_todo:{fid}", f"1 {uidnext - 1}"))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('mime', ?)", (str(mime.CACHE_VERSION),))
        out = {}
        for key, value in db.execute("SELECT key, value FROM meta WHERE key LIKE 'mime_todo:%'"):
            nxt, last = value.split()
            out[int(key.split(":", 1)[1])] = (int(nxt), int(last))
        return out

    def _refresh_cached(self, f: _Folder) -> None:
        """Re-analyse the next REFRESH_CHUNK stale messages of ``f`` (see _mime_stale_ranges)."""
        nxt, last = self._stale[f.id]
        rows = self._db.execute("SELECT uid, filename FROM messages WHERE folder=? AND uid BETWEEN ? AND ? "
                                "ORDER BY uid LIMIT ?", (f.id, nxt, last, REFRESH_CHUNK)).fetchall()
        updates = []
        for uid, fn in rows:
            try:
                data = mime.to_crlf((f.path / "cur" / fn).read_bytes())
            except FileNotFoundError:
                continue
            updates.append(_analysed(data, fn) + (f.id, uid))
        key = f"mime_todo:{f.id}"
        with self._tx() as db:
            db.executemany("UPDATE messages SET envelope=?, bodystructure=?, envelope_wire=?, body_wire=?, "
                           "hdr_subject=?, hdr_from=?, hdr_to=?, hdr_cc=?, hdr_bcc=?, hdr_message_id=?, "
                           "hdr_date=?, hdr_references=? WHERE folder=? AND uid=?", updates)
            if len(rows) < REFRESH_CHUNK:
                db.execute("DELETE FROM meta WHERE key=?", (key,))
                del self._stale[f.id]
            else:
                self._stale[f.id] = (rows[-1][0] + 1, last)
                db.execute("UPDATE meta SET value=? WHERE key=?", (f"{rows[-1][0] + 1} {last}", key))

    def _sync(self, f: _Folder) -> bool:
        if self._stale and f.id in self._stale:
            self._refresh_cached(f)
        new_files = maildir.listing(f.path, "new")
        cur_m = maildir.mtime_ns(f.path / "cur")
        if not new_files and cur_m == f.cur_mtime:
            return False
        changed = False
        modseq = f.highestmodseq
        uidnext = f.uidnext
        with self._tx() as db:
            known = {}
            kwlist = maildir.read_keywords(f.path)
            kwmap = {n: i for i, n in enumerate(kwlist) if n}
            if cur_m != f.cur_mtime:
                cur = maildir.listing(f.path, "cur")
                for uid, base, fname, flags in db.execute(
                        "SELECT uid, base, filename, flags FROM messages WHERE folder=?", (f.id,)):
                    known[base] = uid
                    now = cur.get(base)
                    if now is None:
                        if base in new_files:
                            continue
                        modseq += 1
                        db.execute("DELETE FROM messages WHERE folder=? AND uid=?", (f.id, uid))
                        db.execute("INSERT OR REPLACE INTO expunged VALUES (?, ?, ?)", (f.id, uid, modseq))
                        changed = True
                    elif now != fname:
                        keep = {x for x in flags.split() if x not in maildir.FLAG_LETTERS
                                and x not in kwmap}          # keywords only the index holds
                        newflags = keep | maildir.flags_from_info(maildir.split_name(now)[1], kwlist)
                        modseq += 1
                        _note_keywords(db, f.id, newflags)
                        db.execute("UPDATE messages SET filename=?, flags=?, modseq=? WHERE folder=? AND uid=?",
                                   (now, " ".join(sorted(newflags)), modseq, f.id, uid))
                        changed = True
                unknown = [(base, fn) for base, fn in cur.items() if base not in known]
            else:
                unknown = []
            arrivals: list[tuple[str, str, Path, bool]] = []
            curdir = os.path.join(f.path, "cur")    # str joins: 100,000 Paths cost ~0.5 s
            for base, fn in unknown:
                arrivals.append((base, fn, os.path.join(curdir, fn), False))
            for base, fn in new_files.items():
                flags = maildir.flags_from_info(maildir.split_name(fn)[1], kwlist)
                if base in known or db.execute("SELECT 1 FROM messages WHERE folder=? AND base=?",
                                               (f.id, base)).fetchone():
                    base = maildir.new_unique()   # a name clash: never overwrite, index it anew
                target = maildir.cur_name(base, flags, kwmap)
                try:
                    os.rename(f.path / "new" / fn, f.path / "cur" / target)
                except FileNotFoundError:
                    continue
                arrivals.append((base, target, f.path / "cur" / target, True))
            # Many new files at once (a Maildir never indexed, or filled by another tool):
            # index them from the directory, stat and size only, and analyse each message
            # (ENVELOPE, BODYSTRUCTURE, SEARCH columns) when something first asks (_fill).
            lazy = len(arrivals) >= LAZY_BATCH
            batch = []
            for base, fn, path, recent in arrivals:
                try:
                    with open(path, "rb") as fh:
                        st = os.fstat(fh.fileno())
                        data = fh.read()
                except FileNotFoundError:
                    continue
                if lazy:
                    data = (len(data), len(data) + data.count(b"\n") - data.count(b"\r\n"))
                batch.append((st.st_mtime, base, fn, data, recent))
            batch.sort(key=lambda t: (t[0], t[1]))
            if lazy and batch:
                rows = []
                for mtime, base, fn, (size, vsize), recent in batch:
                    modseq += 1
                    flags = maildir.flags_from_info(maildir.split_name(fn)[1], kwlist)
                    _note_keywords(db, f.id, flags)
                    rows.append((f.id, uidnext, base, fn, " ".join(sorted(flags)), size, vsize,
                                 int(mtime), 0, modseq, int(recent)) + PENDING)
                    uidnext += 1
                index.bulk_insert(db, _INSERT, rows, f.id, sum(r[5] for r in rows),
                                  sum(1 for r in rows if "\\Seen" not in r[4].split()))
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, '1')", (f"lazy:{f.id}",))
                self._pending.add(f.id)
                changed = True
                batch = []
            for mtime, base, fn, data, recent in batch:
                modseq += 1
                self._insert_message(db, f.id, uidnext, base, fn,
                                     maildir.flags_from_info(maildir.split_name(fn)[1], kwlist),
                                     data, int(mtime), 0, modseq, recent)
                uidnext += 1
                changed = True
            db.execute("UPDATE folders SET uidnext=?, highestmodseq=?, cur_mtime=? WHERE id=?",
                       (uidnext, modseq, maildir.mtime_ns(f.path / "cur"), f.id))
        f.uidnext, f.highestmodseq = uidnext, modseq
        return changed

    @staticmethod
    def _insert_message(db, folder_id: int, uid: int, base: str, fn: str, flags: Iterable[str],
                        data: bytes, internaldate: int, tzoffset: int, modseq: int, recent: bool,
                        cached: tuple | None = None) -> None:
        if cached is None:
            cached = _analysed(data, fn)
        _note_keywords(db, folder_id, flags)
        vsize = len(data) + data.count(b"\n") - data.count(b"\r\n")
        db.execute(_INSERT, (folder_id, uid, base, fn, " ".join(sorted(flags)), len(data), vsize,
                    internaldate, tzoffset, modseq, int(recent)) + tuple(cached)
                   + ((None,) if len(cached) == 11 else ()))

    # ------------------------------------------------------------------ folders
    def folders(self) -> list[FolderInfo]:
        """All folders (INBOX first, then by name), including ones other tools created."""
        with self._lock:
            disk = set(self._disk_folders())
            rows = {r[0]: r for r in self._db.execute("SELECT name, special_use, selectable FROM folders")}
            missing = disk - rows.keys()
            if missing:
                with self._tx():
                    for name in missing:
                        self._insert_folder(name, "")
                rows = {r[0]: r for r in self._db.execute("SELECT name, special_use, selectable FROM folders")}
            allnames = sorted(rows, key=lambda n: (n != INBOX, n))
            out = []
            for n in allnames:
                _, use, sel = rows[n]
                kids = any(names.is_inferior(o, n) for o in rows)
                out.append(FolderInfo(n, use, bool(sel), kids))
            return out

    def create(self, name: str, *, special_use: str = "") -> None:
        """Create a folder (and any missing parents). ALREADYEXISTS if it exists."""
        name = names.normalize(name)
        if special_use and special_use not in SPECIAL_USES:
            raise StoreError(f"unknown special use {special_use}", "USEATTR")
        with self._lock:
            existing = self._row(name)
            if name == INBOX or (existing is not None and existing.selectable):
                raise StoreError(f"mailbox {name} already exists", "ALREADYEXISTS")
            chain = []
            p: str | None = name
            while p is not None:
                chain.append(p)
                p = names.parent(p)
            for level in reversed(chain):
                row = self._row(level)
                if row is not None and (row.selectable or level != name):
                    continue
                path = self.root / names.to_dirname(level)
                maildir.ensure(path)
                (path / "maildirfolder").touch()
                with self._tx() as db:
                    if row is not None:
                        db.execute("UPDATE folders SET selectable=1 WHERE id=?", (row.id,))
                    else:
                        self._insert_folder(level, special_use if level == name else "")
        self._notify(name)      # NOTIFY MailboxName listeners (RFC 5465)

    def delete(self, name: str) -> None:
        """Delete a folder and its messages. With inferior folders it becomes \\Noselect
        instead (RFC 3501 6.3.4). INBOX cannot be deleted."""
        name = names.normalize(name)
        if name == INBOX:
            raise StoreError("INBOX cannot be deleted", "CANNOT")
        with self._lock:
            f = self._folder(name, selectable=False)
            kids = self._db.execute("SELECT 1 FROM folders WHERE name LIKE ? ESCAPE '!' LIMIT 1",
                                    (_like_prefix(name),)).fetchone()
            if kids:
                if not f.selectable:
                    raise StoreError(f"{name} has inferior mailboxes and no messages", "CANNOT")
                for sub in maildir.SUBDIRS:
                    shutil.rmtree(f.path / sub, ignore_errors=True)
                with self._tx() as db:
                    db.execute("DELETE FROM messages WHERE folder=?", (f.id,))
                    db.execute("DELETE FROM expunged WHERE folder=?", (f.id,))
                    # a new HIGHESTMODSEQ: UID lists cached here or in another process are void
                    db.execute("UPDATE folders SET selectable=0, highestmodseq=highestmodseq+1 "
                               "WHERE id=?", (f.id,))
            else:
                shutil.rmtree(f.path, ignore_errors=True)
                with self._tx() as db:
                    db.execute("DELETE FROM messages WHERE folder=?", (f.id,))
                    db.execute("DELETE FROM expunged WHERE folder=?", (f.id,))
                    db.execute("DELETE FROM folders WHERE id=?", (f.id,))
                    db.execute("DELETE FROM keywords WHERE folder=?", (f.id,))
        self._notify(name)

    def rename(self, old: str, new: str) -> None:
        """Rename a folder with its inferiors. Renaming INBOX moves its messages into a new
        folder and leaves INBOX empty (RFC 3501 6.3.5)."""
        old, new = names.normalize(old), names.normalize(new)
        with self._lock:
            f = self._folder(old, selectable=False)
            if new == INBOX or self._row(new) is not None:
                raise StoreError(f"mailbox {new} already exists", "ALREADYEXISTS")
            if names.is_inferior(new, old):
                raise StoreError("cannot rename a mailbox into itself", "CANNOT")
            if old == INBOX:
                self.create(new)
                uids = list(self.state(INBOX).uids)
                if uids:
                    self.copy(INBOX, uids, new, move=True)
                return
            parent = names.parent(new)
            if parent is not None and self._row(parent) is None:
                self.create(parent)
            moves = [(f.name, new)]
            for (n,) in self._db.execute("SELECT name FROM folders WHERE name LIKE ? ESCAPE '!'",
                                         (_like_prefix(old),)).fetchall():
                moves.append((n, new + n[len(old):]))
            for a, b in moves:
                src, dst = self.root / names.to_dirname(a), self.root / names.to_dirname(b)
                if src.exists():
                    os.rename(src, dst)
            with self._tx() as db:
                for a, b in moves:
                    db.execute("UPDATE folders SET name=? WHERE name=?", (b, a))
                    if db.execute("DELETE FROM subscriptions WHERE name=?", (a,)).rowcount:
                        db.execute("INSERT OR IGNORE INTO subscriptions VALUES (?)", (b,))
        self._notify(old, new)

    def subscriptions(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT name FROM subscriptions")}

    def subscribe(self, name: str, on: bool = True) -> None:
        """Subscribe (on=True) or unsubscribe; a subscription may name a missing folder."""
        name = names.normalize(name)
        with self._lock, self._tx() as db:
            if on:
                db.execute("INSERT OR IGNORE INTO subscriptions VALUES (?)", (name,))
            else:
                db.execute("DELETE FROM subscriptions WHERE name=?", (name,))
        self._notify(name)      # NOTIFY SubscriptionChange listeners (RFC 5465)

    # ------------------------------------------------------------------ folder state
    def state(self, folder: str) -> FolderState:
        """Sync, then UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and all UIDs (ascending)."""
        with self._lock:
            f = self._folder(folder)
            self._sync(f)
            return FolderState(f.uidvalidity, f.uidnext, f.highestmodseq, self._uid_list(f),
                               f.highestmodseq)

    def _uid_list(self, f: _Folder) -> list[int]:
        """The folder's UIDs ascending, from the cache when it is current (never mutate it)."""
        key = (f.uidnext, f.highestmodseq)
        hit = self._uid_cache.get(f.id)
        if hit is not None and hit[0] == key:
            return hit[1]
        uids = [r[0] for r in self._db.execute(
            "SELECT uid FROM messages WHERE folder=? ORDER BY uid", (f.id,))]
        self._uid_cache[f.id] = (key, uids)
        return uids

    def _uid_rekey(self, f: _Folder, before: tuple[int, int], added: Sequence[int] = (),
                   removed: Sequence[int] = ()) -> None:
        """A write in this process took ``f`` from ``before`` (uidnext, highestmodseq) to its
        current values, adding UIDs above all others and/or removing some: update the cached
        list instead of dropping it (only if it was current before the write)."""
        hit = self._uid_cache.get(f.id)
        if hit is None:
            return
        if hit[0] != before:
            del self._uid_cache[f.id]
            return
        uids = hit[1]
        if removed:
            gone = set(removed)
            uids = [u for u in uids if u not in gone]
        if added:
            uids = uids + list(added)
        self._uid_cache[f.id] = ((f.uidnext, f.highestmodseq), uids)

    def first_unseen(self, folder: str) -> int | None:
        """The lowest UID without \\Seen (SELECT's [UNSEEN n]), from the partial index of unseen
        rows: O(log n), never a scan. Reads the index as of the last sync."""
        with self._lock:
            f = self._folder(folder)
            return self._db.execute(
                "SELECT min(uid) FROM messages INDEXED BY messages_unseen WHERE folder=? AND "
                "instr(flags, '\\Seen')=0", (f.id,)).fetchone()[0]

    def version(self, folder: str) -> int:
        """Sync, then a token that changes whenever anything in the folder changes (O(1))."""
        with self._lock:
            f = self._folder(folder)
            self._sync(f)
            return f.highestmodseq

    def status(self, folder: str) -> dict[str, int]:
        """STATUS data: MESSAGES, RECENT, UIDNEXT, UIDVALIDITY, UNSEEN, HIGHESTMODSEQ, SIZE."""
        with self._lock:
            f = self._folder(folder)
            self._sync(f)
            # the counts the index's triggers keep (relay.store.index): no scan of the folder
            row = self._db.execute("SELECT messages, unseen, size FROM folder_counts WHERE folder=?",
                                   (f.id,)).fetchone()
            n, unseen, size = row if row is not None else (0, 0, 0)
            (recent,) = self._db.execute("SELECT count(*) FROM messages INDEXED BY messages_recent "
                                         "WHERE folder=? AND recent=1", (f.id,)).fetchone()
            return {"MESSAGES": n, "RECENT": int(recent), "UIDNEXT": f.uidnext,
                    "UIDVALIDITY": f.uidvalidity, "UNSEEN": int(unseen),
                    "HIGHESTMODSEQ": f.highestmodseq, "SIZE": int(size)}

    def claim_recent(self, folder: str, uids: Sequence[int]) -> set[int]:
        """Claim \\Recent for the given UIDs only (messages a session is told about for the
        first time, RFC 3501 2.3.2): returns those still recent, which stop being recent for
        everyone else."""
        if not uids:
            return set()
        with self._lock:
            f = self._folder(folder)
            got = self._recent_among(f, uids)
            if got:
                with self._tx() as db:
                    db.executemany("UPDATE messages SET recent=0 WHERE folder=? AND uid=?",
                                   [(f.id, u) for u in got])
            return got

    def peek_recent(self, folder: str, uids: Sequence[int] | None = None) -> set[int]:
        """The folder's \\Recent messages (among ``uids``) without claiming them (EXAMINE,
        RFC 3501 6.3.2)."""
        with self._lock:
            f = self._folder(folder)
            if uids is None:
                self._sync(f)
            return self._recent_among(f, uids)

    def _recent_among(self, f: _Folder, uids: Sequence[int] | None) -> set[int]:
        """Recent UIDs of ``f`` (among the ascending ``uids``): one look at the small partial
        index of recent rows, so SELECT of a 100,000-message folder stays cheap."""
        rows = [r[0] for r in self._db.execute(
            "SELECT uid FROM messages INDEXED BY messages_recent WHERE folder=? AND recent=1", (f.id,))]
        if uids is None:
            return set(rows)
        return {u for u in rows if _in_sorted(uids, u)}

    def keywords(self, folder: str) -> list[str]:
        """Every keyword used in the folder so far, sorted (SELECT's FLAGS)."""
        with self._lock:
            f = self._folder(folder)
            if self._db.execute("SELECT 1 FROM meta WHERE key='keywords'").fetchone() is None:
                with self._tx() as db:   # an index made before the keywords table: fill it once
                    for fid, text in db.execute("SELECT DISTINCT folder, flags FROM messages").fetchall():
                        _note_keywords(db, fid, text.split())
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('keywords', '1')")
            return [r[0] for r in self._db.execute(
                "SELECT name FROM keywords WHERE folder=? ORDER BY name", (f.id,))]

    def recent(self, folder: str) -> set[int]:
        """Claim the folder's \\Recent messages: the first caller gets them and they stop being
        recent for everyone else (RFC 3501: one session sees a message as \\Recent)."""
        with self._lock:
            f = self._folder(folder)
            self._sync(f)
            uids = {r[0] for r in self._db.execute(
                "SELECT uid FROM messages WHERE folder=? AND recent=1", (f.id,))}
            if uids:
                with self._tx() as db:
                    db.execute("UPDATE messages SET recent=0 WHERE folder=? AND recent=1", (f.id,))
            return uids

    # ------------------------------------------------------------------ per-message data
    def _fill(self, f: _Folder, uids: Sequence[int] | None) -> None:
        """Analyse the rows among ``uids`` (all when None) that a big sync indexed without
        analysis (PENDING), so the cached columns read next are real. O(1) for a folder
        without such rows; the partial index messages_pending finds them otherwise."""
        if f.id not in self._pending:
            return
        q = "SELECT uid, filename FROM messages INDEXED BY messages_pending WHERE folder=? AND envelope_wire=x''"
        if uids is None:
            rows = self._db.execute(q, (f.id,)).fetchall()
        elif not uids:
            return
        else:
            want = set(uids)
            rows = [r for r in self._db.execute(q + " AND uid BETWEEN ? AND ?",
                                                (f.id, min(want), max(want))) if r[0] in want]
        updates = []
        for uid, fn in rows:
            try:
                data = mime.to_crlf((f.path / "cur" / fn).read_bytes())
            except FileNotFoundError:
                data = b"\r\n"    # gone: the next sync drops the row; answer something valid
            updates.append(_analysed(data, fn) + (f.id, uid))
        with self._tx() as db:
            if updates:
                db.executemany("UPDATE messages SET envelope=?, bodystructure=?, envelope_wire=?, "
                               "body_wire=?, hdr_subject=?, hdr_from=?, hdr_to=?, hdr_cc=?, hdr_bcc=?, "
                               "hdr_message_id=?, hdr_date=?, hdr_references=? WHERE folder=? AND uid=?",
                               updates)
            if db.execute(q + " LIMIT 1", (f.id,)).fetchone() is None:
                db.execute("DELETE FROM meta WHERE key=?", (f"lazy:{f.id}",))
                self._pending.discard(f.id)

    def _select(self, f: _Folder, cols: str, uids: Sequence[int] | None):
        if uids is None:
            return self._db.execute(f"SELECT {cols} FROM messages WHERE folder=? ORDER BY uid", (f.id,))
        if not uids:
            return []
        want = set(uids)
        rows = self._db.execute(f"SELECT {cols} FROM messages WHERE folder=? AND uid BETWEEN ? AND ? "
                                "ORDER BY uid", (f.id, min(want), max(want)))
        return (r for r in rows if r[0] in want)

    def records(self, folder: str, uids: Sequence[int] | None = None) -> list[MessageRecord]:
        """Index records for ``uids`` (all when None), ascending by UID; missing UIDs are skipped.
        Reads the index as of the last sync (call state()/version() to pick up new mail)."""
        with self._lock:
            return [_record(r) for r in self._select(self._folder(folder), _ROW, uids)]

    def flag_rows(self, folder: str, first: int, last: int) -> list[tuple[int, str, int]]:
        """(UID, flags as space-separated text, MODSEQ) of every message with ``first`` <= UID
        <= ``last``, ascending, for FETCH (FLAGS) and friends: three columns straight from the
        index, nothing built per row."""
        with self._lock:
            return self._db.execute("SELECT uid, flags, modseq FROM messages INDEXED BY messages_flags "
                                    "WHERE folder=? AND "
                                    "uid BETWEEN ? AND ? ORDER BY uid",
                                    (self._folder(folder).id, first, last)).fetchall()

    def fetch_rows(self, folder: str, first: int, last: int, *, envelope: bool = False,
                   body: bool = False) -> list[tuple[int, str, int, int, int, int, bytes, bytes]]:
        """(UID, flags text, MODSEQ, RFC822.SIZE, INTERNALDATE as a Unix time, its UTC offset in
        minutes, ENVELOPE, BODYSTRUCTURE) of every message with ``first`` <= UID <= ``last``,
        ascending: FETCH of those items as plain column reads. ENVELOPE and BODYSTRUCTURE are
        in the exact form the server sends (mime.envelope_wire, mime.body_wire), b"" unless
        asked for; rows a big first sync left unanalysed are analysed first."""
        with self._lock:
            f = self._folder(folder)
            if envelope or body:
                self._fill(f, range(first, last + 1))
            return self._db.execute(
                "SELECT uid, flags, modseq, coalesce(nullif(vsize, 0), size), internaldate, tzoffset, "
                + ("envelope_wire" if envelope else "x''") + ", " + ("body_wire" if body else "x''")
                + " FROM messages WHERE folder=? AND uid BETWEEN ? AND ? ORDER BY uid",
                (f.id, first, last)).fetchall()

    def render_flag_rows(self, folder: str, first: int, last: int, count: int, pieces: Sequence,
                         forms: dict[str, str], marked: Sequence[int] = (),
                         marked_forms: dict[str, str] | None = None,
                         changedsince: int | None = None) -> str | None:
        """Text for the messages with ``first`` <= UID <= ``last``, one line each, built by
        SQLite (FETCH (FLAGS) of 100,000 messages without a Python step per message).
        ``pieces``: the first message's sequence number minus one, then literal strings and
        column codes (0 = sequence number, 1 = UID, 2 = the flags' form, 3 = MODSEQ);
        ``forms`` maps flags texts (as stored, see ``flag_texts``) to their form,
        ``marked_forms`` gives the form for the UIDs in ``marked``. None when the range does not
        hold exactly ``count`` messages or a message's flags text is not in ``forms`` (the
        caller then learns the texts or goes row by row). One statement, no count first: the
        sequence numbers it assumes are right exactly when the count matches."""
        with self._lock:
            f = self._folder(folder)
            offset, pieces = pieces[0], pieces[1:]
            if not forms or len(forms) + len(marked_forms or {}) > 500:
                return None     # (no rows, or too many flag sets for one CASE: row by row)
            # each flags text → its form by a CASE over the few distinct texts (a join with a
            # JSON table of them cost SQLite twice the time of the whole printf)
            form = "CASE m.flags" + " WHEN ? THEN ?" * len(forms) + " END"
            form_params: list = [x for kv in forms.items() for x in kv]
            if marked:
                mforms = marked_forms or {}
                form = ("CASE WHEN m.uid IN (SELECT value FROM json_each(?)) THEN "
                        + ("CASE m.flags" + " WHEN ? THEN ?" * len(mforms) + " END" if mforms else "NULL")
                        + " ELSE " + form + " END")
                form_params = ([json.dumps(list(marked))] + [x for kv in mforms.items() for x in kv]
                               + form_params)
            # sequence number: from the UID when the range has no gaps (fresh or never-expunged
            # folders: no window function, half the time), else row_number()
            seq = ("(m.uid + %d)" % (int(offset) + 1 - first) if last - first + 1 == count
                   else "(row_number() OVER (ORDER BY m.uid) + %d)" % int(offset))
            fmt = []
            cols = []
            for p in pieces:
                if isinstance(p, str):
                    fmt.append(p.replace("%", "%%"))
                else:
                    fmt.append(("%d", "%d", "%s", "%d")[p])
                    cols.append(("seq", "uid", "fm", "modseq")[p])
            line = "printf(?, " + ", ".join(cols) + ")"
            params = ["".join(fmt)]
            if changedsince is not None:    # rows not changed since: counted, not written
                line = "CASE WHEN modseq > ? THEN " + line + " ELSE '' END"
                params.insert(0, changedsince)
            # (printf writes NULL as '': a flags text without a form is counted apart)
            sql = ("SELECT group_concat(line, ''), sum(bad), count(*) FROM (SELECT " + line
                   + " AS line, fm IS NULL AS bad FROM (SELECT m.uid AS uid, m.modseq AS modseq, "
                   + seq + " AS seq, " + form + " AS fm FROM messages AS m INDEXED BY messages_flags "
                   "WHERE m.folder=? AND m.uid BETWEEN ? AND ? "
                   # (the rows come in UID order from the ordered subquery: SQLite concatenates
                   # in that order; the test compares with the row-by-row answer)
                   "ORDER BY m.uid))")
            text, unformed, n = self._db.execute(sql, params + form_params + [f.id, first, last]).fetchone()
            return None if unformed or n != count else (text or "")

    def flag_texts(self, folder: str, first: int, last: int) -> list[str]:
        """The distinct flags texts (space-separated, as stored) of the messages in a UID range."""
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT DISTINCT flags FROM messages INDEXED BY messages_flags WHERE folder=? AND "
                "uid BETWEEN ? AND ?", (self._folder(folder).id, first, last))]

    def envelopes(self, folder: str, uids: Sequence[int] | None = None) -> dict[int, list]:
        """Cached ENVELOPE per UID (see relay.store.mime for the representation)."""
        with self._lock:
            f = self._folder(folder)
            self._fill(f, uids)
            rows = list(self._select(f, "uid, envelope", uids))
        return {u: index.unpack(b) for u, b in rows}

    def envelopes_wire(self, folder: str, uids: Sequence[int] | None = None) -> dict[int, bytes]:
        """ENVELOPE per UID already encoded for IMAP (what relay.imap.parser.encode would give
        for ``envelopes()``): send it as is, nothing is decoded."""
        with self._lock:
            f = self._folder(folder)
            self._fill(f, uids)
            return dict(self._select(f, "uid, envelope_wire", uids))

    def bodystructures_wire(self, folder: str, uids: Sequence[int] | None = None) -> dict[int, bytes]:
        """BODYSTRUCTURE per UID already encoded for IMAP."""
        with self._lock:
            f = self._folder(folder)
            self._fill(f, uids)
            return dict(self._select(f, "uid, body_wire", uids))

    def bodystructures(self, folder: str, uids: Sequence[int] | None = None) -> dict[int, list]:
        with self._lock:
            f = self._folder(folder)
            self._fill(f, uids)
            rows = list(self._select(f, "uid, bodystructure", uids))
        return {u: index.unpack(b) for u, b in rows}

    def envelope(self, folder: str, uid: int) -> list | None:
        return self.envelopes(folder, [uid]).get(uid)

    def bodystructure(self, folder: str, uid: int) -> list | None:
        return self.bodystructures(folder, [uid]).get(uid)

    def header_fields(self, folder: str, uids: Sequence[int] | None = None) -> dict[int, HeaderFields]:
        """The decoded SEARCH columns per UID."""
        with self._lock:
            f = self._folder(folder)
            self._fill(f, uids)
            rows = list(self._select(f, "uid, hdr_subject, hdr_from, hdr_to, "
                                     "hdr_cc, hdr_bcc, hdr_message_id, hdr_date", uids))
        return {r[0]: HeaderFields(*r[1:]) for r in rows}

    def sort_fields(self, folder: str, uids: Sequence[int] | None = None, *,
                    full: bool = True) -> list[tuple]:
        """What SORT and THREAD look at, per UID ascending: (uid, internaldate, vsize, Date:
        as a Unix time or None, decoded Subject, ENVELOPE, raw References). All from the
        index; References of messages indexed before the column existed are read once from
        their files and stored. ``full=False`` (ARRIVAL/DATE/SIZE only) reads just the first
        four columns: "" / None / "" stand for the rest."""
        if not full:
            with self._lock:
                f = self._folder(folder)
                self._fill(f, uids)         # rows indexed without analysis have no Date: yet
                return [(r[0], r[1], r[2], r[3], "", None, "")
                        for r in self._select(f, "uid, internaldate, vsize, hdr_date", uids)]
        with self._lock:
            f = self._folder(folder)
            self._fill(f, uids)
            rows = list(self._select(f, "uid, internaldate, vsize, hdr_date, hdr_subject, envelope, "
                                     "hdr_references, filename", uids))
            missing = [(r[0], r[7]) for r in rows if r[6] is None]
            filled: dict[int, str] = {}
            if missing:
                for uid, fname in missing:
                    try:
                        with open(f.path / "cur" / fname, "rb") as fh:
                            head = mime.header_of(fh.read(256 * 1024))
                    except FileNotFoundError:
                        continue
                    filled[uid] = (mime.header_value(head, "References") or b"").decode("utf-8", "replace")
                with self._tx() as db:
                    db.executemany("UPDATE messages SET hdr_references=? WHERE folder=? AND uid=?",
                                   [(v, f.id, u) for u, v in filled.items()])
        return [(r[0], r[1], r[2], r[3], r[4], index.unpack(r[5]),
                 r[6] if r[6] is not None else filled.get(r[0], "")) for r in rows]

    def search_header(self, folder: str, field: str, text: str) -> set[int]:
        """UIDs whose decoded ``field`` (subject, from, to, cc, bcc, message-id) contains ``text``
        case-insensitively — one SQL scan, no file is opened."""
        col = index.SEARCH_COLUMNS.get(field.lower())
        if col is None:
            raise StoreError(f"no indexed header field {field}")
        with self._lock:
            f = self._folder(folder)
            self._fill(f, None)
            if text.isascii():
                rows = self._db.execute(f"SELECT uid FROM messages WHERE folder=? AND "
                                        f"instr(lower({col}), ?) > 0", (f.id, text.lower()))
                return {r[0] for r in rows}
            needle = text.casefold()
            rows = self._db.execute(f"SELECT uid, {col} FROM messages WHERE folder=?", (f.id,))
            return {u for u, v in rows if needle in v.casefold()}

    def path(self, folder: str, uid: int) -> Path:
        """Current file of a message (its name changes with its flags; read it under
        ``with store.locked():`` or use ``read``)."""
        with self._lock:
            f = self._folder(folder)
            r = self._db.execute("SELECT filename FROM messages WHERE folder=? AND uid=?",
                                 (f.id, uid)).fetchone()
            if r is None:
                raise StoreError(f"no message with UID {uid} in {folder}", "NONEXISTENT")
            return f.path / "cur" / r[0]

    def read(self, folder: str, uid: int, start: int = 0, length: int | None = None, *,
             crlf: bool = False) -> bytes:
        """The message bytes exactly as delivered (or ``length`` bytes from ``start``). With
        ``crlf``, bare LFs (files from other Maildir tools) become CRLF first, matching
        ``MessageRecord.vsize`` and the cached BODYSTRUCTURE sizes; for delivered mail the
        two are identical."""
        with self._lock:
            p = self.path(folder, uid)
            try:
                with open(p, "rb") as fh:
                    if crlf:
                        data = mime.to_crlf(fh.read())
                        return data[start:] if length is None else data[start:start + length]
                    if start:
                        fh.seek(start)
                    return fh.read() if length is None else fh.read(length)
            except FileNotFoundError:
                raise StoreError(f"message UID {uid} vanished from {folder}", "EXPUNGEISSUED") from None

    def header(self, folder: str, uid: int, name: str) -> bytes | None:
        """One header field's raw (unfolded) value, read from the file's header block."""
        data = self.read(folder, uid, 0, 256 * 1024)
        return mime.header_value(mime.header_of(data), name)

    def maildrop_lock(self) -> MaildropLock | None:
        """POP3's exclusive lock on this maildrop, across processes (None: another session
        has it); ``release()`` it when the session ends."""
        return MaildropLock.try_take(self.root)

    def locked(self) -> UserLock:
        """The user's lock (re-entrant, and excludes other processes too: userlock.py)."""
        return self._lock

    # ------------------------------------------------------------------ changes
    def set_flags(self, folder: str, uids: Sequence[int], mode: str, flags: Iterable[str],
                  unchangedsince: int | None = None) -> tuple[list[MessageRecord], list[int]]:
        """mode "set" | "add" | "remove". Returns (records that changed, with their new MODSEQ;
        UIDs refused because their MODSEQ is above ``unchangedsince``)."""
        if mode not in ("set", "add", "remove"):
            raise StoreError(f"bad flag mode {mode}")
        want = _check_flags(flags)
        changed: list[MessageRecord] = []
        failed: list[int] = []
        with self._lock:
            f = self._folder(folder)
            self._sync(f)
            modseq = f.highestmodseq
            before = (f.uidnext, modseq)
            rows = list(self._select(f, "uid, flags, filename, modseq", uids))
            kwmap = self._kwmap(f, want if mode != "remove" else ())
            with self._tx() as db:
                if mode != "remove":
                    _note_keywords(db, f.id, want)
                for uid, flagtext, fname, mseq in rows:
                    if unchangedsince is not None and mseq > unchangedsince:
                        failed.append(uid)
                        continue
                    old = set(flagtext.split())
                    new = want if mode == "set" else (old | want if mode == "add" else old - want)
                    if new == old:
                        continue
                    base, info = maildir.split_name(fname)
                    newname = maildir.cur_name(base, new, kwmap)
                    if newname != fname:
                        try:
                            os.rename(f.path / "cur" / fname, f.path / "cur" / newname)
                        except FileNotFoundError:
                            continue
                    modseq += 1
                    db.execute("UPDATE messages SET flags=?, filename=?, modseq=? WHERE folder=? AND uid=?",
                               (" ".join(sorted(new)), newname, modseq, f.id, uid))
                    changed.append(uid)
                db.execute("UPDATE folders SET highestmodseq=?, cur_mtime=? WHERE id=?",
                           (modseq, maildir.mtime_ns(f.path / "cur"), f.id))
            f.highestmodseq = modseq
            self._uid_rekey(f, before)
            recs = [_record(r) for r in self._select(f, _ROW, changed)] if changed else []
        if changed:
            self._notify(f.name)
        return recs, failed

    def append(self, folder: str, data: bytes, flags: Iterable[str] = (),
               internaldate: _dt.datetime | None = None) -> tuple[int, int]:
        """Store a message; returns (UIDVALIDITY, UID). TRYCREATE if the folder is missing."""
        want = _check_flags(flags)
        when = internaldate or _dt.datetime.now(_dt.timezone.utc)
        if when.tzinfo is None:
            when = when.astimezone()
        tzo = int(when.utcoffset().total_seconds() // 60)
        # The file is written and fsynced in tmp/, and the message analysed, before the user's
        # lock is taken: the user's other sessions and processes wait only for the rename into
        # cur/ and the index row (the fsync is most of an APPEND). A file left in tmp/ by a
        # crash is never indexed and is swept after 36 hours.
        with self._lock:
            path = self._folder(folder, code="TRYCREATE").path
        try:
            base, tmp = maildir.write_tmp(path, data, when.timestamp())
        except FileNotFoundError:      # the folder went meanwhile: the locked path decides
            base, tmp = maildir.new_unique(), None
        try:
            cached = _analysed(data, base)
            with self._lock:
                result = self._append_locked(folder, data, want, when, tzo, base, tmp, cached)
        except BaseException:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):   # the new name on disk before the OK (power loss),
            maildir.fsync_dir(result[3] / "cur")   # outside the lock: others need not wait
        self._notify(result[2])
        return result[:2]

    def _append_locked(self, folder: str, data: bytes, want: set[str], when: _dt.datetime, tzo: int,
                       base: str, tmp: Path | None, cached: tuple) -> tuple[int, int, str, Path]:
        """append's part under the lock: the staged file into cur/, the index row."""
        f = self._folder(folder, code="TRYCREATE")
        self._sync(f)
        fn = maildir.cur_name(base, want, self._kwmap(f, want))
        try:
            if tmp is None:
                raise FileNotFoundError
            os.rename(f.path / "tmp" / base, f.path / "cur" / fn)   # (moved along by a RENAME)
        except FileNotFoundError:  # the folder was deleted and made again meanwhile
            base, fn = maildir.write_message(f.path, data, want, when.timestamp(),
                                             self._kwmap(f, want))
        uid, modseq = f.uidnext, f.highestmodseq + 1
        before = (uid, f.highestmodseq)
        with self._tx() as db:
            self._insert_message(db, f.id, uid, base, fn, want, data, int(when.timestamp()),
                                 tzo, modseq, True, cached)
            db.execute("UPDATE folders SET uidnext=?, highestmodseq=?, cur_mtime=? WHERE id=?",
                       (uid + 1, modseq, maildir.mtime_ns(f.path / "cur"), f.id))
        f.uidnext, f.highestmodseq = uid + 1, modseq
        self._uid_rekey(f, before, added=[uid])
        return f.uidvalidity, uid, f.name, f.path

    def copy(self, folder: str, uids: Sequence[int], dest: str, *, move: bool = False
             ) -> tuple[int, list[int], list[int]]:
        """COPY (or MOVE) messages; returns (dest UIDVALIDITY, source UIDs, new UIDs) in matching
        order, for COPYUID. Copies are hard links when possible (bytes and date unchanged)."""
        with self._lock:
            src = self._folder(folder)
            dst = self._folder(dest, code="TRYCREATE")
            same = dst.id == src.id   # MOVE into the folder itself: new UIDs (RFC 6851)
            self._sync(src)
            self._sync(dst)
            cols = ("uid, base, filename, flags, internaldate, tzoffset, envelope, bodystructure, "
                    "envelope_wire, body_wire, "
                    "hdr_subject, hdr_from, hdr_to, hdr_cc, hdr_bcc, hdr_message_id, hdr_date, size, vsize")
            rows = list(self._select(src, cols, uids))
            done_src: list[int] = []
            done_new: list[int] = []
            uid, dmod, smod = dst.uidnext, dst.highestmodseq, src.highestmodseq
            dkw = self._kwmap(dst, {k for r in rows for k in r[3].split()})
            # All or nothing across a crash (relay/store/copyjournal.py): journal, stage links in
            # dst/tmp/, commit the index, then rename into cur/ (and unlink MOVE sources).
            plan = []
            for row in rows:
                base, fname, flagtext = row[1], row[2], row[3]
                flags = set(flagtext.split())
                keep_name = maildir.cur_name(base, flags, dkw)
                if move and not same and not (dst.path / "cur" / keep_name).exists() and \
                        self._db.execute("SELECT 1 FROM messages WHERE folder=? AND base=?",
                                         (dst.id, base)).fetchone() is None:
                    newbase, newname = base, keep_name     # dst was just synced: the index knows
                else:
                    newbase = maildir.new_unique()
                    newname = maildir.cur_name(newbase, flags, dkw)
                plan.append((row, src.path / "cur" / fname, newbase, newname))
            journal = copyjournal.begin(dst.path, [(newname, str(sp) if move else "")
                                                   for _, sp, _, newname in plan])
            try:
                staged = [copyjournal.stage(journal, i, sp) for i, (_, sp, _, _) in enumerate(plan)]
            except BaseException:
                copyjournal.abort(journal)
                raise
            committed = False
            try:
                with self._tx() as db:
                    for ok, ((suid, base, fname, flagtext, idate, tzo, *cached, size, vsize), srcpath, newbase,
                             newname) in zip(staged, plan):
                        if not ok:
                            continue   # the source file vanished meanwhile
                        flags = set(flagtext.split())
                        dmod += 1
                        _note_keywords(db, dst.id, flags)
                        db.execute("INSERT INTO messages (folder, uid, base, filename, flags, size, "
                                   "vsize, internaldate, tzoffset, modseq, recent, envelope, "
                                   "bodystructure, envelope_wire, body_wire, hdr_subject, hdr_from, "
                                   "hdr_to, hdr_cc, hdr_bcc, hdr_message_id, hdr_date) "
                                   "VALUES (?,?,?,?,?,?,?,?,?,?,1,?,?,?,?,?,?,?,?,?,?,?)",
                                   (dst.id, uid, newbase, newname, flagtext, size, vsize, idate, tzo, dmod,
                                    *cached))
                        if move:
                            if same:        # one MODSEQ counter for the one folder
                                dmod += 1
                                smod = dmod
                            else:
                                smod += 1
                            db.execute("DELETE FROM messages WHERE folder=? AND uid=?", (src.id, suid))
                            db.execute("INSERT OR REPLACE INTO expunged VALUES (?, ?, ?)", (src.id, suid, smod))
                        done_src.append(suid)
                        done_new.append(uid)
                        uid += 1
                    db.execute("UPDATE folders SET uidnext=?, highestmodseq=?, cur_mtime=? WHERE id=?",
                               (uid, dmod, maildir.mtime_ns(dst.path / "cur"), dst.id))
                    if move and not same:
                        db.execute("UPDATE folders SET highestmodseq=?, cur_mtime=? WHERE id=?",
                                   (smod, maildir.mtime_ns(src.path / "cur"), src.id))
                committed = True
            finally:
                if not committed:
                    copyjournal.abort(journal)
            copyjournal.finish(journal)
            if src.id in self._pending and done_new:   # copied rows may be unanalysed too
                with self._tx() as db:
                    db.execute("INSERT OR REPLACE INTO meta VALUES (?, '1')", (f"lazy:{dst.id}",))
                self._pending.add(dst.id)
            with self._tx() as db:   # the renames changed cur/: remember its new mtime
                db.execute("UPDATE folders SET cur_mtime=? WHERE id=?", (maildir.mtime_ns(dst.path / "cur"), dst.id))
                if move and not same:
                    db.execute("UPDATE folders SET cur_mtime=? WHERE id=?",
                               (maildir.mtime_ns(src.path / "cur"), src.id))
            result = (dst.uidvalidity, done_src, done_new)
        if done_new:
            self._notify(dst.name, *([src.name] if move else []))
        return result

    def expunge(self, folder: str, uids: Sequence[int] | None = None, *, force: bool = False
                ) -> list[int]:
        """Remove messages flagged \\Deleted (only among ``uids`` when given; with ``force``
        every listed message, flagged or not, as POP3's UPDATE state needs). Returns the UIDs
        removed, ascending."""
        removed: list[int] = []
        with self._lock:
            f = self._folder(folder)
            self._sync(f)
            modseq = f.highestmodseq
            before = (f.uidnext, modseq)
            rows = list(self._select(f, "uid, filename, flags", uids))
            with self._tx() as db:
                for uid, fname, flagtext in rows:
                    if not force and "\\Deleted" not in flagtext.split():
                        continue
                    try:
                        os.unlink(f.path / "cur" / fname)
                    except FileNotFoundError:
                        pass
                    modseq += 1
                    db.execute("DELETE FROM messages WHERE folder=? AND uid=?", (f.id, uid))
                    db.execute("INSERT OR REPLACE INTO expunged VALUES (?, ?, ?)", (f.id, uid, modseq))
                    removed.append(uid)
                db.execute("UPDATE folders SET highestmodseq=?, cur_mtime=? WHERE id=?",
                           (modseq, maildir.mtime_ns(f.path / "cur"), f.id))
            f.highestmodseq = modseq
            self._uid_rekey(f, before, removed=removed)
        if removed:
            self._notify(f.name)
        return removed

    def changes_since(self, folder: str, modseq: int) -> tuple[list[MessageRecord], list[int]]:
        """(records whose MODSEQ > modseq, UIDs expunged after modseq) — for CONDSTORE/QRESYNC."""
        with self._lock:
            f = self._folder(folder)
            self._sync(f)
            recs = [_record(r) for r in self._db.execute(
                # INDEXED BY: with ORDER BY uid SQLite would scan the whole folder by primary key
                f"SELECT {_ROW} FROM messages INDEXED BY messages_modseq WHERE folder=? AND modseq>? "
                "ORDER BY uid", (f.id, modseq))]
            gone = [r[0] for r in self._db.execute(
                "SELECT uid FROM expunged WHERE folder=? AND modseq>? ORDER BY uid", (f.id, modseq))]
            return recs, gone


_INSERT = ("INSERT INTO messages (folder, uid, base, filename, flags, size, vsize, "
           "internaldate, tzoffset, modseq, recent, envelope, bodystructure, "
           "envelope_wire, body_wire, hdr_subject, "
           "hdr_from, hdr_to, hdr_cc, hdr_bcc, hdr_message_id, hdr_date, hdr_references) "
           "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")


def _in_sorted(uids: Sequence[int], uid: int) -> bool:
    i = bisect.bisect_left(uids, uid)
    return i < len(uids) and uids[i] == uid


def _like_prefix(name: str) -> str:
    esc = name.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return esc + SEPARATOR + "%"

