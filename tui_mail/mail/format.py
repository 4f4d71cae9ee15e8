"""Small display helpers for the message list and headers: short dates, human sizes, and
making untrusted header text safe to put on a terminal.

Header text comes from strangers; an escape sequence in a Subject could move the cursor or
retitle the terminal, so every header shown goes through ``sanitize``.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timezone

_WS_CONTROLS = re.compile(r"[\t\r\n\v\f\x85\u2028\u2029]+")
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"          # CSI … final byte
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC … BEL or ST
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"    # DCS/SOS/PM/APC … ST
    r"|\x1b[@-Z\\-_]"                    # two-byte escapes
)

_BODY_CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]+")


def sanitize(text: str, keep_newlines: bool = False) -> str:
    """Text fit for one terminal row: escape sequences removed, tabs/newlines folded to a
    single space, other control and format (bidi-override) characters dropped. With
    ``keep_newlines`` (message bodies): newlines kept, tabs expanded, format characters kept."""
    text = _ESCAPES.sub("", text)
    if keep_newlines:
        # Bodies can be megabytes: one regex pass (Cc is exactly C0, DEL and C1) instead of a
        # per-character loop (4 MB: 0.05 s instead of 4.5 s).
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
        return _BODY_CONTROLS.sub("", text)
    else:
        text = _WS_CONTROLS.sub(" ", text)
    out = []
    for ch in text:
        if keep_newlines and ch == "\n":
            out.append(ch)
            continue
        cat = unicodedata.category(ch)
        if cat == "Cc":
            continue
        # In one-line headers also drop format characters (bidi overrides can disguise a
        # name or "gnp.exe"); keep ZWJ/ZWNJ (emoji, Indic scripts). Body text keeps them.
        if cat == "Cf" and not keep_newlines and ch not in "\u200d\u200c":
            continue
        out.append(ch)
    return "".join(out)


def short_date(when: datetime | None, now: datetime | None = None) -> str:
    """"14:05" for today, "Mar 03" for this year, "2025-03-03" otherwise; "" for no date.

    ``when`` is shown in the local time zone of ``now`` (the user's), so a message sent at
    23:30 UTC to a user in UTC+2 reads as tomorrow's 01:30."""
    if when is None:
        return ""
    if now is None:
        now = datetime.now().astimezone()
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if now.tzinfo is None:
        now = now.astimezone()
    local = when.astimezone(now.tzinfo)
    if local.date() == now.date():
        return local.strftime("%H:%M")
    if local.year == now.year:
        return f"{_MONTHS[local.month - 1]} {local.day:02d}"
    return f"{local.year:04d}-{local.month:02d}-{local.day:02d}"


# Not strftime("%b"): that follows the C locale and may not be English.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def human_size(size: int | None) -> str:
    """Bytes as the list shows them: "512", "1.2K", "15K", "3.4M", "1.1G"."""
    if size is None or size < 0:
        return ""
    if size < 1000:
        return str(size)
    value = float(size)
    for unit in ("K", "M", "G", "T"):
        value /= 1024
        if value < 9.95:
            return f"{value:.1f}{unit}"
        if value < 999.5 or unit == "T":
            return f"{value:.0f}{unit}"
    return f"{value:.0f}T"  # pragma: no cover - loop always returns


def truncate(text: str, width: int, ellipsis: str = "…") -> str:
    """Cut ``text`` to ``width`` characters, ending with ``ellipsis`` when cut."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width <= len(ellipsis):
        return text[:width]
    return text[: width - len(ellipsis)] + ellipsis
