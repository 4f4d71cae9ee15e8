"""Pure UI helpers: row formatting, the undo journal, trace masking, key table."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tui_mail.store.base import ANSWERED, FLAGGED, SEEN, MessageSummary
from tui_mail.ui.keys import ALL_KEYS, help_rows, validate_keymap
from tui_mail.ui.rows import ASCII, UNICODE, Columns, date_cell, fit, flags_cell, next_sort, row_cells, size_cell
from tui_mail.ui.trace import TraceBuffer, mask
from tui_mail.ui.undo import CannotUndo, FlagChange, Relocation, UndoFlags, UndoJournal, UndoMove

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


def summary(**kw) -> MessageSummary:
    base = dict(uid=1, date=NOW, from_name="Alice", from_addr="alice@crepes.fr", to="", cc="",
                subject="Hi", flags=frozenset(), size=1234)
    base.update(kw)
    return MessageSummary(**base)


@pytest.mark.parametrize("when,expected", [
    (NOW - timedelta(hours=1), "09:00"),
    (NOW - timedelta(days=3), "Nov 20"),
    (datetime(2024, 3, 7, 12, tzinfo=timezone.utc), "2024-03-07"),
    (None, ""),
])
def test_date_cell(when, expected):
    assert date_cell(when, NOW) == expected


@pytest.mark.parametrize("size,expected", [(0, "0"), (999, "999"), (4300, "4.2K"), (13 * 1024, "13K"),
                                           (1536 * 1024, "1.5M"), (3 * 1024 ** 3, "3.0G")])
def test_size_cell(size, expected):
    assert size_cell(size) == expected


def test_flags_cell_slots():
    s = summary(flags=frozenset({FLAGGED, ANSWERED}), has_attachment=True)
    assert flags_cell(s, UNICODE) == " ●★↩⊕"
    assert flags_cell(summary(flags=frozenset({SEEN})), ASCII, selected=True) == "x    "


def test_fit_pads_cuts_and_neutralises_escapes():
    assert fit("abc", 5) == "abc  "
    assert fit("abcdefgh", 5) == "abcd…"
    assert fit("\x1b]0;pwned\x07x", 12) == "␛]0;pwned␇x "
    assert fit("日本語テキスト", 7) == "日本語…"   # wide characters count as two cells


def test_row_cells_fill_the_width_exactly():
    cols = Columns.for_width(80)
    cells = row_cells(summary(subject="A rather long subject " * 5), cols, NOW, UNICODE, indent=1)
    assert sum(len(c) for c in cells) + 4 == 80
    assert cells[3].startswith("  ↳ A rather")


def test_sort_cycle():
    assert [next_sort(s) for s in ("date", "from", "subject", "size", "arrival")] == \
        ["from", "subject", "size", "date", "date"]


def test_undo_move_uses_the_uid_map():
    j = UndoJournal()
    j.record(Relocation("INBOX", "Trash", {5: 50, 6: 51}, (5, 6), "delete"))
    j.record(FlagChange("INBOX", (7,), FLAGGED, True))
    assert UndoJournal.inverse(j.pop()) == UndoFlags("INBOX", (7,), FLAGGED, add=False)
    assert UndoJournal.inverse(j.pop()) == UndoMove("Trash", (50, 51), "INBOX")
    with pytest.raises(CannotUndo):
        j.pop()


def test_undo_without_uidplus_says_why():
    with pytest.raises(CannotUndo, match="UIDPLUS"):
        UndoJournal.inverse(Relocation("INBOX", "Archive", {}, (1,), "archive"))


def test_journal_is_bounded_and_skips_empty():
    j = UndoJournal(limit=3)
    j.record(FlagChange("INBOX", (), SEEN, True))
    for i in range(5):
        j.record(FlagChange("INBOX", (i,), SEEN, True))
    assert len(j) == 3 and j.peek().uids == (4,)


@pytest.mark.parametrize("line,expected", [
    ("a1 LOGIN bob hunter2", "a1 LOGIN bob ****"),
    ("PASS hunter2", "PASS ****"),
    ("AUTH PLAIN AGJvYgBodW50ZXIy", "AUTH PLAIN ****"),
    ("a2 SELECT INBOX", "a2 SELECT INBOX"),
    ("a1 LOGIN bob ****", "a1 LOGIN bob ****"),
])
def test_trace_masks_secrets(line, expected):
    assert mask(line) == expected


def test_trace_buffer_orders_and_limits():
    buf = TraceBuffer(limit=3, clock=lambda: 0.0)
    sink = buf.sink("bob")
    for i in range(5):
        sink("C" if i % 2 == 0 else "S", f"line {i}\r\n")
    lines = buf.since(0)
    assert [l.text for l in lines] == ["line 2", "line 3", "line 4"]
    assert buf.since(lines[-1].seq) == []


def test_keymap_validation_and_help():
    assert validate_keymap({"delete": "d,delete"}) == {"delete": "d,delete"}
    with pytest.raises(ValueError, match="delet"):
        validate_keymap({"delet": "d"})
    rows = help_rows({"archive": "a"})
    assert ("Organising", "a", "Archive", "archive") in rows
    ids = [s.id for s in ALL_KEYS]
    assert len(ids) == len(set(ids))
    from tui_mail.ui import keys as k

    # keys only need to differ among the bindings active together
    for table in (k.MAIN_KEYS + k.APP_KEYS + k.LIST_KEYS + k.DEMO_KEYS, k.TREE_KEYS, k.PREVIEW_KEYS, k.READER_KEYS,
                  k.COMPOSER_KEYS, k.HELP_KEYS, k.RELAY_KEYS):
        keys = [key for s in table for key in s.keys.split(",")]
        assert len(keys) == len(set(keys)), f"two actions share a key in {table[0].group}"


def test_keymap_for_every_screen_by_id():
    from tui_mail.ui.keys import flatten_keymap

    assert flatten_keymap({"delete": "x", "reader": {"save_attachment": "s"}}) == {
        "delete": "x", "reader.save_attachment": "s"}
    assert validate_keymap({"reader": {"reply": "e"}, "composer.send": "ctrl+enter"}) == {
        "reader.reply": "e", "composer.send": "ctrl+enter"}
    with pytest.raises(ValueError, match="reader.nope"):
        validate_keymap({"reader": {"nope": "x"}})
    groups = {row[0] for row in help_rows(demo=True)}
    assert {"Reader", "Composer", "Help", "Folders", "Relays (demo)"} <= groups
    assert ("General", "F3", "Relays", "relays") in help_rows(demo=True)
    assert "Relays (demo)" not in {row[0] for row in help_rows()}


async def test_address_completion_after_the_last_comma():
    from tui_mail.ui.screens.compose import AddressSuggester

    s = AddressSuggester(["Alice Crêpe <alice@crepes.fr>", "carol@crepes.fr"])
    assert await s.get_suggestion("bob@x.org, Ali") == "bob@x.org, Alice Crêpe <alice@crepes.fr>"
    assert await s.get_suggestion("ca") == "carol@crepes.fr"
    assert await s.get_suggestion("bob@x.org, z") is None


async def test_path_completion(tmp_path):
    from tui_mail.ui.screens.compose import PathSuggester

    (tmp_path / "recipes").mkdir()
    (tmp_path / "report.pdf").write_bytes(b"%PDF")
    s = PathSuggester()
    assert await s.get_suggestion(str(tmp_path) + "/rec") == str(tmp_path) + "/recipes/"
    assert await s.get_suggestion(str(tmp_path) + "/rep") == str(tmp_path) + "/report.pdf"
    assert await s.get_suggestion(str(tmp_path) + "/nothing") is None


def test_mailcap_lookup_skips_terminal_entries(tmp_path):
    from tui_mail.ui.screens.reader import mailcap_command, opener_command

    cap = tmp_path / "mailcap"
    cap.write_text("# comment\napplication/pdf; less %s; needsterminal\napplication/pdf; zathura %s\n"
                   "image/*; feh %s\n")
    assert mailcap_command("application/pdf", [cap]) == "zathura %s"
    assert mailcap_command("image/png", [cap]) == "feh %s"
    assert mailcap_command("text/html", [cap]) is None


def test_thread_order_indents_replies_under_parents():
    from tui_mail.ui.threads import thread_order

    def s(uid, mid, parent=""):
        return summary(uid=uid, message_id=mid, in_reply_to=parent)

    sums = {1: s(1, "<a>"), 2: s(2, "<b>", "<a>"), 3: s(3, "<c>"), 4: s(4, "<d>", "<b>")}
    rows, depth = thread_order([4, 3, 2, 1], sums)   # newest first
    assert rows == [1, 2, 4, 3] and depth == {2: 1, 4: 2}
    loop = {1: s(1, "<a>", "<b>"), 2: s(2, "<b>", "<a>")}
    rows, _ = thread_order([2, 1], loop)              # a reference cycle never hangs or drops
    assert sorted(rows) == [1, 2]
