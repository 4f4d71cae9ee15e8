"""The key bar at the bottom of a screen: the keys that work now and what they do, in one line.

Why not Textual's ``Footer``: it is a container that mounts one ``FooterKey`` widget per key and
recomposes all of them whenever the bindings change (every focus change, every
``refresh_bindings``). With the main screen's ~25 keys that was the largest single cost of
start-up (each FooterKey applies the stylesheet when mounted and again when its ``-compact``
class is set: ~60 ms of CPU before the first screen) and it recurs on every screen change.
This widget is one line of text rendered from ``screen.active_bindings``: the same keys in the
same order, greyed out when disabled, the command palette key on the right, and a click on a
key presses it.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.strip import Strip
from textual.widget import Widget


class KeyBar(Widget, can_focus=False):
    ALLOW_SELECT = False
    COMPONENT_CLASSES = {"key-bar--key", "key-bar--description", "key-bar--separator"}
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        color: $footer-foreground;
        background: $footer-background;
    }
    KeyBar > .key-bar--key {
        color: $footer-key-foreground;
        background: $footer-key-background;
        text-style: bold;
    }
    KeyBar > .key-bar--description {
        color: $footer-description-foreground;
        background: $footer-description-background;
    }
    KeyBar > .key-bar--separator { color: $foreground 20%; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._keys: list[tuple[str, str, str, bool]] = []     # key, display, description, enabled
        self._palette: tuple[str, str, str, bool] | None = None
        self._spans: list[tuple[int, int, str, bool]] = []     # x from, x to, key, enabled

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self._collect()

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen) -> None:
        if self.is_attached and screen is self.screen:
            self._collect()

    def _collect(self) -> None:
        """Read the screen's active bindings (one entry per action, first key wins)."""
        app = self.app
        active = self.screen.active_bindings
        by_action: dict[str, tuple[str, str, str, bool]] = {}
        for _node, binding, enabled, _tooltip in active.values():
            if not binding.show or binding.action in by_action:
                continue
            by_action[binding.action] = (binding.key, app.get_key_display(binding),
                                         binding.description, bool(enabled))
        palette = None
        if app.ENABLE_COMMAND_PALETTE:
            entry = active.get(app.COMMAND_PALETTE_BINDING)
            if entry is not None:
                _node, binding, enabled, _tooltip = entry
                palette = (binding.key, app.get_key_display(binding), binding.description, bool(enabled))
                by_action.pop(binding.action, None)
        keys = list(by_action.values())
        if keys != self._keys or palette != self._palette:
            self._keys, self._palette = keys, palette
            self.refresh()

    def render_line(self, y: int) -> Strip:
        """The one line, as segments (Line API): the filler carries only the background, as
        the empty part of Textual's Footer does."""
        width = self.size.width
        if y != 0 or not width:
            return Strip.blank(width)
        key_style = self.get_component_rich_style("key-bar--key")
        desc_style = self.get_component_rich_style("key-bar--description")
        dim = Style(dim=True)           # a key that cannot run now
        blank = Style(bgcolor=self.rich_style.bgcolor)
        segments: list[Segment] = []
        spans: list[tuple[int, int, str, bool]] = []
        x = 0

        def add(text: str, style: Style) -> None:
            nonlocal x
            segments.append(Segment(text, style))
            x += cell_len(text)

        for key, display, description, enabled in self._keys:
            start = x
            add(f" {display} ", key_style + dim if not enabled else key_style)
            if description:
                add(f"{description} ", desc_style + dim if not enabled else desc_style)
            spans.append((start, x, key, enabled))
        line = Strip(segments, x)
        if self._palette is not None:
            # on the right after a thin rule, tighter, as Textual's Footer draws it
            key, display, description, enabled = self._palette
            right = [Segment(display, key_style + dim if not enabled else key_style),
                     Segment(f" {description}", desc_style + dim if not enabled else desc_style),
                     Segment(" ", blank)]
            right_len = sum(cell_len(seg.text) for seg in right)
            room = width - right_len - 1
            if room > 0:
                spans = [s for s in spans if s[1] <= room]
                line = line.crop(0, room).extend_cell_length(room, blank)
                rule = Segment("▏", self.get_component_rich_style("key-bar--separator"))
                line = Strip([*line, rule, *right], width)
                spans.append((room + 1, width, key, enabled))
        self._spans = spans
        return line.adjust_cell_length(width, blank)

    def on_click(self, event: events.Click) -> None:
        for start, end, key, enabled in self._spans:
            if start <= event.x < end:
                if enabled:
                    self.app.simulate_key(key)
                else:
                    self.app.bell()
                return
