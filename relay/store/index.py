"""The per-user SQLite index (one file in the user's Maildir root, WAL, one transaction per
operation): folders with UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ, messages with UID, Maildir name,
flags, size, INTERNALDATE, MODSEQ, cached ENVELOPE/BODYSTRUCTURE and SEARCH header columns,
expunged UIDs with their MODSEQ (for CHANGEDSINCE), and subscriptions.

ENVELOPE and BODYSTRUCTURE are stored twice: as MessagePack (the ``msgpack`` library: a
published, versioned format whose bytes/str/int/nil/array types map one to one onto the nested
lists of bytes/int/None of relay.store.mime, and whose C decoder loads them back in
microseconds) and already encoded for the IMAP wire (mime.imap_encode), so a FETCH ENVELOPE over
100,000 messages need not decode or re-encode anything (schema 8: in exactly the form the
server sends, see mime.envelope_wire). Indexes up to schema 6 stored the
structured columns with ``marshal``, whose format Python does not promise across versions: the
upgrade to schema 7 re-encodes them on first open; a row whose marshal blob no longer loads gets
placeholders and its folder is queued for re-analysis from the files (meta ``mime_todo``). The file
lives in the user's 0700 directory and is written only by the relay; anyone able to write it
can already rewrite the mail itself. If it is lost or unreadable it is rebuilt from the Maildir
with new UIDVALIDITYs.
"""

from __future__ import annotations

import marshal
import sqlite3
import threading
from pathlib import Path

import msgpack

from relay.store import mime

FILENAME = "tui-mail-index.sqlite"
SCHEMA_VERSION = 8


def _marshal_to_msgpack(db: sqlite3.Connection) -> None:
    """Schema 7: ENVELOPE/BODYSTRUCTURE columns from marshal to MessagePack (see docstring)."""
    broken: set[int] = set()
    rows = db.execute("SELECT folder, uid, envelope, bodystructure FROM messages").fetchall()
    out = []
    for folder, uid, env, body in rows:
        try:
            out.append((pack(marshal.loads(env)), pack(marshal.loads(body)), folder, uid))
        except (ValueError, EOFError, TypeError):
            broken.add(folder)
            out.append((pack([None] * 10), pack(mime.bodystructure(b"\r\n")), folder, uid))
    db.executemany("UPDATE messages SET envelope=?, bodystructure=? WHERE folder=? AND uid=?", out)
    for folder in broken:   # re-analysed from the files by relay.store.mailbox (mime_todo)
        (uidnext,) = db.execute("SELECT uidnext FROM folders WHERE id=?", (folder,)).fetchone()
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"mime_todo:{folder}", f"1 {uidnext - 1}"))


def _wire_forms(db: sqlite3.Connection) -> None:
    """Schema 8: the wire columns in the exact form the IMAP server sends (mime.envelope_wire,
    mime.body_wire: no spaces between addresses or between the parts of a multipart), so FETCH
    ENVELOPE/BODYSTRUCTURE send them as they are; re-encoded from the MessagePack columns,
    no message file is read. Rows not analysed yet (envelope_wire = x'') stay so."""
    rows = db.execute("SELECT folder, uid, envelope, bodystructure FROM messages "
                      "WHERE envelope_wire != x''").fetchall()
    out = []
    broken: set[int] = set()
    for folder, uid, env, body in rows:
        try:
            out.append((mime.envelope_wire(unpack(env)), mime.body_wire(unpack(body)), folder, uid))
        except (ValueError, TypeError, msgpack.UnpackException):
            broken.add(folder)
            out.append((mime.envelope_wire([None] * 10), mime.body_wire(mime.bodystructure(b"\r\n")),
                        folder, uid))
    db.executemany("UPDATE messages SET envelope_wire=?, body_wire=? WHERE folder=? AND uid=?", out)
    for folder in broken:   # re-analysed from the files by relay.store.mailbox (mime_todo)
        (uidnext,) = db.execute("SELECT uidnext FROM folders WHERE id=?", (folder,)).fetchone()
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"mime_todo:{folder}", f"1 {uidnext - 1}"))


# older schema version → SQL statements or functions of the connection that bring it to the
# next one (applied in order on open, in one transaction)
_UPGRADES = {
    # 6: the References header for THREAD=REFERENCES; NULL = not read yet (filled on first use)
    5: ("ALTER TABLE messages ADD COLUMN hdr_references TEXT",),
    6: (_marshal_to_msgpack,),
    7: (_wire_forms,),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS folders (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    special_use TEXT NOT NULL DEFAULT '',
    selectable INTEGER NOT NULL DEFAULT 1,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 1,
    cur_mtime INTEGER NOT NULL DEFAULT -1,
    new_mtime INTEGER NOT NULL DEFAULT -1
);
CREATE TABLE IF NOT EXISTS messages (
    folder INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    base TEXT NOT NULL,
    filename TEXT NOT NULL,
    flags TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL,
    vsize INTEGER NOT NULL,
    internaldate INTEGER NOT NULL,
    tzoffset INTEGER NOT NULL DEFAULT 0,
    modseq INTEGER NOT NULL,
    recent INTEGER NOT NULL DEFAULT 0,
    envelope BLOB NOT NULL,
    bodystructure BLOB NOT NULL,
    envelope_wire BLOB NOT NULL,
    body_wire BLOB NOT NULL,
    hdr_subject TEXT NOT NULL DEFAULT '',
    hdr_from TEXT NOT NULL DEFAULT '',
    hdr_to TEXT NOT NULL DEFAULT '',
    hdr_cc TEXT NOT NULL DEFAULT '',
    hdr_bcc TEXT NOT NULL DEFAULT '',
    hdr_message_id TEXT NOT NULL DEFAULT '',
    hdr_date REAL,
    hdr_references TEXT,
    PRIMARY KEY (folder, uid)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_base ON messages (folder, base);
CREATE INDEX IF NOT EXISTS messages_modseq ON messages (folder, modseq);
CREATE INDEX IF NOT EXISTS messages_recent ON messages (folder) WHERE recent=1;
-- unseen rows (keywords never hold a backslash, so the test is exact): SELECT's [UNSEEN n] and
-- STATUS UNSEEN read this instead of every row; created on open (IF NOT EXISTS, no schema bump)
-- covering index for FETCH (FLAGS): the table's rows carry the cached ENVELOPE/BODYSTRUCTURE
-- blobs, so reading three small columns from it walks ~10x more pages than from this
CREATE INDEX IF NOT EXISTS messages_flags ON messages (folder, uid, flags, modseq);
-- rows a big first sync indexed without analysis (relay.store.mailbox._fill analyses them)
CREATE INDEX IF NOT EXISTS messages_pending ON messages (folder, uid) WHERE envelope_wire=x'';
CREATE INDEX IF NOT EXISTS messages_unseen ON messages (folder, uid) WHERE instr(flags, '\\Seen')=0;
CREATE TABLE IF NOT EXISTS expunged (
    folder INTEGER NOT NULL, uid INTEGER NOT NULL, modseq INTEGER NOT NULL,
    PRIMARY KEY (folder, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriptions (name TEXT PRIMARY KEY);
-- per-folder MESSAGES / SIZE / UNSEEN kept by triggers in the same transaction as the rows
-- (STATUS reads one row instead of the folder's rows); created on open, no schema bump:
-- filled once from messages (meta 'counts') when the table is new
CREATE TABLE IF NOT EXISTS folder_counts (
    folder INTEGER PRIMARY KEY, messages INTEGER NOT NULL, size INTEGER NOT NULL,
    unseen INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS messages_count_delete AFTER DELETE ON messages BEGIN
    UPDATE folder_counts SET messages = messages - 1, size = size - OLD.size,
        unseen = unseen - (instr(OLD.flags, '\\Seen') = 0) WHERE folder = OLD.folder;
END;
CREATE TRIGGER IF NOT EXISTS messages_count_update AFTER UPDATE OF flags, size ON messages
WHEN OLD.flags != NEW.flags OR OLD.size != NEW.size BEGIN
    UPDATE folder_counts SET size = size - OLD.size + NEW.size,
        unseen = unseen - (instr(OLD.flags, '\\Seen') = 0) + (instr(NEW.flags, '\\Seen') = 0)
        WHERE folder = OLD.folder;
END;
-- keywords ever used in a folder (SELECT's FLAGS lists them, as Dovecot does); created on open
-- (no schema bump): an index without it is filled once from messages (meta 'keywords')
CREATE TABLE IF NOT EXISTS keywords (
    folder INTEGER NOT NULL, name TEXT NOT NULL, PRIMARY KEY (folder, name)
) WITHOUT ROWID;
"""

# (apart from _SCHEMA: a bulk insert drops and re-creates it inside its transaction and adds
# its rows to folder_counts in one statement, see bulk_insert; per row it costs ~13 µs)
COUNT_INSERT_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS messages_count_insert AFTER INSERT ON messages BEGIN
    INSERT INTO folder_counts VALUES (NEW.folder, 1, NEW.size, instr(NEW.flags, '\\Seen') = 0)
    ON CONFLICT (folder) DO UPDATE SET messages = messages + 1, size = size + NEW.size,
        unseen = unseen + (instr(NEW.flags, '\\Seen') = 0);
END;
"""


def bulk_insert(db: sqlite3.Connection, sql: str, rows: list[tuple], folder: int, sizes: int,
                unseen: int) -> None:
    """Insert many message rows (``sql``: an INSERT INTO messages) inside the caller's
    transaction without the per-row count trigger: the folder's counts grow by len(rows),
    ``sizes`` and ``unseen`` in one statement. Other connections never see the trigger gone
    (the schema change commits with the rows)."""
    db.execute("DROP TRIGGER IF EXISTS messages_count_insert")
    db.executemany(sql, rows)
    db.execute("INSERT INTO folder_counts VALUES (?, ?, ?, ?) ON CONFLICT (folder) DO UPDATE SET "
               "messages = messages + excluded.messages, size = size + excluded.size, "
               "unseen = unseen + excluded.unseen", (folder, len(rows), sizes, unseen))
    db.execute(COUNT_INSERT_TRIGGER)


SEARCH_COLUMNS = {"subject": "hdr_subject", "from": "hdr_from", "to": "hdr_to", "cc": "hdr_cc",
                  "bcc": "hdr_bcc", "message-id": "hdr_message_id"}


_local = threading.local()   # a msgpack.Packer keeps a buffer: one per thread


def pack(value) -> bytes:
    """Nested lists/tuples of bytes, str, int and None → MessagePack (tuples load as lists)."""
    try:
        packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(value)


def unpack(blob: bytes):
    return msgpack.unpackb(blob, raw=False)


class IndexCorrupt(Exception):
    """The index file exists but cannot be used; the caller rebuilds it."""


def connect(root: Path) -> tuple[sqlite3.Connection, bool]:
    """Open (creating if needed) the index in ``root``; returns (connection, created).
    A corrupt or foreign-version file is moved aside and a new one created."""
    path = root / FILENAME
    existed = path.exists()
    try:
        return _open(path, existed), not existed
    except (sqlite3.DatabaseError, IndexCorrupt):
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(path) + suffix)
            if p.exists():
                p.replace(Path(str(path) + suffix + ".corrupt"))
        return _open(path, False), True


def _open(path: Path, existed: bool) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA + COUNT_INSERT_TRIGGER)
        row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            if existed and db.execute("SELECT count(*) FROM folders").fetchone()[0]:
                raise IndexCorrupt("index without a schema version")
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif row[0] != str(SCHEMA_VERSION):
            _upgrade(db, row[0])
        if db.execute("SELECT 1 FROM meta WHERE key='counts'").fetchone() is None:
            _fill_counts(db)
        db.execute("SELECT count(*) FROM messages").fetchone()
    except BaseException:
        db.close()
        raise
    return db


def _fill_counts(db: sqlite3.Connection) -> None:
    """folder_counts from the rows, once for an index made before the table (the triggers
    keep it from then on, whichever relay version writes)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("DELETE FROM folder_counts")
        db.execute("INSERT INTO folder_counts SELECT folder, count(*), total(size), "
                   "total(instr(flags, '\\Seen') = 0) FROM messages GROUP BY folder")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('counts', '1')")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _upgrade(db: sqlite3.Connection, version: str) -> None:
    """Bring an index of an older schema up to date in place (UIDs and UIDVALIDITY kept);
    a version with no upgrade path is rebuilt by the caller."""
    v = int(version) if version.isdigit() else -1
    if v not in _UPGRADES:
        raise IndexCorrupt(f"index schema {version} is not {SCHEMA_VERSION}")
    db.execute("BEGIN IMMEDIATE")
    try:
        while v != SCHEMA_VERSION:
            steps = _UPGRADES.get(v)
            if steps is None:
                raise IndexCorrupt(f"no upgrade from index schema {v}")
            for step in steps:
                if callable(step):
                    step(db)
                else:
                    db.execute(step)
            v += 1
        db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
