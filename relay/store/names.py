"""Folder names ↔ Maildir++ directory names, and validation of names a client sends.

Folders are named with "/" between hierarchy levels ("Archive/2025"); on disk they are Maildir++
subdirectories of the user's root: ``.Archive.2025``. Each level is written in IMAP modified
UTF-7 (as Dovecot does, so Dovecot can serve a copy of the same tree); a "." inside a level, which
Maildir++ would read as a separator, is written as the modified-UTF-7 form "&AC4-". Names that
could escape the user's directory or confuse other tools are refused.
"""

from __future__ import annotations

import re

from relay.mutf7 import mutf7_decode, mutf7_encode  # noqa: F401 (re-exported)
from relay.store.types import StoreError

SEPARATOR = "/"
INBOX = "INBOX"
MAX_NAME = 512
MAX_DEPTH = 16
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f*%\\]")


def normalize(name: str) -> str:
    """Validate a folder name and canonicalise INBOX (any case, also as a parent level)."""
    if not isinstance(name, str) or not name:
        raise StoreError("empty mailbox name", "CANNOT")
    if len(name) > MAX_NAME:
        raise StoreError("mailbox name too long", "CANNOT")
    if _BAD_CHARS.search(name):
        raise StoreError(f"mailbox name {name!r} contains a forbidden character", "CANNOT")
    parts = name.split(SEPARATOR)
    if len(parts) > MAX_DEPTH:
        raise StoreError("mailbox hierarchy too deep", "CANNOT")
    for p in parts:
        if not p or p in (".", "..") or p.startswith("~") or p != p.strip():
            raise StoreError(f"invalid mailbox name {name!r}", "CANNOT")
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    return SEPARATOR.join(parts)


def parent(name: str) -> str | None:
    return name.rpartition(SEPARATOR)[0] or None


def is_inferior(name: str, of: str) -> bool:
    return name.startswith(of + SEPARATOR)


def to_dirname(name: str) -> str:
    """Folder name → Maildir++ directory name ("" for INBOX, which is the root)."""
    name = normalize(name)
    if name == INBOX:
        return ""
    return "." + ".".join(_encode_level(p) for p in name.split(SEPARATOR))


def from_dirname(dirname: str) -> str | None:
    """Maildir++ directory name → folder name, or None if it is not a folder we can serve."""
    if not dirname.startswith(".") or dirname in (".", ".."):
        return None
    try:
        levels = [mutf7_decode(p) for p in dirname[1:].split(".")]
        return normalize(SEPARATOR.join(levels))
    except (StoreError, ValueError):
        return None


def _encode_level(level: str) -> str:
    out = []
    for chunk in re.split(r"(\.)", level):
        out.append("&AC4-" if chunk == "." else mutf7_encode(chunk))
    return "".join(out)


