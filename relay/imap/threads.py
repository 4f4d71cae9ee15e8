"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 sections 2.2 and 3): pure functions
from :class:`relay.imap.sortkeys.SortData` (Message-ID and In-Reply-To from the cached ENVELOPE,
References from the index) to a thread forest, and its wire form ``(1 2)(3 (4)(5))``.

Written out here because the relay must never import the client's tui_mail.mail.threading and
because the answer must match the RFC's algorithm step by step, with the choices Dovecot (the
oracle in tests) makes where the RFC leaves room: Message-IDs are the ``<left@right>`` tokens
(compared exactly, without the brackets); the parents of a message come from References when
it has any valid id there, else from In-Reply-To; a duplicate Message-ID keeps the first
message and gives the later one a fresh id; a conflicting parent link keeps the first one
except that a message's own References decide its parent; siblings are ordered by sent date
(INTERNALDATE when there is no usable Date:), then UID; a dummy node takes the date of its
oldest child; dummies are dropped except at the top level with two or more children.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence

from relay.imap.sortkeys import SortCache, SortData, base_subject


class Node:
    __slots__ = ("msg", "parent", "children")

    def __init__(self, msg: SortData | None = None) -> None:
        self.msg = msg
        self.parent: Node | None = None
        self.children: list[Node] = []


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Building 100,000 linked nodes would run the cyclic garbage collector dozens of times
    over the growing tree (most of THREAD's time); the tree is freed normally afterwards."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# ------------------------------------------------------------------------------ message ids
def _as_text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    return v


def message_ids(value) -> list[str]:
    """Every valid ``<id-left@id-right>`` in a header value, without brackets and whitespace;
    tokens without an ``@`` are skipped (as Dovecot's message_id_get_next)."""
    text = _as_text(value)
    out: list[str] = []
    i = 0
    n = len(text)
    while True:
        i = text.find("<", i)
        if i < 0:
            return out
        i += 1
        j = i
        while j < n and text[j] not in '>"([':
            j += 1
        if j >= n:
            return out
        if text[j] == ">":
            tok = text[i:j]
            if "@" in tok:
                out.append("".join(tok.split()))
            i = j + 1
            continue
        # quoted local part, comment or domain literal: a slower, stricter parse
        k = text.find(">", j)
        if k < 0:
            return out
        tok = text[i:k]
        left, at, right = tok.rpartition("@")
        if at:
            left = left.strip()
            if left.startswith('"') and left.endswith('"') and len(left) >= 2:
                left = left[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            right = right.strip()
            if left and right and "(" not in right and "[" not in right:
                out.append(left + "@" + right)
        i = k + 1


def first_message_id(value) -> str | None:
    ids = message_ids(value)
    return ids[0] if ids else None


# ------------------------------------------------------------------------------ ORDEREDSUBJECT
def _date_uid(m: SortData) -> tuple[float, int]:
    return (m.date, m.uid)


def _base(m: SortData, cache: SortCache | None) -> tuple[str, bool]:
    if cache is None:
        return base_subject(m.subject)
    return cache.memo("base", m, lambda x: base_subject(x.subject))


def ordered_subject(msgs: Sequence[SortData], cache: SortCache | None = None) -> list[Node]:
    """RFC 5256 ORDEREDSUBJECT: messages grouped by base subject; each group is the first
    message (by sent date) with the others as its children; groups in order of their first."""
    with _no_gc():
        return _ordered_subject(msgs, cache)


def _ordered_subject(msgs: Sequence[SortData], cache: SortCache | None) -> list[Node]:
    groups: dict[str, list[SortData]] = {}
    keyed = [(_base(m, cache)[0], m.date, m.uid, m) for m in msgs]
    keyed.sort(key=lambda t: (t[0], t[1], t[2]))
    for base, _date, _uid, m in keyed:
        groups.setdefault(base, []).append(m)
    roots = []
    for members in groups.values():
        root = Node(members[0])
        for m in members[1:]:
            child = Node(m)
            child.parent = root
            root.children.append(child)
        roots.append(root)
    roots.sort(key=lambda n: _date_uid(n.msg))
    return roots


# ------------------------------------------------------------------------------ REFERENCES
def _has_ancestor(node: Node, ancestor: Node) -> bool:
    while node is not None:
        if node is ancestor:
            return True
        node = node.parent
    return False


def _link(parent: Node, child: Node) -> None:
    """Make ``parent`` the parent of ``child`` unless that makes a loop or child has one."""
    if _has_ancestor(parent, child) or child.parent is parent:
        return
    if child.parent is None:
        child.parent = parent


def _sort_date(node: Node, cache: dict) -> tuple[float, int]:
    """A node's sort position: its message's (date, uid), or for a dummy its oldest child's."""
    if node.msg is not None:
        return _date_uid(node.msg)
    got = cache.get(id(node))
    if got is None:
        got = min((_sort_date(c, cache) for c in node.children), default=(0.0, 0))
        cache[id(node)] = got
    return got


def _ids(m: SortData) -> tuple[str | None, tuple[str, ...]]:
    """(own Message-ID, the ids that give its parents: References, else In-Reply-To)."""
    env = m.envelope or []
    mid = first_message_id(env[9] if len(env) > 9 else None)
    refs = message_ids(m.references)
    if not refs:
        irt = first_message_id(env[8] if len(env) > 8 else None)
        refs = [irt] if irt else []
    return mid, tuple(refs)


def references(msgs: Sequence[SortData], cache: SortCache | None = None) -> list[Node]:
    """RFC 5256 THREAD=REFERENCES over ``msgs`` (in UID order)."""
    with _no_gc():
        return _references(msgs, cache)


def _references(msgs: Sequence[SortData], cache: SortCache | None) -> list[Node]:
    table: dict[str, Node] = {}
    own: list[Node] = []
    for m in msgs:
        mid, refs = _ids(m) if cache is None else cache.memo("ids", m, _ids)
        node = table.get(mid) if mid is not None else None
        if node is None or node.msg is not None:     # new id, no id, or a duplicate
            node = Node(m)
            if mid is not None and mid not in table:
                table[mid] = node
        else:
            node.msg = m                              # a dummy created by an earlier reference
        own.append(node)
        prev: Node | None = None
        for r in refs:
            ref = table.get(r)
            if ref is None:
                ref = table[r] = Node()
            if prev is not None:
                _link(prev, ref)
            prev = ref
        # (1B) the last reference is this message's parent, replacing any earlier guess
        if node.parent is not None and node.parent is not prev:
            node.parent = None
        if prev is not None and prev is not node:
            _link(prev, node)
    # (2)+(3): attach every message to its nearest real ancestor; dummies only at the top
    roots: list[Node] = []
    nodes = list(dict.fromkeys(list(table.values()) + own))
    for n in nodes:
        n.children = []
    for n in nodes:
        if n.parent is None:
            roots.append(n)
            continue
        if n.msg is None:
            continue
        p = n.parent
        while p.msg is None and p.parent is not None:
            p = p.parent
        p.children.append(n)
    subjects, cache = cache, {}          # cache: sort positions of nodes (dummies)
    roots = [r for r in roots if r.msg is not None or r.children]
    for i, r in enumerate(roots):      # a top dummy with one child: the child is the root
        if r.msg is None and len(r.children) == 1:
            roots[i] = r.children[0]
    for r in roots:
        r.parent = None
    roots.sort(key=lambda r: _sort_date(r, cache))
    roots = _gather_subjects(roots, cache, subjects)
    # (6) siblings by sent date, then UID
    stack = list(roots)
    while stack:
        n = stack.pop()
        if len(n.children) > 1:
            n.children.sort(key=lambda c: _sort_date(c, cache))
        stack.extend(n.children)
    return roots


def _gather_subjects(roots: list[Node], cache: dict, subjects: SortCache | None = None) -> list[Node]:
    """Step (5): threads whose (oldest) messages share a base subject are merged."""
    n = len(roots)
    up: list[int | None] = [None] * n       # index of the root this one merges into
    reply = [False] * n
    ignore = [False] * n
    table: dict[str, int] = {}
    for i, r in enumerate(roots):
        first = r if r.msg is not None else min(r.children, key=lambda c: _sort_date(c, cache))
        subj, reply[i] = _base(first.msg, subjects)
        if not subj:
            continue
        held = table.get(subj)
        if held is None:
            table[subj] = i
        elif roots[held].msg is not None and (r.msg is None or (reply[held] and not reply[i])):
            up[held] = i
            table[subj] = i
        else:
            up[i] = held
    if not any(u is not None for u in up):
        return roots
    i = 0
    while i < len(roots):
        if up[i] is None or ignore[i]:
            i += 1
            continue
        cur = roots[i]
        t = up[i]
        while up[t] is not None:
            t = up[t]
        top = roots[t]
        if cur.msg is None:                     # two dummies: their children become siblings
            for c in cur.children:
                c.parent = top
            top.children.extend(cur.children)
            cur.children = []
            ignore[i] = True
        elif top.msg is None or (reply[i] and not reply[t]):
            cur.parent = top
            top.children.append(cur)
            ignore[i] = True
        else:                                   # a new dummy holds both
            dummy = Node()
            for x in (top, cur):
                x.parent = dummy
                dummy.children.append(x)
            roots.append(dummy)
            up.append(None)
            reply.append(False)
            ignore.append(False)
            up[t] = len(roots) - 1
            ignore[t] = ignore[i] = True
        cache.clear()
        i += 1
    out = [r for k, r in enumerate(roots) if not ignore[k] and (r.msg is not None or r.children)]
    out = [r.children[0] if r.msg is None and len(r.children) == 1 else r for r in out]
    for r in out:
        r.parent = None
    out.sort(key=lambda r: _sort_date(r, cache))
    return out


# ------------------------------------------------------------------------------ wire form
def encode_threads(roots: Sequence[Node], number) -> str:
    """``(1 2 (3)(4))…``: ``number(msg)`` gives the sequence number or UID of a message."""
    out: list[str] = []

    def walk(n: Node, first: bool) -> None:
        # a chain of only children is written flat: (1 2 3); several children each get (…)
        while True:
            if n.msg is not None:
                out.append(("" if first else " ") + str(number(n.msg)))
                first = False
            kids = n.children
            if len(kids) == 1 and n.msg is not None:
                n = kids[0]
                continue
            if kids:
                if not first:
                    out.append(" ")
                for c in kids:
                    out.append("(")
                    walk(c, True)
                    out.append(")")
            return

    for r in roots:
        out.append("(")
        walk(r, True)
        out.append(")")
    return "".join(out)


__all__ = ["Node", "encode_threads", "first_message_id", "message_ids", "ordered_subject",
           "references"]
