"""Plain value types the mailbox store hands out (no behaviour, safe to pass between threads)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from relay.errors import RelayError

_TZS: dict[int, _dt.timezone] = {}


def offset_tz(minutes: int) -> _dt.timezone:
    """The fixed-offset timezone of ``minutes`` east of UTC, made once per offset (INTERNALDATEs
    are stored as a timestamp and an offset; most mail has one of a few)."""
    tz = _TZS.get(minutes)
    if tz is None:
        tz = _TZS[minutes] = _dt.timezone(_dt.timedelta(minutes=minutes))
    return tz

SYSTEM_FLAGS = ("\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen")


class StoreError(RelayError):
    """A store operation was refused or failed.

    ``code`` is the IMAP response code a server should send with the NO (TRYCREATE,
    NONEXISTENT, ALREADYEXISTS, CANNOT, SERVERBUG, …) or ""."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class MessageRecord(NamedTuple):
    """One message as the index knows it. ``flags`` holds system flags (``\\Seen``…) and
    keywords (``$Forwarded``, ``Work``…) as given; ``internaldate`` is timezone-aware.
    A NamedTuple rather than a dataclass: FETCH over 100,000 messages builds 100,000 of them
    and tuples are four times cheaper to make."""

    uid: int
    flags: frozenset[str]
    size: int
    internaldate: _dt.datetime
    modseq: int
    name: str = ""          # Maildir unique part (before ':'), stable for the message's life
    vsize: int = 0          # size with every line ending CRLF (what POP3 sends; == size for
                            # delivered mail, which is CRLF already)


@dataclass(frozen=True)
class FolderInfo:
    name: str               # "INBOX", "Sent", "Archive/2025" ("/" separates hierarchy levels)
    special_use: str = ""   # "\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive" or ""
    selectable: bool = True
    has_children: bool = False


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    uids: Sequence[int]     # ascending
    version: int            # changes whenever anything in the folder changes (== highestmodseq
                            # combined with uidnext; compare with ``!=``)


@dataclass(frozen=True)
class HeaderFields:
    """Decoded header fields kept in index columns for fast SEARCH (RFC 2047 decoded,
    unfolded; "" when absent). ``date`` is the Date: header as a Unix time or None."""

    subject: str
    from_: str
    to: str
    cc: str
    bcc: str
    message_id: str
    date: float | None
    references: str = ""    # raw (unfolded) References header, for THREAD=REFERENCES
