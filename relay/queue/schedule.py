"""Retry timing for queued mail, as pure functions of the queue settings and the clock.

After the first temporary failure a message is retried after ``first_retry``, then every
``retry_interval`` (DESIGN.md: every 30 minutes), with a little deterministic jitter per queue
ID so a backlog does not retry in one burst; once ``max_lifetime`` has passed since arrival the
remaining recipients fail and the sender gets a bounce. ``delay_warning`` says when to tell the
sender once that delivery is slow.
"""

from __future__ import annotations

import zlib

from relay.config import QueueConfig

JITTER = 0.1
"""Up to 10 % of the interval is added, derived from the queue ID (stable across restarts)."""


def _jitter(queue_id: str, interval: float) -> float:
    return interval * JITTER * ((zlib.crc32(queue_id.encode()) % 1000) / 1000.0)


def retry_delay(q: QueueConfig, attempts: int, queue_id: str = "") -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (attempts >= 1)."""
    if attempts <= 1:
        base = q.first_retry
    else:
        base = q.retry_interval
    return base + _jitter(queue_id, base)


def expired(q: QueueConfig, arrival: float, now: float) -> bool:
    """True once the message has been queued longer than max_lifetime."""
    return now - arrival >= q.max_lifetime


def next_attempt(q: QueueConfig, arrival: float, attempts: int, now: float, queue_id: str = "") -> float:
    """When to try again after a failed attempt at ``now``; never later than the expiry time,
    so the final attempt (and the bounce) happens on time."""
    return min(now + retry_delay(q, attempts, queue_id), arrival + q.max_lifetime)


def needs_delay_warning(q: QueueConfig, arrival: float, now: float, warned: bool) -> bool:
    return bool(q.delay_warning) and not warned and now - arrival >= q.delay_warning
