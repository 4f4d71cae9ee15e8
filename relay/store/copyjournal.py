"""All-or-nothing COPY/MOVE across a crash, and the Maildir ``tmp/`` sweep (issue 10, item 13).

A COPY of many messages cannot rename many files at once, and a file that reaches ``cur/``
is a message the next index sync will show. So a copy runs in four steps, with the index
transaction as the single commit point:

1. :func:`begin` writes a journal ``tmp/relay-copy.<id>.journal`` in the destination folder:
   the ``cur/`` name each copy will get and, for MOVE, the source file to remove.
2. :func:`stage` hard-links (or copies) each source into ``tmp/relay-copy.<id>.<n>``; nothing
   in ``tmp/`` is ever indexed.
3. The caller commits the new index rows (and, for MOVE, deletes the source rows).
4. :func:`finish` renames the staged files into ``cur/``, unlinks MOVE sources and the journal.

:func:`recover` runs when a user's store opens: a journal whose copies are in the index
(``committed(base)``) is rolled forward (step 4 again), any other is rolled back (staged files
and journal deleted). A client therefore sees all of a COPY or none of it after ``kill -9``,
and a retried COPY never duplicates. :func:`sweep_tmp` deletes other ``tmp/`` files older than
36 hours, as the Maildir specification asks (leftovers of a killed APPEND or delivery).

Against power loss the journal is fsynced before staging; the staged links are not (a kill
cannot lose them, a power cut can only lose a not-yet-committed copy).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path

PREFIX = "relay-copy."
TMP_MAX_AGE = 36 * 3600.0
_ids = itertools.count()


class Journal:
    def __init__(self, root: Path, jid: str, entries: list[tuple[str, str]]):
        self.root, self.jid, self.entries = root, jid, entries   # entries: (cur name, source or "")
        self.staged: list[bool] = [False] * len(entries)

    @property
    def path(self) -> Path:
        return self.root / "tmp" / f"{PREFIX}{self.jid}.journal"

    def staged_path(self, i: int) -> Path:
        return self.root / "tmp" / f"{PREFIX}{self.jid}.{i}"


def begin(root: Path, entries: list[tuple[str, str]]) -> Journal:
    """Write the journal for copies into the folder at ``root`` (before staging anything)."""
    jid = f"{int(time.time())}.{os.getpid()}.{next(_ids)}"
    j = Journal(root, jid, entries)
    text = "".join(f"{name}\t{src}\n" for name, src in entries)
    fd = os.open(j.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode("utf-8", "surrogateescape"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return j


def stage(j: Journal, i: int, src: Path) -> bool:
    """Link (or copy) ``src`` to entry ``i``'s staging name; False if ``src`` is gone."""
    target = j.staged_path(i)
    try:
        os.link(src, target)
    except FileNotFoundError:
        return False
    except OSError:
        import shutil
        try:
            shutil.copy2(src, target)
        except FileNotFoundError:
            return False
    j.staged[i] = True
    return True


def finish(j: Journal) -> None:
    """After the index commit: move staged copies into cur/, remove MOVE sources, the journal."""
    for i, (name, src) in enumerate(j.entries):
        staged = j.staged_path(i)
        try:
            os.rename(staged, j.root / "cur" / name)
        except FileNotFoundError:
            pass          # not staged (source vanished), or already done by an earlier recovery
        if src:
            try:
                os.unlink(src)
            except FileNotFoundError:
                pass
    _unlink(j.path)


def abort(j: Journal) -> None:
    """Before the index commit: undo staging (nothing was visible)."""
    for i in range(len(j.entries)):
        _unlink(j.staged_path(i))
    _unlink(j.path)


def _unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def _read(path: Path) -> Journal | None:
    jid = path.name[len(PREFIX):-len(".journal")]
    try:
        text = path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError:
        return None
    entries = []
    for line in text.splitlines():
        name, _, src = line.partition("\t")
        if name:
            entries.append((name, src))
    return Journal(path.parent.parent, jid, entries)


def recover(root: Path, committed: Callable[[str], bool]) -> int:
    """Finish or undo interrupted copies into the folder at ``root``; returns how many.

    ``committed(base)`` says whether the index holds a message with that unique part in this
    folder (i.e. the copy's transaction committed)."""
    tmp = root / "tmp"
    done = 0
    try:
        journals = [tmp / n for n in os.listdir(tmp) if n.startswith(PREFIX) and n.endswith(".journal")]
    except FileNotFoundError:
        return 0
    for path in journals:
        j = _read(path)
        if j is None:
            continue
        bases = [name.partition(":")[0] for name, _ in j.entries]
        if bases and any(committed(b) for b in bases):
            finish(j)
        else:
            abort(j)
        done += 1
    # staged files whose journal is gone (cannot happen in order, but never index them)
    live = {p.name[len(PREFIX):-len(".journal")] for p in journals if p.exists()}
    for n in os.listdir(tmp):
        if n.startswith(PREFIX) and not n.endswith(".journal") and n[len(PREFIX):].rpartition(".")[0] not in live:
            _unlink(tmp / n)
    return done


def sweep_tmp(root: Path, max_age: float = TMP_MAX_AGE, now: float | None = None) -> int:
    """Delete files in ``root/tmp`` not modified for ``max_age`` seconds; returns how many."""
    now = time.time() if now is None else now
    removed = 0
    try:
        it = os.scandir(root / "tmp")
    except FileNotFoundError:
        return 0
    with it:
        for e in it:
            try:
                if e.is_file(follow_symlinks=False) and now - e.stat(follow_symlinks=False).st_mtime > max_age:
                    os.unlink(e.path)
                    removed += 1
            except FileNotFoundError:
                continue
    return removed
