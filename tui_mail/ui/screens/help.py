"""The help screen (?): every key, as currently mapped, grouped like the README."""

from __future__ import annotations

from collections.abc import Mapping

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

from tui_mail.ui.keys import help_rows

EXTRA = (
    ("Reader", "h", "Full headers on/off"), ("Reader", "v", "Raw source on/off"),
    ("Reader", "n / N", "Next / previous message"), ("Reader", "a", "Save attachment"),
    ("Reader", "O", "Open attachment"),
    ("Composer", "Ctrl+S", "Send"), ("Composer", "Ctrl+D", "Save draft"),
    ("Composer", "Ctrl+E", "Edit body in $EDITOR"), ("Composer", "Ctrl+T", "Add attachment"),
    ("Composer", "Ctrl+X", "Remove last attachment"), ("Composer", "Escape", "Discard (asks)"),
    ("General", "Ctrl+P", "Command palette (every action, themes)"), ("General", "Tab", "Next pane"),
)


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; background: $background 60%; }
    HelpScreen > Vertical { width: 72; height: 90%; border: thick $primary; background: $surface; }
    HelpScreen DataTable { height: 1fr; }
    """
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, keymap: Mapping[str, str] | None = None):
        super().__init__()
        self.keymap = keymap or {}

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(" Keys (remap in config.toml [keys])")
            yield DataTable(cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("Group", "Keys", "Action")
        for row in help_rows(self.keymap) + list(EXTRA):
            table.add_row(*row)
        table.focus()
