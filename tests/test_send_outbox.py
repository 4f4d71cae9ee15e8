"""The outbox: durable enqueue, send + Sent copy, server down then up (transient → retry → sent),
5xx → failed with the reply, and crash safety by killing a real sending process between steps."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import textwrap
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.postfix_peer import SmtpSink, free_port
from tui_mail.errors import SendError
from tui_mail.send.outbox import OUTBOX, STATE_FILE, Outbox, backoff
from tui_mail.send.smtp import SmtpSettings, SmtpSubmitter
from tui_mail.store.base import FLAGGED, SEEN
from tui_mail.store.local import LocalStore

ROOT = Path(__file__).resolve().parent.parent


def compose(n: int = 1) -> EmailMessage:
    m = EmailMessage()
    m["From"] = "Alice <alice@crepes.fr>"
    m["To"] = "bob@example.org"
    m["Bcc"] = "secret@example.net"
    m["Subject"] = f"Outbox test {n}"
    m["Message-ID"] = f"<ob{n}@crepes.fr>"
    m.set_content(f"message {n}\n")
    return m


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def sent(tmp_path):
    store = LocalStore(tmp_path / "local")
    store.connect()
    store.ensure_folder("Sent")
    yield store
    store.close()


def make_outbox(tmp_path, port: int, sent: LocalStore, clock=None) -> Outbox:
    sub = SmtpSubmitter(SmtpSettings("127.0.0.1", port, "none", timeout=5))
    return Outbox(tmp_path / "outbox", send=sub.send,
                  sent_copy=lambda data: sent.append("Sent", data, flags=[SEEN]),
                  clock=clock or Clock()).open()


def test_backoff_doubles_and_caps():
    assert [backoff(n) for n in (1, 2, 3)] == [30, 60, 120]
    assert backoff(50) == 1800


async def test_enqueue_is_durable_and_visible_as_folder(tmp_path, sent):
    ob = make_outbox(tmp_path, free_port(), sent)
    try:
        key = ob.enqueue(compose())
        (folder,) = ob.store.list_folders()
        assert (folder.name, folder.role, folder.total) == ("Outbox", "outbox", 1)
        (item,) = ob.items()
        assert item.key == key and item.state == "queued" and item.subject == "Outbox test 1"
        data = ob.store.fetch_message(OUTBOX, item.uid)
        assert b"Bcc: secret@example.net" in data  # kept: the envelope is rebuilt from the file
        with pytest.raises(SendError):
            bad = compose()
            del bad["To"], bad["Bcc"]
            ob.enqueue(bad)
        assert len(ob.items()) == 1
    finally:
        ob.close()


async def test_send_files_copy_in_sent_and_empties_outbox(tmp_path, sent):
    async with SmtpSink() as sink:
        ob = make_outbox(tmp_path, sink.port, sent)
        try:
            ob.enqueue(compose(1))
            ob.enqueue(compose(2))
            outcomes = await ob.process()
        finally:
            ob.close()
    assert [o.state for o in outcomes] == ["filed", "filed"]
    assert "queued as SINK1" in outcomes[0].detail
    assert [r.message["Subject"] for r in sink.received] == ["Outbox test 1", "Outbox test 2"]
    assert all(r.message["Bcc"] is None and "secret@example.net" in r.recipients for r in sink.received)
    uids = sent.folder_state("Sent").uids
    assert len(uids) == 2 and all(s.flags == {SEEN} for s in sent.summaries("Sent", uids).values())
    with Outbox(tmp_path / "outbox", send=None) as again:  # type: ignore[arg-type]
        assert again.items() == []
        assert os.listdir(tmp_path / "outbox" / "new") == [] and os.listdir(tmp_path / "outbox" / "cur") == []


async def test_server_down_then_up(tmp_path, sent):
    port = free_port()
    clock = Clock()
    ob = make_outbox(tmp_path, port, sent, clock)
    try:
        ob.enqueue(compose())
        (first,) = await ob.process()
        assert first.state == "queued" and "Cannot reach" in first.detail
        (item,) = ob.items()
        assert item.attempts == 1 and item.next_try == clock.t + 30 and "Cannot reach" in item.last_error
        assert await ob.process() == []          # not due yet
        clock.t += 31
        (second,) = await ob.process()           # still down: backoff doubles
        assert second.state == "queued" and ob.items()[0].next_try == clock.t + 60
        clock.t += 61
        async with SmtpSink(port=port) as sink:  # the server comes back on the same port
            (third,) = await ob.process()
        assert third.state == "filed" and len(sink.received) == 1
        assert ob.items() == [] and len(sent.folder_state("Sent").uids) == 1
    finally:
        ob.close()


async def test_permanent_failure_kept_with_reply_then_retry(tmp_path, sent):
    async with SmtpSink(rcpt_reply="550 5.1.1 <bob@example.org>: Recipient address rejected") as sink:
        ob = make_outbox(tmp_path, sink.port, sent)
        try:
            ob.enqueue(compose())
            (o,) = await ob.process()
            assert o.state == "failed" and "Recipient address rejected" in o.detail
            (item,) = ob.items()
            assert item.state == "failed" and item.code == 550 and "550" in item.last_error
            assert FLAGGED in ob.store.summaries(OUTBOX, [item.uid])[item.uid].flags
            assert await ob.process() == []      # failed messages are not retried on their own
            sink.rcpt_reply = None
            ob.retry(item.key)
            (again,) = await ob.process()
            assert again.state == "filed" and len(sink.received) == 1
        finally:
            ob.close()


async def test_sent_copy_failure_does_not_resend(tmp_path, sent):
    calls = []

    def broken_copy(data: bytes) -> None:
        calls.append(data)
        if len(calls) == 1:
            from tui_mail.errors import ConnectError
            raise ConnectError("IMAP server went away")
        sent.append("Sent", data, flags=[SEEN])

    async with SmtpSink() as sink:
        sub = SmtpSubmitter(SmtpSettings("127.0.0.1", sink.port, "none"))
        with Outbox(tmp_path / "outbox", send=sub.send, sent_copy=broken_copy) as ob:
            ob.enqueue(compose())
            (o,) = await ob.process()
            assert o.state == "sent" and ob.items()[0].state == "sent"
            (o2,) = await ob.process()
            assert o2.state == "filed"
    assert len(sink.received) == 1 and len(calls) == 2
    assert len(sent.folder_state("Sent").uids) == 1


CHILD = textwrap.dedent("""
    import asyncio, sys, time
    sys.path.insert(0, {root!r})
    from tui_mail.send.outbox import Outbox
    from tui_mail.send.smtp import SmtpSettings, SmtpSubmitter
    from tui_mail.store.local import LocalStore

    def copy(data):
        if {hang_in_copy!r}:
            time.sleep(60)          # killed here: after the 250, before the Sent copy
        s = LocalStore({sent!r}); s.connect(); s.append("Sent", data); s.close()

    sub = SmtpSubmitter(SmtpSettings("127.0.0.1", {port}, "none", timeout=60))
    with Outbox({outbox!r}, send=sub.send, sent_copy=copy) as ob:
        asyncio.run(ob.process())
""")


async def run_child_until(tmp_path, sink, sent, *, hang_in_copy: bool, state: str, also=lambda: True):
    code = CHILD.format(root=str(ROOT), hang_in_copy=hang_in_copy, sent=str(sent.root),
                        port=sink.port, outbox=str(tmp_path / "outbox"))
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code,
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        for _ in range(400):
            await asyncio.sleep(0.025)
            db = sqlite3.connect(tmp_path / "outbox" / STATE_FILE)
            try:
                rows = db.execute("SELECT state FROM items").fetchall()
            except sqlite3.OperationalError:
                rows = []
            finally:
                db.close()
            if rows and rows[0][0] == state and also():
                break
        else:
            raise AssertionError(f"child never reached {state}: {(await proc.stderr.read())[-2000:]!r}")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await proc.stderr.read()


async def test_crash_while_sending_is_held_not_resent(tmp_path, sent):
    async with SmtpSink(data_delay=30) as sink:   # the server sits on the end of DATA
        ob = Outbox(tmp_path / "outbox", send=None).open()  # type: ignore[arg-type]
        ob.enqueue(compose())
        ob.close()
        await run_child_until(tmp_path, sink, sent, hang_in_copy=False, state="sending",
                              also=lambda: sink.data_started == 1)  # the message is on the wire
        sink.data_delay = 0
        sub = SmtpSubmitter(SmtpSettings("127.0.0.1", sink.port, "none"))
        with Outbox(tmp_path / "outbox", send=sub.send,
                    sent_copy=lambda d: sent.append("Sent", d)) as ob:
            assert await ob.process() == []       # not sent again blindly
            (item,) = ob.items()
            assert item.state == "held" and "may have been delivered" in item.last_error
            assert sink.data_started == 1 and sink.received == []
            ob.retry(item.key)                    # the user decides
            (o,) = await ob.process()
            assert o.state == "filed" and len(sink.received) == 1


async def test_crash_after_250_files_copy_without_resending(tmp_path, sent):
    async with SmtpSink() as sink:
        ob = Outbox(tmp_path / "outbox", send=None).open()  # type: ignore[arg-type]
        ob.enqueue(compose())
        ob.close()
        await run_child_until(tmp_path, sink, sent, hang_in_copy=True, state="sent")
        assert len(sink.received) == 1
        sub = SmtpSubmitter(SmtpSettings("127.0.0.1", sink.port, "none"))
        with Outbox(tmp_path / "outbox", send=sub.send,
                    sent_copy=lambda d: sent.append("Sent", d, flags=[SEEN])) as ob:
            (o,) = await ob.process()
            assert o.state == "filed" and ob.items() == []
        assert len(sink.received) == 1            # never sent twice
        assert len(sent.folder_state("Sent").uids) == 1


async def test_file_without_row_is_queued(tmp_path, sent):
    """A crash right after the file became durable (or a message moved in by hand)."""
    box = LocalStore(tmp_path / "outbox", root_name=OUTBOX)
    with box:
        box.append(OUTBOX, compose(7).as_bytes())
    async with SmtpSink() as sink:
        ob = make_outbox(tmp_path, sink.port, sent)
        try:
            assert [i.state for i in ob.items()] == ["queued"]
            (o,) = await ob.process()
            assert o.state == "filed" and sink.received[0].message["Subject"] == "Outbox test 7"
        finally:
            ob.close()


async def test_second_process_is_locked_out(tmp_path, sent):
    async with SmtpSink(data_delay=0.5) as sink:
        a = make_outbox(tmp_path, sink.port, sent)
        b = make_outbox(tmp_path, sink.port, sent)
        try:
            a.enqueue(compose())
            first, second = await asyncio.gather(a.process(), b.process())
        finally:
            a.close()
            b.close()
    assert sorted([len(first), len(second)]) == [0, 1] and len(sink.received) == 1


async def test_enqueue_composed_keeps_hidden_recipients(tmp_path, sent):
    compose_mod = pytest.importorskip("tui_mail.mail.compose")
    Draft, build_message = compose_mod.Draft, compose_mod.build_message

    composed = build_message(Draft(from_="Alice <alice@crepes.fr>", to="bob@example.org",
                                   bcc="hidden@example.net", subject="From a Draft", body="hi\n"))
    assert b"hidden@example.net" not in composed.data
    async with SmtpSink() as sink:
        ob = make_outbox(tmp_path, sink.port, sent)
        try:
            ob.enqueue(composed)
            (o,) = await ob.process()
        finally:
            ob.close()
    (got,) = sink.received
    assert o.state == "filed" and got.recipients == ["bob@example.org", "hidden@example.net"]
    assert b"hidden@example.net" not in got.data


async def test_outbox_with_real_postfix_down_then_up(tmp_path, sent):
    """Transient failure while nothing listens, then a real Postfix comes up on that port."""
    from tests.postfix_peer import Postfix, postfix_available

    if not postfix_available():
        pytest.skip("postfix not installed")
    port = free_port()
    clock = Clock()
    ob = make_outbox(tmp_path, port, sent, clock)
    pf = Postfix(port=port)
    try:
        m = compose(5)
        m.replace_header("Bcc", "carol@example.org")
        ob.enqueue(m)
        (first,) = await ob.process()
        assert first.state == "queued" and ob.items()[0].attempts == 1
        await asyncio.to_thread(pf.start)
        clock.t += backoff(1) + 1
        (second,) = await ob.process()
        assert second.state == "filed" and "queued as" in second.detail, second.detail
        (delivered,) = await asyncio.to_thread(pf.wait_for, "bob", 1)
        assert b"Subject: Outbox test 5" in delivered and b"carol@" not in delivered
        (to_carol,) = await asyncio.to_thread(pf.wait_for, "carol", 1)   # the Bcc recipient
        assert b"Delivered-To: carol@example.org" in to_carol and b"Bcc" not in to_carol
        assert ob.items() == [] and len(sent.folder_state("Sent").uids) == 1
        # and a real 5xx: Postfix knows no such user → failed, with Postfix's own words
        bad = compose(6)
        bad.replace_header("To", "nobody-here@example.net")
        del bad["Bcc"]
        ob.enqueue(bad)
        (third,) = await ob.process()
        assert third.state == "failed" and "550" in third.detail and "User unknown" in third.detail
    finally:
        ob.close()
        await asyncio.to_thread(pf.cleanup)


async def test_gives_up_after_five_days(tmp_path, sent):
    clock = Clock()
    ob = make_outbox(tmp_path, free_port(), sent, clock)
    try:
        ob.enqueue(compose())
        (o,) = await ob.process()
        assert o.state == "queued"
        clock.t += 5 * 24 * 3600 + 1
        (o,) = await ob.process()
        assert o.state == "failed" and "Gave up after 2 tries over 5 days" in o.detail
        (item,) = ob.items()
        assert item.state == "failed" and item.code is None
    finally:
        ob.close()


async def test_opening_while_another_instance_sends_does_not_hold_its_message(tmp_path, sent):
    async with SmtpSink(data_delay=0.5) as sink:
        a = make_outbox(tmp_path, sink.port, sent)
        try:
            a.enqueue(compose())
            task = asyncio.create_task(a.process())
            while sink.data_started == 0:
                await asyncio.sleep(0.01)
            b = make_outbox(tmp_path, sink.port, sent)     # e.g. `tui-mail send` starting up
            try:
                assert [i.state for i in b.items()] == ["sending"]
                assert await b.process() == []             # locked out, and nothing held
            finally:
                b.close()
            (o,) = await task
            assert o.state == "filed" and len(sink.received) == 1
        finally:
            a.close()


async def test_crash_while_connecting_stays_queued_and_is_sent_later(tmp_path, sent):
    """Killed while the server had not even greeted: nothing reached it, so no hold."""
    async def silent(reader, writer):   # accepts TCP, never says 220
        try:
            await reader.read()
        finally:
            writer.close()

    silent_server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = silent_server.sockets[0].getsockname()[1]
    try:
        ob = Outbox(tmp_path / "outbox", send=None).open()  # type: ignore[arg-type]
        ob.enqueue(compose())
        ob.close()
        fake_sink = SimpleNamespace(port=port)
        await run_child_until(tmp_path, fake_sink, sent, hang_in_copy=False, state="queued",
                              also=lambda: attempts(tmp_path) == 1)
    finally:
        silent_server.close()
        await silent_server.wait_closed()
    async with SmtpSink() as sink:
        sub = SmtpSubmitter(SmtpSettings("127.0.0.1", sink.port, "none"))
        with Outbox(tmp_path / "outbox", send=sub.send, sent_copy=lambda d: sent.append("Sent", d)) as ob:
            (o,) = await ob.process()
            assert o.state == "filed" and len(sink.received) == 1


def attempts(tmp_path) -> int:
    db = sqlite3.connect(tmp_path / "outbox" / STATE_FILE)
    try:
        row = db.execute("SELECT attempts FROM items").fetchone()
    except sqlite3.OperationalError:
        row = None
    finally:
        db.close()
    return row[0] if row else 0
