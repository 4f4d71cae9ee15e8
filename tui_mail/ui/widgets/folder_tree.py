"""Accounts → folders, with unread counts; the Outbox shows up as a folder of its own.

Folders arrive as flat ``FolderInfo`` lists (the server's names plus delimiter); this widget
builds the hierarchy, orders special folders first (Inbox, Drafts, Sent, …) and keeps the
highlighted folder across refreshes.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from tui_mail.store.base import FolderInfo
from tui_mail.ui.keys import TREE_KEYS, bindings
from tui_mail.ui.safe_text import as_text

ROLE_ORDER = {"inbox": 0, "drafts": 1, "sent": 2, "outbox": 3, "archive": 4, "junk": 5, "trash": 6}


@dataclass(frozen=True)
class FolderRef:
    account: str
    folder: str | None          # None: the account node itself
    info: FolderInfo | None = None


def folder_label(name: str, info: FolderInfo | None) -> Text:
    """The node label: the server's name as text (never markup, controls visible), unread count."""
    label = as_text(name, limit=200)
    if info is not None and info.unread:
        label.stylize("bold", 0, len(label))
        label.append(f" {info.unread}", style="bold")
    return label


def ordered(folders: list[FolderInfo]) -> list[FolderInfo]:
    return sorted(folders, key=lambda f: (ROLE_ORDER.get(f.role or "", 50), f.name.lower()))


class FolderTree(Tree[FolderRef]):
    DEFAULT_CSS = """
    FolderTree { width: 24; border-right: solid $primary 30%; background: $surface; }
    """
    BINDINGS = bindings(TREE_KEYS)      # j/k/g/G besides the arrows, remappable (folders.*)

    class FolderChosen(Message):
        def __init__(self, account: str, folder: str) -> None:
            super().__init__()
            self.account = account
            self.folder = folder

    def __init__(self, *, id: str | None = None):
        super().__init__("Accounts", id=id)
        self.show_root = False
        self.guide_depth = 2
        self.folders: dict[str, dict[str, FolderInfo]] = {}
        self._account_nodes: dict[str, TreeNode[FolderRef]] = {}
        self._folder_nodes: dict[tuple[str, str], TreeNode[FolderRef]] = {}
        self.current: tuple[str, str] | None = None     # the folder the message list shows

    def add_account(self, account: str) -> None:
        if account not in self._account_nodes:
            node = self.root.add(as_text(account, style="bold", limit=200), FolderRef(account, None),
                                 expand=True)
            self._account_nodes[account] = node

    def set_folders(self, account: str, folders: list[FolderInfo]) -> None:
        """Rebuild one account's subtree, keeping the cursor on the same folder."""
        self.add_account(account)
        keep = self.cursor_node.data if self.cursor_node is not None else None
        acct = self._account_nodes[account]
        acct.remove_children()
        self.folders[account] = {f.name: f for f in folders}
        for key in [k for k in self._folder_nodes if k[0] == account]:
            del self._folder_nodes[key]
        for info in ordered(folders):
            parent = acct
            parts = info.parts
            for depth in range(1, len(parts)):
                prefix = info.delimiter.join(parts[:depth])
                node = self._folder_nodes.get((account, prefix))
                if node is None:
                    node = parent.add(folder_label(parts[depth - 1], None), FolderRef(account, prefix, None),
                                      expand=True)
                    self._folder_nodes[(account, prefix)] = node
                parent = node
            shown = "Inbox" if info.role == "inbox" else parts[-1]
            existing = self._folder_nodes.get((account, info.name))
            if existing is not None:   # a parent placeholder created earlier
                existing.data = FolderRef(account, info.name, info)
                existing.set_label(folder_label(shown, info))
                continue
            node = parent.add(folder_label(shown, info), FolderRef(account, info.name, info),
                              expand=True, allow_expand=False)
            self._folder_nodes[(account, info.name)] = node
        for node in self._folder_nodes.values():
            node.allow_expand = bool(node.children)
        if self.current is not None and (self.current in self._folder_nodes or keep is None):
            self.select_folder(*self.current, announce=False)
        elif keep is not None and keep.folder is not None:
            self.select_folder(keep.account, keep.folder, announce=False)

    def update_counts(self, account: str, folder: str, total: int | None, unread: int | None) -> None:
        info = self.folders.get(account, {}).get(folder)
        node = self._folder_nodes.get((account, folder))
        if info is None or node is None:
            return
        info = FolderInfo(info.name, info.delimiter, info.role, info.attributes, total, unread,
                          info.selectable)
        self.folders[account][folder] = info
        node.data = FolderRef(account, folder, info)
        shown = "Inbox" if info.role == "inbox" else info.parts[-1]
        node.set_label(folder_label(shown, info))

    def info(self, account: str, folder: str) -> FolderInfo | None:
        return self.folders.get(account, {}).get(folder)

    def select_folder(self, account: str, folder: str, announce: bool = True) -> None:
        node = self._folder_nodes.get((account, folder))
        if node is not None:
            self.current = (account, folder)
            _ = self.last_line     # rebuilds the line index after set_folders, so node.line is current
            self.move_cursor(node)
            if announce:
                self.post_message(self.FolderChosen(account, folder))

    def on_tree_node_selected(self, event: Tree.NodeSelected[FolderRef]) -> None:
        event.stop()
        ref = event.node.data
        if ref is not None and ref.folder is not None and (ref.info is None or ref.info.selectable):
            self.post_message(self.FolderChosen(ref.account, ref.folder))
