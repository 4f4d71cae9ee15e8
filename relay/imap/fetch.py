"""Pure evaluation of IMAP FETCH items over a message's bytes: ENVELOPE, BODYSTRUCTURE, and
BODY[section]<partial> by MIME part number, with HEADER.FIELDS(.NOT), MIME and TEXT.

Why hand-written: ``email`` re-serialises messages (it refolds headers and rewrites line
endings), but IMAP section offsets and sizes must be byte-exact against the file as delivered.
So this module splits the raw bytes itself and only borrows ``email`` for header decoding rules.
Everything here is a function of bytes in, Python values out (see parser.encode for the wire).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from relay.imap.parser import FetchAtt

_HDR_END = re.compile(rb"\r?\n\r?\n")


@dataclass
class Part:
    """A MIME entity located in the message bytes: header [hs, he), body [bs, be)."""

    hs: int
    he: int
    bs: int
    be: int
    ctype: str = "text"
    csub: str = "plain"
    params: dict[str, str] = field(default_factory=dict)
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    children: list["Part"] = field(default_factory=list)
    message: "Part | None" = None      # for message/rfc822 bodies


def split_header(data: bytes, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """(header_end, body_start) for the entity in data[start:end]; header_end includes the
    blank line (IMAP's HEADER section does)."""
    end = len(data) if end is None else end
    if data.startswith(b"\r\n", start) or data.startswith(b"\n", start):
        n = 2 if data.startswith(b"\r\n", start) else 1
        return start + n, start + n
    m = _HDR_END.search(data, start, end)
    if not m:
        return end, end
    return m.end(), m.end()


def parse_headers(raw: bytes) -> list[tuple[str, bytes]]:
    """Unfolded (NAME-upper, value) pairs from a header block."""
    out: list[tuple[str, bytes]] = []
    for line in re.split(rb"\r?\n(?![ \t])", raw):
        if not line.strip():
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        v = re.sub(rb"\r?\n[ \t]", b" ", value).strip()
        out.append((name.strip().decode("ascii", "replace").upper(), v))
    return out


def header_value(headers: list[tuple[str, bytes]], name: str) -> bytes | None:
    for n, v in headers:
        if n == name:
            return v
    return None


_PARAM = re.compile(rb';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def parse_ctype(value: bytes | None, default: tuple[str, str] = ("text", "plain")) -> tuple[str, str, dict]:
    if not value:
        t, s = default
        return t, s, ({"charset": "us-ascii"} if t == "text" else {})
    main, _, rest = value.partition(b";")
    t, _, s = main.strip().decode("ascii", "replace").lower().partition("/")
    if not t or not s:
        t, s = default
    params = {}
    for m in _PARAM.finditer(b";" + rest):
        k = m.group(1).decode("ascii", "replace").lower()
        v = m.group(2).strip()
        if v.startswith(b'"') and v.endswith(b'"') and len(v) >= 2:
            v = re.sub(rb"\\(.)", rb"\1", v[1:-1])
        params[k] = v.decode("utf-8", "replace")
    if t == "text" and "charset" not in params:
        params = {"charset": "us-ascii", **params}
    return t, s.strip(), params


def parse_structure(data: bytes, start: int = 0, end: int | None = None,
                    default: tuple[str, str] = ("text", "plain"), depth: int = 0) -> Part:
    end = len(data) if end is None else end
    he, bs = split_header(data, start, end)
    headers = parse_headers(data[start:he])
    t, s, params = parse_ctype(header_value(headers, "CONTENT-TYPE"), default)
    p = Part(start, he, bs, end, t, s, params, headers)
    if depth > 50:
        return p
    if t == "multipart" and params.get("boundary"):
        b = params["boundary"].encode("utf-8", "replace")
        delim = re.compile(rb"(?:^|\r?\n)--" + re.escape(b) + rb"(--)?[ \t]*(?:\r?\n|$)", re.M)
        child_start = None
        sub_default = ("message", "rfc822") if s == "digest" else ("text", "plain")
        for m in delim.finditer(data, bs, end):
            if child_start is not None:
                p.children.append(parse_structure(data, child_start, m.start(), sub_default, depth + 1))
            if m.group(1):
                child_start = None
                break
            child_start = m.end()
        if child_start is not None:
            p.children.append(parse_structure(data, child_start, end, sub_default, depth + 1))
    elif t == "message" and s == "rfc822":
        p.message = parse_structure(data, bs, end, ("text", "plain"), depth + 1)
    return p


def find_part(root: Part, numbers: tuple[int, ...]) -> Part | None:
    """Part by IMAP section number (1.2.3). For a non-multipart message part 1 is the body."""
    p = root
    for n in numbers:
        if p.ctype == "message" and p.message is not None and p is not root:
            p = p.message
        if p.children:
            if n > len(p.children):
                return None
            p = p.children[n - 1]
        elif n == 1:
            continue
        else:
            return None
    return p


def _filter_fields(raw: bytes, names: tuple[str, ...], exclude: bool) -> bytes:
    want = set(names)
    out = bytearray()
    for line in re.split(rb"(?<=\n)(?![ \t])", raw):
        if not line.strip():
            continue
        name = line.split(b":", 1)[0].strip().decode("ascii", "replace").upper()
        if (name in want) != exclude and b":" in line:
            out += line
    out += b"\r\n"
    return bytes(out)


def section_bytes(data: bytes, att: FetchAtt, root: Part | None = None) -> bytes | None:
    """The bytes of BODY[section] (before partial), or None when the part does not exist."""
    if not att.part and att.text == "":
        return data
    root = root or parse_structure(data)
    if att.part:
        p = find_part(root, att.part)
        if p is None:
            return None
    else:
        p = root
    text = att.text
    if text == "MIME":
        return data[p.hs:p.he]
    if text == "":
        if p.ctype == "message" and p.csub == "rfc822" and p is not root:
            return data[p.bs:p.be]
        return data[p.bs:p.be]
    # HEADER/TEXT of a numbered part apply only to an encapsulated message/rfc822 (else empty,
    # as Dovecot answers BODY[1.TEXT] of a single-part message)
    if att.part:
        if p.message is None or p is root:
            return None
        p = p.message
    if text == "HEADER":
        return data[p.hs:p.he]
    if text == "TEXT":
        return data[p.bs:p.be]
    return _filter_fields(data[p.hs:p.he], att.fields, text == "HEADER.FIELDS.NOT")


def apply_partial(b: bytes, partial: tuple[int, int] | None) -> bytes:
    if partial is None:
        return b
    start, length = partial
    return b[start:start + length]


# ---------------------------------------------------------------------------------- ENVELOPE
def _addresses(v: bytes | None):
    """RFC 3501 address list: ((name adl mailbox host) ...) with group syntax."""
    if v is None or not v.strip():
        return None
    from email.utils import getaddresses
    text = v.decode("utf-8", "surrogateescape")
    out = []
    for name, addr in getaddresses([text]):
        if not addr and not name:
            continue
        mbox, _, host = addr.rpartition("@") if "@" in addr else (addr, "", "")
        out.append([_enc(name) if name else None, None, _enc(mbox) if mbox else None,
                    _enc(host) if host else None])
    return out or None


def _enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def envelope(headers: list[tuple[str, bytes]]) -> list:
    """ENVELOPE as a nested Python list ready for parser.encode."""
    def h(name):
        return header_value(headers, name)
    frm = _addresses(h("FROM"))
    sender = _addresses(h("SENDER")) or frm
    reply_to = _addresses(h("REPLY-TO")) or frm
    return [h("DATE"), h("SUBJECT"), frm, sender, reply_to, _addresses(h("TO")),
            _addresses(h("CC")), _addresses(h("BCC")), h("IN-REPLY-TO"), h("MESSAGE-ID")]


# ---------------------------------------------------------------------------------- BODYSTRUCTURE
def _plist(params: dict) -> list | None:
    if not params:
        return None
    out = []
    for k, v in params.items():
        out += [k.lower(), v]
    return out


def _disposition(part: Part):
    v = header_value(part.headers, "CONTENT-DISPOSITION")
    if not v:
        return None
    kind, sep, rest = v.partition(b";")
    _, _, params = parse_ctype(b"x/y;" + rest if sep else b"x/y")
    kind = kind.strip().decode("ascii", "replace").lower()
    return [kind, _plist(params)]


def _lines(b: bytes) -> int:
    # what Dovecot reports: the number of line breaks (a last line without CRLF not counted)
    return b.count(b"\n")


def bodystructure(data: bytes, part: Part | None = None, *, extended: bool = True) -> list:
    p = part or parse_structure(data)
    if p.children:
        out = [bodystructure(data, c, extended=extended) for c in p.children]
        out.append(p.csub.lower())
        if extended:
            out += [_plist(p.params), _disposition(p), _lang(p), None]
        return out
    body = data[p.bs:p.be]
    enc = header_value(p.headers, "CONTENT-TRANSFER-ENCODING")
    cid = header_value(p.headers, "CONTENT-ID")
    desc = header_value(p.headers, "CONTENT-DESCRIPTION")
    out = [p.ctype.lower(), p.csub.lower(), _plist(p.params), cid, desc,
           (enc.decode("ascii", "replace").lower() if enc else "7bit"), len(body)]
    if p.ctype == "text":
        out.append(_lines(body))
    elif p.ctype == "message" and p.csub == "rfc822" and p.message is not None:
        out += [envelope(p.message.headers), bodystructure(data, p.message, extended=extended), _lines(body)]
    if extended:
        md5 = header_value(p.headers, "CONTENT-MD5")
        out += [md5, _disposition(p), _lang(p), None]
    return out


def _low(v) -> str:
    if isinstance(v, bytes):
        return v.decode("ascii", "replace").lower()
    return str(v).lower() if v is not None else ""


def strip_extensions(bs: list) -> list:
    """BODY from a cached BODYSTRUCTURE: the same tree without the extension fields."""
    if bs and isinstance(bs[0], (list, tuple)):
        n = 0
        while n < len(bs) and isinstance(bs[n], (list, tuple)):   # the parts, then the subtype
            n += 1
        return [strip_extensions(k) for k in bs[:n]] + [bs[n]]
    t, st = _low(bs[0]), _low(bs[1])
    if t == "text":
        return list(bs[:8])
    if t == "message" and st == "rfc822" and len(bs) >= 10:
        return list(bs[:8]) + [strip_extensions(bs[8]), bs[9]]
    return list(bs[:7])


def _lang(p: Part):
    v = header_value(p.headers, "CONTENT-LANGUAGE")
    if not v:
        return None
    langs = [x.strip().decode("ascii", "replace") for x in v.split(b",") if x.strip()]
    return langs[0] if len(langs) == 1 else langs
