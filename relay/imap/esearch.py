"""ESEARCH (RFC 4731), ESORT and CONTEXT's PARTIAL (RFC 5267): the RETURN options a SEARCH or
SORT may carry, and the ``* ESEARCH`` response that answers them. Pure: numbers in, text out.

A result is the list of matching message numbers (or UIDs) in answer order: ascending for
SEARCH, sort order for SORT. MIN and MAX are its first and last element (RFC 5267 section 3.1:
for SORT, the first and last in sort order), ALL is the list as a sequence set whose ranges
follow that order, COUNT its length, PARTIAL ``a:b`` the a-th to b-th elements (1-based).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from relay.imap.parser import Atom, ParseError, format_uid_set

RETURN_OPTIONS = ("MIN", "MAX", "ALL", "COUNT", "SAVE", "PARTIAL", "UPDATE", "CONTEXT")


@dataclass
class ReturnOptions:
    options: list[str] = field(default_factory=list)   # upper case, in the order given
    partial: tuple[int, int] | None = None              # (low, high), 1-based, low <= high

    @property
    def update(self) -> bool:
        return "UPDATE" in self.options

    def wants(self, name: str) -> bool:
        return name in self.options


def parse_return(tokens: list) -> tuple[ReturnOptions | None, list]:
    """Split a leading ``RETURN (…)`` off SEARCH/SORT arguments: (options or None, the rest).
    ``RETURN ()`` means ALL (RFC 4731 section 3.1)."""
    if not tokens or not isinstance(tokens[0], Atom) or tokens[0].upper() != "RETURN":
        return None, tokens
    if len(tokens) < 2 or not isinstance(tokens[1], list):
        raise ParseError("RETURN needs a parenthesised list of options")
    opts = ReturnOptions()
    toks = tokens[1]
    i = 0
    while i < len(toks):
        t = toks[i]
        if not isinstance(t, Atom):
            raise ParseError("Invalid RETURN option")
        name = t.upper()
        if name not in RETURN_OPTIONS or name == "SAVE":
            raise ParseError(f"Unknown RETURN option {name[:20]}")
        if name == "PARTIAL":
            i += 1
            if i >= len(toks):
                raise ParseError("PARTIAL needs a range")
            opts.partial = parse_partial(toks[i])
        if name not in opts.options:
            opts.options.append(name)
        i += 1
    if not opts.options:
        opts.options.append("ALL")
    return opts, tokens[2:]


def parse_partial(tok) -> tuple[int, int]:
    """``2:4`` (or ``4:2``) → (2, 4). Both ends are required non-zero numbers."""
    text = str(tok) if isinstance(tok, Atom) else ""
    lo, sep, hi = text.partition(":")
    if not sep or not lo.isdigit() or not hi.isdigit() or not lo.isascii() or not hi.isascii():
        raise ParseError("PARTIAL needs a range like 1:100")
    a, b = int(lo), int(hi)
    if a == 0 or b == 0 or a > 0xFFFFFFFF or b > 0xFFFFFFFF:
        raise ParseError("PARTIAL range must be non-zero")
    return (a, b) if a <= b else (b, a)


def encode(tag: str, uid: bool, result: Sequence[int], opts: ReturnOptions,
           modseq: int | None = None) -> str:
    """The ``ESEARCH …`` response text (without ``* ``). ``modseq`` is appended when given
    (CONDSTORE: the caller picks it per RFC 7162 section 3.1.5)."""
    out = ['ESEARCH (TAG "' + tag.replace("\\", "\\\\").replace('"', '\\"') + '")']
    if uid:
        out.append("UID")
    for name in ("MIN", "MAX", "ALL", "PARTIAL", "COUNT"):     # Dovecot's order, whatever was asked
        if name not in opts.options:
            continue
        if name == "MIN" and result:
            out.append(f"MIN {result[0]}")
        elif name == "MAX" and result:
            out.append(f"MAX {result[-1]}")
        elif name == "ALL" and result:
            out.append("ALL " + format_uid_set(result))
        elif name == "COUNT":
            out.append(f"COUNT {len(result)}")
        elif name == "PARTIAL" and opts.partial is not None:
            lo, hi = opts.partial
            part = result[lo - 1:hi]
            out.append(f"PARTIAL ({lo}:{hi} {format_uid_set(part) if part else 'NIL'})")
    if modseq is not None and result:
        out.append(f"MODSEQ {modseq}")
    return " ".join(out)


def result_modseq(result: Sequence[int], modseqs: dict[int, int], opts: ReturnOptions) -> int | None:
    """RFC 7162 section 3.1.5 with RFC 4731: MIN/MAX alone report the mod-sequence of the
    message(s) they return; otherwise the highest over all matches."""
    if not result:
        return None
    only = {o for o in opts.options if o in ("MIN", "MAX", "ALL", "COUNT", "PARTIAL")}
    if only and only <= {"MIN", "MAX"}:
        picked = ([result[0]] if "MIN" in only else []) + ([result[-1]] if "MAX" in only else [])
        return max(modseqs.get(n, 0) for n in picked)
    return max(modseqs.get(n, 0) for n in result)


@dataclass
class LiveResult:
    """A SEARCH/SORT RETURN (UPDATE) result the session keeps current (RFC 5267 section 4)."""

    keys: list
    uid: bool
    criteria: list | None           # sort criteria, None for SEARCH
    result: list[int]               # UIDs, in answer order


MAX_LIVE = 16       # more UPDATE contexts per session are answered with NOUPDATE


def context_updates(old: Sequence[int], new: Sequence[int], ordered: bool
                    ) -> list[tuple[str, int, list[int]]]:
    """RFC 5267 section 4.4: how a live result changed, as ("REMOVEFROM" | "ADDTO", position,
    items) steps a client applies in order. For SEARCH (``ordered`` False) the position is 0
    and one step of each kind carries everything; for SORT each step is one run of adjacent
    messages at its 1-based position: removals from the end first (earlier positions stay
    valid), then additions in ascending position (each lands where the final order has it)."""
    new_set, old_set = set(new), set(old)
    gone = [x for x in old if x not in new_set]
    added = [x for x in new if x not in old_set]
    steps: list[tuple[str, int, list[int]]] = []
    if not ordered:
        if gone:
            steps.append(("REMOVEFROM", 0, sorted(gone)))
        if added:
            steps.append(("ADDTO", 0, sorted(added)))
        return steps
    gone_set = set(gone)
    runs: list[tuple[int, list[int]]] = []
    for i, x in enumerate(old):
        if x in gone_set:
            if runs and runs[-1][0] + len(runs[-1][1]) == i + 1:
                runs[-1][1].append(x)
            else:
                runs.append((i + 1, [x]))
    for pos, items in reversed(runs):
        steps.append(("REMOVEFROM", pos, items))
    added_set = set(added)
    runs = []
    for i, x in enumerate(new):
        if x in added_set:
            if runs and runs[-1][0] + len(runs[-1][1]) == i + 1:
                runs[-1][1].append(x)
            else:
                runs.append((i + 1, [x]))
    for pos, items in runs:
        steps.append(("ADDTO", pos, items))
    return steps


def encode_update(tag: str, uid: bool, kind: str, pos: int, items: Sequence[int]) -> str:
    """``ESEARCH (TAG "t") [UID] ADDTO (pos set)`` (or REMOVEFROM)."""
    t = tag.replace("\\", "\\\\").replace('"', '\\"')
    return f'ESEARCH (TAG "{t}")' + (" UID" if uid else "") + f" {kind} ({pos} {format_uid_set(items)})"


__all__ = ["LiveResult", "MAX_LIVE", "ReturnOptions", "context_updates", "encode", "encode_update", "parse_partial",
           "parse_return", "result_modseq"]
