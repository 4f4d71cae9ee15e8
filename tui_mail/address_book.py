"""The address book behind To/Cc/Bcc completion: three sources, best first.

1. The contacts index: every address on the mail you received (senders) and sent (recipients),
   ranked by frequency and recency (tui_mail.mail.contacts.rank), kept in the client cache
   (``$XDG_CACHE_HOME/tui-mail/contacts.sqlite``, 0600) and rebuilt in a background worker
   from the stores' header caches, so it is there at the next start before any network.
2. ``address_book_dir``: a directory of vCard files (``*.vcf``, e.g. a vdirsyncer/khard
   collection), read once on first use; files over 1 MiB and more than 5,000 files are skipped.
3. ``address_book_command``: aerc's ``address-book-cmd`` convention — a program that prints
   ``address<TAB>name`` lines, given the typed text as its last argument (``khard email
   --parsable``, ``abook --mutt-query``, ``notmuch address``). The setting is split with shlex
   and run WITHOUT a shell; the query is one argv element, never interpolated into a command
   line. It runs with a 3-second deadline, stdin closed, output capped at 1 MiB.
"""

from __future__ import annotations

import logging
import shlex
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from tui_mail.mail.contacts import (Contact, Seen, matches, observations, parse_command_output,
                                    parse_vcards, rank)

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 3.0
MAX_OUTPUT = 1 << 20
MAX_VCARD_FILES = 5000
MAX_VCARD_BYTES = 1 << 20
MAX_INDEX = 20000            # contacts kept in the index


class AddressBook:
    def __init__(self, index_path: str | Path | None = None, command: str | None = None,
                 vcard_dir: str | Path | None = None, own: Iterable[str] = ()):
        self.index_path = Path(index_path) if index_path else None
        self.command = shlex.split(command) if command else None
        self.vcard_dir = Path(vcard_dir).expanduser() if vcard_dir else None
        self.own = [a.lower() for a in own]
        self._ranked: list[Contact] = []
        self._vcards: list[Contact] | None = None
        self._lock = threading.Lock()

    # --- the contacts index ------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        from tui_mail.store.private import private_dir, private_file

        assert self.index_path is not None
        private_dir(self.index_path.parent)
        private_file(self.index_path)
        db = sqlite3.connect(self.index_path)
        db.execute("CREATE TABLE IF NOT EXISTS contacts (address TEXT PRIMARY KEY, name TEXT, "
                   "score REAL)")
        return db

    def load(self) -> list[Contact]:
        """The ranked contacts saved by the last rebuild (no mail read)."""
        if self.index_path is None or not self.index_path.exists():
            return self._ranked
        try:
            db = self._db()
            try:
                rows = db.execute("SELECT address, name, score FROM contacts ORDER BY score DESC, "
                                  "address").fetchall()
            finally:
                db.close()
        except sqlite3.Error as e:
            log.warning("contacts index unreadable: %s", e)
            return self._ranked
        with self._lock:
            self._ranked = [Contact(a, n or "", s) for a, n, s in rows]
        return self._ranked

    def rebuild(self, seen: Iterable[Seen], now: float | None = None) -> list[Contact]:
        """Rank ``seen`` (every address on the mail read) and save it as the index."""
        ranked = rank(seen, time.time() if now is None else now, self.own)[:MAX_INDEX]
        with self._lock:
            self._ranked = ranked
        if self.index_path is not None:
            try:
                db = self._db()
                try:
                    with db:
                        db.execute("DELETE FROM contacts")
                        db.executemany("INSERT OR REPLACE INTO contacts VALUES (?,?,?)",
                                       [(c.address, c.name, c.score) for c in ranked])
                finally:
                    db.close()
            except sqlite3.Error as e:
                log.warning("contacts index not saved: %s", e)
        return ranked

    @property
    def ranked(self) -> list[Contact]:
        with self._lock:
            return list(self._ranked)

    # --- vCards ------------------------------------------------------------------------
    def vcards(self) -> list[Contact]:
        if self._vcards is None:
            self._vcards = self._read_vcards()
        return self._vcards

    def _read_vcards(self) -> list[Contact]:
        out: list[Contact] = []
        if self.vcard_dir is None or not self.vcard_dir.is_dir():
            return out
        files = sorted(p for p in self.vcard_dir.rglob("*") if p.suffix.lower() in (".vcf", ".vcard"))
        for path in files[:MAX_VCARD_FILES]:
            try:
                if not path.is_file() or path.stat().st_size > MAX_VCARD_BYTES:
                    continue
                out.extend(parse_vcards(path.read_text(encoding="utf-8", errors="replace")))
            except OSError:
                continue
        return out

    # --- the command -------------------------------------------------------------------
    def run_command(self, query: str) -> list[Contact]:
        """The command's contacts for ``query`` (blocking: call it from a thread)."""
        if not self.command or not query.strip():
            return []
        argv = [*self.command, query]
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            log.warning("address_book_command %r failed: %s", self.command[0], type(e).__name__)
            return []
        return parse_command_output(done.stdout[:MAX_OUTPUT].decode("utf-8", "replace"))

    # --- completion --------------------------------------------------------------------
    def lookup(self, query: str, limit: int = 20, command: bool = True) -> list[Contact]:
        """Contacts for ``query``: the index (most used first), then vCards, then the command;
        one per address."""
        found: list[Contact] = []
        seen: set[str] = set()
        sources = [lambda: matches(self.ranked, query, limit), lambda: matches(self.vcards(), query, limit)]
        if command:
            sources.append(lambda: self.run_command(query))
        for source in sources:
            for c in source():
                if c.address.lower() not in seen:
                    seen.add(c.address.lower())
                    found.append(c)
            if len(found) >= limit:
                break
        return found[:limit]

    def entries(self) -> list[str]:
        """Every known contact as the composer inserts it, best first (index, then vCards)."""
        out, seen = [], set()
        for c in [*self.ranked, *self.vcards()]:
            if c.address.lower() not in seen:
                seen.add(c.address.lower())
                out.append(c.entry)
        return out


def contact_rows(store, folder: str) -> Iterable[tuple]:
    """``(from_name, from_addr, to, cc, unix_date)`` of every message of ``folder`` the store
    has locally (its header cache; never the network), for the contacts index."""
    cache = getattr(store, "cache", None)
    account = getattr(store, "account", None)
    if cache is not None and account is not None and hasattr(cache, "contact_fields"):
        return cache.contact_fields(account, folder)
    state = store.cached_folder_state(folder)
    if state is None:
        try:
            state = store.folder_state(folder)
        except Exception:  # noqa: BLE001 - a folder we cannot list adds no contacts
            return []
    return _summary_rows(store, folder, list(state.uids))


def _summary_rows(store, folder: str, uids: list[int]) -> Iterator[tuple]:
    for i in range(0, len(uids), 2000):
        for s in store.cached_summaries(folder, uids[i:i + 2000]).values():
            yield (s.from_name, s.from_addr, s.to, s.cc, s.date.timestamp() if s.date else None)


def observations_of(store, received: Iterable[str], sent: Iterable[str]) -> Iterator[Seen]:
    """Every address seen in the ``received`` folders (senders) and ``sent`` folders
    (recipients), as they are read (rank() folds them in one by one: nothing is held)."""
    for folders, is_sent in ((received, False), (sent, True)):
        for folder in folders:
            for from_name, from_addr, to, cc, when in contact_rows(store, folder):
                yield from observations(from_name or "", from_addr or "", to or "", cc or "", when, is_sent)
