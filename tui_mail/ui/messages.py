"""App-level messages: what thread workers report back to the UI, named in the past tense.

Workers never touch widgets; they post one of these and a handler on the main screen applies
it. ``can_replace`` lets floods (progress, new-mail bursts) collapse in the queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

from tui_mail.store.base import Change, FolderInfo, FolderState, MessageSummary
from tui_mail.ui.undo import Entry

if TYPE_CHECKING:
    from tui_mail.mail.parse import MessageView


@dataclass
class FoldersListed(Message):
    account: str
    folders: list[FolderInfo]


@dataclass
class FolderLoaded(Message):
    account: str
    folder: str
    state: FolderState
    summaries: dict[int, MessageSummary]
    keep: int | None = None        # keep the cursor on this uid (a reload of the same folder)
    warm: bool = False             # from the local cache only; the server's answer follows
    first: bool = False            # the start-up inbox, before the folder list: shown if nothing else is


@dataclass
class SummariesFetched(Message):
    account: str
    folder: str
    summaries: dict[int, MessageSummary]


@dataclass
class CacheProgressed(Message):
    account: str
    folder: str
    done: int
    total: int

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, CacheProgressed) and message.folder == self.folder


@dataclass
class MessageFetched(Message):
    account: str
    folder: str
    uid: int
    view: MessageView
    purpose: str = "preview"   # "preview" | "reply" | "reply_all" | "forward"


@dataclass
class FlagsChanged(Message):
    account: str
    folder: str
    uids: tuple[int, ...]
    flag: str
    added: bool
    undo: Entry | None = None


@dataclass
class MessagesRemoved(Message):
    """Messages left ``folder`` (moved, deleted, expunged)."""

    account: str
    folder: str
    uids: tuple[int, ...]
    note: str
    undo: Entry | None = None


@dataclass
class SearchFinished(Message):
    account: str
    folder: str
    query: str
    uids: list[int]
    summaries: dict[int, MessageSummary]
    source: str   # "local" | "server"


@dataclass
class MailChanged(Message):
    """Reported by the store's watch thread (IDLE/polling)."""

    account: str
    change: Change


@dataclass
class MessageSent(Message):
    account: str
    subject: str
    queued: bool          # True: waits in the Outbox (server unreachable or 4xx)
    detail: str           # the server's reply, or why it waits / failed
    failed: bool = False  # permanent failure (5xx): not sent, not retried


@dataclass
class OutboxFlushed(Message):
    """A retry of the account's Outbox ended; ``outcomes`` are (state, detail) pairs with
    state filed/sent (went out), queued (still waits) or failed (permanent)."""

    account: str
    outcomes: tuple[tuple[str, str], ...]


@dataclass
class FolderChanged(Message):
    """A folder was created, renamed or deleted; the tree needs relisting."""

    account: str
    note: str
    select: str | None = None


@dataclass
class UndoFinished(Message):
    account: str
    note: str
    refresh: tuple[str, ...]
    arrived: tuple[str, tuple[int, ...]] | None = None   # (folder, new UIDs) the undo put back


@dataclass
class DraftSaved(Message):
    account: str
    folder: str


@dataclass
class ConnectionChanged(Message):
    account: str
    state: str            # "connecting" | "online" | "offline"
    detail: str = ""


@dataclass
class ThreadsReady(Message):
    """The threading worker's display order for ``rows`` (the folder's order it started from)."""
    account: str
    folder: str
    rows: tuple[int, ...]
    order: tuple[int, ...]
    depth: dict[int, int]
