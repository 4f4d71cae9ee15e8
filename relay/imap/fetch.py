"""BODY[section]<partial> of a message's bytes: the part a section number names, with
HEADER, HEADER.FIELDS(.NOT), MIME and TEXT (RFC 3501 6.4.5).

The MIME tree comes from relay.store.mime (``parse_tree``/``find_part``), the one parser that
also builds the cached ENVELOPE and BODYSTRUCTURE, so a part's bytes and its BODYSTRUCTURE
entry always describe the same span. Offsets are byte-exact against the message as given
(``email`` would re-serialise it). Everything here is bytes in, bytes out.
"""

from __future__ import annotations

import re

from relay.imap.parser import FetchAtt
from relay.store.mime import Part, find_part, parse_tree, split_header
from relay.store.mime import _value as _field

parse_structure = parse_tree     # the name other IMAP modules use


def header_value(headers, name: str) -> bytes | None:
    """One field of a part's parsed header (``Part.headers``), or None."""
    return None if headers is None else _field(headers, name)


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
    """The bytes of BODY[section] (before partial), or None when the part does not exist.

    HEADER/TEXT/HEADER.FIELDS of a numbered part address the message a message/rfc822 part
    encapsulates (none for other parts); MIME is the part's own header. A top-level
    message/rfc822 body is part 1, so BODY[1.HEADER] is the encapsulated header."""
    if not att.part and att.text == "":
        return data
    if not att.part and att.text in ("HEADER", "TEXT", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        # the message's own header or body: the tree's root spans (0, header end, body
        # start, end) exactly as split_header finds them, so no MIME parse is needed
        he, bs = split_header(data)
        if att.text == "TEXT":
            return data[bs:]
        if att.text == "HEADER":
            return data[:he]
        return _filter_fields(data[:he], att.fields, att.text == "HEADER.FIELDS.NOT")
    root = root or parse_tree(data)
    p = root
    if att.part:
        p = find_part(root, att.part)
        if p is None:
            return None
    text = att.text
    if text == "MIME":
        return data[p.hs:p.he]
    if text == "":
        return data[p.bs:p.be]
    if att.part:
        if p.message is None:
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
    if t == "message" and st == "rfc822" and len(bs) >= 10 and isinstance(bs[8], (list, tuple)):
        return list(bs[:8]) + [strip_extensions(bs[8]), bs[9]]
    return list(bs[:7])


__all__ = ["Part", "apply_partial", "find_part", "header_value", "parse_structure",
           "section_bytes", "split_header", "strip_extensions"]
