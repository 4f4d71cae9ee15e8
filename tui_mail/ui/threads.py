"""Display order for the threaded view: (rows, depth) from summaries.

The threading itself is tui_mail.mail.threading (JWZ: References/In-Reply-To, invisible
dummies for missing parents, subject fallback); this module only adapts it to the list, whose
rows run newest first: threads are ordered by their newest message, newest thread on top, and
inside a thread replies follow their parent, oldest first. Messages whose summary is not loaded
yet stay as their own one-message threads at their place, so nothing disappears from the list.
"""

from __future__ import annotations

from collections.abc import Sequence

from tui_mail.mail.threading import thread
from tui_mail.store.base import MessageSummary


def order_of_threads(rows: Sequence[int], threads: list[list[tuple[int, int]]]
                     ) -> tuple[list[int], dict[int, int]]:
    """The same display order from threads the server built (``(depth, uid)`` lists, each
    message under its parent, as tui_mail.store.imap_thread gives them): threads by their
    newest row, newest on top; UIDs not in ``rows`` dropped, rows the server did not list
    (arrived since) kept as one-message threads at their place."""
    position = {u: i for i, u in enumerate(rows)}
    groups = []
    listed: set[int] = set()
    for t in threads:
        members = [(d, u) for d, u in t if u in position]
        if members:
            listed.update(u for _, u in members)
            groups.append((min(position[u] for _, u in members), members))
    if len(listed) < len(position):
        groups += [(position[u], [(0, u)]) for u in rows if u not in listed]
    groups.sort(key=lambda g: g[0])
    out: list[int] = []
    depth_of: dict[int, int] = {}
    for _, members in groups:
        base = members[0][0]
        for depth, uid in members:
            out.append(uid)
            if depth > base:
                depth_of[uid] = depth - base
    return out, depth_of


def thread_order(rows: Sequence[int], summaries: dict[int, MessageSummary]) -> tuple[list[int], dict[int, int]]:
    """``rows`` (display order, newest first) regrouped into threads; ``depth`` maps each
    reply's uid to its indent (roots are absent)."""
    known = [summaries[u] for u in rows if u in summaries]
    threads: list[list[tuple[int, int]]] = []
    for depth, uid in thread(known):          # newest thread last
        if depth == 0 or not threads:
            threads.append([])
        threads[-1].append((depth, uid))
    position = {u: i for i, u in enumerate(rows)}
    # one entry per thread (and per message without a summary): its newest row position
    groups = [(min(position[u] for _, u in t), t) for t in threads]
    groups += [(position[u], [(0, u)]) for u in rows if u not in summaries]
    groups.sort(key=lambda g: g[0])
    out: list[int] = []
    depth_of: dict[int, int] = {}
    for _, members in groups:
        for depth, uid in members:
            out.append(uid)
            if depth:
                depth_of[uid] = depth
    return out, depth_of
