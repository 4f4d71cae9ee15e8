"""Sorting without server SORT: ImapStore sorts on the client from its header cache
(tui_mail.store.sorting), by the server's rules (RFC 5256). The relay offers SORT since issue 11,
so the test hides SORT/ESORT from one client and uses the relay's own SORT as the oracle."""

from __future__ import annotations

from tests.peers import make_message
from tests.test_client_vs_relay import imap_store, relay  # noqa: F401  (fixture)
from tui_mail.store.sorting import local_order

SENDERS = ["Zed <zed@example.com>", "anna@example.com", "Bob <Bob@example.com>", "carl@example.com"]
SUBJECTS = ["Re: pears", "apples", "[list] Fwd: cherries", "Bananas"]
BODIES = ["x" * 900, "x" * 10, "x" * 3000, "x" * 200]


def test_pure_rules_base_subject_mailbox_ties_and_uncached_last():
    rows = [(1, 300, "zed@x", "Re: pears", 10), (2, 100, "Anna@x", "apples", 30),
            (3, 200, "bob@x", "[list] Fwd: Cherries", 20), (4, 100, "anna@y", "APPLES", 5)]
    assert local_order([1, 2, 3, 4, 5], rows, "from") == [2, 4, 3, 1, 5]
    assert local_order([1, 2, 3, 4, 5], rows, "subject") == [2, 4, 3, 1, 5]
    assert local_order([1, 2, 3, 4, 5], rows, "size") == [4, 1, 3, 2, 5]
    assert local_order([5, 4, 3, 2, 1], rows, "date") == [2, 4, 3, 1, 5]


def _without_sort(s):
    """Make this client behave as against a server without SORT (the fallback under test)."""
    has = s._has
    s._has = lambda cap: cap not in (b"SORT", b"ESORT") and has(cap)
    return s


def test_relay_without_sort_is_sorted_on_the_client(relay):  # noqa: F811
    relay.seed([make_message(i, sender=SENDERS[i], subject=SUBJECTS[i], body=BODIES[i])
                for i in range(4)])
    relay.start()
    oracle = imap_store(relay)
    try:
        oracle.connect()
        assert oracle._has(b"SORT")
        by_server = {sort: oracle.folder_state("INBOX", sort).uids for sort in ("from", "subject", "size", "date")}
    finally:
        oracle.close()
        oracle.cache.close()
    s = _without_sort(imap_store(relay))
    try:
        s.connect()
        assert not s._has(b"SORT")
        by_arrival = s.folder_state("INBOX", "arrival").uids
        subject_of = {u: v.subject for u, v in s.summaries("INBOX", by_arrival).items()}
        s.cache.close()
        s.close()
        from tui_mail.store.cache import HeaderCache

        s = _without_sort(imap_store(relay, cache=HeaderCache(":memory:")))   # nothing cached: fetched first
        uids = {sort: s.folder_state("INBOX", sort).uids for sort in ("from", "subject", "size", "date")}
        assert uids == by_server                      # the client's order is the server's SORT order
        order = {sort: [subject_of[u] for u in got] for sort, got in uids.items()}
        assert order["from"] == ["apples", "[list] Fwd: cherries", "Bananas", "Re: pears"]
        assert order["subject"] == ["apples", "Bananas", "[list] Fwd: cherries", "Re: pears"]
        assert order["size"] == ["apples", "Bananas", "Re: pears", "[list] Fwd: cherries"]
        assert order["date"] == SUBJECTS
    finally:
        s.close()
        s.cache.close()


def test_moved_messages_keep_their_cached_summary_under_the_new_uid(relay):  # noqa: F811
    relay.seed([make_message(i) for i in range(3)])
    relay.start()
    s = imap_store(relay)
    try:
        s.connect()
        s.folder_state("Trash")                     # Trash known to the cache
        uids = s.folder_state("INBOX").uids
        s.summaries("INBOX", uids)
        mapping = s.move("INBOX", [uids[0]], "Trash")
        new = mapping[uids[0]]
        carried = s.cache.get("acct", "Trash", [new])
        assert carried[new].subject == "Message 0 about topic 0"
        back = s.move("Trash", [new], "INBOX")
        assert s.cache.get("acct", "INBOX", [back[new]])[back[new]].subject == "Message 0 about topic 0"
    finally:
        s.close()
        s.cache.close()
