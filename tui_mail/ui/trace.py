"""A thread-safe ring buffer of protocol trace lines (C:/S:) from every account's store.

Stores call ``sink(direction, line)`` from worker and watch threads; the trace screen polls
``since(n)`` on a timer, so a chatty IMAP sync never floods the event loop with messages.
Stores mask passwords before calling the sink; as a second guard, LOGIN/AUTH/PASS arguments
are masked here too.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

_SECRET = re.compile(r"^(?P<head>(?:\S+\s+)?(?:LOGIN\s+\S+|PASS|AUTH(?:ENTICATE)?\s+\S+)\s+)(?P<secret>.+)$", re.I)


def mask(line: str) -> str:
    m = _SECRET.match(line)
    if m and set(m.group("secret").strip()) - {"*"}:
        return m.group("head") + "****"
    return line


@dataclass(frozen=True)
class TraceLine:
    seq: int
    when: float
    account: str
    direction: str
    text: str


class TraceBuffer:
    def __init__(self, limit: int = 5000, clock: Callable[[], float] = time.time):
        self._lines: deque[TraceLine] = deque(maxlen=limit)
        self._lock = threading.Lock()
        self._seq = 0
        self._clock = clock

    def sink(self, account: str) -> Callable[[str, str], None]:
        def write(direction: str, line: str) -> None:
            self.add(account, direction, line)
        return write

    def add(self, account: str, direction: str, line: str) -> None:
        text = mask(line.rstrip("\r\n")) if direction == "C" else line.rstrip("\r\n")
        with self._lock:
            self._seq += 1
            self._lines.append(TraceLine(self._seq, self._clock(), account, direction, text))

    def since(self, seq: int) -> list[TraceLine]:
        with self._lock:
            return [line for line in self._lines if line.seq > seq]

    @property
    def last(self) -> int:
        return self._seq
