"""Sorting a folder on the client, from cached summaries, when the server has no SORT
(RFC 5256) — our relay, many small servers. Pure: (uid, date, from address, subject, size) rows
in, UIDs in ascending order out, with the server's rules so the order does not change when a
server gains SORT: FROM compares the mailbox (local part) of the first From address, SUBJECT the
base subject (no Re:/Fwd:/[list] prefixes), both case-insensitively; ties go by date, then UID
(the arrival order). Messages with nothing cached yet sort last, by UID."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Row = tuple[int, "int | float | None", "str | None", "str | None", "int | None"]
LOCAL_SORTS = ("date", "from", "subject", "size")


def _key(sort: str, row: Row, base_subject=None) -> tuple:
    uid, date, from_addr, subject, size = row
    when = date or 0
    if sort == "from":
        primary: object = (from_addr or "").partition("@")[0].casefold()
    elif sort == "subject":
        primary = base_subject(subject or "").casefold()
    elif sort == "size":
        primary = size or 0
    else:
        primary = when
    return (0, primary, when, uid)


def local_order(uids: Sequence[int], rows: Iterable[Row], sort: str) -> list[int]:
    """``uids`` in ascending ``sort`` order using ``rows`` (any subset of them, any order)."""
    if sort not in LOCAL_SORTS:
        raise ValueError(f"unknown sort {sort!r}")
    base_subject = None
    if sort == "subject":       # imported here: email parsing is not on the way to the first screen
        from tui_mail.mail.compose import base_subject
    keys = {row[0]: _key(sort, row, base_subject) for row in rows}
    return sorted(uids, key=lambda u: keys.get(u) or (1, 0, 0, u))
