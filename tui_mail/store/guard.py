"""Limits on what a server can make the client do: total deadlines and literal sizes.

A socket timeout only bounds each ``recv``: a server that drips one byte a second never trips
it, and imaplib's ``readline`` keeps collecting. ``Deadline`` bounds a whole exchange (connect
+ login, or one command): a timer shuts the connection's socket down when the budget is
spent, the blocked read returns, and the caller turns that into ``ServerTooSlow`` naming the
server. ``check_literal`` refuses an IMAP literal larger than the account allows *before*
imaplib allocates or reads it (a ``{999999999}`` header made the client hold 350–820 MB).

Hand-written: imaplib/imapclient/poplib have per-read timeouts only and no size caps (poplib
caps a line, not a response); a timer that shuts the socket down is the one way to interrupt
a blocked read from outside without rewriting their readers.
"""

from __future__ import annotations

import socket
import threading

from tui_mail.errors import ConnectError, ProtocolError

DEFAULT_MAX_LITERAL = 64 * 1024 * 1024     # bytes; the relay's own limit is 25 MiB
DEFAULT_LOGIN_DEADLINE = 60.0              # seconds for connect + greeting + TLS + login
DEFAULT_COMMAND_DEADLINE = 300.0           # seconds for one command and its whole answer


class ServerTooSlow(ConnectError, TimeoutError):
    """A server did not finish an answer within the total deadline."""


class ResponseTooLarge(ProtocolError):
    """A server announced or sent more data than the client accepts."""


_local = threading.local()


class Deadline:
    """``with Deadline(seconds, where, what):`` — sockets ``attach``-ed (or opened by the
    guarded IMAP classes below while it is active) are shut down when time runs out."""

    def __init__(self, seconds: float | None, where: str, what: str = "an answer"):
        self.seconds, self.where, self.what = seconds, where, what
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._outer: Deadline | None = None

    def __enter__(self) -> "Deadline":
        self._outer = getattr(_local, "deadline", None)
        _local.deadline = self
        if self.seconds:
            self._timer = threading.Timer(self.seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        _local.deadline = self._outer

    def attach(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def error(self) -> ServerTooSlow:
        return ServerTooSlow(f"{self.where} sent no complete {self.what} within {self.seconds:g} s "
                             "(a slow or stalled server); gave up")


def current() -> Deadline | None:
    return getattr(_local, "deadline", None)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def check_literal(size: int, limit: int, where: str) -> None:
    if size > limit:
        raise ResponseTooLarge(f"{where} announced a {size:,}-byte literal; this account accepts at most "
                               f"{limit:,} bytes (max_literal_mb in config.toml)")


class _Guarded:
    """Mixed into imaplib classes (tui_mail.store.imap_client): literal cap in ``read``,
    socket handed to the deadline."""

    max_literal = DEFAULT_MAX_LITERAL
    where = "the IMAP server"

    def open(self, *args, **kwargs):
        super().open(*args, **kwargs)
        deadline = current()
        if deadline is not None:
            deadline.attach(self.sock)

    def read(self, size: int) -> bytes:
        deadline = current()
        limit = getattr(deadline, "max_literal", None) or self.max_literal
        check_literal(size, limit, deadline.where if deadline is not None else self.where)
        return super().read(size)
