"""LIST-EXTENDED (RFC 5258) with SPECIAL-USE selection (RFC 6154) and LIST-STATUS (RFC 5819):
parsing ``LIST [(selection)] ref (patterns) [RETURN (options)]`` and choosing which mailboxes
to answer with which attributes. Pure: folder names and subscriptions in, rows out; the session
writes them (and the STATUS lines LIST-STATUS asks for).

Choices where the RFC leaves room follow Dovecot: with SUBSCRIBED selection a subscribed name
that no longer exists is answered with ``\\NonExistent``; RECURSIVEMATCH answers a matching
mailbox with ``CHILDINFO ("SUBSCRIBED")`` when it has a subscribed descendant that no pattern
matches (one that is listed itself needs no hint); child attributes come with the CHILDREN
return option or when neither selection nor return options were given; STATUS items come in
Dovecot's order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from relay.imap.parser import Atom, ParseError, astring

SELECTION = ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE")
RETURNS = ("SUBSCRIBED", "CHILDREN", "STATUS", "SPECIAL-USE")
STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE")


@dataclass
class ListRequest:
    ref: str
    patterns: list[str]
    selection: set[str] = field(default_factory=set)
    returns: set[str] = field(default_factory=set)
    status: list[str] = field(default_factory=list)     # in Dovecot's order, not as asked
    has_return: bool = False


@dataclass
class ListRow:
    name: str
    attrs: list[str]
    childinfo: bool = False         # CHILDINFO ("SUBSCRIBED")
    selectable: bool = True


def is_extended(args: list) -> bool:
    """True when LIST arguments use RFC 5258 syntax (selection options, several patterns or
    RETURN); a plain ``LIST ref pattern`` is not."""
    return len(args) != 2 or any(isinstance(a, list) for a in args)


def parse(args: list, decode: Callable[[str], str]) -> ListRequest:
    """LIST arguments → ListRequest; ``decode`` turns a wire name (modified UTF-7) into text."""
    i = 0
    selection: set[str] = set()
    if args and isinstance(args[0], list):
        for t in args[0]:
            if not isinstance(t, Atom) or t.upper() not in SELECTION:
                raise ParseError("Unknown LIST selection option")
            selection.add(t.upper())
        if "RECURSIVEMATCH" in selection and not selection - {"RECURSIVEMATCH", "REMOTE"}:
            raise ParseError("RECURSIVEMATCH needs another selection option")
        i = 1
    if len(args) < i + 2:
        raise ParseError("LIST needs a reference and a mailbox pattern")
    ref = decode(astring(args[i]))
    pat = args[i + 1]
    pats = pat if isinstance(pat, list) else [pat]
    if not pats:
        raise ParseError("LIST needs a mailbox pattern")
    patterns = [decode(astring(p)) for p in pats]
    req = ListRequest(ref, patterns, selection)
    rest = args[i + 2:]
    if rest:
        if len(rest) != 2 or not isinstance(rest[0], Atom) or rest[0].upper() != "RETURN" \
                or not isinstance(rest[1], list):
            raise ParseError("Invalid LIST arguments")
        opts = rest[1]
        req.has_return = True
        k = 0
        while k < len(opts):
            t = opts[k]
            if not isinstance(t, Atom) or t.upper() not in RETURNS:
                raise ParseError("Unknown LIST return option")
            name = t.upper()
            if name == "STATUS":
                k += 1
                if k >= len(opts) or not isinstance(opts[k], list) or not opts[k]:
                    raise ParseError("STATUS needs a list of items")
                for it in opts[k]:
                    item = astring(it).upper()
                    if item not in STATUS_ITEMS:
                        raise ParseError(f"Unknown STATUS item {item[:20]}")
                    if item not in req.status:
                        req.status.append(item)
                req.status.sort(key=STATUS_ITEMS.index)
            req.returns.add(name)
            k += 1
    return req


def _parents(name: str, sep: str) -> Iterable[str]:
    parts = name.split(sep)
    for n in range(1, len(parts)):
        yield sep.join(parts[:n])


def select(req: ListRequest, folders: list, subscriptions: set[str], match_factory,
           sep: str) -> list[ListRow]:
    """Rows to answer. ``folders``: FolderInfo-like (name, special_use, selectable,
    has_children); ``match_factory(ref, pattern)`` gives an object with ``match(name)``."""
    matchers = [match_factory(req.ref, p) for p in req.patterns]

    def matches(name: str) -> bool:
        return any(m.match(name) for m in matchers)

    existing = {f.name: f for f in folders}
    # child attributes: asked for, or a LIST without selection and return options (Dovecot)
    want_children = "CHILDREN" in req.returns or (not req.selection and not req.has_return)
    want_subscribed = "SUBSCRIBED" in req.returns or "SUBSCRIBED" in req.selection
    rows: dict[str, ListRow] = {}

    def attrs_of(name: str) -> tuple[list[str], bool]:
        f = existing.get(name)
        attrs: list[str] = []          # in Dovecot's order
        if want_subscribed and name in subscriptions:
            attrs.append("\\Subscribed")
        if f is None:
            attrs.append("\\NonExistent")
        elif not f.selectable:
            attrs.append("\\Noselect")
        if want_children:
            kids = f.has_children if f is not None else any(n.startswith(name + sep) for n in existing)
            attrs.append("\\HasChildren" if kids else "\\HasNoChildren")
        if f is not None and f.special_use:
            attrs.append(f.special_use)
        return attrs, f is not None and f.selectable

    if "SUBSCRIBED" in req.selection:
        chosen = {n for n in subscriptions if matches(n)}
        if "SPECIAL-USE" in req.selection:
            chosen = {n for n in chosen if n in existing and existing[n].special_use}
        pool = set(subscriptions)
    elif "SPECIAL-USE" in req.selection:
        chosen = {n for n, f in existing.items() if f.special_use and matches(n)}
        pool = {n for n, f in existing.items() if f.special_use}
    else:
        chosen = {n for n in existing if matches(n)}
        pool = set()
    for n in chosen:
        attrs, sel = attrs_of(n)
        rows[n] = ListRow(n, attrs, selectable=sel)
    if "RECURSIVEMATCH" in req.selection:
        unlisted = [n for n in pool if not matches(n)]
        for n in unlisted:
            for p in _parents(n, sep):
                if not matches(p):
                    continue
                row = rows.get(p)
                if row is None:
                    attrs, sel = attrs_of(p)
                    row = rows[p] = ListRow(p, attrs, selectable=sel)
                row.childinfo = True
    order = sorted(rows, key=lambda n: (n != "INBOX", n))
    return [rows[n] for n in order]


__all__ = ["ListRequest", "ListRow", "STATUS_ITEMS", "is_extended", "parse", "select"]
