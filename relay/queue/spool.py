"""The durable queue: every accepted message lives here until each recipient is done.

Layout under ``queue_dir``::

    tmp/               partial writes (anything here at start-up is garbage and removed)
    active/<ID>        the queue file: one line of envelope JSON, then the message bytes
    active/<ID>.state  per-recipient progress (JSON), rewritten after each delivery attempt

The envelope line holds what never changes (sender, recipients, arrival time, client, size);
the ``.state`` file holds what does (per-recipient status/attempts/last error, next attempt).
Keeping both in one queue file means one fsync per accepted message, like Postfix's queue file.

Durability rules (DESIGN.md §4): a queue file is written to ``tmp/``, fsynced, renamed into
``active/`` and then ``active/`` itself is fsynced; only then does :meth:`Spool.store` return
and the SMTP layer answer 250. Writes are *group-committed* by one writer thread
(:class:`DurableWriter`): every message that arrived while a batch was being made durable goes
into the next batch — write all, fsync all, rename all, one directory fsync — which is what lets
many sessions commit faster than one fsync each, without a thread hand-off per file. State files use the same tmp + fsync + rename +
dir fsync. A finished entry is removed queue file first, then state, so a crash in between
leaves only an orphaned ``.state`` (cleaned at start) and never resets progress.

``done`` (beside ``active/``) lists, one per line, the IDs of finished entries whose files may
not be unlinked yet. The queue runner appends an ID the moment an entry is finished
(:meth:`Spool.mark_done`: one ``write`` to the page cache, microseconds, survives a SIGKILL),
and unlinks later in a thread — an unlink waits for the file system's journal while fsyncs run
(measured 8-16 ms median, up to 100 ms at 200 msg/s). Whatever ``done`` lists is dropped at
start-up and never listed, so the entry does not go out a second time after a kill; the file
is emptied whenever every entry it names is unlinked. Like the unlinks it is not fsynced: after
a power loss an entry may come back, and its recipients may get it twice (never lost).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import secrets
import threading
import time
import concurrent.futures as cf
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from relay.errors import QueueError

log = logging.getLogger("relay.queue")

PENDING, SENT, DEFERRED, FAILED = "pending", "sent", "deferred", "failed"
CACHE_MAX = 64 * 1024  # messages up to this size stay in memory for their first delivery attempt
DONE_STATES = (SENT, FAILED)


_ID_RANDOM = random.Random(secrets.randbits(64))  # seeded once; IDs need uniqueness, not secrecy


def new_queue_id() -> str:
    """Sortable by arrival, unique: 13 hex digits of microseconds + 8 random hex digits."""
    return f"{time.time_ns() // 1000:013X}{_ID_RANDOM.getrandbits(32):08X}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class RecipientState:
    address: str
    status: str = PENDING        # pending | sent | deferred | failed
    attempts: int = 0
    code: int = 0                # last SMTP code (or 250 for local delivery)
    text: str = ""               # last result text / error
    updated: float = 0.0

    @property
    def done(self) -> bool:
        return self.status in DONE_STATES


@dataclass
class QueueEntry:
    """One queued message. ``recipients`` carry per-recipient progress."""

    id: str
    sender: str                              # "" = null sender (a bounce)
    recipients: list[RecipientState]
    arrival: float
    size: int
    path: Path
    data_offset: int
    next_attempt: float = 0.0
    attempts: int = 0
    warned: bool = False                     # delay warning sent
    meta: dict = field(default_factory=dict)  # client ip, helo, auth user, protocol
    # the message bytes as just accepted (small messages only), so the first delivery attempt
    # does not read back the file it was queued in; the runner drops them after that attempt
    cached: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def pending(self) -> list[RecipientState]:
        return [r for r in self.recipients if not r.done]

    @property
    def done(self) -> bool:
        return all(r.done for r in self.recipients)

    def recipient(self, address: str) -> RecipientState:
        for r in self.recipients:
            if r.address == address:
                return r
        raise KeyError(address)

    def read_message(self) -> bytes:
        if self.cached is not None:
            return self.cached
        with open(self.path, "rb") as f:
            f.seek(self.data_offset)
            return f.read()

    def state_dict(self) -> dict:
        return {"next_attempt": self.next_attempt, "attempts": self.attempts, "warned": self.warned,
                "recipients": [asdict(r) for r in self.recipients]}


def write_batch(items: list[tuple[Path, Path, bytes]], mode: int = 0o600, *,
                sync_before_rename: bool = True) -> list[OSError | None]:
    """Make many files durable at once: write every ``tmp``, fsync them, rename each to its
    ``final`` name, then fsync each distinct target directory once. Returns one error (or
    None) per item. On ext4 the first fsync commits the journal for all, so N files cost
    little more than one; this is the group commit behind the queue's accept rate.

    ``sync_before_rename=False`` renames first and fsyncs after, so one journal commit covers
    data and names together (half the commits). Only for files whose readers can tell a
    complete file from a torn one after a power loss — queue files carry their size."""
    errs: list[OSError | None] = [None] * len(items)
    fds: dict[int, int] = {}
    dirs: dict[Path, list[int]] = {}

    def rename(i: int) -> None:
        tmp, final, _ = items[i]
        try:
            os.replace(tmp, final)
            dirs.setdefault(final.parent, []).append(i)
        except OSError as e:
            errs[i] = e

    for i, (tmp, _final, data) in enumerate(items):
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            fds[i] = fd
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as e:
            errs[i] = e
        if not sync_before_rename and errs[i] is None:
            rename(i)
    for i, fd in fds.items():
        try:
            if errs[i] is None:
                os.fsync(fd)
        except OSError as e:
            errs[i] = e
        finally:
            os.close(fd)
    for i, (tmp, final, _data) in enumerate(items):
        if sync_before_rename and errs[i] is None:
            rename(i)
        if errs[i] is not None:
            for p in (tmp, final) if not sync_before_rename else (tmp,):
                try:
                    os.unlink(p)
                except OSError:
                    pass
    for d, idx in dirs.items():
        try:
            fsync_dir(d)
        except OSError as e:
            for i in idx:
                errs[i] = e
    return errs


class DurableWriter:
    """A few threads that run :func:`write_batch` over whatever was submitted while they were
    busy (group commit): a message arriving at a quiet moment is written at once by an idle
    thread; under load, everything that queued up during one fsync shares the next. Futures are ``concurrent.futures`` ones so both
    event-loop code (``asyncio.wrap_future``) and threads can wait on them."""

    def __init__(self, name: str = "spool-writer", *, sync_before_rename: bool = True, threads: int = 4):
        self.name = name
        self.sync_before_rename = sync_before_rename
        self.threads = threads
        self._cv = threading.Condition()
        self._jobs: list[tuple[list, cf.Future]] = []
        self._workers: list[threading.Thread] = []
        self._idle = 0
        self._closed = False
        self.batches = 0
        self.items = 0

    def submit(self, items: list[tuple[Path, Path, bytes]]) -> cf.Future:
        fut: cf.Future = cf.Future()
        with self._cv:
            if self._closed:
                raise QueueError("the queue is shutting down")
            self._jobs.append((items, fut))
            # an idle writer takes the job at once; if all are busy it joins the next batch
            if not self._idle and len(self._workers) < self.threads:
                t = threading.Thread(target=self._run, name=f"{self.name}-{len(self._workers)}", daemon=True)
                self._workers.append(t)
                t.start()
            self._cv.notify()
        return fut

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._closed:
                    self._idle += 1
                    self._cv.wait()
                    self._idle -= 1
                if not self._jobs:
                    return
                batch, self._jobs = self._jobs, []
            # a cancelled job is still written (it may be a 250 in flight); only its result is dropped
            running = [fut.set_running_or_notify_cancel() for _, fut in batch]
            flat = [it for items, _ in batch for it in items]
            try:
                errs = write_batch(flat, sync_before_rename=self.sync_before_rename)
            except BaseException as e:  # never leave a waiter hanging
                for (_, fut), run in zip(batch, running):
                    if run:
                        fut.set_exception(e)
                continue
            self.batches += 1
            self.items += len(flat)
            k = 0
            for (items, fut), run in zip(batch, running):
                if run:
                    fut.set_result(errs[k:k + len(items)])
                k += len(items)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
            workers = list(self._workers)
        for t in workers:
            t.join()


class Spool:
    """The queue directory. Thread-safe for distinct entries; async ``store`` for the SMTP path."""

    def __init__(self, queue_dir: str | os.PathLike):
        self.dir = Path(queue_dir)
        self.tmp_dir = self.dir / "tmp"
        self.active_dir = self.dir / "active"
        for d in (self.dir, self.tmp_dir, self.active_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._writer: DurableWriter | None = None
        self.done_file = self.dir / "done"
        self._done_fd: int | None = None
        self._marked: set[str] = set()  # IDs in ``done`` since it was last emptied

    # ---- writing -------------------------------------------------------------------------

    def _encode(self, qid: str, sender: str, recipients: list[str], data: bytes, meta: dict) -> tuple[bytes, dict]:
        env = {"v": 1, "id": qid, "sender": sender, "recipients": list(recipients),
               "arrival": time.time(), "size": len(data), "meta": meta}
        head = json.dumps(env, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"
        return head, env

    def _prepare(self, sender: str, recipients: list[str], data: bytes, meta: dict | None,
                 qid: str | None) -> tuple[QueueEntry, bytes]:
        if not recipients:
            raise QueueError("a queued message needs at least one recipient")
        qid = qid or new_queue_id()
        head, env = self._encode(qid, sender, recipients, data, meta or {})
        return self._entry_from(env, self.active_dir / qid, len(head), None), head + data

    async def store(self, sender: str, recipients: list[str], data: bytes, meta: dict | None = None,
                    qid: str | None = None,
                    on_committed: Callable[[QueueEntry], None] | None = None) -> QueueEntry:
        """Queue a message durably (file and directory fsynced) and return its entry.

        ``qid``: a queue ID from :func:`new_queue_id` chosen earlier (it is in our Received
        header); by default a new one. ``on_committed(entry)`` runs in the event loop once the
        entry is durable, even if the awaiting task was cancelled meanwhile (a client that
        vanished during the fsync): a committed message must reach the queue runner."""
        entry, payload = self._prepare(sender, list(recipients), data, meta, qid)
        if isinstance(data, bytes) and len(data) <= CACHE_MAX:
            entry.cached = data
        if self._writer is None:
            # queue files are self-checking (envelope size vs file size, see load()), so the
            # writer may rename before fsync and commit data and name in one journal commit.
            # Fsync first, rename after would keep a message out of active/ until it is durable
            # (a kill during the fsync then could not leave an unacknowledged message queued),
            # at the price of a second journal commit (+0.3-0.5 ms per group commit here); in
            # bench/onward_soak.py it made no measurable difference to duplicates per kill
            # (4.0 per sender kill either way) once finished entries were recorded at once
            # (``done``), so the single commit stays.
            self._writer = DurableWriter(sync_before_rename=False)
        afut = asyncio.wrap_future(self._writer.submit([(self.tmp_dir / entry.id, entry.path, payload)]))
        if on_committed is not None:
            def committed(f: asyncio.Future) -> None:
                if not f.cancelled() and f.exception() is None and f.result()[0] is None:
                    on_committed(entry)
            afut.add_done_callback(committed)
        [err] = await asyncio.shield(afut)
        if err is not None:
            raise QueueError(f"cannot write the queue file {entry.path}: {err}") from err
        return entry

    def store_sync(self, sender: str, recipients: list[str], data: bytes, meta: dict | None = None,
                   qid: str | None = None) -> QueueEntry:
        """Blocking form of :meth:`store` (bounces, tools, tests)."""
        entry, payload = self._prepare(sender, list(recipients), data, meta, qid)
        [err] = write_batch([(self.tmp_dir / entry.id, entry.path, payload)])
        if err is not None:
            raise QueueError(f"cannot write the queue file {entry.path}: {err}") from err
        return entry

    def save_state(self, entry: QueueEntry) -> None:
        """Persist an entry's per-recipient progress (atomic, fsynced)."""
        self.save_states([entry])

    def save_states(self, entries: list[QueueEntry]) -> None:
        """Persist several entries' progress with one group commit (blocking)."""
        items = [(self.tmp_dir / (e.id + ".state"), e.path.with_name(e.id + ".state"),
                  json.dumps(e.state_dict(), separators=(",", ":")).encode()) for e in entries]
        for (_, final, _), err in zip(items, write_batch(items)):
            if err is not None:
                raise QueueError(f"cannot write {final}: {err}") from err

    def mark_done(self, entry: QueueEntry) -> None:
        """Record at once that ``entry`` is finished (see ``done`` in the module doc); the
        unlinks (:meth:`remove`) may follow later. Only the queue's owner calls this."""
        if entry.id in self._marked:
            return
        if self._done_fd is None:
            self._done_fd = os.open(self.done_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(self._done_fd, entry.id.encode("ascii") + b"\n")
        self._marked.add(entry.id)

    def is_done(self, qid: str) -> bool:
        """True if ``qid`` was marked done in this process (its files may not be unlinked yet)."""
        return qid in self._marked

    def compact_done(self, min_lines: int = 1000) -> None:
        """Empty ``done`` once it holds ``min_lines`` IDs; call only when every entry it names
        has been removed (the runner does when its removals are idle)."""
        if self._done_fd is not None and len(self._marked) >= min_lines:
            os.ftruncate(self._done_fd, 0)
            self._marked.clear()

    def done_ids(self) -> set[str]:
        try:
            ids = self.done_file.read_text("ascii", "replace").split()
        except FileNotFoundError:
            return set()
        return {i for i in ids if "/" not in i and not i.startswith(".")}

    def remove(self, entry: QueueEntry) -> None:
        """Drop a finished entry: queue file first, then its state (see module doc).

        No directory fsync: if the unlink is lost (power failure), the entry comes back with
        its state and local delivery recognises the message it already delivered."""
        base = os.fspath(entry.path)
        for p in (base, base + ".state"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    # ---- reading -------------------------------------------------------------------------

    def _entry_from(self, env: dict, path: Path, offset: int, state: dict | None) -> QueueEntry:
        rcpts = [RecipientState(a) for a in env["recipients"]]
        entry = QueueEntry(id=env["id"], sender=env["sender"], recipients=rcpts, arrival=env["arrival"],
                           size=env["size"], path=path, data_offset=offset, meta=env.get("meta", {}))
        if state:
            by_addr = {r["address"]: r for r in state.get("recipients", [])}
            for r in rcpts:
                s = by_addr.get(r.address)
                if s:
                    r.status, r.attempts = s.get("status", PENDING), s.get("attempts", 0)
                    r.code, r.text, r.updated = s.get("code", 0), s.get("text", ""), s.get("updated", 0.0)
            entry.next_attempt = state.get("next_attempt", 0.0)
            entry.attempts = state.get("attempts", 0)
            entry.warned = state.get("warned", False)
        return entry

    def load(self, qid: str) -> QueueEntry:
        path = self.active_dir / qid
        try:
            with open(path, "rb") as f:
                head = f.readline()
                size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            raise QueueError(f"no queued message {qid}") from None
        try:
            env = json.loads(head)
            complete = size == len(head) + env["size"]
        except (ValueError, KeyError, TypeError, OSError):
            raise QueueError(f"the queue file {path} is damaged (bad envelope line)") from None
        if not complete:
            # only possible after a power loss before the fsync finished, i.e. never answered 250
            raise QueueError(f"the queue file {path} is incomplete")
        state = None
        spath = path.with_name(qid + ".state")
        if spath.exists():
            try:
                state = json.loads(spath.read_bytes())
            except ValueError:
                state = None  # a torn state file cannot exist (atomic rename); be lenient anyway
        return self._entry_from(env, path, len(head), state)

    def ids(self) -> list[str]:
        done = self.done_ids()
        return sorted(n for n in os.listdir(self.active_dir) if "." not in n and n not in done)

    def count(self) -> int:
        return len(self.ids())

    def entries(self) -> list[QueueEntry]:
        out = []
        for qid in self.ids():
            try:
                out.append(self.load(qid))
            except QueueError:
                continue
        return out

    def recover(self) -> list[QueueEntry]:
        """Start-up: clear tmp/, drop orphaned state files, return every queued entry."""
        for name in os.listdir(self.tmp_dir):
            try:
                (self.tmp_dir / name).unlink()
            except FileNotFoundError:
                pass
        done = self.done_ids()
        for qid in done:  # finished before the last stop, the unlinks had not happened yet
            for p in (self.active_dir / qid, self.active_dir / (qid + ".state")):
                try:
                    p.unlink()
                except (FileNotFoundError, IsADirectoryError):
                    pass
        if done:
            log.info("queue: %d finished message(s) removed at start-up", len(done))
        if self.done_file.exists():
            os.truncate(self.done_file, 0)
        names = set(os.listdir(self.active_dir))
        entries = []
        for name in sorted(names):
            if name.endswith(".state"):
                if name[:-6] not in names:
                    (self.active_dir / name).unlink()
                continue
            try:
                entries.append(self.load(name))
            except QueueError as e:
                # torn by a power loss before its fsync: it was never acknowledged
                if "incomplete" in str(e) or "damaged" in str(e):
                    log.warning("%s: dropped at start-up, never acknowledged: %s", name, e)
                    (self.active_dir / name).unlink()
                    for extra in (name + ".state",):
                        if extra in names:
                            (self.active_dir / extra).unlink()
        return entries

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._done_fd is not None:
            os.close(self._done_fd)
            self._done_fd = None


class LoopCommitSpool(Spool):
    """A spool for the accept workers of a multi-process relay (relay/workers.py): the group
    commit runs inside the worker's event loop, with no thread at all.

    Every message whose DATA ends in one turn of the loop joins one :func:`write_batch` (write,
    rename, fsync each file, fsync ``active/`` once) run at the start of the next turn; then each
    waiter gets its result and its 250, and ``on_committed(entry)`` runs (also for a waiter
    cancelled meanwhile). While that fsync blocks the loop (~0.4 ms on this machine's disk), the
    kernel buffers the other sessions' input, so the next turn's batch is larger: the batching
    adapts to the load by itself. Measured with ``py-spy --gil``: handing each batch to a helper
    thread instead (ThreadPoolExecutor) cost the worker 40 % more Python time per message, and the
    DurableWriter's per-message hand-off more again. A worker blocked for one fsync holds up only
    its own sessions, never the other workers'. A single-process relay keeps the thread writer:
    there the one loop also serves every IMAP session. Same durability as :class:`Spool`."""

    def __init__(self, queue_dir: str | os.PathLike):
        super().__init__(queue_dir)
        self._pending: list[tuple[tuple[Path, Path, bytes], QueueEntry, asyncio.Future,
                                  Callable[[QueueEntry], None] | None]] = []
        self._scheduled = False
        self.batches = 0

    async def store(self, sender: str, recipients: list[str], data: bytes, meta: dict | None = None,
                    qid: str | None = None,
                    on_committed: Callable[[QueueEntry], None] | None = None) -> QueueEntry:
        entry, payload = self._prepare(sender, list(recipients), data, meta, qid)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append(((self.tmp_dir / entry.id, entry.path, payload), entry, fut, on_committed))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._commit)   # after the other sessions of this loop turn
        err = await asyncio.shield(fut)   # cancelled waiter: the commit and on_committed still happen
        if err is not None:
            raise QueueError(f"cannot write the queue file {entry.path}: {err}") from err
        return entry

    def _commit(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        try:
            errs: list[OSError | None] = write_batch([b[0] for b in batch], sync_before_rename=False)
        except Exception as e:  # noqa: BLE001 - never leave a waiter hanging
            errs = [OSError(str(e))] * len(batch)
        self.batches += 1
        for (_, entry, fut, on_committed), err in zip(batch, errs):
            if err is None and on_committed is not None:
                on_committed(entry)
            if not fut.done():
                fut.set_result(err)
