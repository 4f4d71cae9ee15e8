"""The protocol trace screen (F2): the live SMTP/IMAP/POP3 dialogue as C:/S: lines.

Reads the app's ``TraceBuffer`` on a short timer (so a busy sync never floods the loop) and
appends new lines to a RichLog, client lines in one colour and server lines in another, like a
textbook transcript. Passwords are masked by the stores and again by the buffer.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, RichLog, Static

from tui_mail.ui.rows import fit
from tui_mail.ui.safe_text import shown
from tui_mail.ui.trace import TraceBuffer, TraceLine


def format_line(line: TraceLine) -> Text:
    style = "bold cyan" if line.direction == "C" else "green"
    out = Text(fit(line.account, 14) + " ", style="dim")
    out.append(f"{shown(line.direction, 2)}: ", style=style + " bold")
    out.append(shown(line.text, limit=4000), style=style)
    return out


class TraceScreen(Screen[None]):
    DEFAULT_CSS = """
    TraceScreen > Static { height: 1; background: $panel; padding: 0 1; }
    TraceScreen RichLog { background: $surface; }
    """
    BINDINGS = [Binding("escape,q,f2", "app.pop_screen", "Back"),
                Binding("c", "clear", "Clear")]

    def __init__(self, buffer: TraceBuffer, since: int = 0):
        super().__init__()
        self.buffer = buffer
        self.seen = since

    def compose(self) -> ComposeResult:
        yield Static("Protocol trace — C: client, S: server (passwords masked)")
        yield RichLog(max_lines=5000, wrap=False, markup=False, auto_scroll=True)
        yield Footer()

    def on_mount(self) -> None:
        self.poll()
        self.set_interval(0.1, self.poll)

    def poll(self) -> None:
        lines = self.buffer.since(self.seen)
        if lines:
            log = self.query_one(RichLog)
            for line in lines:
                log.write(format_line(line))
            self.seen = lines[-1].seq

    def action_clear(self) -> None:
        self.query_one(RichLog).clear()
