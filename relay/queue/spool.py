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
and the SMTP layer answer 250. Directory fsyncs are *group-committed*: concurrent sessions that
renamed their files while one fsync was in flight share the next one, which is what lets many
sessions commit faster than one fsync each. State files use the same tmp + fsync + rename +
dir fsync. A finished entry is removed queue file first, then state, so a crash in between
leaves only an orphaned ``.state`` (cleaned at start) and never resets progress.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from relay.errors import QueueError

PENDING, SENT, DEFERRED, FAILED = "pending", "sent", "deferred", "failed"
DONE_STATES = (SENT, FAILED)


def new_queue_id() -> str:
    """Sortable by arrival, unique: 13 hex digits of microseconds + 8 random hex digits."""
    return f"{time.time_ns() // 1000:013X}{secrets.token_hex(4).upper()}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(tmp: Path, final: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``tmp``, fsync it and rename it to ``final`` (dir fsync is the caller's)."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


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
        with open(self.path, "rb") as f:
            f.seek(self.data_offset)
            return f.read()

    def state_dict(self) -> dict:
        return {"next_attempt": self.next_attempt, "attempts": self.attempts, "warned": self.warned,
                "recipients": [asdict(r) for r in self.recipients]}


class _GroupDirSync:
    """fsync one directory on behalf of many waiters: whoever renamed before an fsync *started*
    is covered by it; later arrivals share the next one."""

    def __init__(self, path: Path, executor: ThreadPoolExecutor):
        self.path, self.executor = path, executor
        self._requested = 0
        self._done = 0
        self._running: asyncio.Future | None = None

    def _start(self) -> asyncio.Future:
        target = self._requested
        fut = asyncio.get_running_loop().run_in_executor(self.executor, fsync_dir, self.path)

        def finished(f: asyncio.Future) -> None:
            if self._running is f:
                self._running = None
            if not f.cancelled() and f.exception() is None:
                self._done = max(self._done, target)

        fut.add_done_callback(finished)
        self._running = fut
        return fut

    async def sync(self) -> None:
        self._requested += 1
        mine = self._requested
        while self._done < mine:
            fut = self._running
            if fut is None or fut.done():
                # (a done future whose callback has not run yet covers nothing new: awaiting it
                # would return at once and spin, so start the next fsync)
                fut = self._start()
            await asyncio.shield(fut)


class Spool:
    """The queue directory. Thread-safe for distinct entries; async ``store`` for the SMTP path."""

    def __init__(self, queue_dir: str | os.PathLike, *, io_threads: int = 16):
        self.dir = Path(queue_dir)
        self.tmp_dir = self.dir / "tmp"
        self.active_dir = self.dir / "active"
        for d in (self.dir, self.tmp_dir, self.active_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._executor: ThreadPoolExecutor | None = None
        self._io_threads = io_threads
        self._dirsync: _GroupDirSync | None = None
        self._lock = threading.Lock()

    # ---- writing -------------------------------------------------------------------------

    def _encode(self, qid: str, sender: str, recipients: list[str], data: bytes, meta: dict) -> tuple[bytes, dict]:
        env = {"v": 1, "id": qid, "sender": sender, "recipients": list(recipients),
               "arrival": time.time(), "size": len(data), "meta": meta}
        head = json.dumps(env, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"
        return head, env

    def _write(self, sender: str, recipients: list[str], data: bytes, meta: dict | None,
               qid: str | None = None) -> QueueEntry:
        if not recipients:
            raise QueueError("a queued message needs at least one recipient")
        qid = qid or new_queue_id()
        head, env = self._encode(qid, sender, recipients, data, meta or {})
        final = self.active_dir / qid
        try:
            write_durable(self.tmp_dir / qid, final, head + data)
        except OSError as e:
            raise QueueError(f"cannot write the queue file {final}: {e}") from e
        return self._entry_from(env, final, len(head), None)

    async def store(self, sender: str, recipients: list[str], data: bytes, meta: dict | None = None,
                    qid: str | None = None) -> QueueEntry:
        """Queue a message durably (file and directory fsynced) and return its entry.

        ``qid``: a queue ID from :func:`new_queue_id` chosen earlier (it is in our Received
        header); by default a new one."""
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._io_threads, thread_name_prefix="spool-io")
            self._dirsync = _GroupDirSync(self.active_dir, self._executor)
        entry = await loop.run_in_executor(self._executor, self._write, sender, list(recipients), data, meta, qid)
        try:
            await self._dirsync.sync()
        except OSError as e:
            raise QueueError(f"cannot fsync {self.active_dir}: {e}") from e
        return entry

    def store_sync(self, sender: str, recipients: list[str], data: bytes, meta: dict | None = None,
                   qid: str | None = None) -> QueueEntry:
        """Blocking form of :meth:`store` (bounces, tools, tests)."""
        entry = self._write(sender, list(recipients), data, meta, qid)
        fsync_dir(self.active_dir)
        return entry

    def save_state(self, entry: QueueEntry) -> None:
        """Persist an entry's per-recipient progress (atomic, fsynced)."""
        final = entry.path.with_name(entry.id + ".state")
        data = json.dumps(entry.state_dict(), separators=(",", ":")).encode()
        try:
            write_durable(self.tmp_dir / (entry.id + ".state"), final, data)
            fsync_dir(self.active_dir)
        except OSError as e:
            raise QueueError(f"cannot write {final}: {e}") from e

    def remove(self, entry: QueueEntry) -> None:
        """Drop a finished entry: queue file first, then its state (see module doc).

        No directory fsync: if the unlink is lost (power failure), the entry comes back with
        its state and local delivery recognises the message it already delivered."""
        for p in (entry.path, entry.path.with_name(entry.id + ".state")):
            try:
                p.unlink()
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
        except FileNotFoundError:
            raise QueueError(f"no queued message {qid}") from None
        try:
            env = json.loads(head)
        except ValueError:
            raise QueueError(f"the queue file {path} is damaged (bad envelope line)") from None
        state = None
        spath = path.with_name(qid + ".state")
        if spath.exists():
            try:
                state = json.loads(spath.read_bytes())
            except ValueError:
                state = None  # a torn state file cannot exist (atomic rename); be lenient anyway
        return self._entry_from(env, path, len(head), state)

    def ids(self) -> list[str]:
        return sorted(n for n in os.listdir(self.active_dir) if "." not in n)

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
        names = set(os.listdir(self.active_dir))
        for name in names:
            if name.endswith(".state") and name[:-6] not in names:
                (self.active_dir / name).unlink()
        return self.entries()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
            self._dirsync = None
