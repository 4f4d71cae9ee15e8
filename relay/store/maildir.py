"""Maildir file operations: unique names, info suffixes (":2,FRS"), listing and atomic writes.

System flags live in file names with the letters other Maildir tools use (D=\\Draft,
F=\\Flagged, P=$Forwarded, R=\\Answered, S=\\Seen, T=\\Deleted); the first 26 keywords of a
folder too, as Dovecot does it: lowercase letters a–z indexing the folder's ``dovecot-keywords``
file ("0 Work" per line). Further keywords live only in the index. The unique part of a name
(everything before ':') never changes for a message's life: local delivery relies on it to
detect duplicate deliveries after a crash.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import time
from pathlib import Path

FLAG_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "$Forwarded": "P", "\\Answered": "R",
                "\\Seen": "S", "\\Deleted": "T"}
LETTER_FLAGS = {v: k for k, v in FLAG_LETTERS.items()}
SUBDIRS = ("tmp", "new", "cur")
_counter = itertools.count()


def split_name(filename: str) -> tuple[str, str]:
    """'base:2,FS' → ('base', 'FS'); a name without info → (name, '')."""
    base, sep, info = filename.partition(":")
    if sep and info.startswith("2,"):
        return base, info[2:]
    return base, ""


KEYWORDS_FILE = "dovecot-keywords"
MAX_KEYWORDS = 26


def flags_from_info(letters: str, keywords: list[str] | tuple = ()) -> set[str]:
    out = set()
    for c in letters:
        if c in LETTER_FLAGS:
            out.add(LETTER_FLAGS[c])
        elif "a" <= c <= "z":
            i = ord(c) - 97
            if i < len(keywords) and keywords[i]:
                out.add(keywords[i])
    return out


def info_for(flags, kwmap: dict[str, int] | None = None) -> str:
    letters = [FLAG_LETTERS[f] for f in flags if f in FLAG_LETTERS]
    if kwmap:
        letters += [chr(97 + kwmap[f]) for f in flags if f in kwmap]
    return "".join(sorted(letters))


def cur_name(base: str, flags, kwmap: dict[str, int] | None = None) -> str:
    return f"{base}:2,{info_for(flags, kwmap)}"


def read_keywords(folder: Path) -> list[str]:
    """The folder's keyword table (position = letter a, b, …; "" for a gap)."""
    try:
        text = (folder / KEYWORDS_FILE).read_text("utf-8", "replace")
    except FileNotFoundError:
        return []
    entries: dict[int, str] = {}
    for line in text.splitlines():
        idx, _, name = line.partition(" ")
        if idx.isdigit() and int(idx) < MAX_KEYWORDS and name.strip():
            entries[int(idx)] = name.strip()
    return [entries.get(i, "") for i in range(max(entries) + 1)] if entries else []


def write_keywords(folder: Path, names: list[str]) -> None:
    tmp = folder / "tmp" / f".{KEYWORDS_FILE}.{os.getpid()}"
    tmp.write_text("".join(f"{i} {n}\n" for i, n in enumerate(names) if n), "utf-8")
    os.replace(tmp, folder / KEYWORDS_FILE)


def new_unique() -> str:
    """A fresh unique part: time, microseconds, pid and a counter, then the host (the usual
    Maildir recipe; '/' and ':' in the host are escaped as Maildir specifies)."""
    now = time.time()
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return f"{int(now)}.M{int(now * 1e6) % 1000000}P{os.getpid()}Q{next(_counter)}.{host}"


def ensure(root: Path) -> None:
    for sub in SUBDIRS:
        (root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)


def write_message(root: Path, data: bytes, flags, mtime: float | None = None,
                  kwmap: dict[str, int] | None = None) -> tuple[str, str]:
    """Write data to tmp/ and fsync it, set its mtime (INTERNALDATE), rename it into cur/ with
    flags, fsync cur/. Returns (unique part, file name in cur/)."""
    base, tmp = write_tmp(root, data, mtime)
    name = cur_name(base, flags, kwmap)
    os.rename(tmp, root / "cur" / name)
    fsync_dir(root / "cur")     # the new name too is on disk before the caller says OK
    return base, name


def write_tmp(root: Path, data: bytes, mtime: float | None = None) -> tuple[str, Path]:
    """The first half of write_message: data written and fsynced in tmp/ under a new unique
    name, mtime set; returns (unique part, path in tmp/). Nothing indexes tmp/."""
    base = new_unique()
    tmp = root / "tmp" / base
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    return base, tmp


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename or link into it survives a power loss (a kill -9 never
    loses one: it is in the kernel as soon as rename() returns)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:        # a filesystem that cannot fsync directories: nothing to gain
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def listing(root: Path, sub: str) -> dict[str, str]:
    """{unique part: file name} for the files in root/sub (dot files ignored)."""
    out: dict[str, str] = {}
    try:
        with os.scandir(root / sub) as it:
            for e in it:
                if not e.name.startswith("."):
                    out[split_name(e.name)[0]] = e.name
    except FileNotFoundError:
        pass
    return out


def mtime_ns(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0
