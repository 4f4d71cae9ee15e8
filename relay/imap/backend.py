"""What the IMAP session needs from the mailbox store, as a typing Protocol.

The session (relay/imap/session.py) is written against this narrow interface so the protocol
logic does not depend on how relay/store keeps its index; relay/imap/store_adapter.py maps it
onto relay.store. All calls are synchronous and cheap (index operations); the session runs the
ones that touch many files in a worker thread.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class BackendError(Exception):
    """A store operation failed; ``code`` is an IMAP response code (TRYCREATE, NONEXISTENT,
    ALREADYEXISTS, CANNOT, OVERQUOTA, …) or ""."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class MessageRecord:
    """One message as the index knows it."""

    uid: int
    flags: frozenset[str]
    size: int
    internaldate: _dt.datetime
    modseq: int = 1


@dataclass
class FolderInfo:
    name: str                       # "INBOX", "Sent", "Archive/2025" ("/" is the separator)
    special_use: str = ""           # "\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive" or ""
    selectable: bool = True


@dataclass
class FolderState:
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    uids: Sequence[int]             # ascending; never changed once handed out (sessions share it)
    version: object                 # changes whenever anything in the folder changes


class Mailbox(Protocol):
    """One user's mail."""

    def folders(self) -> list[FolderInfo]: ...
    def create(self, name: str) -> None: ...
    def delete(self, name: str) -> None: ...
    def rename(self, old: str, new: str) -> None: ...
    def subscriptions(self) -> set[str]: ...
    def subscribe(self, name: str, on: bool) -> None: ...

    def version(self, folder: str) -> object: ...          # O(1) change token
    def state(self, folder: str) -> FolderState: ...
    def records(self, folder: str, uids: Sequence[int]) -> list[MessageRecord]: ...
    def header(self, folder: str, uid: int, name: str) -> bytes | None: ...
    def envelope(self, folder: str, uid: int) -> list | None: ...
    def read(self, folder: str, uid: int) -> bytes: ...
    def recent(self, folder: str) -> set[int]: ...

    def set_flags(self, folder: str, uids: Sequence[int], mode: str, flags: Sequence[str],
                  unchangedsince: int | None = None) -> tuple[list[MessageRecord], list[int]]:
        """mode: "set", "add", "remove"; returns (changed records, uids failing UNCHANGEDSINCE)."""
        ...

    def append(self, folder: str, data: bytes, flags: Sequence[str],
               internaldate: _dt.datetime | None) -> tuple[int, int]:
        """Returns (uidvalidity, uid)."""
        ...

    def copy(self, folder: str, uids: Sequence[int], dest: str, *, move: bool = False
             ) -> tuple[int, list[int], list[int]]:
        """Returns (dest uidvalidity, source uids, new uids) in matching order."""
        ...

    def expunge(self, folder: str, uids: Sequence[int] | None = None) -> list[int]:
        """Remove \\Deleted messages (only among ``uids`` when given); returns removed UIDs."""
        ...
