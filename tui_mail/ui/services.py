"""What the UI holds for one account: its MailStore, identity, and how to send.

The UI is handed ready ``Account`` objects (built in ``run.py`` from config via
``tui_mail.accounts``, or by tests from a Maildir/IMAP store), so screens never construct
stores themselves. ``submit`` is blocking (called from a thread worker): it must put the
message durably in the outbox first, then try to send, and say whether it went out or waits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tui_mail.store.base import MailStore


@dataclass(frozen=True)
class SubmitResult:
    sent: bool               # False: it waits in the Outbox (transient failure) or failed
    detail: str              # the server's reply or the reason it waits
    permanent_failure: bool = False


Submit = Callable[[bytes, str, list[str]], SubmitResult]
"""``submit(message_bytes, envelope_from, recipients)``; blocking; raises nothing but bugs."""


@dataclass
class Account:
    name: str
    store: MailStore
    address: str
    display_name: str = ""
    signature: str = ""
    submit: Submit | None = None
    outbox: MailStore | None = None          # a LocalStore; shown as the "Outbox" folder
    roles: dict[str, str] = field(default_factory=dict)   # role → folder name overrides

    @property
    def identity(self) -> str:
        if self.display_name:
            from email.headerregistry import Address
            local, _, domain = self.address.partition("@")
            try:
                return str(Address(self.display_name, local, domain))
            except (ValueError, IndexError):
                return f"{self.display_name} <{self.address}>"
        return self.address


OUTBOX = "Outbox"
