"""The per-user lock of relay.store: one object that is the in-process ``threading.RLock``, a
cross-process lock and the staleness check together, so UserStore stays correct when several
relay processes (the master delivering, workers serving IMAP/POP3) open the same user.

How: the outermost ``with lock:`` of a thread takes the RLock, then ``fcntl.flock(LOCK_EX)`` on
``tui-mail-index.lock`` beside the index (its own open file description, so it also excludes
other UserStore objects of the same process), then calls ``on_acquire()`` — UserStore compares
SQLite's ``PRAGMA data_version`` with the value it saw last and, when another connection
committed in between, drops what it keeps in memory (see UserStore._reload_shared). Nested
``with`` blocks (methods calling methods) only count. The flock is released when the outermost
block ends, and by the kernel when the process dies (SIGKILL included), so a killed holder never
wedges the others.

Why flock and not SQLite's own locking (BEGIN IMMEDIATE) alone: a store operation is more than
one transaction. It reads the folder row (UIDNEXT, HIGHESTMODSEQ), works on files (writes the
message, renames for flags, the COPY journal and its staged links, dovecot-keywords, the
UIDVALIDITY marker) and then commits; a COPY commits up to three times. All of it must be one
critical section, or two processes hand out one UID twice, or a store opening elsewhere "recovers"
(deletes) a COPY journal that is still being written. Why always exclusive, readers included:
almost every reading call may write (the sync of new/, the lazy analysis of big folders, \\Recent
claims, filling References), message files are renamed by flag changes (a reader holding a name
must not see it vanish), and the hold times are short (a handful of sessions per user). The cost
on the hot path is two flock() calls, one pread (the index generation, see UserStore._open) and
one PRAGMA per outermost call, measured with bench/store_lock.py on 20,000 messages: +4.4 µs
(load 2) to +5.6 µs (load 6.5) per call, e.g. version() 21.6 → 28.2 µs, FETCH FLAGS rows of 50
UIDs 31.0 → 36.8 µs; imaptest's stress profile showed no difference beyond noise (0.99×).

The standard library's fcntl is all it takes; no third-party file-lock package is needed.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable
from pathlib import Path

FILENAME = "tui-mail-index.lock"


class UserLock:
    """Re-entrant in-process and cross-process lock; ``on_acquire`` runs each time the
    cross-process lock is newly taken (never while another process holds it)."""

    __slots__ = ("_rlock", "_depth", "_fd", "_on_acquire", "path")
    # The file's few bytes name the generation of the user's index (its inode and when it was
    # made): a process that rebuilds the index writes a new one, the others see it in one pread.

    def __init__(self, root: Path, on_acquire: Callable[[], None] | None = None) -> None:
        self.path = root / FILENAME
        self._rlock = threading.RLock()
        self._depth = 0
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._on_acquire = on_acquire

    def set_on_acquire(self, fn: Callable[[], None] | None) -> None:
        self._on_acquire = fn

    def acquire(self) -> bool:
        self._rlock.acquire()
        if self._depth == 0:
            self._depth = 1
            if self._fd < 0:
                return True      # closed: the store's methods refuse (StoreError UNAVAILABLE)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._depth = 0
                self._rlock.release()
                raise
            if self._on_acquire is not None:
                try:
                    self._on_acquire()
                except BaseException:
                    self.release()
                    raise
            return True
        self._depth += 1
        return True

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._rlock.release()

    def generation(self) -> bytes:
        """What the lock file holds: UserStore's index generation (see UserStore._open); one
        pread, no path lookup. Call while holding the lock."""
        return os.pread(self._fd, 64, 0) if self._fd >= 0 else b""

    def set_generation(self, value: bytes) -> None:
        os.pwrite(self._fd, value, 0)
        os.ftruncate(self._fd, len(value))

    def __enter__(self) -> "UserLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def close(self) -> None:
        """Close the lock file (call while holding the lock, as UserStore.close does: the
        release that follows then has nothing to unlock; closing drops the flock)."""
        with self._rlock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class MaildropLock:
    """POP3's exclusive-access lock on a maildrop (RFC 1939 section 8), across processes: an
    ``flock(LOCK_EX | LOCK_NB)`` on ``tui-mail-pop3.lock`` in the user's directory, held by one
    session from login to the end of its connection (or of its process: the kernel drops it)."""

    FILENAME = "tui-mail-pop3.lock"

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def try_take(cls, root: Path) -> "MaildropLock | None":
        """The lock, or None when another session (in any process) holds it."""
        fd = os.open(root / cls.FILENAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return cls(fd)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)      # closing the only descriptor drops the flock
            self._fd = -1
