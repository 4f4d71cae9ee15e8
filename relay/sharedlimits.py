"""Connection caps and failed-login counts shared by the workers of a multi-process relay
(relay/workers.py).

``[limits] max_connections`` and ``max_connections_per_ip`` are per listener for the whole
relay, as in one process. Each worker keeps its own counts in a row of a small shared table
(a file in ``<data_dir>/run``, mapped with ``mmap``); admitting a connection sums the rows of
all workers under an exclusive ``flock`` and, if below the caps, increments the worker's own
row. Releasing decrements its own row (no other process writes it). A worker that starts
zeroes its row, so a killed worker's connections stop counting when its replacement comes up.

Per-address counts go to one of ``BUCKETS`` buckets by CRC-32 of the address: two addresses in
one bucket share its cap (rare, and only ever stricter, never looser). Hand-written because
this is ~60 lines over ``mmap`` and ``fcntl``; a shared-memory library would add a dependency
for the same two operations.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import zlib
from pathlib import Path

from relay.limits import ConnectionLimiter
from relay.users import AuthThrottle, normalize_address

BUCKETS = 16384          # per-address buckets per listener
MAX_LIMITERS = 8         # listeners per process (smtp, submission, imap, pop3 and the TLS ones)
_CELL = 4                # uint32
_SLOT = (1 + BUCKETS) * _CELL          # one limiter of one worker: total, then the buckets
_ROW = MAX_LIMITERS * _SLOT            # one worker


def _fresh_file(path: Path, size: int) -> None:
    """A zeroed file of ``size`` bytes at ``path``, put in place at once (os.replace)."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@contextlib.contextmanager
def _flocked(fd: int):
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


class SharedTable:
    """The mapped file; ``worker`` is this process's row (0-based), ``workers`` the rows summed."""

    def __init__(self, path: Path, worker: int, workers: int):
        self.path, self.worker, self.workers = Path(path), worker, workers
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        size = workers * _ROW
        if os.fstat(self.fd).st_size < size:
            os.ftruncate(self.fd, size)
        self.map = mmap.mmap(self.fd, size)
        self.cells = memoryview(self.map).cast("I")
        self._made = 0
        with self.locked():
            start = worker * _ROW // _CELL
            self.cells[start:start + _ROW // _CELL] = memoryview(bytes(_ROW)).cast("I")

    @staticmethod
    def create(path: Path, workers: int) -> None:
        """The master: a fresh, zeroed table (a previous run's counts mean nothing)."""
        _fresh_file(path, workers * _ROW)

    def locked(self):
        return _flocked(self.fd)

    def limiter(self, name: str, *, total: int, per_ip: int) -> SharedLimiter:
        if self._made >= MAX_LIMITERS:
            return ConnectionLimiter(name, total=total, per_ip=per_ip)   # pragma: no cover
        slot = self._made
        self._made += 1
        return SharedLimiter(self, slot, name, total=total, per_ip=per_ip)

    def close(self) -> None:
        self.cells.release()
        self.map.close()
        os.close(self.fd)


class SharedLimiter(ConnectionLimiter):
    """A :class:`ConnectionLimiter` whose caps count every worker's connections."""

    def __init__(self, table: SharedTable, slot: int, name: str, *, total: int, per_ip: int):
        super().__init__(name, total=total, per_ip=per_ip)
        self.table = table
        self.offsets = [(w * _ROW + slot * _SLOT) // _CELL for w in range(table.workers)]
        self.mine = self.offsets[table.worker]

    def _bucket(self, ip: str) -> int:
        return 1 + zlib.crc32(ip.encode("utf-8", "replace")) % BUCKETS

    def admit(self, ip: str) -> str | None:
        b = self._bucket(ip)
        cells = self.table.cells
        with self.table.locked():
            open_all = sum(cells[o] for o in self.offsets)
            from_ip = sum(cells[o + b] for o in self.offsets)
            if open_all < self.total and from_ip < self.per_ip:
                cells[self.mine] += 1
                cells[self.mine + b] += 1
                self.open += 1
                self.by_ip[ip] += 1
                return None
        # over a cap: let the base class word the refusal and log it from these counts
        saved = self.open, self.by_ip[ip]
        self.open, self.by_ip[ip] = max(open_all, self.open), max(from_ip, self.by_ip[ip])
        try:
            return super().admit(ip)
        finally:
            self.open, self.by_ip[ip] = saved
            if not self.by_ip[ip]:
                del self.by_ip[ip]

    def release(self, ip: str) -> None:
        if self.by_ip.get(ip, 0) <= 0:
            return
        b = self._bucket(ip)
        cells = self.table.cells
        if cells[self.mine]:
            cells[self.mine] -= 1
        if cells[self.mine + b]:
            cells[self.mine + b] -= 1
        super().release(ip)


# ---- failed logins, counted across workers -----------------------------------------------------

AUTH_BUCKETS = 16384      # per table (client addresses, accounts)
_AUTH_CELLS = 2           # per bucket: failures, time of the last one (time.monotonic, system-wide)


class SharedAuthThrottle(AuthThrottle):
    """:class:`~relay.users.AuthThrottle` whose failure counts (per client address and per
    account) live in a table every worker maps, so a client guessing passwords is slowed by the
    failures it caused in any worker, as in a single process. What stays per worker: the "one
    attempt at a time per address" lock, the bounded number of parallel hash checks, and the
    "this address logged in to this account before" exemption. Addresses and accounts go to one
    of ``AUTH_BUCKETS`` buckets by CRC-32; two sharing a bucket share their failures (stricter,
    never looser). ``time.monotonic`` is the system-wide CLOCK_MONOTONIC on Linux, so the times
    of different processes compare."""

    def __init__(self, path: Path, **kw):
        super().__init__(**kw)
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        size = 2 * AUTH_BUCKETS * _AUTH_CELLS * 8
        if os.fstat(self.fd).st_size < size:
            os.ftruncate(self.fd, size)
        self.map = mmap.mmap(self.fd, size)
        self.cells = memoryview(self.map).cast("d")

    @staticmethod
    def create(path: Path) -> None:
        """The master: a fresh, zeroed table (replacing a previous run's)."""
        _fresh_file(path, 2 * AUTH_BUCKETS * _AUTH_CELLS * 8)

    def _cell(self, table: dict, key: str) -> int:
        region = 0 if table is self._ips else 1
        return (region * AUTH_BUCKETS + zlib.crc32(key.encode("utf-8", "replace")) % AUTH_BUCKETS) * _AUTH_CELLS

    def _wait(self, table: dict, key: str, maximum: float) -> float:
        i = self._cell(table, key)
        count, last = self.cells[i], self.cells[i + 1]
        if not count or self._clock() - last > self.forget_after:
            return 0.0
        return min(maximum, self.base * 2 ** (count - 1))

    def failed(self, ip: str, user: str | None = None) -> None:
        now = self._clock()
        keys = [(self._ips, ip)]
        account = normalize_address(user or "")[:256]
        if account:
            keys.append((self._accounts, account))
        with _flocked(self.fd):
            for table, key in keys:
                i = self._cell(table, key)
                count = self.cells[i] if now - self.cells[i + 1] <= self.forget_after else 0.0
                self.cells[i], self.cells[i + 1] = min(count + 1, 64.0), now

    def succeeded(self, ip: str, user: str | None = None) -> None:
        i = self._cell(self._ips, ip)
        with _flocked(self.fd):
            self.cells[i] = 0.0
        super().succeeded(ip, user)   # the per-worker trusted (address, account) pairs

    def close(self) -> None:
        self.cells.release()
        self.map.close()
        os.close(self.fd)
