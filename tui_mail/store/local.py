"""A MailStore over a Maildir++ directory on disk: the store of POP3 accounts and the Outbox.

Layout: the root directory is the first folder (``INBOX``, or e.g. ``Outbox``), every other
folder is a ``.Name`` subdirectory (``a/b`` → ``.a.b``) with ``cur/ new/ tmp/`` and a
``maildirfolder`` marker, as Dovecot and Courier lay it out, so other tools can read it.

Why an index: Maildir has no UIDs, but the UI identifies messages by ``(folder, uid)`` exactly as
with IMAP. A small SQLite file beside the mail (``.tui-mail-index.sqlite``) keeps, per folder, a
UIDVALIDITY and the next UID, and per message its UID, its Maildir unique name (the file name up
to ``:``), its current file name and the summary fields the message list shows. The index is
rebuilt from the files whenever they change (new/ and cur/ directory mtimes are compared), so a
message dropped in by another program appears with a fresh UID, and a lost index only costs a
new UIDVALIDITY.

Rules kept: a message is never rewritten in place. New files are written to tmp/, fsynced and
renamed into new/ (or cur/ when they carry flags); flag changes and moves are renames. The
standard flags live in the file name (``:2,DFPRST``); keywords, which Maildir spells per
program, live only in the index.
"""

from __future__ import annotations

import contextlib
import email
import itertools
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path

from tui_mail.errors import FolderError, MailError, MessageGone, ProtocolError
from tui_mail.mail.charsets import decode_words
from tui_mail.store.base import (ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, Cancel, Change,
                                 FolderInfo, FolderState, MailStore, MessageSummary, Progress)
from tui_mail.store.private import create_private, private_dir, private_file, private_tree

log = logging.getLogger(__name__)

INDEX_NAME = ".tui-mail-index.sqlite"
SEARCH_INDEX_NAME = ".tui-mail-search.sqlite"
SEARCH_ACCOUNT = "local"
DELIMITER = "/"

#: Maildir info letters (sorted as the spec wants them written) ↔ IMAP flags.
FLAG_LETTERS = {"D": DRAFT, "F": FLAGGED, "P": "$Forwarded", "R": ANSWERED, "S": SEEN, "T": DELETED}
LETTER_FOR = {v: k for k, v in FLAG_LETTERS.items()}

#: Folders named like this get the role without configuration (case-insensitive).
COMMON_ROLES = {"sent": "sent", "sent items": "sent", "sent messages": "sent", "drafts": "drafts",
                "trash": "trash", "deleted items": "trash", "junk": "junk", "spam": "junk",
                "archive": "archive", "archives": "archive", "outbox": "outbox"}

SORT_COLUMNS = {"date": "coalesce(date, 0), uid", "arrival": "uid", "from": "lower(from_name), uid",
                "subject": "lower(subject), uid", "size": "size, uid"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS folders (
    name TEXT PRIMARY KEY, uidvalidity INTEGER NOT NULL, uidnext INTEGER NOT NULL,
    stamp TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS messages (
    folder TEXT NOT NULL, uid INTEGER NOT NULL, key TEXT NOT NULL, filename TEXT NOT NULL,
    keywords TEXT NOT NULL DEFAULT '', date REAL, from_name TEXT, from_addr TEXT, to_ TEXT,
    cc TEXT, subject TEXT, size INTEGER, has_attachment INTEGER, message_id TEXT,
    in_reply_to TEXT, refs TEXT,
    PRIMARY KEY (folder, uid), UNIQUE (folder, key));
"""

_counter = itertools.count()
_HEADER_PARSER = BytesParser()      # compat32 (email.policy, ~5 ms to import, only when needed)


def unique_name() -> str:
    """A Maildir unique name: time, microseconds, pid, a counter and the host."""
    now = time.time()
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return f"{int(now)}.M{int(now * 1e6) % 1_000_000}P{os.getpid()}Q{next(_counter)}.{host}"


def split_name(filename: str) -> tuple[str, frozenset[str]]:
    """``"123.M1P2.host,S=9:2,RS"`` → (unique key, {\\Answered, \\Seen})."""
    key, sep, info = filename.partition(":")
    flags: set[str] = set()
    if sep and info.startswith("2,"):
        flags = {FLAG_LETTERS[c] for c in info[2:] if c in FLAG_LETTERS}
    return key, frozenset(flags)


def info_suffix(flags: Iterable[str]) -> str:
    return ":2," + "".join(sorted(LETTER_FOR[f] for f in flags if f in LETTER_FOR))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(tmp_dir: Path, data: bytes) -> Path:
    """Write ``data`` to a new file in ``tmp_dir``, fsynced; returns its path."""
    path = tmp_dir / unique_name()
    with os.fdopen(create_private(path), "wb") as f:      # 0600: mail is private
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return path


def _decode(value) -> str:
    """A raw header value with RFC 2047 words decoded, unfolded; never raises."""
    if value is None:
        return ""
    text = str(value)
    if "=?" in text:      # the reader's and preview's decoder: one display path for subjects
        text = decode_words(text)[0]
    return " ".join(text.split())


def summary_fields(data: bytes) -> dict:
    """The message-list fields of one message from its header block only (fast: the index is
    built from every file of a folder), never raising on a malformed message."""
    head = _HEADER_PARSER.parsebytes(data, headersonly=True)
    when = None
    raw_date = head.get("Date")
    if raw_date:
        try:
            d = parsedate_to_datetime(str(raw_date))
            when = (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            when = None
    froms = getaddresses([str(head.get("From", ""))])
    from_name, from_addr = froms[0] if froms else ("", "")
    ctype = head.get_content_type()
    disposition = str(head.get("Content-Disposition", "")).lower()
    has_attachment = ctype == "multipart/mixed" or disposition.startswith("attachment") or (
        not ctype.startswith(("text/", "multipart/")) and ctype != "message/rfc822")
    return {"date": when, "from_name": _decode(from_name) or from_addr, "from_addr": from_addr,
            "to_": _decode(head.get("To")), "cc": _decode(head.get("Cc")),
            "subject": _decode(head.get("Subject")), "size": len(data),
            "has_attachment": int(has_attachment), "message_id": _decode(head.get("Message-ID")),
            "in_reply_to": _decode(head.get("In-Reply-To")),
            "refs": _decode(head.get("References"))}


def read_header_block(path: Path, limit: int = 1 << 20) -> tuple[bytes, int]:
    """(the header block of a message file, the file's size) without reading a big body."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = b""
        while len(head) < limit:
            chunk = f.read(16384)
            if not chunk:
                break
            head += chunk
            if b"\n\n" in head or b"\r\n\r\n" in head:
                break
    return head, size


def fields_of_file(path: Path) -> dict:
    head, size = read_header_block(path)
    fields = summary_fields(head)
    fields["size"] = size
    return fields


def body_text(data: bytes) -> str:
    """The text to index for body: searches. Fast path (compat32, no header objects): the first
    text/plain part that is not an attachment; anything else (HTML only, odd structure) goes
    through tui_mail.mail.parse, which converts HTML to text."""
    msg = email.message_from_bytes(data)       # compat32
    for part in msg.walk():
        if part.get_content_type() == "text/plain" and \
                not str(part.get("Content-Disposition", "")).lower().startswith("attachment"):
            payload = part.get_payload(decode=True) or b""
            charset = part.get_content_charset() or "utf-8"
            try:
                return payload.decode(charset, "replace")
            except LookupError:
                return payload.decode("utf-8", "replace")
    from tui_mail.mail.parse import parse_message

    return parse_message(data).text


class LocalStore(MailStore):
    """Mail in a Maildir++ tree at ``root`` (see the module docstring).

    ``root_name`` is the name shown for the root folder ("INBOX"; the Outbox store uses
    "Outbox"); ``roles`` maps roles to folder names (as in config) and overrides the
    common-name guess."""

    def __init__(self, root: str | os.PathLike, *, root_name: str = "INBOX",
                 roles: dict[str, str] | None = None, poll_interval: float = 1.0):
        self.root = Path(root)
        self.root_name = root_name
        self.roles = dict(roles or {})
        self.poll_interval = poll_interval
        self.trace = None
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._watch_thread: threading.Thread | None = None
        self._watch_stop = threading.Event()
        self._search = None
        self._search_db: sqlite3.Connection | None = None
        self._search_stamps: dict[str, tuple[str, int]] = {}
        self._changes = 0   # bumped by every change made through this store

    # --- lifecycle ---------------------------------------------------------------------
    def connect(self) -> None:
        with self._lock:
            if self._db is not None:
                return
            try:
                private_tree(self.root)          # 0700/0600; fixes stores made before
                self._make_folder_dirs(self.root, marker=False)
                db = sqlite3.connect(private_file(self.root / INDEX_NAME), check_same_thread=False,
                                     isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
            except (OSError, sqlite3.Error) as e:
                raise MailError(f"Cannot open the local mail store {self.root}: {e}") from e
            self._db = db

    def close(self) -> None:
        self.stop_watch()
        with self._lock:
            db, self._db = self._db, None
            if db is not None:
                db.close()
            search, self._search = self._search, None
            if search is not None:
                search.close()
            reader, self._search_db = self._search_db, None
            if reader is not None:
                reader.close()

    def __enter__(self) -> "LocalStore":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.connect()
        assert self._db is not None
        return self._db

    @contextlib.contextmanager
    def _tx(self):
        """One write transaction (BEGIN IMMEDIATE: UID assignment is serialised with other
        processes using the same Maildir, e.g. the TUI and `tui-mail send`); nests."""
        db = self.db
        if db.in_transaction:
            yield db
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # --- paths -------------------------------------------------------------------------
    def _is_root(self, folder: str) -> bool:
        return folder == self.root_name or (self.root_name.upper() == "INBOX" and folder.upper() == "INBOX")

    def _canonical(self, folder: str) -> str:
        return self.root_name if self._is_root(folder) else folder

    def folder_path(self, folder: str) -> Path:
        if self._is_root(folder):
            return self.root
        parts = folder.split(DELIMITER)
        if not folder or any(not p or "." in p or p in ("cur", "new", "tmp") for p in parts):
            raise FolderError(f"Folder name {folder!r} is not allowed here: use names without "
                              "dots or empty parts.")
        return self.root / ("." + ".".join(parts))

    def _existing(self, folder: str) -> Path:
        if self._db is None:  # opened on first use, like a store the UI connected
            self.connect()
        path = self.folder_path(folder)
        if not (path / "cur").is_dir():
            raise FolderError(f"There is no folder {folder!r} in {self.root}.")
        return path

    def _make_folder_dirs(self, path: Path, marker: bool = True) -> None:
        for sub in ("cur", "new", "tmp"):
            private_dir(path / sub)
        if marker and not (path / "maildirfolder").exists():
            private_file(path / "maildirfolder")

    # --- folders -----------------------------------------------------------------------
    def role_of(self, folder: str) -> str | None:
        folder = self._canonical(folder)
        for role, name in self.roles.items():
            if self._canonical(name) == folder:
                return role
        if self._is_root(folder):
            guess = COMMON_ROLES.get(self.root_name.lower(), "inbox")
        else:
            guess = COMMON_ROLES.get(folder.lower())
        return None if guess in self.roles else guess   # a configured folder owns that role

    def list_folders(self, with_counts: bool = True) -> list[FolderInfo]:
        with self._lock:
            if self._db is None:
                self.connect()
            names = [self.root_name]
            try:
                entries = sorted(os.listdir(self.root))
            except OSError as e:
                raise MailError(f"Cannot read the local mail store {self.root}: {e}") from e
            for entry in entries:
                if entry.startswith(".") and entry not in (".", "..", INDEX_NAME) \
                        and (self.root / entry / "cur").is_dir():
                    names.append(entry[1:].replace(".", DELIMITER))
            out = []
            for name in names:
                total = unread = None
                if with_counts:
                    self._sync(name)
                    rows = self.db.execute("SELECT filename FROM messages WHERE folder=?", (name,)).fetchall()
                    total = len(rows)
                    unread = sum(1 for (fn,) in rows if SEEN not in split_name(fn)[1])
                out.append(FolderInfo(name=name, delimiter=DELIMITER, role=self.role_of(name),
                                      total=total, unread=unread))
            return out

    def create_folder(self, name: str) -> None:
        with self._lock:
            if self._db is None:
                self.connect()
            path = self.folder_path(name)
            if self._is_root(name) or path.exists():
                raise FolderError(f"The folder {name!r} already exists.")
            parts = name.split(DELIMITER)
            for i in range(1, len(parts)):  # parents too, as IMAP servers do
                parent = self.folder_path(DELIMITER.join(parts[:i]))
                if not parent.exists():
                    self._make_folder_dirs(parent)
            self._make_folder_dirs(path)
            fsync_dir(self.root)

    def ensure_folder(self, name: str) -> None:
        """Create ``name`` unless it exists."""
        with self._lock:
            if not (self.folder_path(name) / "cur").is_dir():
                self.create_folder(name)

    def rename_folder(self, old: str, new: str) -> None:
        with self._lock:
            if self._is_root(old):
                raise FolderError(f"The folder {old!r} cannot be renamed.")
            src = self._existing(old)
            dst = self.folder_path(new)
            if self._is_root(new) or dst.exists():
                raise FolderError(f"The folder {new!r} already exists.")
            children = [f.name for f in self.list_folders(with_counts=False)
                        if f.name.startswith(old + DELIMITER)]
            os.rename(src, dst)
            for child in children:
                os.rename(self.folder_path(child), self.folder_path(new + child[len(old):]))
            with self._tx() as db:
                for name in [old, *children]:
                    target = new + name[len(old):]
                    db.execute("UPDATE folders SET name=? WHERE name=?", (target, name))
                    db.execute("UPDATE messages SET folder=? WHERE folder=?", (target, name))
            for name in [old, *children]:
                self._forget_search(name)
            fsync_dir(self.root)

    def delete_folder(self, name: str) -> None:
        with self._lock:
            if self._is_root(name):
                raise FolderError(f"The folder {name!r} cannot be deleted.")
            path = self._existing(name)
            children = [f.name for f in self.list_folders(with_counts=False)
                        if f.name.startswith(name + DELIMITER)]
            if children:
                raise FolderError(f"The folder {name!r} has subfolders; delete them first.")
            import shutil
            shutil.rmtree(path)
            with self._tx():
                self.db.execute("DELETE FROM folders WHERE name=?", (name,))
                self.db.execute("DELETE FROM messages WHERE folder=?", (name,))
            self._forget_search(name)

    # --- index sync --------------------------------------------------------------------
    def _stamp(self, path: Path) -> str:
        """new/ and cur/ mtimes. Directory mtimes are coarse (a clock tick of a few ms), so a
        change in the last second is not trusted: "" forces the next call to look again."""
        mtimes = [os.stat(path / sub).st_mtime_ns for sub in ("new", "cur")]
        if time.time_ns() - max(mtimes) < 1_000_000_000:
            return ""
        return ":".join(map(str, mtimes))

    def _folder_row(self, folder: str) -> tuple[int, int, str]:
        row = self.db.execute("SELECT uidvalidity, uidnext, stamp FROM folders WHERE name=?",
                              (folder,)).fetchone()
        if row is None:
            row = (int(time.time()), 1, "")
            self.db.execute("INSERT INTO folders (name, uidvalidity, uidnext, stamp) VALUES (?,?,?,?)",
                            (folder, *row))
        return row

    def _sync(self, folder: str, force: bool = False) -> None:
        """Bring the index of ``folder`` in line with its files (cheap when nothing changed)."""
        folder = self._canonical(folder)
        path = self._existing(folder)
        stamp = self._stamp(path)
        if not force and stamp and stamp == self._folder_row(folder)[2]:
            return
        with self._tx() as db:
            _, uidnext, _ = self._folder_row(folder)   # re-read inside the lock
            now_stamp = self._stamp(path)
            on_disk: dict[str, str] = {}
            for sub in ("new", "cur"):
                for fn in os.listdir(path / sub):
                    if not fn.startswith("."):
                        on_disk[split_name(fn)[0]] = f"{sub}/{fn}"
            known = {key: (uid, fn) for uid, key, fn in
                     db.execute("SELECT uid, key, filename FROM messages WHERE folder=?", (folder,))}
            for key, (uid, fn) in known.items():
                if key not in on_disk:
                    db.execute("DELETE FROM messages WHERE folder=? AND uid=?", (folder, uid))
                elif on_disk[key] != fn:
                    db.execute("UPDATE messages SET filename=? WHERE folder=? AND uid=?",
                               (on_disk[key], folder, uid))
            for key in sorted(k for k in on_disk if k not in known):
                uidnext = self._index_file(folder, path, key, on_disk[key], uidnext)
            db.execute("UPDATE folders SET uidnext=?, stamp=? WHERE name=?", (uidnext, now_stamp, folder))

    def _index_file(self, folder: str, path: Path, key: str, filename: str, uid: int) -> int:
        """Add one file to the index as ``uid``; returns the next free UID."""
        try:
            fields = fields_of_file(path / filename)
        except FileNotFoundError:  # gone between listdir and read: the next sync sees it
            return uid
        self._insert_row(folder, uid, key, filename, frozenset(), fields)
        return uid + 1

    def _insert_row(self, folder: str, uid: int, key: str, filename: str, keywords: frozenset[str],
                    fields: dict) -> None:
        self.db.execute(
            "INSERT INTO messages (folder, uid, key, filename, keywords, date, from_name, from_addr,"
            " to_, cc, subject, size, has_attachment, message_id, in_reply_to, refs) VALUES"
            " (:folder,:uid,:key,:filename,:keywords,:date,:from_name,:from_addr,:to_,:cc,:subject,"
            ":size,:has_attachment,:message_id,:in_reply_to,:refs)",
            {**fields, "folder": folder, "uid": uid, "key": key, "filename": filename,
             "keywords": " ".join(sorted(keywords))})

    def _file_of(self, folder: str, uid: int) -> tuple[Path, str, str, frozenset[str]]:
        """(folder path, key, filename, keywords) of a message; MessageGone when it is not there."""
        path = self._existing(folder)
        for attempt in (0, 1):
            row = self.db.execute("SELECT key, filename, keywords FROM messages WHERE folder=? AND uid=?",
                                  (folder, uid)).fetchone()
            if row and (path / row[1]).exists():
                return path, row[0], row[1], frozenset(row[2].split())
            self._sync(folder, force=True)
        raise MessageGone(f"Message {uid} is no longer in {folder!r} (moved or deleted elsewhere).")

    # --- message lists -----------------------------------------------------------------
    def folder_state(self, folder: str, sort: str = "date") -> FolderState:
        with self._lock:
            folder = self._canonical(folder)
            self._sync(folder)
            order = SORT_COLUMNS.get(sort)
            if order is None:
                raise MailError(f"Unknown sort {sort!r}: use one of {', '.join(SORT_COLUMNS)}.")
            uids = tuple(u for (u,) in self.db.execute(
                f"SELECT uid FROM messages WHERE folder=? ORDER BY {order}", (folder,)))
            uidvalidity = self._folder_row(folder)[0]
            return FolderState(folder=folder, uidvalidity=uidvalidity, uids=uids)

    def keys(self, folder: str) -> dict[int, str]:
        """uid → Maildir unique name (stable across index rebuilds, unlike the UID)."""
        with self._lock:
            folder = self._canonical(folder)
            self._sync(folder)
            return dict(self.db.execute("SELECT uid, key FROM messages WHERE folder=?", (folder,)))

    def uidvalidity(self, folder: str) -> int:
        with self._lock:
            self._existing(folder)
            return self._folder_row(self._canonical(folder))[0]

    def _summaries(self, folder: str, uids: Sequence[int]) -> dict[int, MessageSummary]:
        out: dict[int, MessageSummary] = {}
        wanted = list(uids)
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(
                    "SELECT uid, filename, keywords, date, from_name, from_addr, to_, cc, subject,"
                    " size, has_attachment, message_id, in_reply_to, refs FROM messages"
                    f" WHERE folder=? AND uid IN ({marks})", (folder, *chunk)):
                (uid, fn, kw, date, from_name, from_addr, to, cc, subject, size, att, mid, irt,
                 refs) = row
                flags = split_name(fn.split("/", 1)[1])[1] | frozenset(kw.split())
                when = datetime.fromtimestamp(date, timezone.utc) if date is not None else None
                out[uid] = MessageSummary(
                    uid=uid, date=when, from_name=from_name or "", from_addr=from_addr or "",
                    to=to or "", cc=cc or "", subject=subject or "", flags=flags, size=size or 0,
                    has_attachment=bool(att), message_id=mid or "", in_reply_to=irt or "",
                    references=tuple((refs or "").split()))
        return out

    def cached_summaries(self, folder: str, uids: Sequence[int]) -> dict[int, MessageSummary]:
        with self._lock:
            folder = self._canonical(folder)
            self._existing(folder)
            return self._summaries(folder, uids)

    def summaries(self, folder: str, uids: Sequence[int]) -> dict[int, MessageSummary]:
        with self._lock:
            folder = self._canonical(folder)
            self._sync(folder)
            return self._summaries(folder, uids)

    def fill_cache(self, folder: str, progress: Callable[[Progress], None] | None = None,
                   cancel: Cancel | None = None, chunk: int = 1000) -> None:
        # Every summary is indexed when a file is first seen, so filling is one sync.
        if cancel:
            cancel.check()
        with self._lock:
            folder = self._canonical(folder)
            self._sync(folder)
            (n,) = self.db.execute("SELECT count(*) FROM messages WHERE folder=?", (folder,)).fetchone()
        if progress:
            progress(Progress(done=n, total=n))

    # --- one message -------------------------------------------------------------------
    def fetch_message(self, folder: str, uid: int, full: bool = False) -> bytes:
        with self._lock:
            folder = self._canonical(folder)
            path, _, fn, _ = self._file_of(folder, uid)
            try:
                return (path / fn).read_bytes()
            except OSError as e:
                raise MessageGone(f"Message {uid} in {folder!r} cannot be read: {e}") from e

    def fetch_part(self, folder: str, uid: int, part: str) -> bytes:
        import email.policy

        msg = email.message_from_bytes(self.fetch_message(folder, uid, full=True),
                                       policy=email.policy.default)
        node = msg
        try:
            for number in (int(n) for n in part.split(".")):
                if not node.is_multipart():
                    if number == 1:  # section 1 of a single-part message is its body
                        continue
                    raise IndexError(number)
                node = node.get_payload()[number - 1]
        except (ValueError, IndexError):
            raise ProtocolError(f"Message {uid} has no part {part}.") from None
        if node.is_multipart():
            return node.as_bytes()
        payload = node.get_payload(decode=True)
        return payload if payload is not None else b""

    # --- changes -----------------------------------------------------------------------
    def set_flags(self, folder: str, uids: Iterable[int], flags: Iterable[str], add: bool = True) -> None:
        flags = frozenset(flags)
        standard = {f for f in flags if f in LETTER_FOR}
        keywords = {f for f in flags if f not in LETTER_FOR and not f.startswith("\\")}
        with self._lock:
            folder = self._canonical(folder)
            for uid in uids:
                path, key, fn, kws = self._file_of(folder, uid)
                current = split_name(fn.split("/", 1)[1])[1]
                wanted = (current | standard) if add else (current - standard)
                new_kws = (kws | keywords) if add else (kws - keywords)
                new_fn = "cur/" + key + info_suffix(wanted)
                if new_fn != fn:
                    os.rename(path / fn, path / new_fn)
                self.db.execute("UPDATE messages SET filename=?, keywords=? WHERE folder=? AND uid=?",
                                (new_fn, " ".join(sorted(new_kws)), folder, uid))
            self._remember_stamp(folder)

    def _remember_stamp(self, folder: str) -> None:
        """Our own renames need no rescan: record the directory stamps they produced."""
        self._changes += 1
        self.db.execute("UPDATE folders SET stamp=? WHERE name=?",
                        (self._stamp(self.folder_path(folder)), folder))

    def _add_to(self, dest: str, key: str, filename: str, keywords: frozenset[str], data: bytes | None,
                path: Path) -> int:
        fields = fields_of_file(path / filename) if data is None else summary_fields(data)
        with self._tx():
            return self._insert(dest, key, filename, keywords, fields)

    def _insert(self, dest: str, key: str, filename: str, keywords: frozenset[str], fields: dict) -> int:
        seen = self.db.execute("SELECT uid FROM messages WHERE folder=? AND key=?", (dest, key)).fetchone()
        if seen:  # another process indexed the file first: same message, same UID
            return seen[0]
        _, uidnext, _ = self._folder_row(dest)
        self._insert_row(dest, uidnext, key, filename, keywords, fields)
        self.db.execute("UPDATE folders SET uidnext=? WHERE name=?", (uidnext + 1, dest))
        return uidnext

    def copy(self, folder: str, uids: Iterable[int], dest: str) -> dict[int, int]:
        with self._lock:
            folder, dest = self._canonical(folder), self._canonical(dest)
            dpath = self._existing(dest)
            self._sync(dest)
            result = {}
            for uid in uids:
                path, _, fn, kws = self._file_of(folder, uid)
                data = (path / fn).read_bytes()
                flags = split_name(fn.split("/", 1)[1])[1]
                tmp = write_durably(dpath / "tmp", data)
                key = tmp.name
                new_fn = "cur/" + key + info_suffix(flags)
                os.rename(tmp, dpath / new_fn)
                result[uid] = self._add_to(dest, key, new_fn, kws, data, dpath)
            fsync_dir(dpath / "cur")
            self._remember_stamp(dest)
            return result

    def move(self, folder: str, uids: Iterable[int], dest: str) -> dict[int, int]:
        with self._lock:
            folder, dest = self._canonical(folder), self._canonical(dest)
            if folder == dest:
                return {}
            dpath = self._existing(dest)
            self._sync(dest)
            result = {}
            for uid in uids:
                path, key, fn, kws = self._file_of(folder, uid)
                target = "cur/" + fn.split("/", 1)[1] if fn.startswith("cur/") else fn
                if (dpath / target).exists():  # same unique name already there: give a new one
                    key = unique_name()
                    target = target.split("/")[0] + "/" + key + (":" + fn.split(":", 1)[1] if ":" in fn else "")
                os.rename(path / fn, dpath / target)
                with self._tx():
                    self.db.execute("DELETE FROM messages WHERE folder=? AND uid=?", (folder, uid))
                    result[uid] = self._add_to(dest, key, target, kws, None, dpath)
            self._remember_stamp(folder)
            self._remember_stamp(dest)
            return result

    def delete(self, folder: str, uids: Iterable[int]) -> dict[int, int]:
        with self._lock:
            folder = self._canonical(folder)
            uids = list(uids)
            if self.role_of(folder) == "trash":
                self.expunge(folder, uids)
                return {}
            trash = self.folder_for_role("trash")
            if trash is None:
                trash = "Trash"
                self.create_folder(trash)
            return self.move(folder, uids, trash)

    def expunge(self, folder: str, uids: Iterable[int]) -> None:
        with self._lock:
            folder = self._canonical(folder)
            for uid in uids:
                try:
                    path, _, fn, _ = self._file_of(folder, uid)
                except MessageGone:
                    continue
                os.unlink(path / fn)
                self.db.execute("DELETE FROM messages WHERE folder=? AND uid=?", (folder, uid))
            self._remember_stamp(folder)

    def append(self, folder: str, data: bytes, flags: Iterable[str] = (), date: datetime | None = None) -> int | None:
        with self._lock:
            folder = self._canonical(folder)
            path = self._existing(folder)
            self._sync(folder)
            flags = frozenset(flags)
            tmp = write_durably(path / "tmp", data)
            if date is not None:
                ts = date.timestamp()
                os.utime(tmp, (ts, ts))
            key = tmp.name
            std = {f for f in flags if f in LETTER_FOR}
            fn = ("cur/" + key + info_suffix(std)) if std else "new/" + key
            os.rename(tmp, path / fn)
            fsync_dir(path / fn.split("/")[0])
            uid = self._add_to(folder, key, fn, frozenset(f for f in flags if f not in LETTER_FOR
                                                          and not f.startswith("\\")), data, path)
            self._remember_stamp(folder)
            return uid

    # --- search ------------------------------------------------------------------------
    # The search index is the IMAP header cache (tui_mail.store.cache) over this store's
    # messages, so one compiler (tui_mail.mail.search → SQL + FTS5) serves both kinds of
    # account. It is brought up to date lazily, before each search.
    def _search_index(self):
        if self._search is None:
            from tui_mail.store.cache import HeaderCache

            self._search = HeaderCache(private_file(self.root / SEARCH_INDEX_NAME))
        return self._search

    def _forget_search(self, folder: str) -> None:
        self._search_stamps.pop(folder, None)
        if self._search is not None or (self.root / SEARCH_INDEX_NAME).exists():
            self._search_index().drop_folder(SEARCH_ACCOUNT, folder)

    def _refresh_search(self, folder: str) -> None:
        cache = self._search_index()
        self._sync(folder)
        stamp = (self._folder_row(folder)[2], self._changes)
        if stamp[0] and self._search_stamps.get(folder) == stamp:
            return  # nothing changed on disk or in flags since the last search
        state = self.folder_state(folder, sort="arrival")
        cache.check_uidvalidity(SEARCH_ACCOUNT, folder, state.uidvalidity)
        have = cache.cached_uids(SEARCH_ACCOUNT, folder)
        now = set(state.uids)
        if have - now:
            cache.remove(SEARCH_ACCOUNT, folder, have - now)
        summaries = self._summaries(folder, state.uids)
        missing = sorted(now - have)
        for i in range(0, len(missing), 500):
            items = []
            for uid in missing[i:i + 500]:
                if uid not in summaries:
                    continue
                try:
                    path, _, fn, _ = self._file_of(folder, uid)
                    text = body_text((path / fn).read_bytes())
                except (MessageGone, OSError):
                    continue
                items.append((summaries[uid], text))
            cache.put(SEARCH_ACCOUNT, folder, state.uidvalidity, items)
        cache.update_flags(SEARCH_ACCOUNT, folder, {u: s.flags for u, s in summaries.items() if u in have})
        self._search_stamps[folder] = stamp

    def search(self, folder: str, query: str) -> list[int]:
        return [uid for _, uid in self.local_search(folder, query)]

    def local_search(self, folder: str | None, query: str) -> list[tuple[str, int]]:
        """Matches, newest first. Raises SearchSyntaxError for a bad query."""
        with self._lock:
            names = [f.name for f in self.list_folders(with_counts=False)]
            folders = [self._canonical(folder)] if folder is not None else names
            for name in folders:
                self._existing(name)
                self._refresh_search(name)
            hits = self._run_search(query, folders[0] if folder is not None else None)
            return [(f, u) for f, u in hits if f in names]

    def _run_search(self, query: str, folder: str | None) -> list[tuple[str, int]]:
        """Compile with tui_mail.mail.search.to_sql (its contract: a WHERE clause over
        ``messages m`` joined to ``messages_fts`` by rowid) and run it, newest first."""
        from tui_mail.mail.search import to_sql

        where, params = to_sql(query)
        sql = ("SELECT m.folder, m.uid FROM messages m WHERE m.account=?"
               + (" AND m.folder=?" if folder is not None else "")
               + f" AND ({where}) ORDER BY m.date DESC, m.uid DESC")
        args = [SEARCH_ACCOUNT, *([folder] if folder is not None else []), *params]
        if self._search_db is None:
            self._search_db = sqlite3.connect(private_file(self.root / SEARCH_INDEX_NAME), check_same_thread=False)
        try:
            return [(f, u) for f, u in self._search_db.execute(sql, args)]
        except sqlite3.Error as e:
            raise MailError(f"Local search failed: {e}") from None

    # --- new mail ----------------------------------------------------------------------
    def watch(self, folder: str, callback: Callable[[Change], None]) -> None:
        """Poll the folder's new/ and cur/ every ``poll_interval`` seconds from a thread."""
        self.stop_watch()
        folder = self._canonical(folder)
        with self._lock:
            self._existing(folder)
            before = self._flag_map(folder)
        stop = threading.Event()
        self._watch_stop = stop

        def run() -> None:
            nonlocal before
            while not stop.wait(self.poll_interval):
                try:
                    with self._lock:
                        if self._db is None:
                            return
                        path = self._existing(folder)
                        stamp = self._stamp(path)
                        if stamp and stamp == self._folder_row(folder)[2]:
                            now = self._flag_map(folder, sync=False)
                        else:
                            now = self._flag_map(folder)
                except MailError:
                    continue
                for change in diff_states(folder, before, now):
                    try:
                        callback(change)
                    except Exception:  # a broken listener must not end the watch
                        log.exception("watch callback failed for %s", folder)
                before = now

        self._watch_thread = threading.Thread(target=run, name=f"watch-{folder}", daemon=True)
        self._watch_thread.start()

    def _flag_map(self, folder: str, sync: bool = True) -> dict[int, str]:
        if sync:
            self._sync(folder)
        return {uid: " ".join(sorted(split_name(fn.split("/", 1)[1])[1] | set(kw.split())))
                for uid, fn, kw in self.db.execute(
                    "SELECT uid, filename, keywords FROM messages WHERE folder=?", (folder,))}

    def stop_watch(self) -> None:
        self._watch_stop.set()
        thread, self._watch_thread = self._watch_thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)


def diff_states(folder: str, before: dict[int, str], now: dict[int, str]) -> list[Change]:
    """The Changes between two ``uid → flag text`` maps of one folder."""
    changes = []
    new = tuple(sorted(set(now) - set(before)))
    gone = tuple(sorted(set(before) - set(now)))
    flagged = tuple(sorted(u for u in set(now) & set(before) if now[u] != before[u]))
    if new:
        changes.append(Change(folder, "exists", new))
    if gone:
        changes.append(Change(folder, "expunge", gone))
    if flagged:
        changes.append(Change(folder, "flags", flagged))
    return changes
