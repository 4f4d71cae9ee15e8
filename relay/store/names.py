"""Folder names ↔ Maildir++ directory names, and validation of names a client sends.

Folders are named with "/" between hierarchy levels ("Archive/2025"); on disk they are Maildir++
subdirectories of the user's root: ``.Archive.2025``. Each level is written in IMAP modified
UTF-7 (as Dovecot does, so Dovecot can serve a copy of the same tree); a "." inside a level, which
Maildir++ would read as a separator, is written as the modified-UTF-7 form "&AC4-". Names that
could escape the user's directory or confuse other tools are refused.
"""

from __future__ import annotations

import base64
import re

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


def mutf7_encode(s: str) -> str:
    """RFC 3501 section 5.1.3 modified UTF-7."""
    out: list[str] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            b = base64.b64encode("".join(buf).encode("utf-16-be")).decode("ascii").rstrip("=")
            out.append("&" + b.replace("/", ",") + "-")
            buf.clear()

    for ch in s:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            buf.append(ch)
    flush()
    return "".join(out)


def mutf7_decode(s: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        j = s.find("-", i)
        if j < 0:
            raise ValueError("unterminated modified UTF-7 shift")
        chunk = s[i + 1:j]
        if not chunk:
            out.append("&")
        else:
            b = chunk.replace(",", "/")
            b += "=" * (-len(b) % 4)
            out.append(base64.b64decode(b, validate=True).decode("utf-16-be"))
        i = j + 1
    return "".join(out)
