"""The UI's virtual folders (tui_mail.store.virtual) as accounts the main screen can show:

- ``unified_inbox``: "All inboxes", every account's INBOX sorted together by date; added to the
  folder tree when two or more accounts are configured. Open, reply (from the account the
  message came to), move, delete, flag and undo act on the message's own account. A new
  message written from here goes out from the first account.
- ``all_folders_view``: the results of a search with ``in:all`` — every folder of one account.
"""

from __future__ import annotations

import re

from tui_mail.store.virtual import ROLE_NAMES, Source, VirtualStore
from tui_mail.ui.services import Account

UNIFIED = "All inboxes"
_SCOPE = re.compile(r"(?<!\S)in:all(?!\S)", re.I)
_VIRTUAL_ROLES = {role: name for name, role in ROLE_NAMES.items()}


def split_scope(query: str) -> tuple[bool, str]:
    """(search every folder?, the query without ``in:all``)."""
    rest, n = _SCOPE.subn(" ", query)
    return bool(n), " ".join(rest.split())


def unified_inbox(accounts: list[Account]) -> Account:
    sources = []
    for account in accounts:
        inbox = account.roles.get("inbox") or account.store.folder_for_role("inbox") or "INBOX"
        sources.append(Source(account.name, account.store, inbox))
    store = VirtualStore(UNIFIED, sources, role="inbox")
    first = accounts[0]
    sender = next((a for a in accounts if a.submit is not None), None)
    submit = None
    if sender is not None:
        def submit(data, envelope_from, recipients, _send=sender.submit):   # no .flush: the
            return _send(data, envelope_from, recipients)                    # account retries
    return Account(UNIFIED, store, first.address, first.display_name, first.signature,
                   submit=submit, outbox=None, roles=dict(_VIRTUAL_ROLES))


def all_folders_view(account: Account, folders: list[str]) -> Account:
    name = f"{account.name}: all folders"
    store = VirtualStore(name, [Source(account.name, account.store, f) for f in folders], role="search")
    return Account(name, store, account.address, account.display_name, account.signature,
                   submit=account.submit, outbox=None, roles=dict(_VIRTUAL_ROLES))
