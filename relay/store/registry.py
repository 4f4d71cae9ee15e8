"""MailStore: the relay's one entry point to users' mail, keeping one UserStore per address so
that every session, delivery and server of the same user shares one lock and one index
connection."""

from __future__ import annotations

import threading
from pathlib import Path

from relay.delivery import maildir_for
from relay.events import ChangeBus
from relay.store.mailbox import UserStore
from relay.store.types import StoreError


class MailStore:
    def __init__(self, mail_dir: Path, bus: ChangeBus | None = None) -> None:
        self.mail_dir = Path(mail_dir)
        self.bus = bus if bus is not None else ChangeBus()
        self._lock = threading.Lock()
        self._users: dict[str, UserStore] = {}
        self._opening: dict[str, threading.Lock] = {}

    def user(self, address: str) -> UserStore:
        """The store of ``address`` (created with the default folders on first use). Opening
        one user waits on that user's lock, which another relay process may hold for a while
        (the first index of a big Maildir): only callers for that user wait, not everyone."""
        key = address.strip().lower()
        with self._lock:
            store = self._users.get(key)
            if store is not None:
                return store
            opening = self._opening.setdefault(key, threading.Lock())
        with opening:
            with self._lock:
                store = self._users.get(key)
            if store is None:
                try:
                    root = maildir_for(self.mail_dir, key)
                except ValueError as e:
                    raise StoreError(str(e), "CANNOT") from None
                store = UserStore(root, key, self.bus)
                with self._lock:
                    self._users[key] = store
                    self._opening.pop(key, None)
            return store

    def close(self) -> None:
        with self._lock:
            users, self._users = list(self._users.values()), {}
        for u in users:
            u.close()

    def __enter__(self) -> "MailStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
