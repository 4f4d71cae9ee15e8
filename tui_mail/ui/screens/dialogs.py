"""Small modal dialogs, each a ``ModalScreen[T]`` with its own CSS: confirm, ask for a name,
and the fuzzy folder picker used by move (m) and copy (y)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.fuzzy import Matcher
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Button, Input, Label, OptionList
from textual.widgets.option_list import Option

from tui_mail.ui.safe_text import as_text, shown

DIALOG_CSS = """
{name} {{ align: center middle; background: $background 60%; }}
{name} > Vertical {{
    width: 64; height: auto; max-height: 80%; padding: 1 2;
    border: thick $primary; background: $surface;
}}
{name} Label {{ width: 1fr; margin-bottom: 1; }}
{name} Horizontal {{ height: auto; align-horizontal: right; }}
{name} Button {{ margin-left: 2; }}
"""


class ConfirmScreen(ModalScreen[bool]):
    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmScreen")
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No"):
        super().__init__()
        self.question, self.yes, self.no = question, yes, no

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(as_text(self.question, limit=2000))
            with Horizontal():
                yield Button(f"{self.no} (n)", id="no")
                yield Button(f"{self.yes} (y)", id="yes", variant="error")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class PromptScreen(ModalScreen[str | None]):
    """Ask for one line of text (a folder name); Escape cancels with None."""

    DEFAULT_CSS = DIALOG_CSS.format(name="PromptScreen")
    BINDINGS = [Binding("escape", "cancel", "Cancel"),
                Binding("tab", "complete", "Complete", show=False, priority=True)]

    def __init__(self, question: str, value: str = "", suggester: Suggester | None = None):
        super().__init__()
        self.question, self.value, self.suggester = question, value, suggester

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(as_text(self.question, limit=2000))
            yield Input(shown(self.value), id="answer", suggester=self.suggester)

    def action_complete(self) -> None:
        """Tab takes the suggestion (path completion), like a shell."""
        answer = self.query_one("#answer", Input)
        answer.cursor_position = len(answer.value)
        answer.action_cursor_right()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        self.dismiss(value or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


def fuzzy_rank(query: str, names: list[str]) -> list[tuple[str, Text]]:
    """Folder names matching ``query`` (fuzzy, like the command palette), best first; the labels
    are the server's names as text (controls made visible), never markup."""
    if not query:
        return [(n, as_text(n, limit=300)) for n in names]
    matcher = Matcher(query)
    scored = [(matcher.match(n), n) for n in names]
    return [(n, _highlight(matcher, n)) for score, n in sorted(scored, key=lambda t: -t[0]) if score > 0]


def _highlight(matcher: Matcher, name: str) -> Text:
    """Like ``Matcher.highlight`` but on plain text: that one parses the name as markup."""
    label = as_text(name, limit=300)
    _, offsets = matcher.fuzzy_search.match(matcher.query, label.plain)
    for offset in offsets:
        label.stylize("bold underline", offset, offset + 1)
    return label


class FolderPicker(ModalScreen[str | None]):
    """Type to narrow the folders (fuzzy), Enter picks, Escape cancels."""

    DEFAULT_CSS = DIALOG_CSS.format(name="FolderPicker") + """
    FolderPicker OptionList { height: auto; max-height: 16; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel"),
                Binding("down", "move(1)", show=False), Binding("up", "move(-1)", show=False)]

    def __init__(self, title: str, folders: list[str]):
        super().__init__()
        self.title_text, self.folders = title, folders

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(as_text(self.title_text, limit=300))
            yield Input(placeholder="type to filter folders", id="filter")
            yield OptionList(*[Option(as_text(n, limit=300), id=n) for n in self.folders], id="choices",
                             markup=False)

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = 0 if self.folders else None

    def on_input_changed(self, event: Input.Changed) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        ranked = fuzzy_rank(event.value, self.folders)
        options.add_options([Option(label, id=name) for name, label in ranked])
        options.highlighted = 0 if ranked else None

    def action_move(self, delta: int) -> None:
        options = self.query_one(OptionList)
        if options.option_count:
            current = options.highlighted or 0
            options.highlighted = max(0, min(options.option_count - 1, current + delta))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is not None:
            self.dismiss(options.get_option_at_index(options.highlighted).id)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
