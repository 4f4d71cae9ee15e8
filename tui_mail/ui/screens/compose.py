"""The composer: From, To/Cc/Bcc (completion from known addresses, bad entries marked inline as
you type), Subject, body (TextArea; Ctrl+E edits it in $EDITOR), attachments (add by path with
completion, remove), send with progress, save draft (also autosaved), discard with confirmation.

Building and checking the message is ``tui_mail.mail.compose``; sending is the account's
``submit`` (durable outbox first), run in a thread worker.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.app import SuspendNotSupported
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.suggester import Suggester
from textual.widgets import Footer, Input, Label, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from tui_mail.errors import MailError
from tui_mail.mail import compose as mc
from tui_mail.mail.addresses import check_addresses
from tui_mail.mail.parse import MessageView
from tui_mail.store.base import ANSWERED, DRAFT, FORWARDED, SEEN, MailStore
from tui_mail.ui.keys import COMPOSER_KEYS, bindings
from tui_mail.ui.messages import DraftSaved, FlagsChanged, MessageSent
from tui_mail.ui.screens.dialogs import ConfirmScreen
from tui_mail.ui.failures import ReportsWorkerFailures
from tui_mail.ui.safe_text import as_text, shown, shown_block
from tui_mail.ui.services import Account

ADDRESS_FIELDS = ("to", "cc", "bcc")
# What sending a reply or a forward marks on the original (IMAP spelling; Maildir R and P).
ORIGIN_FLAG = {"reply": ANSWERED, "reply_all": ANSWERED, "forward": FORWARDED,
               "forward_attachment": FORWARDED}


@dataclass(frozen=True)
class Origin:
    """The message a reply or forward answers: flagged \\Answered / $Forwarded once sent."""

    store: MailStore
    folder: str          # the folder as the UI names it (for FlagsChanged)
    real: str            # the folder in ``store``
    uid: int
    flag: str
    message_id: str = ""   # kept in a saved draft, to find the original again when it is recalled


def draft_for(account: Account, purpose: str, view: MessageView | None) -> mc.Draft:
    """The starting draft for compose/reply/reply-all/forward."""
    ident = dict(identity=account.name, signature=account.signature)
    if purpose == "reply" and view is not None:
        return mc.reply(view, [account.identity], from_=account.identity, **ident)
    if purpose == "reply_all" and view is not None:
        return mc.reply_all(view, [account.identity], from_=account.identity, **ident)
    if purpose == "forward" and view is not None:
        return mc.forward(view, from_=account.identity, **ident)
    if purpose == "forward_attachment" and view is not None:
        return mc.forward(view, from_=account.identity, as_attachment=True, **ident)
    if purpose == "draft" and view is not None:
        draft = mc.draft_from_bytes(view.raw)
        draft.from_ = draft.from_ or account.identity
        return draft
    sig = ("\n\n-- \n" + account.signature.rstrip("\n") + "\n") if account.signature else ""
    return mc.Draft(from_=account.identity, body=sig, identity=account.name)


class AddressSuggester(Suggester):
    """Completes the entry after the last comma from known addresses (case-insensitive)."""

    def __init__(self, known: list[str], lookup=None):
        super().__init__(use_cache=False, case_sensitive=True)
        self.known = known
        self.lookup = lookup        # blocking query → entries (the address book), run in a thread

    async def get_suggestion(self, value: str) -> str | None:
        head, sep, last = value.rpartition(",")
        typed = last.lstrip()
        if len(typed) < 2:
            return None
        low = typed.lower()
        for entry in self.known:
            if entry.lower().startswith(low) or _addr_part(entry).lower().startswith(low):
                prefix = value[: len(value) - len(typed)]
                return prefix + entry if entry.lower().startswith(low) else None
        if self.lookup is not None:     # address_book_command: asked only when nothing known fits
            import asyncio

            for entry in await asyncio.to_thread(self.lookup, typed):
                entry = shown(entry, 300)
                if entry.lower().startswith(low):
                    return value[: len(value) - len(typed)] + entry
        return None


def _addr_part(entry: str) -> str:
    return entry.rpartition("<")[2].rstrip(">") if "<" in entry else entry


class PathSuggester(Suggester):
    """Completes file system paths (~ expanded), directories ending in /."""

    def __init__(self):
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        expanded = os.path.expanduser(value)
        directory, _, stem = expanded.rpartition("/")
        directory = directory or ("/" if expanded.startswith("/") else ".")
        try:
            names = sorted(n for n in os.listdir(directory) if n.startswith(stem) and not
                           (n.startswith(".") and not stem.startswith(".")))
        except OSError:
            return None
        if not names:
            return None
        name = names[0]
        full = os.path.join(directory, name)
        done = value[: len(value) - len(stem)] + name
        return done + "/" if os.path.isdir(full) else done


class ComposeScreen(ReportsWorkerFailures, Screen[None]):
    DEFAULT_CSS = """
    ComposeScreen #fields { height: auto; padding: 1 1 0 1; }
    ComposeScreen .row { height: 1; }
    ComposeScreen .row > Label { width: 10; padding-right: 1; text-align: right; text-style: bold; }
    ComposeScreen .row > Input { width: 1fr; height: 1; border: none; padding: 0 1; background: $boost; }
    ComposeScreen .row > Input:focus { background: $primary 25%; }
    ComposeScreen .row > Input.-invalid { background: $error 35%; text-style: underline; }
    ComposeScreen .problem { color: $error; height: auto; padding-left: 11; }
    ComposeScreen #body { height: 1fr; border: tall $primary 40%; }
    ComposeScreen #attachments { height: auto; max-height: 6; }
    ComposeScreen #attach-path { display: none; }
    ComposeScreen #progress { height: 1; padding-left: 1; color: $accent; }
    """
    BINDINGS = bindings(COMPOSER_KEYS)

    def __init__(self, account: Account, draft: mc.Draft, known: list[str], *,
                 origin: Origin | None = None, draft_uid: int | None = None):
        super().__init__()
        self.account, self.draft, self.known = account, draft, known
        self.origin = origin
        self.attachments: list[str] = list(draft.attachments)
        self._clean_state: tuple | None = None   # what was last saved (or loaded): see dirty
        self.sending = False
        # A recalled draft (Enter in Drafts) or one saved with Ctrl+D: saving replaces it,
        # sending removes it, and leaving never deletes it (an autosaved one goes on discard).
        self.saved_uid: int | None = draft_uid
        self.keep_draft = draft_uid is not None
        self.sent = False

    def compose(self) -> ComposeResult:
        d = self.draft
        suggest = AddressSuggester([shown(k, 300) for k in self.known],
                                   lookup=getattr(self.app, "address_lookup", None))   # names from mail: controls visible
        with Vertical(id="fields"):
            with Horizontal(classes="row"):
                yield Label("From")
                yield Input(shown(d.from_, None), id="from")
            for name, value in (("to", d.to), ("cc", d.cc), ("bcc", d.bcc)):
                with Horizontal(classes="row"):
                    yield Label(name.capitalize())
                    yield Input(shown(value, None), id=name, suggester=suggest, placeholder="name <address>, …")
                yield Static("", id=f"{name}-problem", classes="problem")
            with Horizontal(classes="row"):
                yield Label("Subject")
                yield Input(shown(d.subject, None), id="subject")
        yield TextArea(shown_block(d.body), id="body", soft_wrap=True, show_line_numbers=False)
        yield OptionList(id="attachments")
        yield Input(placeholder="path of the file to attach (Tab completes, Enter adds, Esc cancels)",
                    id="attach-path", suggester=PathSuggester())
        yield Static("", id="progress")
        yield Footer()

    def on_mount(self) -> None:
        if not self.app.settings.cursor_blink:
            for widget in self.query(Input):
                widget.cursor_blink = False
            self.query_one(TextArea).cursor_blink = False
        self.refresh_attachments()
        for name in ADDRESS_FIELDS:
            self.query_one(f"#{name}-problem").display = False
        first_empty = "to" if not self.draft.to else "body"
        self.query_one(f"#{first_empty}").focus()
        if isinstance(self.query_one("#body"), TextArea) and first_empty == "body":
            area = self.query_one(TextArea)
            if self.keep_draft:          # a recalled draft: go on where the text ends
                text = area.text.split("\n-- \n")[0].rstrip("\n")
                lines = text.split("\n")
                area.move_cursor((len(lines) - 1, len(lines[-1])))
            else:                        # a reply: write above the quote
                area.move_cursor((0, 0))
        self.call_after_refresh(setattr, self, "dirty", False)   # the loaded draft is "clean"
        interval = self.app.settings.autosave_seconds
        if interval > 0:
            self.set_interval(interval, self.autosave)

    # --- editing ------------------------------------------------------------------------
    def _state(self) -> tuple:
        if not self.is_mounted:
            return ()
        d = self.current_draft()
        return (d.from_, d.to, d.cc, d.bcc, d.subject, d.body, tuple(d.attachments), len(d.parts))

    @property
    def dirty(self) -> bool:
        """Changed since loaded or last saved (compared, so filling the fields is no change)."""
        if self._clean_state is None:
            return False
        return self._state() != self._clean_state

    @dirty.setter
    def dirty(self, value: bool) -> None:
        if not value:
            self._clean_state = self._state()

    def current_draft(self) -> mc.Draft:
        value = lambda name: self.query_one(f"#{name}", Input).value  # noqa: E731
        d = self.draft
        return mc.Draft(from_=value("from"), to=value("to"), cc=value("cc"), bcc=value("bcc"),
                        subject=value("subject"), body=self.query_one(TextArea).text,
                        attachments=list(self.attachments), parts=list(d.parts),
                        in_reply_to=d.in_reply_to, references=d.references, identity=d.identity,
                        **self._origin_fields())

    def _origin_fields(self) -> dict[str, str]:
        """What a saved draft remembers of the message it answers or forwards."""
        o, d = self.origin, self.draft
        if o is not None and o.message_id and o.store is self.account.store:   # not a virtual folder's
            return dict(origin_flag=o.flag, origin_id=o.message_id, origin_folder=o.real)
        return dict(origin_flag=d.origin_flag, origin_id=d.origin_id, origin_folder=d.origin_folder)

    def _recalled_origin(self) -> Origin | None:
        """A recalled draft's original (blocking: the store may ask the server), else None."""
        d = self.draft
        if not (d.origin_flag and d.origin_id):
            return None
        store, folder = self.account.store, d.origin_folder or "INBOX"
        try:
            uid = store.find_message_id(folder, d.origin_id)
        except MailError:                  # the folder is gone: nothing to flag
            return None
        return Origin(store, folder, folder, uid, d.origin_flag, d.origin_id) if uid else None

    @on(Input.Changed)
    def input_changed(self, event: Input.Changed) -> None:
        if event.input.id in ADDRESS_FIELDS:
            self.dirty = True
            self.mark_addresses(event.input.id)
        elif event.input.id in ("from", "subject"):
            self.dirty = True

    @on(TextArea.Changed)
    def body_changed(self) -> None:
        self.dirty = True

    def mark_addresses(self, name: str) -> bool:
        """Mark bad entries of one address field inline; True when the field is valid."""
        field = self.query_one(f"#{name}", Input)
        problem = self.query_one(f"#{name}-problem", Static)
        _, bad = check_addresses(field.value)
        # An entry still being typed at the end is not an error yet.
        if bad and self.focused is field and not self.sending and bad[-1].position + len(bad[-1].text) >= len(field.value.rstrip()) and len(bad) == 1 and not field.value.rstrip().endswith(","):
            bad_shown = []
        else:
            bad_shown = bad
        field.set_class(bool(bad_shown), "-invalid")
        problem.display = bool(bad_shown)
        problem.update(as_text("; ".join(f"✗ {b.text!r}: {b.reason}" for b in bad_shown), limit=2000))
        return not bad

    @on(Input.Blurred)
    def blurred(self, event: Input.Blurred) -> None:
        if event.input.id in ADDRESS_FIELDS:
            self.mark_addresses(event.input.id)

    # --- attachments --------------------------------------------------------------------
    def refresh_attachments(self) -> None:
        options = self.query_one("#attachments", OptionList)
        options.clear_options()
        labels = [f"📎 {Path(p).name}  ({p})" for p in self.attachments]
        labels += [f"📎 {part.filename}  ({part.content_type}, {len(part.data):,} bytes)" for part in self.draft.parts]
        options.add_options([Option(as_text(label, limit=300)) for label in labels])
        options.display = bool(labels)

    def action_add_attachment(self) -> None:
        box = self.query_one("#attach-path", Input)
        box.display = True
        box.value = str(Path.cwd()) + "/"
        box.focus()

    @on(Input.Submitted, "#attach-path")
    def attach_submitted(self, event: Input.Submitted) -> None:
        path = os.path.expanduser(event.value.strip())
        if not os.path.isfile(path):
            self.app.notify(f"Not a file: {path}", severity="warning")
            return
        self.attachments.append(os.path.abspath(path))
        self.dirty = True
        event.input.display = False
        self.refresh_attachments()
        self.query_one(TextArea).focus()

    def action_remove_attachment(self) -> None:
        options = self.query_one("#attachments", OptionList)
        index = options.highlighted if options.highlighted is not None else options.option_count - 1
        if index < 0:
            return
        if index < len(self.attachments):
            del self.attachments[index]
        else:
            del self.draft.parts[index - len(self.attachments)]
        self.dirty = True
        self.refresh_attachments()

    # --- $EDITOR ------------------------------------------------------------------------
    def action_edit_body(self) -> None:
        area = self.query_one(TextArea)
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        with tempfile.NamedTemporaryFile("w", suffix=".eml.txt", delete=False, encoding="utf-8") as fh:
            fh.write(area.text)
            path = fh.name
        try:
            try:
                with self.app.suspend():
                    subprocess.run([*shlex.split(editor), path], check=False)
            except SuspendNotSupported:
                self.app.notify("This terminal cannot hand over to $EDITOR", severity="warning")
                return
            except OSError as e:
                self.app.notify(f"Cannot run {editor!r}: {e}", severity="error")
                return
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        finally:
            os.unlink(path)
        if text != area.text:
            area.load_text(text)
            self.dirty = True

    # --- sending ------------------------------------------------------------------------
    def action_send(self) -> None:
        if self.sending:
            return
        if self.account.submit is None:
            self.app.notify(f"Account {self.account.name} has no [smtp] server", severity="error")
            return
        valid = all(self.mark_addresses_final(n) for n in ADDRESS_FIELDS)
        if not valid:
            self.app.notify("Fix the addresses marked in red first", severity="error")
            return
        draft = self.current_draft()
        try:
            composed = mc.build_message(draft)
        except mc.ComposeError as e:
            self.app.notify(str(e), severity="error")
            target = self.query(f"#{e.field}")
            if target:
                target.first().focus()
            return
        self.sending = True
        self.query_one("#progress", Static).update(
            as_text(f"Sending to {', '.join(composed.recipients)}…", limit=2000))
        self.submit(composed, draft.subject)

    def mark_addresses_final(self, name: str) -> bool:
        self.sending = True
        try:
            return self.mark_addresses(name)
        finally:
            self.sending = False

    @work(thread=True, exclusive=True, group="send", exit_on_error=False)
    def submit(self, composed: mc.Composed, subject: str) -> None:
        result = self.account.submit(composed.data, composed.sender, list(composed.recipients))
        self.post_message(MessageSent(self.account.name, subject, queued=not result.sent,
                                      detail=result.detail, failed=result.permanent_failure))
        if result.permanent_failure:
            return
        if self.saved_uid is not None:
            drafts = self._drafts_folder()
            self.account.store.expunge(drafts, [self.saved_uid])
        origin = self.origin or self._recalled_origin()
        if origin is not None:
            origin.store.set_flags(origin.real, [origin.uid], [origin.flag], add=True)
            main = getattr(self.app, "main_screen", None)
            if main is not None:
                main.post_message(FlagsChanged(self.account.name, origin.folder, (origin.uid,),
                                               origin.flag, True))

    def on_message_sent(self, event: MessageSent) -> None:
        self.sending = False
        if event.failed:
            self.query_one("#progress", Static).update(as_text(f"Not sent: {event.detail}", limit=2000))
            self.app.notify(f"Not sent — the server said: {event.detail}", severity="error", timeout=10)
            return
        self.sent = True
        if event.queued:
            self.app.notify(f"Waiting in the Outbox: {event.detail}", severity="warning", timeout=6)
        else:
            self.app.notify(f"Sent: {event.subject or '(no subject)'}", timeout=3)
        self.app.pop_screen()

    def worker_failed(self, worker, error) -> None:
        if worker.group == "send":
            self.sending = False
            self.query_one("#progress", Static).update(as_text(f"Not sent: {error}", limit=2000))

    # --- drafts -------------------------------------------------------------------------
    def _drafts_folder(self) -> str:
        return self.account.roles.get("drafts") or self.account.store.folder_for_role("drafts") or "Drafts"

    def action_save_draft(self) -> None:
        self.save_draft(self.current_draft(), quiet=False)

    def autosave(self) -> None:
        if self.dirty and not self.sending and not self.sent:
            self.save_draft(self.current_draft(), quiet=True)

    def save_draft(self, draft: mc.Draft, quiet: bool) -> None:
        main = getattr(self.app, "main_screen", None)
        if main is not None:        # the copy in Drafts is ours, not new mail
            main.expect_arrivals(self.account.name, self._drafts_folder(), 1)
        self._save_draft(draft, quiet)

    @work(thread=True, exclusive=True, group="draft", exit_on_error=False)
    def _save_draft(self, draft: mc.Draft, quiet: bool) -> None:
        data = mc.draft_to_bytes(draft)
        folder = self._drafts_folder()
        store = self.account.store
        uid = store.append(folder, data, flags=[SEEN, DRAFT])
        main = getattr(self.app, "main_screen", None)
        if uid is not None and main is not None:
            self.app.call_from_thread(main.arrived, self.account.name, folder, [uid])
        if self.saved_uid is not None:
            store.expunge(folder, [self.saved_uid])
        self.saved_uid = uid
        self.post_message(DraftSaved(self.account.name, folder) if not quiet else DraftSaved(self.account.name, ""))

    def on_draft_saved(self, event: DraftSaved) -> None:
        self.dirty = False
        if event.folder:                    # saved on purpose (Ctrl+D), not autosaved
            self.keep_draft = True
            self.app.notify(f"Draft saved in {event.folder}", timeout=2)

    def action_discard(self) -> None:
        box = self.query_one("#attach-path", Input)
        if box.display:
            box.display = False
            self.query_one(TextArea).focus()
            return
        if not self.dirty and (self.saved_uid is None or self.keep_draft):
            self.app.pop_screen()
            return

        def answer(yes: bool | None) -> None:
            if yes:
                if self.saved_uid is not None and not self.keep_draft:
                    self.drop_draft(self.saved_uid)
                self.app.pop_screen()

        question = ("Discard the changes? The draft stays in Drafts." if self.keep_draft
                    else "Discard this message?")
        self.app.push_screen(ConfirmScreen(question, yes="Discard"), answer)

    @work(thread=True, group="draft-drop", exit_on_error=False)
    def drop_draft(self, uid: int) -> None:
        self.account.store.expunge(self._drafts_folder(), [uid])
