"""Small hostile servers for client tests: a threaded TCP server on 127.0.0.1, port 0, whose
behaviour is a plain function of the connection (read lines, write whatever, drip bytes)."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable


class Conn:
    def __init__(self, request: socket.socket, stop: threading.Event):
        self.sock = request
        self.file = request.makefile("rb")
        self.stop = stop

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def drip(self, data: bytes | str, every: float) -> None:
        """Send one byte every ``every`` seconds (until done, stopped or the peer left)."""
        for b in data.encode() if isinstance(data, str) else data:
            if self.stop.wait(every):
                return
            self.sock.sendall(bytes([b]))

    def line(self) -> bytes:
        return self.file.readline()

    def stream(self, chunk: bytes, total: int) -> None:
        """Keep sending ``chunk`` until ``total`` bytes went out or the peer went away."""
        sent = 0
        while sent < total and not self.stop.is_set():
            self.sock.sendall(chunk)
            sent += len(chunk)


class HostileServer:
    def __init__(self, behave: Callable[[Conn], None]):
        stop = self.stop = threading.Event()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                try:
                    behave(Conn(self.request, stop))
                except OSError:
                    pass

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self) -> "HostileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def imap_session(conn: Conn, answer: Callable[[Conn, bytes, bytes, bytes], bool],
                 greeting: bytes = b"* OK [CAPABILITY IMAP4rev1] hostile ready\r\n") -> None:
    """A minimal IMAP dialogue: greeting, CAPABILITY, LOGIN, LOGOUT handled; every other
    command goes to ``answer(conn, tag, verb, line)`` (return False to hang up)."""
    conn.send(greeting)
    while not conn.stop.is_set():
        line = conn.line()
        if not line:
            return
        tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
        verb = rest.split(b" ", 1)[0].upper()
        if verb == b"CAPABILITY":
            conn.send(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n")
        elif verb == b"LOGIN":
            conn.send(tag + b" OK logged in\r\n")
        elif verb == b"LOGOUT":
            conn.send(b"* BYE\r\n" + tag + b" OK bye\r\n")
            return
        elif not answer(conn, tag, verb, line):
            return


def elapsed(fn: Callable[[], object]) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        fn()
    except BaseException as e:  # noqa: BLE001 - returned to the test
        return time.monotonic() - start, e
    return time.monotonic() - start, None
