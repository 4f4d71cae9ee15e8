"""One line under the panes: account, folder, counts, connection state, background progress.

Folder names and notes (server error texts, search queries) are shown as text, controls visible."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui_mail.ui.safe_text import shown


class StatusBar(Widget):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $foreground; padding: 0 1; }
    """

    account: reactive[str] = reactive("")
    folder: reactive[str] = reactive("")
    total: reactive[int] = reactive(0)
    unread: reactive[int] = reactive(0)
    selected: reactive[int] = reactive(0)
    connection: reactive[str] = reactive("offline")
    progress: reactive[str] = reactive("")
    note: reactive[str] = reactive("")

    def render(self) -> Text:
        mark = {"online": "● online", "connecting": "◌ connecting", "offline": "○ offline"}
        parts = [self.account or "no account", self.folder or "—",
                 f"{self.total:,} messages, {self.unread:,} unread"]
        if self.selected:
            parts.append(f"{self.selected} selected")
        parts.append(mark.get(self.connection, self.connection))
        if self.progress:
            parts.append(self.progress)
        if self.note:
            parts.append(self.note)
        return Text(" │ ".join(shown(p, limit=300) for p in parts), no_wrap=True, overflow="ellipsis")
