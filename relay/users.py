"""The relay's user accounts and the throttle on failed logins.

:class:`UserDB` keeps one small text file in the data dir (``cfg.users_file``), one account per
line: ``address<TAB>scrypt$N$r$p$salt$hash`` (salt and hash base64). Passwords are hashed with
hashlib.scrypt (memory-hard, in the standard library) and compared in constant time; they are
never logged or kept in memory. Every change rewrites the whole file atomically (tmp + fsync +
rename + dir fsync, mode 0600), and readers reload it when its mtime/size changes, so
``tui-mail relay user add`` works while the relay is running.

Successful checks are remembered for ``VERIFIED_TTL`` seconds (like Dovecot's auth cache), so a
client that logs in again and again pays scrypt once a minute, not per login: the cache holds
(address → HMAC-SHA256 of the password under a random key made at start and never stored,
the stored hash it was checked against, expiry). A login matches only if both the HMAC and the
stored hash are the same, so a password change (by this process or ``user passwd`` from outside)
drops the entry at once. Failures are never cached: wrong passwords still pay scrypt and the
throttle. The password itself is still never kept.

:class:`AuthThrottle` is shared by SMTP AUTH, IMAP LOGIN/AUTHENTICATE and POP3 USER/PASS
(``await throttle.check(ip, user, verify)``): attempts from one IP run one at a time, each
failure doubles the delay that IP waits before its next attempt (capped), failures on an
account slow attempts on it from addresses that never logged in to it, a success clears the
IP's record, and quiet IPs are forgotten.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from relay.errors import RelayError

SCRYPT_N = 2 ** 14
SCRYPT_R = 8
SCRYPT_P = 1
_ADDRESS = re.compile(r"^[^\s@<>()\[\]\\,;:\"]+@[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


class UserError(RelayError):
    """A user command cannot be done (bad address, unknown user, exists already)."""


def normalize_address(address: str) -> str:
    """Mailbox names are case-insensitive here: we store and compare them lowercased."""
    return address.strip().lower()


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32,
                            maxmem=128 * r * (n + p + 2) + 1024 * 1024)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a ``scrypt$…`` string; False if malformed."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        n_, r_, p_ = int(n), int(r), int(p)
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=n_, r=r_, p=p_,
                             dklen=len(expected), maxmem=128 * r_ * (n_ + p_ + 2) + 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


# A fixed hash to spend the same time on unknown users as on known ones.
_DUMMY_HASH: str | None = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password("not a password")
    return _DUMMY_HASH


class UserDB:
    """Accounts in one file; safe to share between threads and with other processes."""

    VERIFIED_TTL = 60.0
    VERIFIED_MAX = 10_000

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.RLock()
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, str] = {}
        self._key = os.urandom(32)
        self._verified: dict[str, tuple[bytes, str, float]] = {}

    # ---- reading -------------------------------------------------------------------------

    def _load(self) -> dict[str, str]:
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                self._stamp, self._users = None, {}
                return self._users
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                users: dict[str, str] = {}
                for line in self.path.read_text(encoding="utf-8").splitlines():
                    if not line.strip() or line.startswith("#"):
                        continue
                    addr, _, hashed = line.partition("\t")
                    users[addr] = hashed
                self._stamp, self._users = stamp, users
            return self._users

    def exists(self, address: str) -> bool:
        return normalize_address(address) in self._load()

    def list(self) -> list[str]:
        return sorted(self._load())

    def authenticate(self, address: str, password: str) -> bool:
        """True when the password is right; unknown users cost the same time as wrong passwords."""
        addr = normalize_address(address)
        stored = self._load().get(addr)
        if stored is None:
            verify_password(password, _dummy_hash())
            return False
        mac = hmac.new(self._key, password.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        hit = self._verified.get(addr)
        if (hit is not None and hit[1] == stored and time.monotonic() < hit[2]
                and hmac.compare_digest(hit[0], mac)):
            return True
        ok = verify_password(password, stored)
        if ok:
            with self._lock:
                if len(self._verified) >= self.VERIFIED_MAX:
                    self._verified.clear()
                self._verified[addr] = (mac, stored, time.monotonic() + self.VERIFIED_TTL)
        return ok

    # ---- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self):
        """Serialise read-modify-write across threads and processes (two ``user add`` at once
        must not lose one): a thread lock plus flock on ``<file>.lock``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._stamp = None  # re-read under the lock
                yield
            finally:
                os.close(fd)

    def add(self, address: str, password: str) -> None:
        addr = normalize_address(address)
        if not _ADDRESS.match(addr):
            raise UserError(f"{address!r} is not a mail address like user@example.org")
        if not password:
            raise UserError("the password must not be empty")
        with self._writing():
            users = dict(self._load())
            if addr in users:
                raise UserError(f"{addr} exists already (use 'user passwd' to change the password)")
            users[addr] = hash_password(password)
            self._save(users)

    def set_password(self, address: str, password: str) -> None:
        addr = normalize_address(address)
        if not password:
            raise UserError("the password must not be empty")
        with self._writing():
            users = dict(self._load())
            if addr not in users:
                raise UserError(f"no such user: {addr}")
            users[addr] = hash_password(password)
            self._save(users)

    def remove(self, address: str) -> None:
        addr = normalize_address(address)
        with self._writing():
            users = dict(self._load())
            if addr not in users:
                raise UserError(f"no such user: {addr}")
            del users[addr]
            self._save(users)

    def _save(self, users: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        text = "".join(f"{a}\t{h}\n" for a, h in sorted(users.items()))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._stamp = None  # force a reload (mtime granularity may hide quick rewrites)
        self._users = users


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


class AuthThrottle:
    """Slows password guessing per client IP and per account, across connections and protocols.

    - Per IP: attempts from one address run one at a time (30 parallel connections get no more
      guesses than one), and each failure doubles the wait before the next: base, 2×base, …
      up to ``maximum``; a success clears it.
    - Per account: failures on an account from anywhere make every attempt on it wait (up to
      ``account_maximum``), which slows guessing spread over many addresses; an address that
      logged in to the account successfully before is exempt, so its owner keeps working while
      someone guesses. The account wait is short so the owner gets in from a new address too.
    - At most ``parallel_checks`` password hashes (scrypt: ~50 ms and 16 MB each) run at once.

    Use :meth:`check` (``await throttle.check(ip, user, verify)``); ``before_attempt``,
    ``failed`` and ``succeeded`` are the building blocks. State older than ``forget_after``
    seconds is dropped; the clock is injectable for tests.
    """

    def __init__(self, base: float = 0.5, maximum: float = 15.0, forget_after: float = 900.0,
                 clock=time.monotonic, account_maximum: float = 4.0, parallel_checks: int = 2):
        self.base, self.maximum, self.forget_after = base, maximum, forget_after
        self.account_maximum = account_maximum
        self.parallel_checks = parallel_checks
        self._clock = clock
        self._ips: dict[str, _Failures] = {}
        self._accounts: dict[str, _Failures] = {}
        self._trusted: dict[tuple[str, str], float] = {}   # (ip, account) that logged in: last time
        self._lock = threading.Lock()
        self._ip_locks: dict[str, list] = {}                # ip -> [asyncio.Lock, users]
        self._checks: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def _wait(self, table: dict[str, _Failures], key: str, maximum: float) -> float:
        now = self._clock()
        f = table.get(key)
        if f is None:
            return 0.0
        if now - f.last > self.forget_after:
            del table[key]
            return 0.0
        return min(maximum, self.base * 2 ** (f.count - 1)) if f.count else 0.0

    def delay(self, ip: str, user: str | None = None) -> float:
        """Seconds an attempt from ``ip`` (on ``user``, when given) waits before its check."""
        with self._lock:
            d = self._wait(self._ips, ip, self.maximum)
            if user is not None:
                account = normalize_address(user)[:256]
                seen = self._trusted.get((ip, account))
                if seen is None or self._clock() - seen > self.forget_after * 96:
                    d = max(d, self._wait(self._accounts, account, self.account_maximum))
            return d

    async def before_attempt(self, ip: str, user: str | None = None) -> None:
        d = self.delay(ip, user)
        if d > 0:
            await asyncio.sleep(d)

    def failed(self, ip: str, user: str | None = None) -> None:
        now = self._clock()
        with self._lock:
            for table, key in ((self._ips, ip), (self._accounts, normalize_address(user or "")[:256])):
                if table is self._accounts and not key:
                    continue
                if len(table) > 10000:  # keep memory bounded under a spray of addresses
                    for k in [k for k, v in table.items() if now - v.last > self.forget_after]:
                        del table[k]
                    if len(table) > 10000:
                        table.clear()
                f = table.setdefault(key, _Failures())
                f.count += 1
                f.last = now

    def succeeded(self, ip: str, user: str | None = None) -> None:
        with self._lock:
            self._ips.pop(ip, None)
            if user:
                if len(self._trusted) > 10000:
                    self._trusted.clear()
                self._trusted[(ip, normalize_address(user)[:256])] = self._clock()

    async def check(self, ip: str, user: str, verify) -> bool:
        """Run ``await verify()`` (the password check) under the throttle; returns its result."""
        entry = self._ip_locks.setdefault(ip, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:                       # one attempt at a time per address
                await self.before_attempt(ip, user)
                loop = asyncio.get_running_loop()
                if self._checks is None or self._checks[0] is not loop:
                    self._checks = (loop, asyncio.Semaphore(self.parallel_checks))
                async with self._checks[1]:               # bounded scrypt work in parallel
                    ok = bool(await verify())
                if ok:
                    self.succeeded(ip, user)
                else:
                    self.failed(ip, user)
                return ok
        finally:
            entry[1] -= 1
            if entry[1] == 0 and self._ip_locks.get(ip) is entry:
                del self._ip_locks[ip]
