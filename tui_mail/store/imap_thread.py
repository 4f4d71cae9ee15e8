"""The answer to ``UID THREAD REFERENCES`` (RFC 5256) as rows for the threaded list.

The server threads a big folder in C from its own index (Dovecot: 100,000 messages in well
under a second) and sends ~700 KB of parentheses and numbers; threading on the client needs
every message's References from the header cache (~30 MB of strings for 100k) and JWZ in
Python. imapclient's generic response parser takes ~6 s for that answer, so this reads it
with one regular expression: pure, no I/O, iterative (no recursion limit on deep threads).

Grammar (RFC 5256 section 4): ``thread-list = "(" (thread-members / thread-nested) ")"``; a
run of numbers is a chain parent → child → grandchild; nested lists after a chain are the
branches of its last member; a nested list with no number before it stands for a missing
parent (its branches are siblings at that depth).
"""

from __future__ import annotations

import re

_TOKEN = re.compile(rb"(\()|(\))|(\d+)")


class ThreadSyntaxError(ValueError):
    """The THREAD answer is not a well-formed thread list."""


def parse_threads(data: bytes) -> list[list[tuple[int, int]]]:
    """``(3 6 (4 23)(44 7 96))(1)`` → one list per thread of ``(depth, uid)`` in display
    order (each message under its parent): [[(0, 3), (1, 6), (2, 4), (3, 23), (2, 44),
    (3, 7), (4, 96)], [(0, 1)]]."""
    threads: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    # per open list: the depth its next number gets, and that depth when the list was opened
    stack: list[list[int]] = []
    for match in _TOKEN.finditer(data):        # one token at a time: no list of 300k tokens
        kind = match.lastindex
        if kind == 1:
            if not stack:
                current = []
                stack.append([0, 0])
            else:
                depth = stack[-1][0]
                stack.append([depth, depth])
        elif kind == 2:
            if not stack:
                raise ThreadSyntaxError("unbalanced ')' in the THREAD answer")
            stack.pop()
            if not stack:
                threads.append(current)
        else:
            if not stack:
                raise ThreadSyntaxError("a number outside any thread in the THREAD answer")
            top = stack[-1]
            current.append((top[0], int(match.group(3))))
            top[0] += 1
    if stack:
        raise ThreadSyntaxError("unbalanced '(' in the THREAD answer")
    return [t for t in threads if t]
