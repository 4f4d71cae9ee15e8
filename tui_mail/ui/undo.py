"""The undo journal (z): what was done to which messages, and how to put it back.

Pure bookkeeping, no Textual and no I/O: the app records each change with the information the
store returned (the old → new UID map of move()/copy()/delete(), which IMAP UIDPLUS makes
exact), and `inverse()` turns the newest entry into the operation that reverses it. The app runs
that operation in a worker. A move whose map the server did not give cannot be reversed exactly;
`inverse()` then says so instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class FlagChange:
    """``flag`` was added (``added=True``) to or removed from ``uids`` in ``folder``."""

    folder: str
    uids: tuple[int, ...]
    flag: str
    added: bool
    label: str = "flag"


@dataclass(frozen=True)
class Relocation:
    """Messages moved from ``source`` to ``dest``; ``uid_map`` is old uid → uid in ``dest``."""

    source: str
    dest: str
    uid_map: dict[int, int]
    uids: tuple[int, ...]
    kind: Literal["move", "delete", "archive"] = "move"


Entry = FlagChange | Relocation


@dataclass(frozen=True)
class UndoFlags:
    folder: str
    uids: tuple[int, ...]
    flag: str
    add: bool


@dataclass(frozen=True)
class UndoMove:
    folder: str           # where the messages are now
    uids: tuple[int, ...]  # their uids there
    dest: str             # where they go back to


class CannotUndo(Exception):
    """The newest entry cannot be reversed exactly (e.g. the server gave no UID map)."""


class UndoJournal:
    """A bounded stack of entries, newest last."""

    def __init__(self, limit: int = 100):
        self.limit = limit
        self._entries: list[Entry] = []

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, entry: Entry) -> None:
        if isinstance(entry, Relocation) and not entry.uids:
            return
        if isinstance(entry, FlagChange) and not entry.uids:
            return
        self._entries.append(entry)
        del self._entries[: -self.limit]

    def peek(self) -> Entry | None:
        return self._entries[-1] if self._entries else None

    def pop(self) -> Entry:
        if not self._entries:
            raise CannotUndo("Nothing to undo")
        return self._entries.pop()

    @staticmethod
    def inverse(entry: Entry) -> UndoFlags | UndoMove:
        if isinstance(entry, FlagChange):
            return UndoFlags(entry.folder, entry.uids, entry.flag, add=not entry.added)
        if not entry.uid_map:
            raise CannotUndo(
                f"Cannot undo the {entry.kind}: the server did not say where the messages went "
                f"(no UIDPLUS); look in {entry.dest!r}")
        moved = tuple(entry.uid_map[u] for u in entry.uids if u in entry.uid_map)
        return UndoMove(folder=entry.dest, uids=moved, dest=entry.source)

    @staticmethod
    def describe(entry: Entry) -> str:
        n = len(entry.uids)
        what = f"{n} message" + ("s" if n != 1 else "")
        if isinstance(entry, FlagChange):
            return f"{entry.label} on {what}"
        return f"{entry.kind} of {what} to {entry.dest}"
