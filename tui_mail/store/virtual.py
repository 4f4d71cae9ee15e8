"""A virtual folder over folders of other stores: the unified inbox (every account's INBOX) and
the results of a search over all folders of an account (``in:all``).

It is a MailStore like any other, so the main screen, the reader, undo and the composer's
\\Answered flagging work on it unchanged: each message gets a synthetic UID that says where it
lives, ``source << 32 | uid`` (IMAP UIDs are 32-bit), and every call is split by source and
passed to the real store with the real folder and UIDs; UIDs coming back (COPYUID mappings,
watch events, search hits) are encoded again.

Folder names seen through it: ``name`` (this virtual folder) is each source's own folder; a
role name (``Trash``, ``Archive``, ``Sent``, ``Drafts``, ``Junk``) is that role's folder in the
source's account, so delete, archive and their undo land in the right account's folders;
any other name is the folder of that name in the source's account.

Order: newest last by date across all sources (like ``folder_state`` of one folder), merged
from each source's own order and the dates in its cache.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from tui_mail.errors import FolderError
from tui_mail.store.base import (Cancel, Change, FolderInfo, FolderState, MailStore,
                                 MessageSummary, Progress)

SHIFT = 32
MASK = (1 << SHIFT) - 1
FETCH_DATES = 2000     # a cold source with more undated messages merges by position
ROLE_NAMES = {"Trash": "trash", "Archive": "archive", "Sent": "sent", "Drafts": "drafts", "Junk": "junk"}


@dataclass(frozen=True)
class Source:
    account: str            # the account's name (the UI's Account.name)
    store: MailStore
    folder: str             # the folder in ``store`` that this virtual folder shows


def encode(source: int, uid: int) -> int:
    return (source << SHIFT) | uid


def decode(key: int) -> tuple[int, int]:
    return key >> SHIFT, key & MASK


class VirtualStore(MailStore):
    def __init__(self, name: str, sources: Sequence[Source], role: str = "inbox"):
        self.name = name
        self.sources = list(sources)
        self.role = role
        self.account = name
        self._lock = threading.Lock()

    # --- where things live ---------------------------------------------------------------
    def source_of(self, key: int) -> Source:
        return self.sources[decode(key)[0]]

    def account_of(self, key: int) -> str:
        return self.source_of(key).account

    def real_folder(self, index: int, folder: str) -> str:
        src = self.sources[index]
        if folder == self.name:
            return src.folder
        role = ROLE_NAMES.get(folder)
        if role is not None:
            real = src.store.folder_for_role(role)
            if real is None:
                raise FolderError(f"{src.account} has no {folder} folder")
            return real
        return folder

    def _split(self, keys: Iterable[int]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for key in keys:
            index, uid = decode(key)
            if index >= len(self.sources):
                continue
            out.setdefault(index, []).append(uid)
        return out

    def folder_names(self) -> list[str]:
        """Folders a move can go to: the role names and every folder all sources have."""
        common: set[str] | None = None
        for src in self.sources:
            names = {f.name for f in src.store.list_folders(with_counts=False) if f.selectable}
            common = names if common is None else common & names
        return sorted(set(ROLE_NAMES) | (common or set()) - {self.name})

    # --- lifecycle -----------------------------------------------------------------------
    def connect(self) -> None:
        for src in self.sources:
            src.store.connect()

    def close(self) -> None:        # the sources belong to their accounts, which close them
        pass

    # --- folders -------------------------------------------------------------------------
    def list_folders(self, with_counts: bool = True) -> list[FolderInfo]:
        total = unread = 0
        if with_counts:
            for src in self.sources:
                for f in src.store.list_folders(with_counts=True):
                    if f.name == src.folder:
                        total += f.total or 0
                        unread += f.unread or 0
        return [FolderInfo(self.name, "/", self.role, frozenset(), total if with_counts else None,
                           unread if with_counts else None)]

    def folder_for_role(self, role: str) -> str | None:
        if role == self.role:
            return self.name
        return next((name for name, r in ROLE_NAMES.items() if r == role), None)

    def create_folder(self, name: str) -> None:
        raise FolderError("folders are made in an account, not in a virtual folder")

    rename_folder = delete_folder = create_folder

    # --- message lists -------------------------------------------------------------------
    def _merge(self, states: list[FolderState | None], sort: str, fetch: bool) -> FolderState:
        """One order from each source's: by date when every message's date is known (from the
        cache; ``fetch``: a cold source's few missing envelopes are fetched), else each
        source's own order interleaved by position."""
        parts = [(i, st.uids) for i, st in enumerate(states) if st is not None and st.uids]
        dated: list[list[tuple]] | None = [] if sort == "date" else None
        for index, uids in parts:
            if dated is None:
                break
            src = self.sources[index]
            dates = {f.uid: _ts(f.date) for f in src.store.thread_fields(src.folder, uids)}
            missing = [u for u in uids if u not in dates]
            if missing and fetch and len(missing) <= FETCH_DATES:
                for u, summary in src.store.summaries(src.folder, missing).items():
                    dates[u] = _ts(summary.date)
                missing = [u for u in uids if u not in dates]
            if missing:
                dated = None
                break
            dated.append(sorted((dates[u], index, u) for u in uids))
        if dated is None:
            dated = [[(i / len(uids), index, u) for i, u in enumerate(uids)] for index, uids in parts]
        merged = tuple(encode(index, uid) for _, index, uid in heapq.merge(*dated))
        return FolderState(self.name, 1, merged)

    def folder_state(self, folder: str, sort: str = "date") -> FolderState:
        self._own(folder)
        return self._merge([src.store.folder_state(src.folder, sort) for src in self.sources], sort, True)

    def cached_folder_state(self, folder: str, sort: str = "date") -> FolderState | None:
        self._own(folder)
        states = [src.store.cached_folder_state(src.folder, sort) for src in self.sources]
        if not any(states):
            return None
        return self._merge(states, sort, False)

    def _own(self, folder: str) -> None:
        if folder != self.name:
            raise FolderError(f"no folder {folder!r} in {self.name}")

    def _summaries(self, folder: str, keys: Sequence[int], cached: bool) -> dict[int, MessageSummary]:
        out: dict[int, MessageSummary] = {}
        for index, uids in self._split(keys).items():
            src = self.sources[index]
            real = self.real_folder(index, folder)
            got = src.store.cached_summaries(real, uids) if cached else src.store.summaries(real, uids)
            for uid, s in got.items():
                key = encode(index, uid)
                out[key] = replace(s, uid=key)
        return out

    def cached_summaries(self, folder: str, uids: Sequence[int]) -> dict[int, MessageSummary]:
        return self._summaries(folder, uids, True)

    def summaries(self, folder: str, uids: Sequence[int]) -> dict[int, MessageSummary]:
        return self._summaries(folder, uids, False)

    def thread_fields(self, folder: str, uids: Sequence[int]) -> list:
        out = []
        for index, real_uids in self._split(uids).items():
            src = self.sources[index]
            for f in src.store.thread_fields(self.real_folder(index, folder), real_uids):
                key = encode(index, f.uid)
                out.append(f._replace(uid=key) if isinstance(f, tuple) else replace(f, uid=key))
        return out

    def fill_cache(self, folder: str, progress: Callable[[Progress], None] | None = None,
                   cancel: Cancel | None = None, chunk: int = 1000) -> None:
        for index, src in enumerate(self.sources):
            src.store.fill_cache(self.real_folder(index, folder), progress=progress, cancel=cancel,
                                 chunk=chunk)

    # --- one message ---------------------------------------------------------------------
    def fetch_message(self, folder: str, uid: int, full: bool = False) -> bytes:
        index, real_uid = decode(uid)
        return self.sources[index].store.fetch_message(self.real_folder(index, folder), real_uid, full)

    def fetch_part(self, folder: str, uid: int, part: str) -> bytes:
        index, real_uid = decode(uid)
        return self.sources[index].store.fetch_part(self.real_folder(index, folder), real_uid, part)

    # --- changes -------------------------------------------------------------------------
    def set_flags(self, folder: str, uids: Iterable[int], flags: Iterable[str], add: bool = True) -> None:
        flags = list(flags)
        for index, real in self._split(uids).items():
            self.sources[index].store.set_flags(self.real_folder(index, folder), real, flags, add)

    def _relocate(self, verb: str, folder: str, uids: Iterable[int], dest: str | None) -> dict[int, int]:
        out: dict[int, int] = {}
        for index, real in self._split(uids).items():
            store = self.sources[index].store
            src_folder = self.real_folder(index, folder)
            if verb == "delete":
                mapping = store.delete(src_folder, real)
            else:
                mapping = getattr(store, verb)(src_folder, real, self.real_folder(index, dest))
            out.update({encode(index, a): encode(index, b) for a, b in (mapping or {}).items()})
        return out

    def copy(self, folder: str, uids: Iterable[int], dest: str) -> dict[int, int]:
        return self._relocate("copy", folder, uids, dest)

    def move(self, folder: str, uids: Iterable[int], dest: str) -> dict[int, int]:
        return self._relocate("move", folder, uids, dest)

    def delete(self, folder: str, uids: Iterable[int]) -> dict[int, int]:
        return self._relocate("delete", folder, uids, None)

    def expunge(self, folder: str, uids: Iterable[int]) -> None:
        for index, real in self._split(uids).items():
            self.sources[index].store.expunge(self.real_folder(index, folder), real)

    def append(self, folder: str, data: bytes, flags: Iterable[str] = (), date: datetime | None = None) -> int | None:
        raise FolderError("a virtual folder holds other folders' mail; save to an account's folder")

    # --- search --------------------------------------------------------------------------
    def search(self, folder: str, query: str) -> list[int]:
        out = []
        for index, src in enumerate(self.sources):
            out += [encode(index, u) for u in src.store.search(self.real_folder(index, folder), query)]
        return out

    def local_search(self, folder: str | None, query: str) -> list[tuple[str, int]]:
        out = []
        for index, src in enumerate(self.sources):
            real = src.folder if folder in (None, self.name) else self.real_folder(index, folder)
            out += [(self.name, encode(index, u)) for f, u in src.store.local_search(real, query) if f == real]
        return out

    # --- new mail ------------------------------------------------------------------------
    def watch(self, folder: str, callback: Callable[[Change], None]) -> None:
        for index, src in enumerate(self.sources):
            def relay(change: Change, index: int = index) -> None:
                callback(Change(self.name, change.kind, tuple(encode(index, u) for u in change.uids)))

            src.store.watch(src.folder, relay)

    def stop_watch(self) -> None:
        for src in self.sources:
            src.store.stop_watch()


def _ts(value) -> float:
    if value is None:
        return 0.0
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)
