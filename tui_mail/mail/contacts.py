"""Contacts for address completion: ranking what mail says, reading vCards and the output of an
address-book command. Pure: no files, no processes (tui_mail.address_book does the I/O).

Ranking ("frecency", as Firefox and notmuch-address rank): every message counts for the
addresses on it, weighted by who wrote it — a person you wrote to (To/Cc of your sent mail)
counts ``SENT_WEIGHT`` times a sender who wrote to you — and by age, halving every
``HALF_LIFE_DAYS``. So the people you write to often and lately come first.

vCards are parsed by ``vobject`` (FN and every EMAIL); the command's output follows aerc's
``address-book-cmd`` convention: one contact per line, ``address<TAB>name`` (name optional,
further tab-separated fields ignored), which khard, abook and ``notmuch address`` print.
Everything here comes from mail or other programs, so it is bounded and control characters
are dropped before anything is shown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import getaddresses, parseaddr

SENT_WEIGHT = 3.0
HALF_LIFE_DAYS = 90.0
MAX_FIELD = 200                  # characters kept of a name or an address
MAX_LINES = 5000                 # lines read from a command's output
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$")


@dataclass(frozen=True)
class Contact:
    address: str
    name: str = ""
    score: float = 0.0
    source: str = "mail"          # mail | vcard | command

    @property
    def entry(self) -> str:
        """What the composer inserts: ``Name <address>`` or the bare address."""
        if not self.name or self.name.lower() == self.address.lower():
            return self.address
        name = self.name
        if re.search(r'[,;:<>@"()\[\]\\]', name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{self.address}>"


def clean(text: str | None, limit: int = MAX_FIELD) -> str:
    """One line of text from a stranger: controls and bidi overrides dropped, bounded."""
    return _CONTROLS.sub("", text or "").strip()[:limit]


def valid_address(address: str) -> bool:
    return bool(_ADDRESS.match(address)) and len(address) <= 254


@dataclass(frozen=True)
class Seen:
    """One address on one message: ``sent`` when it is a recipient of mail we sent."""

    address: str
    name: str
    when: float | None            # unix seconds
    sent: bool


def observations(from_name: str, from_addr: str, to: str, cc: str, when: float | None,
                 sent: bool) -> list[Seen]:
    """The addresses one message tells us about: its recipients when we sent it, else its sender."""
    if sent:
        return [Seen(addr, name, when, True) for name, addr in getaddresses([to or "", cc or ""]) if addr]
    if not from_addr:
        name, from_addr = parseaddr(from_name or "")
    return [Seen(from_addr, from_name if from_name != from_addr else "", when, False)] if from_addr else []


def rank(seen: Iterable[Seen], now: float, own: Iterable[str] = ()) -> list[Contact]:
    """Contacts by score, best first; one per address (case-insensitive), named by the most
    recent name seen; our own addresses left out."""
    mine = {a.lower() for a in own}
    best: dict[str, list] = {}          # key → [score, address, name, name_when]
    decay = math.log(2) / (HALF_LIFE_DAYS * 86400)
    for s in seen:
        address = clean(s.address)
        key = address.lower()
        if not valid_address(address) or key in mine:
            continue
        age = max(0.0, now - s.when) if s.when is not None else HALF_LIFE_DAYS * 86400 * 4
        weight = (SENT_WEIGHT if s.sent else 1.0) * math.exp(-decay * age)
        slot = best.get(key)
        if slot is None:
            slot = best[key] = [0.0, address, "", float("-inf")]
        slot[0] += weight
        name = clean(s.name)
        when = s.when if s.when is not None else float("-inf")
        if name and name.lower() != key and when >= slot[3]:
            slot[2], slot[3] = name, when
    out = [Contact(addr, name, round(score, 6)) for score, addr, name, _ in best.values()]
    out.sort(key=lambda c: (-c.score, c.address.lower()))
    return out


def matches(contacts: Iterable[Contact], query: str, limit: int = 20) -> list[Contact]:
    """Contacts whose address, name or a word of the name starts with ``query``, in order."""
    q = query.strip().lower()
    if not q:
        return []
    out = []
    for c in contacts:
        name = c.name.lower()
        if (c.address.lower().startswith(q) or name.startswith(q)
                or any(w.startswith(q) for w in re.split(r"[\s.,_-]+", name) if w)):
            out.append(c)
            if len(out) >= limit:
                break
    return out


def parse_command_output(text: str, limit: int = MAX_LINES) -> list[Contact]:
    """aerc's convention: ``address<TAB>name`` per line; lines without an address are skipped."""
    out: list[Contact] = []
    for line in text.splitlines()[:limit]:
        fields = line.split("\t")
        address = fields[0].strip()
        if _CONTROLS.search(address) or not valid_address(address):   # never a cleaned-up guess
            continue
        name = clean(fields[1]) if len(fields) > 1 else ""
        out.append(Contact(address, name, 0.0, "command"))
    return out


def parse_vcards(text: str) -> list[Contact]:
    """Every EMAIL of every vCard in ``text`` (FN as the name). A card that does not parse is
    skipped, never an error: a contacts folder is other programs' files."""
    import vobject  # here: only a user with address_book_dir pays its import

    out: list[Contact] = []
    try:
        cards = list(vobject.readComponents(text, ignoreUnreadable=True))
    except Exception:          # noqa: BLE001 - vobject raises many kinds on broken input
        return out
    for card in cards:
        if getattr(card, "name", "").upper() != "VCARD":
            continue
        try:
            name = clean(card.fn.value) if hasattr(card, "fn") else ""
            emails = [clean(str(e.value)) for e in card.contents.get("email", [])]
        except Exception:      # noqa: BLE001
            continue
        for address in emails:
            if valid_address(address):
                out.append(Contact(address, name, 0.0, "vcard"))
    return out
