"""NOTIFY (RFC 5465): the ``NOTIFY SET [STATUS] (filter (events))…`` / ``NOTIFY NONE`` grammar
and which events a mailbox gets, plus which STATUS items report them. Pure: the session keeps
the last status it told per mailbox and the server glue wakes it on store changes (the relay's
ChangeBus), so notifications go out between commands without polling.

Supported events: MessageNew (with optional FETCH attributes for the selected mailbox),
MessageExpunge, FlagChange, MailboxName, SubscriptionChange. Annotation and metadata events are
refused with NO [BADEVENT], as RFC 5465 section 3 asks for events a server cannot report.
Filters: SELECTED, SELECTED-DELAYED, INBOXES, PERSONAL, SUBSCRIBED, SUBTREE, MAILBOXES; for a
mailbox several filters match, the first one in the command decides (SELECTED first for the
selected mailbox).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from relay.imap.parser import Atom, ParseError

EVENTS = ("MESSAGENEW", "MESSAGEEXPUNGE", "FLAGCHANGE", "MAILBOXNAME", "SUBSCRIPTIONCHANGE")
UNSUPPORTED = ("ANNOTATIONCHANGE", "MAILBOXMETADATACHANGE", "SERVERMETADATACHANGE")
FILTERS = ("SELECTED", "SELECTED-DELAYED", "INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE", "MAILBOXES")


class BadEvent(Exception):
    """An event this server does not report (answer NO [BADEVENT (…)])."""


@dataclass
class Group:
    filter: str                              # one of FILTERS
    mailboxes: list[str] = field(default_factory=list)    # for SUBTREE / MAILBOXES
    events: set[str] = field(default_factory=set)         # upper case; empty = NONE
    fetch: list | None = None                # MessageNew's FETCH attributes (raw tokens)


@dataclass
class NotifySpec:
    status: bool = False
    groups: list[Group] = field(default_factory=list)

    def selected_group(self) -> Group | None:
        for g in self.groups:
            if g.filter in ("SELECTED", "SELECTED-DELAYED"):
                return g
        return None

    def wants_names(self) -> bool:
        return any("MAILBOXNAME" in g.events for g in self.groups)

    def wants_subscriptions(self) -> bool:
        return any("SUBSCRIPTIONCHANGE" in g.events for g in self.groups)


def parse(args: list, decode: Callable[[object], str]) -> NotifySpec | None:
    """NOTIFY arguments → spec, or None for ``NOTIFY NONE``. ``decode`` turns a mailbox
    token into its name."""
    if not args or not isinstance(args[0], Atom):
        raise ParseError("NOTIFY needs SET or NONE")
    verb = args[0].upper()
    if verb == "NONE":
        if len(args) != 1:
            raise ParseError("NOTIFY NONE takes no arguments")
        return None
    if verb != "SET":
        raise ParseError("NOTIFY needs SET or NONE")
    spec = NotifySpec()
    rest = args[1:]
    if rest and isinstance(rest[0], Atom) and rest[0].upper() == "STATUS":
        spec.status = True
        rest = rest[1:]
    if not rest:
        raise ParseError("NOTIFY SET needs at least one event group")
    bad: list[str] = []
    for grp in rest:
        if not isinstance(grp, list) or len(grp) < 2:
            raise ParseError("Invalid NOTIFY event group")
        if not isinstance(grp[0], Atom) or grp[0].upper() not in FILTERS:
            raise ParseError("Unknown NOTIFY filter")
        g = Group(grp[0].upper())
        i = 1
        if g.filter in ("SUBTREE", "MAILBOXES"):
            boxes = grp[1] if isinstance(grp[1], list) else [grp[1]]
            if not boxes:
                raise ParseError("NOTIFY filter needs mailboxes")
            g.mailboxes = [decode(b) for b in boxes]
            i = 2
        if i >= len(grp):
            raise ParseError("NOTIFY filter needs events")
        ev = grp[i]
        if isinstance(ev, Atom) and ev.upper() == "NONE":
            pass
        elif isinstance(ev, list) and ev:
            k = 0
            while k < len(ev):
                if not isinstance(ev[k], Atom):
                    raise ParseError("Invalid NOTIFY event")
                name = ev[k].upper()
                if name in UNSUPPORTED:
                    bad.append(str(ev[k]))
                elif name not in EVENTS:
                    raise ParseError(f"Unknown NOTIFY event {name[:30]}")
                g.events.add(name)
                if name == "MESSAGENEW" and k + 1 < len(ev) and isinstance(ev[k + 1], list):
                    if g.filter not in ("SELECTED", "SELECTED-DELAYED"):
                        raise ParseError("FETCH attributes are only for the selected mailbox")
                    g.fetch = ev[k + 1]
                    k += 1
                k += 1
        else:
            raise ParseError("Invalid NOTIFY events")
        if i + 1 != len(grp):
            raise ParseError("Invalid NOTIFY event group")
        spec.groups.append(g)
    if bad:
        raise BadEvent(" ".join(bad))
    return spec


def events_for(spec: NotifySpec, name: str, *, selected: bool, subscribed: bool,
               sep: str = "/") -> set[str]:
    """The events ``spec`` asks for on mailbox ``name`` (the first matching filter wins)."""
    for g in spec.groups:
        f = g.filter
        if f in ("SELECTED", "SELECTED-DELAYED"):
            hit = selected
        elif f == "INBOXES":
            hit = name == "INBOX"
        elif f == "PERSONAL":
            hit = True
        elif f == "SUBSCRIBED":
            hit = subscribed
        elif f == "MAILBOXES":
            hit = name in g.mailboxes
        else:   # SUBTREE
            hit = any(name == m or name.startswith(m + sep) for m in g.mailboxes)
        if hit:
            return g.events
    return set()


_ORDER = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ")


def status_items(events: set[str], condstore: bool = True, *, initial: bool = True) -> list[str]:
    """STATUS items for a mailbox that is not selected (RFC 5465 5.2), as Dovecot picks them.
    The first STATUS (NOTIFY SET STATUS): MessageNew → MESSAGES UIDNEXT UIDVALIDITY,
    MessageExpunge → MESSAGES, FlagChange → UIDVALIDITY UNSEEN HIGHESTMODSEQ. Later changes:
    MESSAGES UIDNEXT UIDVALIDITY UNSEEN, and HIGHESTMODSEQ with CONDSTORE on."""
    want: set[str] = set()
    if initial:
        if "MESSAGENEW" in events:
            want |= {"MESSAGES", "UIDNEXT", "UIDVALIDITY"}
        if "MESSAGEEXPUNGE" in events:
            want.add("MESSAGES")
        if "FLAGCHANGE" in events:
            want |= {"UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ"}
    elif events & {"MESSAGENEW", "MESSAGEEXPUNGE", "FLAGCHANGE"}:
        # what Dovecot 2.3 sends on every change it reports (its list index reports the
        # mailbox's whole state), whichever message event it was
        want |= {"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN"}
        if condstore:
            want.add("HIGHESTMODSEQ")
    return [k for k in _ORDER if k in want]


__all__ = ["BadEvent", "Group", "NotifySpec", "events_for", "parse", "status_items"]
