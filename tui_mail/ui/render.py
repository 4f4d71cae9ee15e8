"""MessageView → Rich Text for the preview pane and the reader.

Headers are decoded by ``tui_mail.mail.parse``; here they are laid out, links in the body are
highlighted (and made clickable where the terminal supports OSC 8), and the problems the parser
recorded are shown instead of hidden. All header and body text goes through
``tui_mail.ui.safe_text``: mail comes from strangers and must not drive the terminal, so control
characters are made visible (ESC → ␛) and nothing is ever parsed as markup.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

from rich.style import Style
from rich.text import Text

from tui_mail.ui.rows import size_cell
from tui_mail.ui.safe_text import shown, shown_block

if TYPE_CHECKING:
    from tui_mail.mail.parse import MessageView

#: Characters of body (or raw source) put in the reader's Static: Textual lays out 100,000 in
#: ~0.4 s and 1,000,000 in ~4 s, so longer text is cut here and the cut is said on screen.
DISPLAY_CHARS = 100_000

_URL = re.compile(r"""(?:https?://|ftp://|mailto:|www\.)[^\s<>"'()\[\]{}]+[^\s<>"'()\[\]{}.,;:!?]""", re.I)


def clean(text: str) -> str:
    """Terminal control characters (ESC, C1, bidi…) made visible; newlines and tabs kept."""
    return shown_block(text)


def _addrs(addrs) -> str:
    return ", ".join(a.display() for a in addrs)


def header_block(view: MessageView, full: bool = False) -> Text:
    out = Text()
    if full:
        for name, value in view.headers[:1000]:
            out.append(f"{shown(name, 200)}: ", style="bold")
            out.append(shown(value.replace("\n", " "), limit=20_000) + "\n")
        if len(view.headers) > 1000:
            out.append(f"… {len(view.headers) - 1000:,} more header lines not shown\n", style="italic")
        return out
    date = view.date.astimezone().strftime("%a, %d %b %Y %H:%M") if isinstance(view.date, datetime) else ""
    for label, value in (("From", _addrs(view.from_)), ("To", _addrs(view.to)),
                         ("Cc", _addrs(view.cc)), ("Date", date), ("Subject", view.subject)):
        if value or label in ("From", "Subject"):
            out.append(f"{label}: ", style="bold")
            out.append(shown(value, limit=20_000) + "\n", style="bold" if label == "Subject" else "")
    return out


def body_text(text: str) -> Text:
    """The body with URLs underlined and linked; quoted lines (> …) dimmed."""
    out = Text()
    for line in clean(text).split("\n"):
        start = len(out)
        out.append(line + "\n")
        if line.lstrip().startswith(">"):
            out.stylize("italic dim", start, start + len(line))
        for m in _URL.finditer(line):
            url = m.group(0)
            target = url if "://" in url or url.startswith("mailto:") else "http://" + url
            out.stylize(Style(underline=True, bold=True, link=target), start + m.start(), start + m.end())
    out.rstrip()
    return out


def attachment_lines(view: MessageView) -> Text:
    out = Text()
    for i, a in enumerate(view.attachments, 1):
        out.append(f" [{i}] ", style="bold")
        out.append(f"{shown(a.filename) or '(unnamed)'}  {shown(a.content_type, 100)}  {size_cell(a.size)}\n")
    return out


def message_text(view: MessageView, full_headers: bool = False) -> Text:
    out = header_block(view, full_headers)
    for problem in view.problems[:50]:     # before a long attachment list, so they are seen
        out.append(f"⚠ {shown(problem)}\n", style="italic")
    if len(view.problems) > 50:
        out.append(f"⚠ … {len(view.problems) - 50:,} more problems\n", style="italic")
    if view.attachments:
        out.append("Attachments:\n", style="bold")
        out.append_text(attachment_lines(view))
    out.append("\n")
    text, more = _cut(view.text)
    out.append_text(body_text(text) if text else Text("(no text to show)", style="dim italic"))
    if more:
        out.append(f"\n\n… {more:,} more characters not shown (save or pipe the message to read them)",
                   style="italic")
    return out


def _cut(text: str, limit: int = DISPLAY_CHARS) -> tuple[str, int]:
    """``text`` cut at a line end near ``limit``, and how many characters were left out."""
    if len(text) <= limit:
        return text, 0
    end = text.rfind("\n", 0, limit) + 1 or limit
    return text[:end], len(text) - end


def raw_text(raw: bytes) -> Text:
    text, more = _cut(raw[: DISPLAY_CHARS * 4].decode("utf-8", "replace"))
    more += max(0, len(raw) - DISPLAY_CHARS * 4)
    out = Text(clean(text))
    if more:
        out.append(f"\n… {more:,} more characters of the source not shown", style="italic")
    return out
