"""Pure functions from a message's bytes to what the index caches: the IMAP ENVELOPE and
BODYSTRUCTURE (RFC 3501 section 7.4.2) and the decoded header fields SEARCH looks at.

Header fields are split by ``parse_header`` with exactly the rules of the stdlib's compat32
header parser (which keeps values as written; checked against it by tests) but without building
``email`` Message objects, which cost five times as much; addresses, encoded words and dates use
``email.utils``/``email.header``. MIME part boundaries are found in the raw bytes here:
``email`` re-serialises what it parses (refolds, rewrites line endings), and BODYSTRUCTURE sizes
and line counts must be exact for the bytes as delivered. One MIME tree (``parse_tree``) answers
BODYSTRUCTURE and BODY[section] (relay/imap/fetch.py), following Dovecot's message parser where
RFCs leave room (see ``_boundary_at``, ``find_part``).

Representation: nested lists whose leaves are ``bytes`` (strings, raw as in the message),
``int`` (sizes, line counts) or ``None`` (NIL); an IMAP encoder writes them directly.
"""

from __future__ import annotations

import email.errors
import email.header
import functools
import email.utils
import re

from relay.store.types import HeaderFields

#: Version of what ``analyse`` produces; a store re-analyses messages cached by an older one.
#: 2: one MIME tree (Dovecot's boundary rules), MISSING_*/routes/repeated To-Cc in ENVELOPE,
#: RFC 2231 merging, address-form SEARCH columns.
CACHE_VERSION = 2

_BLANK = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(r"\r?\n[ \t]")        # unfolding: CRLF + WSP → one space (as Dovecot)
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


class Fields:
    """A parsed header block: ``raw_items()`` gives (name, value) pairs exactly as
    ``BytesHeaderParser(policy=compat32)`` would (see ``parse_header``), without building an
    ``email`` Message (about 5x cheaper; every MIME part of every FETCH section needs one)."""

    __slots__ = ("_items", "__dict__")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def raw_items(self):
        return iter(self._items)


_LINE_SPLIT = re.compile(r"(?<=\r\n)|(?<=\r)(?!\n)|(?<=\n)")
_HEADER_LINE = re.compile(r"^(From |[\041-\071\073-\176]*:|[\t ])")


def parse_header(raw: bytes) -> Fields:
    """The header fields of a header block, with the compat32 parser's rules: lines end at CRLF,
    CR or LF; a line starting with space/tab continues the previous field; the fields end at an
    empty line or at the first line that is no field (the rest is body); a leading "From " line
    is the Unix envelope; values keep their folding (callers unfold)."""
    text = raw.decode("ascii", "surrogateescape")
    lines = [x for x in _LINE_SPLIT.split(text) if x]
    items: list[tuple[str, str]] = []
    name = None
    value: list[str] = []
    header_lines = []
    for line in lines:
        if line in ("\r\n", "\n", "\r") or not _HEADER_LINE.match(line):
            break
        header_lines.append(line)
    last = len(header_lines) - 1
    for i, line in enumerate(header_lines):
        if line[0] in " \t":
            if name is not None:
                value.append(line)
            continue
        if name is not None:
            items.append(_source(name, value))
            name, value = None, []
        if line.startswith("From "):
            if i == 0 or i != last:
                continue            # the Unix envelope line, or a misplaced one: skipped
            break                   # a "From " last line is body
        colon = line.find(":")
        if colon <= 0:
            continue
        name, value = line[:colon], [line]
    if name is not None:
        items.append(_source(name, value))
    return Fields(items)


def _source(name: str, lines: list[str]) -> tuple[str, str]:
    """compat32's header_source_parse: the value after the colon, leading blanks and the
    final line end removed, continuation lines kept as they are."""
    v = lines[0].split(":", 1)[1].lstrip(" \t") + "".join(lines[1:])
    return name, v.rstrip("\r\n")


def header_of(data: bytes) -> bytes:
    """The header block (with its terminating blank line) exactly as in the message."""
    return data[:split_header(data)[0]]


def _value(msg: Fields, name: str) -> bytes | None:
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
    return _clean(v)


def _clean(v) -> bytes:
    v = str(v)
    if "\n" in v:
        v = _FOLD.sub(" ", v)
    if "\0" in v:      # CHAR8 excludes NUL (RFC 3501 9): U+FFFD, as Dovecot substitutes
        v = v.replace("\0", "\ufffd")
    return v.strip().encode("utf-8", "surrogateescape")


def _values(msg: Fields, name: str) -> list[bytes]:
    """Every ``name`` field, in order (unfolded raw bytes, as ``_value``)."""
    fields = msg.__dict__.get("_all_fields")
    if fields is None:
        fields = {}
        for k, v in msg.raw_items():
            fields.setdefault(k.lower(), []).append(v)
        msg.__dict__["_all_fields"] = fields
    return [_clean(v) for v in fields.get(name.lower(), ())]


def header_values(header: bytes, name: str) -> list[bytes]:
    """Every occurrence of a field in a header block (SEARCH HEADER matches any of them)."""
    return _values(parse_header(header), name)


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


MISSING_MAILBOX, MISSING_DOMAIN = b"MISSING_MAILBOX", b"MISSING_DOMAIN"
_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")


def _angle(chunk: str) -> tuple[str, str] | None:
    """(text before, text inside) the top-level ``<...>`` of one address, or None."""
    quoted = esc = False
    depth = 0
    for i, ch in enumerate(chunk):
        if esc:
            esc = False
        elif ch == "\\" and (quoted or depth):
            esc = True
        elif quoted:
            quoted = ch != '"'
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth:
            continue
        elif ch == '"':
            quoted = True
        elif ch == "<":
            j = chunk.find(">", i)
            return chunk[:i], chunk[i + 1:] if j < 0 else chunk[i + 1:j]
    return None


_SIMPLE_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+)*"
_WORD = rf"(?:{_SIMPLE_ATOM}|=\?[^?\s]+\?[qQbB]\?[^?\s]*\?=)"
_BARE_ADDR = re.compile(rf"\s*({_SIMPLE_ATOM})@({_SIMPLE_ATOM})\s*")
_ANGLE_ADDR = re.compile(rf"\s*({_WORD}(?:\s+{_WORD})*)?\s*<({_SIMPLE_ATOM})@({_SIMPLE_ATOM})>\s*")


def _one_address(chunk: str) -> list:
    """(name adl mailbox host) of one address as Dovecot gives it: source routes in adl,
    ``MISSING_MAILBOX``/``MISSING_DOMAIN`` where a part is empty (``<>``, ``@``, ``local``)."""
    m = _BARE_ADDR.fullmatch(chunk)        # the common forms, without the general parser
    if m:
        return [None, None, _enc(m.group(1)), _enc(m.group(2))]
    m = _ANGLE_ADDR.fullmatch(chunk)
    if m:
        name = " ".join(m.group(1).split()) if m.group(1) else None
        return [_enc(name) if name else None, None, _enc(m.group(2)), _enc(m.group(3))]
    route = None
    ang = _angle(chunk)
    if ang is not None:
        before, inside = ang
        inside = inside.strip()
        if inside.startswith("@") and ":" in inside:        # obs-route: <@a,@b:user@host>
            r, _, inside = inside.partition(":")
            route = "".join(r.split())
        addr = email.utils.getaddresses([f"<{inside}>"])[0][1] if inside else ""
        name = email.utils.getaddresses([before + "<a@b>"])[0][0] if before.strip() else ""
    else:
        name, addr = email.utils.getaddresses([chunk])[0]
    mbox, at, host = addr.rpartition("@")
    if not at:
        mbox, host = addr, ""
    return [_enc(name) if name else None, _enc(route) if route else None,
            _enc(mbox) if mbox else MISSING_MAILBOX, _enc(host) if host else MISSING_DOMAIN]


@functools.lru_cache(maxsize=4096)
def _addresses(v: bytes | None) -> list | None:
    """RFC 3501 address list: (name adl mailbox host) each; a group is (NIL NIL name NIL) …
    (NIL NIL NIL NIL). Memoised (the same senders recur; callers never modify the result)."""
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
        if _COMMENT.sub("", chunk).strip():      # a lone (comment) is no address
            out.append(_one_address(chunk))
    if in_group:
        out.append([None, None, None, None])
    return out or None


def _address_field(msg: Fields, name: str) -> bytes | None:
    """All occurrences of an address field joined (a repeated To: adds its addresses)."""
    vals = [v for v in _values(msg, name) if v]
    if not vals:
        return b"" if _value(msg, name) is not None else None
    return b", ".join(vals)


def address_text(v: bytes | None) -> str:
    """An address list as SEARCH FROM/TO/CC/BCC matches it (as Dovecot): each address as
    ``Name <mailbox@host>`` (names RFC 2047-decoded, comments and routes dropped)."""
    out = []
    for a in _addresses(v) or ():
        name, _, mbox, host = a
        if mbox is None or mbox == MISSING_MAILBOX and host == MISSING_DOMAIN:
            if name:
                out.append(decode_words(name))
            continue
        spec = mbox.decode("utf-8", "surrogateescape")
        if host is None:            # the start of a group: its name
            out.append(spec + ":")
            continue
        if host != MISSING_DOMAIN:
            spec += "@" + host.decode("utf-8", "surrogateescape")
        out.append(f"{decode_words(name)} <{spec}>" if name else spec)
    return ", ".join(out)


def envelope_of(msg: Fields) -> list:
    def h(name: str) -> bytes | None:
        return _value(msg, name)
    def a(name: str) -> list | None:
        return _addresses(_address_field(msg, name))
    frm = a("From")
    return [h("Date"), h("Subject"), frm, a("Sender") or frm, a("Reply-To") or frm, a("To"),
            a("Cc"), a("Bcc"), h("In-Reply-To"), h("Message-ID")]


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


_SECTION = re.compile(r"^(.+?)\*(\d+)(\*?)$")


def merge_rfc2231(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """RFC 2231 continuations merged, as Dovecot's rfc2231_parse does: ``name*0*=utf-8''a;
    name*1*=b; name*2=c`` → ``("name*", "utf-8''abc")`` (``*`` kept on the key when the value
    is in extended form, still percent-encoded), ``t*0="a b"; t*1=" c"`` → ``("t", "a b c")``.
    Broken sequences (a missing ``*0``, a gap) are left as they are."""
    groups: dict[str, dict[int, tuple[str, bool]]] = {}
    for k, v in params:
        m = _SECTION.match(k)
        if m:
            groups.setdefault(m.group(1).lower(), {})[int(m.group(2))] = (v, bool(m.group(3)))
    if not groups:
        return list(params)
    good = {b for b, segs in groups.items() if sorted(segs) == list(range(len(segs)))}
    out: list[tuple[str, str]] = []
    done: set[str] = set()
    for k, v in params:
        m = _SECTION.match(k)
        base = m.group(1).lower() if m else None
        if base is None or base not in good:
            out.append((k, v))
            continue
        if base in done:
            continue
        done.add(base)
        segs = groups[base]
        extended = segs[0][1]
        out.append((m.group(1) + ("*" if extended else ""), "".join(segs[i][0] for i in range(len(segs)))))
    return out


def _plist(pairs: list[tuple[str, str]]) -> list | None:
    out: list = []
    for k, v in pairs:
        out += [k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape")]
    return out or None


def _ctype_params(msg: Fields, default: str) -> tuple[bytes, bytes, list | None]:
    raw = _value(msg, "Content-Type")
    head, params = split_params(_text(raw)) if raw else (default, [])
    maintype, sep, subtype = head.partition("/")      # case kept as written (as Dovecot does)
    maintype, subtype = maintype.strip(), subtype.strip()
    if not sep or not maintype or not subtype or not _TOKEN.match((maintype + subtype).lower()):
        maintype, _, subtype = default.partition("/")    # RFC 2045: invalid → the default
        params = params if raw else []
    params = merge_rfc2231(params)
    if maintype.lower() == "text" and not any(k.lower() == "charset" for k, _ in params):
        params.append(("charset", "us-ascii"))      # last, as Dovecot adds it
    return maintype.encode(), subtype.encode(), _plist(params)


def _disposition(msg: Fields) -> list | None:
    raw = _value(msg, "Content-Disposition")
    if not raw:
        return None
    head, params = split_params(_text(raw))
    if not head:
        return None
    return [head.encode("utf-8", "surrogateescape"), _plist(merge_rfc2231(params))]


def _language(msg: Fields):
    v = _value(msg, "Content-Language")
    if not v:
        return None
    langs = [x.strip() for x in v.split(b",") if x.strip()]
    return langs[0] if len(langs) == 1 else langs


MAX_DEPTH = 32          # nesting of multipart / message/rfc822 parsed (deeper: one opaque part)
MAX_PARTS = 10_000      # parts parsed per message (the rest stays inside the last one)
_CAPPED = (b"application", b"octet-stream", None)


class Part:
    """One MIME entity located in the message bytes: header [hs, he) (with its blank line),
    body [bs, be). ``children`` for a parsed multipart ([] when it has no parts),
    ``message`` for a parsed message/rfc822 (the encapsulated message as a Part). The same tree
    answers BODYSTRUCTURE and BODY[section], so the two never disagree."""

    __slots__ = ("hs", "he", "bs", "be", "msg", "ctype", "children", "message")

    def __init__(self, hs: int, he: int, bs: int, be: int, msg: Fields | None,
                 ctype: tuple[bytes, bytes, list | None]) -> None:
        self.hs, self.he, self.bs, self.be, self.msg, self.ctype = hs, he, bs, be, msg, ctype
        self.children: list[Part] | None = None
        self.message: Part | None = None

    @property
    def headers(self) -> Fields | None:
        """The parsed header (for relay.imap.fetch.header_value)."""
        return self.msg

    @property
    def mtype(self) -> str:
        """The media type, lower case ("text", "multipart", "message", …)."""
        return self.ctype[0].decode("ascii", "replace").lower()


class _Boundary:
    __slots__ = ("line", "body_end", "after", "level", "close")

    def __init__(self, line: int, body_end: int, after: int, level: int, close: bool) -> None:
        self.line, self.body_end, self.after, self.level, self.close = line, body_end, after, level, close


def _boundary_at(data: bytes, ls: int, end: int, stack: list[bytes], floor: int) -> _Boundary | None:
    """The delimiter line starting at ``ls`` ("--" + one of the active boundaries), if any.
    As Dovecot: the line need only start with the boundary; of several matches the longest,
    and of equal ones the innermost wins. The line break before the line belongs to it."""
    best = -1
    for i in range(len(stack) - 1, -1, -1):
        b = stack[i]
        if (best < 0 or len(b) > len(stack[best])) and data.startswith(b, ls + 2, end):
            best = i
    if best < 0:
        return None
    n = ls + 2 + len(stack[best])
    close = data.startswith(b"--", n, end)
    nl = data.find(b"\n", n, end)
    after = end if nl < 0 else nl + 1
    body_end = ls
    if ls > floor and data[ls - 1] == 0x0A:
        body_end = ls - 2 if ls - 1 > floor and data[ls - 2] == 0x0D else ls - 1
    return _Boundary(ls, body_end, after, best, close)


def _next_boundary(data: bytes, pos: int, end: int, stack: list[bytes]) -> _Boundary | None:
    """The first delimiter line at or after ``pos`` (which is at a line start)."""
    if not stack:
        return None
    ls = pos
    while ls < end:
        if data.startswith(b"--", ls, end):
            b = _boundary_at(data, ls, end, stack, pos)
            if b is not None:
                return b
        nl = data.find(b"\n--", ls, end)
        if nl < 0:
            return None
        ls = nl + 1
    return None


class _Parse:
    __slots__ = ("data", "parts")

    def __init__(self, data: bytes) -> None:
        self.data, self.parts = data, 0

    def entity(self, start: int, end: int, stack: list[bytes], default: str, depth: int,
               msg: Fields | None = None) -> tuple[Part, _Boundary | None]:
        """Parse the entity at ``start``; returns it and the delimiter line that ended it
        (None: the end of the data)."""
        data = self.data
        self.parts += 1
        he, bs = split_header(data, start, end)
        stop = _next_boundary(data, start, he, stack) if stack else None
        if stop is not None:        # a delimiter inside the header: the entity ends there
            he = bs = stop.body_end
            if msg is None:
                msg = parse_header(data[start:he])
            return Part(start, he, bs, bs, msg, _ctype_params(msg, default)), stop
        if msg is None:
            msg = parse_header(data[start:he])
        ctype = _ctype_params(msg, default)
        mtype, stype = ctype[0].lower(), ctype[1].lower()
        deep = depth >= MAX_DEPTH or self.parts >= MAX_PARTS
        if mtype == b"multipart" and not deep:
            boundary = next((ctype[2][i + 1] for i in range(0, len(ctype[2] or ()), 2)
                             if ctype[2][i].lower() == b"boundary"), None)
            if boundary:
                return self._multipart(start, he, bs, end, stack, boundary, msg, ctype, depth)
            stop = _next_boundary(data, bs, end, stack)     # no boundary: a multipart with
            p = Part(start, he, bs, stop.body_end if stop else end, msg, ctype)   # no parts
            p.children = []
            return p, stop
        if mtype == b"message" and stype == b"rfc822" and not deep:
            inner, stop = self.entity(bs, end, stack, "text/plain", depth + 1)
            p = Part(start, he, bs, stop.body_end if stop else end, msg, ctype)
            p.message = inner
            return p, stop
        if deep and mtype in (b"multipart", b"message"):
            ctype = _CAPPED          # too deep or too many parts: one opaque part, still valid
        stop = _next_boundary(data, bs, end, stack)
        return Part(start, he, bs, stop.body_end if stop else end, msg, ctype), stop

    def _multipart(self, start, he, bs, end, stack, boundary, msg, ctype, depth):
        data = self.data
        own = stack + [boundary]
        level = len(own) - 1
        child_default = "message/rfc822" if ctype[1].lower() == b"digest" else "text/plain"
        p = Part(start, he, bs, end, msg, ctype)
        p.children = []
        stop = _next_boundary(data, bs, end, own)            # the end of the preamble
        while stop is not None and stop.level == level and not stop.close:
            child, stop = self.entity(stop.after, end, own, child_default, depth + 1)
            p.children.append(child)
        if stop is not None and stop.level == level:          # our close delimiter: epilogue
            stop = _next_boundary(data, stop.after, end, stack)
        p.be = stop.body_end if stop is not None else end
        return p, stop


def parse_tree(data: bytes) -> Part:
    """The MIME tree of a message (offsets into ``data``; CRLF or bare LF line ends)."""
    return _Parse(data).entity(0, len(data), [], "text/plain", 0)[0]


def _empty_part() -> list:
    return [b"text", b"plain", [b"charset", b"us-ascii"], None, None, b"7bit", 0, 0,
            None, None, None, None]


def _body(data: bytes, p: Part) -> list:
    msg = p.msg
    maintype, subtype, plist = p.ctype
    ext_common = [_disposition(msg), _language(msg), _value(msg, "Content-Location")]
    if p.children is not None:
        kids = [_body(data, c) for c in p.children] or [_empty_part()]   # RFC 3501: 1*body
        return kids + [subtype, plist] + ext_common
    size = p.be - p.bs
    enc = _value(msg, "Content-Transfer-Encoding")
    out: list = [maintype, subtype, plist, _value(msg, "Content-ID"),
                 _value(msg, "Content-Description"), enc if enc else b"7bit", size]
    if maintype.lower() == b"text":
        out.append(data.count(b"\n", p.bs, p.be))
    elif p.message is not None:
        out += [envelope_of(p.message.msg), _body(data, p.message), data.count(b"\n", p.bs, p.be)]
    return out + [_value(msg, "Content-MD5")] + ext_common


def structure_of(data: bytes, root: Part) -> list:
    """BODYSTRUCTURE (with extension data) of a parsed message."""
    return _body(data, root)


def bodystructure(data: bytes) -> list:
    """BODYSTRUCTURE with extension data (BODY is this without the extension fields), for
    the message with CRLF line ends."""
    data = to_crlf(data)
    return _body(data, parse_tree(data))


def find_part(root: Part, numbers: tuple[int, ...]) -> Part | None:
    """The part a section number (1.2.3) names (RFC 3501 6.4.5): a multipart's parts are
    numbered from 1; a message/rfc822 part's numbers go on into the encapsulated message; a
    non-multipart message (or encapsulated message, or leaf part) has just part 1, itself, as
    Dovecot answers. A multipart
    with no parts has one empty placeholder part 1. None when it does not exist."""
    p: Part | None = None
    for depth, n in enumerate(numbers):
        if depth == 0:
            holder = root
        elif p.children is not None:
            holder = p
        elif p.message is not None:
            holder = p.message
        elif p is root:     # a single-part message has no part 1.1
            return None
        else:               # a leaf part's part 1 is itself (BODY[1.1] of text/plain = BODY[1])
            holder = p
        if holder.children is None:
            if n != 1:
                return None
            p = holder
        elif not holder.children:
            if n != 1:
                return None
            p = Part(holder.bs, holder.bs, holder.bs, holder.bs, None, _CAPPED)
        elif n > len(holder.children):
            return None
        else:
            p = holder.children[n - 1]
    return p


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
        except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
            return m.group(0)   # e.g. "=?utf-8?b?\x7f6k=?=": bad base64 (found by fuzzing)

    return _EWORD.sub(one, _EWORD_GAP.sub(r"\1", text))


def header_fields(data: bytes) -> HeaderFields:
    return header_fields_of(parse_header(header_of(data)))


def header_fields_of(msg: Fields) -> HeaderFields:
    date_v = _value(msg, "Date")
    when: float | None = None
    if date_v:
        try:
            when = email.utils.parsedate_to_datetime(_text(date_v)).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            when = None
    return HeaderFields(subject=decode_words(_value(msg, "Subject")),
                        from_=address_text(_address_field(msg, "From")),
                        to=address_text(_address_field(msg, "To")),
                        cc=address_text(_address_field(msg, "Cc")),
                        bcc=address_text(_address_field(msg, "Bcc")),
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
    root = _Parse(data).entity(0, len(data), [], "text/plain", 0, msg)[0]
    return envelope_of(msg), _body(data, root), header_fields_of(msg)


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


def envelope_wire(env: list) -> bytes:
    """ENVELOPE exactly as the IMAP server sends it: RFC 3501's env-from, env-to… are
    "(" 1*address ")" with no space between the addresses (Dovecot's form; imap_encode would
    put spaces). relay.imap.parser.encode_envelope gives the same bytes (checked by tests);
    the index caches this, so FETCH ENVELOPE is a column read."""
    out = bytearray(b"(")
    _envelope_wire(env, out)
    out += b")"
    return bytes(out)


def _envelope_wire(env: list, out: bytearray) -> None:
    for i, f in enumerate(env):
        if i:
            out += b" "
        if 2 <= i <= 7 and f is not None:
            out += b"("
            for a in f:
                _wire(a, out)
            out += b")"
        else:
            _wire(f, out)


def body_wire(bs: list) -> bytes:
    """BODYSTRUCTURE exactly as the IMAP server sends it: the parts of a multipart are not
    separated by spaces (body-type-mpart = 1*body SP media-subtype) and a message/rfc822 part
    carries its envelope in envelope_wire's form (as relay.imap.parser.encode_body)."""
    out = bytearray()
    _body_wire(bs, out)
    return bytes(out)


def _body_wire(bs: list, out: bytearray) -> None:
    if bs and type(bs[0]) in (list, tuple):
        out += b"("
        i = 0
        while i < len(bs) and type(bs[i]) in (list, tuple):
            _body_wire(bs[i], out)
            i += 1
        for x in bs[i:]:
            out += b" "
            _wire(x, out)
        out += b")"
        return
    t0 = bs[0].lower() if bs and isinstance(bs[0], (str, bytes)) else None
    t1 = bs[1].lower() if len(bs) > 1 and isinstance(bs[1], (str, bytes)) else None
    if (t0 in ("message", b"message") and t1 in ("rfc822", b"rfc822") and len(bs) >= 10
            and type(bs[7]) in (list, tuple) and type(bs[8]) in (list, tuple)):
        out += b"("
        for x in bs[:7]:
            _wire(x, out)
            out += b" "
        out += b"("
        _envelope_wire(bs[7], out)
        out += b") "
        _body_wire(bs[8], out)
        for x in bs[9:]:
            out += b" "
            _wire(x, out)
        out += b")"
        return
    _wire(bs, out)
