"""Sans-I/O IMAP4rev1 protocol core for the relay's server: bytes in, commands out; values in,
bytes out. No sockets, no asyncio, no store: in the style of h11.

Why hand-written: candidate libraries were measured. pymap's Maildir backend took ~300 s to list
10,000 envelopes (quadratic uidlist parsing), polls for IDLE every second and rewrites CRLF and
refolds headers, so bodies are not byte-exact; Twisted's IMAP server has no Maildir backend, no
MOVE/UIDPLUS and SEARCH/header bugs on Python 3. The grammar we need (RFC 3501 plus LITERAL+,
UIDPLUS, MOVE, CONDSTORE arguments) is small enough to own, and owning it lets the server stream
100,000 envelopes from a cached index.

Pieces:
- :class:`CommandReader`: ``receive_data(bytes)`` then ``next_event()`` yields
  :class:`Command`, :class:`ContinuationNeeded` (a synchronising literal ``{n}`` was announced;
  the caller must send ``+ …``), :class:`RawLine` (when ``raw_lines`` is set, for IDLE's DONE
  and AUTHENTICATE responses) or :class:`BadInput` (malformed; answer BAD and go on). Lines and
  literals are capped; an over-long literal is swallowed and reported, the session stays usable.
- :func:`parse_arguments`: the per-command argument grammar (FETCH items, STORE, SEARCH keys,
  STATUS items, APPEND, …) into plain Python values.
- :class:`SequenceSet`: ``1:*``, ``*:5``, ``2,4:7`` resolved against a count or sorted UID list.
- :func:`encode`: Python values to IMAP wire syntax (atoms, quoted strings, literals, NIL, lists).
"""

from __future__ import annotations

from relay import mutf7 as _mutf7

import bisect
import datetime as _dt
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MAX_LINE = 64 * 1024
MAX_NESTING = 64          # parentheses / SEARCH NOT-OR-group nesting (deeper: BAD, never a RecursionError)
MAX_LITERAL = 64 * 1024 * 1024


class ParseError(ValueError):
    """Input that does not match the grammar; the message goes into a tagged BAD."""


class Atom(str):
    """A bare atom on the wire (distinguishes ``NIL``/flags from quoted strings)."""

    __slots__ = ()


# ---------------------------------------------------------------------------------- events
@dataclass
class Command:
    tag: str
    name: str               # upper case; "UID FETCH" etc. for UID commands
    args: list               # raw tokens (Atom, bytes, list, BracketAtom)


@dataclass
class ContinuationNeeded:
    size: int


@dataclass
class RawLine:
    line: bytes


@dataclass
class BadInput:
    tag: str                 # "*" when the tag itself could not be read
    message: str


# ---------------------------------------------------------------------------------- reader
_LITERAL_END = re.compile(rb"\{(\d{1,20})(\+?)\}\r?\n\Z")


class CommandReader:
    """Splits a byte stream into command lines with their literals spliced in."""

    def __init__(self, max_line: int = MAX_LINE, max_literal: int = MAX_LITERAL) -> None:
        self.max_line, self.max_literal = max_line, max_literal
        self.raw_lines = False
        self._buf = bytearray()
        self._parts: list[bytes | tuple[str, bytes]] = []   # line pieces and ("lit", data)
        self._need: int | None = None   # size of the literal being read
        self._skip = 0                  # bytes of a refused literal still to discard
        self._skip_tag = ""
        self._total = 0
        self._discard_line = False

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    def next_event(self):
        """The next complete event, or None when more bytes are needed."""
        while True:
            if self._skip:
                n = min(self._skip, len(self._buf))
                del self._buf[:n]
                self._skip -= n
                if self._skip:
                    return None
                # the rest of that command line is discarded too
                self._parts = []
                self._total = 0
                self._discard_line = True
            if self._need is not None:
                if len(self._buf) < self._need:
                    return None
                self._parts.append(("lit", bytes(self._buf[: self._need])))
                del self._buf[: self._need]
                self._need = None
            i = self._buf.find(b"\n")
            if i < 0:
                if len(self._buf) > self.max_line:
                    # tagged, so the client is not left waiting for its tag forever
                    tag = _first_tag(self._parts, bytes(self._buf[:256]))
                    self._buf.clear()
                    self._parts = []
                    self._discard_line = True
                    return BadInput(tag, "Line too long")
                return None
            line = bytes(self._buf[: i + 1])
            del self._buf[: i + 1]
            if self._discard_line:
                self._discard_line = False
                if not self._parts:
                    # remains of a refused command: drop this line, report nothing more
                    continue
            if self.raw_lines and not self._parts:
                return RawLine(line.rstrip(b"\r\n"))
            self._total += len(line)
            if self._total > self.max_line:
                tag = _first_tag(self._parts, line)
                self._parts, self._total = [], 0
                return BadInput(tag, "Line too long")
            m = _LITERAL_END.search(line)
            if m:
                size, plus = int(m.group(1)), m.group(2) == b"+"
                self._parts.append(line[: m.start()])
                # one command holds at most two maximal literals in all (MULTIAPPEND and
                # CATENATE carry several): a hostile command cannot pile up memory
                held = sum(len(p[1]) for p in self._parts if isinstance(p, tuple))
                if size > self.max_literal or held + size > 2 * self.max_literal:
                    tag = _first_tag(self._parts, b"")
                    self._parts, self._total = [], 0
                    if plus:  # the client sends it anyway: swallow it
                        self._skip = size
                        self._discard_line = True
                        return BadInput(tag, "[TOOBIG] Literal too large")
                    self._discard_line = False
                    return BadInput(tag, "[TOOBIG] Literal too large")
                self._need = size
                if not plus:
                    return ContinuationNeeded(size)
                continue
            self._parts.append(line.rstrip(b"\r\n"))
            parts, self._parts, self._total = self._parts, [], 0
            return _to_command(parts)

    def events(self) -> Iterator:
        while (ev := self.next_event()) is not None:
            yield ev

    # A big literal (an APPEND) need not sit in memory while it arrives: the I/O layer may
    # stream it to disk and hand it over whole (relay/imap/server.py does above 1 MiB).
    def literal_pending(self) -> int:
        """The size of the literal being read while not all of it is buffered, else 0."""
        if self._need is None or self._skip or len(self._buf) >= self._need:
            return 0
        return self._need

    def take_buffered(self) -> bytes:
        """Hand over (and forget) the bytes buffered so far: the start of a pending literal."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def supply_literal(self, data: bytes) -> None:
        """The pending literal, read by the caller (exactly its announced size)."""
        if self._need is None or len(data) != self._need:
            raise ValueError("supply_literal: no literal of that size is pending")
        self._parts.append(("lit", data))
        self._need = None


def _first_tag(parts, line: bytes) -> str:
    first = parts[0] if parts and isinstance(parts[0], bytes) else line
    tag = first.split(b" ", 1)[0].decode("ascii", "replace") if first else ""
    return tag if tag and _valid_tag(tag) else "*"


_TAG_OK = re.compile(r"^[\x21-\x7e]+$")


def _valid_tag(tag: str) -> bool:
    return bool(_TAG_OK.match(tag)) and not any(c in tag for c in '(){%*"\\+')


def _to_command(parts) -> Command | BadInput:
    tokens: list = []
    tag = "*"
    try:
        first = parts[0]
        if not isinstance(first, bytes) or not first.strip():
            return BadInput("*", "Empty command line")
        sp = first.find(b" ")
        tag_b = first if sp < 0 else first[:sp]
        tag = tag_b.decode("ascii", "replace")
        if not _valid_tag(tag):
            return BadInput("*", "Invalid tag")
        if sp < 0:
            return BadInput(tag, "Missing command")
        parts = [first[sp + 1:]] + list(parts[1:])
        tokens = Tokenizer(parts).read_all()
    except ParseError as e:
        return BadInput(tag, str(e))
    if not tokens or not isinstance(tokens[0], Atom):
        return BadInput(tag, "Missing command")
    name = tokens[0].upper()
    args = tokens[1:]
    if name == "UID":
        if not args or not isinstance(args[0], Atom):
            return BadInput(tag, "UID needs a command")
        name = "UID " + args[0].upper()
        args = args[1:]
    return Command(tag, name, args)


# ---------------------------------------------------------------------------------- tokens
_ATOM_SPECIALS = b'(){ "\\'
_NON_ATOM = set(_ATOM_SPECIALS) | set(range(0, 0x20)) | {0x7F}


class Tokenizer:
    """Turns a line (with literal pieces) into nested lists of Atom/bytes tokens."""

    def __init__(self, parts) -> None:
        self.parts = parts
        self.pi = 0
        self.data = parts[0] if parts else b""
        self.pos = 0

    def read_all(self) -> list:
        out, depth_stack = [], []
        cur = out
        while True:
            self._skip_spaces()
            if self.pos >= len(self.data):
                # a literal follows this piece?
                if self.pi + 1 < len(self.parts) and isinstance(self.parts[self.pi + 1], tuple):
                    cur.append(self.parts[self.pi + 1][1])
                    self.pi += 2
                    self.data = self.parts[self.pi] if self.pi < len(self.parts) else b""
                    self.pos = 0
                    if self.data and self.data[:1] not in (b" ", b")"):
                        raise ParseError("Missing space after literal")
                    continue
                break
            c = self.data[self.pos]
            if c == 0x28:  # (
                self.pos += 1
                new: list = []
                cur.append(new)
                depth_stack.append(cur)
                if len(depth_stack) > MAX_NESTING:
                    raise ParseError("Too deeply nested")
                cur = new
            elif c == 0x29:  # )
                if not depth_stack:
                    raise ParseError("Unbalanced parenthesis")
                self.pos += 1
                cur = depth_stack.pop()
            elif c == 0x22:  # "
                cur.append(self._quoted())
            elif c == 0x7B:  # {  literal marker mid-line cannot happen (handled by reader)
                raise ParseError("Unexpected literal")
            else:
                cur.append(self._atom())
        if depth_stack:
            raise ParseError("Unbalanced parenthesis")
        return out

    def _skip_spaces(self) -> None:
        while self.pos < len(self.data) and self.data[self.pos] == 0x20:
            self.pos += 1

    def _quoted(self) -> bytes:
        self.pos += 1
        out = bytearray()
        d = self.data
        while self.pos < len(d):
            c = d[self.pos]
            if c == 0x5C:  # backslash
                if self.pos + 1 >= len(d) or d[self.pos + 1] not in b'"\\':
                    raise ParseError("Bad escape in quoted string")
                out.append(d[self.pos + 1])
                self.pos += 2
            elif c == 0x22:
                self.pos += 1
                return bytes(out)
            elif c in (0x0D, 0x0A, 0):
                raise ParseError("Bad character in quoted string")
            else:
                out.append(c)
                self.pos += 1
        raise ParseError("Unterminated quoted string")

    def _atom(self) -> Atom:
        d, start = self.data, self.pos
        if d[self.pos] == 0x5C:  # \Flag
            self.pos += 1
        while self.pos < len(d):
            c = d[self.pos]
            if c == 0x5B:  # [ : section spec, may hold spaces and parens up to the matching ]
                bracket = self.pos
                depth = 0
                while self.pos < len(d):
                    ch = d[self.pos]
                    if ch == 0x5B:
                        depth += 1
                    elif ch == 0x5D:
                        depth -= 1
                        if depth == 0:
                            break
                    elif ch == 0x22:  # quoted field name inside HEADER.FIELDS
                        self._quoted()
                        continue
                    elif ch >= 0x80:  # 8-bit in a section spec: BAD, never a UnicodeDecodeError
                        raise ParseError("8-bit data in atom")
                    self.pos += 1
                if self.pos >= len(d):
                    # no matching ]: outside a FETCH section "[" is an ordinary ATOM-CHAR
                    # (RFC 3501 9: a mailbox name may contain it)
                    self.pos = bracket + 1
                    continue
                self.pos += 1
                continue
            if c in _NON_ATOM or c == 0x29:
                break
            if c >= 0x80:
                raise ParseError("8-bit data in atom")
            self.pos += 1
        if self.pos == start:
            raise ParseError(f"Unexpected character {chr(d[start])!r}")
        return Atom(d[start:self.pos].decode("ascii"))


# ---------------------------------------------------------------------------------- values
def astring(tok) -> str:
    """An atom or string argument as text (UTF-8, as sent by LOGIN/mailbox names)."""
    if isinstance(tok, Atom):
        return str(tok)
    if isinstance(tok, bytes):
        return tok.decode("utf-8", "surrogateescape")
    raise ParseError("Expected a string")


def astring_bytes(tok) -> bytes:
    if isinstance(tok, Atom):
        return tok.encode("ascii")
    if isinstance(tok, bytes):
        return tok
    raise ParseError("Expected a string")


def number(tok, *, nz: bool = False) -> int:
    if not isinstance(tok, Atom) or not tok.isdigit() or not tok.isascii():
        raise ParseError(f"Expected a number, got {tok!r}")
    n = int(tok)
    if nz and n == 0:
        raise ParseError("Expected a non-zero number")
    return n


# ---------------------------------------------------------------------------------- sequence sets
_SEQ_RANGE = re.compile(r"^(\d+|\*)(?::(\d+|\*))?$")


@dataclass(frozen=True)
class SequenceSet:
    """A parsed sequence-set; ``None`` stands for ``*`` (the largest number in use)."""

    ranges: tuple[tuple[int | None, int | None], ...]
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> "SequenceSet":
        if text == "$":
            raise ParseError("SEARCHRES is not supported")
        ranges = []
        for piece in text.split(","):
            m = _SEQ_RANGE.match(piece)
            if not m:
                raise ParseError(f"Invalid sequence set {text!r}")
            a = None if m.group(1) == "*" else int(m.group(1))
            b = a if m.group(2) is None else (None if m.group(2) == "*" else int(m.group(2)))
            if a == 0 or b == 0:
                raise ParseError(f"Invalid sequence set {text!r} (0 is not a valid number)")
            ranges.append((a, b))
        return cls(tuple(ranges), text)

    def _bounds(self, largest: int) -> Iterator[tuple[int, int]]:
        for a, b in self.ranges:
            lo = largest if a is None else a
            hi = largest if b is None else b
            if lo > hi:
                lo, hi = hi, lo
            yield lo, hi

    def message_numbers(self, count: int) -> list[int]:
        """Sequence numbers in 1..count, sorted, no duplicates. Raises if one is out of range."""
        out: set[int] = set()
        for lo, hi in self._bounds(count):
            if hi > count or lo < 1:
                raise ParseError("Invalid message sequence number")
            if hi - lo > 1_000_000 and not out:
                out = set(range(lo, hi + 1))
            else:
                out.update(range(lo, hi + 1))
        return sorted(out)

    def uid_indexes(self, uids: Sequence[int]) -> list[int]:
        """0-based indexes into the sorted ``uids`` whose UID is in the set (never an error).

        RFC 3501: for UID ranges ``*`` is the largest UID in use, and ``n:*`` always includes
        the last message even when n is beyond it."""
        if not uids:
            return []
        largest = uids[-1]
        bounds = list(self._bounds(largest))
        if len(bounds) == 1:    # 1:* and other single ranges: no set of 100,000 indexes
            lo, hi = bounds[0]
            return list(range(bisect.bisect_left(uids, lo), bisect.bisect_right(uids, hi)))
        out: set[int] = set()
        for lo, hi in bounds:
            i = bisect.bisect_left(uids, lo)
            j = bisect.bisect_right(uids, hi)
            out.update(range(i, j))
        return sorted(out)

    def contains_uid(self, uid: int, largest: int) -> bool:
        return any(lo <= uid <= hi for lo, hi in self._bounds(largest))


def format_uid_set(uids: Sequence[int]) -> str:
    """Compact ``1:3,7`` form of the given UIDs (in the given order; runs collapse)."""
    out: list[str] = []
    start = prev = None
    for u in uids:
        if prev is not None and u == prev + 1:
            prev = u
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = u
    if start is not None:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)


# ---------------------------------------------------------------------------------- FETCH items
@dataclass(frozen=True)
class FetchAtt:
    """One FETCH data item. ``name`` is ENVELOPE, FLAGS, INTERNALDATE, RFC822, RFC822.HEADER,
    RFC822.SIZE, RFC822.TEXT, BODY (structure), BODYSTRUCTURE, UID, MODSEQ or BODY[] (a section).
    For sections: ``part`` (MIME part numbers), ``text`` ("", HEADER, HEADER.FIELDS,
    HEADER.FIELDS.NOT, TEXT, MIME), ``fields``, ``partial`` (start, length) and ``peek``."""

    name: str
    part: tuple[int, ...] = ()
    text: str = ""
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None
    peek: bool = False

    @property
    def is_section(self) -> bool:
        return self.name == "BODY[]"

    def response_name(self) -> str:
        """The name as echoed in the FETCH response (no .PEEK; partial shows only the origin)."""
        if self.name in ("BINARY[]", "BINARY.SIZE[]"):      # RFC 3516
            s = self.name[:-1] + ".".join(str(p) for p in self.part) + "]"
            return s + (f"<{self.partial[0]}>" if self.partial is not None else "")
        if not self.is_section:
            return self.name
        spec = ".".join(str(p) for p in self.part)
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        s = f"BODY[{spec}]"
        if self.partial is not None:
            s += f"<{self.partial[0]}>"
        return s

    @property
    def sets_seen(self) -> bool:
        return ((self.is_section or self.name == "BINARY[]") and not self.peek) \
            or self.name in ("RFC822", "RFC822.TEXT")


_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE = {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
           "RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID", "MODSEQ"}
_SECTION = re.compile(r"^(BODY(?:\.PEEK)?)\[([^\]]*)\](?:<(\d+)\.(\d+)>)?$", re.I)
_BINARY = re.compile(r"^BINARY(\.PEEK|\.SIZE)?\[([0-9.]*)\](?:<(\d+)\.(\d+)>)?$", re.I)
_FIELD_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+$")


def parse_fetch_att(tok) -> FetchAtt:
    if not isinstance(tok, Atom):
        raise ParseError("Invalid FETCH item")
    up = tok.upper()
    if up in _SIMPLE:
        return FetchAtt(up)
    m = _BINARY.match(str(tok))
    if m:       # RFC 3516: BINARY[part]<partial>, BINARY.PEEK[…], BINARY.SIZE[part]
        kind = (m.group(1) or "").upper()
        nums = m.group(2).split(".") if m.group(2) else []
        if any(not n.isdigit() or int(n) == 0 for n in nums) or (kind == ".SIZE" and m.group(3)):
            raise ParseError(f"Invalid FETCH item {str(tok)[:40]!r}")
        partial = (int(m.group(3)), int(m.group(4))) if m.group(3) is not None else None
        return FetchAtt("BINARY.SIZE[]" if kind == ".SIZE" else "BINARY[]", tuple(int(n) for n in nums),
                        partial=partial, peek=kind == ".PEEK")
    m = _SECTION.match(str(tok))
    if not m:
        raise ParseError(f"Invalid FETCH item {str(tok)[:40]!r}")
    peek = m.group(1).upper() == "BODY.PEEK"
    partial = None
    if m.group(3) is not None:
        length = int(m.group(4))
        if length == 0:
            raise ParseError("Partial length must be non-zero")
        partial = (int(m.group(3)), length)
    part, text, fields = parse_section(m.group(2))
    return FetchAtt("BODY[]", part, text, fields, partial, peek)


def parse_section(spec: str) -> tuple[tuple[int, ...], str, tuple[str, ...]]:
    """``1.2.HEADER.FIELDS (From To)`` → ((1, 2), "HEADER.FIELDS", ("FROM", "TO"))."""
    spec = spec.strip()
    fields: tuple[str, ...] = ()
    paren = spec.find("(")
    if paren >= 0:
        if not spec.endswith(")"):
            raise ParseError("Invalid section field list")
        raw = Tokenizer([spec[paren:].encode("ascii")]).read_all()
        if len(raw) != 1 or not isinstance(raw[0], list) or not raw[0]:
            raise ParseError("Invalid section field list")
        names = []
        for f in raw[0]:
            b = astring_bytes(f)
            if not _FIELD_NAME.match(b):
                raise ParseError("Invalid header field name")
            names.append(b.decode("ascii").upper())
        fields = tuple(names)
        spec = spec[:paren].rstrip()
    part: list[int] = []
    text = ""
    items = spec.split(".") if spec else []
    i = 0
    while i < len(items) and items[i].isdigit():
        n = int(items[i])
        if n == 0:
            raise ParseError("Section part 0 is invalid")
        part.append(n)
        i += 1
    text = ".".join(items[i:]).upper()
    if text not in ("", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"):
        raise ParseError(f"Invalid section {spec!r}")
    if text == "MIME" and not part:
        raise ParseError("MIME needs a part number")
    if text.startswith("HEADER.FIELDS") != bool(fields):
        raise ParseError("HEADER.FIELDS needs a field list")
    return tuple(part), text, fields


def parse_fetch_items(tok) -> list[FetchAtt]:
    if isinstance(tok, Atom) and tok.upper() in _MACROS:
        return [FetchAtt(n) for n in _MACROS[tok.upper()]]
    if isinstance(tok, list):
        if not tok:
            raise ParseError("Empty FETCH item list")
        return [parse_fetch_att(t) for t in tok]
    return [parse_fetch_att(tok)]


# ---------------------------------------------------------------------------------- SEARCH keys
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]


def parse_date(tok) -> _dt.date:
    s = astring(tok)
    try:
        d, mon, y = s.split("-")
        return _dt.date(int(y), _MONTHS.index(mon.lower()) + 1, int(d))
    except (ValueError, TypeError):
        raise ParseError(f"Invalid date {s!r}") from None


def parse_datetime(tok) -> _dt.datetime:
    """APPEND's date-time ``"17-Jul-1996 02:44:25 -0700"``."""
    s = astring(tok).strip()
    m = re.match(r"^(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$", s)
    if not m or m.group(2).lower() not in _MONTHS:
        raise ParseError(f"Invalid date-time {s!r}")
    off = _dt.timedelta(hours=int(m.group(8)), minutes=int(m.group(9)))
    tz = _dt.timezone(off if m.group(7) == "+" else -off)
    try:
        return _dt.datetime(int(m.group(3)), _MONTHS.index(m.group(2).lower()) + 1, int(m.group(1)),
                            int(m.group(4)), int(m.group(5)), int(m.group(6)), tzinfo=tz)
    except ValueError:
        raise ParseError(f"Invalid date-time {s!r}") from None


_FLAG_KEYS = {"ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True),
              "DRAFT": ("\\Draft", True), "FLAGGED": ("\\Flagged", True),
              "SEEN": ("\\Seen", True), "UNANSWERED": ("\\Answered", False),
              "UNDELETED": ("\\Deleted", False), "UNDRAFT": ("\\Draft", False),
              "UNFLAGGED": ("\\Flagged", False), "UNSEEN": ("\\Seen", False)}
_HEADER_KEYS = {"BCC", "CC", "FROM", "SUBJECT", "TO"}
_DATE_KEYS = {"BEFORE": ("internal", "before"), "ON": ("internal", "on"), "SINCE": ("internal", "since"),
              "SENTBEFORE": ("sent", "before"), "SENTON": ("sent", "on"), "SENTSINCE": ("sent", "since")}
_SEQ_CHARS = re.compile(r"^[\d*:,]+$")


class BadCharset(ParseError):
    pass


class _SearchParser:
    def __init__(self, tokens: list, charset: str, depth: int = 0) -> None:
        self.toks, self.i, self.charset = tokens, 0, charset
        self.depth = depth

    def text(self) -> str:
        tok = self.take()
        b = astring_bytes(tok)
        try:
            return b.decode("utf-8" if self.charset in ("UTF-8", "US-ASCII") else "ascii")
        except UnicodeDecodeError:
            raise ParseError("Search string is not valid in the given charset") from None

    def take(self):
        if self.i >= len(self.toks):
            raise ParseError("Missing search argument")
        t = self.toks[self.i]
        self.i += 1
        return t

    def keys(self) -> list:
        out = []
        while self.i < len(self.toks):
            out.append(self.key())
        return out

    def key(self):
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise ParseError("Search keys too deeply nested")
            return self._key()
        finally:
            self.depth -= 1

    def _key(self):
        tok = self.take()
        if isinstance(tok, list):
            sub = _SearchParser(tok, self.charset, self.depth).keys()
            if not sub:
                raise ParseError("Empty search group")
            return ("and", sub) if len(sub) > 1 else sub[0]
        if not isinstance(tok, Atom):
            raise ParseError("Expected a search key")
        k = tok.upper()
        if k == "ALL":
            return ("all",)
        if k in ("NEW", "OLD", "RECENT"):
            return (k.lower(),)
        if k in _FLAG_KEYS:
            flag, want = _FLAG_KEYS[k]
            return ("flag", flag, want)
        if k in ("KEYWORD", "UNKEYWORD"):
            kw = self.take()
            if not isinstance(kw, Atom):
                raise ParseError("KEYWORD needs an atom")
            return ("flag", str(kw), k == "KEYWORD")
        if k in _HEADER_KEYS:
            return ("header", k, self.text())
        if k == "HEADER":
            name = astring(self.take())
            return ("header", name.upper(), self.text())
        if k in ("BODY", "TEXT"):
            return (k.lower(), self.text())
        if k in _DATE_KEYS:
            which, op = _DATE_KEYS[k]
            return ("date", which, op, parse_date(self.take()))
        if k in ("LARGER", "SMALLER"):
            return ("size", k.lower(), number(self.take()))
        if k == "NOT":
            return ("not", self.key())
        if k == "OR":
            return ("or", self.key(), self.key())
        if k == "UID":
            return ("uid", SequenceSet.parse(str(self.take())))
        if k == "MODSEQ":
            nxt = self.take()
            if isinstance(nxt, bytes):  # entry-name entry-type-req
                self.take()
                nxt = self.take()
            return ("modseq", number(nxt))
        if _SEQ_CHARS.match(k):
            return ("seq", SequenceSet.parse(str(tok)))
        raise ParseError(f"Unknown search key {str(tok)[:30]!r}")


def parse_search(tokens: list) -> tuple[str, list]:
    """[CHARSET c] keys → (charset, keys); the keys are ANDed. Unknown charset → BadCharset."""
    charset = "US-ASCII"
    if len(tokens) >= 2 and isinstance(tokens[0], Atom) and tokens[0].upper() == "CHARSET":
        charset = astring(tokens[1]).upper()
        if charset not in ("UTF-8", "US-ASCII"):
            raise BadCharset(f"Charset {charset} is not supported")
        tokens = tokens[2:]
    keys = _SearchParser(tokens, charset).keys()
    if not keys:
        raise ParseError("SEARCH needs a key")
    return charset, keys


# ---------------------------------------------------------------------------------- flags
SYSTEM_FLAGS = {"\\ANSWERED": "\\Answered", "\\FLAGGED": "\\Flagged", "\\DELETED": "\\Deleted",
                "\\SEEN": "\\Seen", "\\DRAFT": "\\Draft"}


def parse_flags(tok) -> list[str]:
    toks = tok if isinstance(tok, list) else [tok]
    out = []
    for t in toks:
        if not isinstance(t, Atom):
            raise ParseError("Flags must be atoms")
        if t.startswith("\\"):
            canon = SYSTEM_FLAGS.get(t.upper())
            if canon is None:
                raise ParseError(f"Invalid system flag {str(t)!r}")
            out.append(canon)
        else:
            if any(c in t for c in "[]%*"):
                raise ParseError(f"Invalid keyword {str(t)!r}")
            out.append(str(t))
    return out


# ---------------------------------------------------------------------------------- encoder
class Literal(bytes):
    """Always sent as a literal (message bodies)."""


class Raw(bytes):
    """Already-encoded wire bytes, sent as is."""


def encode(value) -> bytes:
    """Python value → IMAP wire bytes: None→NIL, int→number, Atom/Raw→as is, str/bytes→quoted
    string or literal (8-bit, CR/LF, NUL or long), list/tuple→parenthesised list."""
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def _encode(v, out: bytearray) -> None:
    t = type(v)
    if t is bytes or t is str:      # the hot path: envelope fields (100,000s per FETCH)
        b = v.encode("utf-8") if t is str else v
        if (len(b) < 1024 and b.isascii() and b"\r" not in b and b"\n" not in b and b"\0" not in b):
            if b"\\" in b or b'"' in b:
                b = b.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
            out += b'"' + b + b'"'
        else:
            out += b"{%d}\r\n" % len(b) + b
    elif v is None:
        out += b"NIL"
    elif t is list or t is tuple:
        out += b"("
        first = True
        for x in v:
            if not first:
                out += b" "
            first = False
            _encode(x, out)
        out += b")"
    elif t is int:
        out += b"%d" % v
    elif isinstance(v, Raw):
        out += v
    elif isinstance(v, Atom):
        out += v.encode("ascii")
    elif isinstance(v, Literal):
        out += b"{%d}\r\n" % len(v) + v
    elif isinstance(v, bool):
        raise TypeError("bool is not an IMAP value")
    elif isinstance(v, int):
        out += str(int(v)).encode("ascii")
    elif isinstance(v, (list, tuple)):
        _encode(list(v), out)
    elif isinstance(v, (str, bytes, bytearray, memoryview)):
        _encode(v if isinstance(v, str) else bytes(v), out)
    else:
        raise TypeError(f"cannot encode {type(v).__name__} as an IMAP value")


_NSTRING_CACHE: dict = {}


def encode_nstring(v) -> bytes:
    """NIL, a quoted string or a literal (bytes/str). Memoised: envelope fields repeat a lot
    (the same senders, domains and names across 100,000 messages)."""
    if v is None:
        return b"NIL"
    r = _NSTRING_CACHE.get(v)
    if r is not None:
        return r
    b = v.encode("utf-8") if type(v) is str else v
    if len(b) < 1024 and b.isascii() and b"\r" not in b and b"\n" not in b and b"\0" not in b:
        if b"\\" in b or b'"' in b:
            b = b.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        r = b'"' + b + b'"'
    else:
        r = b"{%d}\r\n" % len(b) + bytes(b)
    if len(v) < 200:
        if len(_NSTRING_CACHE) > 50_000:
            _NSTRING_CACHE.clear()
        _NSTRING_CACHE[v] = r
    return r


def encode_body(bs: list) -> bytes:
    """BODY/BODYSTRUCTURE in RFC 3501 form: the parts of a multipart are not separated by
    spaces (body-type-mpart = 1*body SP media-subtype); message/rfc822 carries an envelope."""
    if bs and type(bs[0]) in (list, tuple):
        i = 0
        parts = []
        while i < len(bs) and type(bs[i]) in (list, tuple):
            parts.append(encode_body(bs[i]))
            i += 1
        rest = [encode(x) for x in bs[i:]]
        return b"(" + b"".join(parts) + (b" " + b" ".join(rest) if rest else b"") + b")"
    t0 = bs[0].lower() if isinstance(bs[0], (str, bytes)) and bs else None
    t1 = bs[1].lower() if len(bs) > 1 and isinstance(bs[1], (str, bytes)) else None
    if (t0 in ("message", b"message") and t1 in ("rfc822", b"rfc822") and len(bs) >= 10
            and type(bs[7]) in (list, tuple) and type(bs[8]) in (list, tuple)):
        # (a message/rfc822 cut off by the depth cap has no envelope: written as a basic body)
        return (b"(" + b" ".join(encode(x) for x in bs[:7]) + b" " + encode_envelope(bs[7]) + b" "
                + encode_body(bs[8]) + b"".join(b" " + encode(x) for x in bs[9:]) + b")")
    return encode(bs)


def encode_envelope(env: list) -> bytes:
    """ENVELOPE in RFC 3501 form (addresses not separated by spaces, as Dovecot sends them),
    fast: a few calls per address instead of one per value (FETCH 1:* of 100,000 envelopes)."""
    q = encode_nstring
    out = []
    for i, f in enumerate(env):
        if 2 <= i <= 7 and f is not None:
            # RFC 3501 env-from etc.: "(" 1*address ")" with no space between addresses
            out.append(b"(" + b"".join(b"(" + b" ".join([q(x) for x in a]) + b")" if type(a) is list
                                       or type(a) is tuple else encode(a) for a in f) + b")")
        elif type(f) is list:
            out.append(encode(f))
        else:
            out.append(q(f))
    return b"(" + b" ".join(out) + b")"


# ---------------------------------------------------------------------------------- mailbox names
def decode_mailbox(tok) -> str:
    """Mailbox argument → name (modified UTF-7 decoded; UTF-8 accepted; INBOX canonicalised)."""
    raw = astring(tok)
    if any("\udc80" <= c <= "\udcff" for c in raw):     # astring's surrogateescape
        raise ParseError("Mailbox name is not valid UTF-8")
    name = raw
    if "&" in raw:
        try:
            name = _mutf7.mutf7_decode(raw)
        except (ValueError, UnicodeDecodeError):
            name = raw      # not modified UTF-7: as sent (matches no mailbox; CREATE refuses it)
    if name.upper() == "INBOX":
        return "INBOX"
    if name.upper().startswith("INBOX/"):
        return "INBOX" + name[5:]
    return name


mutf7_encode = _mutf7.mutf7_encode


def valid_mailbox_wire(tok) -> bool:
    """True if a mailbox argument is valid modified UTF-7 (or plain UTF-8 without "&")."""
    raw = astring(tok)
    if "&" not in raw:
        return True
    try:
        _mutf7.mutf7_decode(raw)
        return True
    except (ValueError, UnicodeDecodeError):
        return False


def mutf7_decode(s: str) -> str:
    """Modified UTF-7 → str; a malformed name is a ParseError (the command gets BAD)."""
    try:
        return _mutf7.mutf7_decode(s)
    except (ValueError, UnicodeDecodeError):
        raise ParseError("Invalid modified UTF-7 mailbox name") from None


__all__ = [
    "Atom", "BadCharset", "BadInput", "Command", "CommandReader", "ContinuationNeeded", "FetchAtt",
    "Literal", "ParseError", "Raw", "RawLine", "SequenceSet", "astring", "decode_mailbox", "encode",
    "format_uid_set", "mutf7_decode", "mutf7_encode", "number", "parse_date", "parse_datetime",
    "parse_fetch_items", "parse_flags", "parse_search",
]
