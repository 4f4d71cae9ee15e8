"""Turning bytes in some declared (or undeclared, or wrong) charset into text, and decoding
RFC 2047 encoded words, without ever failing.

The stdlib decodes a known charset fine but gives up (replacement characters, or an
exception) on the charsets real mail carries: misspelled labels, Microsoft names,
``iso-8859-1`` that is really windows-1252, undeclared 8-bit UTF-8. The rules here follow
what browsers do (WHATWG encoding labels) closely enough for mail.
"""

from __future__ import annotations

import codecs
import re

# Labels seen in the wild that Python does not know, or knows as a narrower charset.
_ALIASES = {
    "iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "us-ascii": "cp1252",
    "ascii": "cp1252", "iso-8859-8-i": "iso-8859-8", "iso-8859-6-i": "iso-8859-6",
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "cn-gb": "gb18030",
    "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "euc-kr": "cp949", "windows-874": "cp874",
    "x-sjis": "shift_jis", "shift-jis": "shift_jis", "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman", "unicode-1-1-utf-7": "utf-7", "x-user-defined": "cp1252",
    "utf8": "utf-8", "x-unknown": "", "unknown-8bit": "", "unknown": "", "default": "",
    "x-binaryenc": "", "8bit": "",
}


def normalize_charset(label: str | None) -> str | None:
    """A Python codec name for a MIME charset label, or None when it is unknown/empty."""
    if not label:
        return None
    label = label.strip().strip('"').lower()
    label = label.split("*", 1)[0]  # RFC 2231 language suffix: utf-8*en
    mapped = _ALIASES.get(label, label)
    if not mapped:
        return None
    try:
        info = codecs.lookup(mapped)
    except LookupError:
        return None
    # Refuse codecs that are not text encodings (base64_codec, rot13…).
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def decode_bytes(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """(text, problem): decode with the declared charset; on unknown labels or invalid
    bytes fall back to UTF-8, then windows-1252, and say so in ``problem``."""
    codec = normalize_charset(charset)
    if codec:
        try:
            return data.decode(codec), None
        except UnicodeDecodeError:
            pass
        except (LookupError, ValueError):  # pragma: no cover - lookup checked above
            codec = None
    if data.isascii():
        return data.decode("ascii"), None
    try:
        text = data.decode("utf-8")
        if codec:
            return text, f"text is not valid {charset}; shown as UTF-8"
        return text, (f"unknown charset {charset!r}; shown as UTF-8" if charset else None)
    except UnicodeDecodeError:
        pass
    if codec:
        return data.decode(codec, errors="replace"), f"text is not valid {charset}; some characters replaced"
    text = data.decode("cp1252", errors="replace")
    if charset:
        return text, f"unknown charset {charset!r}; shown as windows-1252"
    return text, "undeclared 8-bit text; shown as windows-1252"


def fix_surrogates(text: str) -> str:
    """Header strings from the email package keep undecodable 8-bit bytes as lone
    surrogates; turn them back into bytes and decode those as UTF-8 (else windows-1252)."""
    if not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    data = text.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(\?=)\s+(=\?)")


def _q_decode(text: str) -> bytes:
    text = text.replace("_", " ")
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "=" and re.fullmatch(r"[0-9A-Fa-f]{2}", text[i + 1:i + 3]):
            out.append(int(text[i + 1:i + 3], 16))
            i += 3
            continue
        out.extend(ch.encode("utf-8", "surrogateescape"))
        i += 1
    return bytes(out)


def _b_decode(text: str) -> bytes:
    import base64
    import binascii

    cleaned = re.sub(r"[^A-Za-z0-9+/]", "", text)
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned)
    except (binascii.Error, ValueError):
        return text.encode("ascii", "replace")


def decode_words(value: str) -> tuple[str, list[str]]:
    """Decode RFC 2047 encoded words in an unstructured header value → (text, problems).

    Adjacent encoded words are joined (whitespace between them is not text, RFC 2047 §6.2);
    consecutive words in one charset are decoded together so a multi-byte character split
    across two words survives; unknown charsets fall back as in ``decode_bytes``."""
    value = fix_surrogates(value)
    if "=?" not in value:
        return value, []
    value = _BETWEEN_WORDS.sub(r"\1\2", value)
    problems: list[str] = []
    pieces: list[tuple[str | None, bytes | str]] = []  # (charset, bytes) or (None, text)
    pos = 0
    for m in _ENCODED_WORD.finditer(value):
        if m.start() > pos:
            pieces.append((None, value[pos:m.start()]))
        charset = m.group(1).split("*", 1)[0]
        data = _q_decode(m.group(3)) if m.group(2) in "Qq" else _b_decode(m.group(3))
        if pieces and pieces[-1][0] is not None and pieces[-1][0].lower() == charset.lower():
            pieces[-1] = (pieces[-1][0], pieces[-1][1] + data)  # type: ignore[operator]
        else:
            pieces.append((charset, data))
        pos = m.end()
    if pos < len(value):
        pieces.append((None, value[pos:]))
    out = []
    for charset, data in pieces:
        if charset is None:
            out.append(data)  # type: ignore[arg-type]
            continue
        text, problem = decode_bytes(data, charset)  # type: ignore[arg-type]
        if problem:
            problems.append(problem)
        out.append(text)
    return "".join(out), problems
