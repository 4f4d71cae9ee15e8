"""In-process change notification between the relay's parts.

Local delivery, APPEND, COPY/MOVE and EXPUNGE publish ``(user, folder)``; IMAP sessions in
IDLE (and the POP3 server) subscribe. Callbacks run synchronously in the publisher's thread
and must be cheap (typically ``loop.call_soon_threadsafe`` or setting an asyncio.Event).
With several relay processes, relay/feed.py carries each publish to the others' buses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Listener = Callable[[str, str], None]


class ChangeBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, list[Listener]] = {}
        # another process's share of every publish (relay/feed.py), None in a single process
        self.remote: Listener | None = None

    def subscribe(self, user: str, callback: Listener) -> Callable[[], None]:
        """Call ``callback(user, folder)`` on every change to user's mail; returns unsubscribe."""
        key = user.lower()
        with self._lock:
            self._listeners.setdefault(key, []).append(callback)

        def unsubscribe() -> None:
            with self._lock:
                lst = self._listeners.get(key, [])
                if callback in lst:
                    lst.remove(callback)
                if not lst:
                    self._listeners.pop(key, None)

        return unsubscribe

    def publish(self, user: str, folder: str = "INBOX") -> None:
        """Tell this process's listeners, and (with a relay/feed.py Feed) the other processes."""
        remote = self.remote
        if remote is not None:
            remote(user, folder)
        self.publish_local(user, folder)

    def publish_local(self, user: str, folder: str = "INBOX") -> None:
        """Tell this process's listeners only (what a Feed does with another process's news)."""
        with self._lock:
            listeners = list(self._listeners.get(user.lower(), ()))
        for cb in listeners:
            cb(user, folder)
