"""Display order for the threaded view: (rows, depth) from summaries.

The list only needs parent links to indent replies, so this is a small parent-link threading
(In-Reply-To, else the nearest known References entry), flattened into rows: threads ordered by
their newest message, replies under their parent, oldest first. Messages without a summary yet
stay as their own roots so nothing disappears from the list.
"""

from __future__ import annotations

from collections.abc import Sequence

from tui_mail.store.base import MessageSummary


def _parent(s: MessageSummary, by_id: dict[str, int]) -> int | None:
    for ref in (s.in_reply_to, *reversed(s.references)):
        uid = by_id.get(ref.strip()) if ref else None
        if uid is not None and uid != s.uid:
            return uid
    return None


def thread_order(rows: Sequence[int], summaries: dict[int, MessageSummary]) -> tuple[list[int], dict[int, int]]:
    """``rows`` (display order, newest first) regrouped into threads. A thread sorts by its
    newest message; inside a thread replies follow their parent, oldest first."""
    by_id = {s.message_id.strip(): u for u, s in summaries.items() if s.message_id}
    position = {u: i for i, u in enumerate(rows)}
    children: dict[int, list[int]] = {}
    roots: list[int] = []
    for uid in rows:
        s = summaries.get(uid)
        parent = _parent(s, by_id) if s is not None else None
        if parent is not None and parent in position and not _creates_cycle(uid, parent, summaries, by_id):
            children.setdefault(parent, []).append(uid)
        else:
            roots.append(uid)

    def newest(uid: int) -> int:
        best = position[uid]
        for child in children.get(uid, ()):
            best = min(best, newest(child))
        return best

    out: list[int] = []
    depth: dict[int, int] = {}

    def walk(uid: int, level: int) -> None:
        out.append(uid)
        if level:
            depth[uid] = level
        for child in sorted(children.get(uid, ()), key=lambda u: -position[u]):
            walk(child, level + 1)

    for root in sorted(roots, key=newest):
        walk(root, 0)
    return out, depth


def _creates_cycle(uid: int, parent: int, summaries: dict[int, MessageSummary], by_id: dict[str, int]) -> bool:
    seen = {uid}
    current: int | None = parent
    while current is not None:
        if current in seen:
            return True
        seen.add(current)
        s = summaries.get(current)
        current = _parent(s, by_id) if s is not None else None
    return False
