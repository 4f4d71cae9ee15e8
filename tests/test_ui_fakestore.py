"""An in-memory MailStore for the UI's pure-logic Pilot tests (UI logic only; the flows are also
run against real stores in test_ui_real*.py). Messages are real RFC 5322 bytes; summaries are
parsed from them with the stdlib, like a store would from ENVELOPE. Every call is written to
``calls`` and traced as C:/S: lines so tests can assert on what the UI asked for."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, parsedate_to_datetime

from tui_mail.errors import FolderError, MessageGone
from tui_mail.store.base import (SEEN, Cancel, Change, FolderInfo, FolderState, MailStore,
                                 MessageSummary, Progress)

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)

ROLES = {"INBOX": "inbox", "Sent": "sent", "Drafts": "drafts", "Trash": "trash", "Archive": "archive"}


def make_message(i: int, *, subject: str | None = None, sender=("Alice Crêpe", "alice@crepes.fr"),
                 to="bob@hamburger.edu", body: str | None = None, when: datetime | None = None,
                 attach: bytes | None = None, msgid: str | None = None, in_reply_to: str = "") -> bytes:
    m = EmailMessage()
    m["From"] = f"{sender[0]} <{sender[1]}>"
    m["To"] = to
    m["Subject"] = subject if subject is not None else f"Message number {i}"
    m["Date"] = format_datetime(when or (NOW - timedelta(hours=i)))
    m["Message-ID"] = msgid or f"<m{i}@crepes.fr>"
    if in_reply_to:
        m["In-Reply-To"] = in_reply_to
        m["References"] = in_reply_to
    m.set_content(body if body is not None else f"Body of message {i}.\nSee https://example.org/{i}\n")
    if attach is not None:
        m.add_attachment(attach, maintype="application", subtype="octet-stream", filename="data.bin")
    return m.as_bytes(policy=policy.SMTP)


def summarize(uid: int, raw: bytes, flags: frozenset[str]) -> MessageSummary:
    msg = message_from_bytes(raw, policy=policy.default)
    frm = msg["From"]
    addr = frm.addresses[0] if frm is not None and frm.addresses else None
    try:
        date = parsedate_to_datetime(str(msg["Date"])) if msg["Date"] else None
    except (TypeError, ValueError):
        date = None
    return MessageSummary(
        uid=uid, date=date,
        from_name=(addr.display_name or addr.addr_spec) if addr else "",
        from_addr=addr.addr_spec if addr else "",
        to=str(msg["To"] or ""), cc=str(msg["Cc"] or ""), subject=str(msg["Subject"] or ""),
        flags=flags, size=len(raw), has_attachment=any(True for _ in msg.iter_attachments()),
        message_id=str(msg["Message-ID"] or ""), in_reply_to=str(msg["In-Reply-To"] or ""),
        references=tuple(str(msg["References"] or "").split()))


class FakeStore(MailStore):
    def __init__(self, folders: Iterable[str] = ("INBOX", "Sent", "Drafts", "Trash", "Archive"),
                 uidplus: bool = True):
        self.lock = threading.RLock()
        self.folders: dict[str, dict[int, tuple[bytes, set[str]]]] = {f: {} for f in folders}
        self.next_uid: dict[str, int] = {f: 1 for f in folders}
        self.uidplus = uidplus
        self.calls: list[tuple] = []
        self.watcher: Callable[[Change], None] | None = None
        self.watched: str | None = None
        self.connected = False

    # helpers for tests
    def add(self, folder: str, raw: bytes, flags: Iterable[str] = ()) -> int:
        with self.lock:
            uid = self.next_uid[folder]
            self.next_uid[folder] += 1
            self.folders[folder][uid] = (raw, set(flags))
            return uid

    def deliver(self, folder: str, raw: bytes) -> int:
        uid = self.add(folder, raw)
        if self.watcher is not None and self.watched == folder:
            self.watcher(Change(folder, "exists", (uid,)))
        return uid

    def _log(self, *call) -> None:
        self.calls.append(call)
        if self.trace is not None:
            self.trace("C", " ".join(str(c) for c in call))
            self.trace("S", "OK")

    def _box(self, folder: str) -> dict[int, tuple[bytes, set[str]]]:
        try:
            return self.folders[folder]
        except KeyError:
            raise FolderError(f"No folder named {folder!r}") from None

    # MailStore
    def connect(self) -> None:
        self._log("LOGIN", "bob", "****")
        self.connected = True

    def close(self) -> None:
        self.connected = False

    def list_folders(self, with_counts: bool = True) -> list[FolderInfo]:
        with self.lock:
            self._log("LIST")
            return [FolderInfo(name, "/", ROLES.get(name), frozenset(),
                               len(box) if with_counts else None,
                               sum(1 for _, fl in box.values() if SEEN not in fl) if with_counts else None)
                    for name, box in self.folders.items()]

    def create_folder(self, name: str) -> None:
        with self.lock:
            self._log("CREATE", name)
            if name in self.folders:
                raise FolderError(f"Folder {name!r} already exists")
            self.folders[name] = {}
            self.next_uid[name] = 1

    def rename_folder(self, old: str, new: str) -> None:
        with self.lock:
            self._log("RENAME", old, new)
            self.folders[new] = self.folders.pop(old)
            self.next_uid[new] = self.next_uid.pop(old)

    def delete_folder(self, name: str) -> None:
        with self.lock:
            self._log("DELETE", name)
            self._box(name)
            del self.folders[name]

    def folder_state(self, folder: str, sort: str = "date") -> FolderState:
        with self.lock:
            self._log("SELECT", folder)
            box = self._box(folder)
            uids = sorted(box)
            if sort in ("date", "from", "subject", "size"):
                sums = {u: summarize(u, box[u][0], frozenset(box[u][1])) for u in uids}
                key = {"date": lambda u: (sums[u].date or NOW, u),
                       "from": lambda u: (sums[u].from_name.lower(), u),
                       "subject": lambda u: (sums[u].subject.lower(), u),
                       "size": lambda u: (sums[u].size, u)}[sort]
                uids.sort(key=key)
            return FolderState(folder, 1, tuple(uids))

    def cached_summaries(self, folder: str, uids: Sequence[int]) -> dict[int, MessageSummary]:
        return {}

    def summaries(self, folder: str, uids: Sequence[int]) -> dict[int, MessageSummary]:
        with self.lock:
            self._log("FETCH", folder, len(uids))
            box = self._box(folder)
            return {u: summarize(u, box[u][0], frozenset(box[u][1])) for u in uids if u in box}

    def fill_cache(self, folder: str, progress: Callable[[Progress], None] | None = None,
                   cancel: Cancel | None = None, chunk: int = 1000) -> None:
        total = len(self._box(folder))
        if progress:
            progress(Progress(total, total))

    def fetch_message(self, folder: str, uid: int, full: bool = False) -> bytes:
        with self.lock:
            self._log("FETCH BODY", folder, uid)
            try:
                return self._box(folder)[uid][0]
            except KeyError:
                raise MessageGone(f"Message {uid} is no longer in {folder}") from None

    def fetch_part(self, folder: str, uid: int, part: str) -> bytes:
        msg = message_from_bytes(self.fetch_message(folder, uid, True), policy=policy.default)
        parts = [msg] if not msg.is_multipart() else msg.get_payload()
        return parts[int(part.split(".")[0]) - 1].get_payload(decode=True)

    def set_flags(self, folder: str, uids: Iterable[int], flags: Iterable[str], add: bool = True) -> None:
        with self.lock:
            uids, flags = list(uids), set(flags)
            self._log("STORE", folder, uids, "+" if add else "-", sorted(flags))
            box = self._box(folder)
            for u in uids:
                if u in box:
                    (box[u][1].update if add else box[u][1].difference_update)(flags)

    def copy(self, folder: str, uids: Iterable[int], dest: str) -> dict[int, int]:
        with self.lock:
            uids = list(uids)
            self._log("COPY", folder, uids, dest)
            box, target = self._box(folder), self._box(dest)
            out = {u: self.add(dest, box[u][0], box[u][1]) for u in uids if u in box}
            del target  # checked above
            return out if self.uidplus else {}

    def move(self, folder: str, uids: Iterable[int], dest: str) -> dict[int, int]:
        with self.lock:
            uids = list(uids)
            out = self.copy(folder, uids, dest)
            for u in uids:
                self.folders[folder].pop(u, None)
            self._log("MOVE", folder, uids, dest)
            return out

    def delete(self, folder: str, uids: Iterable[int]) -> dict[int, int]:
        if folder == "Trash":
            self.expunge(folder, uids)
            return {}
        return self.move(folder, uids, "Trash")

    def expunge(self, folder: str, uids: Iterable[int]) -> None:
        with self.lock:
            uids = list(uids)
            self._log("EXPUNGE", folder, uids)
            for u in uids:
                self._box(folder).pop(u, None)

    def append(self, folder: str, data: bytes, flags: Iterable[str] = (), date: datetime | None = None) -> int | None:
        with self.lock:
            self._log("APPEND", folder)
            self._box(folder)
            return self.add(folder, data, flags)

    def search(self, folder: str, query: str) -> list[int]:
        with self.lock:
            self._log("SEARCH", folder, query)
            q = query.lower().split(":")[-1]
            return [u for u, (raw, _) in self._box(folder).items() if q in raw.decode("utf-8", "replace").lower()]

    def local_search(self, folder: str | None, query: str) -> list[tuple[str, int]]:
        q = query.lower().split(":")[-1]
        with self.lock:
            return [(folder, u) for u, (raw, _) in self._box(folder).items()
                    if q in summarize(u, raw, frozenset()).subject.lower()] if folder else []

    def watch(self, folder: str, callback: Callable[[Change], None]) -> None:
        self.watched, self.watcher = folder, callback

    def stop_watch(self) -> None:
        self.watched = self.watcher = None


def seeded_store(n: int = 30) -> FakeStore:
    store = FakeStore()
    for i in range(n):
        flags = {SEEN} if i % 3 else set()
        store.add("INBOX", make_message(i, attach=b"\x00\x01" if i == 2 else None), flags)
    store.add("Sent", make_message(100, subject="Sent one"), {SEEN})
    return store


def test_fake_store_keeps_the_contract_shape():
    store = seeded_store(5)
    state = store.folder_state("INBOX")
    assert len(state.uids) == 5 and state.uids[-1] == 1   # oldest first: message 0 is newest
    sums = store.summaries("INBOX", state.uids)
    assert sums[3].has_attachment and sums[1].unread and not sums[2].unread
    moved = store.move("INBOX", [1], "Archive")
    assert moved == {1: 1} and 1 not in store.folders["INBOX"]
