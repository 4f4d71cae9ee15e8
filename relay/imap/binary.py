"""BINARY (RFC 3516): FETCH BINARY[part] / BINARY.SIZE[part] decode a part's
Content-Transfer-Encoding on the server, and APPEND with a literal8 (``~{n}``) may carry raw
binary. Pure functions over message bytes (relay.imap.fetch locates the parts).

Content that was decoded (or has NULs) goes out as a literal8 (``~{n}``), content sent as
stored as a normal literal (Dovecot's choice).
An APPENDed message whose parts say ``Content-Transfer-Encoding: binary`` is stored with those
parts converted to base64 (as Dovecot does), so clients that only know BODY[] never see NULs;
BINARY[part] decodes them back to the exact bytes. Decoding uses the stdlib (base64, binascii).
"""

from __future__ import annotations

import base64
import binascii
import re

from relay.imap.fetch import Part, find_part, header_value, parse_structure

_IDENTITY = {b"", b"7bit", b"8bit", b"binary"}


class UnknownCTE(ValueError):
    """A Content-Transfer-Encoding this server cannot decode (answer NO [UNKNOWN-CTE])."""


def _mtype(p: Part) -> str:
    """The media type in lower case (``Part.mtype``; older trees kept it in ``ctype``)."""
    t = getattr(p, "mtype", None)
    return t if t is not None else str(p.ctype).lower()


def _cte(p: Part) -> bytes:
    return (header_value(p.headers, "CONTENT-TRANSFER-ENCODING") or b"").strip().lower()


def _qp_decode(body: bytes) -> bytes:
    """Quoted-printable → bytes; soft line breaks (``=`` at a line end) join lines, CRLF kept."""
    lines = body.split(b"\n")
    out = bytearray()
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        line = line[:-1] if line.endswith(b"\r") else line
        line = line.rstrip(b" \t")
        soft = line.endswith(b"=")
        if soft:
            line = line[:-1]
        out += binascii.a2b_qp(line)
        if not soft and not last:
            out += b"\r\n"
    return bytes(out)


def decode(data: bytes, part: tuple[int, ...], root: Part | None = None) -> bytes | None:
    """BINARY[part] content (None when the part does not exist). ``()`` is the whole message
    as stored; a multipart or message/rfc822 part is returned as it is."""
    got = decode_part(data, part, root)
    return None if got is None else got[0]


def decode_part(data: bytes, part: tuple[int, ...], root: Part | None = None
                ) -> tuple[bytes, bool] | None:
    """(BINARY[part] content, whether a transfer encoding was undone), or None."""
    root = root or parse_structure(data)
    if not part:
        return _convert(data, 0, len(data), root)
    p = find_part(root, part)
    if p is None:
        return None
    if p.children or _mtype(p) in ("multipart", "message"):
        # RFC 3516 4.2: inside a multipart or message part every encoded leaf is decoded and
        # its Content-Transfer-Encoding becomes binary (as Dovecot does)
        return _convert(data, p.bs, p.be, p.message if p.message is not None else p)
    cte = _cte(p)
    if cte in _IDENTITY:
        return data[p.bs:p.be], False
    return _decoded(data[p.bs:p.be], cte), True


_CTE_FIELD = re.compile(rb"(?im)^content-transfer-encoding:[^\n]*\n(?:[ \t][^\n]*\n)*")


def _relabel(header: bytes) -> bytes:
    """The header with its Content-Transfer-Encoding field(s) removed and
    ``Content-Transfer-Encoding: binary`` added last (where Dovecot puts it)."""
    h = _CTE_FIELD.sub(b"", header)
    for end in (b"\r\n\r\n", b"\n\n"):
        if h.endswith(end):
            return h[:-len(end) // 2] + b"Content-Transfer-Encoding: binary" + end
    if h in (b"\r\n", b"\n"):
        return b"Content-Transfer-Encoding: binary\r\n" + h
    return h + b"\r\nContent-Transfer-Encoding: binary\r\n"


def _convert(data: bytes, start: int, end: int, entity: Part) -> tuple[bytes, bool]:
    """data[start:end] with every base64/quoted-printable leaf under ``entity`` decoded and
    relabelled ``Content-Transfer-Encoding: binary``."""
    leaves: list[Part] = []
    stack = [entity]
    while stack:
        p = stack.pop()
        if p.children:
            stack.extend(p.children)
        elif p.message is not None:
            stack.append(p.message)
        elif _mtype(p) not in ("multipart", "message") and _cte(p) not in _IDENTITY \
                and start <= p.hs and p.be <= end:
            leaves.append(p)
    if not leaves:
        return data[start:end], False
    out = data[start:end]
    for p in sorted(leaves, key=lambda p: p.hs, reverse=True):
        header = _relabel(data[p.hs:p.he])
        body = _decoded(data[p.bs:p.be], _cte(p))
        out = out[:p.hs - start] + header + body + out[p.be - start:]
    return out, True


def _decoded(body: bytes, cte: bytes) -> bytes:
    if cte == b"base64":
        cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", body)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4] if len(cleaned) % 4 == 1 else cleaned
        cleaned += b"=" * (-len(cleaned) % 4)
        try:
            return base64.b64decode(cleaned)
        except (binascii.Error, ValueError):
            return b""
    if cte == b"quoted-printable":
        return _qp_decode(body)
    raise UnknownCTE(cte.decode("ascii", "replace")[:40])


def wire(content: bytes, decoded: bool = False) -> bytes:
    """A literal8 (``~{n}``) for content that was decoded from base64/quoted-printable or has
    NULs (as Dovecot decides; RFC 3516 allows literal8 for any BINARY data), else a literal."""
    lit8 = decoded or b"\0" in content
    return (b"~" if lit8 else b"") + b"{%d}\r\n" % len(content) + content


_CTE_LINE = re.compile(rb"(?im)^content-transfer-encoding:[ \t]*binary[ \t]*(\r?\n)")


def binary_to_base64(data: bytes) -> bytes:
    """Re-encode every leaf part marked ``Content-Transfer-Encoding: binary`` as base64 (for an
    APPEND with literal8). Other bytes are kept exactly."""
    root = parse_structure(data)
    leaves: list[Part] = []
    stack = [root]
    while stack:
        p = stack.pop()
        if p.children:
            stack.extend(p.children)
        elif p.message is not None:
            stack.append(p.message)
        elif _mtype(p) not in ("multipart", "message") and _cte(p) == b"binary":
            leaves.append(p)
    for p in sorted(leaves, key=lambda p: p.bs, reverse=True):
        header = _CTE_LINE.sub(lambda m: b"Content-Transfer-Encoding: base64" + m.group(1),
                               data[p.hs:p.he], count=1)
        raw = base64.b64encode(data[p.bs:p.be])
        body = b"\r\n".join(raw[i:i + 76] for i in range(0, len(raw), 76))
        if p.be == len(data):
            body += b"\r\n"
        data = data[:p.hs] + header + body + data[p.be:]
    return data


__all__ = ["UnknownCTE", "binary_to_base64", "decode", "decode_part", "wire"]
