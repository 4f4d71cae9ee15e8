"""POP3 accounts against a real Dovecot (tests/peers.py): keep, delete and leave-N-days modes,
no double downloads, STLS and implicit TLS, the no-UIDL fallback, errors and the trace."""

from __future__ import annotations

import os
import poplib

import pytest

from tests.peers import dovecot, dovecot_tls, make_message  # noqa: F401  (fixtures)
from tui_mail.errors import AuthError, ConnectError, TLSError
from tui_mail.store.pop3 import Pop3Settings, Pop3Store, check_pop3, header_id, parse_listing


def settings(dc, **kw) -> Pop3Settings:
    base = dict(host=dc.host, port=dc.pop3_port, security="none", user="bob", password="pop pass")
    base.update(kw)
    return Pop3Settings(**base)


def server_count(dc) -> int:
    md = dc.maildir("bob")
    return sum(len(os.listdir(md / sub)) for sub in ("new", "cur"))


class Clock:
    def __init__(self):
        self.t = 2_000_000_000.0

    def __call__(self):
        return self.t


def test_pure_helpers():
    assert parse_listing([b"1 abc", b"2 def", b"junk"]) == {1: "abc", 2: "def"}
    a = header_id([b"From: a", b"Subject: x"])
    assert a == header_id([b"From: a\r\n", b"Subject: x"]) and a != header_id([b"From: b"])
    with pytest.raises(ValueError):
        Pop3Settings("h", mode="sometimes")


def test_keep_mode_never_downloads_twice(dovecot, tmp_path):  # noqa: F811
    dovecot.add_user("bob", "pop pass")
    dovecot.seed("bob", 5)
    trace: list[str] = []
    store = Pop3Store(tmp_path / "bob", settings(dovecot))
    store.trace = lambda d, line: trace.append(f"{d}: {line}")
    try:
        r = store.sync()
        assert (r.on_server, r.downloaded, r.deleted) == (5, 5, 0) and r.warnings == []
        state = store.folder_state("INBOX", sort="date")
        assert len(state.uids) == 5
        subjects = [s.subject for s in store.summaries("INBOX", state.uids).values()]
        assert sorted(subjects) == sorted(f"Message {i} about topic {i % 13}" for i in range(5))
        assert store.fetch_message("INBOX", state.uids[0]).startswith(b"From: Sender 0")
        again = store.sync()
        assert (again.downloaded, again.deleted) == (0, 0)
        dovecot.deliver("bob", make_message(99))
        third = store.sync()
        assert third.downloaded == 1 and third.new_uids == [6]
        assert server_count(dovecot) == 6
    finally:
        store.close()
    assert "C: PASS ****" in trace and not any("pop pass" in t for t in trace)
    assert "C: UIDL" in trace and any(t.startswith("S: +OK") for t in trace)


def test_state_survives_reopen(dovecot, tmp_path):  # noqa: F811
    dovecot.add_user("bob", "pop pass")
    dovecot.seed("bob", 3)
    with Pop3Store(tmp_path / "bob", settings(dovecot)) as store:
        assert store.sync().downloaded == 3
    with Pop3Store(tmp_path / "bob", settings(dovecot)) as store:
        assert store.sync().downloaded == 0
        assert len(store.folder_state("INBOX").uids) == 3


def test_delete_mode(dovecot, tmp_path):  # noqa: F811
    dovecot.add_user("bob", "pop pass")
    dovecot.seed("bob", 4)
    with Pop3Store(tmp_path / "bob", settings(dovecot, mode="delete")) as store:
        r = store.sync()
        assert (r.downloaded, r.deleted) == (4, 4)
        assert server_count(dovecot) == 0
        assert len(store.folder_state("INBOX").uids) == 4
        assert store.known() == {}   # forgotten once gone from the server


def test_leave_days_mode(dovecot, tmp_path):  # noqa: F811
    dovecot.add_user("bob", "pop pass")
    dovecot.seed("bob", 2)
    clock = Clock()
    with Pop3Store(tmp_path / "bob", settings(dovecot, mode="leave", leave_days=3), clock=clock) as store:
        assert store.sync().downloaded == 2
        clock.t += 2 * 86400
        dovecot.deliver("bob", make_message(50))
        r = store.sync()
        assert (r.downloaded, r.deleted) == (1, 0) and server_count(dovecot) == 3
        clock.t += 1 * 86400 + 1       # the first two are now 3 days old, the third 1 day
        r = store.sync()
        assert (r.downloaded, r.deleted) == (0, 2) and server_count(dovecot) == 1
        assert len(store.folder_state("INBOX").uids) == 3


def test_header_hash_fallback(dovecot, tmp_path):  # noqa: F811
    dovecot.add_user("bob", "pop pass")
    dovecot.seed("bob", 3)
    with Pop3Store(tmp_path / "bob", settings(dovecot, use_uidl=False)) as store:
        r = store.sync()
        assert r.downloaded == 3 and "hash of their headers" in r.warnings[0]
        assert all(k.startswith("hdr-") for k in store.known())
        assert store.sync().downloaded == 0


def test_tls_and_stls(dovecot_tls, tmp_path):  # noqa: F811
    dc = dovecot_tls
    dc.add_user("bob", "pop pass")
    dc.seed("bob", 2)
    trace: list[str] = []
    stls = settings(dc, security="starttls", cafile=str(dc.cert_file))
    caps = check_pop3(stls, trace=lambda d, line: trace.append(f"{d}: {line}"))
    assert "UIDL" in caps and "C: STLS" in trace
    with Pop3Store(tmp_path / "a", stls) as store:
        assert store.sync().downloaded == 2
    tls = settings(dc, port=dc.pop3s_port, security="tls", cafile=str(dc.cert_file))
    with Pop3Store(tmp_path / "b", tls) as store:
        assert store.sync().downloaded == 2
    untrusted = settings(dc, port=dc.pop3s_port, security="tls")
    with pytest.raises(TLSError):
        check_pop3(untrusted)


def test_errors_are_mail_errors(dovecot, tmp_path):  # noqa: F811
    dovecot.add_user("bob", "pop pass")
    with pytest.raises(AuthError, match="refused") as e:
        check_pop3(settings(dovecot, password="wrong"))
    assert "wrong" not in str(e.value)
    with pytest.raises(TLSError, match="STLS"):
        check_pop3(settings(dovecot, security="starttls"))  # plain Dovecot: no STLS
    from tests.conftest import free_port
    with pytest.raises(ConnectError):
        check_pop3(settings(dovecot, port=free_port()))


def test_dele_only_at_quit(dovecot, tmp_path):  # noqa: F811
    """RFC 1939: a session that drops before QUIT deletes nothing (checked with raw poplib)."""
    dovecot.add_user("bob", "pop pass")
    dovecot.seed("bob", 2)
    conn = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=5)
    conn.user("bob")
    conn.pass_("pop pass")
    conn.dele(1)
    conn.close()
    with Pop3Store(tmp_path / "bob", settings(dovecot, mode="delete")) as store:
        assert store.sync().downloaded == 2


def test_progress_cancel_and_resume(dovecot, tmp_path):  # noqa: F811
    from tui_mail.store.base import Cancel, Cancelled

    dovecot.add_user("bob", "pop pass")
    dovecot.seed("bob", 6)
    cancel = Cancel()
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if done == 2:
            cancel.set()

    with Pop3Store(tmp_path / "bob", settings(dovecot, mode="delete")) as store:
        with pytest.raises(Cancelled):
            store.sync(progress=progress, cancel=cancel)
        assert seen == [(1, 6), (2, 6)]
        assert len(store.folder_state("INBOX").uids) == 2
        assert server_count(dovecot) == 6          # no QUIT, so no DELE applied
        r = store.sync()
        assert (r.downloaded, r.deleted) == (4, 6) and server_count(dovecot) == 0
        assert len(store.folder_state("INBOX").uids) == 6


def test_server_gone_mid_session_is_connect_error(dovecot, tmp_path):  # noqa: F811
    dovecot.add_user("bob", "pop pass")
    dovecot.seed("bob", 3)

    with Pop3Store(tmp_path / "bob", settings(dovecot, mode="delete")) as store:
        def progress(done: int, total: int) -> None:
            if done == 1:
                dovecot.stop()

        with pytest.raises(ConnectError):
            store.sync(progress=progress)
        dovecot.start()
        assert server_count(dovecot) == 3
        r = store.sync()
        assert r.downloaded == 2 and len(store.folder_state("INBOX").uids) == 3


def test_watch_checks_the_server_and_reports_new_mail(dovecot, tmp_path):  # noqa: F811
    import threading

    from tui_mail.store.base import Change

    dovecot.add_user("bob", "pop pass")
    dovecot.seed("bob", 1)
    got: list[Change] = []
    arrived = threading.Event()

    def cb(change: Change) -> None:
        got.append(change)
        if change.kind == "exists":
            arrived.set()

    store = Pop3Store(tmp_path / "bob", settings(dovecot), check_interval=0.2, poll_interval=0.05)
    try:
        store.connect()
        store.watch("INBOX", cb)
        assert arrived.wait(5)            # the first check downloads the seeded message
        arrived.clear()
        dovecot.deliver("bob", make_message(7))
        assert arrived.wait(5)
        assert [c.uids for c in got if c.kind == "exists"] == [(1,), (2,)]
        assert store.last_sync_error is None
        dovecot.stop()                    # a failing check is kept, not raised
        import time as _t
        deadline = _t.monotonic() + 5
        while store.last_sync_error is None and _t.monotonic() < deadline:
            _t.sleep(0.05)
        assert isinstance(store.last_sync_error, ConnectError)
    finally:
        store.close()
    assert store._checker is None and store._watch_thread is None
