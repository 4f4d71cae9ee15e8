"""Per-destination delivery state for the onward scheduler, as pure data and arithmetic.

No sockets, no clock of its own (every method takes ``now``), no asyncio: the scheduler in
relay/remote.py asks these objects what it may do and tells them what happened. What lives
here, after Postfix's queue manager (qmgr(8), "concurrency feedback" and "dead destination"):

* **Concurrency window.** A destination starts with ``initial`` parallel connections allowed.
  Every message delivered on it adds one (slow start: the window doubles per round of
  deliveries, like TCP's) up to ``cap`` (``max_connections_per_destination``). Every failed
  connection (refused, no greeting in time, dropped mid-transaction, 421) halves it, never
  below one. A window only *permits* connections: the scheduler opens one when messages wait
  and no open connection is free, so a destination that keeps up stays on one connection.
* **Dead destination.** ``dead_after`` failed connections in a row with no success between
  make the destination *dead*: nothing is tried until ``dead_until`` (``backoff_base``
  doubling per death, at most ``backoff_max``); everything queued for it is deferred at once
  instead of each message waiting out its own timeout. After ``dead_until`` one probe
  connection (the window is one by then) decides: success revives it, failure kills it again
  for longer. ``relay queue flush`` revives every dead destination (Postfix does the same).
* **Deferred until.** The earliest retry time of the messages waiting for this destination
  (the queue runner reports each deferral), shown by ``relay queue list``.
* **Fair share.** :class:`RoundRobin` hands freed connection slots (the relay-wide
  ``max_connections``) to destinations in turn, so one destination with a large backlog
  cannot starve the others.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

OK, DEFERRED, DEAD = "ok", "deferred", "dead"


@dataclass
class DestinationState:
    """What the scheduler knows about one destination (a route: its ordered MX/host list)."""

    name: str
    cap: int = 4                     # max_connections_per_destination
    initial: int = 2                 # window at the start and after a revival
    dead_after: int = 3              # failed connections in a row before the destination is dead
    backoff_base: float = 60.0       # first dead period (seconds), doubled per further death
    backoff_max: float = 1800.0
    window: float = 0.0
    active: int = 0                  # connections open or being opened
    failures: int = 0                # failed connections since the last good one
    deaths: int = 0                  # dead periods in a row (for the back-off)
    dead_until: float = 0.0
    last_error: str = ""
    last_error_at: float = 0.0
    delivered: int = 0               # messages accepted by the peer (2xx after DATA)
    domains: set[str] = field(default_factory=set)
    retry_at: dict[str, float] = field(default_factory=dict)  # queue ID -> its next attempt

    def __post_init__(self) -> None:
        if not self.window:
            self.window = float(min(self.initial, self.cap))

    # ---- questions ----------------------------------------------------------------------

    def limit(self) -> int:
        """Connections allowed now (the window, whole, between 1 and cap)."""
        return max(1, min(self.cap, int(self.window)))

    def is_dead(self, now: float) -> bool:
        return now < self.dead_until

    def may_open(self, now: float) -> bool:
        """May another connection be opened (ignoring the relay-wide slot count)?"""
        return not self.is_dead(now) and self.active < self.limit()

    def deferred_until(self, now: float) -> float:
        """The earliest retry of a message waiting for this destination (0 when none waits)."""
        later = [t for t in self.retry_at.values() if t > now]
        return min(later) if later else 0.0

    def status(self, now: float) -> str:
        if self.is_dead(now):
            return DEAD
        if self.deferred_until(now):
            return DEFERRED
        return OK

    # ---- events -------------------------------------------------------------------------

    def opening(self) -> None:
        self.active += 1

    def closed(self) -> None:
        self.active = max(0, self.active - 1)

    def connected(self) -> None:
        """A session is up (greeting and EHLO done): the destination lives."""
        self.failures = 0
        self.deaths = 0

    def message_delivered(self) -> None:
        self.delivered += 1
        self.window = min(float(self.cap), self.window + 1.0)

    def connection_failed(self, now: float, error: str) -> bool:
        """A connection could not be made or broke; True when this made the destination dead."""
        self.failures += 1
        self.last_error, self.last_error_at = error, now
        self.window = max(1.0, self.window / 2.0)
        if self.failures >= self.dead_after:
            self.dead_until = now + min(self.backoff_max, self.backoff_base * (2 ** self.deaths))
            self.deaths += 1
            return True
        return False

    def note_error(self, now: float, error: str) -> None:
        """A per-message temporary failure (4xx to RCPT, say): shown, but not a broken link."""
        self.last_error, self.last_error_at = error, now

    def revive(self) -> None:
        """Forget a dead period (``relay queue flush``)."""
        self.dead_until = 0.0
        self.failures = 0
        self.window = max(self.window, float(min(self.initial, self.cap)))

    def waiting(self, queue_id: str, retry_at: float) -> None:
        self.retry_at[queue_id] = retry_at

    def forget(self, queue_id: str) -> None:
        self.retry_at.pop(queue_id, None)

    def snapshot(self, now: float, queued: int = 0, sending: int = 0, idle: int = 0) -> dict:
        """JSON-able view for ``relay queue list`` and the demo's panel."""
        dead = self.is_dead(now)
        return {"destination": self.name, "domains": sorted(self.domains), "state": self.status(now),
                "active": self.active, "sending": sending, "idle": idle, "window": self.limit(),
                "queued": queued,
                "waiting": len([t for t in self.retry_at.values() if t > now]),
                "deferred_until": self.deferred_until(now) or None, "dead_until": self.dead_until if dead else None,
                "failures": self.failures, "delivered": self.delivered, "last_error": self.last_error,
                "last_error_at": self.last_error_at or None}


class RoundRobin:
    """Destinations waiting for a connection slot, served in turn (each at most once per round)."""

    def __init__(self) -> None:
        self._order: deque = deque()
        self._members: set = set()

    def want(self, key) -> None:
        if key not in self._members:
            self._members.add(key)
            self._order.append(key)

    def drop(self, key) -> None:
        if key in self._members:
            self._members.discard(key)
            self._order.remove(key)

    def __len__(self) -> int:
        return len(self._order)

    def __bool__(self) -> bool:
        return bool(self._order)

    def next(self):
        """The destination whose turn it is (removed; it asks again if it still wants more)."""
        key = self._order.popleft()
        self._members.discard(key)
        return key
