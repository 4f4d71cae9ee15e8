"""ImapStore against a real Dovecot on loopback: every operation the UI relies on."""

from __future__ import annotations

import email
import email.policy
import threading
import time
from email.message import EmailMessage

import pytest

from tests.imap_store_checks import (check_create_rename_delete_folder_and_errors,
                                     check_flags_copy_move_delete_expunge_append,
                                     check_move_without_the_move_extension, hide_idle,
                                     new_mail_while_watching)
from tests.peers import Dovecot, dovecot, dovecot_plain_names, dovecot_tls, make_message  # noqa: F401
from tui_mail.errors import AuthError, ConnectError, MessageGone, TLSError
from tui_mail.store.base import Cancel, Cancelled, Change
from tui_mail.store.cache import HeaderCache
from tui_mail.store.imap import ImapStore, parse_copyuid, parse_sequence_set, uid_ranges


def _store(dc: Dovecot, cache=None, **kw) -> ImapStore:
    kw.setdefault("security", "none")
    return ImapStore("acct", dc.host, dc.imap_port, "bob", "pw", cache=cache or HeaderCache(":memory:"),
                     timeout=10, **kw)


@pytest.fixture
def bob(dovecot):
    dovecot.add_user("bob", "pw")
    s = _store(dovecot)
    yield s
    s.close()
    s.cache.close()


# --- pure helpers --------------------------------------------------------------------------

def test_uid_ranges_and_sequence_sets_round_trip():
    assert uid_ranges([5, 1, 2, 3, 9, 10, 7]) == "1:3,5,7,9:10"
    assert parse_sequence_set("1:3,7,10:8") == [1, 2, 3, 7, 10, 9, 8]
    big = list(range(1, 100001))
    assert uid_ranges(big) == "1:100000"
    assert parse_copyuid([b"[COPYUID 38505 304,319:320 3956:3958] Done"]) == {304: 3956, 319: 3957, 320: 3958}
    with pytest.raises(ValueError):
        uid_ranges([])


# --- folders -------------------------------------------------------------------------------

def test_folders_roles_counts_and_hierarchy(dovecot, bob):
    dovecot.seed("bob", 10, seen_every=2)
    bob.create_folder("Projects/2026")
    folders = {f.name: f for f in bob.list_folders()}
    assert folders["INBOX"].role == "inbox"
    assert (folders["INBOX"].total, folders["INBOX"].unread) == (10, 5)
    for name, role in (("Sent", "sent"), ("Drafts", "drafts"), ("Trash", "trash"), ("Junk", "junk")):
        assert folders[name].role == role
    assert folders["Projects/2026"].parts == ["Projects", "2026"]
    assert bob.folder_for_role("trash") == "Trash"


def test_roles_fall_back_to_common_names_and_config_overrides(dovecot_plain_names):
    dc = dovecot_plain_names
    dc.add_user("bob", "pw")
    s = _store(dc, roles={"archive": "Old"})
    try:
        for name in ("Sent Items", "Deleted Items", "Spam", "Drafts", "Old", "Archive"):
            s.create_folder(name)
        roles = {f.name: f.role for f in s.list_folders(with_counts=False)}
        assert roles["Sent Items"] == "sent"
        assert roles["Deleted Items"] == "trash"
        assert roles["Spam"] == "junk"
        assert roles["Drafts"] == "drafts"
        assert roles["Old"] == "archive" and roles["Archive"] is None
    finally:
        s.close()


def test_create_rename_delete_folder_and_errors(bob):
    check_create_rename_delete_folder_and_errors(bob)


# --- lists, cache, windows ---------------------------------------------------------------

def test_large_folder_windowing_sorts_on_the_server_and_fetches_only_the_window(dovecot, bob):
    dovecot.seed("bob", 5000)
    lines: list[str] = []
    bob.trace = lambda d, line: lines.append(f"{d}: {line}")
    state = bob.folder_state("INBOX")
    assert len(state.uids) == 5000 and state.uids[0] == 1 and state.uids[-1] == 5000
    window = state.uids[-50:]
    got = bob.summaries("INBOX", window)
    assert sorted(got) == sorted(window)
    last = got[5000]
    assert last.subject == "Message 4999 about topic 7"
    assert last.from_addr == "sender52@example.com" and last.from_name == "Sender 52"
    assert last.message_id == "<msg4999@example.com>" and last.unread
    # only the window travelled: one FETCH with a compressed range, never 5000 numbers
    fetches = [x for x in lines if x.startswith("C:") and "FETCH" in x]
    assert len(fetches) == 1 and "4951:5000" in fetches[0]
    assert all(len(x) < 400 for x in lines if x.startswith("C:"))
    assert bob.cache.count("acct", "INBOX") == 50
    # the second time comes from the cache without a FETCH
    lines.clear()
    assert bob.cached_summaries("INBOX", window) == got
    assert bob.summaries("INBOX", window) == got
    assert not [x for x in lines if "FETCH" in x]


def test_fill_cache_in_chunks_with_progress_then_cancel(dovecot, bob):
    dovecot.seed("bob", 1200)
    seen = []
    bob.fill_cache("INBOX", progress=lambda p: seen.append((p.done, p.total)), chunk=500)
    assert seen[0] == (0, 1200) and seen[-1] == (1200, 1200) and len(seen) == 4
    assert bob.cache.count("acct", "INBOX") == 1200
    dovecot.seed("bob", 300, start=1200)
    cancel = Cancel()
    calls = []

    def progress(p):
        calls.append(p.done)
        if p.done >= 100:
            cancel.set()

    with pytest.raises(Cancelled):
        bob.fill_cache("INBOX", progress=progress, cancel=cancel, chunk=100)
    assert bob.cache.count("acct", "INBOX") == 1300


def test_condstore_flag_resync_and_expunged_messages_leave_the_cache(dovecot, bob):
    dovecot.seed("bob", 40)
    bob.fill_cache("INBOX")
    other = _store(dovecot)
    try:
        other.set_flags("INBOX", [3, 4], ["\\Seen", "$Label1"])
        other.expunge("INBOX", [10])
    finally:
        other.close()
        other.cache.close()
    lines = []
    bob.trace = lambda d, line: lines.append(line)
    bob.fill_cache("INBOX")
    assert any("CHANGEDSINCE" in x for x in lines)
    cached = bob.cached_summaries("INBOX", [3, 4, 5, 10])
    assert cached[3].flags == {"\\Seen", "$Label1"} and not cached[5].flags
    assert 10 not in cached


def test_uidvalidity_change_drops_the_folder_cache(dovecot, bob):
    dovecot.seed("bob", 20)
    bob.fill_cache("INBOX")
    assert bob.cache.count("acct", "INBOX") == 20
    uv = bob.folder_state("INBOX").uidvalidity
    bob.close()
    dovecot.stop()
    md = dovecot.maildir("bob")
    (md / "dovecot-uidlist").unlink()
    for p in md.glob("dovecot.index*"):
        p.unlink()
    dovecot.start()
    time.sleep(1.1)  # Dovecot's UIDVALIDITY is the creation time in seconds
    state = bob.folder_state("INBOX")
    assert state.uidvalidity != uv
    assert bob.cache.count("acct", "INBOX") == 0
    assert len(bob.summaries("INBOX", state.uids[:5])) == 5


def test_cached_folder_state_serves_a_warm_start_without_network(dovecot):
    dovecot.add_user("bob", "pw")
    dovecot.seed("bob", 30)
    cache = HeaderCache(":memory:")
    s = _store(dovecot, cache=cache)
    try:
        assert s.cached_folder_state("INBOX") is None
        state = s.folder_state("INBOX")
        s.summaries("INBOX", state.uids[-10:])
    finally:
        s.close()
    warm = _store(dovecot, cache=cache)
    dovecot.stop()       # no server at all
    try:
        st = warm.cached_folder_state("INBOX")
        assert st.uids == state.uids
        assert len(warm.cached_summaries("INBOX", st.uids[-10:])) == 10
    finally:
        warm.close()
        cache.close()


def test_an_unchanged_folder_reuses_its_saved_order_without_sorting_again(dovecot, bob):
    dovecot.seed("bob", 20)
    lines = []
    bob.trace = lambda d, line: lines.append(line)
    first = bob.folder_state("INBOX")
    assert len([x for x in lines if "UID SORT" in x]) == 1
    lines.clear()
    assert bob.folder_state("INBOX") == first
    assert not [x for x in lines if "UID SORT" in x]
    dovecot.deliver("bob", make_message(99))
    assert bob.folder_state("INBOX").uids == first.uids + (21,)
    assert [x for x in lines if "UID SORT" in x]
    lines.clear()
    bob.expunge("INBOX", [3])
    assert 3 not in bob.folder_state("INBOX").uids
    assert [x for x in lines if "UID SORT" in x]


def test_sort_keys(dovecot, bob):
    def make(i):
        return make_message(i, subject=f"{'zyx'[i % 3]} subject {i}")
    dovecot.seed("bob", 6, make=make)
    assert bob.folder_state("INBOX", sort="arrival").uids == (1, 2, 3, 4, 5, 6)
    assert bob.folder_state("INBOX", sort="subject").uids[:2] == (3, 6)
    with pytest.raises(ValueError):
        bob.folder_state("INBOX", sort="colour")


# --- one message ----------------------------------------------------------------------------

def _big_message() -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "a@example.com", "bob@example.org", "Big one"
    m.set_content("See the attachment, Grüße.")
    m.add_attachment(b"\x00\x01" * 400_000, maintype="application", subtype="octet-stream",
                     filename="big.bin")
    return m.as_bytes(policy=email.policy.SMTP)


def test_fetch_message_leaves_out_large_attachments_unless_full_and_fetch_part(dovecot, bob):
    dovecot.deliver("bob", _big_message())
    uid = bob.folder_state("INBOX").uids[0]
    summ = bob.summaries("INBOX", [uid])[uid]
    assert summ.has_attachment and summ.size > 800_000
    small = bob.fetch_message("INBOX", uid)
    assert len(small) < 10_000
    msg = email.message_from_bytes(small, policy=email.policy.default)
    assert msg["Subject"] == "Big one"
    parts = list(msg.iter_parts())
    assert parts[0].get_content().strip() == "See the attachment, Grüße."
    assert parts[1].get_filename() == "big.bin"
    full = bob.fetch_message("INBOX", uid, full=True)
    assert len(full) > 800_000
    assert bob.fetch_part("INBOX", uid, "2") == b"\x00\x01" * 400_000
    assert "Grüße" in bob.fetch_part("INBOX", uid, "1").decode("utf-8")
    with pytest.raises(MessageGone):
        bob.fetch_message("INBOX", 999)


# --- changes --------------------------------------------------------------------------------

def test_flags_copy_move_delete_expunge_append(dovecot, bob):
    dovecot.seed("bob", 10)
    check_flags_copy_move_delete_expunge_append(bob, {})


def test_move_without_the_move_extension_uses_copy_and_uid_expunge(dovecot, bob):
    dovecot.seed("bob", 5)
    check_move_without_the_move_extension(bob)


# --- errors, TLS, reconnect -----------------------------------------------------------------

def test_wrong_password_is_an_auth_error_and_refused_port_a_connect_error(dovecot, port_factory):
    dovecot.add_user("bob", "pw")
    s = ImapStore("a", dovecot.host, dovecot.imap_port, "bob", "wrong", security="none")
    with pytest.raises(AuthError, match="refused the login for bob"):
        s.connect()
    s2 = ImapStore("a", "127.0.0.1", port_factory(), "bob", "pw", security="none", timeout=2)
    with pytest.raises(ConnectError, match="cannot connect"):
        s2.connect()


def test_tls_and_starttls_and_untrusted_certificate(dovecot_tls):
    import ssl
    dc = dovecot_tls
    dc.add_user("bob", "pw")
    ctx = ssl.create_default_context(cafile=str(dc.cert_file))
    for security, port in (("tls", dc.imaps_port), ("starttls", dc.imap_port)):
        s = ImapStore("a", "localhost", port, "bob", "pw", security=security, ssl_context=ctx)
        try:
            assert s.folder_state("INBOX").uids == ()
        finally:
            s.close()
    s = ImapStore("a", "localhost", dc.imaps_port, "bob", "pw", security="tls", timeout=5)
    with pytest.raises(TLSError):
        s.connect()


def test_starttls_missing_is_a_tls_error(dovecot):
    dovecot.add_user("bob", "pw")
    s = ImapStore("a", dovecot.host, dovecot.imap_port, "bob", "pw", security="starttls")
    with pytest.raises(TLSError, match="STARTTLS"):
        s.connect()


def test_reconnects_transparently_after_a_server_restart(dovecot, bob):
    dovecot.seed("bob", 8)
    state = bob.folder_state("INBOX")
    bob.summaries("INBOX", state.uids[:2])
    dovecot.restart()
    # the next call notices the dead connection, reconnects, reselects and retries
    got = bob.summaries("INBOX", state.uids[2:4])
    assert sorted(got) == [3, 4]
    bob.set_flags("INBOX", [5], ["\\Seen"])
    dovecot.stop()
    with pytest.raises(ConnectError):
        bob.summaries("INBOX", [6])


def test_trace_masks_the_password(dovecot, bob):
    lines = []
    bob.trace = lambda d, line: lines.append((d, line))
    bob.connect()
    text = "\n".join(f"{d}: {line}" for d, line in lines)
    assert "LOGIN bob ****" in text and "pw" not in text.replace("Capability", "")
    assert ("S", next(line for d, line in lines if line.endswith("Logged in"))) in lines


# --- watch ---------------------------------------------------------------------------------

def test_watch_reports_new_mail_within_a_second_and_stops(dovecot, bob):
    dovecot.seed("bob", 3)
    bob.folder_state("INBOX")
    got, latency = new_mail_while_watching(bob, lambda: dovecot.deliver("bob", make_message(50)))
    assert latency < 1.5
    assert got[-1] == Change("INBOX", "exists", (4,))


def test_watch_polls_with_noop_without_idle_and_survives_a_restart(dovecot, bob):
    dovecot.seed("bob", 1)
    got: list[Change] = []
    bob.poll_interval = 0.2
    bob.connect()
    bob._caps = bob._caps - {b"IDLE"}
    hide_idle(bob)
    bob.watch("INBOX", got.append)
    time.sleep(0.4)
    dovecot.restart()
    deadline = time.monotonic() + 5
    while not any(c.kind == "reconnected" for c in got) and time.monotonic() < deadline:
        time.sleep(0.05)
    dovecot.deliver("bob", make_message(7))
    while not any(c.kind == "exists" for c in got) and time.monotonic() < deadline:
        time.sleep(0.05)
    bob.stop_watch()
    kinds = [c.kind for c in got]
    assert "reconnected" in kinds and "exists" in kinds


def test_without_sort_the_order_comes_from_cached_dates(dovecot, bob):
    # UIDs arrive in reverse date order: message 0 (oldest) gets the highest UID
    def make(i):
        return make_message(9 - i)
    dovecot.seed("bob", 10, make=make)
    assert bob.folder_state("INBOX").uids == tuple(range(10, 0, -1))      # server SORT by date
    bob.fill_cache("INBOX")
    bob.cache.save_order("acct", "INBOX", "date", [], None)   # forget the server's order
    bob._caps = bob._caps - {b"SORT", b"ESORT"}
    assert bob.folder_state("INBOX").uids == tuple(range(10, 0, -1))      # from cached dates
    assert bob.folder_state("INBOX", sort="arrival").uids == tuple(range(1, 11))


def test_non_ascii_folder_names_round_trip(dovecot, bob):
    bob.create_folder("Entwürfe/Größe")
    dovecot.seed("bob", 2)
    bob.folder_state("INBOX")
    assert bob.copy("INBOX", [1], "Entwürfe/Größe") == {1: 1}
    folders = {f.name: f for f in bob.list_folders()}
    assert folders["Entwürfe/Größe"].total == 1
    assert folders["Entwürfe/Größe"].parts == ["Entwürfe", "Größe"]


def test_a_failing_watch_callback_does_not_end_the_watch(dovecot, bob, caplog):
    got = []
    arrived = threading.Event()

    def cb(change):
        got.append(change)
        if len(got) == 1:
            raise RuntimeError("UI went away")
        arrived.set()

    bob.watch("INBOX", cb)
    time.sleep(0.3)
    dovecot.deliver("bob", make_message(1))
    deadline = time.monotonic() + 3
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    dovecot.deliver("bob", make_message(2))
    assert arrived.wait(3)
    bob.stop_watch()
    assert [c.uids for c in got[:2]] == [(1,), (2,)]
    assert "watch callback failed" in caplog.text


def test_server_search_and_local_search_with_the_query_language(dovecot, bob):
    pytest.importorskip("tui_mail.mail.search")
    from tui_mail.errors import SearchSyntaxError

    def make(i):
        if i == 3:
            return make_message(i, subject="Die Bedeutung des Lebens", body="Ketchup für alle\n",
                                sender="Ålice <alice@example.com>")
        return make_message(i)
    dovecot.seed("bob", 6, make=make)
    bob.set_flags("INBOX", [5], ["\\Flagged"])
    assert bob.search("INBOX", "from:alice") == [4]
    assert bob.search("INBOX", "body:ketchup") == [4]
    assert bob.search("INBOX", "subject:bedeutung is:unread") == [4]
    assert bob.search("INBOX", "is:flagged") == [5]
    assert bob.search("INBOX", "für") == [4]
    with pytest.raises(SearchSyntaxError):
        bob.search("INBOX", "since:yesterday-ish")
    bob.fill_cache("INBOX")
    assert bob.local_search("INBOX", "from:alice") == [("INBOX", 4)]
    assert bob.local_search(None, "subject:bedeutung") == [("INBOX", 4)]
    assert bob.local_search("INBOX", "is:flagged") == [("INBOX", 5)]
    assert bob.local_search("INBOX", "body:ketchup") == [("INBOX", 4)]   # body start indexed


def test_window_first_without_bodies_then_fill_indexes_them(dovecot, bob):
    dovecot.seed("bob", 30)
    lines = []
    bob.trace = lambda d, line: lines.append(line)
    state = bob.folder_state("INBOX")
    bob.summaries("INBOX", state.uids[-5:])
    assert not [x for x in lines if "BODY.PEEK[1]" in x]          # the window stays light
    assert bob.cache.unindexed_uids("acct", "INBOX") == list(state.uids[-5:])
    bob.fill_cache("INBOX")
    assert bob.cache.unindexed_uids("acct", "INBOX") == []
    hits = bob.cache.query("m.rowid IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?)",
                           ["body:word1"], account="acct", folder="INBOX")
    assert {u for _, u in hits} == {u for u in state.uids if (u - 1) % 7 == 1}


def test_a_watch_started_after_the_listing_reports_mail_that_came_in_between(dovecot, bob):
    """The UI lists a folder, shows it, then starts the watch: a message delivered in that gap
    used to become the watcher's starting point (UIDNEXT at its own SELECT) and was never
    reported — no "new mail", the list stale until the next count check."""
    dovecot.seed("bob", 3)
    listed = bob.folder_state("INBOX")
    dovecot.deliver("bob", make_message(50, subject="In the gap"))
    got: list[Change] = []
    arrived = threading.Event()

    def cb(change: Change) -> None:
        got.append(change)
        if change.kind == "exists" and change.uids:
            arrived.set()

    bob.watch("INBOX", cb)
    try:
        assert arrived.wait(10), got
        new = [c for c in got if c.kind == "exists"][0].uids
        assert len(new) == 1 and new[0] > max(listed.uids)
        assert new[0] in bob.folder_state("INBOX").uids          # the reload the UI then does
        assert bob.summaries("INBOX", list(new))[new[0]].subject == "In the gap"
    finally:
        bob.stop_watch()
