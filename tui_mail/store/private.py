"""Mail on disk is private: directories 0700, files 0600.

Downloaded mail (POP3 Maildir), the header cache with its full-text index, local drafts and the
outbox hold other people's words; no other local user may read them. Modes are set explicitly
where things are created (``os.umask`` is process-wide and would race with other threads) and
fixed once on open for stores made by an older version: if the root directory is readable by
group or others, the whole tree is tightened, otherwise nothing is walked (a 100,000-message
Maildir costs nothing on later opens).

SQLite creates its ``-wal`` and ``-shm`` files with the mode of the database file, so a database
created 0600 here stays private with its journals.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and missing parents) as 0700; tighten it if it already exists."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")
    _tighten(path, DIR_MODE)
    return path


def private_file(path: str | os.PathLike) -> Path:
    """Make sure ``path`` exists as a 0600 file (created empty if missing) before a library
    (SQLite) opens it with its own default mode."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        os.close(fd)
    except FileExistsError:
        _tighten(path, FILE_MODE)
    return path


def create_private(path: str | os.PathLike) -> int:
    """A new file opened for writing, 0600, failing if it exists; returns the descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)


def private_tree(root: str | os.PathLike) -> None:
    """Tighten ``root`` and, if it was open to group/others, everything below it (once)."""
    root = Path(root)
    try:
        lax = stat.S_IMODE(root.stat().st_mode) & 0o077
    except FileNotFoundError:
        private_dir(root)
        return
    if not lax:
        return
    for dirpath, dirnames, filenames in os.walk(root):
        _tighten(Path(dirpath), DIR_MODE)
        for name in filenames:
            _tighten(Path(dirpath) / name, FILE_MODE)
    _tighten(root, DIR_MODE)


def _tighten(path: Path, mode: int) -> None:
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(path, mode)
    except FileNotFoundError:
        pass
