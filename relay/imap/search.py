"""Pure evaluation of parsed IMAP SEARCH keys (see parser.parse_search) over messages.

A message is anything with the :class:`SearchTarget` attributes: UID, flags, size, INTERNALDATE
and modseq come from the mailbox index; header values come from a ``header(name)`` lookup the
caller backs with cached columns, so SUBJECT/FROM over 100,000 messages never opens a file; only
BODY and TEXT (and headers that are not cached) read the message bytes, through ``read()``.
Matching is case-insensitive substring over RFC 2047-decoded headers and transfer-decoded text
parts, as RFC 3501 describes and Dovecot does.
"""

from __future__ import annotations

import base64
import bisect
import binascii
import datetime as _dt
import quopri
from collections.abc import Callable
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.utils import parsedate_to_datetime
from typing import Protocol

from relay.errors import RelayError
from relay.imap.backend import BackendError, Mailbox, MessageRecord
from relay.store.mime import _value, _values, address_text, parse_header, parse_tree, split_header

ADDRESS_FIELDS = frozenset({"FROM", "TO", "CC", "BCC"})
_VANISHED = (BackendError, RelayError)     # a message file/row gone while searching …
_GONE = ("EXPUNGEISSUED", "NONEXISTENT")    # … says one of these codes


class SearchTarget(Protocol):
    uid: int
    flags: frozenset[str] | set[str]
    size: int
    internaldate: _dt.datetime
    modseq: int

    def header(self, name: str) -> bytes | None: ...

    def read(self) -> bytes: ...


@dataclass
class SearchContext:
    count: int            # messages in the mailbox (for sequence sets with *)
    max_uid: int          # largest UID in use
    recent: frozenset[int] = frozenset()   # UIDs with \Recent in this session


def decode_text(raw: bytes | None) -> str:
    """An RFC 2047-encoded header value as text (8-bit taken as UTF-8)."""
    if raw is None:
        return ""
    text = raw.decode("utf-8", "replace")
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (ValueError, LookupError, UnicodeError, binascii.Error):
        return text


def _header_all(msg, name: str) -> list[bytes]:
    """Every occurrence of a header field of a SearchTarget."""
    get_all = getattr(msg, "header_all", None)
    if get_all is not None:
        return get_all(name)
    v = msg.header(name)
    return [] if v is None else [v]


def _fold(s: str) -> str:
    return s.casefold()


def body_text(data: bytes) -> str:
    """Transfer-decoded, charset-decoded text of every text/* leaf (for BODY/TEXT searches)."""
    root = parse_tree(data)
    out: list[str] = []
    stack = [root]
    while stack:
        p = stack.pop()
        if p.children is not None:
            stack.extend(reversed(p.children))
            continue
        if p.message is not None:
            stack.append(p.message)
            out.append(decode_text(data[p.message.hs:p.message.he]))
            continue
        if p.mtype != "text":
            continue
        raw = data[p.bs:p.be]
        enc = (_value(p.msg, "Content-Transfer-Encoding") or b"").strip().lower()
        try:
            if enc == b"base64":
                raw = base64.b64decode(raw, validate=False)
            elif enc == b"quoted-printable":
                raw = quopri.decodestring(raw)
        except (ValueError, binascii.Error):
            pass
        plist = p.ctype[2] or []
        charset = next((plist[i + 1].decode("ascii", "replace") for i in range(0, len(plist) - 1, 2)
                        if plist[i].lower() == b"charset"), "utf-8")
        try:
            out.append(raw.decode(charset, "replace"))
        except LookupError:
            out.append(raw.decode("utf-8", "replace"))
    return "\n".join(out)


def sent_date(target: SearchTarget) -> _dt.date | None:
    raw = target.header("DATE")
    if not raw:
        return None
    try:
        return parsedate_to_datetime(raw.decode("ascii", "replace")).date()
    except (TypeError, ValueError, IndexError):
        return None


_EPOCH = _dt.date(1970, 1, 1)


class Evaluator:
    """Evaluates a key list (ANDed) against one message at a time."""

    def __init__(self, keys: list, ctx: SearchContext, header_hits: dict | None = None) -> None:
        """``header_hits`` maps (FIELD, text) to the set of UIDs an index already found."""
        self.keys, self.ctx = keys, ctx
        self.header_hits = header_hits or {}

    def matches(self, seq: int, msg: SearchTarget) -> bool:
        self._body: str | None = None
        self._text: str | None = None
        return all(self._eval(k, seq, msg) for k in self.keys)

    def _eval(self, key, seq: int, msg: SearchTarget) -> bool:
        op = key[0]
        if op == "all":
            return True
        if op == "and":
            return all(self._eval(k, seq, msg) for k in key[1])
        if op == "or":
            return self._eval(key[1], seq, msg) or self._eval(key[2], seq, msg)
        if op == "not":
            return not self._eval(key[1], seq, msg)
        if op == "flag":
            return (key[1] in msg.flags) == key[2]
        if op == "recent":
            return msg.uid in self.ctx.recent
        if op == "new":
            return msg.uid in self.ctx.recent and "\\Seen" not in msg.flags
        if op == "old":
            return msg.uid not in self.ctx.recent
        if op == "seq":
            return any(lo <= seq <= hi for lo, hi in key[1]._bounds(self.ctx.count))
        if op == "uid":
            return key[1].contains_uid(msg.uid, self.ctx.max_uid)
        if op == "size":
            return msg.size > key[2] if key[1] == "larger" else msg.size < key[2]
        if op == "modseq":
            return msg.modseq >= key[1]
        if op == "date":
            _, which, cmp, day = key
            if which == "internal":
                d = msg.internaldate.date()
            else:
                d = sent_date(msg)
                if d is None:   # no usable Date: header counts as the epoch (as Dovecot does)
                    d = _EPOCH
            return d < day if cmp == "before" else (d == day if cmp == "on" else d >= day)
        if op == "header":
            hit = self.header_hits.get((key[1], key[2]))
            if hit is not None:
                return msg.uid in hit
            values = _header_all(msg, key[1])
            if not key[2]:                  # HEADER f "": the message has the field (RFC 3501)
                return bool(values)
            needle = _fold(key[2])
            if key[1] in ADDRESS_FIELDS:    # the addresses as Dovecot matches them
                return needle in _fold(address_text(b", ".join(v for v in values if v)))
            # a repeated field matches on any of its occurrences
            return any(needle in _fold(decode_text(v)) for v in values)
        if op == "body":
            return _fold(key[1]) in self._body_of(msg)
        if op == "text":
            if self._text is None:
                data = msg.read()
                he, _ = split_header(data)
                self._text = _fold(decode_text(data[:he])) + "\n" + self._body_of(msg)
            return _fold(key[1]) in self._text
        raise ValueError(f"unknown search key {op}")

    def _body_of(self, msg: SearchTarget) -> str:
        if self._body is None:
            self._body = _fold(body_text(msg.read()))
        return self._body


def needs_body(keys: list) -> bool:
    for k in keys:
        op = k[0]
        if op in ("body", "text"):
            return True
        if op == "and" and needs_body(k[1]):
            return True
        if op == "or" and needs_body([k[1], k[2]]):
            return True
        if op == "not" and needs_body([k[1]]):
            return True
    return False


class BytesTarget:
    """A SearchTarget over raw message bytes (headers parsed once); for tests and for stores
    without cached header columns."""

    def __init__(self, data: bytes, *, uid: int = 1, flags=frozenset(), internaldate=None,
                 modseq: int = 1, reader: Callable[[], bytes] | None = None) -> None:
        self._data = data
        self.uid, self.flags, self.modseq = uid, frozenset(flags), modseq
        self.size = len(data)
        self.internaldate = internaldate or _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc)
        he, _ = split_header(data)
        self._msg = parse_header(data[:he])

    def header(self, name: str) -> bytes | None:
        return _value(self._msg, name)

    def header_all(self, name: str) -> list[bytes]:
        return _values(self._msg, name)

    def read(self) -> bytes:
        return self._data


# ---------------------------------------------------------------------------------- over a mailbox
def search_mailbox(mb, folder: str, uids: list[int], keys: list, recent=frozenset()) -> list[tuple[int, int]]:
    """Evaluate ``keys`` over the messages ``uids`` (the session's view, ascending) of a
    relay.imap.backend.Mailbox; returns (0-based index into ``uids``, modseq) per hit.

    SUBJECT/FROM/TO/CC/BCC/Message-ID come from the store's indexed columns (one SQL scan
    each); when every key is such a header key no message is looked at. Flags, sizes, dates and
    sets are read from the index records; only BODY/TEXT, SENT* and other headers open files."""
    ctx = SearchContext(len(uids), uids[-1] if uids else 0, frozenset(recent))
    hits = _indexed_header_hits(mb, folder, keys)
    if hits is not None and _only_indexed(keys):
        cand = set.intersection(*[hits[(k[1], k[2])] for k in keys])
        # header keys never involve MODSEQ, so the modseq of a hit is not needed (0)
        return [(bisect.bisect_left(uids, u), 0) for u in sorted(cand) if _in_view(uids, u)]
    ev = Evaluator(keys, ctx, hits or {})
    plain = not _needs_message(keys, hits or {})
    out = []
    for start in range(0, len(uids), 5000):
        chunk = uids[start:start + 5000]
        for rec in mb.records(folder, chunk):
            i = bisect.bisect_left(uids, rec.uid, start)
            if ev.matches(i + 1, rec if plain else _Target(mb, folder, rec)):
                out.append((i, rec.modseq))
    return out


class _Target:
    """Adapter from a MessageRecord + Mailbox to search.SearchTarget (headers from the index)."""

    __slots__ = ("mb", "folder", "uid", "flags", "size", "internaldate", "modseq", "_data", "_msg")

    def __init__(self, mb: Mailbox, folder: str, rec: MessageRecord) -> None:
        self.mb, self.folder = mb, folder
        self.uid, self.flags, self.size = rec.uid, rec.flags, rec.size
        self.internaldate, self.modseq = rec.internaldate, rec.modseq
        self._data = None
        self._msg = None

    def header(self, name: str) -> bytes | None:
        try:
            return self.mb.header(self.folder, self.uid, name)
        except _VANISHED as e:
            if getattr(e, "code", "") not in _GONE:
                raise
            return None

    def header_all(self, name: str) -> list[bytes]:
        if self._msg is None:
            data = self.read()
            self._msg = parse_header(data[:split_header(data)[0]])
        return _values(self._msg, name)

    def read(self) -> bytes:
        if self._data is None:
            try:
                self._data = self.mb.read(self.folder, self.uid)
            except _VANISHED as e:     # expunged by another session meanwhile: no text
                if getattr(e, "code", "") not in _GONE:
                    raise
                self._data = b""
        return self._data


INDEXED = {"SUBJECT": "subject", "FROM": "from", "TO": "to", "CC": "cc", "BCC": "bcc",
           "MESSAGE-ID": "message-id"}


def _header_keys(keys):
    for k in keys:
        if k[0] == "header":
            yield k
        elif k[0] == "and":
            yield from _header_keys(k[1])
        elif k[0] == "or":
            yield from _header_keys([k[1], k[2]])
        elif k[0] == "not":
            yield from _header_keys([k[1]])


def _indexed_header_hits(mb, folder, keys) -> dict | None:
    """UID sets for header keys the store's index answers (SUBJECT/FROM/TO/CC/BCC/Message-ID)."""
    search_header = getattr(mb, "search_header", None)
    if search_header is None:
        return None
    out = {}
    for k in _header_keys(keys):
        field = INDEXED.get(k[1])
        if field is not None and k[2] and (k[1], k[2]) not in out:   # "" asks for existence
            out[(k[1], k[2])] = search_header(folder, field, k[2])
    return out


def _needs_message(keys, hits: dict) -> bool:
    """True if some key needs header or body data the index record does not carry."""
    for k in keys:
        op = k[0]
        if op in ("body", "text") or (op == "date" and k[1] == "sent"):
            return True
        if op == "header" and (k[1], k[2]) not in hits:
            return True
        if op == "and" and _needs_message(k[1], hits):
            return True
        if op == "or" and _needs_message([k[1], k[2]], hits):
            return True
        if op == "not" and _needs_message([k[1]], hits):
            return True
    return False


def _only_indexed(keys) -> bool:
    return all(k[0] == "header" and k[1] in INDEXED and k[2] for k in keys)


def _in_view(uids, uid) -> bool:
    i = bisect.bisect_left(uids, uid)
    return i < len(uids) and uids[i] == uid


def keys_use_modseq(keys) -> bool:
    for k in keys:
        if k[0] == "modseq":
            return True
        if k[0] == "and" and keys_use_modseq(k[1]):
            return True
        if k[0] in ("or",) and keys_use_modseq([k[1], k[2]]):
            return True
        if k[0] == "not" and keys_use_modseq([k[1]]):
            return True
    return False
