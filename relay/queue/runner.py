"""The queue runner: takes queued messages to their recipients and keeps retrying the rest.

One asyncio task. New messages arrive through :meth:`QueueRunner.add` (called by the SMTP
layer right after the 250), which *kicks* the loop so local delivery is immediate; messages
waiting for a retry sit in a heap ordered by their next attempt (relay/queue/schedule.py).
Ready messages are taken in batches (up to ``batch_size``; ``concurrency`` batches at once):
all local deliveries of a batch share one group commit (relay/delivery.py ``deliver_batch``)
and so do the queue-state updates, which keeps fsyncs and thread hand-offs per message low.

Per attempt: local recipients (``cfg.domains``) go to their Maildir (relay/delivery.py, in a
worker thread); the others go to ``self.remote`` — any object with
``async deliver(entry, recipients) -> {recipient: DeliveryResult}`` (issue 6 plugs the SMTP
client in here); the default :class:`UnconfiguredRemote` defers them with a clear reason.
Failed recipients (and recipients still deferred when ``max_lifetime`` runs out) go to
``self.notifier.bounce(entry, recipients)``; ``notifier.delay_warning`` once after
``delay_warning``. A null-sender message (a bounce) is never bounced. The default
:class:`LogOnlyNotifier` only logs (DSN generation is relay/queue/dsn.py's job).

Crash safety: state is saved after each attempt; an entry found at start-up is "recovering",
and local delivery then also checks cur/ for the message it may have delivered already.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from relay.config import RelayConfig
from relay.delivery import deliver_batch
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


class QueueRunner:
    def __init__(self, cfg: RelayConfig, spool: Spool, bus: ChangeBus, users: UserDB | None = None, *,
                 remote: RemoteDeliverer | None = None, notifier: Notifier | None = None,
                 concurrency: int = 4, batch_size: int = 64, clock=time.time):
        self.cfg, self.spool, self.bus, self.users = cfg, spool, bus, users
        self.remote: RemoteDeliverer = remote or UnconfiguredRemote()
        self.notifier: Notifier = notifier or LogOnlyNotifier()
        self.concurrency = concurrency  # delivery batches in flight
        self.batch_size = batch_size
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

    def kick(self) -> None:
        """Retry everything that is waiting, now (``relay queue flush``)."""
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
        if self._tasks:
            done, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending)
        self._executor.shutdown(wait=True)
        aclose = getattr(self.remote, "aclose", None)
        if aclose is not None:
            await aclose()

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
            while self._ready and self._inflight < self.concurrency:
                batch = []
                while self._ready and len(batch) < self.batch_size:
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
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._deliver_locals, entries)
            for e in entries:
                for addr, res in results[e.id].items():
                    if res.status == "sent":
                        self.bus.publish(addr.lower(), "INBOX")
            remote = await asyncio.gather(*(self._deliver_remote(e) for e in entries))
            for e, rres in zip(entries, remote):
                results[e.id].update(rres)
            await self._record(entries, results)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery attempt failed; will retry")
            for e in entries:
                maillog().error("%s: delivery attempt failed unexpectedly; will retry", e.id)
                e.next_attempt = self.clock() + self.cfg.queue.first_retry
                self._schedule(e)
        finally:
            for e in entries:
                self._busy.discard(e.id)
            self._inflight -= 1
            self._kick.set()

    async def _record(self, entries: list[QueueEntry], results: dict[str, dict[str, DeliveryResult]]) -> None:
        now = self.clock()
        done, waiting = [], []
        for entry in entries:
            newly_failed: list[RecipientState] = []
            for addr, res in results[entry.id].items():
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
                done.append(entry)
                continue
            if entry.sender and schedule.needs_delay_warning(self.cfg.queue, entry.arrival, now, entry.warned):
                await self.notifier.delay_warning(entry, entry.pending)
                entry.warned = True
            entry.next_attempt = schedule.next_attempt(self.cfg.queue, entry.arrival, entry.attempts, now, entry.id)
            waiting.append(entry)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._persist, done, waiting)
        for entry in done:
            maillog().info("%s: removed", entry.id)
            self.entries.pop(entry.id, None)
            self._recovered.discard(entry.id)
        for entry in waiting:
            self._schedule(entry)

    def _persist(self, done: list[QueueEntry], waiting: list[QueueEntry]) -> None:
        if waiting:
            self.spool.save_states(waiting)
        for entry in done:
            self.spool.remove(entry)
