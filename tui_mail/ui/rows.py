"""Pure formatting of message-list rows: flag glyphs, dates, sizes and column layout.

Kept free of Textual so the virtual list's per-row work is plain string code that can be unit
tested by the hundred and measured on its own (it runs for every visible row on every repaint).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rich.cells import cell_len, set_cell_size

from tui_mail.store.base import FORWARDED, MessageSummary
from tui_mail.ui.safe_text import shown


@dataclass(frozen=True)
class Glyphs:
    unread: str
    flagged: str
    answered: str
    attachment: str
    selected: str
    forwarded: str = "f"


UNICODE = Glyphs(unread="●", flagged="★", answered="↩", attachment="⊕", selected="✔", forwarded="↪")
ASCII = Glyphs(unread="N", flagged="*", answered="r", attachment="@", selected="x", forwarded="f")


def _slot(glyph: str, fallback: str) -> str:
    """Exactly one cell: a glyph the width tables (wcwidth, via rich's cell_len) do not call one
    cell wide is replaced by its ASCII fallback, so the date and sender columns never shift."""
    return glyph if cell_len(glyph) == 1 else fallback


def flags_cell(s: MessageSummary, glyphs: Glyphs, selected: bool = False) -> str:
    """Five fixed one-cell slots: selected, unread, flagged, answered/forwarded, attachment."""
    replied = (_slot(glyphs.answered, ASCII.answered) if s.answered else
               _slot(glyphs.forwarded, ASCII.forwarded) if FORWARDED in s.flags else " ")
    return "".join((
        _slot(glyphs.selected, ASCII.selected) if selected else " ",
        _slot(glyphs.unread, ASCII.unread) if s.unread else " ",
        _slot(glyphs.flagged, ASCII.flagged) if s.flagged else " ",
        replied,
        _slot(glyphs.attachment, ASCII.attachment) if s.has_attachment else " ",
    ))


def date_cell(when: datetime | None, now: datetime) -> str:
    """Today: ``14:05``; this year: ``Mar 07``; older: ``2024-03-07``; unknown: blank."""
    if when is None:
        return ""
    local = when.astimezone(now.tzinfo) if now.tzinfo else when
    if local.date() == now.date():
        return local.strftime("%H:%M")
    if local.year == now.year:
        return local.strftime("%b %d")
    return local.strftime("%Y-%m-%d")


def size_cell(size: int) -> str:
    """Human sizes in at most five cells: ``812``, ``4.2K``, ``13K``, ``1.5M``, ``2.0G``."""
    if size < 1000:
        return str(size)
    for unit, factor in (("K", 1024), ("M", 1024 ** 2), ("G", 1024 ** 3)):
        value = size / factor
        if value < 9.95:
            return f"{value:.1f}{unit}"
        if value < 1000:
            return f"{value:.0f}{unit}"
    return f"{size / 1024 ** 4:.0f}T"


# Header text comes from strangers: every control character (ESC included) is made visible by
# safe_text.shown so a Subject can never move the cursor or retitle the terminal.


def fit(text: str, width: int) -> str:
    """Cut or pad ``text`` to exactly ``width`` terminal cells, marking cuts with an ellipsis."""
    if width <= 0:
        return ""
    text = shown(text, limit=max(width * 4, 64))
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "…" if width > 1 else set_cell_size(text, width)
    return set_cell_size(text, width)


@dataclass(frozen=True)
class Columns:
    """Cell widths of each column for a given list width."""

    flags: int
    date: int
    sender: int
    subject: int
    size: int

    @classmethod
    def for_width(cls, width: int) -> Columns:
        flags, date, size = 5, 10, 5
        rest = max(0, width - flags - date - size - 4)  # four one-cell gaps
        sender = min(24, max(8, rest // 3))
        subject = max(0, rest - sender)
        return cls(flags, date, sender, subject, size)


def row_cells(s: MessageSummary, cols: Columns, now: datetime, glyphs: Glyphs,
              selected: bool = False, indent: int = 0) -> tuple[str, str, str, str, str]:
    """The five cell texts of one row, each exactly its column width."""
    subject = ("  " * min(indent, 8) + ("↳ " if indent else "")) + (s.subject or "(no subject)")
    return (
        fit(flags_cell(s, glyphs, selected), cols.flags),
        fit(date_cell(s.date, now), cols.date),
        fit(s.from_name or s.from_addr or "(unknown)", cols.sender),
        fit(subject, cols.subject),
        size_cell(s.size).rjust(cols.size)[: cols.size],
    )


SORT_KEYS = ("date", "arrival", "from", "subject", "size")


def next_sort(current: str) -> str:
    """Cycle date → from → subject → size → date (arrival is reachable from config only)."""
    cycle = ("date", "from", "subject", "size")
    try:
        return cycle[(cycle.index(current) + 1) % len(cycle)]
    except ValueError:
        return "date"
