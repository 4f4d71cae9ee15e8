"""The main screen: folders | message list | preview, with a status bar and a footer.

All store calls run in thread workers (``@work(thread=True, …, exit_on_error=False)``) that
post past-tense messages (tui_mail.ui.messages); the ``on_*`` handlers here are the only code
that changes widgets. A failed worker is turned into an error notification by the app's one
``Worker.StateChanged`` handler, after calling ``worker_failed`` here to undo optimistic
changes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Input
from textual.worker import Worker, get_current_worker

from tui_mail.errors import MailError
from tui_mail.store.base import (FLAGGED, SEEN, Cancel, Cancelled, Change, FolderInfo, MailStore,
                                 MessageSummary, Progress)
from tui_mail.ui.keys import MAIN_KEYS, bindings
from tui_mail.ui.messages import (CacheProgressed, ConnectionChanged, FlagsChanged, FolderChanged,
                                  FolderLoaded, FoldersListed, MailChanged, MessageFetched,
                                  MessagesRemoved, OutboxFlushed, SearchFinished, SummariesFetched,
                                  ThreadsReady, UndoFinished)
from tui_mail.ui.rows import next_sort
from tui_mail.ui.screens.dialogs import ConfirmScreen, FolderPicker, PromptScreen
from tui_mail.ui.failures import ReportsWorkerFailures
from tui_mail.store.virtual import VirtualStore
from tui_mail.ui.services import OUTBOX, Account
from tui_mail.ui.virtual_views import all_folders_view, split_scope, unified_inbox
from tui_mail.ui.undo import CannotUndo, FlagChange, Relocation, UndoFlags, UndoJournal
from tui_mail.ui.widgets.folder_tree import FolderTree
from tui_mail.ui.widgets.key_bar import KeyBar
from tui_mail.ui.widgets.message_list import MessageList
from tui_mail.ui.widgets.preview import Preview
from tui_mail.ui.widgets.status_bar import StatusBar

FIRST_WINDOW = 120
SERVER_THREADS_FROM = 5000    # messages: from here the server threads the folder when it can
WARM_PAINT_WAIT = 1.0         # seconds the first login waits for the cached rows' first frame
OUTBOX_RETRY_SECONDS = 30.0   # how often mail waiting in an Outbox is tried again
COUNTS_REFRESH_SECONDS = 15.0  # how often folder counts are asked for (STATUS) while the app runs
MESSAGE_ACTIONS = {"open_message", "reply", "reply_all", "forward", "forward_attachment", "delete", "move", "copy",
                   "archive", "toggle_flag", "toggle_read", "toggle_select"}
FOLDER_ACTIONS = {"rename_folder", "delete_folder"}


class MainScreen(ReportsWorkerFailures, Screen[None]):
    BINDINGS = bindings(MAIN_KEYS)
    AUTO_FOCUS = "MessageList"      # focused once, before the first frame (no second restyle)

    def __init__(self, accounts: list[Account]):
        super().__init__()
        self.accounts = {a.name: a for a in accounts}
        if len(accounts) >= 2:                   # the unified inbox: every account's INBOX
            unified = unified_inbox(accounts)
            self.accounts[unified.name] = unified
        self._scope_base: tuple[Account, str] | None = None   # where an in:all search returns to
        self.account: Account | None = accounts[0] if accounts else None
        self.folder: str | None = None
        self.sort = "date"
        self.threaded = False
        self.search_query: str | None = None
        self.folder_rows: tuple[int, ...] = ()
        self.journal = UndoJournal()
        self._expected: dict[tuple[str, str], tuple[int, float, frozenset[int]]] = {}   # expect_arrivals
        self._preview_timer: Timer | None = None
        self._loaded: tuple[str, str, int] | None = None
        self._fresh: set[tuple[str, str]] = set()     # folders loaded from the server
        self._warm: set[tuple[str, str, str]] = set()  # (account, folder, sort) painted from the cache
        self._read_timer: Timer | None = None
        self._warm_painted = threading.Event()         # the cached rows' first frame is out
        self._first_warm = False                       # on_mount posted the inbox from the cache
        self._watching: tuple[str, str] | None = None  # (account, folder) the watcher reports on
        self._tree_placed: set[str] = set()            # accounts whose tree cursor was put on the folder

    # --- layout -------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        # the layout class before the children get their styles: set on the first Resize
        # instead, it restyled every widget once more before the first frame (~15 ms)
        self.set_class(self.app.size.width < 140, "-narrow", update=False)
        with Horizontal(id="panes"):
            yield FolderTree(id="folders")
            with Vertical(id="center"):
                yield Input(placeholder="search: from:alice subject:ketchup is:unread since:2026-01-01",
                            id="search")
                yield MessageList(id="messages", clock=self.app.clock, ascii_only=self.app.settings.ascii)
            yield Preview(id="preview")
        yield StatusBar(id="status")
        yield KeyBar()

    @property
    def message_list(self) -> MessageList:
        return self.query_one(MessageList)

    @property
    def tree(self) -> FolderTree:
        return self.query_one(FolderTree)

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    @property
    def preview(self) -> Preview:
        return self.query_one(Preview)

    def on_mount(self) -> None:
        self.query_one("#search").display = False
        self.query_one("#search", Input).cursor_blink = self.app.settings.cursor_blink
        self.preview.display = self.app.settings.preview
        # the first account's inbox from the header cache, read here (~5 ms for 100,000
        # messages: the order blob and one window of summaries) so that the first frame the
        # terminal gets already has its rows; the server is asked after that frame
        self._first_warm = self.account is not None and self._read_warm(self.account)
        for account in self.accounts.values():
            self.tree.add_account(account.name)
            self.connect_account(account)
        self.message_list.focus()
        self.set_interval(60, self.message_list.tick_clock)
        self.set_interval(OUTBOX_RETRY_SECONDS, self.retry_outboxes)
        self.set_interval(COUNTS_REFRESH_SECONDS, self.refresh_counts)

    def on_resize(self) -> None:
        self.set_class(self.size.width < 140, "-narrow")

    def _warm_painted_out(self) -> None:
        from tui_mail.ui import startup

        startup.release()               # the garbage collector, held since start
        self._warm_painted.set()        # connect_account goes on

    def on_unmount(self) -> None:
        self._warm_painted.set()      # a connect_account still waiting goes on (and finds the app gone)

    # --- store resolution -----------------------------------------------------------------
    def store_for(self, account: Account, folder: str) -> tuple[MailStore, str]:
        """The Outbox folder lives in the account's outbox store, everything else in its store."""
        if folder == OUTBOX and account.outbox is not None:
            return account.outbox, OUTBOX
        return account.store, folder

    # --- connecting and folders -------------------------------------------------------------
    @work(thread=True, group="connect", exit_on_error=False)
    def connect_account(self, account: Account) -> None:
        self.post_message(ConnectionChanged(account.name, "connecting"))
        if account is self.account and (self._first_warm or self._post_warm(account, "INBOX", self.sort, None)):
            # Warm start: the inbox painted from the local cache before the server is asked.
            # The login, SELECT and their parsing would share the interpreter with that first
            # frame, so they start once it is on screen (or after WARM_PAINT_WAIT at worst).
            self._warm_painted.wait(WARM_PAINT_WAIT)
        try:
            account.store.connect()
            if account.outbox is not None:
                account.outbox.connect()
        except MailError as e:
            self.post_message(ConnectionChanged(account.name, "offline", str(e)))
            raise
        self.post_message(ConnectionChanged(account.name, "online"))
        if account is self.account and self.folder in (None, "INBOX") and (account.name, "INBOX") not in self._fresh:
            self._load_first(account)
        self._list_folders(account)

    def _load_first(self, account: Account) -> None:
        """The inbox from the server right after the login, before the folder list: LIST with
        STATUS of every folder took 100-300 ms on the 100k bench before the inbox was even
        asked for (a cold start's first screen waited for it; a warm one's check too)."""
        store, real = self.store_for(account, "INBOX")
        try:
            state = store.folder_state(real, self.sort)
            cached = store.cached_summaries(real, state.uids[-FIRST_WINDOW:])
        except MailError:
            return                  # no INBOX here: the folder list opens the first folder
        self.post_message(FolderLoaded(account.name, "INBOX", state, cached, first=True))

    def _list_folders(self, account: Account) -> None:
        folders = account.store.list_folders(with_counts=True)
        if account.outbox is not None:
            for info in account.outbox.list_folders(with_counts=True):
                if info.name == OUTBOX:
                    folders.append(FolderInfo(OUTBOX, "/", "outbox", info.attributes, info.total, info.total))
        self.post_message(FoldersListed(account.name, folders))

    @work(thread=True, exclusive=True, group="sync", exit_on_error=False)
    def sync_account(self, account: Account) -> None:
        result = account.store.sync()
        if result.downloaded:
            self.post_message(MailChanged(account.name, Change(
                account.store.root_name, "exists", tuple(result.new_uids))))

    # --- the Outbox: mail that could not be sent yet is retried in the background ----------
    @work(thread=True, group="outbox", exclusive=True, exit_on_error=False)
    def retry_outboxes(self, now: bool = False) -> None:
        """Send what is due in every account's Outbox (``now``: everything, ignoring backoff)."""
        for account in list(self.accounts.values()):
            flush = getattr(account.submit, "flush", None)
            if flush is None:
                continue
            outcomes = flush(now)
            if outcomes:
                self.post_message(OutboxFlushed(account.name,
                                                tuple((o.state, o.detail) for o in outcomes)))

    def action_send_outbox(self) -> None:
        self.notify("Sending what waits in the Outbox…")
        self.retry_outboxes(now=True)

    def on_outbox_flushed(self, event: OutboxFlushed) -> None:
        sent = [d for state, d in event.outcomes if state in ("filed", "sent")]
        failed = [d for state, d in event.outcomes if state == "failed"]
        if sent:
            self.notify(f"{event.account}: {len(sent)} message(s) sent from the Outbox")
        if failed:
            self.notify(f"{event.account}: not sent — {failed[0]}", title="Outbox", severity="error", timeout=10)
        account = self.accounts.get(event.account)
        if account is not None and (sent or failed):
            self.list_folders(account)
            if self.account is account and self.folder == OUTBOX:
                self.open_folder(account, OUTBOX)

    @work(thread=True, group="folders", exit_on_error=False)
    def list_folders(self, account: Account) -> None:
        self._list_folders(account)

    def refresh_counts(self) -> None:
        """Every few seconds: counts of every folder (IMAP LIST+STATUS, a Maildir's index), so a
        folder that fills while the app runs — with no IDLE news for it — never shows stale
        numbers; the open folder reloads when its count moved."""
        if self.workers and any(w.group == "folders" and w.is_running for w in self.workers):
            return
        for account in self.accounts.values():
            if getattr(account.store, "role", None) != "search":
                self.list_folders(account)

    def on_connection_changed(self, event: ConnectionChanged) -> None:
        if self.account and event.account == self.account.name:
            self.status.connection = event.state
        if event.state == "offline" and event.detail:
            self.status.note = event.detail

    def on_folders_listed(self, event: FoldersListed) -> None:
        view = self.accounts.get(event.account)
        if view is not None and getattr(view.store, "role", None) == "search":
            return                           # in:all results: not a folder tree entry
        self.tree.set_folders(event.account, event.folders)
        current = self.account is not None and event.account == self.account.name
        if current and self.folder is not None and event.account not in self._tree_placed:
            self.tree.select_folder(event.account, self.folder, announce=False)   # once: then it is the user's
        if current:
            self._tree_placed.add(event.account)
        if current and (self.folder is None or (event.account, self.folder) not in self._fresh):
            inbox = next((f.name for f in event.folders if f.role == "inbox"), None)
            inbox = inbox or (event.folders[0].name if event.folders else None)
            if self.folder is not None and self.folder in {f.name for f in event.folders}:
                inbox = self.folder                     # painted warm: now load it for real
            if inbox:
                self.tree.select_folder(event.account, inbox, announce=False)
                self.open_folder(self.account, inbox, keep=self.message_list.current_uid)
        elif self.folder and self.account and event.account == self.account.name:
            info = self.tree.info(event.account, self.folder)
            if (info is not None and info.total is not None and info.total != len(self.folder_rows)
                    and self.search_query is None and (event.account, self.folder) in self._fresh):
                # the server counts differently from the list: mail came or went unannounced
                self.load_folder(self.account, self.folder, self.sort, self.message_list.current_uid)
            self._show_counts()

    @on(FolderTree.FolderChosen)
    def folder_chosen(self, event: FolderTree.FolderChosen) -> None:
        account = self.accounts[event.account]
        if account is self.account and event.folder == self.folder and self.search_query is None:
            self.message_list.focus()
            return
        self.open_folder(account, event.folder)
        self.message_list.focus()

    def open_folder(self, account: Account, folder: str, keep: int | None = None) -> None:
        self._scope_base = None                 # leaving in:all results for a real folder
        if self.account is not account or self.folder != folder:
            keep = None
            self.message_list.selection.clear()
        self.account, self.folder = account, folder
        self.search_query = None
        self.tree.select_folder(account.name, folder, announce=False)   # the tree follows the list
        # the status bar names the folder the list shows: it changes when the rows do
        self.status.note = f"opening {folder}…"
        self.status.connection = self.status.connection
        # keys typed after choosing a folder (Enter j j Enter) act on its rows, not the old ones
        self.app.release_keys(getattr(self, "_folder_hold", None))
        self._folder_hold = self.app.hold_keys("folder")
        self.load_folder(account, folder, self.sort, keep)

    def _read_warm(self, account: Account) -> bool:
        try:
            return self._post_warm(account, "INBOX", self.sort, None)
        except MailError:          # an unreadable cache: the worker's server answer paints
            return False

    def _post_warm(self, account: Account, folder: str, sort: str, keep: int | None) -> bool:
        """Post the folder's rows from the local cache; whether there were any."""
        shown = self._loaded is not None and self._loaded[:2] == (account.name, folder)
        if shown and (account.name, folder, sort) in self._warm:
            return False  # on screen from the cache already (warm start): the server's answer is next
        self._warm.add((account.name, folder, sort))
        store, real = self.store_for(account, folder)
        warm = store.cached_folder_state(real, sort)
        if warm is None or not warm.uids:
            return False
        cached = store.cached_summaries(real, warm.uids[-FIRST_WINDOW:])
        self.post_message(FolderLoaded(account.name, folder, warm, cached, keep, warm=True))
        return True

    @work(thread=True, exclusive=True, group="folder", exit_on_error=False)
    def load_folder(self, account: Account, folder: str, sort: str, keep: int | None) -> None:
        store, real = self.store_for(account, folder)
        if (account.name, folder) not in self._fresh:
            self._post_warm(account, folder, sort, keep)
        state = store.folder_state(real, sort)
        window = state.uids[-FIRST_WINDOW:]
        cached = store.cached_summaries(real, window)
        if not get_current_worker().is_cancelled:
            self.post_message(FolderLoaded(account.name, folder, state, cached, keep))

    def on_folder_loaded(self, event: FolderLoaded) -> None:
        if (event.warm or event.first) and self.folder is None and self.account and self.account.name == event.account:
            self.folder = event.folder                  # the start-up inbox, before the folder list
            self.status.account, self.status.folder = event.account, event.folder
        if not self._is_current(event.account, event.folder):
            return
        self.app.release_keys(getattr(self, "_folder_hold", None))
        if not event.warm:
            self._fresh.add((event.account, event.folder))
        rows = event.state.uids[::-1]              # newest first
        self.folder_rows = rows
        ml = self.message_list
        reload = self._loaded == (event.account, event.folder, event.state.uidvalidity)
        self._loaded = (event.account, event.folder, event.state.uidvalidity)
        if reload:       # same folder again (new mail, undo, refresh): keep what we know
            summaries = {**ml.summaries, **event.summaries}
            keep = event.keep if event.keep is not None else ml.current_uid
        else:
            summaries, keep = event.summaries, event.keep
        ml.set_rows(rows, summaries, keep=keep)
        if event.warm and not self._warm_painted.is_set():
            self.call_after_refresh(self._warm_painted_out)
        self.status.account, self.status.folder = event.account, event.folder
        if self.status.note.startswith("opening "):
            self.status.note = ""
        if reload:       # refresh the visible rows' flags, which another client may have changed
            stale = tuple(u for u in ml.visible_uids() if u not in event.summaries)
            if stale:
                self.fetch_window(self.accounts[event.account], event.folder, stale)
        if self.threaded:
            self.thread_rows()
        self._show_counts()
        self.refresh_bindings()
        if event.warm:
            return
        account = self.accounts[event.account]
        watching = (account.name, event.folder)
        if self._watching != watching:     # a reload of the watched folder keeps its watcher
            self._watching = watching       # (a new one meant a new login per new message)
            self.watch_folder(account, event.folder)
        if all(u in ml.summaries for u in ml.visible_uids()):
            self.fill_cache(account, event.folder)
        else:   # cold: the visible window first; the background fill shares the connection
            self._fill_after_window = (event.account, event.folder)
        if not rows:
            self.preview.show_text("This folder is empty")

    @work(thread=True, exclusive=True, group="fill", exit_on_error=False)
    def fill_cache(self, account: Account, folder: str) -> None:
        worker = get_current_worker()
        store, real = self.store_for(account, folder)
        cancel = Cancel()

        def progress(p: Progress) -> None:
            if worker.is_cancelled:
                cancel.set()
            self.post_message(CacheProgressed(account.name, folder, p.done, p.total))

        try:
            store.fill_cache(real, progress=progress, cancel=cancel)
        except Cancelled:
            return
        self.post_message(CacheProgressed(account.name, folder, 1, 1))
        incomplete = getattr(store, "order_incomplete", None)
        if incomplete is not None and incomplete(real):
            # the server cannot SORT and the order came from a partial cache: sort again now
            self.app.call_from_thread(self._resort, account, folder)

    def _resort(self, account: Account, folder: str) -> None:
        if self._is_current(account.name, folder) and self.search_query is None and self.sort != "arrival":
            self.load_folder(account, folder, self.sort, self.message_list.current_uid)

    def on_cache_progressed(self, event: CacheProgressed) -> None:
        if self._is_current(event.account, event.folder):
            done = event.done >= event.total
            self.status.progress = "" if done else f"caching {event.done:,}/{event.total:,}"

    @work(thread=True, exclusive=True, group="watch", exit_on_error=False)
    def watch_folder(self, account: Account, folder: str) -> None:
        store, real = self.store_for(account, folder)

        def changed(change: Change) -> None:
            self.post_message(MailChanged(account.name, change))

        store.watch(real, changed)

    def on_mail_changed(self, event: MailChanged) -> None:
        account = self.accounts.get(event.account)
        if account is None:
            return
        change = event.change
        if change.kind == "exists" and change.uids:
            n = self._unexpected(event.account, change.folder, tuple(change.uids))
            if n:
                self.app.notify(f"{n} new message{'s' if n != 1 else ''} in {change.folder}",
                                title=account.name)
                self.app.announce_new_mail(account, change.folder, tuple(change.uids)[-n:])
        if self._is_current(event.account, change.folder) and self.search_query is None:
            self.load_folder(account, change.folder, self.sort, self.message_list.current_uid)
        self.list_folders(account)

    def expect_arrivals(self, account: str, folder: str, n: int, within: float = 30.0) -> None:
        """``n`` messages will appear in ``folder`` because of us (undo, a saved draft): they
        are not "new mail" when the watcher reports them. ``arrived`` later names them."""
        import time

        now = time.monotonic()
        left, until, known = self._expected.get((account, folder), (0, 0.0, frozenset()))
        self._expected[(account, folder)] = ((left if until > now else 0) + n, now + within, known)

    def arrived(self, account: str, folder: str, uids: Iterable[int]) -> None:
        """The UIDs our own action gave the expected messages: from now on only these are
        skipped, so a reservation never swallows real mail that arrives later."""
        uids = frozenset(uids)
        left, until, known = self._expected.get((account, folder), (0, 0.0, frozenset()))
        if left >= len(uids):           # not reported yet: trade the count for the UIDs
            self._expected[(account, folder)] = (left - len(uids), until, known | uids)

    def _unexpected(self, account: str, folder: str, uids: tuple[int, ...]) -> int:
        """How many of ``uids`` (reported as new in ``folder``) are really new mail."""
        import time

        key = (account, folder)
        left, until, known = self._expected.get(key, (0, 0.0, frozenset()))
        if until <= time.monotonic():
            self._expected.pop(key, None)
            return len(uids)
        rest = [u for u in uids if u not in known]
        taken = min(left, len(rest))
        self._expected[key] = (left - taken, until, known)
        return len(rest) - taken

    def _is_current(self, account: str, folder: str) -> bool:
        return self.account is not None and self.account.name == account and self.folder == folder

    def _show_counts(self) -> None:
        ml = self.message_list
        self.status.total = len(ml.rows)
        info = self.tree.info(self.account.name, self.folder) if self.account and self.folder else None
        if info is not None and info.unread is not None and self.search_query is None:
            self.status.unread = info.unread
        elif len(ml.rows) <= 20_000:
            self.status.unread = sum(1 for u in ml.rows if (s := ml.summaries.get(u)) and s.unread)
        self.status.selected = len(ml.selection)

    # --- summaries for the visible window ---------------------------------------------------
    @on(MessageList.WindowNeeded)
    def window_needed(self, event: MessageList.WindowNeeded) -> None:
        if self.account and self.folder:
            self.fetch_window(self.account, self.folder, event.uids)

    @work(thread=True, group="window", exit_on_error=False)
    def fetch_window(self, account: Account, folder: str, uids: tuple[int, ...]) -> None:
        store, real = self.store_for(account, folder)
        try:
            cached = store.cached_summaries(real, uids)
            if cached:
                self.post_message(SummariesFetched(account.name, folder, cached))
            missing = [u for u in uids if u not in cached]
            if missing:
                self.post_message(SummariesFetched(account.name, folder, store.summaries(real, missing)))
        except Exception:
            self.app.call_from_thread(self.message_list.request_failed, uids)
            raise

    def on_summaries_fetched(self, event: SummariesFetched) -> None:
        if self._is_current(event.account, event.folder):
            self.message_list.add_summaries(event.summaries)
            self._show_counts()
            if getattr(self, "_fill_after_window", None) == (event.account, event.folder):
                self._fill_after_window = None
                self.fill_cache(self.accounts[event.account], event.folder)
            pending = getattr(self, "_read_pending", None)
            if pending is not None and pending[0] in event.summaries:
                self.apply_read_policy(*pending)

    # --- preview ------------------------------------------------------------------------
    @on(MessageList.Highlighted)
    def highlighted(self, event: MessageList.Highlighted) -> None:
        has_message = event.uid is not None
        if has_message != getattr(self, "_had_message", None):
            self._had_message = has_message       # the footer only changes when this does
            self.refresh_bindings()
        if self._preview_timer is not None:
            self._preview_timer.stop()
        if self._read_timer is not None and event.uid != getattr(self, "_read_uid", None):
            self._read_timer.stop()           # the cursor moved on: this one stays unread
            self._read_timer = None
        if event.uid is None or not self.preview.display:
            return
        if event.uid == self.preview.uid:     # back on the message the preview shows
            self.apply_read_policy(event.uid, "preview")
            return
        self._preview_timer = self.set_timer(0.06, lambda: self._load_preview(event.uid))

    def _load_preview(self, uid: int) -> None:
        if self.account and self.folder and uid == self.message_list.current_uid:
            self.fetch_message(self.account, self.folder, uid, "preview")

    @on(MessageList.Opened)
    def opened(self, event: MessageList.Opened) -> None:
        self.action_open_message()

    @work(thread=True, exclusive=True, group="message", exit_on_error=False)
    def fetch_message(self, account: Account, folder: str, uid: int, purpose: str) -> None:
        store, real = self.store_for(account, folder)
        raw = store.fetch_message(real, uid)
        from tui_mail.mail.parse import parse_message

        view = parse_message(raw)
        if not get_current_worker().is_cancelled:
            self.post_message(MessageFetched(account.name, folder, uid, view, purpose))

    def on_message_fetched(self, event: MessageFetched) -> None:
        if event.purpose != "preview":
            try:
                self.open_composer(self.accounts[event.account], event.folder, event.uid,
                                   event.purpose, event.view)
            finally:
                self.app.release_keys(getattr(self, "_compose_hold", None))
            return
        if not self._is_current(event.account, event.folder):
            return
        if event.purpose == "preview":
            if event.uid == self.message_list.current_uid:
                self.preview.show(event.uid, event.view)
                self.apply_read_policy(event.uid, "preview")
            return

    def apply_read_policy(self, uid: int, source: str = "reader") -> None:
        """Mark ``uid`` read as the settings say: the reader (``source="reader"``) on open; the
        preview only once the cursor has rested on the message ``mark_read_delay`` seconds (0:
        never), so passing over mail with j/k never marks it."""
        summary = self.message_list.summaries.get(uid)
        self._read_pending = (uid, source) if summary is None else None
        settings = self.app.settings
        if summary is None or not summary.unread or settings.mark_read == "never":
            return
        if source == "reader":
            self.mark_seen(uid)
            return
        delay = settings.mark_read_delay
        if delay <= 0 or (self._read_timer is not None and getattr(self, "_read_uid", None) == uid):
            return                            # never from the preview, or already counting
        if self._read_timer is not None:
            self._read_timer.stop()
        self._read_uid = uid
        self._read_timer = self.set_timer(delay, lambda: self._rested(uid))

    def _rested(self, uid: int) -> None:
        self._read_timer = None
        if uid == self.message_list.current_uid and self.preview.uid == uid and self.preview.display:
            self.mark_seen(uid)

    def mark_seen(self, uid: int) -> None:
        if self.account and self.folder:
            self._apply_flag((uid,), SEEN, True, record=False)

    # --- flags (optimistic, confirmed by FlagsChanged) ----------------------------------------
    def _local_flags(self, uids: tuple[int, ...], flag: str, add: bool) -> None:
        """Show a flag change at once; the store call follows in a worker."""
        ml = self.message_list
        changed = {}
        for uid in uids:
            s = ml.summaries.get(uid)
            if s is not None and (flag in s.flags) != add:
                changed[uid] = _with_flags(s, s.flags | {flag} if add else s.flags - {flag})
        ml.summaries.update(changed)
        ml.refresh_uids(uids)
        self._adjust_unread(flag, add, len(changed))

    def _apply_flag(self, uids: tuple[int, ...], flag: str, add: bool, record: bool = True,
                    label: str = "flag") -> None:
        self._local_flags(uids, flag, add)
        undo = FlagChange(self.folder, uids, flag, add, label) if record else None
        self.store_flags(self.account, self.folder, uids, flag, add, undo)

    def _adjust_unread(self, flag: str, add: bool, n: int) -> None:
        if flag != SEEN or not n or not self.account or not self.folder:
            return
        info = self.tree.info(self.account.name, self.folder)
        if info is not None and info.unread is not None:
            unread = max(0, info.unread - n if add else info.unread + n)
            self.tree.update_counts(self.account.name, self.folder, info.total, unread)
        self._show_counts()

    @work(thread=True, group="changes", exit_on_error=False)
    def store_flags(self, account: Account, folder: str, uids: tuple[int, ...], flag: str,
                    add: bool, undo: FlagChange | None) -> None:
        store, real = self.store_for(account, folder)
        store.set_flags(real, uids, [flag], add=add)
        self.post_message(FlagsChanged(account.name, folder, uids, flag, add, undo))

    def on_flags_changed(self, event: FlagsChanged) -> None:
        if event.undo is None and self._is_current(event.account, event.folder):
            self._local_flags(event.uids, event.flag, event.added)   # e.g. \Answered after a reply
        if event.undo is not None:
            self.journal.record(event.undo)
            self.refresh_bindings()

    def action_toggle_flag(self) -> None:
        uids = self.message_list.targets()
        current = self.message_list.current_summary
        add = not (current.flagged if current else False)
        self._apply_flag(uids, FLAGGED, add, label="flag" if add else "unflag")

    def action_toggle_read(self) -> None:
        uids = self.message_list.targets()
        current = self.message_list.current_summary
        add = current.unread if current else True
        self._apply_flag(uids, SEEN, add, label="mark read" if add else "mark unread")

    def action_toggle_select(self) -> None:
        self.message_list.toggle_selected()
        self.status.selected = len(self.message_list.selection)

    # --- moving things ------------------------------------------------------------------
    def folder_names(self) -> list[str]:
        if not self.account:
            return []
        if isinstance(self.account.store, VirtualStore):
            return self.account.store.folder_names()
        infos = self.tree.folders.get(self.account.name, {})
        return [n for n, f in infos.items() if f.selectable and f.role != "outbox" and n != self.folder]

    def role_folder(self, role: str) -> str | None:
        if not self.account:
            return None
        if role in self.account.roles:
            return self.account.roles[role]
        infos = self.tree.folders.get(self.account.name, {})
        return next((n for n, f in infos.items() if f.role == role), None)

    def action_delete(self) -> None:
        uids = self.message_list.targets()
        if not uids:
            return
        if self.folder == self.role_folder("trash") or self.folder == OUTBOX:
            def answer(yes: bool | None) -> None:
                if yes:
                    self.relocate(self.account, self.folder, uids, None, "expunge")
            n = len(uids)
            self.app.push_screen(ConfirmScreen(
                f"Delete {n} message{'s' if n != 1 else ''} for good? This cannot be undone.",
                yes="Delete"), answer)
            return
        self.relocate(self.account, self.folder, uids, self.role_folder("trash"), "delete")

    def action_archive(self) -> None:
        dest = self.role_folder("archive")
        if dest is None:
            self.app.notify("This account has no Archive folder; create one (N) named Archive",
                            severity="warning")
            return
        self.relocate(self.account, self.folder, self.message_list.targets(), dest, "archive")

    def action_move(self) -> None:
        self._pick_then("move")

    def action_copy(self) -> None:
        self._pick_then("copy")

    def _pick_then(self, kind: str) -> None:
        uids = self.message_list.targets()
        n = len(uids)

        def chosen(dest: str | None) -> None:
            if dest:
                self.relocate(self.account, self.folder, uids, dest, kind)

        self.app.push_screen(FolderPicker(f"{kind.capitalize()} {n} message{'s' if n != 1 else ''} to…",
                                          self.folder_names()), chosen)

    @work(thread=True, group="changes", exit_on_error=False)
    def relocate(self, account: Account, folder: str, uids: tuple[int, ...], dest: str | None,
                 kind: str) -> None:
        store, real = self.store_for(account, folder)
        if kind == "expunge":
            store.expunge(real, uids)
            self.post_message(MessagesRemoved(account.name, folder, uids, f"Deleted {len(uids)} for good"))
            return
        if kind == "copy":
            store.copy(real, uids, dest)
            self.post_message(MessagesRemoved(account.name, folder, (), f"Copied {len(uids)} to {dest}"))
            return
        uid_map = store.delete(real, uids) if kind == "delete" else store.move(real, uids, dest)
        dest = dest or store.folder_for_role("trash") or "Trash"
        undo = Relocation(folder, dest, uid_map, uids, kind)
        verb = {"delete": "Deleted", "archive": "Archived", "move": "Moved"}[kind]
        self.post_message(MessagesRemoved(account.name, folder, uids,
                                          f"{verb} {len(uids)} message{'s' if len(uids) != 1 else ''}"
                                          + (f" to {dest}" if kind == "move" else "") + " (z to undo)", undo))

    def on_messages_removed(self, event: MessagesRemoved) -> None:
        if event.undo is not None:
            self.journal.record(event.undo)
        if self._is_current(event.account, event.folder) and event.uids:
            self.message_list.remove(event.uids)
            self.folder_rows = tuple(u for u in self.folder_rows if u not in set(event.uids))
            self.preview.uid = None
            self.message_list.post_message(MessageList.Highlighted(self.message_list.current_uid))
        self.app.notify(event.note, timeout=3)
        self.list_folders(self.accounts[event.account])
        self._show_counts()
        self.refresh_bindings()

    # --- undo ---------------------------------------------------------------------------
    def action_undo(self) -> None:
        try:
            entry = self.journal.pop()
            op = UndoJournal.inverse(entry)
        except CannotUndo as e:
            self.app.notify(str(e), severity="warning")
            self.refresh_bindings()
            return
        if isinstance(op, UndoFlags) and op.folder == self.folder:
            self._local_flags(op.uids, op.flag, op.add)
        elif not isinstance(op, UndoFlags) and self.account:
            self.expect_arrivals(self.account.name, op.dest, len(op.uids))   # no "new mail" toast
        self.run_undo(self.account, op, UndoJournal.describe(entry))
        self.refresh_bindings()

    @work(thread=True, group="changes", exit_on_error=False)
    def run_undo(self, account: Account, op, what: str) -> None:
        if isinstance(op, UndoFlags):
            store, real = self.store_for(account, op.folder)
            store.set_flags(real, op.uids, [op.flag], add=op.add)
            self.post_message(UndoFinished(account.name, f"Undid {what}", (op.folder,)))
        else:
            store, real = self.store_for(account, op.folder)
            uid_map = store.move(real, op.uids, op.dest)
            self.post_message(UndoFinished(account.name, f"Undid {what}", (op.folder, op.dest),
                                           arrived=(op.dest, tuple(uid_map.values()))))

    def on_undo_finished(self, event: UndoFinished) -> None:
        if event.arrived is not None:
            self.arrived(event.account, *event.arrived)
        self.app.notify(event.note, timeout=3)
        if self.account and self.account.name == event.account and self.folder in event.refresh:
            if self.search_query is None:
                self.load_folder(self.account, self.folder, self.sort, self.message_list.current_uid)
            else:
                self.run_search(self.account, self.folder, self.search_query)
        self.list_folders(self.accounts[event.account])

    # --- folders ------------------------------------------------------------------------
    def action_refresh(self) -> None:
        if self.account:
            if hasattr(self.account.store, "sync"):     # POP3: fetch from the server now
                self.sync_account(self.account)
            self.list_folders(self.account)
            if self.folder:
                self.load_folder(self.account, self.folder, self.sort, self.message_list.current_uid)

    def action_new_folder(self) -> None:
        def named(name: str | None) -> None:
            if name:
                self.folder_op(self.account, "create", name, None)
        self.app.push_screen(PromptScreen("Name of the new folder (use / for a subfolder):"), named)

    def action_rename_folder(self) -> None:
        old = self.folder

        def named(name: str | None) -> None:
            if name and name != old:
                self.folder_op(self.account, "rename", old, name)
        self.app.push_screen(PromptScreen(f"Rename folder {old!r} to:", value=old), named)

    def action_delete_folder(self) -> None:
        name = self.folder

        def answer(yes: bool | None) -> None:
            if yes:
                self.folder_op(self.account, "delete", name, None)
        self.app.push_screen(ConfirmScreen(
            f"Delete folder {name!r} and every message in it? This cannot be undone.", yes="Delete"),
            answer)

    @work(thread=True, group="changes", exit_on_error=False)
    def folder_op(self, account: Account, op: str, name: str, new: str | None) -> None:
        store = account.store
        if op == "create":
            store.create_folder(name)
            self.post_message(FolderChanged(account.name, f"Created folder {name}", select=name))
        elif op == "rename":
            store.rename_folder(name, new)
            self.post_message(FolderChanged(account.name, f"Renamed {name} to {new}", select=new))
        else:
            store.delete_folder(name)
            self.post_message(FolderChanged(account.name, f"Deleted folder {name}",
                                            select=store.folder_for_role("inbox") or "INBOX"))

    def on_folder_changed(self, event: FolderChanged) -> None:
        self.app.notify(event.note, timeout=3)
        account = self.accounts[event.account]
        if event.select and (event.note.startswith(("Renamed", "Deleted"))):
            self.open_folder(account, event.select)
        self.list_folders(account)

    # --- search -------------------------------------------------------------------------
    def action_search(self) -> None:
        bar = self.query_one("#search", Input)
        bar.display = True
        bar.focus()

    @on(Input.Submitted, "#search")
    def search_submitted(self, event: Input.Submitted) -> None:
        query = event.value.strip()
        everywhere, query = split_scope(query)
        if not query:
            self.end_search()
            return
        if everywhere and self.account and self.folder:
            self._search_all_folders()
        self.search_query = query
        self.status.note = f"searching {query!r}…"
        self.message_list.focus()
        self.run_search(self.account, self.folder, query)

    @work(thread=True, exclusive=True, group="search", exit_on_error=False)
    def run_search(self, account: Account, folder: str, query: str) -> None:
        store, real = self.store_for(account, folder)
        local = [uid for f, uid in store.local_search(real, query) if f == real]
        sums = store.cached_summaries(real, local[:FIRST_WINDOW])
        self.post_message(SearchFinished(account.name, folder, query, local, sums, "local"))
        if get_current_worker().is_cancelled:
            return
        server = store.search(real, query)
        self.post_message(SearchFinished(account.name, folder, query, server, {}, "server"))

    def on_search_finished(self, event: SearchFinished) -> None:
        if not self._is_current(event.account, event.folder) or event.query != self.search_query:
            return
        ml = self.message_list
        if event.source == "local":
            self._hits = set(event.uids)
        else:
            self._hits = getattr(self, "_hits", set()) | set(event.uids)
        hits = self._hits
        order = [u for u in self.folder_rows if u in hits]
        order += sorted(hits.difference(order), reverse=True)
        ml.summaries.update(event.summaries)
        ml.set_rows(tuple(order), keep=ml.current_uid)
        where = "cache" if event.source == "local" else "server"
        self.status.note = f"search {event.query!r}: {len(order)} found ({where}) — q/Esc to leave"
        self._show_counts()
        self.refresh_bindings()

    def _search_all_folders(self) -> None:
        """Switch the list to a virtual folder over every folder of the current account (the
        search results of ``in:all`` live there, openable and actionable like any list)."""
        if self._scope_base is None:
            self._scope_base = (self.account, self.folder)
        base = self._scope_base[0]
        folders = [n for n, f in self.tree.folders.get(base.name, {}).items()
                   if f.selectable and f.role != "outbox"]
        view = all_folders_view(base, folders)
        self.accounts[view.name] = view
        self.account, self.folder = view, view.store.name
        self.folder_rows = ()
        self.message_list.selection.clear()
        self.status.account, self.status.folder = base.name, "all folders"

    def end_search(self) -> None:
        bar = self.query_one("#search", Input)
        bar.display = False
        if self._scope_base is not None:           # back from an in:all search
            account, folder = self._scope_base
            self._scope_base = None
            self.search_query = None
            self.status.note = ""
            self.open_folder(account, folder)
            self.message_list.focus()
            return
        if self.search_query is not None and self.account and self.folder:
            self.search_query = None
            self.status.note = ""
            self.message_list.set_rows(self.folder_rows, keep=self.message_list.current_uid)
            self._show_counts()
        self.message_list.focus()

    def on_key(self, event) -> None:
        if event.key == "escape" and (self.search_query is not None or self.query_one("#search").display):
            event.stop()
            self.end_search()

    # --- view options -------------------------------------------------------------------
    def action_toggle_preview(self) -> None:
        self.preview.display = not self.preview.display
        if self.preview.display:
            self.highlighted(MessageList.Highlighted(self.message_list.current_uid))

    def action_cycle_sort(self) -> None:
        self.sort = next_sort(self.sort)
        self.app.notify(f"Sorted by {self.sort}", timeout=2)
        if self.account and self.folder:
            self.load_folder(self.account, self.folder, self.sort, self.message_list.current_uid)

    def action_toggle_threads(self) -> None:
        self.threaded = not self.threaded
        if self.threaded:
            self.thread_rows()
        else:
            self.workers.cancel_group(self, "threads")
            self.status.progress = ""
            self.message_list.set_rows(self.folder_rows, keep=self.message_list.current_uid)
        self.app.notify("Threads on" if self.threaded else "Threads off", timeout=2)

    def thread_rows(self) -> None:
        """Regroup the list into threads in a worker: a 100,000-message folder needs every
        summary from the cache and a few hundred ms of threading, never on the UI thread."""
        if not self.account or not self.folder:
            return
        self.status.progress = "threading…"
        self.thread_folder(self.account, self.folder, self.folder_rows, dict(self.message_list.summaries))

    @work(thread=True, exclusive=True, group="threads", exit_on_error=False)
    def thread_folder(self, account: Account, folder: str, rows: tuple[int, ...],
                      known: dict[int, MessageSummary]) -> None:
        from tui_mail.ui.threads import thread_order

        worker = get_current_worker()
        store, real = self.store_for(account, folder)
        server_threads = getattr(store, "server_threads", None)
        if server_threads is not None and len(rows) >= SERVER_THREADS_FROM:
            # a big folder: the server's THREAD=REFERENCES (Dovecot, our relay) is faster and
            # needs no References of 100k messages in memory; local threading if it cannot
            try:
                threads = server_threads(real)
            except MailError:
                threads = None
            if threads is not None:
                from tui_mail.ui.threads import order_of_threads

                order, depth = order_of_threads(rows, threads)
                if not worker.is_cancelled:
                    self.post_message(ThreadsReady(account.name, folder, rows, tuple(order), depth))
                return
        missing = [u for u in rows if u not in known]
        fields = {f.uid: f for f in store.thread_fields(real, missing)} if missing else {}
        fields.update(known)
        if worker.is_cancelled:
            return
        order, depth = thread_order(rows, fields)
        if not worker.is_cancelled:
            self.post_message(ThreadsReady(account.name, folder, rows, tuple(order), depth))

    def on_threads_ready(self, event: ThreadsReady) -> None:
        if not self._is_current(event.account, event.folder):
            return
        self.status.progress = ""
        if not self.threaded or event.rows is not self.folder_rows or self.search_query is not None:
            return          # the folder changed or threads were turned off meanwhile
        ml = self.message_list
        ml.set_rows(event.order, keep=ml.current_uid, depth=event.depth)

    # --- reading and writing ------------------------------------------------------------
    def action_open_message(self) -> None:
        uid = self.message_list.current_uid
        if uid is None:
            return
        if self.folder is not None and self.folder == self.role_folder("drafts"):
            self._fetch_for("draft")           # recall: the draft opens in the composer
            return
        from tui_mail.ui.screens.reader import ReaderScreen
        self.app.push_screen(ReaderScreen(self, self.account, self.folder, uid))

    def neighbour(self, uid: int, step: int) -> int | None:
        ml = self.message_list
        row = ml.row_of(uid)
        if row is None:
            return None
        target = row + step
        if 0 <= target < len(ml.rows):
            ml.set_cursor(target)
            return ml.rows[target]
        return None

    def action_compose(self) -> None:
        self.app.open_composer_for(self.account, "new", None)

    def action_reply(self) -> None:
        self._fetch_for("reply")

    def action_reply_all(self) -> None:
        self._fetch_for("reply_all")

    def action_forward(self) -> None:
        self._fetch_for("forward")

    def action_forward_attachment(self) -> None:
        self._fetch_for("forward_attachment")

    def _fetch_for(self, purpose: str) -> None:
        """Fetch the message, then open the composer; keys typed meanwhile wait for it."""
        uid = self.message_list.current_uid
        if uid is not None and self.account and self.folder:
            self._compose_hold = self.app.hold_keys(purpose)
            self.fetch_for_compose(self.account, self.folder, uid, purpose)

    @work(thread=True, exclusive=True, group="compose-fetch", exit_on_error=False)
    def fetch_for_compose(self, account: Account, folder: str, uid: int, purpose: str) -> None:
        store, real = self.store_for(account, folder)
        from tui_mail.mail.parse import parse_message

        view = parse_message(store.fetch_message(real, uid, full=True))
        self.post_message(MessageFetched(account.name, folder, uid, view, purpose))

    def origin_of(self, account: Account, folder: str, uid: int, purpose: str, view=None):
        """What sending a reply/forward of ``uid`` flags (None for new mail and drafts)."""
        from tui_mail.ui.screens.compose import ORIGIN_FLAG, Origin

        flag = ORIGIN_FLAG.get(purpose)
        if flag is None or folder == OUTBOX:
            return None
        store, real = self.store_for(account, folder)
        return Origin(store, folder, real, uid, flag, getattr(view, "message_id", "") or "")

    def open_composer(self, account: Account, folder: str, uid: int, purpose: str, view) -> None:
        """The composer for a reply/forward/recalled draft of ``uid`` in ``folder``."""
        store = account.store
        if isinstance(store, VirtualStore):      # answer from the account the message came to
            account = self.accounts.get(store.account_of(uid), account)
            if isinstance(account.store, VirtualStore):
                account = self.accounts.get(account.store.account_of(uid), account)
        self.app.open_composer_for(account, purpose, view,
                                   origin=self.origin_of(account, folder, uid, purpose, view),
                                   draft_uid=uid if purpose == "draft" else None)

    def action_back(self) -> None:
        if self.search_query is not None:
            self.end_search()
        else:
            self.app.exit()

    # --- what can run now -----------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MESSAGE_ACTIONS:
            if not self.is_mounted or self.message_list.current_uid is None:
                return None
            if action in ("reply", "reply_all", "forward", "forward_attachment") and self.account and self.account.submit is None:
                return None
        if action == "undo" and not len(self.journal):
            return None
        if action in FOLDER_ACTIONS:
            info = self.tree.info(self.account.name, self.folder) if self.account and self.folder else None
            if info is None or info.role in ("inbox", "outbox"):
                return None
        if action == "compose" and (self.account is None or self.account.submit is None):
            return None
        return True

    def worker_failed(self, worker: Worker, error: BaseException) -> None:
        """Called by the app's error handler: put optimistic changes right by reloading."""
        if worker.group == "compose-fetch":
            self.app.release_keys(getattr(self, "_compose_hold", None))
        if worker.group == "folder":
            self.app.release_keys(getattr(self, "_folder_hold", None))
        if worker.group in ("changes", "search") and self.account and self.folder:
            self.load_folder(self.account, self.folder, self.sort, self.message_list.current_uid)
        if worker.group == "search":
            self.status.note = ""


def _with_flags(s: MessageSummary, flags: Iterable[str]) -> MessageSummary:
    from dataclasses import replace
    return replace(s, flags=frozenset(flags))

