"""QRESYNC (RFC 7162 section 3.2): the SELECT/EXAMINE ``(QRESYNC (…))`` parameter and the
``(CHANGEDSINCE n VANISHED)`` FETCH modifier. Pure parsing; the session answers with
``VANISHED (EARLIER)`` and FETCH lines from the store's change log (its ``expunged`` table and
per-message MODSEQs), so a resync costs O(changes), not O(mailbox).

The optional sequence-match data of SELECT is accepted and not used: it only lets a server
send fewer VANISHED UIDs, and sending all UIDs expunged since the client's MODSEQ (within its
known-uids) is always correct.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from relay.imap.parser import Atom, ParseError, SequenceSet, astring, number


@dataclass(frozen=True)
class SelectQresync:
    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None


def parse_select_params(params: list, enabled: bool) -> SelectQresync | None:
    """SELECT parameters: ``CONDSTORE`` and/or ``QRESYNC (uidvalidity modseq [known-uids
    [(seq-match)]])``. Returns the QRESYNC data or None. QRESYNC before ``ENABLE QRESYNC`` is
    a protocol error (RFC 7162 3.2.5)."""
    out = None
    i = 0
    while i < len(params):
        p = params[i]
        name = astring(p).upper() if isinstance(p, (Atom, bytes)) else ""
        if name == "CONDSTORE":
            i += 1
            continue
        if name != "QRESYNC":
            raise ParseError("Unknown SELECT parameter")
        if not enabled:
            raise ParseError("QRESYNC must be enabled first (ENABLE QRESYNC)")
        if i + 1 >= len(params) or not isinstance(params[i + 1], list):
            raise ParseError("QRESYNC needs (uidvalidity modseq [known-uids])")
        q = params[i + 1]
        if len(q) < 2 or len(q) > 4:
            raise ParseError("QRESYNC needs (uidvalidity modseq [known-uids])")
        uidvalidity, modseq = number(q[0], nz=True), number(q[1])
        known = None
        rest = q[2:]
        if rest and isinstance(rest[0], Atom):
            known = SequenceSet.parse(str(rest[0]))
            if any(a is None or b is None for a, b in known.ranges):
                raise ParseError("known-uids must not use *")
            rest = rest[1:]
        if rest and not isinstance(rest[0], list):
            raise ParseError("Invalid QRESYNC sequence match data")
        out = SelectQresync(uidvalidity, modseq, known)
        i += 2
    return out


def parse_fetch_modifiers(mods, uid_mode: bool, qresync: bool) -> tuple[int, bool]:
    """``(CHANGEDSINCE n [VANISHED])`` → (n, vanished). VANISHED needs UID FETCH and QRESYNC
    enabled (RFC 7162 3.2.6)."""
    if not isinstance(mods, list) or not mods:
        raise ParseError("Unknown FETCH modifier")
    changedsince = None
    vanished = False
    i = 0
    while i < len(mods):
        name = astring(mods[i]).upper() if isinstance(mods[i], Atom) else ""
        if name == "CHANGEDSINCE" and i + 1 < len(mods) and changedsince is None:
            changedsince = number(mods[i + 1])
            i += 2
        elif name == "VANISHED" and not vanished:
            vanished = True
            i += 1
        else:
            raise ParseError("Unknown FETCH modifier")
    if changedsince is None:
        raise ParseError("VANISHED needs CHANGEDSINCE")
    if vanished and not (uid_mode and qresync):
        raise ParseError("VANISHED is valid only in UID FETCH with QRESYNC enabled")
    return changedsince, vanished


def filter_known(gone: Iterable[int], known: SequenceSet | None, largest: int) -> list[int]:
    """Expunged UIDs to report: all of them, or those in the client's known-uids."""
    gone = sorted(gone)
    if known is None:
        return gone
    top = max([largest] + gone) if gone else largest
    return [u for u in gone if known.contains_uid(u, top)]


__all__ = ["SelectQresync", "filter_known", "parse_fetch_modifiers", "parse_select_params"]
