"""The local header cache: SQLite (WAL) with an FTS5 index, so big folders paint instantly and
local search needs no network.

Rows are keyed by (account, folder, UIDVALIDITY, UID); when a folder's UIDVALIDITY changes every
row of that folder is dropped (the server renumbered it). The schema of ``messages`` and
``messages_fts`` is a contract with tui_mail.mail.search, which compiles queries to SQL over it:
keep it exactly as below. The ``folders`` table holds per-folder sync state (UIDVALIDITY,
HIGHESTMODSEQ, UIDNEXT) and the last known ordered UID list per sort key, so a warm start can
show a window before asking the server anything.

Thread safety: one connection (check_same_thread off) guarded by a lock; writes are batched in
one transaction per call.
"""

from __future__ import annotations

import sqlite3
import threading
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tui_mail.errors import MailError
from tui_mail.store.base import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, MessageSummary, ThreadFields
from tui_mail.store.private import private_dir, private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    rowid INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    folder TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    date INTEGER,               -- unix seconds or NULL
    from_name TEXT,
    from_addr TEXT,
    to_addrs TEXT,
    cc_addrs TEXT,
    subject TEXT,
    flags TEXT,                 -- space-joined
    seen INTEGER,
    flagged INTEGER,
    answered INTEGER,
    deleted INTEGER,
    draft INTEGER,
    size INTEGER,
    has_attachment INTEGER,
    message_id TEXT,
    in_reply_to TEXT,
    refs TEXT,
    UNIQUE(account, folder, uid)
);
CREATE INDEX IF NOT EXISTS messages_by_date ON messages(account, folder, date);
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
    subject, sender, recipients, body,
    tokenize='unicode61 remove_diacritics 2'
);
CREATE TABLE IF NOT EXISTS folders (
    account TEXT NOT NULL,
    folder TEXT NOT NULL,
    uidvalidity INTEGER,
    highestmodseq INTEGER,
    uidnext INTEGER,
    PRIMARY KEY(account, folder)
);
CREATE TABLE IF NOT EXISTS folder_order (
    account TEXT NOT NULL,
    folder TEXT NOT NULL,
    sort TEXT NOT NULL,
    uids BLOB NOT NULL,         -- array('q') of UIDs, oldest first
    state TEXT,                 -- the folder state the order was taken at (uidvalidity/uidnext/exists)
    PRIMARY KEY(account, folder, sort)
);
"""

_COLUMNS = ("account", "folder", "uidvalidity", "uid", "date", "from_name", "from_addr",
            "to_addrs", "cc_addrs", "subject", "flags", "seen", "flagged", "answered",
            "deleted", "draft", "size", "has_attachment", "message_id", "in_reply_to", "refs")
_UPSERT = (f"INSERT INTO messages ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
           "ON CONFLICT(account, folder, uid) DO UPDATE SET "
           + ", ".join(f"{c}=excluded.{c}" for c in _COLUMNS[2:]))
_SELECT = ("SELECT uid, date, from_name, from_addr, to_addrs, cc_addrs, subject, flags, size, "
           "has_attachment, message_id, in_reply_to, refs FROM messages")
_CHUNK = 500   # SQLite host parameters per IN (...) list stay well below the 32766 limit


@dataclass(frozen=True)
class FolderSync:
    """What the cache knows of a folder's server state."""

    uidvalidity: int | None
    highestmodseq: int | None
    uidnext: int | None


class CacheError(MailError):
    """The cache database cannot be opened or written (disk full, corrupt file…)."""


def _flag_row(flags: frozenset[str]) -> tuple:
    return (" ".join(sorted(flags)), int(SEEN in flags), int(FLAGGED in flags),
            int(ANSWERED in flags), int(DELETED in flags), int(DRAFT in flags))


def _chunks(seq: Sequence, n: int = _CHUNK):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


class HeaderCache:
    """SQLite header cache for every account; ``path`` may be ":memory:" for tests."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":      # headers and bodies' words: private (0700 dir, 0600 file)
            private_dir(Path(self.path).parent)
            private_file(self.path)
        self._db = None
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA temp_store=MEMORY")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as e:
            if self._db is not None:
                self._db.close()
            raise CacheError(f"cannot open the header cache {self.path}: {e} (delete the file to "
                             "rebuild it)") from None
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None  # type: ignore[assignment]

    def __enter__(self) -> "HeaderCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- folder sync state ------------------------------------------------------------
    def folder_sync(self, account: str, folder: str) -> FolderSync | None:
        with self._lock:
            row = self._db.execute(
                "SELECT uidvalidity, highestmodseq, uidnext FROM folders WHERE account=? AND folder=?",
                (account, folder)).fetchone()
        return FolderSync(*row) if row else None

    def check_uidvalidity(self, account: str, folder: str, uidvalidity: int) -> bool:
        """Record the folder's UIDVALIDITY; when it differs from the cached one, drop every
        cached row of the folder. Returns True when rows were dropped."""
        with self._lock, self._tx():
            row = self._db.execute("SELECT uidvalidity FROM folders WHERE account=? AND folder=?",
                                   (account, folder)).fetchone()
            dropped = False
            if row and row[0] is not None and row[0] != uidvalidity:
                self._drop_rows(account, folder)
                dropped = True
            if row is None:
                self._db.execute("INSERT INTO folders(account, folder, uidvalidity) VALUES (?,?,?)",
                                 (account, folder, uidvalidity))
            elif row[0] != uidvalidity:
                self._db.execute("UPDATE folders SET uidvalidity=?, highestmodseq=NULL, uidnext=NULL "
                                 "WHERE account=? AND folder=?", (uidvalidity, account, folder))
            return dropped

    def set_sync(self, account: str, folder: str, *, highestmodseq: int | None = None,
                 uidnext: int | None = None) -> None:
        with self._lock:
            self._db.execute("UPDATE folders SET highestmodseq=COALESCE(?, highestmodseq), "
                             "uidnext=COALESCE(?, uidnext) WHERE account=? AND folder=?",
                             (highestmodseq, uidnext, account, folder))

    def drop_folder(self, account: str, folder: str) -> None:
        """Forget a folder entirely (deleted or renamed on the server)."""
        with self._lock, self._tx():
            self._drop_rows(account, folder)
            self._db.execute("DELETE FROM folders WHERE account=? AND folder=?", (account, folder))

    def _drop_rows(self, account: str, folder: str) -> None:
        self._db.execute("DELETE FROM messages_fts WHERE rowid IN "
                         "(SELECT rowid FROM messages WHERE account=? AND folder=?)", (account, folder))
        self._db.execute("DELETE FROM messages WHERE account=? AND folder=?", (account, folder))
        self._db.execute("DELETE FROM folder_order WHERE account=? AND folder=?", (account, folder))

    # --- the ordered UID list ---------------------------------------------------------
    def save_order(self, account: str, folder: str, sort: str, uids: Sequence[int],
                   state: str | None = None) -> None:
        """Remember a folder's ordered UID list; ``state`` says which server state it belongs
        to (e.g. "uidvalidity/uidnext/exists") so it can be reused only while that holds."""
        blob = array("q", uids).tobytes()
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO folder_order VALUES (?,?,?,?,?)",
                             (account, folder, sort, blob, state))

    def load_order(self, account: str, folder: str, sort: str,
                   state: str | None = None) -> tuple[int, ...] | None:
        """The saved order (None when there is none, or when ``state`` is given and differs)."""
        with self._lock:
            row = self._db.execute("SELECT uids, state FROM folder_order WHERE account=? AND folder=? "
                                   "AND sort=?", (account, folder, sort)).fetchone()
        if row is None or (state is not None and row[1] != state):
            return None
        a = array("q")
        a.frombytes(row[0])
        return tuple(a)

    # --- summaries --------------------------------------------------------------------
    def put(self, account: str, folder: str, uidvalidity: int,
            items: Iterable[tuple[MessageSummary, str | None]]) -> int:
        """Insert or update summaries with their body text for the index (None: not fetched
        yet, see ``unindexed_uids``), in one transaction. Returns how many were written."""
        rows, fts = [], []
        for s, body in items:
            ts = int(s.date.timestamp()) if s.date else None
            rows.append((account, folder, uidvalidity, s.uid, ts, s.from_name, s.from_addr, s.to,
                         s.cc, s.subject, *_flag_row(s.flags), s.size, int(s.has_attachment),
                         s.message_id, s.in_reply_to, " ".join(s.references)))
            # None: body not indexed yet (""); indexed but empty: " " (tells them apart)
            fts.append((s.subject, f"{s.from_name} {s.from_addr}", f"{s.to} {s.cc}",
                        "" if body is None else (body or " ")))
        if not rows:
            return 0
        with self._lock, self._tx():
            self._db.executemany(_UPSERT, rows)
            rowids: dict[int, int] = {}
            uids = [r[3] for r in rows]
            for part in _chunks(uids):
                q = (f"SELECT uid, rowid FROM messages WHERE account=? AND folder=? AND uid IN "
                     f"({','.join('?' * len(part))})")
                rowids.update(self._db.execute(q, (account, folder, *part)).fetchall())
            ids = [rowids[u] for u in uids]
            for part in _chunks(ids):
                self._db.execute(f"DELETE FROM messages_fts WHERE rowid IN ({','.join('?' * len(part))})",
                                 part)
            self._db.executemany(
                "INSERT INTO messages_fts(rowid, subject, sender, recipients, body) VALUES (?,?,?,?,?)",
                [(rid, *f) for rid, f in zip(ids, fts)])
        return len(rows)

    def unindexed_uids(self, account: str, folder: str) -> list[int]:
        """UIDs cached without their body text indexed (fetched for the window first)."""
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT m.uid FROM messages m JOIN messages_fts f ON f.rowid = m.rowid "
                "WHERE m.account=? AND m.folder=? AND f.body = '' ORDER BY m.uid", (account, folder))]

    def set_body_text(self, account: str, folder: str, uid: int, body: str) -> None:
        """Index a message's text once it has been fetched (for body: searches)."""
        with self._lock:
            self._db.execute("UPDATE messages_fts SET body=? WHERE rowid=(SELECT rowid FROM messages "
                             "WHERE account=? AND folder=? AND uid=?)", (body, account, folder, uid))

    def get(self, account: str, folder: str, uids: Sequence[int]) -> dict[int, MessageSummary]:
        out: dict[int, MessageSummary] = {}
        uids = list(uids)
        with self._lock:
            for part in _chunks(uids):
                q = f"{_SELECT} WHERE account=? AND folder=? AND uid IN ({','.join('?' * len(part))})"
                for row in self._db.execute(q, (account, folder, *part)):
                    out[row[0]] = _summary(row)
        return out

    def thread_fields(self, account: str, folder: str) -> list[ThreadFields]:
        """Every cached message of ``folder`` as threading needs it (one query, light rows)."""
        with self._lock:
            return [ThreadFields(uid, date, subject or "", mid or "", irt or "", refs or "")
                    for uid, date, subject, mid, irt, refs in self._db.execute(
                        "SELECT uid, date, subject, message_id, in_reply_to, refs FROM messages "
                        "WHERE account=? AND folder=?", (account, folder))]

    def contact_fields(self, account: str, folder: str, chunk: int = 5000) -> Iterator[tuple]:
        """``(from_name, from_addr, to, cc, date)`` of every cached message of ``folder``
        (for the contacts index, tui_mail.address_book), read ``chunk`` rows at a time: all
        100,000 rows of a big folder at once held ~30 MB while the index was ranked, and the
        lock is held per chunk only (a warm start's read is never queued behind the scan)."""
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT rowid, from_name, from_addr, to_addrs, cc_addrs, date FROM messages "
                    "WHERE account=? AND folder=? AND rowid > ? ORDER BY rowid LIMIT ?",
                    (account, folder, last, chunk)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            for row in rows:
                yield row[1:]

    def cached_uids(self, account: str, folder: str) -> set[int]:
        with self._lock:
            return {r[0] for r in self._db.execute(
                "SELECT uid FROM messages WHERE account=? AND folder=?", (account, folder))}

    def count(self, account: str, folder: str) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM messages WHERE account=? AND folder=?",
                                    (account, folder)).fetchone()[0]

    def dates(self, account: str, folder: str) -> dict[int, int | None]:
        """uid → unix date, for sorting when the server has no SORT."""
        with self._lock:
            return dict(self._db.execute("SELECT uid, date FROM messages WHERE account=? AND folder=?",
                                         (account, folder)))

    def sort_rows(self, account: str, folder: str) -> list[tuple]:
        """(uid, date, from_addr, subject, size) of every cached message of ``folder``, for
        sorting on the client (tui_mail.store.sorting) when the server has no SORT."""
        with self._lock:
            return list(self._db.execute(
                "SELECT uid, date, from_addr, subject, size FROM messages WHERE account=? AND folder=?",
                (account, folder)))

    def update_flags(self, account: str, folder: str, flags: dict[int, frozenset[str]]) -> None:
        with self._lock, self._tx():
            self._db.executemany(
                "UPDATE messages SET flags=?, seen=?, flagged=?, answered=?, deleted=?, draft=? "
                "WHERE account=? AND folder=? AND uid=?",
                [(*_flag_row(f), account, folder, uid) for uid, f in flags.items()])

    def remove(self, account: str, folder: str, uids: Iterable[int]) -> None:
        uids = list(uids)
        with self._lock, self._tx():
            for part in _chunks(uids):
                marks = ",".join("?" * len(part))
                self._db.execute(f"DELETE FROM messages_fts WHERE rowid IN (SELECT rowid FROM messages "
                                 f"WHERE account=? AND folder=? AND uid IN ({marks}))",
                                 (account, folder, *part))
                self._db.execute(f"DELETE FROM messages WHERE account=? AND folder=? AND uid IN ({marks})",
                                 (account, folder, *part))

    # --- search -----------------------------------------------------------------------
    def query(self, where: str, params: Sequence, account: str | None = None,
              folder: str | None = None, limit: int | None = None) -> list[tuple[str, int]]:
        """(folder, uid) of messages matching an SQL condition over ``messages m`` (and
        ``messages_fts`` through a subquery on ``m.rowid``), newest first. This is the form
        tui_mail.mail.search.to_sql compiles to."""
        conds, args = [f"({where})" if where.strip() else "1"], list(params)
        if account is not None:
            conds.append("m.account=?")
            args.append(account)
        if folder is not None:
            conds.append("m.folder=?")
            args.append(folder)
        sql = (f"SELECT m.folder, m.uid FROM messages m WHERE {' AND '.join(conds)} "
               "ORDER BY m.date DESC, m.uid DESC")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            try:
                return [(f, u) for f, u in self._db.execute(sql, args)]
            except sqlite3.Error as e:
                raise CacheError(f"local search failed: {e}") from None

    def search(self, query: str, account: str | None = None, folder: str | None = None,
               limit: int | None = None) -> list[tuple[str, int]]:
        """Compile ``query`` (tui_mail.mail.search language) to SQL and run it."""
        from tui_mail.mail.search import to_sql  # the search engineer's compiler

        where, params = to_sql(query)
        return self.query(where, params, account, folder, limit)

    # --- helpers ----------------------------------------------------------------------
    def _tx(self):
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN")

    def __exit__(self, exc_type, *exc):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _summary(row) -> MessageSummary:
    (uid, date, from_name, from_addr, to, cc, subject, flags, size, att, mid, irt, refs) = row
    return MessageSummary(
        uid=uid, date=datetime.fromtimestamp(date, timezone.utc) if date is not None else None,
        from_name=from_name or "", from_addr=from_addr or "", to=to or "", cc=cc or "",
        subject=subject or "", flags=frozenset(flags.split()) if flags else frozenset(),
        size=size or 0, has_attachment=bool(att), message_id=mid or "", in_reply_to=irt or "",
        references=tuple(refs.split()) if refs else ())
