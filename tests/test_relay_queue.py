"""The durable spool, retry schedule, local delivery and the queue runner (real files)."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from relay.config import QueueConfig, parse_config
from relay.delivery import already_delivered, deliver_local, maildir_for, unique_name
from relay.events import ChangeBus
from relay.queue import schedule
from relay.queue.runner import QueueRunner
from relay.queue.spool import Spool, new_queue_id
from relay.remote import DeliveryResult
from relay.users import UserDB

MSG = b"Subject: hi\r\n\r\nbody\r\n"


def cfg_for(tmp_path, extra=""):
    return parse_config('hostname = "mx.example.org"\ndomains = ["example.org"]\n' + extra, None, tmp_path / "relay")


# ---- spool -------------------------------------------------------------------------------

async def test_store_load_roundtrip_and_state(tmp_path):
    spool = Spool(tmp_path / "q")
    try:
        e = await spool.store("a@x.org", ["b@example.org", "c@far.net"], MSG, {"client": "127.0.0.1"})
        assert e.read_message() == MSG
        e.cached = None
        assert e.read_message() == MSG  # from the file
        assert e.size == len(MSG) and [r.status for r in e.recipients] == ["pending", "pending"]
        assert oct(e.path.stat().st_mode & 0o777) == "0o600"
        # the file is one JSON envelope line followed by the exact message bytes
        head, _, body = e.path.read_bytes().partition(b"\n")
        assert json.loads(head)["recipients"] == ["b@example.org", "c@far.net"] and body == MSG
        e.recipient("b@example.org").status = "sent"
        e.recipient("c@far.net").status = "deferred"
        e.recipient("c@far.net").text = "try later"
        e.next_attempt = 1234.5
        spool.save_state(e)
        again = spool.load(e.id)
        assert again.recipient("c@far.net").text == "try later" and again.next_attempt == 1234.5
        assert [r.address for r in again.pending] == ["c@far.net"]
        assert again.meta == {"client": "127.0.0.1"} and again.read_message() == MSG
        assert spool.count() == 1
        spool.remove(again)
        assert spool.count() == 0 and os.listdir(spool.active_dir) == []
    finally:
        spool.close()


async def test_concurrent_stores_share_directory_fsyncs(tmp_path):
    spool = Spool(tmp_path / "q")
    try:
        entries = await asyncio.gather(*(spool.store("a@x.org", [f"u{i}@example.org"], MSG + b"%d" % i) for i in range(60)))
        assert len({e.id for e in entries}) == 60
        assert spool.count() == 60
        # group commit: 60 concurrent messages went through in fewer batches than messages
        assert spool._writer.items == 60 and spool._writer.batches < 60
    finally:
        spool.close()


def test_recover_cleans_tmp_and_orphans(tmp_path):
    spool = Spool(tmp_path / "q")
    kept = spool.store_sync("", ["b@example.org"], MSG)
    (spool.tmp_dir / "half-written").write_bytes(b"{\"v\":1")
    (spool.active_dir / "0123ORPHAN.state").write_text("{}")
    entries = spool.recover()
    assert [e.id for e in entries] == [kept.id] and entries[0].sender == ""
    assert os.listdir(spool.tmp_dir) == []
    assert sorted(os.listdir(spool.active_dir)) == [kept.id]


def test_an_entry_marked_done_never_comes_back(tmp_path):
    # the runner marks a finished entry done at once and unlinks it later; a kill in between
    # must not bring it back (it would be sent again)
    spool = Spool(tmp_path / "q")
    done = spool.store_sync("a@x.org", ["b@example.org"], MSG)
    kept = spool.store_sync("a@x.org", ["c@example.org"], MSG)
    spool.save_state(done)
    spool.mark_done(done)
    assert spool.ids() == [kept.id] and spool.count() == 1  # `relay queue list` of a stopped relay
    spool.close()  # the process dies here: no unlink happened
    again = Spool(tmp_path / "q")
    assert [e.id for e in again.recover()] == [kept.id]
    assert sorted(os.listdir(again.active_dir)) == [kept.id]
    assert again.done_file.read_bytes() == b""
    # the record is emptied only when asked and when it has grown
    again.mark_done(kept)
    again.mark_done(kept)  # once is enough: one line
    again.remove(kept)
    again.compact_done(min_lines=2)
    assert again.done_file.read_bytes() == kept.id.encode() + b"\n"
    again.compact_done(min_lines=1)
    assert again.done_file.read_bytes() == b"" and again.recover() == []
    again.close()


def test_queue_ids_sort_by_arrival():
    ids = [new_queue_id() for _ in range(50)]
    assert len(set(ids)) == 50
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)


# ---- schedule (pure) ---------------------------------------------------------------------

def test_retry_schedule():
    q = QueueConfig(first_retry=60, retry_interval=1800, max_lifetime=5 * 86400, delay_warning=4 * 3600)
    assert 60 <= schedule.retry_delay(q, 1, "A") <= 66
    assert 1800 <= schedule.retry_delay(q, 2, "A") <= 1980
    assert schedule.retry_delay(q, 5, "A") == schedule.retry_delay(q, 5, "A")  # stable jitter
    arrival = 1_000_000.0
    assert schedule.next_attempt(q, arrival, 3, arrival + 5 * 86400 - 10, "A") == arrival + 5 * 86400
    assert not schedule.expired(q, arrival, arrival + 5 * 86400 - 1)
    assert schedule.expired(q, arrival, arrival + 5 * 86400)
    assert not schedule.needs_delay_warning(q, arrival, arrival + 3600, False)
    assert schedule.needs_delay_warning(q, arrival, arrival + 4 * 3600, False)
    assert not schedule.needs_delay_warning(q, arrival, arrival + 5 * 3600, True)
    assert not schedule.needs_delay_warning(QueueConfig(delay_warning=0), arrival, arrival + 9e9, False)


# ---- local delivery ----------------------------------------------------------------------

def test_unique_name_and_already_delivered(tmp_path):
    n1 = unique_name("ABC", "Bob@Example.org", "mx.example.org")
    assert n1 == unique_name("ABC", "bob@example.org", "mx.example.org")
    assert n1 != unique_name("ABC", "alice@example.org", "mx.example.org")
    root = maildir_for(tmp_path, "Bob@Example.org")
    assert root == tmp_path / "bob@example.org"
    r = deliver_local(tmp_path, "ABC", "a@x.org", "bob@example.org", MSG, "mx.example.org")
    assert r.status == "sent" and r.code == 250
    assert (root / "new" / n1).read_bytes() == b"Return-Path: <a@x.org>\r\nDelivered-To: bob@example.org\r\n" + MSG
    assert os.listdir(root / "tmp") == []
    # a reader moved it to cur/ with flags: a recovering retry must not deliver again
    os.rename(root / "new" / n1, root / "cur" / (n1 + ":2,S"))
    assert already_delivered(root, n1)
    r = deliver_local(tmp_path, "ABC", "a@x.org", "bob@example.org", MSG, "mx.example.org", recovering=True)
    assert r.status == "sent" and "found after restart" in r.text
    assert os.listdir(root / "new") == []
    with pytest.raises(ValueError):
        maildir_for(tmp_path, "../etc")


def test_torn_maildir_file_is_written_again(tmp_path):
    """A power loss between rename and fsync can leave a short file in new/: the retry sees the
    wrong size and writes the message again instead of calling it delivered."""
    root = maildir_for(tmp_path, "bob@example.org")
    name = unique_name("TORN", "bob@example.org", "mx.example.org")
    for d in ("tmp", "new", "cur"):
        (root / d).mkdir(parents=True)
    (root / "new" / name).write_bytes(b"Return-Path: <a@x.org>\r\nDeliv")
    r = deliver_local(tmp_path, "TORN", "a@x.org", "bob@example.org", MSG, "mx.example.org", recovering=True)
    assert r.status == "sent" and "found after restart" not in r.text
    assert (root / "new" / name).read_bytes() == b"Return-Path: <a@x.org>\r\nDelivered-To: bob@example.org\r\n" + MSG


def test_torn_queue_file_is_dropped_at_recovery(tmp_path):
    spool = Spool(tmp_path / "q")
    good = spool.store_sync("a@x.org", ["b@example.org"], MSG)
    torn = spool.store_sync("a@x.org", ["b@example.org"], MSG * 10)
    with open(torn.path, "r+b") as f:
        f.truncate(torn.data_offset + 5)
    assert [e.id for e in spool.recover()] == [good.id]
    assert not torn.path.exists()


# ---- runner ------------------------------------------------------------------------------

class RecordingRemote:
    def __init__(self, status="sent", code=250, text="ok"):
        self.calls = []
        self.result = DeliveryResult(status, code, text, "2.0.0" if status == "sent" else "5.1.1", "mx.far.net")

    async def deliver(self, entry, recipients):
        self.calls.append((entry.id, list(recipients)))
        return dict.fromkeys(recipients, self.result)


class RecordingNotifier:
    def __init__(self):
        self.bounces, self.warnings = [], []

    async def bounce(self, entry, recipients):
        self.bounces.append((entry.id, [r.address for r in recipients]))

    async def delay_warning(self, entry, recipients):
        self.warnings.append(entry.id)


@pytest.fixture
def parts(tmp_path):
    cfg = cfg_for(tmp_path)
    users = UserDB(cfg.users_file)
    users.add("bob@example.org", "pw")
    spool = Spool(cfg.queue_dir)
    yield cfg, users, spool
    spool.close()


async def test_runner_delivers_locally_and_defers_remote_by_default(parts):
    cfg, users, spool = parts
    bus = ChangeBus()
    seen = []
    bus.subscribe("bob@example.org", lambda u, f: seen.append(f))
    runner = QueueRunner(cfg, spool, bus, users)
    await runner.start()
    try:
        e = await spool.store("a@x.org", ["bob@example.org", "carol@far.net"], MSG)
        assert e.cached == MSG  # the first attempt does not read the file back
        runner.add(e)
        await runner.wait_idle()
        assert e.cached is None  # a deferred entry holds no message bytes while it waits
        assert seen == ["INBOX"]
        assert len(os.listdir(cfg.mail_dir / "bob@example.org" / "new")) == 1
        stored = spool.load(e.id)
        assert stored.recipient("bob@example.org").status == "sent"
        far = stored.recipient("carol@far.net")
        assert far.status == "deferred" and far.text == "remote delivery not configured" and far.code == 451
        assert runner.size == 1 and not runner.busy(e.id)
    finally:
        await runner.stop()


async def test_runner_uses_pluggable_remote_and_removes_finished(parts):
    cfg, users, spool = parts
    remote = RecordingRemote()
    runner = QueueRunner(cfg, spool, ChangeBus(), users, remote=remote)
    await runner.start()
    try:
        e = await spool.store("a@x.org", ["carol@far.net", "dave@far.net"], MSG)
        runner.add(e)
        await runner.wait_idle()
        assert remote.calls == [(e.id, ["carol@far.net", "dave@far.net"])]
        assert spool.count() == 0 and runner.size == 0
        assert os.listdir(spool.active_dir) == []  # unlinked, not only marked done
        assert spool.done_ids() == {e.id}  # emptied once 1,000 have gathered
    finally:
        await runner.stop()


async def test_runner_bounces_failures_but_never_bounces_a_bounce(parts):
    cfg, users, spool = parts
    notifier = RecordingNotifier()
    runner = QueueRunner(cfg, spool, ChangeBus(), users, remote=RecordingRemote("failed", 550, "no such user"),
                         notifier=notifier)
    await runner.start()
    try:
        e1 = await spool.store("a@x.org", ["x@far.net", "ghost@example.org"], MSG)
        e2 = await spool.store("", ["y@far.net"], MSG)
        runner.add(e1)
        runner.add(e2)
        await runner.wait_idle()
        assert notifier.bounces == [(e1.id, ["ghost@example.org", "x@far.net"])]
        assert spool.count() == 0
    finally:
        await runner.stop()


async def test_runner_expires_and_warns_with_injected_clock(parts):
    cfg, users, spool = parts
    now = [1_000_000.0]
    notifier = RecordingNotifier()
    runner = QueueRunner(cfg, spool, ChangeBus(), users, notifier=notifier, clock=lambda: now[0])
    e = spool.store_sync("a@x.org", ["far@far.net"], MSG)
    # pretend it arrived long ago: rewrite the envelope's arrival through a reload
    await runner.start()
    try:
        entry = runner.entries[e.id]
        entry.arrival = now[0] - 5 * 3600  # five hours old: delay warning due
        runner.kick()
        await runner.wait_idle()
        assert notifier.warnings == [e.id] and notifier.bounces == []
        assert entry.next_attempt > now[0]
        now[0] = entry.arrival + 5 * 86400 + 1  # past max_lifetime
        runner.kick()
        await runner.wait_idle()
        assert notifier.bounces == [(e.id, ["far@far.net"])]
        assert spool.count() == 0
    finally:
        await runner.stop()


async def test_runner_recovers_entries_delivered_before_a_crash(parts):
    cfg, users, spool = parts
    e = spool.store_sync("a@x.org", ["bob@example.org"], MSG)
    # the previous run delivered (and a reader already saw it) but died before recording it
    r = deliver_local(cfg.mail_dir, e.id, "a@x.org", "bob@example.org", e.read_message(), cfg.hostname)
    assert r.status == "sent"
    root = cfg.mail_dir / "bob@example.org"
    [name] = os.listdir(root / "new")
    os.rename(root / "new" / name, root / "cur" / (name + ":2,S"))
    runner = QueueRunner(cfg, Spool(cfg.queue_dir), ChangeBus(), users)
    await runner.start()
    try:
        await runner.wait_idle()
        assert os.listdir(root / "new") == [] and len(os.listdir(root / "cur")) == 1
        assert spool.count() == 0
    finally:
        await runner.stop()
        runner.spool.close()


async def test_runner_survives_a_crashing_remote(parts):
    cfg, users, spool = parts

    class Broken:
        async def deliver(self, entry, recipients):
            raise RuntimeError("boom")

    runner = QueueRunner(cfg, spool, ChangeBus(), users, remote=Broken())
    await runner.start()
    try:
        e = await spool.store("a@x.org", ["far@far.net"], MSG)
        runner.add(e)
        await runner.wait_idle()
        r = spool.load(e.id).recipient("far@far.net")
        assert r.status == "deferred" and "boom" in r.text
    finally:
        await runner.stop()


async def test_runner_keeps_at_most_max_active_entries_in_progress(parts):
    cfg, users, spool = parts
    gate = asyncio.Event()
    seen: list[int] = []

    class Slow:  # a destination that takes its time: everything handed over waits here
        def __init__(self):
            self.waiting = 0

        async def deliver(self, entry, recipients):
            self.waiting += 1
            seen.append(self.waiting)
            await gate.wait()
            self.waiting -= 1
            return dict.fromkeys(recipients, DeliveryResult("sent", 250, "ok", "2.0.0", "mx.far.net"))

    runner = QueueRunner(cfg, spool, ChangeBus(), users, remote=Slow(), max_active=3)
    await runner.start()
    try:
        for i in range(10):
            runner.add(await spool.store("a@x.org", [f"u{i}@far.net"], MSG))
        await asyncio.sleep(0.2)
        assert max(seen) == 3 and len(runner._busy) == 3
        gate.set()
        await runner.wait_idle()
        assert spool.count() == 0 and len(seen) == 10 and max(seen) <= 3
    finally:
        await runner.stop()
