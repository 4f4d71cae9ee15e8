"""ImapStore checks that must hold on any IMAP server: tests/test_store_imap.py runs them against
Dovecot, tests/test_client_vs_relay.py against the relay. Each takes a connected-or-not
ImapStore logged in as a user whose mailbox the caller has seeded as the check says."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from tests.peers import make_message
from tui_mail.errors import FolderError
from tui_mail.store.base import Change
from tui_mail.store.imap import ImapStore


def check_create_rename_delete_folder_and_errors(store: ImapStore) -> None:
    """Any mailbox: create, duplicate create, rename, delete; a missing folder is a FolderError."""
    store.create_folder("Work")
    with pytest.raises(FolderError):
        store.create_folder("Work")
    store.rename_folder("Work", "Job")
    names = {f.name for f in store.list_folders(with_counts=False)}
    assert "Job" in names and "Work" not in names
    store.delete_folder("Job")
    assert "Job" not in {f.name for f in store.list_folders(with_counts=False)}
    with pytest.raises(FolderError):
        store.folder_state("Nope")
    with pytest.raises(FolderError):
        store.delete_folder("Nope")


def check_flags_copy_move_delete_expunge_append(store: ImapStore, empty_folders: dict[str, int]) -> None:
    """INBOX holds make_message(0..9) as UIDs 1..10, Junk/Sent/Trash/Drafts are empty;
    ``empty_folders``: the server's other folders, which stay empty (name → 0)."""
    uids = store.folder_state("INBOX").uids
    store.summaries("INBOX", uids)
    store.set_flags("INBOX", [1, 2], ["\\Seen", "\\Flagged", "$Forwarded"])
    store.set_flags("INBOX", [2], ["\\Flagged"], add=False)
    c = store.cached_summaries("INBOX", [1, 2])
    assert c[1].flags == {"\\Seen", "\\Flagged", "$Forwarded"}
    assert c[2].flags == {"\\Seen", "$Forwarded"}
    assert store.copy("INBOX", [1, 2], "Junk") == {1: 1, 2: 2}
    assert store.move("INBOX", [3, 4], "Sent") == {3: 1, 4: 2}
    assert 3 not in store.cached_summaries("INBOX", [3])
    assert store.delete("INBOX", [5]) == {5: 1}              # to Trash
    assert store.delete("Trash", [1]) == {}                   # in Trash: gone for good
    store.expunge("INBOX", [6])
    counts = {f.name: f.total for f in store.list_folders()}
    assert counts == {"INBOX": 6, "Junk": 2, "Sent": 2, "Trash": 0, "Drafts": 0, **empty_folders}
    assert store.folder_state("INBOX").uids == (1, 2, 7, 8, 9, 10)
    # copied flags travel with the message
    junk = store.summaries("Junk", [1, 2])
    assert junk[1].flags == {"\\Seen", "\\Flagged", "$Forwarded"}
    new_uid = store.append("Drafts", make_message(99), flags=["\\Draft"])
    assert new_uid == 1
    got = store.summaries("Drafts", [new_uid])[new_uid]
    assert got.subject == "Message 99 about topic 8" and "\\Draft" in got.flags
    assert store.fetch_message("Drafts", new_uid, full=True) == make_message(99)


def check_move_without_the_move_extension(store: ImapStore) -> None:
    """INBOX holds 5 messages as UIDs 1..5: with MOVE hidden, move is UID COPY + UID EXPUNGE."""
    store.connect()
    store._caps = store._caps - {b"MOVE"}
    lines = []
    store.trace = lambda d, line: lines.append(line)
    assert store.move("INBOX", [2, 3], "Trash") == {2: 1, 3: 2}
    assert any("UID COPY" in x for x in lines) and any("UID EXPUNGE" in x for x in lines)
    assert store.folder_state("INBOX").uids == (1, 4, 5)


def new_mail_while_watching(store: ImapStore, deliver: Callable[[], object]) -> tuple[list[Change], float]:
    """Watch INBOX (in IDLE), call ``deliver`` and wait up to 3 s for an "exists" change; stop
    the watch and check its thread is gone. Returns the changes and the seconds from delivery
    to the change."""
    got: list[Change] = []
    arrived = threading.Event()

    def cb(change):
        got.append(change)
        if change.kind == "exists":
            arrived.set()

    store.watch("INBOX", cb)
    time.sleep(0.3)      # the watcher logs in and enters IDLE
    t0 = time.monotonic()
    deliver()
    assert arrived.wait(3), got
    latency = time.monotonic() - t0
    store.stop_watch()
    assert not [t for t in threading.enumerate() if t.name.startswith("imap-watch")]
    return got, latency


def hide_idle(store: ImapStore) -> None:
    """Every connection ``store`` opens from now on pretends the server has no IDLE (the watch
    falls back to polling with NOOP)."""
    orig_open = store._open

    def open_without_idle():
        c = orig_open()
        store._caps = store._caps - {b"IDLE"}
        return c

    store._open = open_without_idle
