"""IMAP modified UTF-7 (RFC 3501 §5.1.3): mailbox names on the wire and, as Dovecot does, in
Maildir++ folder directory names. Pure; the stdlib has no codec for it."""

from __future__ import annotations

import base64


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
