"""The running relay's control socket: queue commands from `tui-mail relay queue …`.

A Unix socket at ``cfg.control_socket`` (in the data dir, mode 0600, so only the relay's own
user can drive it), speaking JSON lines: the client sends ``{"cmd": "queue.list", …}`` and reads
one line back, ``{"ok": true, "result": …}`` or ``{"ok": false, "error": "…"}``. A connection
may carry several requests. JSON lines rather than a library RPC because it is a handful of
verbs, easy to drive from a shell (``socat``) and trivially testable.

:class:`ControlServer` (asyncio, inside the relay) dispatches commands to handlers it is given —
:class:`QueueCommands` provides the ``queue.*`` ones over the spool and the queue runner.
:func:`request` is the blocking client the CLI uses; it raises :class:`~relay.errors.NotRunning`
when nobody listens, so the CLI can refuse clearly instead of pretending to work.

Linux limits a socket path to 107 bytes; deep data dirs (pytest's tmp dirs, for one) go through
``/proc/self/fd/N/…`` of an open directory descriptor instead (:func:`_socket_address`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from relay.errors import NotRunning, RelayError
from relay.queue.dsn import DSNNotifier, header_block
from relay.remote import RemoteDelivery

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
SUN_PATH_MAX = 107

Handler = Callable[[dict], Awaitable[Any]]


class ControlError(RelayError):
    """The relay understood the request and refused it (unknown queue ID, bad command…)."""


@contextlib.contextmanager
def _socket_address(path: Path) -> Iterator[str]:
    """A path short enough for AF_UNIX that names ``path`` (see the module doc)."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class ControlServer:
    """Serves JSON-line commands on a Unix socket; ``handlers`` maps command names to coroutines."""

    def __init__(self, path: Path, handlers: dict[str, Handler]):
        self.path = Path(path)
        self.handlers = dict(handlers)
        self.handlers.setdefault("ping", self._ping)
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task] = set()

    async def _ping(self, req: dict) -> dict:
        return {"pid": os.getpid()}

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._remove_stale()
        with _socket_address(self.path) as addr:
            # No umask games (it is process-wide and other threads create files): the data dir
            # is private already, and the socket is narrowed to 0600 right after bind.
            self._server = await asyncio.start_unix_server(self._serve, addr, limit=MAX_REQUEST)
        os.chmod(self.path, 0o600)

    def _remove_stale(self) -> None:
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise RelayError(f"{self.path} exists and is not a socket; move it away")
        if _listening(self.path):
            raise RelayError(f"another relay is already running with the control socket {self.path}")
        self.path.unlink()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._clients):
                t.cancel()
            if self._clients:
                await asyncio.gather(*self._clients, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._clients.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(_encode({"ok": False, "error": "request too long"}))
                    break
                if not line:
                    break
                writer.write(_encode(await self.dispatch(line)))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def dispatch(self, line: bytes) -> dict:
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ValueError
        except ValueError:
            return {"ok": False, "error": 'expected one JSON object per line, like {"cmd": "queue.list"}'}
        handler = self.handlers.get(req["cmd"])
        if handler is None:
            return {"ok": False, "error": f"unknown command {req['cmd']!r}; known: {', '.join(sorted(self.handlers))}"}
        try:
            return {"ok": True, "result": await handler(req)}
        except (ControlError, RelayError) as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:  # a bug must not take the relay down; the operator sees it
            log.exception("control command %s failed", req["cmd"])
            return {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}


def _encode(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def _listening(path: Path) -> bool:
    try:
        with _connect(path, 1.0):
            return True
    except NotRunning:
        return False


def _connect(path: Path, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        with _socket_address(Path(path)) as addr:
            s.connect(addr)
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as e:
        s.close()
        raise NotRunning(f"the relay is not running (nothing listens on {path}: {e.strerror}); "
                         "start it with `tui-mail relay start`") from None
    except OSError as e:
        s.close()
        raise NotRunning(f"cannot reach the relay's control socket {path}: {e}") from None
    return s


def request(path: str | os.PathLike, cmd: str, timeout: float = 30.0, **args: Any) -> Any:
    """Send one command to a running relay and return its result (blocking).

    Raises NotRunning when no relay listens, ControlError when the relay refused."""
    deadline = time.monotonic() + timeout
    with _connect(Path(path), timeout) as s:
        s.sendall(_encode({"cmd": cmd, **args}))
        buf = b""
        while not buf.endswith(b"\n"):
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                raise ControlError(f"the relay did not answer {cmd!r} within {timeout:.0f}s") from None
            if not chunk:
                raise ControlError(f"the relay closed the control connection during {cmd!r}")
            buf += chunk
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise ControlError(reply.get("error") or "the relay refused the command")
    return reply.get("result")


# ---- the queue commands ------------------------------------------------------------------

def entry_summary(entry) -> dict:
    """A queue entry as JSON-able data (what `relay queue --json` prints)."""
    rcpts = [{"address": r.address, "status": r.status, "attempts": r.attempts, "code": r.code, "text": r.text}
             for r in entry.recipients]
    last_error = next((r.text for r in entry.recipients if r.status in ("deferred", "failed") and r.text), "")
    return {"id": entry.id, "sender": entry.sender, "arrival": entry.arrival, "size": entry.size,
            "attempts": entry.attempts, "next_attempt": entry.next_attempt, "recipients": rcpts,
            "last_error": last_error}


class QueueCommands:
    """``queue.list/show/flush/delete/bounce/destinations`` over the runner's view of the spool.

    The runner's in-memory entries are the truth while the relay runs (they carry the latest
    per-recipient state); the spool is changed only for delete/bounce, and never for a message
    that is being delivered at this moment (the command then says so and can be repeated)."""

    def __init__(self, runner, spool, notifier=None):
        self.runner, self.spool, self.notifier = runner, spool, notifier

    def handlers(self) -> dict[str, Handler]:
        return {"queue.list": self.list, "queue.show": self.show, "queue.flush": self.flush,
                "queue.delete": self.delete, "queue.bounce": self.bounce, "queue.destinations": self.destinations}

    def _entry(self, req: dict):
        qid = req.get("id")
        if not isinstance(qid, str) or not qid:
            raise ControlError("a queue ID is needed (see `tui-mail relay queue`)")
        entry = self.runner.entries.get(qid)
        if entry is None:
            raise ControlError(f"no message {qid} in the queue")
        return entry

    def _forget(self, qid: str) -> None:
        """The onward scheduler stops counting ``qid`` as waiting at its destination."""
        forget = getattr(self.runner.remote, "forget", None)
        if forget is not None:
            forget(qid)

    async def _idle_entry(self, req: dict, wait: float = 5.0):
        """The entry, once no delivery attempt is running for it (waits up to ``wait`` s)."""
        entry = self._entry(req)
        deadline = time.monotonic() + wait
        while self.runner.busy(entry.id):
            if time.monotonic() >= deadline:
                raise ControlError(f"{entry.id} is being delivered right now; try again in a moment")
            await asyncio.sleep(0.02)
        if entry.id not in self.runner.entries:
            raise ControlError(f"{entry.id} left the queue meanwhile (delivered or bounced)")
        return entry

    async def list(self, req: dict) -> list[dict]:
        entries = sorted(self.runner.entries.values(), key=lambda e: (e.arrival, e.id))
        return [entry_summary(e) for e in entries]

    async def destinations(self, req: dict) -> list[dict]:
        """Per-destination state of the onward scheduler (active connections, window, queued,
        deferred until, dead until, last error); [] when onward delivery is not configured."""
        snapshot = getattr(self.runner.remote, "destinations", None)
        return snapshot() if snapshot is not None else []

    async def show(self, req: dict) -> dict:
        entry = self._entry(req)
        out = entry_summary(entry)
        data = await asyncio.to_thread(_read_headers, entry)
        out["headers"] = data.decode("utf-8", "replace").replace("\r\n", "\n")
        out["meta"] = entry.meta
        return out

    async def flush(self, req: dict) -> int:
        if req.get("id"):
            entry = self._entry(req)
            self.runner.add(entry)  # "try it now", exactly what add() does for new mail
            return 1
        n = len(self.runner.entries)
        self.runner.kick()
        return n

    async def delete(self, req: dict) -> str:
        entry = await self._idle_entry(req)
        self.runner.entries.pop(entry.id, None)
        self._forget(entry.id)
        await asyncio.to_thread(self.spool.remove, entry)
        log.info("%s: deleted from the queue by the operator", entry.id)
        return entry.id

    async def bounce(self, req: dict) -> int:
        entry = await self._idle_entry(req)
        now = time.time()
        pending = entry.pending
        for r in pending:
            r.status, r.updated = "failed", now
            r.text = f"5.0.0 returned to sender by the postmaster; last error: {r.text or 'none'}"
            r.code = 550
        self.runner.entries.pop(entry.id, None)
        self._forget(entry.id)
        if pending and self.notifier is not None and entry.sender:
            await self.notifier.bounce(entry, pending)
        await asyncio.to_thread(self.spool.remove, entry)
        log.info("%s: bounced by the operator (%d recipients)", entry.id, len(pending))
        return len(pending)


def _read_headers(entry) -> bytes:
    return header_block(entry.read_message())


# ---- wiring into the running relay -------------------------------------------------------

class QueueServices:
    """What issue 6 adds to a running relay: onward SMTP delivery, DSNs and the control socket.

    :func:`start_queue_services` is called by RelayServer.start() between creating the queue
    runner and starting it (so recovered mail already goes out through the SMTP client);
    :meth:`close` is called by RelayServer.stop() before the runner stops (the runner's stop
    closes the SMTP client's connections through its ``aclose``)."""

    def __init__(self, remote, notifier, control: ControlServer):
        self.remote, self.notifier, self.control = remote, notifier, control

    async def close(self) -> None:
        await self.control.close()


async def start_queue_services(server) -> QueueServices:
    """Plug RemoteDelivery and DSNNotifier into ``server.runner``; serve the control socket."""
    cfg, spool, runner = server.cfg, server.spool, server.runner

    async def enqueue(sender: str, recipients: list[str], data: bytes) -> None:
        entry = await spool.store(sender, recipients, data, meta={"origin": "dsn"})
        runner.add(entry)

    remote = RemoteDelivery(cfg)
    notifier = DSNNotifier(cfg.hostname, cfg.queue.max_lifetime, enqueue, clock=runner.clock)
    runner.remote, runner.notifier = remote, notifier
    control = ControlServer(cfg.control_socket, QueueCommands(runner, spool, notifier).handlers())
    await control.start()
    return QueueServices(remote, notifier, control)
