"""The one interface the UI talks to for mail access: MailStore.

Implementations: imap.py (imapclient, with the SQLite header cache), pop3.py (poplib into a
local Maildir, then served by local.py), local.py (a Maildir on disk: POP3 accounts' store and
the Outbox). All methods are blocking and thread-safe per instance; the UI calls them from
Textual thread workers, never from the event loop. No textual import here.

Conventions
- Folder names are the server's names (IMAP: decoded modified-UTF-7 → str), hierarchy by
  ``FolderInfo.delimiter``.
- Messages are identified by ``(folder, uid)``; ``uidvalidity`` is in FolderState. UIDs are
  ints; for local Maildirs they are assigned and persisted by the store.
- Flags use IMAP spelling: ``\\Seen``, ``\\Flagged``, ``\\Answered``, ``\\Deleted``, ``\\Draft``
  and keywords (``$Forwarded``…), as ``frozenset[str]``.
- Every failure is raised as a ``tui_mail.errors.MailError`` subclass with a message a user
  can act on; library exceptions never escape.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

# Folder roles (SPECIAL-USE, RFC 6154, plus our own "inbox" and "outbox").
ROLES = ("inbox", "sent", "drafts", "trash", "junk", "archive", "outbox")

SEEN = "\\Seen"
FLAGGED = "\\Flagged"
ANSWERED = "\\Answered"
DELETED = "\\Deleted"
DRAFT = "\\Draft"
FORWARDED = "$Forwarded"      # keyword (RFC 5550); Maildir "P" (passed)


@dataclass(frozen=True)
class FolderInfo:
    name: str
    delimiter: str = "/"
    role: str | None = None
    attributes: frozenset[str] = frozenset()
    total: int | None = None       # None: not known yet (STATUS not run)
    unread: int | None = None
    selectable: bool = True

    @property
    def parts(self) -> list[str]:
        return self.name.split(self.delimiter) if self.delimiter else [self.name]


@dataclass(frozen=True)
class MessageSummary:
    """What the message list shows for one message (from ENVELOPE/FLAGS/SIZE/BODYSTRUCTURE)."""

    uid: int
    date: datetime | None          # timezone-aware; None when the message has no usable date
    from_name: str                 # display name, or the address when there is none
    from_addr: str
    to: str                        # decoded, comma-joined display of To
    cc: str
    subject: str                   # decoded (RFC 2047)
    flags: frozenset[str]
    size: int
    has_attachment: bool = False
    message_id: str = ""
    in_reply_to: str = ""
    references: tuple[str, ...] = ()

    @property
    def unread(self) -> bool:
        return SEEN not in self.flags

    @property
    def flagged(self) -> bool:
        return FLAGGED in self.flags

    @property
    def answered(self) -> bool:
        return ANSWERED in self.flags


class ThreadFields(NamedTuple):
    """One message as threading sees it (tui_mail.mail.threading): a tenth of a summary's
    memory, so a 100,000-message folder threads without building 100,000 summaries."""

    uid: int
    date: int | None          # unix seconds
    subject: str
    message_id: str
    in_reply_to: str
    references: str           # space-joined


@dataclass(frozen=True)
class FolderState:
    """The ordered UID list of a folder (oldest first by the chosen sort) and its validity."""

    folder: str
    uidvalidity: int
    uids: tuple[int, ...]
    highestmodseq: int | None = None


@dataclass(frozen=True)
class Change:
    """Reported by ``watch()``: something changed in ``folder`` (new mail, expunge, flags)."""

    folder: str
    kind: str                      # "exists" | "expunge" | "flags" | "reconnected"
    uids: tuple[int, ...] = ()


@dataclass
class Progress:
    """Background progress, e.g. header cache fill: done of total."""

    done: int = 0
    total: int = 0


class Cancelled(Exception):
    """Raised inside long operations when their cancel event is set."""


@dataclass
class Cancel:
    event: threading.Event = field(default_factory=threading.Event)

    def set(self) -> None:
        self.event.set()

    def check(self) -> None:
        if self.event.is_set():
            raise Cancelled()


TraceSink = Callable[[str, str], None]
"""``sink(direction, line)`` with direction "C" (client) or "S" (server); passwords masked."""


class MailStore(abc.ABC):
    """Mail access for one account."""

    #: set by the owner to receive the protocol dialogue (C:/S: lines); None = off
    trace: TraceSink | None = None

    # --- lifecycle ---------------------------------------------------------------------
    @abc.abstractmethod
    def connect(self) -> None:
        """Log in (or open the local store). Raises AuthError/ConnectError/…"""

    @abc.abstractmethod
    def close(self) -> None:
        """Log out; safe to call twice."""

    # --- folders -----------------------------------------------------------------------
    @abc.abstractmethod
    def list_folders(self, with_counts: bool = True) -> list[FolderInfo]:
        """All folders with roles; counts (STATUS) when ``with_counts``."""

    @abc.abstractmethod
    def create_folder(self, name: str) -> None: ...

    @abc.abstractmethod
    def rename_folder(self, old: str, new: str) -> None: ...

    @abc.abstractmethod
    def delete_folder(self, name: str) -> None: ...

    def folder_for_role(self, role: str) -> str | None:
        for f in self.list_folders(with_counts=False):
            if f.role == role:
                return f.name
        return None

    # --- message lists -----------------------------------------------------------------
    @abc.abstractmethod
    def folder_state(self, folder: str, sort: str = "date") -> FolderState:
        """The ordered UID list (sort: date|arrival|from|subject|size), oldest first."""

    def cached_folder_state(self, folder: str, sort: str = "date") -> FolderState | None:
        """The last known ordered UID list from a local cache, without the network, so a warm
        start can paint before ``folder_state`` answers; None when the store keeps none."""
        return None

    @abc.abstractmethod
    def cached_summaries(self, folder: str, uids: Sequence[int]) -> dict[int, MessageSummary]:
        """Summaries already in the local cache (no network); missing UIDs are absent."""

    def thread_fields(self, folder: str, uids: Sequence[int]) -> list:
        """What threading needs (``uid``, ``date``, ``subject``, ``message_id``,
        ``in_reply_to``, ``references``) of the cached messages among ``uids``, no network.
        Stores with a header cache return light rows (ThreadFields) for the whole folder at
        once; this default reads summaries in chunks."""
        out: list = []
        for i in range(0, len(uids), 5000):
            out.extend(self.cached_summaries(folder, uids[i:i + 5000]).values())
        return out

    def find_message_id(self, folder: str, message_id: str) -> int | None:
        """The UID of the message whose Message-ID is ``message_id`` in ``folder`` (the newest
        when several), or None. This default looks through what the store has indexed; a
        store with a server asks it (IMAP SEARCH HEADER)."""
        wanted = message_id.strip()
        if not wanted:
            return None
        uids = self.folder_state(folder).uids
        hits = [f.uid for f in self.thread_fields(folder, uids) if (f.message_id or "").strip() == wanted]
        return max(hits) if hits else None

    @abc.abstractmethod
    def summaries(self, folder: str, uids: Sequence[int]) -> dict[int, MessageSummary]:
        """Summaries for these UIDs: from the cache, fetching what is missing (and caching it)."""

    @abc.abstractmethod
    def fill_cache(self, folder: str, progress: Callable[[Progress], None] | None = None,
                   cancel: Cancel | None = None, chunk: int = 1000) -> None:
        """Fetch every summary not cached yet, in chunks, reporting progress; resync flags."""

    # --- one message -------------------------------------------------------------------
    @abc.abstractmethod
    def fetch_message(self, folder: str, uid: int, full: bool = False) -> bytes:
        """The message as RFC 5322 bytes. Without ``full`` a store may leave out large
        attachment bodies (keeping their MIME headers) so showing a message stays fast."""

    @abc.abstractmethod
    def fetch_part(self, folder: str, uid: int, part: str) -> bytes:
        """One MIME part's decoded payload by IMAP section number ("2", "1.3"…)."""

    # --- changes -----------------------------------------------------------------------
    @abc.abstractmethod
    def set_flags(self, folder: str, uids: Iterable[int], flags: Iterable[str], add: bool = True) -> None: ...

    @abc.abstractmethod
    def copy(self, folder: str, uids: Iterable[int], dest: str) -> dict[int, int]:
        """Copy; returns old uid → new uid where the server says (UIDPLUS), else {}."""

    @abc.abstractmethod
    def move(self, folder: str, uids: Iterable[int], dest: str) -> dict[int, int]:
        """Move (MOVE, else COPY + \\Deleted + UID EXPUNGE); returns old → new uids where known."""

    @abc.abstractmethod
    def delete(self, folder: str, uids: Iterable[int]) -> dict[int, int]:
        """To Trash (returns the move map); inside Trash, expunge for good (returns {})."""

    @abc.abstractmethod
    def expunge(self, folder: str, uids: Iterable[int]) -> None:
        """Remove these messages for good."""

    @abc.abstractmethod
    def append(self, folder: str, data: bytes, flags: Iterable[str] = (), date: datetime | None = None) -> int | None:
        """Store a message (Sent copy, draft); returns its UID when known."""

    # --- search ------------------------------------------------------------------------
    @abc.abstractmethod
    def search(self, folder: str, query: str) -> list[int]:
        """Server-side search with the query language of tui_mail.mail.search."""

    @abc.abstractmethod
    def local_search(self, folder: str | None, query: str) -> list[tuple[str, int]]:
        """Search the local cache (instant); ``folder=None`` searches every cached folder."""

    # --- new mail ----------------------------------------------------------------------
    @abc.abstractmethod
    def watch(self, folder: str, callback: Callable[[Change], None]) -> None:
        """Start reporting changes of ``folder`` (IDLE on a second connection, else NOOP
        polling) from a background thread; replaces any previous watch."""

    @abc.abstractmethod
    def stop_watch(self) -> None: ...
