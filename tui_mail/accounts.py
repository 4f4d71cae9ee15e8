"""From an account's configuration to working parts: its MailStore, submitter, outbox and the
``Account`` the UI holds. The one place that knows where an account's local data lives.

Per account, under the data dir (``$TUI_MAIL_DATA``, else ``$XDG_DATA_HOME/tui-mail``):
``accounts/<name>/mail`` (the POP3 account's Maildir) and ``accounts/<name>/outbox`` (the
Outbox Maildir with its state). The account's config is read by attribute (``name``,
``address``, ``display_name``, ``signature``, ``imap``/``pop3``/``smtp`` each with ``host``,
``port``, ``security``, ``user``; optional ``pop3.mode``/``pop3.leave_days``, ``cafile``,
``roles``), so the frozen dataclasses of tui_mail.config plug in directly.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tui_mail.config import cache_dir, data_dir
from tui_mail.errors import MailError, SendError
from tui_mail.send.outbox import Outbox
from tui_mail.send.smtp import SmtpSettings, SmtpSubmitter
from tui_mail.store.base import SEEN, MailStore, TraceSink
from tui_mail.store.local import LocalStore

if TYPE_CHECKING:
    from tui_mail.store.pop3 import Pop3Settings, Pop3Store

PasswordFor = Callable[[object, str], str | None]
"""``password_for(account, "imap"|"pop3"|"smtp")`` → the password (or None: no login)."""

DEFAULT_PORTS = {("imap", "tls"): 993, ("imap", "starttls"): 143, ("imap", "none"): 143,
                 ("pop3", "tls"): 995, ("pop3", "starttls"): 110, ("pop3", "none"): 110,
                 ("smtp", "tls"): 465, ("smtp", "starttls"): 587, ("smtp", "none"): 25}


def account_dir(name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "account"
    return data_dir() / "accounts" / safe


def _server_port(kind: str, server) -> int:
    port = getattr(server, "port", None)
    return int(port) if port else DEFAULT_PORTS[(kind, getattr(server, "security", "tls"))]


def _with_limits(settings, server):
    """``settings`` with the server's hostile-server limits from config.toml (login_deadline,
    command_deadline, max_literal_mb) for the fields the settings class has."""
    import dataclasses

    values = {"login_deadline": getattr(server, "login_deadline", None),
              "command_deadline": getattr(server, "command_deadline", None),
              "max_message_bytes": (getattr(server, "max_literal_mb", None) or 0) * 1024 * 1024 or None}
    names = {f.name for f in dataclasses.fields(settings)}
    return dataclasses.replace(settings, **{k: v for k, v in values.items() if k in names and v})


def smtp_settings(account, password) -> SmtpSettings:
    return _with_limits(_smtp_settings(account, password), account.smtp)


def _smtp_settings(account, password) -> SmtpSettings:
    s = account.smtp
    if s is None:
        raise MailError(f"Account {account.name!r} has no [smtp] server, so it cannot send.")
    oauth = getattr(s, "auth", "password") == "oauth2"
    return SmtpSettings(host=s.host, port=_server_port("smtp", s), security=s.security,
                        user=getattr(s, "user", None) or (account.address if oauth else None), password=password,
                        cafile=getattr(s, "cafile", None), tls_fingerprint=getattr(s, "tls_fingerprint", None),
                        tls_verify=getattr(s, "tls_verify", True), oauth2=oauth2_for(account, s))


def pop3_settings(account, password) -> Pop3Settings:
    return _with_limits(_pop3_settings(account, password), account.pop3)


def _pop3_settings(account, password) -> Pop3Settings:
    from tui_mail.store.pop3 import Pop3Settings    # POP3 accounts only (poplib, the guards)

    p = account.pop3
    return Pop3Settings(host=p.host, port=_server_port("pop3", p), security=p.security,
                        user=getattr(p, "user", None) or account.address, password=password,
                        mode=getattr(p, "mode", "keep") or "keep",
                        leave_days=int(getattr(p, "leave_days", 14) or 14),
                        cafile=getattr(p, "cafile", None), tls_fingerprint=getattr(p, "tls_fingerprint", None),
                        tls_verify=getattr(p, "tls_verify", True), oauth2=oauth2_for(account, p))


def local_store(account, password_for: PasswordFor) -> Pop3Store:
    """The POP3 account's store (its local Maildir + sync); the password is looked up only
    when the server is contacted."""
    from tui_mail.store.pop3 import Pop3Store

    settings = pop3_settings(account, lambda: password_for(account, "pop3"))
    store = Pop3Store(account_dir(account.name) / "mail", settings,
                      roles=dict(getattr(account, "roles", None) or {}))
    return store


def imap_store(account, password):
    """``_imap_store`` with the server's hostile-server limits from config.toml."""
    store = _imap_store(account, password)
    s = account.imap
    store.login_deadline = getattr(s, "login_deadline", None) or store.login_deadline
    store.command_deadline = getattr(s, "command_deadline", None) or store.command_deadline
    store.max_literal = (getattr(s, "max_literal_mb", None) or 0) * 1024 * 1024 or store.max_literal
    return store


def _imap_store(account, password):
    """The IMAP account's store (tui_mail.store.imap) with its header cache on disk."""
    from tui_mail.store.cache import HeaderCache
    from tui_mail.store.imap import ImapStore

    s = account.imap
    safe = account_dir(account.name).name
    cache = HeaderCache(cache_dir() / f"{safe}.sqlite")
    store = ImapStore(account.name, s.host, _server_port("imap", s), getattr(s, "user", None) or account.address,
                      password or "", security=s.security, cache=cache, ssl_context=None,
                      roles=dict(getattr(account, "roles", None) or {}), oauth2=oauth2_for(account, s))
    if s.security != "none":
        from tui_mail.tls import for_server

        store.ssl_context = for_server(s, "imap", port=_server_port("imap", s),
                                       on_insecure=lambda text: trace_warning(text, store.trace))
    return store


def oauth2_for(account, server):
    """The token source of a server with ``auth = "oauth2"`` (tui_mail.oauth2), else None."""
    if getattr(server, "auth", "password") != "oauth2":
        return None
    from tui_mail.oauth2 import token_source_for

    return token_source_for(account, server)


def trace_warning(text: str, trace: TraceSink | None = None) -> None:
    """A TLS warning (tls_verify = false): to the log, and into the protocol trace."""
    from tui_mail.tls import log

    log.warning("%s", text)
    if trace is not None:
        trace("C", f"(warning: {text})")


def open_outbox(account, submitter: SmtpSubmitter, sent_copy: Callable[[bytes], None] | None) -> Outbox:
    async def send(data: bytes, before_mail=None):
        return await submitter.send(data, before_mail=before_mail)

    return Outbox(account_dir(account.name) / "outbox", send=send, sent_copy=sent_copy).open()


def sent_copy_to(store: MailStore, fallback: str = "Sent") -> Callable[[bytes], None]:
    """File a sent message in the store's Sent folder (by role, else ``fallback``, created for a
    local store when missing), marked \\Seen."""
    def copy(data: bytes) -> None:
        folder = store.folder_for_role("sent") or fallback
        if isinstance(store, LocalStore):
            store.ensure_folder(folder)
        store.append(folder, data, flags=[SEEN])

    return copy


def submit_via(outbox: Outbox):
    """A blocking ``submit(data, envelope_from, recipients)`` for the UI (thread workers):
    durably queue, try at once (sending anything else that is due too), report whether it went
    out or waits. ``submit.flush(now=False)`` sends what is due (``now``: everything queued,
    ignoring backoff) and returns the outcomes: call it periodically or on "send now"."""
    from tui_mail.ui.services import SubmitResult

    def submit(data: bytes, envelope_from: str, recipients: list[str]) -> SubmitResult:
        try:
            key = outbox.enqueue(data, recipients=list(recipients))
        except SendError as e:
            return SubmitResult(False, str(e), permanent_failure=True)
        except MailError as e:
            return SubmitResult(False, f"Could not store the message in the outbox: {e}")
        outcomes = {o.key: o for o in asyncio.run(outbox.process())}
        o = outcomes.get(key)
        if o is None:
            return SubmitResult(False, "Queued in the Outbox; another tui-mail is sending it.")
        if o.state == "filed":
            return SubmitResult(True, o.detail)
        if o.state == "sent":
            return SubmitResult(True, f"Sent; the copy to Sent will be retried ({o.detail})")
        if o.state == "failed":
            return SubmitResult(False, o.detail, permanent_failure=True)
        return SubmitResult(False, f"Waiting in the Outbox, will retry: {o.detail}")

    def flush(now: bool = False):
        if now:
            outbox.wake()
        return asyncio.run(outbox.process())

    submit.flush = flush
    submit.outbox = outbox
    return submit


def open_account(account, password_for: PasswordFor, imap_store_factory=None,
                 trace: TraceSink | None = None):
    """The UI's ``Account`` for one configured account (store not yet connected).

    ``imap_store_factory(account, password)`` builds the IMAP store (default ``imap_store``);
    POP3 accounts get a Pop3Store here."""
    from tui_mail.ui.services import Account

    if getattr(account, "pop3", None) is not None:
        store: MailStore = local_store(account, password_for)
    elif getattr(account, "imap", None) is not None:
        if imap_store_factory is None:  # ImapStore asks for the password when it logs in
            store = imap_store(account, lambda: password_for(account, "imap"))
        else:
            store = imap_store_factory(account, password_for(account, "imap"))
    else:
        raise MailError(f"Account {account.name!r} has neither [imap] nor [pop3].")
    store.trace = trace
    submit = outbox_store = None
    if getattr(account, "smtp", None) is not None:
        def smtp_pw() -> str | None:
            return password_for(account, "smtp")

        submitter = SmtpSubmitter(smtp_settings(account, smtp_pw if getattr(account.smtp, "user", None)
                                                else None), trace=trace)
        outbox = open_outbox(account, submitter, sent_copy_to(store))
        submit, outbox_store = submit_via(outbox), outbox.store
    return Account(name=account.name, store=store, address=account.address,
                   display_name=getattr(account, "display_name", "") or "",
                   signature=getattr(account, "signature", "") or "", submit=submit,
                   outbox=outbox_store, roles=dict(getattr(account, "roles", None) or {}))
