"""Mail on disk is private to its user: 0700 directories, 0600 files (issue 10, item 4).

Real stores on real files: the local Maildir store (POP3 accounts' mail and drafts), its
index and full-text search database, a POP3 download from Dovecot, the SQLite header cache
(with its FTS index) and the outbox. Stores made by an older version (0755/0644) are fixed
when opened.
"""

from __future__ import annotations

import os
import stat
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.peers import dovecot, make_message  # noqa: F401  (fixture)
from tui_mail.send.outbox import Outbox
from tui_mail.store.base import DRAFT
from tui_mail.store.cache import HeaderCache
from tui_mail.store.local import LocalStore
from tui_mail.store.pop3 import Pop3Settings, Pop3Store


@pytest.fixture(autouse=True)
def usual_umask():
    """The usual umask, under which everything would be 0755/0644 unless made private."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = stat.S_IMODE(p.lstat().st_mode)
    return out


def assert_private(root: Path) -> dict[str, int]:
    found = modes(root)
    wrong = {name: oct(mode) for name, mode in found.items()
             if mode != (0o700 if (root / name).is_dir() else 0o600)}
    assert not wrong, wrong
    return found


def message(i: int) -> bytes:
    return make_message(i)


def test_local_store_mail_index_search_and_drafts_are_private(tmp_path):
    root = tmp_path / "data" / "accounts" / "bob"
    store = LocalStore(root)
    try:
        store.connect()
        store.create_folder("Drafts")
        store.append("INBOX", message(1))
        store.append("Drafts", message(2), flags=[DRAFT])
        store.local_search("INBOX", "from:sender")        # builds the FTS index
    finally:
        store.close()
    found = assert_private(root)
    assert any(name.startswith(".Drafts/cur/") or name.startswith(".Drafts/new/") for name in found)
    assert ".tui-mail-index.sqlite" in found and ".tui-mail-search.sqlite" in found
    assert stat.S_IMODE((tmp_path / "data" / "accounts").stat().st_mode) == 0o700


def test_store_made_by_an_older_version_is_fixed_on_open(tmp_path):
    root = tmp_path / "old"
    for sub in ("cur", "new", "tmp", ".Sent/cur", ".Sent/new", ".Sent/tmp"):
        (root / sub).mkdir(parents=True)
        os.chmod(root / sub, 0o755)
    os.chmod(root, 0o755)
    os.chmod(root / ".Sent", 0o755)
    (root / "new" / "1.host").write_bytes(message(1))
    (root / ".Sent" / "cur" / "2.host:2,S").write_bytes(message(2))
    (root / ".Sent" / "maildirfolder").write_bytes(b"")
    assert modes(root)["new/1.host"] == 0o644
    store = LocalStore(root)
    try:
        store.connect()
        assert len(store.folder_state("INBOX", sort="date").uids) == 1
    finally:
        store.close()
    assert_private(root)


def test_header_cache_and_its_fts_index_are_private(tmp_path):
    path = tmp_path / "cache" / "tui-mail" / "bob.sqlite"
    cache = HeaderCache(path)
    cache.close()
    assert_private(tmp_path / "cache" / "tui-mail")
    assert {p.name for p in path.parent.iterdir()} >= {"bob.sqlite"}


def test_outbox_is_private(tmp_path):

    async def send(data, sender, recipients):       # never called: nothing is processed
        raise AssertionError

    root = tmp_path / "outbox"
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.org", "b@example.org", "queued"
    msg.set_content("private words")
    with Outbox(root, send=send).open() as outbox:
        outbox.enqueue(msg)
    found = assert_private(root)
    assert any(n.startswith(("new/", "cur/")) for n in found)


def test_pop3_download_is_private(dovecot, tmp_path):  # noqa: F811
    dovecot.add_user("bob", "pop pass")
    dovecot.seed("bob", 3)
    store = Pop3Store(tmp_path / "bob", Pop3Settings(host=dovecot.host, port=dovecot.pop3_port,
                                                     security="none", user="bob", password="pop pass"))
    try:
        assert store.sync().downloaded == 3
    finally:
        store.close()
    found = assert_private(tmp_path / "bob")
    assert sum(1 for n in found if n.startswith(("new/", "cur/"))) == 3
