"""APPEND arguments with MULTIAPPEND (RFC 3502), CATENATE (RFC 4469) and BINARY literal8
(RFC 3516): parsing into one :class:`AppendItem` per message and building each message's bytes,
with IMAP URLs (RFC 5092, the relative ``/mailbox;UIDVALIDITY=n/;UID=n/;SECTION=s/;PARTIAL=o.l``
form, or ``imap://…`` on this server) resolved by a callback. Pure: no store access here.

The tokenizer gives quoted strings and literals both as bytes, so a date-time is recognised by
its form and position: a date-time-shaped string followed by a message (or ``CATENATE``).
"""

from __future__ import annotations

import datetime as _dt
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from relay.imap.parser import Atom, ParseError, parse_datetime, parse_flags, parse_section


class BadURL(Exception):
    """A CATENATE URL that does not resolve (answer NO [BADURL "url"])."""

    def __init__(self, url: str, why: str) -> None:
        super().__init__(why)
        self.url = url


@dataclass
class AppendItem:
    flags: list[str] = field(default_factory=list)
    date: _dt.datetime | None = None
    parts: list[tuple[str, object]] = field(default_factory=list)   # ("text", bytes) | ("url", str)
    binary: bool = False            # some literal was a literal8 (~{n})


_DATE = re.compile(rb"[ \d]?\d-[A-Za-z]{3}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}")


def _is_message_start(args: list, i: int) -> bool:
    if i >= len(args):
        return False
    t = args[i]
    return isinstance(t, bytes) and not isinstance(t, Atom) or (
        isinstance(t, Atom) and t.upper() in ("~", "CATENATE"))


def _literal(args: list, i: int) -> tuple[bytes, bool, int]:
    """A literal or literal8 at i: (bytes, was literal8, next index)."""
    if isinstance(args[i], Atom) and args[i] == "~":
        if i + 1 >= len(args) or not isinstance(args[i + 1], bytes) or isinstance(args[i + 1], Atom):
            raise ParseError("~ must be followed by a literal")
        return args[i + 1], True, i + 2
    t = args[i]
    if not isinstance(t, bytes) or isinstance(t, Atom):
        raise ParseError("APPEND needs a literal message")
    return t, False, i + 1


def parse(args: list) -> list[AppendItem]:
    """``APPEND`` arguments after the mailbox → messages (at least one)."""
    items: list[AppendItem] = []
    i = 0
    while i < len(args):
        item = AppendItem()
        if isinstance(args[i], list):
            item.flags = parse_flags(args[i])
            i += 1
        if i < len(args) and isinstance(args[i], bytes) and _DATE.fullmatch(args[i]) \
                and _is_message_start(args, i + 1):
            item.date = parse_datetime(args[i])
            i += 1
        if i >= len(args):
            raise ParseError("APPEND needs a message")
        if isinstance(args[i], Atom) and args[i].upper() == "CATENATE":
            if i + 1 >= len(args) or not isinstance(args[i + 1], list) or not args[i + 1]:
                raise ParseError("CATENATE needs a list of parts")
            cat = args[i + 1]
            k = 0
            while k < len(cat):
                kind = cat[k].upper() if isinstance(cat[k], Atom) else ""
                if kind == "TEXT" and k + 1 < len(cat):
                    data, lit8, k = _literal(cat, k + 1)
                    item.binary |= lit8
                    item.parts.append(("text", data))
                elif kind == "URL" and k + 1 < len(cat) and isinstance(cat[k + 1], bytes):
                    item.parts.append(("url", cat[k + 1].decode("utf-8", "replace")))
                    k += 2
                else:
                    raise ParseError("CATENATE parts are TEXT literal or URL string")
            i += 2
        else:
            data, lit8, i = _literal(args, i)
            item.binary = lit8
            item.parts.append(("text", data))
        items.append(item)
    if not items:
        raise ParseError("APPEND needs a message")
    return items


@dataclass(frozen=True)
class ImapURL:
    mailbox: str
    uidvalidity: int | None
    uid: int
    section: str
    partial: tuple[int, int | None] | None


_URL = re.compile(r"^/(?P<mbox>[^;/]*(?:/[^;/]+)*)(?:;UIDVALIDITY=(?P<uv>\d+))?/;UID=(?P<uid>\d+)"
                  r"(?:/;SECTION=(?P<sec>[^/]*))?(?:/;PARTIAL=(?P<off>\d+)(?:\.(?P<len>\d+))?)?$", re.I)


def parse_url(url: str) -> ImapURL:
    """An IMAP URL naming one message (or part of one) on this server."""
    path = url
    if url.lower().startswith("imap://"):
        rest = url[7:]
        slash = rest.find("/")
        if slash < 0:
            raise BadURL(url, "no mailbox in URL")
        path = rest[slash:]
    m = _URL.match(path)
    if not m:
        raise BadURL(url, "not an IMAP message URL")
    mbox = urllib.parse.unquote(m.group("mbox"))
    if not mbox:
        raise BadURL(url, "no mailbox in URL")
    sec = urllib.parse.unquote(m.group("sec") or "")
    partial = None
    if m.group("off") is not None:
        partial = (int(m.group("off")), int(m.group("len")) if m.group("len") else None)
    return ImapURL(mbox, int(m.group("uv")) if m.group("uv") else None, int(m.group("uid")),
                   sec, partial)


def section_of(u: ImapURL) -> tuple[tuple[int, ...], str, tuple[str, ...]]:
    try:
        return parse_section(u.section)
    except ParseError:
        raise BadURL("", "invalid section") from None


class TooBig(Exception):
    """A CATENATE result over the size limit (answer NO [TOOBIG])."""


def build(item: AppendItem, resolve: Callable[[str], bytes], limit: int | None = None) -> bytes:
    """The message bytes: the TEXT parts and the resolved URL parts, in order; TooBig as soon
    as they pass ``limit`` (URLs can name big messages many times over)."""
    out = bytearray()
    for kind, value in item.parts:
        out += value if kind == "text" else resolve(value)        # type: ignore[operator]
        if limit is not None and len(out) > limit:
            raise TooBig(f"the message would be over {limit} bytes")
    return bytes(out)


__all__ = ["AppendItem", "BadURL", "ImapURL", "TooBig", "build", "parse", "parse_url", "section_of"]
