"""The per-user SQLite index (one file in the user's Maildir root, WAL, one transaction per
operation): folders with UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ, messages with UID, Maildir name,
flags, size, INTERNALDATE, MODSEQ, cached ENVELOPE/BODYSTRUCTURE and SEARCH header columns,
expunged UIDs with their MODSEQ (for CHANGEDSINCE), and subscriptions.

ENVELOPE and BODYSTRUCTURE are stored twice: with ``marshal`` (nested lists of bytes/int/None
load back in microseconds) and already encoded for the IMAP wire (mime.imap_encode), so a FETCH
ENVELOPE over 100,000 messages need not decode or re-encode anything. The file
lives in the user's 0700 directory and is written only by the relay; anyone able to write it
can already rewrite the mail itself. If it is lost or unreadable it is rebuilt from the Maildir
with new UIDVALIDITYs.
"""

from __future__ import annotations

import marshal
import sqlite3
from pathlib import Path

FILENAME = "tui-mail-index.sqlite"
SCHEMA_VERSION = 6
# older schema version → statements that bring it to the next one (applied in order on open)
_UPGRADES = {
    # 6: the References header for THREAD=REFERENCES; NULL = not read yet (filled on first use)
    5: ("ALTER TABLE messages ADD COLUMN hdr_references TEXT",),
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
CREATE TABLE IF NOT EXISTS expunged (
    folder INTEGER NOT NULL, uid INTEGER NOT NULL, modseq INTEGER NOT NULL,
    PRIMARY KEY (folder, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriptions (name TEXT PRIMARY KEY);
-- keywords ever used in a folder (SELECT's FLAGS lists them, as Dovecot does); created on open
-- (no schema bump): an index without it is filled once from messages (meta 'keywords')
CREATE TABLE IF NOT EXISTS keywords (
    folder INTEGER NOT NULL, name TEXT NOT NULL, PRIMARY KEY (folder, name)
) WITHOUT ROWID;
"""

SEARCH_COLUMNS = {"subject": "hdr_subject", "from": "hdr_from", "to": "hdr_to", "cc": "hdr_cc",
                  "bcc": "hdr_bcc", "message-id": "hdr_message_id"}


def pack(value) -> bytes:
    return marshal.dumps(value)


def unpack(blob: bytes):
    return marshal.loads(blob)


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
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            if existed and db.execute("SELECT count(*) FROM folders").fetchone()[0]:
                raise IndexCorrupt("index without a schema version")
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif row[0] != str(SCHEMA_VERSION):
            _upgrade(db, row[0])
        db.execute("SELECT count(*) FROM messages").fetchone()
    except BaseException:
        db.close()
        raise
    return db


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
            for sql in steps:
                db.execute(sql)
            v += 1
        db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
