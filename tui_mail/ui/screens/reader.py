"""The full reader: decoded headers, body with links, attachments (save, open), full headers
and raw source toggles, next/previous message. Marks read following the [ui] mark_read
setting through the main screen, so flags and counts stay in one place."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from tui_mail.mail.parse import MessageView, parse_message, save_attachment
from tui_mail.ui.keys import READER_KEYS, bindings
from tui_mail.ui.messages import MessageFetched
from tui_mail.ui.render import message_text, raw_text
from tui_mail.ui.rows import size_cell
from tui_mail.ui.safe_text import as_text
from tui_mail.ui.failures import ReportsWorkerFailures
from tui_mail.ui.screens.dialogs import ConfirmScreen, PromptScreen
from tui_mail.ui.services import OUTBOX, Account


def downloads_dir() -> Path:
    d = Path(os.environ.get("XDG_DOWNLOAD_DIR") or Path.home() / "Downloads")
    d.mkdir(parents=True, exist_ok=True)
    return d


def mailcap_files() -> list[Path]:
    env = os.environ.get("MAILCAPS")
    if env:
        return [Path(p) for p in env.split(":")]
    return [Path.home() / ".mailcap", Path("/etc/mailcap")]


def mailcap_command(content_type: str, files: list[Path]) -> str | None:
    """The first mailcap (RFC 1524) view command for ``content_type`` that runs without a
    terminal. Hand-written: the stdlib ``mailcap`` module is deprecated (removed in 3.13)."""
    ctype = content_type.lower()
    wildcard = ctype.split("/")[0] + "/*"
    for file in files:
        try:
            lines = file.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = [f.strip() for f in line.split(";")]
            if len(fields) < 2 or fields[0].lower() not in (ctype, wildcard):
                continue
            flags = {f.split("=")[0].strip().lower() for f in fields[2:]}
            if flags & {"needsterminal", "copiousoutput", "test"}:
                continue
            return fields[1]
    return None


_SAFE_PATH = re.compile(r"[A-Za-z0-9_./-]+")
_SAFE_EXT = re.compile(r"\.[A-Za-z0-9]{1,10}")


def safe_extension(filename: str | None) -> str:
    """The sender's extension if it is plain (``.pdf``, ``.html``), lower-cased; else ``""``."""
    ext = os.path.splitext(filename or "")[1]
    return ext.lower() if _SAFE_EXT.fullmatch(ext) else ""


def temp_copy(data: bytes, filename: str | None) -> Path:
    """Write ``data`` for a viewer: a fresh 0700 directory, a 0600 file named by us
    (``attachment`` plus the sanitised extension). The sender's name never reaches a command
    line: mailcap entries are shell text and users often write ``'%s'``, which a name like
    ``x'$(touch pwned)'.html`` would break out of even after shell quoting."""
    base = tempfile.gettempdir()
    if not _SAFE_PATH.fullmatch(base):
        base = "/tmp"
    folder = Path(tempfile.mkdtemp(prefix="tui-mail-", dir=base))
    os.chmod(folder, 0o700)
    path = folder / f"attachment{safe_extension(filename)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def opener_command(path: Path, content_type: str) -> list[str] | None:
    """The system opener: a mailcap entry for the type, else xdg-open/open; None if neither.

    ``path`` must be one of ours (``temp_copy``): only ``[A-Za-z0-9_./-]``, so it means the same
    inside or outside any quotes the mailcap entry puts around ``%s``. Other ``%`` fields
    (``%t`` would be the sender's content type) are never filled in."""
    if not _SAFE_PATH.fullmatch(str(path)):
        raise ValueError(f"refusing to put {str(path)!r} into a shell command")
    entry = mailcap_command(content_type, mailcap_files())
    if entry:
        return ["/bin/sh", "-c", entry.replace("%s", str(path)) if "%s" in entry else f"{entry} < {path}"]
    for opener in ("xdg-open", "open"):
        found = shutil.which(opener)
        if found:
            return [found, str(path)]
    return None


class ReaderScreen(ReportsWorkerFailures, Screen[None]):
    DEFAULT_CSS = """
    ReaderScreen #scroller { background: $surface; padding: 0 1; height: 1fr; }
    ReaderScreen #attachments { height: auto; max-height: 8; border-top: solid $primary 30%; }
    """
    BINDINGS = bindings(READER_KEYS)

    def __init__(self, main, account: Account, folder: str, uid: int):
        super().__init__()
        self.main, self.account, self.folder, self.uid = main, account, folder, uid
        self.view: MessageView | None = None
        self.full_headers = False
        self.raw = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="scroller"):
            yield Static("Loading…", id="body", markup=False)
        yield OptionList(id="attachments", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#attachments").display = False
        self.query_one("#scroller").focus()
        self.load(self.uid)

    def load(self, uid: int) -> None:
        """Fetch ``uid``; keys typed meanwhile (Enter then ``a`` in one burst) wait for it."""
        self.uid = uid
        self.app.release_keys(getattr(self, "_loading_hold", None))
        self._loading_hold = self.app.hold_keys("reader")
        self.fetch(self.account, self.folder, uid)

    def worker_failed(self, worker, error) -> None:
        if worker.group == "reader":
            self.app.release_keys(getattr(self, "_loading_hold", None))

    def on_unmount(self) -> None:
        self.app.release_keys(getattr(self, "_loading_hold", None))

    @work(thread=True, exclusive=True, group="reader", exit_on_error=False)
    def fetch(self, account: Account, folder: str, uid: int) -> None:
        store, real = self.main.store_for(account, folder)
        view = parse_message(store.fetch_message(real, uid, full=True))
        if not get_current_worker().is_cancelled:
            self.post_message(MessageFetched(account.name, folder, uid, view, "reader"))

    def on_message_fetched(self, event: MessageFetched) -> None:
        event.stop()
        if event.uid != self.uid:
            return
        self.view = event.view
        self.render_view()
        self.app.release_keys(getattr(self, "_loading_hold", None))
        self.main.apply_read_policy(event.uid)

    def render_view(self) -> None:
        view = self.view
        if view is None:
            return
        body = self.query_one("#body", Static)
        body.update(raw_text(view.raw) if self.raw else message_text(view, self.full_headers))
        atts = self.query_one("#attachments", OptionList)
        atts.clear_options()
        atts.add_options([Option(as_text(f"{a.filename or '(unnamed)'}  {a.content_type}  {size_cell(a.size)}",
                                         limit=300), id=a.part_id) for a in view.attachments])
        atts.display = bool(view.attachments)
        if view.attachments:
            atts.highlighted = 0
        self.query_one("#scroller", VerticalScroll).scroll_home(animate=False)

    # --- actions ------------------------------------------------------------------------
    def action_close(self) -> None:
        self.app.pop_screen()

    def action_step(self, step: int) -> None:
        uid = self.main.neighbour(self.uid, step)
        if uid is None:
            self.app.notify("No more messages" if step > 0 else "This is the first message", timeout=2)
        else:
            self.load(uid)

    def action_toggle_headers(self) -> None:
        self.full_headers = not self.full_headers
        self.raw = False
        self.render_view()

    def action_toggle_raw(self) -> None:
        self.raw = not self.raw
        self.render_view()

    def action_scroll(self, lines: int) -> None:
        self.query_one("#scroller", VerticalScroll).scroll_relative(y=lines, animate=False)

    def action_page(self) -> None:
        self.query_one("#scroller", VerticalScroll).scroll_page_down(animate=False)

    def _attachment(self):
        if self.view is None or not self.view.attachments:
            self.app.notify("This message has no attachments", timeout=2)
            return None
        atts = self.query_one("#attachments", OptionList)
        index = atts.highlighted or 0
        return self.view.attachments[index]

    def action_save_attachment(self) -> None:
        """Ask where (the download directory and the attachment's name, Tab completes paths);
        an existing file is never overwritten: the next free "name (1).ext" is used, and the
        notification says where it went. Esc closes only the question."""
        att = self._attachment()
        if att is None:
            return
        from tui_mail.mail.parse import safe_filename
        from tui_mail.ui.screens.compose import PathSuggester

        view = self.view
        default = str(downloads_dir() / safe_filename(att.filename or "attachment"))

        def chosen(answer: str | None) -> None:
            if answer:
                self.save_to(view, att.part_id, answer)

        self.app.push_screen(PromptScreen("Save the attachment as (Tab completes, Esc cancels):",
                                          value=default, suggester=PathSuggester()), chosen)

    def save_to(self, view: MessageView, part_id: str, answer: str) -> Path | None:
        target = Path(os.path.expanduser(answer))
        att = view.attachment(part_id)
        if answer.endswith("/") or target.is_dir():
            directory, name = target, att.filename or "attachment"
        else:
            directory, name = target.parent, target.name
        try:
            path = save_attachment(view, part_id, directory, filename=name)
        except OSError as e:
            self.app.notify(f"Not saved: {e}", severity="error", timeout=8)
            return None
        wanted = directory / name
        note = f" ({wanted.name} exists, not overwritten)" if path.name != wanted.name and wanted.exists() else ""
        self.app.notify(f"Saved to {path}{note}", timeout=6)
        return path

    def action_open_attachment(self) -> None:
        att = self._attachment()
        if att is None:
            return
        path = temp_copy(self.view.part_bytes(att.part_id), att.filename)
        command = opener_command(path, att.content_type)
        if command is None:
            self.app.notify(f"No program to open {att.content_type}; saved as {path}", severity="warning")
            return
        viewer = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        threading.Thread(target=viewer.wait, name="attachment-viewer", daemon=True).start()  # reap it
        self.app.notify(f"Opening {path.name} with {command[0]}", timeout=3)

    def _write(self, purpose: str) -> None:
        if self.view is not None:
            self.main.open_composer(self.account, self.folder, self.uid, purpose, self.view)

    def action_reply(self) -> None:
        self._write("reply")

    def action_reply_all(self) -> None:
        self._write("reply_all")

    def action_forward(self) -> None:
        self._write("forward")

    def action_forward_attachment(self) -> None:
        self._write("forward_attachment")

    def action_delete(self) -> None:
        """Delete this message (not the list's selection), then show the next one."""
        uid, main = self.uid, self.main
        nxt = main.neighbour(uid, 1) or main.neighbour(uid, -1)
        trash = main.role_folder("trash")

        def done() -> None:
            if nxt is None:
                self.app.pop_screen()
            else:
                self.load(nxt)

        if self.folder in (trash, OUTBOX):
            def answer(yes: bool | None) -> None:
                if yes:
                    main.relocate(self.account, self.folder, (uid,), None, "expunge")
                    done()
            self.app.push_screen(ConfirmScreen("Delete this message for good? This cannot be undone.",
                                               yes="Delete"), answer)
            return
        main.relocate(self.account, self.folder, (uid,), trash, "delete")
        done()
