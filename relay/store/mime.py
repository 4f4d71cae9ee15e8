"""Pure functions from a message's bytes to what the index caches: the IMAP ENVELOPE and
BODYSTRUCTURE (RFC 3501 section 7.4.2) and the decoded header fields SEARCH looks at.

Header fields are parsed with the stdlib ``email`` package (compat32, which keeps values as
written), but MIME part boundaries are found in the raw bytes here: ``email`` re-serialises what
it parses (refolds, rewrites line endings), and BODYSTRUCTURE sizes and line counts must be exact
for the bytes as delivered.

Representation: nested lists whose leaves are ``bytes`` (strings, raw as in the message),
``int`` (sizes, line counts) or ``None`` (NIL); an IMAP encoder writes them directly.
"""

from __future__ import annotations

import email.header
import email.utils
import re
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

from relay.store.types import HeaderFields

_BLANK = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(r"\r?\n[ \t]")        # unfolding: CRLF + WSP → one space (as Dovecot)
_parser = BytesHeaderParser(policy=compat32)
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")


# ------------------------------------------------------------------------------ raw splitting
def split_header(data: bytes, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """(end of header incl. the blank line, start of body) of the entity in data[start:end]."""
    end = len(data) if end is None else end
    if data.startswith(b"\r\n", start) and start + 2 <= end:
        return start + 2, start + 2
    if data.startswith(b"\n", start) and start + 1 <= end:
        return start + 1, start + 1
    m = _BLANK.search(data, start, end)
    if not m:
        return end, end
    return m.end(), m.end()


def parse_header(raw: bytes) -> Message:
    return _parser.parsebytes(raw)


def header_of(data: bytes) -> bytes:
    """The header block (with its terminating blank line) exactly as in the message."""
    return data[:split_header(data)[0]]


def _value(msg: Message, name: str) -> bytes | None:
    """First ``name`` field, unfolded, as raw bytes (8-bit kept: raw_items() holds the
    surrogate-escaped original, where get() would replace undecodable bytes)."""
    fields = msg.__dict__.get("_first_fields")
    if fields is None:
        fields = {}
        for k, v in msg.raw_items():
            fields.setdefault(k.lower(), v)
        msg.__dict__["_first_fields"] = fields
    v = fields.get(name.lower())
    if v is None:
        return None
    v = str(v)
    if "\n" in v:
        v = _FOLD.sub(" ", v)
    v = v.strip()
    return v.encode("utf-8", "surrogateescape")


def header_value(header: bytes, name: str) -> bytes | None:
    """One field of a header block: raw bytes, unfolded, or None if absent."""
    return _value(parse_header(header), name)


def _text(v: bytes | None) -> str:
    return v.decode("utf-8", "surrogateescape") if v is not None else ""


# ------------------------------------------------------------------------------ ENVELOPE
def _address_tokens(text: str):
    """Split an address-list header at top level (outside quotes, comments and <>): yields
    ("addr", chunk), ("group", name) at "name:" and ("end", "") at the group's ";"."""
    buf: list[str] = []
    quoted = angle = False
    depth = 0
    esc = False
    for ch in text:
        if esc:
            esc = False
        elif quoted or depth:
            if ch == "\\":
                esc = True
            elif quoted and ch == '"':
                quoted = False
            elif not quoted and ch == "(":
                depth += 1
            elif not quoted and ch == ")":
                depth -= 1
        elif ch == '"':
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif not angle and ch in ",:;":
            chunk = "".join(buf).strip()
            buf = []
            if ch == ":":
                yield "group", chunk
                continue
            if chunk:
                yield "addr", chunk
            if ch == ";":
                yield "end", ""
            continue
        buf.append(ch)
    chunk = "".join(buf).strip()
    if chunk:
        yield "addr", chunk


def _enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _addresses(v: bytes | None) -> list | None:
    """RFC 3501 address list: (name adl mailbox host) each; a group is (NIL NIL name NIL) …
    (NIL NIL NIL NIL)."""
    if v is None or not v.strip():
        return None
    out: list = []
    in_group = False
    for kind, chunk in _address_tokens(_text(v)):
        if kind == "group":
            if in_group:
                out.append([None, None, None, None])
            name = email.utils.getaddresses([chunk])[0][0] if '"' in chunk else chunk
            out.append([None, None, _enc(name), None])
            in_group = True
            continue
        if kind == "end":
            if in_group:
                out.append([None, None, None, None])
            in_group = False
            continue
        for name, addr in email.utils.getaddresses([chunk]):
            if not addr and not name:
                continue
            mbox, at, host = addr.rpartition("@")
            if not at:      # RFC 3501 wants a host; Dovecot's placeholder, for the same answer
                mbox, host = addr, "MISSING_DOMAIN"
            out.append([_enc(name) if name else None, None, _enc(mbox) if mbox else None,
                        _enc(host) if host else None])
    if in_group:
        out.append([None, None, None, None])
    return out or None


def envelope_of(msg: Message) -> list:
    def h(name: str) -> bytes | None:
        return _value(msg, name)
    frm = _addresses(h("From"))
    return [h("Date"), h("Subject"), frm, _addresses(h("Sender")) or frm,
            _addresses(h("Reply-To")) or frm, _addresses(h("To")), _addresses(h("Cc")),
            _addresses(h("Bcc")), h("In-Reply-To"), h("Message-ID")]


def envelope(data: bytes) -> list:
    """ENVELOPE: [date, subject, from, sender, reply-to, to, cc, bcc, in-reply-to, message-id]."""
    return envelope_of(parse_header(header_of(data)))


# ------------------------------------------------------------------------------ BODYSTRUCTURE
def _lines(body: bytes) -> int:
    """Line count as Dovecot reports it: the number of line ends (a last line without one,
    e.g. before a MIME delimiter, whose CRLF belongs to the delimiter, does not count)."""
    return body.count(b"\n")


def split_params(value: str) -> tuple[str, list[tuple[str, str]]]:
    """'text/plain; charset="utf-8"; name*=utf-8\'\'%E2%82%AC' → ('text/plain', [(k, v), ...]).

    Hand-written rather than Message.get_params because that decodes RFC 2231 parameters and
    re-encodes them differently; BODYSTRUCTURE should show them as written (quotes removed)."""
    parts: list[str] = []
    buf, quoted, esc = [], False, False
    for ch in value:
        if esc:
            buf.append(ch)
            esc = False
        elif ch == "\\" and quoted:
            esc = True
        elif ch == '"':
            quoted = not quoted
            buf.append(ch)
        elif ch == ";" and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    head = parts[0].strip()
    params = []
    for p in parts[1:]:
        k, eq, v = p.partition("=")
        k, v = k.strip(), v.strip()
        if not k or not eq:
            continue
        if len(v) >= 2 and v[0] == v[-1] == '"':
            v = v[1:-1]
        params.append((k, v))
    return head, params


def _plist(pairs: list[tuple[str, str]]) -> list | None:
    out: list = []
    for k, v in pairs:
        out += [k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape")]
    return out or None


def _ctype_params(msg: Message, default: str) -> tuple[bytes, bytes, list | None]:
    raw = _value(msg, "Content-Type")
    head, params = split_params(_text(raw)) if raw else (default, [])
    maintype, sep, subtype = head.partition("/")      # case kept as written (as Dovecot does)
    maintype, subtype = maintype.strip(), subtype.strip()
    if not sep or not maintype or not subtype or not _TOKEN.match((maintype + subtype).lower()):
        maintype, _, subtype = default.partition("/")    # RFC 2045: invalid → the default
        params = params if raw else []
    plist = _plist(params)
    if plist is None and maintype.lower() == "text":
        plist = [b"charset", b"us-ascii"]
    return maintype.encode(), subtype.encode(), plist


def _disposition(msg: Message) -> list | None:
    raw = _value(msg, "Content-Disposition")
    if not raw:
        return None
    head, params = split_params(_text(raw))
    if not head:
        return None
    return [head.encode("utf-8", "surrogateescape"), _plist(params)]


def _language(msg: Message):
    v = _value(msg, "Content-Language")
    if not v:
        return None
    langs = [x.strip() for x in v.split(b",") if x.strip()]
    return langs[0] if len(langs) == 1 else langs


def _boundary_spans(data: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """(start, end) of each body part between "--boundary" delimiter lines in data[start:end];
    the CRLF before a delimiter belongs to the delimiter (RFC 2046)."""
    delim = re.compile(rb"(?:^|\r?\n)--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|$)", re.M)
    spans: list[tuple[int, int]] = []
    part_start: int | None = None
    for m in delim.finditer(data, start, end):
        if part_start is not None:
            spans.append((part_start, m.start()))
        if m.group(1):
            part_start = None
            break
        part_start = m.end()
    if part_start is not None:   # missing close delimiter: the last part runs to the end
        spans.append((part_start, end))
    return spans


def _structure(data: bytes, start: int, end: int, default: str, depth: int,
               msg: Message | None = None) -> list:
    hend, bstart = split_header(data, start, end)
    if msg is None:
        msg = parse_header(data[start:hend])
    maintype, subtype, plist = _ctype_params(msg, default)
    ext_common = [_disposition(msg), _language(msg), _value(msg, "Content-Location")]
    mtype, stype = maintype.lower(), subtype.lower()
    if mtype == b"multipart" and depth < 32:
        boundary = next((plist[i + 1] for i in range(0, len(plist or ()), 2)
                         if plist[i].lower() == b"boundary"), None)
        spans = _boundary_spans(data, bstart, end, boundary) if boundary else []
        child_default = "message/rfc822" if stype == b"digest" else "text/plain"
        children = [_structure(data, s, e, child_default, depth + 1) for s, e in spans]
        if not children:   # RFC 3501 needs at least one part
            children = [[b"text", b"plain", [b"charset", b"us-ascii"], None, None, b"7bit", 0, 0,
                         None, None, None, None]]
        return children + [subtype, plist] + ext_common
    body = data[bstart:end]
    enc = _value(msg, "Content-Transfer-Encoding")
    out: list = [maintype, subtype, plist, _value(msg, "Content-ID"),
                 _value(msg, "Content-Description"), enc if enc else b"7bit", len(body)]
    if mtype == b"text":
        out.append(_lines(body))
    elif mtype == b"message" and stype == b"rfc822" and depth < 32:
        inner_hend, _ = split_header(data, bstart, end)
        out += [envelope_of(parse_header(data[bstart:inner_hend])),
                _structure(data, bstart, end, "text/plain", depth + 1), _lines(body)]
    return out + [_value(msg, "Content-MD5")] + ext_common


def bodystructure(data: bytes) -> list:
    """BODYSTRUCTURE with extension data (BODY is this without the extension fields), for
    the message with CRLF line ends."""
    data = to_crlf(data)
    return _structure(data, 0, len(data), "text/plain", 0)


# ------------------------------------------------------------------------------ SEARCH columns
_EWORD = re.compile(r"=\?([^?\s]+)\?([qQbB])\?([^?\s]*)\?=")
_EWORD_GAP = re.compile(r"(\?=)\s+(?==\?)")


def decode_words(v: bytes | None) -> str:
    """RFC 2047-decoded, unfolded text of a header value ("" if absent). Encoded words are
    decoded one by one, so raw UTF-8 next to them survives; undecodable words stay as written."""
    if v is None:
        return ""
    text = _text(v)
    if "=?" not in text:
        return text

    def one(m: re.Match) -> str:
        try:
            (raw, charset), = email.header.decode_header(m.group(0))
            return raw.decode(charset or "ascii", "replace") if isinstance(raw, bytes) else raw
        except (ValueError, LookupError, UnicodeError):
            return m.group(0)

    return _EWORD.sub(one, _EWORD_GAP.sub(r"\1", text))


def header_fields(data: bytes) -> HeaderFields:
    return header_fields_of(parse_header(header_of(data)))


def header_fields_of(msg: Message) -> HeaderFields:
    date_v = _value(msg, "Date")
    when: float | None = None
    if date_v:
        try:
            when = email.utils.parsedate_to_datetime(_text(date_v)).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            when = None
    return HeaderFields(subject=decode_words(_value(msg, "Subject")),
                        from_=decode_words(_value(msg, "From")), to=decode_words(_value(msg, "To")),
                        cc=decode_words(_value(msg, "Cc")), bcc=decode_words(_value(msg, "Bcc")),
                        message_id=_text(_value(msg, "Message-ID")), date=when,
                        references=(_value(msg, "References") or b"").decode("utf-8", "replace"))


_BARE_LF = re.compile(rb"(?<!\r)\n")


def to_crlf(data: bytes) -> bytes:
    """Every line end as CRLF (mail written by other tools may use bare LF)."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    return _BARE_LF.sub(b"\r\n", data)


def analyse(data: bytes) -> tuple[list, list, HeaderFields]:
    """Everything the index caches for one message, from one pass over its header. Sizes and
    line counts are for the message with CRLF line ends, as IMAP sends it (Dovecot does the
    same for files with bare LFs); delivered mail is CRLF already."""
    data = to_crlf(data)
    msg = parse_header(header_of(data))
    return (envelope_of(msg), _structure(data, 0, len(data), "text/plain", 0, msg),
            header_fields_of(msg))


# ------------------------------------------------------------------------------ IMAP wire form
def imap_encode(value) -> bytes:
    """Nested lists of bytes/str/int/None → IMAP wire bytes, by the same rules as
    relay.imap.parser.encode: NIL, numbers, quoted strings (short 7-bit, no CR/LF/NUL; \\ and "
    escaped), otherwise literals; lists in parentheses. Cached per message by the index."""
    out = bytearray()
    _wire(value, out)
    return bytes(out)


def _wire(v, out: bytearray) -> None:
    if v is None:
        out += b"NIL"
    elif isinstance(v, (bytes, str)):
        b = v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v
        if len(b) < 1024 and b.isascii() and b"\r" not in b and b"\n" not in b and b"\0" not in b:
            out += b'"' + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        else:
            out += b"{%d}\r\n" % len(b) + b
    elif isinstance(v, bool):
        raise TypeError("bool is not an IMAP value")
    elif isinstance(v, int):
        out += b"%d" % v
    elif isinstance(v, (list, tuple)):
        out += b"("
        for i, x in enumerate(v):
            if i:
                out += b" "
            _wire(x, out)
        out += b")"
    else:
        raise TypeError(f"cannot encode {type(v).__name__} for IMAP")
