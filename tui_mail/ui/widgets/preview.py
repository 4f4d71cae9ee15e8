"""The preview pane: the highlighted message, rendered by ``tui_mail.ui.render``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from tui_mail.ui.keys import PREVIEW_KEYS, bindings
from tui_mail.ui.render import message_text

if TYPE_CHECKING:
    from tui_mail.mail.parse import MessageView


class Preview(VerticalScroll, can_focus=True):
    DEFAULT_CSS = """
    Preview { background: $surface; padding: 0 1; border-left: solid $primary 30%; }
    Preview:focus { border-left: thick $accent; background: $boost; }
    Preview > Static { width: 1fr; }
    """
    BINDINGS = bindings(PREVIEW_KEYS)     # besides the arrows (Tab focuses the preview)

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id)
        self.view: MessageView | None = None
        self.uid: int | None = None
        self._body = Static(Text("No message selected", style="dim italic"), markup=False)

    def compose(self):
        yield self._body

    def show(self, uid: int, view: MessageView) -> None:
        self.uid, self.view = uid, view
        self._body.update(message_text(view))
        self.scroll_home(animate=False)

    def show_text(self, text: str) -> None:
        self.uid, self.view = None, None
        self._body.update(Text(text, style="dim italic"))
