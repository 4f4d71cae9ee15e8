"""The relay's files are private to the account running it (issue 10, item 14).

The data dir holds the queue (whole messages), users' Maildirs, the password file and
``relay.log`` (senders, recipients and logins): directories are 0700 and files 0600. The relay
process sets its umask to 077 (:func:`private_umask`), so every file a later change forgets to
create with an explicit mode is private too; :func:`private_dir` and :func:`private_file` also
tighten what an older version left more open.

Failures become one-line :class:`DataDirError` messages (e.g. a data dir under a regular file).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from relay.errors import RelayError


class DataDirError(RelayError):
    """The data dir (or a file in it) cannot be created or made private."""


def private_umask() -> int:
    """Make files this process creates private by default; returns the previous umask."""
    return os.umask(0o077)


def _explain(path: Path, e: OSError) -> DataDirError:
    reason = e.strerror or str(e)
    if isinstance(e, (NotADirectoryError, FileExistsError)):
        for parent in [path, *path.parents]:
            if parent.exists() and not parent.is_dir():
                return DataDirError(f"cannot use {path} as a directory: {parent} is a file, not a directory"
                                    " (give another --data-dir or data_dir in relay.toml)")
    return DataDirError(f"cannot create {path}: {reason} (give another --data-dir or data_dir in relay.toml)")


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed; make it 0700 when it is ours."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = path.stat()
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(20, "Not a directory", str(path))
        if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, 0o700)
    except OSError as e:
        raise _explain(path, e) from None
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty if missing, as 0600; make an existing one of ours 0600."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            st = os.fstat(fd)
            if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    except OSError as e:
        raise DataDirError(f"cannot create {path}: {e.strerror or e}") from None
    return path
