"""Integration: the client core (ImapStore, Pop3Store, SmtpSubmitter + Outbox) against OUR relay.

Each store was tested against Dovecot/Postfix by its author and each relay server against
stdlib clients; this file runs the client core against the relay (RelayServer in a background
thread with its own event loop — tui_mail.demo.RelayHost — on free loopback ports), the way
the demo and real users run them together. Mail arrives through the relay's own SMTP listener;
a folder is seeded through the relay's store before start where many messages are needed.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import time
from contextlib import closing, contextmanager
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.imap_store_checks import (check_create_rename_delete_folder_and_errors,
                                     check_flags_copy_move_delete_expunge_append,
                                     check_move_without_the_move_extension, hide_idle,
                                     new_mail_while_watching)
from tests.peers import make_message
from tui_mail.demo import RelayHost, free_port
from tui_mail.errors import AuthError, ConnectError, MessageGone
from tui_mail.store.base import SEEN, Change
from tui_mail.store.cache import HeaderCache
from tui_mail.store.imap import ImapStore

BOB = "bob@example.org"
PW = "bob's secret"
DOMAIN = "example.org"


class Relay:
    """A relay for example.org with user bob, fixed free ports (so a restart keeps them)."""

    def __init__(self, root: Path):
        from relay.config import parse_config
        from relay.users import UserDB

        self.root = root
        self.ports = {k: free_port() for k in ("smtp", "submission", "imap", "pop3")}
        text = f"""
hostname = "mail.{DOMAIN}"
domains = ["{DOMAIN}"]
[listen]
smtp = "127.0.0.1:{self.ports['smtp']}"
submission = "127.0.0.1:{self.ports['submission']}"
imap = "127.0.0.1:{self.ports['imap']}"
pop3 = "127.0.0.1:{self.ports['pop3']}"
"""
        self.cfg = parse_config(text, None, root / "data")
        self.cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        UserDB(self.cfg.users_file).add(BOB, PW)
        self.host = RelayHost(DOMAIN, self.cfg)

    def seed(self, messages, folder: str = "INBOX", flags_of=lambda i: ()) -> None:
        """Put messages into bob's Maildir as files and let the relay's store index them in one
        sync (what another Maildir tool would do; appending one by one fsyncs each message).
        Only while the relay is stopped."""
        from relay.events import ChangeBus
        from relay.store import names
        from relay.store.registry import MailStore

        assert not self.host.running
        store = MailStore(self.cfg.mail_dir, ChangeBus())
        try:
            user = store.user(BOB)       # creates the user's default folders
            root = self.cfg.mail_dir / BOB / names.to_dirname(folder)
            base = int(time.time())
            for i, data in enumerate(messages):
                name = f"{base}.seed{i:06d}.mail.{DOMAIN}"
                info = "".join(sorted({"\\Seen": "S", "\\Flagged": "F"}[f] for f in flags_of(i)))
                (root / "tmp" / name).write_bytes(data)
                (root / "tmp" / name).rename(root / "cur" / f"{name}:2,{info}")
            user.sync(folder)
        finally:
            store.close()

    def deliver(self, data: bytes, rcpt: str = BOB) -> None:
        """Inbound SMTP to the relay's MX listener, as another server would."""
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
            s.sendmail("someone@elsewhere.test", [rcpt], data)

    def start(self) -> None:
        self.host.start()

    def sessions(self) -> int:
        """IMAP and POP3 sessions the relay still serves (0 when it is down)."""
        server = self.host.server
        if server is None:
            return 0
        return sum(len(getattr(srv, attr, ())) for srv in list(server.extra_servers)
                   for attr in ("imap_connections", "pop3_sessions"))

    def stop(self, *, settle: bool = True) -> None:
        """Stop the relay; with ``settle``, first let sessions whose clients logged out finish
        on the server, so a test never stops the relay in the middle of a LOGOUT."""
        if settle and self.host.running:
            wait_for(lambda: self.sessions() == 0, 2.0)
        self.host.stop()

    def restart(self) -> None:
        self.stop(settle=False)     # clients stay connected: the relay goes away under them
        self.start()


@pytest.fixture
def relay(tmp_path):
    r = Relay(tmp_path / "relay")
    yield r
    r.stop()


def imap_store(relay: Relay, cache=None, **kw) -> ImapStore:
    kw.setdefault("security", "none")
    return ImapStore("acct", "127.0.0.1", relay.ports["imap"], BOB, PW,
                     cache=cache or HeaderCache(":memory:"), timeout=10, **kw)


@contextmanager
def started_store(relay: Relay, **kw):
    """Start the relay (seed it before) and open an ImapStore on it; closed with its cache after."""
    relay.start()
    s = imap_store(relay, **kw)
    try:
        yield s
    finally:
        s.close()
        s.cache.close()


@pytest.fixture
def bob(relay):
    with started_store(relay) as s:
        yield s


def wait_for(pred, timeout: float = 5.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    return pred()


def inbox_total(store: ImapStore) -> int:
    return next(f.total for f in store.list_folders() if f.name == "INBOX")


# --- folders -------------------------------------------------------------------------------

def test_folders_roles_counts_and_hierarchy(relay):
    relay.seed([make_message(i) for i in range(10)], flags_of=lambda i: ["\\Seen"] if i % 2 else [])
    with started_store(relay) as s:
        s.create_folder("Projects/2026")
        folders = {f.name: f for f in s.list_folders()}
        assert folders["INBOX"].role == "inbox"
        assert (folders["INBOX"].total, folders["INBOX"].unread) == (10, 5)
        for name, role in (("Sent", "sent"), ("Drafts", "drafts"), ("Trash", "trash"),
                           ("Junk", "junk"), ("Archive", "archive")):
            assert folders[name].role == role, name
        assert folders["Projects/2026"].parts == ["Projects", "2026"]
        assert s.folder_for_role("trash") == "Trash"


def test_create_rename_delete_folder_and_errors(bob):
    check_create_rename_delete_folder_and_errors(bob)


def test_non_ascii_folder_names_round_trip(bob, relay):
    bob.create_folder("Entwürfe/Größe")
    relay.deliver(make_message(1))
    assert wait_for(lambda: inbox_total(bob) == 1)
    uid = bob.folder_state("INBOX").uids[0]
    assert list(bob.copy("INBOX", [uid], "Entwürfe/Größe").keys()) == [uid]
    folders = {f.name: f for f in bob.list_folders()}
    assert folders["Entwürfe/Größe"].total == 1
    assert folders["Entwürfe/Größe"].parts == ["Entwürfe", "Größe"]


# --- lists, windows, cache -----------------------------------------------------------------

def test_folder_state_windowing_and_cache(relay):
    relay.seed([make_message(i) for i in range(600)])
    with started_store(relay) as s:
        lines: list[str] = []
        s.trace = lambda d, line: lines.append(f"{d}: {line}")
        state = s.folder_state("INBOX")
        assert len(state.uids) == 600 and state.uids[0] == 1 and state.uids[-1] == 600
        assert state.uidvalidity > 0
        window = state.uids[-50:]
        got = s.summaries("INBOX", window)
        assert sorted(got) == sorted(window)
        last = got[600]
        assert last.subject == "Message 599 about topic 1"
        assert last.from_addr == "sender17@example.com" and last.from_name == "Sender 17"
        assert last.message_id == "<msg599@example.com>" and last.unread
        fetches = [x for x in lines if x.startswith("C:") and "FETCH" in x]
        assert len(fetches) == 1 and "551:600" in fetches[0]
        assert s.cache.count("acct", "INBOX") == 50
        lines.clear()
        assert s.cached_summaries("INBOX", window) == got
        assert s.summaries("INBOX", window) == got
        assert not [x for x in lines if "FETCH" in x]
        # arrival order and subject order from the server
        assert s.folder_state("INBOX", sort="arrival").uids == tuple(range(1, 601))


def test_fill_cache_in_chunks_then_condstore_resync(relay):
    relay.seed([make_message(i) for i in range(250)])
    relay.start()
    s = imap_store(relay)
    other = imap_store(relay)
    try:
        seen = []
        s.fill_cache("INBOX", progress=lambda p: seen.append((p.done, p.total)), chunk=100)
        assert seen[0] == (0, 250) and seen[-1] == (250, 250) and len(seen) == 4
        assert s.cache.count("acct", "INBOX") == 250
        assert s.cache.unindexed_uids("acct", "INBOX") == []
        other.set_flags("INBOX", [3, 4], ["\\Seen", "$Label1"])
        other.expunge("INBOX", [10])
        lines = []
        s.trace = lambda d, line: lines.append(line)
        s.fill_cache("INBOX")
        assert any("CHANGEDSINCE" in x for x in lines)
        cached = s.cached_summaries("INBOX", [3, 4, 5, 10])
        assert cached[3].flags == {"\\Seen", "$Label1"} and not cached[5].flags
        assert 10 not in cached
    finally:
        for st in (s, other):
            st.close()
            st.cache.close()


def test_sort_keys_reorder_on_the_relay(relay):
    # the relay offers SORT/ESORT (issue 11): every sort key of the client is answered by the
    # server in one command, no header cache needed ("o" sorted by from reorders)
    relay.seed([make_message(9 - i, sender=f"{chr(ord('k') - i)} <{chr(ord('k') - i)}@x.org>",
                             subject=f"{'Re: ' if i % 2 else ''}topic {chr(ord('a') + (i * 3) % 10)}")
                for i in range(10)])
    with started_store(relay) as s:
        s.connect()
        assert b"ESORT" in s._caps and b"SORT" in s._caps
        assert s.folder_state("INBOX", sort="arrival").uids == tuple(range(1, 11))
        assert s.folder_state("INBOX").uids == tuple(range(10, 0, -1))            # by date
        assert s.folder_state("INBOX", sort="from").uids == tuple(range(10, 0, -1))   # b … k
        # subjects topic a, d, g, j, c, f, i, b, e, h (Re: ignored, RFC 5256 base subject)
        assert s.folder_state("INBOX", sort="subject").uids == (1, 8, 5, 2, 9, 6, 3, 10, 7, 4)


# --- one message ----------------------------------------------------------------------------

def _big_message() -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "a@example.com", BOB, "Big one"
    m.set_content("See the attachment, Grüße.")
    m.add_attachment(b"\x00\x01" * 200_000, maintype="application", subtype="octet-stream",
                     filename="big.bin")
    return m.as_bytes(policy=email.policy.SMTP)


def test_fetch_message_without_large_attachments_and_fetch_part(relay):
    data = _big_message()
    relay.seed([data])
    with started_store(relay) as s:
        uid = s.folder_state("INBOX").uids[0]
        summ = s.summaries("INBOX", [uid])[uid]
        assert summ.has_attachment and summ.size == len(data)
        small = s.fetch_message("INBOX", uid)
        assert len(small) < 10_000
        msg = email.message_from_bytes(small, policy=email.policy.default)
        assert msg["Subject"] == "Big one"
        parts = list(msg.iter_parts())
        assert parts[0].get_content().strip() == "See the attachment, Grüße."
        assert parts[1].get_filename() == "big.bin"
        assert s.fetch_message("INBOX", uid, full=True) == data       # byte-exact
        assert s.fetch_part("INBOX", uid, "2") == b"\x00\x01" * 200_000
        assert "Grüße" in s.fetch_part("INBOX", uid, "1").decode("utf-8")
        with pytest.raises(MessageGone):
            s.fetch_message("INBOX", 999)
        # fetching bodies peeks: the message stays unread
        assert s.summaries("INBOX", [uid])[uid].unread


# --- changes --------------------------------------------------------------------------------

def test_flags_copy_move_delete_expunge_append(relay):
    relay.seed([make_message(i) for i in range(10)])
    with started_store(relay) as s:
        check_flags_copy_move_delete_expunge_append(s, {"Archive": 0})


def test_move_without_the_move_extension_uses_copy_and_uid_expunge(relay):
    relay.seed([make_message(i) for i in range(5)])
    with started_store(relay) as s:
        check_move_without_the_move_extension(s)


def test_server_search_with_the_query_language(relay):
    pytest.importorskip("tui_mail.mail.search")

    def make(i):
        if i == 3:
            return make_message(i, subject="Die Bedeutung des Lebens", body="Ketchup für alle\n",
                                sender="Ålice <alice@example.com>")
        return make_message(i)
    relay.seed([make(i) for i in range(6)])
    with started_store(relay) as s:
        s.set_flags("INBOX", [5], ["\\Flagged"])
        assert s.search("INBOX", "from:alice") == [4]
        assert s.search("INBOX", "body:ketchup") == [4]
        assert s.search("INBOX", "subject:bedeutung is:unread") == [4]
        assert s.search("INBOX", "is:flagged") == [5]
        assert s.search("INBOX", "für") == [4]
        s.fill_cache("INBOX")
        assert s.local_search("INBOX", "from:alice") == [("INBOX", 4)]
        assert s.local_search("INBOX", "body:ketchup") == [("INBOX", 4)]


# --- errors, watch, reconnect ---------------------------------------------------------------

def test_wrong_password_is_an_auth_error(relay):
    relay.start()
    s = ImapStore("a", "127.0.0.1", relay.ports["imap"], BOB, "wrong", security="none", timeout=10)
    with pytest.raises(AuthError):
        s.connect()
    s.close()


def test_watch_sees_mail_delivered_by_smtp_within_a_second(bob, relay):
    relay.deliver(make_message(1))
    assert wait_for(lambda: inbox_total(bob) == 1)
    bob.folder_state("INBOX")
    got, latency = new_mail_while_watching(bob, lambda: relay.deliver(make_message(2)))
    assert latency < 1.0, latency
    assert got[-1] == Change("INBOX", "exists", (2,))


def test_reconnects_after_the_relay_restarts(relay):
    relay.seed([make_message(i) for i in range(8)])
    with started_store(relay) as s:
        state = s.folder_state("INBOX")
        s.summaries("INBOX", state.uids[:2])
        relay.restart()
        got = s.summaries("INBOX", state.uids[2:4])
        assert sorted(got) == [3, 4]
        s.set_flags("INBOX", [5], ["\\Seen"])
        assert s.folder_state("INBOX").uidvalidity == state.uidvalidity   # UIDs stable
        assert "\\Seen" in s.summaries("INBOX", [5])[5].flags
        relay.stop(settle=False)
        with pytest.raises(ConnectError):
            s.summaries("INBOX", [6])


# --- POP3 -----------------------------------------------------------------------------------

def pop3_settings(relay: Relay, **kw):
    from tui_mail.store.pop3 import Pop3Settings
    return Pop3Settings(host="127.0.0.1", port=relay.ports["pop3"], security="none", user=BOB,
                        password=PW, timeout=10, **kw)


def test_pop3_keep_mode_downloads_once_and_retr_marks_seen_for_imap(relay, tmp_path):
    from tui_mail.store.pop3 import Pop3Store

    relay.seed([make_message(i) for i in range(5)])
    with (started_store(relay) as imap,
          closing(Pop3Store(tmp_path / "pop", pop3_settings(relay, mode="keep"))) as store):
        r = store.sync()
        assert (r.on_server, r.downloaded, r.deleted) == (5, 5, 0) and r.warnings == []
        state = store.folder_state("INBOX", sort="date")
        subjects = sorted(s.subject for s in store.summaries("INBOX", state.uids).values())
        assert subjects == sorted(f"Message {i} about topic {i % 13}" for i in range(5))
        assert store.fetch_message("INBOX", state.uids[0]) == make_message(0)   # byte-exact
        again = store.sync()
        assert (again.downloaded, again.deleted) == (0, 0)
        relay.deliver(make_message(99))
        assert wait_for(lambda: inbox_total(imap) == 6)
        third = store.sync()
        assert (third.on_server, third.downloaded) == (6, 1)
        # RETR marked them seen for IMAP; nothing was deleted
        folders = {f.name: f for f in imap.list_folders()}
        assert (folders["INBOX"].total, folders["INBOX"].unread) == (6, 0)


def test_pop3_delete_mode_empties_the_server_inbox(relay, tmp_path):
    from tui_mail.store.pop3 import Pop3Store

    relay.seed([make_message(i) for i in range(4)])
    with (started_store(relay) as imap,
          closing(Pop3Store(tmp_path / "pop", pop3_settings(relay, mode="delete"))) as store):
        r = store.sync()
        assert (r.on_server, r.downloaded, r.deleted) == (4, 4, 4)
        assert len(store.folder_state("INBOX").uids) == 4
        assert inbox_total(imap) == 0
        relay.deliver(make_message(7))
        assert wait_for(lambda: inbox_total(imap) == 1)
        r2 = store.sync()
        assert (r2.on_server, r2.downloaded, r2.deleted) == (1, 1, 1)
        assert len(store.folder_state("INBOX").uids) == 5
        assert inbox_total(imap) == 0


def test_pop3_wrong_password_is_an_auth_error(relay, tmp_path):
    from tui_mail.store.pop3 import Pop3Store

    relay.start()
    store = Pop3Store(tmp_path / "pop", pop3_settings(relay).__class__(
        host="127.0.0.1", port=relay.ports["pop3"], security="none", user=BOB, password="nope",
        timeout=10))
    try:
        with pytest.raises(AuthError):
            store.sync()
    finally:
        store.close()


# --- SMTP submission through the outbox, Sent copy in the relay ------------------------------

async def test_outbox_submits_with_auth_and_files_the_sent_copy_in_the_relays_sent(relay, tmp_path):
    import asyncio

    from tui_mail.send.outbox import Outbox
    from tui_mail.send.smtp import SmtpSettings, SmtpSubmitter

    with started_store(relay) as imap:
        m = EmailMessage()
        m["From"] = f"Bob <{BOB}>"
        m["To"] = BOB
        m["Subject"] = "Through the outbox"
        m["Message-ID"] = "<outbox-1@example.org>"
        m.set_content("sent via submission\n")
        sub = SmtpSubmitter(SmtpSettings("127.0.0.1", relay.ports["submission"], "none", user=BOB,
                                         password=PW, timeout=10))
        ob = Outbox(tmp_path / "outbox", send=sub.send,
                    sent_copy=lambda data: imap.append("Sent", data, flags=[SEEN])).open()
        try:
            ob.enqueue(m)
            outcomes = await ob.process()
            assert [o.state for o in outcomes] == ["filed"], outcomes
            assert ob.items() == []
        finally:
            ob.close()

        def landed():
            return {f.name: f.total for f in imap.list_folders()}
        counts = await asyncio.to_thread(wait_for, lambda: landed()["INBOX"] == 1)
        assert counts
        sent = imap.folder_state("Sent").uids
        assert len(sent) == 1
        summ = imap.summaries("Sent", list(sent))[sent[0]]
        assert summ.subject == "Through the outbox" and not summ.unread
        inbox = imap.folder_state("INBOX").uids
        got = imap.fetch_message("INBOX", inbox[0], full=True)
        assert b"sent via submission" in got and b"Message-ID: <outbox-1@example.org>" in got


async def test_submission_with_a_wrong_password_fails_the_item_with_the_reply(relay, tmp_path):
    from tui_mail.send.outbox import Outbox
    from tui_mail.send.smtp import SmtpSettings, SmtpSubmitter

    relay.start()
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = BOB, BOB, "nope"
    m.set_content("x\n")
    sub = SmtpSubmitter(SmtpSettings("127.0.0.1", relay.ports["submission"], "none", user=BOB,
                                     password="wrong", timeout=10))
    ob = Outbox(tmp_path / "outbox", send=sub.send).open()
    try:
        ob.enqueue(m)
        outcomes = await ob.process()
        assert [o.state for o in outcomes] == ["failed"], outcomes
        assert "535" in outcomes[0].detail or "auth" in outcomes[0].detail.lower()
    finally:
        ob.close()


# --- deeper: watch across sessions and restarts, caches, POP3 modes, outbox retry ------------

def _watch_with_other_session(relay, action):
    """Seed 4 messages, watch INBOX in one store, run ``action(other_store)``; the changes."""
    relay.seed([make_message(i) for i in range(4)])
    relay.start()
    s, other = imap_store(relay), imap_store(relay)
    got: list[Change] = []
    try:
        s.folder_state("INBOX")
        s.watch("INBOX", got.append)
        time.sleep(0.3)
        action(other, got)
        s.stop_watch()
        return got, s.folder_state("INBOX").uids
    finally:
        for st in (s, other):
            st.close()
            st.cache.close()


def test_watch_reports_flag_changes_and_expunges_made_by_another_session(relay):
    import imaplib

    def act(other, got):
        other.set_flags("INBOX", [2], ["\\Flagged"])
        assert wait_for(lambda: any(c.kind == "flags" for c in got), 3), got
        # a plain client: \Deleted, a pause (the watcher is back in IDLE), then UID EXPUNGE
        with imaplib.IMAP4("127.0.0.1", relay.ports["imap"]) as raw:
            raw.login(BOB, PW)
            raw.select("INBOX")
            raw.uid("STORE", "3", "+FLAGS.SILENT", "(\\Deleted)")
            time.sleep(0.4)
            raw.uid("EXPUNGE", "3")
            raw.logout()
        assert wait_for(lambda: any(c.kind == "expunge" for c in got), 3), got

    got, uids = _watch_with_other_session(relay, act)
    assert uids == (1, 2, 4)


def test_watch_flag_change_names_the_uid(relay):
    def act(other, got):
        other.set_flags("INBOX", [2], ["\\Flagged"])
        wait_for(lambda: any(c.kind == "flags" for c in got), 3)
        assert any(c.kind == "flags" and c.uids == (2,) for c in got), got

    _watch_with_other_session(relay, act)


def _restart_and_expect_new_mail(store, relay, wait: float) -> list[Change]:
    got: list[Change] = []
    store.watch("INBOX", got.append)
    try:
        time.sleep(0.4)
        relay.restart()
        assert wait_for(lambda: any(c.kind == "reconnected" for c in got), wait), got
        relay.deliver(make_message(5))
        assert wait_for(lambda: any(c.kind == "exists" for c in got), 3), got
    finally:
        store.stop_watch()
    return got


def test_watch_without_idle_polls_and_survives_a_relay_restart(bob, relay):
    bob.poll_interval = 0.2
    hide_idle(bob)
    got = _restart_and_expect_new_mail(bob, relay, 5)
    assert [c for c in got if c.kind == "exists"][-1].uids == (1,)


def test_watch_in_idle_survives_a_relay_restart(bob, relay):
    _restart_and_expect_new_mail(bob, relay, 3)


def test_uidvalidity_change_after_the_relay_loses_its_index_drops_the_cache(relay):
    from relay.store.index import FILENAME

    relay.seed([make_message(i) for i in range(20)])
    with started_store(relay) as s:
        s.fill_cache("INBOX")
        assert s.cache.count("acct", "INBOX") == 20
        uv = s.folder_state("INBOX").uidvalidity
        relay.stop(settle=False)
        indexes = list((relay.cfg.mail_dir).rglob(FILENAME + "*"))
        assert indexes, "the relay's index file was not found"
        for p in indexes:
            p.unlink()
        time.sleep(1.05)          # a UIDVALIDITY made of the clock needs a new second
        relay.start()
        state = s.folder_state("INBOX")
        assert state.uidvalidity != uv
        assert s.cache.count("acct", "INBOX") == 0
        assert len(state.uids) == 20
        assert len(s.summaries("INBOX", state.uids[:5])) == 5


def test_warm_start_from_the_cache_while_the_relay_is_down(relay):
    relay.seed([make_message(i) for i in range(30)])
    relay.start()
    cache = HeaderCache(":memory:")
    s = imap_store(relay, cache=cache)
    try:
        assert s.cached_folder_state("INBOX") is None
        state = s.folder_state("INBOX")
        s.summaries("INBOX", state.uids[-10:])
    finally:
        s.close()
    relay.stop()
    warm = imap_store(relay, cache=cache)
    try:
        st = warm.cached_folder_state("INBOX")
        assert st.uids == state.uids
        assert len(warm.cached_summaries("INBOX", st.uids[-10:])) == 10
        with pytest.raises(ConnectError):
            warm.folder_state("INBOX")
    finally:
        warm.close()
        cache.close()


def test_trace_masks_the_password(bob):
    lines = []
    bob.trace = lambda d, line: lines.append((d, line))
    bob.connect()
    text = "\n".join(f"{d}: {line}" for d, line in lines)
    assert PW not in text
    assert "****" in text


def test_encoded_words_and_utf8_survive_smtp_delivery_into_summaries(bob, relay):
    m = EmailMessage()
    m["From"] = "Jürgen Groß <juergen@example.net>"
    m["To"] = BOB
    m["Subject"] = "Grüße aus Köln – ☕"
    m.set_content("Schöne Grüße\n")
    relay.deliver(m.as_bytes(policy=email.policy.SMTP))
    assert wait_for(lambda: inbox_total(bob) == 1)
    (uid,) = bob.folder_state("INBOX").uids
    summ = bob.summaries("INBOX", [uid])[uid]
    assert summ.subject == "Grüße aus Köln – ☕"
    assert summ.from_name == "Jürgen Groß" and summ.from_addr == "juergen@example.net"
    assert bob.search("INBOX", "subject:köln") == [uid]


def test_pop3_leave_mode_deletes_after_n_days(relay, tmp_path):
    from tui_mail.store.pop3 import Pop3Store

    class Clock:
        t = time.time()

        def __call__(self):
            return self.t

    clock = Clock()
    relay.seed([make_message(i) for i in range(3)])
    with (started_store(relay) as imap,
          closing(Pop3Store(tmp_path / "pop", pop3_settings(relay, mode="leave", leave_days=2),
                            clock=clock)) as store):
        r = store.sync()
        assert (r.downloaded, r.deleted) == (3, 0)
        clock.t += 86400
        relay.deliver(make_message(9))
        assert wait_for(lambda: inbox_total(imap) == 4)
        r = store.sync()
        assert (r.downloaded, r.deleted) == (1, 0)
        clock.t += 86400 + 60              # the first three are now older than 2 days
        r = store.sync()
        assert (r.downloaded, r.deleted) == (0, 3)
        assert inbox_total(imap) == 1
        assert len(store.folder_state("INBOX").uids) == 4


def test_pop3_uidl_is_stable_when_imap_changes_flags(relay, tmp_path):
    from tui_mail.store.pop3 import Pop3Store

    relay.seed([make_message(i) for i in range(3)])
    with (started_store(relay) as imap,
          closing(Pop3Store(tmp_path / "pop", pop3_settings(relay))) as store):
        assert store.sync().downloaded == 3
        known = store.known()
        imap.set_flags("INBOX", [1, 2, 3], ["\\Flagged", "$Label1"])
        r = store.sync()
        assert (r.on_server, r.downloaded) == (3, 0)
        assert store.known() == known


async def test_outbox_keeps_the_message_while_the_relay_is_down_then_sends(relay, tmp_path):
    import asyncio

    from tui_mail.send.outbox import Outbox
    from tui_mail.send.smtp import SmtpSettings, SmtpSubmitter

    class Clock:
        t = 1_000_000.0

        def __call__(self):
            return self.t

    clock = Clock()
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = BOB, BOB, "waited for the relay"
    m.set_content("patience\n")
    sub = SmtpSubmitter(SmtpSettings("127.0.0.1", relay.ports["submission"], "none", user=BOB,
                                     password=PW, timeout=5))
    sent: list[bytes] = []
    ob = Outbox(tmp_path / "outbox", send=sub.send, sent_copy=sent.append, clock=clock).open()
    try:
        ob.enqueue(m)
        (first,) = await ob.process()
        assert first.state == "queued", first
        assert ob.items()[0].state == "queued" and sent == []
        await asyncio.to_thread(relay.start)
        assert await ob.process() == []            # not due yet: backoff
        clock.t += 31
        (second,) = await ob.process()
        assert second.state == "filed", second
        assert ob.items() == [] and len(sent) == 1
    finally:
        ob.close()
    imap = imap_store(relay)
    try:
        assert await asyncio.to_thread(wait_for, lambda: inbox_total(imap) == 1)
    finally:
        imap.close()
        imap.cache.close()


def test_relay_stop_with_an_idling_client_ends_the_session_cleanly(relay, caplog):
    import imaplib
    import logging

    relay.start()
    client = imaplib.IMAP4("127.0.0.1", relay.ports["imap"], timeout=5)
    try:
        client.login(BOB, PW)
        client.select("INBOX")
        tag = client._new_tag().decode()
        client.send(f"{tag} IDLE\r\n".encode())
        assert client.readline().startswith(b"+")
        with caplog.at_level(logging.ERROR):
            relay.stop(settle=False)
        rest = client.readline()
        assert rest in (b"",) or rest.startswith(b"* BYE"), rest
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == [], errors
    finally:
        client.shutdown()
