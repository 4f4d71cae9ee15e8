"""The relay's mailbox store: per-user Maildir++ folders plus a persisted SQLite index, served
by the IMAP and POP3 servers (relay/imap, relay/pop3) and filled by local delivery.

Why not a library: pymap's Maildir backend was measured at ~300 s to list 10,000 envelopes and
is not byte-exact, and Python's ``mailbox`` keeps no UIDs, flags index or envelope cache. The
index here makes FETCH ENVELOPE/BODYSTRUCTURE and SEARCH on headers index reads, never parses.

Layout (shared with relay/delivery.py): ``mail_dir / <address lowercased> /`` is a Maildir++;
INBOX is the root (tmp/ new/ cur/), folder "A/B" is the directory ``.A.B`` (levels in modified
UTF-7, see names.py). Flags are in file names (``:2,DFPRST``), and so are a folder's first 26
keywords (letters a–z per its ``dovecot-keywords`` file, Dovecot's scheme); all flags are also in
the index (``tui-mail-index.sqlite`` in the root). Unique parts (before ':') never change.

Usage::

    store = MailStore(cfg.mail_dir, bus)        # one per relay; store.close() at shutdown
    u = store.user("bob@example.org")           # UserStore; new users get INBOX, Sent, Drafts,
                                                # Trash, Junk, Archive (SPECIAL-USE) subscribed

UserStore (thread- and process-safe: one lock per user, see below; every call is synchronous; calls that touch many
files — append/copy/expunge of many messages, first index of a big folder — belong in a worker
thread). Folder names use "/" as separator; "inbox" in any case means INBOX. Errors are
``StoreError(message, code)`` with code an IMAP response code (NONEXISTENT, TRYCREATE,
ALREADYEXISTS, CANNOT, EXPUNGEISSUED, USEATTR, UNAVAILABLE) or "" (bad argument).

Folders
  folders() -> list[FolderInfo(name, special_use, selectable, has_children)]  INBOX first
  create(name, special_use="")       missing parents are created too
  delete(name)                       with inferiors: messages removed, folder becomes \\Noselect
  rename(old, new)                   moves inferiors; INBOX: moves its messages to ``new``
  subscriptions() -> set[str];  subscribe(name, on=True)
State (each of these first syncs with the disk: new/ files are indexed, moved to cur/ and get
the next UIDs; external renames/removals in cur/ become flag changes/expunges)
  sync(folder) -> bool               True if anything changed
  version(folder) -> int             O(1) change token (== HIGHESTMODSEQ; every change bumps it)
  state(folder) -> FolderState(uidvalidity, uidnext, highestmodseq, uids, version)
  status(folder) -> {"MESSAGES","RECENT","UIDNEXT","UIDVALIDITY","UNSEEN","HIGHESTMODSEQ","SIZE"}
  recent(folder) -> set[int]         claims \\Recent: the first caller gets them, once
  changes_since(folder, modseq) -> (changed MessageRecords, expunged UIDs)
Messages (uids: ascending ints; unknown UIDs are skipped silently)
  records(folder, uids=None) -> list[MessageRecord(uid, flags, size, internaldate, modseq, name)]
  envelopes_wire(folder, uids=None) / bodystructures_wire(...) -> {uid: bytes} the same data
      already IMAP-encoded (no decoding at all: the fast path for FETCH over big folders)
  envelopes(folder, uids=None) / bodystructures(...) -> {uid: nested list}; envelope(folder, uid)
      and bodystructure(folder, uid) for one. Lists of bytes/int/None, see mime.py; BODY (non
      extensible) is BODYSTRUCTURE without the extension fields.
  header_fields(folder, uids=None) -> {uid: HeaderFields(subject, from_, to, cc, bcc, message_id,
      date)} decoded (RFC 2047) for SEARCH
  search_header(folder, field, text) -> set[uid]   field in subject/from/to/cc/bcc/message-id;
      case-insensitive substring, one SQL scan
  header(folder, uid, name) -> bytes | None        any header field, raw, read from the file
  read(folder, uid, start=0, length=None, crlf=False) -> bytes   exact bytes as delivered;
      crlf=True turns bare LFs (files from other tools) into CRLF, which is what
      MessageRecord.vsize and the cached BODYSTRUCTURE sizes describe (Dovecot does the same)
  path(folder, uid) -> Path; locked() -> the user's lock (hold it while using a path)
Changes (each publishes (address, folder) on the ChangeBus after committing)
  set_flags(folder, uids, mode, flags, unchangedsince=None) -> (changed records, failed uids)
      mode "set" | "add" | "remove"; \\Recent is ignored; unknown \\System flags raise
  append(folder, data, flags=(), internaldate=None) -> (uidvalidity, uid)    TRYCREATE if missing
  copy(folder, uids, dest, move=False) -> (dest uidvalidity, source uids, new uids)  (COPYUID)
  expunge(folder, uids=None, force=False) -> removed uids   (\\Deleted only unless force)

Crash consistency: files are written first (tmp/ → rename), the index second, in one
transaction; the next sync reconciles whatever a crash left. UIDs and UIDVALIDITY are stable
while the index exists; if it is lost (or corrupt: it is moved aside) it is rebuilt from the
Maildir with new UIDVALIDITYs (flags and the first 26 keywords per folder survive: they are in
the file names and dovecot-keywords, as Dovecot keeps them; further keywords are lost).

Several processes: the relay's master and workers may open the same user at once. Each
UserStore call holds the user's lock (relay/store/userlock.py: the in-process RLock plus an
exclusive flock on ``tui-mail-index.lock``, released by the kernel if the holder dies), and on
taking it notices through SQLite's ``data_version`` whether another process committed, reloading
what it keeps in memory. UIDs, MODSEQs, UIDVALIDITY and \\Recent claims live in the index, so
they are right across processes; ``maildrop_lock()`` is POP3's exclusive lock across processes;
relay/feed.py carries ChangeBus publishes between processes. Changes other
Maildir tools make in cur/ are noticed through cur/'s mtime, so one landing in the same clock
tick as our own change may wait for the next change to be seen; new/ is listed on every sync,
so deliveries are never missed. records()/envelopes()/... read the index as of the last sync;
state(), version(), status(), recent() and every change sync first.
"""

from relay.store.mailbox import DEFAULT_FOLDERS, UserStore
from relay.store.registry import MailStore
from relay.store.types import FolderInfo, FolderState, HeaderFields, MessageRecord, StoreError

__all__ = ["DEFAULT_FOLDERS", "FolderInfo", "FolderState", "HeaderFields", "MailStore",
           "MessageRecord", "StoreError", "UserStore"]
