"""Resource limits shared by the relay's listeners: connection caps, the fd limit, quiet logs.

- :class:`ConnectionLimiter`: per-listener caps on open connections in total and per client IP.
  ``admit(ip)`` says yes (and counts the connection until ``release(ip)``) or gives the reason
  for a polite refusal (``421`` / ``* BYE`` / ``-ERR``), so one client cannot hold every socket.
- :func:`raise_fd_limit`: lift the soft RLIMIT_NOFILE to the hard limit at start (where allowed).
- :class:`RateLimit` / :class:`OncePerSecond`: at most one log line per second per condition,
  with the number of suppressed repeats; :func:`quiet_loop_errors` installs it as the event
  loop's exception handler, so running out of file descriptors logs one line a second instead
  of hundreds of tracebacks (asyncio's accept loop reports every failed ``accept()``).

Hand-written: these are a few dozen lines of bookkeeping on top of asyncio and ``resource``;
no library does them for an asyncio server without taking over the server itself.
"""

from __future__ import annotations

import logging
import resource
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger("relay.limits")

FD_RESERVE = 64   # descriptors kept for files, the queue, the log and the control socket


class ConnectionLimiter:
    """Counts open connections per listener, in total and per client IP."""

    def __init__(self, name: str, *, total: int, per_ip: int):
        self.name, self.total, self.per_ip = name, total, per_ip
        self.open = 0
        self.by_ip: Counter[str] = Counter()
        self.refused = 0

    def admit(self, ip: str) -> str | None:
        """None: admitted (call :meth:`release` when it closes); else why it was refused."""
        if self.open >= self.total:
            reason = "too many connections"
        elif self.by_ip[ip] >= self.per_ip:
            reason = "too many connections from your address"
        else:
            self.open += 1
            self.by_ip[ip] += 1
            return None
        self.refused += 1
        warn_limited(log, f"{self.name}-refused", "%s: refused a connection from %s: %s (%d open, %d from it)",
                     self.name, ip, reason, self.open, self.by_ip[ip])
        return reason

    def release(self, ip: str) -> None:
        self.open = max(0, self.open - 1)
        n = self.by_ip[ip] - 1
        if n > 0:
            self.by_ip[ip] = n
        else:
            self.by_ip.pop(ip, None)


def listener_limiter(cfg, name: str) -> ConnectionLimiter:
    """The caps of one of a relay's four listeners: ``[limits]``, and never past a quarter of
    what the fd limit leaves (so accept() does not run out of descriptors first)."""
    budget = fd_budget()
    total = cfg.limits.max_connections if budget is None else min(cfg.limits.max_connections, budget // 4)
    if shared_table is not None:   # a worker of a multi-process relay: caps for all workers together
        return shared_table.limiter(name, total=total, per_ip=cfg.limits.max_connections_per_ip)
    return ConnectionLimiter(name, total=total, per_ip=cfg.limits.max_connections_per_ip)


shared_table = None   # relay/sharedlimits.py SharedTable, set by relay/workers.py in a worker


def raise_fd_limit(wanted: int = 65536) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE towards the hard limit (never above ``wanted``).

    Returns (soft, hard) after the change; failures leave the limit as it was."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return (-1, -1)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    return soft, hard


def fd_budget() -> int | None:
    """How many connections the fd limit leaves room for (None: unlimited / unknown)."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    return max(8, soft - FD_RESERVE)


class RateLimit:
    """Allow one event per ``interval`` seconds per key; counts what it held back."""

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic, max_keys: int = 1000):
        self.interval, self.clock, self.max_keys = interval, clock, max_keys
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def allow(self, key: str) -> tuple[bool, int]:
        """(may log now, how many were suppressed since the last allowed one)."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] += 1
            return False, 0
        if len(self._last) >= self.max_keys and key not in self._last:
            self._last.clear()  # bounded memory under a flood of distinct keys
        self._last[key] = now
        return True, self._held.pop(key, 0)


_LIMIT = RateLimit()


def warn_limited(logger: logging.Logger, key: str, msg: str, *args, level: int = logging.WARNING) -> None:
    """``logger.log(level, msg, *args)`` at most once per second per ``key``."""
    ok, held = _LIMIT.allow(key)
    if ok:
        if held:
            msg += f" ({held} similar suppressed)"
        logger.log(level, msg, *args)


class OncePerSecond(logging.Filter):
    """A logging filter: one warning or error per second per (logger, message template).

    INFO lines (one per message queued or delivered) always pass: they are the mail log."""

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 level: int = logging.WARNING, tracebacks: bool = True):
        super().__init__()
        self.limit = RateLimit(interval, clock)
        self.level = level
        self.tracebacks = tracebacks

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return True
        ok, held = self.limit.allow(f"{record.name}\0{record.msg}")
        if ok and held:
            record.msg = f"{record.msg} ({held} similar suppressed)"
        if ok and not self.tracebacks and record.exc_info:
            # a client can trigger these at will (aiosmtpd logs a failed STARTTLS handshake
            # with a traceback): one line naming the exception is enough
            exc = record.exc_info[1]
            detail = f"{type(exc).__name__}: {exc}".replace("%", "%%")
            record.msg = f"{record.msg}: {detail}"
            record.exc_info, record.exc_text = None, None
        return ok


def quiet_loop_errors(loop, logger: logging.Logger | None = None) -> None:
    """Make ``loop`` report unhandled errors as one line per second per kind, no traceback."""
    logger = logger or logging.getLogger("relay")

    def handler(_loop, context: dict) -> None:
        exc = context.get("exception")
        message = context.get("message", "unhandled error in the event loop")
        key = f"{message}|{type(exc).__name__ if exc else ''}"
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        warn_limited(logger, key, "error: %s%s", message, detail, level=logging.ERROR)

    loop.set_exception_handler(handler)
