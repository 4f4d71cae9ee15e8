"""Pure sink rules: who must authenticate, which recipients pass, the envelope headers.

A sink accepts any syntactically valid recipient in any domain. On loopback (listener *and*
client) no AUTH is needed; anywhere else the client must log in as user ``sink`` first, so a
sink bound to a public address is not an open mail drop for the world.

The envelope goes into the stored message as ``X-Envelope-From``/``X-Envelope-To`` (one
``X-Envelope-To`` per recipient, so Bcc recipients are visible). Any such header, and
``Delivered-To``/``Return-Path``, already in the client's message is removed first: a
sender must not be able to forge what the relay recorded.
"""

from __future__ import annotations

import re

from relay.peer import is_loopback
from relay.smtp import policy

ENVELOPE_HEADERS = (b"x-envelope-from", b"x-envelope-to", b"delivered-to", b"return-path")
_FIELD = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>]")


def requires_auth(listen_host: str, peer_host: str) -> bool:
    """AUTH is required unless both the listening address and the client are loopback."""
    listen_ok = listen_host == "localhost" or is_loopback(listen_host)
    return not (listen_ok and is_loopback(peer_host))


def check_recipient(address: str, *, count: int, max_recipients: int, smtputf8: bool) -> str | None:
    """Any domain passes; only the count, the syntax and SMTPUTF8 are checked."""
    if count >= max_recipients:
        return policy.TOO_MANY_RCPTS
    if not smtputf8 and not address.isascii():
        return "553 5.6.7 Error: non-ASCII recipient address needs SMTPUTF8"
    if policy.split_address(address) is None:
        return f"501 5.1.3 <{address}>: Recipient address rejected: bad address syntax"
    return None


def strip_envelope_headers(data: bytes) -> bytes:
    """``data`` without any envelope-like header field (continuation lines included)."""
    if data.startswith(b"\r\n"):   # no header at all: all of it is body
        return data
    end = data.find(b"\r\n\r\n")
    head_end = len(data) if end < 0 else end + 2
    lines = data[:head_end].split(b"\r\n")
    # a continuation line before any field would fold into the headers we put on top: dropped
    out, dropping = [], True
    for line in lines[:-1] if data[:head_end].endswith(b"\r\n") else lines:
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                out.append(line)
            continue
        m = _FIELD.match(line)
        dropping = bool(m) and m.group(1).lower() in ENVELOPE_HEADERS
        if not dropping:
            out.append(line)
    head = b"".join(x + b"\r\n" for x in out)
    return head + data[head_end:]


def envelope_headers(sender: str, recipients: list[str]) -> bytes:
    """X-Envelope-From and one X-Envelope-To per recipient (addresses already checked by
    policy; anything odd is replaced so a header can never be split)."""
    def clean(a: str) -> str:
        return _UNSAFE.sub("?", a)

    lines = [f"X-Envelope-From: <{clean(sender)}>\r\n"]
    lines += [f"X-Envelope-To: <{clean(r)}>\r\n" for r in recipients]
    return "".join(lines).encode("utf-8")
