"""Pure checks behind issue 12's list fixes: fixed-width columns whatever the flags and the
subject, one decoder for subjects in the list and in the preview."""

from __future__ import annotations

from datetime import datetime, timezone

from rich.cells import cell_len

from tui_mail.mail.parse import parse_message
from tui_mail.store.base import ANSWERED, FLAGGED, FORWARDED, SEEN, MessageSummary
from tui_mail.store.imap import decode_words as imap_decode
from tui_mail.store.local import summary_fields
from tui_mail.ui.rows import ASCII, UNICODE, Columns, Glyphs, flags_cell, row_cells

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
SUBJECTS = ["plain", "Grüße aus Köln — Ça va? 🍔", "寿司 war lecker 寿司寿司寿司寿司寿司寿司寿司寿司寿司",
            "e\u0301\u0301 combining", "tab\there\x1b[31m red", "", "x" * 300]


def summary(flags, subject, attach=False, sender="Zoë Ångström"):
    return MessageSummary(1, NOW, sender, "zoe@koeln.de", "", "", subject, frozenset(flags), 1234,
                          has_attachment=attach)


def test_every_row_is_exactly_as_wide_as_its_columns_whatever_the_flags():
    flag_sets = [set(), {SEEN}, {FLAGGED}, {ANSWERED}, {FORWARDED}, {ANSWERED, FLAGGED, FORWARDED}]
    for width in (60, 98, 140):
        cols = Columns.for_width(width)
        widths = (cols.flags, cols.date, cols.sender, cols.subject, cols.size)
        for glyphs in (UNICODE, ASCII):
            for flags in flag_sets:
                for subject in SUBJECTS:
                    for selected in (False, True):
                        cells = row_cells(summary(flags, subject, attach=True, sender=subject or "x"),
                                          cols, NOW, glyphs, selected=selected)
                        assert tuple(cell_len(c) for c in cells) == widths, (flags, subject)


def test_a_glyph_wider_than_one_cell_falls_back_to_ascii():
    wide = Glyphs(unread="📩", flagged="🚩", answered="↩", attachment="📎", selected="✔", forwarded="↪")
    cell = flags_cell(summary({ANSWERED}, "s", attach=True), wide, selected=True)
    assert cell_len(cell) == 5 and cell == "✔N ↩@"
    assert flags_cell(summary({SEEN, FORWARDED}, "s"), UNICODE) == "   ↪ "
    assert flags_cell(summary({SEEN, FORWARDED, ANSWERED}, "s"), ASCII) == "   r "


def test_list_and_preview_decode_a_subject_the_same_way():
    for header in ("=?x-unknown?B?SGVsbG8gd29ybGQ=?=", "=?utf-8?q?Gr=C3=BC=C3=9Fe?= =?utf-8?q?_aus?= K",
                   "=?iso-8859-1?q?caf=E9?=", "=?utf-8?b?broken", "=?gb2312?B?yKXQ0A==?="):
        raw = f"Subject: {header}\r\nFrom: a@b.c\r\n\r\nbody\r\n".encode()
        shown_by_preview = parse_message(raw).subject
        assert imap_decode(header) == shown_by_preview
        assert summary_fields(raw)["subject"] == shown_by_preview
    assert parse_message(b"Subject: =?x-unknown?B?SGVsbG8gd29ybGQ=?=\r\n\r\n").subject == "Hello world"
