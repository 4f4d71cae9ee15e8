"""The THREAD answer parser (RFC 5256 section 4 examples) and the list order built from it."""

from __future__ import annotations

import pytest

from tui_mail.store.imap_thread import ThreadSyntaxError, parse_threads
from tui_mail.ui.threads import order_of_threads


def test_rfc_5256_example_chains_branches_and_missing_parents():
    # "(2)(3 6 (4 23)(44 7 96))" from RFC 5256: 6 under 3; 4 and 44 both under 6
    assert parse_threads(b"(2)(3 6 (4 23)(44 7 96))") == [
        [(0, 2)],
        [(0, 3), (1, 6), (2, 4), (3, 23), (2, 44), (3, 7), (4, 96)]]
    # "((3)(5))": 3 and 5 are siblings whose parent is missing
    assert parse_threads(b"((3)(5))") == [[(0, 3), (0, 5)]]
    assert parse_threads(b"") == [] and parse_threads(b"()") == []


@pytest.mark.parametrize("bad", [b"(1 2", b"1 2)", b"(1))", b"7"])
def test_unbalanced_answers_are_refused(bad):
    with pytest.raises(ThreadSyntaxError):
        parse_threads(bad)


def test_deep_threads_need_no_recursion():
    deep = b"(" + b" ".join(str(i).encode() for i in range(1, 20001)) + b")"
    (thread,) = parse_threads(deep)
    assert thread[-1] == (19999, 20000)


def test_order_puts_the_thread_of_the_newest_row_first_and_keeps_unlisted_rows():
    rows = (9, 8, 7, 5, 4, 2, 1)            # newest first; 9 arrived after the server threaded
    threads = parse_threads(b"(1 (4)(7))(2 5)(8)")
    order, depth = order_of_threads(rows, threads)
    assert order == [9, 8, 1, 4, 7, 2, 5]    # 9 alone, 8 alone, then 1's thread (newest: 7)
    assert depth == {4: 1, 7: 1, 5: 1}
    # a missing parent: its children stay together at the top level, uids not in rows dropped
    order, depth = order_of_threads((5, 3), parse_threads(b"((3)(5)(99))"))
    assert order == [3, 5] and depth == {}
