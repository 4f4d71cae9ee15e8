"""Every key of the main screen in one table: id, default keys, action, help text.

Bindings, the help screen (?) and the command palette are all derived from this table, and the
ids are what a user remaps in ``config.toml``::

    [keys]
    delete = "d,delete"
    archive = "a"

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

ALL_KEYS = MAIN_KEYS + APP_KEYS + LIST_KEYS


def bindings(specs: Iterable[KeySpec]) -> list[Binding]:
    return [Binding(s.keys, s.action, s.description, show=s.show, id=s.id) for s in specs]


def validate_keymap(keymap: Mapping[str, str]) -> dict[str, str]:
    """Keep only known ids; raise ValueError naming an unknown id (a typo in config.toml)."""
    known = {s.id for s in ALL_KEYS}
    unknown = sorted(set(keymap) - known)
    if unknown:
        raise ValueError(f"unknown key id(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return {k: str(v) for k, v in keymap.items()}


def key_label(keys: str) -> str:
    names = {"slash": "/", "question_mark": "?", "space": "Space"}
    return ", ".join(names.get(k, k.replace("ctrl+", "Ctrl+")) for k in keys.split(","))


def help_rows(keymap: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(group, keys as shown, description) for the help screen, honouring remapping."""
    keymap = keymap or {}
    return [(s.group, key_label(keymap.get(s.id, s.keys)), s.description) for s in ALL_KEYS]
