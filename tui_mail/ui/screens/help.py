"""The help screen (?): every key, as currently mapped, grouped like the README."""

from __future__ import annotations

from collections.abc import Mapping

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

from tui_mail.ui.keys import HELP_KEYS, bindings, help_rows

EXTRA = (
    ("General", "Ctrl+P", "Command palette (every action, themes)", ""),
    ("General", "Tab", "Next pane / next field", ""),
)


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; background: $background 60%; }
    HelpScreen > Vertical { width: 100; max-width: 100%; height: 90%; border: thick $primary; background: $surface; }
    HelpScreen DataTable { height: 1fr; }
    """
    BINDINGS = bindings(HELP_KEYS)

    def __init__(self, keymap: Mapping[str, str] | None = None, demo: bool = False):
        super().__init__()
        self.keymap = keymap or {}
        self.demo = demo

    def compose(self) -> ComposeResult:
        with Vertical():
            # markup=False: "[keys]" is text here, not a style tag (it used to vanish, leaving
            # "config.toml )")
            yield Label(" Keys — remap by id in config.toml: [keys] delete = \"x\", [keys.reader] …",
                        markup=False)
            yield DataTable(cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("Group", "Keys", "Action", "Id")
        for row in help_rows(self.keymap, demo=self.demo) + list(EXTRA):
            table.add_row(*(Text(cell) for cell in row))
        table.focus()
