"""The queue runner and the onward scheduler: how queued mail leaves, and how fast.

**One owner of the queue.** A running relay has exactly one :class:`QueueRunner`; it alone
decides when an entry is tried and writes its state, and its onward scheduler
(``self.remote``, relay/remote.py :class:`~relay.remote.RemoteDelivery`) alone holds the
connections to other servers. A relay that runs several worker processes (issue 14) keeps
both in one process — the accept workers only store and hand over queue IDs — because the
window, dead-destination and retry state below is per relay, not per process.

**The flow.** New messages arrive through :meth:`QueueRunner.add` (called by the SMTP layer
right after the 250), which *kicks* the loop; messages waiting for a retry sit in a heap
ordered by their next attempt (relay/queue/schedule.py). Ready entries are taken in batches
(``batch_size``, ``concurrency`` batches at once) only for the *local* part: all local
deliveries of a batch share one group commit (relay/delivery.py ``deliver_batch``). Then
every entry goes its own way at once: an entry with onward recipients is handed to the
scheduler (``await remote.deliver(entry, recipients)``) and the batch slot is free again; an
entry with nothing onward is recorded straight away. At most ``max_active`` entries (20,000,
Postfix's ``qmgr_message_active_limit``) are in progress at once, which bounds the memory a
huge backlog costs; the rest wait in the ready queue.

**Per-destination queues.** The scheduler keeps one queue per destination (route) with a
concurrency window (relay/queue/destinations.py): ``initial_concurrency`` connections at
first, +1 per delivered message up to ``max_connections_per_destination`` (slow start), halved
by every failed connection (refused, no greeting in time, dropped, 421). A connection opens
only when messages wait and no open one is free, and runs one message after another
(connection reuse, PIPELINING when offered, relay/smtp_client.py), so a destination that
keeps up stays on few connections and one that falls behind gets more. Connection slots
relay-wide (``max_connections``) go round-robin to the destinations waiting for one, and a
connection that has sent ``max_messages_per_connection`` gives its slot up when others wait:
one large destination cannot starve small ones.

**Dead destinations.** ``dead_after`` failed connections in a row make a destination dead
until ``first_retry`` (doubling per further death, at most ``retry_interval``): everything
queued for it is deferred at once and nothing more is tried there until then (one probe
connection decides whether it lives). ``relay queue flush`` revives them. Each wait on the
wire has its RFC 5321 §4.5.3.2 timeout, configurable: greeting 5 min, MAIL/RCPT 5 min, DATA
2 min, each data block 3 min, the final dot 10 min. So a tarpit (never greets), a slow talker
(1 byte/s), a refusing port or a peer answering 4xx occupies at most its own window; mail to
every other destination flows as if it were not there.

**Outcomes are durable as they complete.** Each entry's outcome is recorded as soon as *its*
deliveries are done: state written (tmp + fsync + rename) or the entry removed, with a group
commit across whatever completed meanwhile (:meth:`QueueRunner._commit`), never waiting for
unrelated deliveries; a delivered entry is removed (two unlinks) at once by a thread of its
own (never behind state writes, and the loop never waits on the file system). A crash
between a peer's 250 and that record is SMTP's unavoidable
window: the messages inside it at that instant — at most one per connection with a
transaction in flight (``max_connections_per_destination = 1`` makes it one per crash) — are
sent again after the restart; nothing is lost. Local delivery stays idempotent: an
entry found at start-up is "recovering", and local delivery then checks the Maildir for the
message it may have delivered already.

Failed recipients (and recipients still deferred when ``max_lifetime`` runs out) go to
``self.notifier.bounce(entry, recipients)``; ``notifier.delay_warning`` once after
``delay_warning``. A null-sender message (a bounce) is never bounced. The defaults
(:class:`UnconfiguredRemote`, :class:`LogOnlyNotifier`) defer onward mail with a clear reason
and only log; relay/control.py plugs the SMTP scheduler and the DSN generator in.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from relay.config import RelayConfig
from relay.delivery import deliver_batch
from relay.errors import QueueError
from relay.events import ChangeBus
from relay.log import maillog
from relay.queue import schedule
from relay.queue.spool import DEFERRED, FAILED, QueueEntry, RecipientState, Spool
from relay.remote import DeliveryResult
from relay.users import UserDB

log = logging.getLogger(__name__)


class RemoteDeliverer(Protocol):
    async def deliver(self, entry: QueueEntry, recipients: list[str]) -> dict[str, DeliveryResult]: ...


class Notifier(Protocol):
    async def bounce(self, entry: QueueEntry, recipients: list[RecipientState]) -> None: ...

    async def delay_warning(self, entry: QueueEntry, recipients: list[RecipientState]) -> None: ...


class UnconfiguredRemote:
    """Default onward delivery: keep remote recipients queued, saying why."""

    async def deliver(self, entry: QueueEntry, recipients: list[str]) -> dict[str, DeliveryResult]:
        return dict.fromkeys(recipients, DeliveryResult("deferred", 451, "remote delivery not configured", "4.4.1"))


class LogOnlyNotifier:
    """Default notifier: log that the sender would be told (no DSN is generated)."""

    async def bounce(self, entry: QueueEntry, recipients: list[RecipientState]) -> None:
        maillog().info("%s: sender non-delivery notification not sent (no DSN generator configured) for %s",
                       entry.id, ", ".join(f"<{r.address}>" for r in recipients))

    async def delay_warning(self, entry: QueueEntry, recipients: list[RecipientState]) -> None:
        maillog().info("%s: sender delay notification not sent (no DSN generator configured)", entry.id)


class _CommitLane:
    """Outcomes waiting for one kind of commit, and the thread that does it."""

    def __init__(self, executor: ThreadPoolExecutor):
        self.executor = executor
        self.pending: list[tuple[QueueEntry, asyncio.Future]] = []
        self.running = False


class QueueRunner:
    def __init__(self, cfg: RelayConfig, spool: Spool, bus: ChangeBus, users: UserDB | None = None, *,
                 remote: RemoteDeliverer | None = None, notifier: Notifier | None = None,
                 concurrency: int = 4, batch_size: int = 64, max_active: int = 20000, clock=time.time):
        self.cfg, self.spool, self.bus, self.users = cfg, spool, bus, users
        self._remote: RemoteDeliverer = remote or UnconfiguredRemote()
        self.notifier: Notifier = notifier or LogOnlyNotifier()
        self.concurrency = concurrency  # delivery batches in flight
        self.batch_size = batch_size
        self.max_active = max_active  # entries being delivered at once (Postfix: qmgr_message_active_limit)
        self._inflight = 0
        self.clock = clock
        self.entries: dict[str, QueueEntry] = {}
        self._ready: deque[str] = deque()
        self._ready_ids: set[str] = set()
        self._later: list[tuple[float, str]] = []
        self._busy: set[str] = set()
        self._recovered: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._kick = asyncio.Event()
        self._idle = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(2, thread_name_prefix="local-delivery")
        # state writes (tmp + fsync + rename each) are group-committed by one thread; removals
        # of finished entries (two unlinks each) have a thread of their own, so they never wait
        # behind state writes (a dead destination's thousand deferrals, say), and the event
        # loop never waits on them: an unlink blocks while the file system commits its
        # journal for a concurrent fsync (measured: 10-15 % of the loop's time at 200 msg/s)
        self._state_lane = _CommitLane(ThreadPoolExecutor(1, thread_name_prefix="queue-state"))
        self._remove_lane = _CommitLane(ThreadPoolExecutor(1, thread_name_prefix="queue-remove"))
        # entries on the wire whose local part went through: queue ID -> onward recipients
        # not accepted yet (see _sent_now)
        self._on_wire: dict[str, set[str]] = {}
        self.remote = self._remote  # wires the scheduler's on_sent hook (see the setter)

    @property
    def remote(self) -> RemoteDeliverer:
        return self._remote

    @remote.setter
    def remote(self, remote: RemoteDeliverer) -> None:
        """Plug in onward delivery (relay/control.py does, with the SMTP scheduler); one that
        reports each 250 synchronously (``on_sent``) gets :meth:`_sent_now`."""
        self._remote = remote
        if hasattr(remote, "on_sent"):
            remote.on_sent = self._sent_now

    # ---- control -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load what is in the queue (a previous run's leftovers) and start the loop."""
        for entry in await asyncio.get_running_loop().run_in_executor(self._executor, self.spool.recover):
            self.entries[entry.id] = entry
            self._recovered.add(entry.id)
            self._schedule(entry)
        if self._recovered:
            maillog().info("queue: %d message(s) recovered from the spool", len(self._recovered))
        self._loop_task = asyncio.create_task(self._run(), name="queue-runner")

    def _schedule(self, entry: QueueEntry) -> None:
        if entry.next_attempt <= self.clock():
            if entry.id not in self._ready_ids:
                self._ready_ids.add(entry.id)
                self._ready.append(entry.id)
        else:
            heapq.heappush(self._later, (entry.next_attempt, entry.id))

    def add(self, entry: QueueEntry) -> None:
        """A message was just queued (or should be retried at once): try it now."""
        entry.next_attempt = 0.0
        self.entries[entry.id] = entry
        self._schedule(entry)
        self._idle.clear()
        self._kick.set()

    def adopt(self, qid: str) -> bool:
        """A queue file another process committed (an accept worker's "queued <id>", or the
        master's periodic spool rescan, relay/workers.py): take it in unless it is known
        already. A file that is gone (delivered meanwhile) or incomplete is skipped."""
        if qid in self.entries or self.spool.is_done(qid):   # finished, files not unlinked yet
            return False
        try:
            entry = self.spool.load(qid)
        except QueueError:
            return False
        self.add(entry)
        return True

    def kick(self) -> None:
        """Retry everything that is waiting, now (``relay queue flush``); dead destinations
        are tried again too."""
        revive = getattr(self.remote, "revive", None)
        if revive is not None:
            revive()
        self._later.clear()
        for entry in self.entries.values():
            if entry.id not in self._busy:
                entry.next_attempt = 0.0
                self._schedule(entry)
        self._kick.set()

    def busy(self, qid: str) -> bool:
        """True while a delivery attempt for ``qid`` is in progress."""
        return qid in self._busy

    @property
    def size(self) -> int:
        return len(self.entries)

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Until nothing is due or in progress (tests and the benchmark)."""
        async def idle() -> None:
            while self._ready or self._busy:
                self._idle.clear()
                await self._idle.wait()
        await asyncio.wait_for(idle(), timeout)

    async def stop(self, grace: float = 10.0) -> None:
        """Finish the attempts in progress (up to ``grace`` s), save state, stop the loop."""
        self._stopping = True
        self._kick.set()
        if self._loop_task is not None:
            await self._loop_task
            self._loop_task = None
        # the onward scheduler first: it lets the messages on the wire finish (up to grace)
        # and hands every message still waiting for a connection back, untried
        aclose = getattr(self.remote, "aclose", None)
        if aclose is not None:
            if "grace" in inspect.signature(aclose).parameters:
                await aclose(grace=grace)
            else:
                await aclose()
        while self._tasks:  # local batches and the recording of outcomes (commits included)
            done, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending)
        self._executor.shutdown(wait=True)
        self._state_lane.executor.shutdown(wait=True)
        self._remove_lane.executor.shutdown(wait=True)

    # ---- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            self._kick.clear()
            now = self.clock()
            while self._later and self._later[0][0] <= now:
                when, qid = heapq.heappop(self._later)
                entry = self.entries.get(qid)
                if entry is not None and entry.next_attempt == when and qid not in self._busy:
                    self._schedule(entry)  # otherwise the item is stale (flushed, removed, rescheduled)
            while self._ready and self._inflight < self.concurrency and len(self._busy) < self.max_active:
                batch = []
                while self._ready and len(batch) < self.batch_size and len(self._busy) < self.max_active:
                    qid = self._ready.popleft()
                    self._ready_ids.discard(qid)
                    entry = self.entries.get(qid)
                    if entry is None or qid in self._busy:
                        continue
                    self._busy.add(qid)
                    batch.append(entry)
                if batch:
                    self._inflight += 1
                    task = asyncio.create_task(self._attempt(batch), name=f"deliver-{batch[0].id}+{len(batch) - 1}")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            if not self._ready and not self._busy:
                self._idle.set()
            timeout = None
            if self._later:
                timeout = min(60.0, max(0.0, self._later[0][0] - now))
            try:
                await asyncio.wait_for(self._kick.wait(), timeout)
            except TimeoutError:
                pass

    def _is_local(self, address: str) -> bool:
        return self.cfg.is_local_domain(address.rpartition("@")[2])

    def _deliver_locals(self, entries: list[QueueEntry]) -> dict[str, dict[str, DeliveryResult]]:
        """Worker thread: all local recipients of a batch of entries, one group commit."""
        out: dict[str, dict[str, DeliveryResult]] = {e.id: {} for e in entries}
        jobs, owners = [], []
        for e in entries:
            addrs = [r.address for r in e.pending if self._is_local(r.address)]
            if not addrs:
                continue
            try:
                data = e.read_message()
            except OSError as err:
                for a in addrs:
                    out[e.id][a] = DeliveryResult("deferred", 451, f"cannot read the queue file: {err}", "4.3.0", "local")
                continue
            for a in addrs:
                if self.users is not None and not self.users.exists(a):
                    out[e.id][a] = DeliveryResult("failed", 550, "user unknown in local recipient table", "5.1.1", "local")
                    continue
                jobs.append((e.id, e.sender, a, data, e.id in self._recovered))
                owners.append((e.id, a))
        for (qid, a), res in zip(owners, deliver_batch(self.cfg.mail_dir, jobs, self.cfg.hostname)):
            out[qid][a] = res
        return out

    async def _deliver_remote(self, entry: QueueEntry) -> dict[str, DeliveryResult]:
        remote = [r.address for r in entry.pending if not self._is_local(r.address)]
        if not remote:
            return {}
        try:
            return await self.remote.deliver(entry, remote)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug or crash in onward delivery must not lose the message
            log.exception("onward delivery of %s failed", entry.id)
            return dict.fromkeys(remote, DeliveryResult("deferred", 451, f"onward delivery error: {e}", "4.3.0"))

    async def _attempt(self, entries: list[QueueEntry]) -> None:
        """Local recipients of the whole batch now (one group commit), then each entry on its
        own: an entry with onward recipients is handed to the onward scheduler and recorded
        when *its* deliveries are done; the batch slot is free as soon as the local part is."""
        loop = asyncio.get_running_loop()
        handed_off: set[str] = set()
        try:
            if any(self._is_local(r.address) for e in entries for r in e.pending):
                results = await loop.run_in_executor(self._executor, self._deliver_locals, entries)
            else:  # onward only (a relay's usual case): no thread hand-off for nothing
                results = {e.id: {} for e in entries}
            for e in entries:
                for addr, res in results[e.id].items():
                    if res.status == "sent":
                        self.bus.publish(addr.lower(), "INBOX")
            for e in entries:
                if any(not self._is_local(r.address) for r in e.pending):
                    coro = self._onward(e, results[e.id])
                else:
                    coro = self._finish(e, results[e.id])
                task = asyncio.create_task(coro, name=f"deliver-{e.id}")
                handed_off.add(e.id)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery attempt failed; will retry")
            for e in entries:
                if e.id in handed_off:
                    continue
                maillog().error("%s: delivery attempt failed unexpectedly; will retry", e.id)
                e.next_attempt = self.clock() + self.cfg.queue.first_retry
                self._busy.discard(e.id)
                self._schedule(e)
        finally:
            self._inflight -= 1
            self._kick.set()

    def _sent_now(self, qid: str, recipients: list[str]) -> None:
        """The scheduler's synchronous hook: a server just accepted ``recipients`` of ``qid``.
        When that completes the entry (everything else already delivered), mark it done in
        the spool right now — before that connection sends its next message, so a crash at
        any moment resends at most the one message per connection inside SMTP's window
        (between the peer's commit and this line), not the ones pipelined after it."""
        waiting = self._on_wire.get(qid)
        if waiting is None:
            return
        waiting.difference_update(recipients)
        if not waiting:
            del self._on_wire[qid]
            entry = self.entries.get(qid)
            if entry is not None:
                self.spool.mark_done(entry)

    async def _onward(self, entry: QueueEntry, results: dict[str, DeliveryResult]) -> None:
        if all(r.status == "sent" for r in results.values()):  # the local part (if any) is done
            self._on_wire[entry.id] = {r.address for r in entry.pending if not self._is_local(r.address)}
        try:
            remote = await self._deliver_remote(entry)
        finally:
            self._on_wire.pop(entry.id, None)
        if self._stopping and remote and all(r.code == 421 and r.enhanced == "4.3.2" for r in remote.values()):
            # never tried: the relay is shutting down; leave the entry as it is on disk
            self._busy.discard(entry.id)
            self._kick.set()
            return
        results.update(remote)
        await self._finish(entry, results)

    async def _finish(self, entry: QueueEntry, results: dict[str, DeliveryResult]) -> None:
        """Record one entry's outcome durably, as soon as its deliveries are done."""
        try:
            await self._record(entry, results)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("recording the delivery of %s failed; will retry", entry.id)
            maillog().error("%s: delivery attempt failed unexpectedly; will retry", entry.id)
            entry.next_attempt = self.clock() + self.cfg.queue.first_retry
            self._schedule(entry)
        finally:
            self._busy.discard(entry.id)
            self._kick.set()

    async def _record(self, entry: QueueEntry, results: dict[str, DeliveryResult]) -> None:
        entry.cached = None  # a retry reads the queue file: waiting entries hold no message bytes
        now = self.clock()
        newly_failed: list[RecipientState] = []
        for addr, res in results.items():
            r = entry.recipient(addr)
            r.status = res.status if res.status in ("sent", "deferred", "failed") else DEFERRED
            r.attempts += 1
            r.code, r.text, r.updated = res.code, res.text, now
            relay = getattr(res, "remote_mta", "") or "none"
            maillog().info("%s: to=<%s>, relay=%s, delay=%.2f, dsn=%s, status=%s (%s)", entry.id, addr, relay,
                           now - entry.arrival, res.enhanced or "-", r.status, res.text)
            if r.status == FAILED:
                newly_failed.append(r)
        entry.attempts += 1
        if not entry.done and schedule.expired(self.cfg.queue, entry.arrival, now):
            for r in entry.pending:
                r.status = FAILED
                r.text = f"message expired in the queue; last error: {r.text}"
                maillog().info("%s: to=<%s>, status=expired, returned to sender", entry.id, r.address)
                newly_failed.append(r)
        if newly_failed and entry.sender:
            await self.notifier.bounce(entry, newly_failed)
        if entry.done:
            await self._commit(entry, True)
            maillog().info("%s: removed", entry.id)
            self.entries.pop(entry.id, None)
            self._recovered.discard(entry.id)
            forget = getattr(self.remote, "forget", None)
            if forget is not None:
                forget(entry.id)
            return
        if entry.sender and schedule.needs_delay_warning(self.cfg.queue, entry.arrival, now, entry.warned):
            await self.notifier.delay_warning(entry, entry.pending)
            entry.warned = True
        entry.next_attempt = schedule.next_attempt(self.cfg.queue, entry.arrival, entry.attempts, now, entry.id)
        await self._commit(entry, False)
        note = getattr(self.remote, "note_retry", None)
        if note is not None:
            note(entry.id, entry.next_attempt)
        self._schedule(entry)

    # ---- group commit of outcomes --------------------------------------------------------

    async def _commit(self, entry: QueueEntry, done: bool) -> None:
        """Make one entry's new state durable (removed when ``done``). Outcomes that complete
        while a commit is running share the next one; nothing waits for unrelated deliveries.

        A finished entry is marked done in the spool at once (one append to the page cache,
        no journal wait; relay/queue/spool.py ``done``) — from then on a crash does not send it
        again — and its files are unlinked by a thread of its own, never behind state writes
        (unlinks need no fsync to survive a process crash; after a power loss local delivery
        recognises what it delivered already)."""
        if done:
            self.spool.mark_done(entry)
        lane = self._remove_lane if done else self._state_lane
        fut = asyncio.get_running_loop().create_future()
        lane.pending.append((entry, fut))
        if not lane.running:
            lane.running = True
            task = asyncio.create_task(self._commit_loop(lane, done), name="queue-commit")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await fut

    async def _commit_loop(self, lane: _CommitLane, done: bool) -> None:
        loop = asyncio.get_running_loop()
        failed = False
        try:
            while lane.pending:
                batch, lane.pending = lane.pending, []
                entries = [e for e, _ in batch]
                try:
                    if done:
                        await loop.run_in_executor(lane.executor, self._persist, entries, [])
                    else:
                        await loop.run_in_executor(lane.executor, self._persist, [], entries)
                except Exception as e:  # noqa: BLE001 - handed to every waiter
                    failed = True
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(e)
                    continue
                for _, f in batch:
                    if not f.done():
                        f.set_result(None)
            if done and not failed:  # every entry marked done so far is unlinked: the record can go
                self.spool.compact_done()
        finally:
            lane.running = False

    def _persist(self, done: list[QueueEntry], waiting: list[QueueEntry]) -> None:
        if waiting:
            self.spool.save_states(waiting)
        for entry in done:
            self.spool.remove(entry)
