"""The Textual application: holds the accounts and settings, pushes the main screen, and owns
the cross-cutting pieces — the one worker-failure handler, the protocol trace buffer, the
command palette entries, key remapping and themes.

Screens receive what they need (accounts, settings) through the app; widgets receive data
through attributes and report upwards with messages (Textual's "attributes down, messages up").
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from textual import work
from textual.app import App, SystemCommand
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from tui_mail.errors import MailError
from tui_mail.ui.keyorder import OrderedKeys
from tui_mail.ui.keys import APP_KEYS, MAIN_KEYS, bindings, validate_keymap
from tui_mail.ui.safe_text import shown, shown_block
from tui_mail.ui.services import Account
from tui_mail.ui.trace import TraceBuffer


@dataclass(frozen=True)
class UISettings:
    mark_read: str = "open"            # "open": reader on open, preview after the delay | "never"
    mark_read_delay: float = 2.0       # seconds the preview rests on a message first; 0: never
    preview: bool = True
    theme: str = "textual-dark"
    keys: Mapping[str, str] = field(default_factory=dict)
    ascii: bool = False                # ASCII flag glyphs instead of ● ★ ↩ ⊕
    autosave_seconds: float = 30.0
    cursor_blink: bool = True
    address_book_command: str | None = None  # tui_mail.address_book: prints address<TAB>name lines
    address_book_dir: str | None = None      # a directory of .vcf files
    notify_command: str | None = None        # tui_mail.ui.notify: argv run on new mail (no shell)
    notify_terminal: str = "auto"            # auto | osc9 | osc777 | off

    def __post_init__(self) -> None:
        if not (self.mark_read in ("open", "never") or self.mark_read.startswith("delay:")):
            raise ValueError(f"mark_read must be open, never or delay:N, not {self.mark_read!r}")
        if self.mark_read.startswith("delay:"):     # the old spelling: the preview's delay
            object.__setattr__(self, "mark_read_delay", float(self.mark_read.split(":", 1)[1] or 0))
            object.__setattr__(self, "mark_read", "open")


CONTACTS_FIRST_BUILD = 5.0      # seconds after start: rank the cached mail into the contacts index
CONTACTS_REBUILD = 900.0        # and again every quarter of an hour
NOTIFY_TIMEOUT = 10.0           # seconds notify_command may run


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class MailApp(OrderedKeys, App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "tui-mail"
    BINDINGS = bindings(APP_KEYS)

    def __init__(self, accounts: Iterable[Account], settings: UISettings | None = None,
                 clock: Callable[[], datetime] | None = None, trace: TraceBuffer | None = None,
                 start_mail=None, address_book=None):
        super().__init__()
        # Thread workers parse envelopes and thread 100k messages in Python: with the default
        # 5 ms GIL switch interval each of the UI thread's wake-ups could wait that long behind
        # them, so a key pressed during a cache fill took tens of ms. 1 ms keeps keys quick.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
        self.start_mail = start_mail     # tui_mail.mail.mailto.MailtoFields: open the composer
        self.accounts = list(accounts)
        self.settings = settings or UISettings()
        self.clock = clock or (lambda: datetime.now().astimezone())
        self.trace_buffer = trace or TraceBuffer()
        for account in self.accounts:
            sink = self.trace_buffer.sink(account.name)
            if account.store.trace is None:
                account.store.trace = sink
        self.errors: list[str] = []
        self.address_book = address_book if address_book is not None else self._address_book()
        self.terminal_notifications: list[str] = []     # OSC sequences written (tests read it)

    def _address_book(self):
        from tui_mail.address_book import AddressBook
        from tui_mail.config import cache_dir

        return AddressBook(cache_dir() / "contacts.sqlite", self.settings.address_book_command,
                           self.settings.address_book_dir, [a.address for a in self.accounts])

    def on_mount(self) -> None:
        from tui_mail.ui import tls_warnings

        self._tls_warnings_off = tls_warnings.install(self)   # tls_verify = false → a toast per connect
        if self.settings.theme in self.available_themes:
            self.theme = self.settings.theme
        if self.settings.keys:
            self.set_keymap(validate_keymap(self.settings.keys))
        from tui_mail.ui.screens.main import MainScreen

        self.main_screen = MainScreen(self.accounts)
        self.push_screen(self.main_screen)
        from tui_mail.ui import startup

        self.set_timer(startup.RELEASE_AFTER, startup.release)
        self.load_contacts()
        self.set_timer(CONTACTS_FIRST_BUILD, self.rebuild_contacts)
        self.set_interval(CONTACTS_REBUILD, self.rebuild_contacts)
        if self.start_mail is not None and self.accounts:
            self.open_composer_from_mailto(self.accounts[0], self.start_mail)

    def on_unmount(self) -> None:
        getattr(self, "_tls_warnings_off", lambda: None)()
        for account in self.accounts:
            for store in (account.store, account.outbox):
                if store is None:
                    continue
                try:
                    store.stop_watch()
                    store.close()
                except MailError:
                    pass

    # --- every toast ---------------------------------------------------------------------
    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Toasts carry server and message text (error replies, folder names, subjects): always
        plain text with control characters made visible, whatever ``markup`` says. Widgets'
        and screens' ``notify`` end here too."""
        super().notify(shown_block(_cut(str(message), 600)),
                       title=shown(title, limit=200), severity=severity, timeout=timeout, markup=False)

    # --- the one error handler ----------------------------------------------------------
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.report_worker_failure(event.worker)

    def report_worker_failure(self, worker: Worker) -> None:
        error = worker.error
        hook = getattr(worker.node, "worker_failed", None)
        if hook is not None:
            hook(worker, error)
        if isinstance(error, MailError):
            text = str(error)
        else:
            text = f"{type(error).__name__}: {error}"
        self.errors.append(text)
        self.notify(text, title="Error", severity="error", timeout=8)

    # --- actions reachable from every screen ------------------------------------------------
    def action_help(self) -> None:
        from tui_mail.ui.screens.help import HelpScreen

        self.push_screen(HelpScreen(self.settings.keys, demo=hasattr(self, "world")))

    def action_trace(self) -> None:
        from tui_mail.ui.screens.trace import TraceScreen

        if not isinstance(self.screen, TraceScreen):
            self.push_screen(TraceScreen(self.trace_buffer))

    def open_composer_for(self, account: Account | None, purpose: str, view, *,
                          origin=None, draft_uid: int | None = None) -> None:
        """``purpose``: new, reply, reply_all, forward, forward_attachment or draft (recall the
        draft ``draft_uid``). ``origin`` (compose.Origin): the message to flag once sent."""
        from tui_mail.ui.screens.compose import ComposeScreen, draft_for

        if account is None:
            return
        known = self.known_addresses()
        self.push_screen(ComposeScreen(account, draft_for(account, purpose, view), known,
                                       origin=origin, draft_uid=draft_uid))

    def open_composer_from_mailto(self, account: Account, fields) -> None:
        """``tui-mail mailto:…``: a new message from ``account`` filled in from the link."""
        from tui_mail.ui.screens.compose import ComposeScreen, draft_for

        draft = draft_for(account, "new", None)
        draft.to, draft.cc, draft.bcc = (fields.address_text(k) for k in ("to", "cc", "bcc"))
        draft.subject, draft.in_reply_to, draft.references = fields.subject, fields.in_reply_to, fields.references
        if fields.body:
            draft.body = fields.body.rstrip("\n") + "\n" + draft.body
        self.push_screen(ComposeScreen(account, draft, self.known_addresses()))
        if fields.ignored:
            self.notify("The mailto: link also asked for " + ", ".join(fields.ignored) + "; ignored.",
                        severity="warning")

    # --- the address book (tui_mail.address_book) ------------------------------------------
    @work(thread=True, group="contacts", exit_on_error=False)
    def load_contacts(self) -> None:
        self.address_book.load()

    @work(thread=True, exclusive=True, group="contacts", exit_on_error=False)
    def rebuild_contacts(self) -> None:
        """Rank every address on the mail of each account's inbox and sent folder (from the
        local caches, no network) into the contacts index."""
        from tui_mail.address_book import observations_of

        def seen():         # streamed into the ranking (a 100k folder: ~36 MB if listed first)
            for account in self.accounts:
                store = account.store
                try:
                    inbox = account.roles.get("inbox") or store.folder_for_role("inbox") or "INBOX"
                    sent = account.roles.get("sent") or store.folder_for_role("sent")
                    yield from observations_of(store, [inbox], [sent] if sent else [])
                except MailError:
                    continue

        self.address_book.rebuild(seen())

    def address_lookup(self, query: str) -> list[str]:
        """Blocking (the composer calls it in a thread): entries for ``query`` from the index,
        the vCards and address_book_command."""
        return [c.entry for c in self.address_book.lookup(query)]

    # --- new mail outside the app (tui_mail.ui.notify) -----------------------------------------
    def announce_new_mail(self, account: Account, folder: str, uids: tuple[int, ...]) -> None:
        from tui_mail.ui.notify import terminal_kind

        kind = terminal_kind(self.settings.notify_terminal)
        if uids and (self.settings.notify_command or kind):
            self._announce(account, folder, max(uids), len(uids), kind)

    @work(thread=True, group="announce", exit_on_error=False)
    def _announce(self, account: Account, folder: str, uid: int, n: int, kind: str | None) -> None:
        import os
        import subprocess

        from tui_mail.ui.notify import command_argv, osc_sequence

        store = account.outbox if folder == "Outbox" and account.outbox is not None else account.store
        summary = store.summaries(folder, [uid]).get(uid)
        sender = (summary.from_name or summary.from_addr) if summary else account.name
        subject = summary.subject if summary else ""
        if n > 1:
            subject = f"{subject} (and {n - 1} more)"
        if kind:
            seq = osc_sequence(kind, f"{sender}", subject, in_tmux=bool(os.environ.get("TMUX")))
            self.call_from_thread(self._write_terminal_notification, seq)
        if self.settings.notify_command:
            try:
                subprocess.run(command_argv(self.settings.notify_command, sender, subject),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=NOTIFY_TIMEOUT, check=False)
            except (OSError, ValueError, subprocess.SubprocessError) as e:
                raise MailError(f"notify_command failed: {type(e).__name__}: {e}") from None

    def _write_terminal_notification(self, sequence: str) -> None:
        self.terminal_notifications.append(sequence)
        driver = self._driver
        if driver is not None and not self.is_headless:
            driver.write(sequence)
            driver.flush()

    def known_addresses(self) -> list[str]:
        """The address book's contacts (most used first), then senders in loaded summaries,
        for To/Cc/Bcc completion."""
        seen: dict[str, str] = {}
        for entry in self.address_book.entries():
            seen.setdefault(entry.rpartition("<")[2].rstrip(">").lower(), entry)
        ranked = len(seen)
        screen = getattr(self, "main_screen", None)
        if screen is not None and screen.is_mounted:
            for s in list(screen.message_list.summaries.values())[:20000]:
                if s.from_addr and s.from_addr.lower() not in seen:
                    name = s.from_name if s.from_name and s.from_name != s.from_addr else ""
                    seen[s.from_addr.lower()] = f"{name} <{s.from_addr}>" if name else s.from_addr
        entries = list(seen.values())
        return entries[:ranked] + sorted(entries[ranked:], key=str.lower)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Protocol trace", "Show the live SMTP/IMAP/POP3 dialogue (F2)", self.action_trace)
        yield SystemCommand("Keys", "Every key and what it does (?)", self.action_help)
        main = getattr(self, "main_screen", None)
        if main is None or screen is not main:
            return
        for spec in MAIN_KEYS:
            if main.check_action(spec.action, ()) is True:
                yield SystemCommand(spec.description, f"{spec.group} — key {spec.keys}",
                                    getattr(main, f"action_{spec.action}"))
