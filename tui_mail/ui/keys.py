"""Every key of every screen in tables: id, default keys, action, help text.

Bindings, the help screen (?) and the command palette are all derived from these tables, and
the ids are what a user remaps in ``config.toml``. One id space: main-screen ids are bare
(``delete``), the other screens' ids carry the screen's name (``reader.save_attachment``,
``composer.send``, ``folders.down``, ``help.close``, ``relays.flush``); a sub-table says the
same thing shorter::

    [keys]
    delete = "d,delete"
    archive = "a"
    [keys.reader]
    save_attachment = "s"       # the id reader.save_attachment

Choices follow mutt/aerc/Gmail habits: j/k move, r/R reply, d delete, s flag (aerc's
``:flag``), e archive (Gmail), x select, z undo. Folder keys are capitals so they never clash
with message keys: N new folder, E rename folder, D delete folder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class KeySpec:
    id: str
    keys: str
    action: str
    description: str
    group: str
    show: bool = True
    priority: bool = False      # before the focused widget sees the key (composer keys)


MAIN_KEYS: tuple[KeySpec, ...] = (
    KeySpec("open", "enter", "open_message", "Open", "Reading"),
    KeySpec("back", "q", "back", "Back/Quit", "Reading"),
    KeySpec("toggle_preview", "p", "toggle_preview", "Preview", "Reading", show=False),
    KeySpec("sort", "o", "cycle_sort", "Sort", "Reading", show=False),
    KeySpec("threads", "t", "toggle_threads", "Threads", "Reading", show=False),
    KeySpec("search", "slash", "search", "Search", "Searching"),
    KeySpec("compose", "c", "compose", "Compose", "Writing"),
    KeySpec("reply", "r", "reply", "Reply", "Writing"),
    KeySpec("reply_all", "R", "reply_all", "Reply all", "Writing", show=False),
    KeySpec("forward", "f", "forward", "Forward", "Writing", show=False),
    KeySpec("forward_attachment", "F", "forward_attachment", "Forward as attachment", "Writing", show=False),
    KeySpec("send_outbox", "ctrl+o", "send_outbox", "Send Outbox now", "Writing", show=False),
    KeySpec("delete", "d", "delete", "Delete", "Organising"),
    KeySpec("move", "m", "move", "Move", "Organising"),
    KeySpec("copy", "y", "copy", "Copy", "Organising", show=False),
    KeySpec("archive", "e", "archive", "Archive", "Organising", show=False),
    KeySpec("flag", "s", "toggle_flag", "Flag", "Organising", show=False),
    KeySpec("toggle_read", "u", "toggle_read", "Read/unread", "Organising", show=False),
    KeySpec("select", "x", "toggle_select", "Select", "Organising", show=False),
    KeySpec("undo", "z", "undo", "Undo", "Organising"),
    KeySpec("refresh", "ctrl+r", "refresh", "Refresh", "Folders", show=False),
    KeySpec("new_folder", "N", "new_folder", "New folder", "Folders", show=False),
    KeySpec("rename_folder", "E", "rename_folder", "Rename folder", "Folders", show=False),
    KeySpec("delete_folder", "D", "delete_folder", "Delete folder", "Folders", show=False),
)

APP_KEYS: tuple[KeySpec, ...] = (
    KeySpec("help", "question_mark", "help", "Help", "General"),
    KeySpec("trace", "f2", "trace", "Trace", "General"),
    KeySpec("quit", "ctrl+q", "quit", "Quit", "General", show=False),
)

LIST_KEYS: tuple[KeySpec, ...] = (
    KeySpec("down", "j,down", "cursor_down", "Down", "Moving", show=False),
    KeySpec("up", "k,up", "cursor_up", "Up", "Moving", show=False),
    KeySpec("top", "g,home", "cursor_top", "Top", "Moving", show=False),
    KeySpec("bottom", "G,end", "cursor_bottom", "Bottom", "Moving", show=False),
    KeySpec("page_down", "pagedown,space", "page_down", "Page down", "Moving", show=False),
    KeySpec("page_up", "pageup,b", "page_up", "Page up", "Moving", show=False),
)

TREE_KEYS: tuple[KeySpec, ...] = (
    KeySpec("folders.down", "j", "cursor_down", "Next folder", "Folders", show=False),
    KeySpec("folders.up", "k", "cursor_up", "Previous folder", "Folders", show=False),
    KeySpec("folders.top", "g", "scroll_home", "First folder", "Folders", show=False),
    KeySpec("folders.bottom", "G", "scroll_end", "Last folder", "Folders", show=False),
)

PREVIEW_KEYS: tuple[KeySpec, ...] = (
    KeySpec("preview.down", "j", "scroll_down", "Scroll down", "Preview", show=False),
    KeySpec("preview.up", "k", "scroll_up", "Scroll up", "Preview", show=False),
    KeySpec("preview.page", "space", "page_down", "Page down", "Preview", show=False),
)

READER_KEYS: tuple[KeySpec, ...] = (
    KeySpec("reader.close", "q,escape", "close", "Back", "Reader"),
    KeySpec("reader.next", "n,J", "step(1)", "Next", "Reader"),
    KeySpec("reader.previous", "N,K", "step(-1)", "Previous", "Reader"),
    KeySpec("reader.headers", "h", "toggle_headers", "Headers", "Reader"),
    KeySpec("reader.raw", "v", "toggle_raw", "Raw", "Reader"),
    KeySpec("reader.save_attachment", "a", "save_attachment", "Save att.", "Reader"),
    KeySpec("reader.open_attachment", "O", "open_attachment", "Open attachment", "Reader", show=False),
    KeySpec("reader.reply", "r", "reply", "Reply", "Reader"),
    KeySpec("reader.reply_all", "R", "reply_all", "Reply all", "Reader", show=False),
    KeySpec("reader.forward", "f", "forward", "Forward", "Reader", show=False),
    KeySpec("reader.forward_attachment", "F", "forward_attachment", "Forward as attachment", "Reader",
            show=False),
    KeySpec("reader.delete", "d", "delete", "Delete", "Reader"),
    KeySpec("reader.down", "j,down", "scroll(1)", "Scroll down", "Reader", show=False),
    KeySpec("reader.up", "k,up", "scroll(-1)", "Scroll up", "Reader", show=False),
    KeySpec("reader.page", "space", "page", "Page down", "Reader", show=False),
)

COMPOSER_KEYS: tuple[KeySpec, ...] = (
    KeySpec("composer.send", "ctrl+s", "send", "Send", "Composer", priority=True),
    KeySpec("composer.save_draft", "ctrl+d", "save_draft", "Save draft", "Composer", priority=True),
    KeySpec("composer.edit_body", "ctrl+e", "edit_body", "$EDITOR", "Composer", priority=True),
    KeySpec("composer.attach", "ctrl+t", "add_attachment", "Attach", "Composer", priority=True),
    KeySpec("composer.remove_attachment", "ctrl+x", "remove_attachment", "Remove attachment",
            "Composer", priority=True),
    KeySpec("composer.discard", "escape", "discard", "Discard", "Composer", priority=True),
)

HELP_KEYS: tuple[KeySpec, ...] = (
    KeySpec("help.close", "escape,q,question_mark", "dismiss", "Close", "Help"),
)

RELAY_KEYS: tuple[KeySpec, ...] = (
    KeySpec("relays.close", "escape,q,f3", "app.pop_screen", "Back", "Relays (demo)"),
    KeySpec("relays.toggle_hamburger", "h", "toggle_hamburger", "hamburger.edu down/up", "Relays (demo)"),
    KeySpec("relays.flush", "f", "flush", "Flush queues", "Relays (demo)"),
    KeySpec("relays.log_up", "k,up", "log_scroll(-1)", "Log up", "Relays (demo)", show=False),
    KeySpec("relays.log_down", "j,down", "log_scroll(1)", "Log down", "Relays (demo)", show=False),
    KeySpec("relays.log_end", "G,end", "log_end", "Follow the log", "Relays (demo)", show=False),
)

DEMO_KEYS: tuple[KeySpec, ...] = (
    KeySpec("relays", "f3", "relays", "Relays", "General"),
)

ALL_KEYS = (MAIN_KEYS + APP_KEYS + LIST_KEYS + TREE_KEYS + PREVIEW_KEYS + READER_KEYS + COMPOSER_KEYS + HELP_KEYS
            + RELAY_KEYS + DEMO_KEYS)


def bindings(specs: Iterable[KeySpec]) -> list[Binding]:
    return [Binding(s.keys, s.action, s.description, show=s.show, id=s.id, priority=s.priority)
            for s in specs]


def flatten_keymap(table: Mapping[str, object]) -> dict[str, str]:
    """``{"reader": {"reply": "r"}, "delete": "x"}`` → ``{"reader.reply": "r", "delete": "x"}``."""
    out: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            for sub, keys in flatten_keymap(value).items():
                out[f"{key}.{sub}"] = keys
        else:
            out[key] = value  # type: ignore[assignment]
    return out


def validate_keymap(keymap: Mapping[str, str]) -> dict[str, str]:
    """Keep only known ids; raise ValueError naming an unknown id (a typo in config.toml)."""
    keymap = flatten_keymap(keymap)
    known = {s.id for s in ALL_KEYS}
    unknown = sorted(set(keymap) - known)
    if unknown:
        raise ValueError(f"unknown key id(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return {k: str(v) for k, v in keymap.items()}


def key_label(keys: str) -> str:
    names = {"slash": "/", "question_mark": "?", "space": "Space", "escape": "Esc", "enter": "Enter",
             "pagedown": "PgDn", "pageup": "PgUp", "home": "Home", "end": "End", "up": "↑", "down": "↓"}

    def one(k: str) -> str:
        k = k.strip()
        if k in names:
            return names[k]
        if k.startswith("ctrl+"):
            return "Ctrl+" + one(k[5:])
        return k.upper() if len(k) == 2 and k[0] == "f" and k[1].isdigit() else k

    return ", ".join(one(k) for k in keys.split(","))


def help_rows(keymap: Mapping[str, str] | None = None, demo: bool = False) -> list[tuple[str, str, str, str]]:
    """(group, keys as shown, description, id) for the help screen, honouring remapping; the
    relay panel's keys only in the demo."""
    keymap = flatten_keymap(keymap or {})
    specs = [s for s in ALL_KEYS if demo or s not in RELAY_KEYS + DEMO_KEYS]
    return [(s.group, key_label(keymap.get(s.id, s.keys)), s.description, s.id) for s in specs]
