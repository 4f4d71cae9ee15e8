"""The client's durable outbox: compose offline, send when the submission server answers.

A composed message is first stored whole (Bcc included, so the envelope can always be rebuilt
from the file) in a local Maildir, fsynced file and directory, and only then sent. The Maildir
is a ``LocalStore`` whose one folder is "Outbox" (role "outbox"), so the UI lists it like any
folder. Scheduling state lives beside it in ``.outbox-state.sqlite`` (synchronous=FULL), one
row per message keyed by its Maildir unique name:

    queued ──send──▶ sending ──250──▶ sent ──Sent copy──▶ filed ──▶ (file and row removed)
       ▲                │ 4xx / network: queued again with backoff (30 s, 1 min, 2 min … 30 min)
       │                │ 5xx: failed (server reply kept; message \\Flagged in the Outbox)
       └── retry() ─────┴ crash while "sending": held

Crash safety, step by step:
- before the file is durable, ``enqueue`` has not returned: the caller still has the draft;
- a file without a row (crash right after the file was written, or a message moved into the
  Outbox by hand) is picked up as queued;
- the state is committed as "sending" once connected and logged in, right *before* MAIL FROM
  (a crash while still connecting leaves it "queued": the server has nothing yet), and as
  "sent" right after the server's 250. A row still "sending" when the outbox lock is next
  taken (so no live process is sending it) means a sender died in the window where the server
  may or may not have taken the message. We do not resend it blindly: it becomes **held**,
  with a note asking the user to check and press retry. A possible duplicate is the user's
  informed choice, never ours;
- "sent" rows resume with the Sent copy, "filed" rows with the removal, so a message is never
  sent twice; the only repeatable step is the Sent copy (a crash between the append and the
  "filed" commit can leave two copies in Sent, which is visible and harmless).
A lock file (flock) keeps two processes (the TUI and ``tui-mail send``) from sending the same
queue at once.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from tui_mail.errors import MailError, SendError
from tui_mail.send.smtp import SendResult, prepare
from tui_mail.store.base import FLAGGED, SEEN
from tui_mail.store.local import LocalStore
from tui_mail.store.private import private_file

OUTBOX = "Outbox"
STATE_FILE = ".outbox-state.sqlite"
LOCK_FILE = ".outbox.lock"
MAX_AGE = 5 * 24 * 3600            # give up on transient failures after 5 days (DESIGN.md §3)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0, created REAL NOT NULL, last_error TEXT NOT NULL DEFAULT '',
    code INTEGER, reply TEXT NOT NULL DEFAULT '');
"""

Send = Callable[..., Awaitable[SendResult]]
"""``send(data, before_mail=callback)``: submit; call ``before_mail()`` right before MAIL FROM."""
SentCopy = Callable[[bytes], None]


def _has_recipients(data: bytes) -> bool:
    try:
        prepare(data)
    except SendError:
        return False
    return True


def backoff(attempts: int) -> float:
    """Seconds to wait after ``attempts`` failed tries: 30 s doubling, at most 30 minutes."""
    return float(min(30 * 2 ** max(attempts - 1, 0), 1800))


@dataclass(frozen=True)
class OutboxItem:
    key: str
    uid: int
    subject: str
    recipients: str
    state: str                 # queued | sending | sent | filed | failed | held
    attempts: int
    next_try: float
    last_error: str
    code: int | None


@dataclass(frozen=True)
class Outcome:
    key: str
    state: str                 # what the attempt ended as: filed | queued | failed
    detail: str


class Outbox:
    """The outbox at ``root``. ``send(data)`` submits one message (normally
    ``SmtpSubmitter.send``); ``sent_copy(data)`` files it in Sent (IMAP append or local Sent)."""

    def __init__(self, root: str | os.PathLike, send: Send, sent_copy: SentCopy | None = None,
                 clock: Callable[[], float] = time.time):
        self.root = Path(root)
        self.store = LocalStore(self.root, root_name=OUTBOX)
        self._send = send
        self._sent_copy = sent_copy
        self.clock = clock
        self._db: sqlite3.Connection | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def open(self) -> "Outbox":
        if self._db is None:
            self.store.connect()
            db = sqlite3.connect(private_file(self.root / STATE_FILE), isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            self._db = db
            self._recover()
        return self

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()
        self.store.close()

    def __enter__(self) -> "Outbox":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.open()
        assert self._db is not None
        return self._db

    def _set(self, key: str, **fields) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        self.db.execute(f"UPDATE items SET {cols} WHERE key=?", (*fields.values(), key))

    # --- state -------------------------------------------------------------------------
    def _recover(self) -> None:
        """Rows for files (crash before the row, or a message moved in by hand); rows whose file
        is gone are dropped. Safe while another process sends: it only adds and forgets."""
        keys = set(self.store.keys(OUTBOX).values())
        rows = {k for (k,) in self.db.execute("SELECT key FROM items")}
        now = self.clock()
        for key in keys - rows:
            self.db.execute("INSERT OR IGNORE INTO items (key, state, created) VALUES (?, 'queued', ?)",
                            (key, now))
        for key in rows - keys:
            self.db.execute("DELETE FROM items WHERE key=? AND state NOT IN ('sending', 'sent', 'filed')",
                            (key,))

    def _recover_interrupted(self) -> None:
        """Under the outbox lock nobody else is sending: a row still "sending" is from a process
        that died in the uncertain window. Hold it for the user instead of resending blindly."""
        self.db.execute(
            "UPDATE items SET state='held', last_error=? WHERE state='sending'",
            ("Sending was interrupted after the server was contacted; the message may have been "
             "delivered. Check with a recipient or the server, then retry or delete it.",))

    def enqueue(self, message, recipients: list[str] | tuple[str, ...] | None = None) -> str:
        """Store the message durably in the outbox (queued); returns its key.

        ``message``: bytes, an EmailMessage, or a composed message with ``data`` and
        ``recipients`` (tui_mail.mail.compose.Composed). Envelope recipients that are not in
        To/Cc/Bcc (the Bcc a composer already took out of the headers) are written into a Bcc
        header of the stored copy, so the envelope can always be rebuilt from the file; Bcc is
        stripped again on the wire. The envelope is checked first: a message without From or
        recipients never enters the queue."""
        if hasattr(message, "data") and hasattr(message, "recipients"):
            recipients = list(message.recipients) if recipients is None else recipients
            message = message.data
        data = message if isinstance(message, bytes) else message.as_bytes()
        if recipients:
            _, listed, _ = prepare(data) if _has_recipients(data) else ("", [], b"")
            hidden = [r for r in recipients if r.lower() not in {x.lower() for x in listed}]
            if hidden:
                data = ("Bcc: " + ", ".join(hidden) + "\r\n").encode() + data
        prepare(data)  # raises SendError(permanent) for no From / no recipients
        uid = self.store.append(OUTBOX, data, flags=[SEEN])
        key = self.store.keys(OUTBOX)[uid]
        self.db.execute("INSERT OR REPLACE INTO items (key, state, created) VALUES (?, 'queued', ?)",
                        (key, self.clock()))
        return key

    def items(self) -> list[OutboxItem]:
        keys = {k: u for u, k in self.store.keys(OUTBOX).items()}
        summaries = self.store.summaries(OUTBOX, list(keys.values()))
        out = []
        for key, state, attempts, next_try, err, code in self.db.execute(
                "SELECT key, state, attempts, next_try, last_error, code FROM items ORDER BY created, key"):
            uid = keys.get(key)
            if uid is None:
                continue
            s = summaries.get(uid)
            out.append(OutboxItem(key=key, uid=uid, subject=s.subject if s else "",
                                  recipients=", ".join(x for x in (s.to, s.cc) if x) if s else "",
                                  state=state, attempts=attempts, next_try=next_try,
                                  last_error=err, code=code))
        return out

    def retry(self, key: str) -> None:
        """Send a failed or held message again at the next ``process()``."""
        self._set(key, state="queued", next_try=0, last_error="")
        uid = {k: u for u, k in self.store.keys(OUTBOX).items()}.get(key)
        if uid is not None:
            self.store.set_flags(OUTBOX, [uid], [FLAGGED], add=False)

    def wake(self) -> None:
        """Make every queued message due now (the user pressed "send now", or the network came back)."""
        self.db.execute("UPDATE items SET next_try=0 WHERE state='queued'")

    def remove(self, key: str) -> None:
        """Delete a message from the outbox without sending it."""
        uid = {k: u for u, k in self.store.keys(OUTBOX).items()}.get(key)
        if uid is not None:
            self.store.expunge(OUTBOX, [uid])
        self.db.execute("DELETE FROM items WHERE key=?", (key,))

    def next_due(self) -> float | None:
        row = self.db.execute("SELECT min(next_try) FROM items WHERE state='queued'").fetchone()
        return row[0]

    # --- sending -----------------------------------------------------------------------
    async def process(self) -> list[Outcome]:
        """Send everything due now and finish interrupted filings. Returns what happened;
        returns [] at once when another process holds the outbox lock."""
        lock = open(private_file(self.root / LOCK_FILE), "a")
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []
            self.open()
            self._recover()
            self._recover_interrupted()
            outcomes = []
            now = self.clock()
            for key, state in self.db.execute(
                    "SELECT key, state FROM items WHERE (state='queued' AND next_try<=?)"
                    " OR state IN ('sent', 'filed') ORDER BY created, key", (now,)).fetchall():
                outcomes.append(await self._advance(key, state))
            return outcomes
        finally:
            lock.close()

    def _read(self, key: str) -> tuple[int, bytes]:
        uid = {k: u for u, k in self.store.keys(OUTBOX).items()}.get(key)
        if uid is None:
            raise MailError(f"Outbox message {key} vanished")
        return uid, self.store.fetch_message(OUTBOX, uid, full=True)

    async def _advance(self, key: str, state: str) -> Outcome:
        try:
            uid, data = self._read(key)
        except MailError:
            self.db.execute("DELETE FROM items WHERE key=?", (key,))
            return Outcome(key, "gone", "the message was removed from the outbox")
        if state == "queued":
            (created, attempts) = self.db.execute(
                "SELECT created, attempts FROM items WHERE key=?", (key,)).fetchone()
            self._set(key, attempts=attempts + 1)

            def sending() -> None:  # connected and logged in: the uncertain window opens
                self._set(key, state="sending")

            try:
                result = await self._send(data, before_mail=sending)
            except SendError as e:
                return self._failed(key, uid, e, attempts + 1, created)
            except asyncio.CancelledError:
                (state_now,) = self.db.execute("SELECT state FROM items WHERE key=?", (key,)).fetchone()
                if state_now == "sending":
                    self._set(key, state="held", last_error="Sending was cancelled midway; check, then retry.")
                raise
            self._set(key, state="sent", reply=result.reply, last_error="")
            state = "sent"
        if state == "sent":
            if self._sent_copy is not None:
                try:
                    await asyncio.to_thread(self._sent_copy, data)
                except MailError as e:
                    # the message is out; only the copy is missing: keep it for the next round
                    self._set(key, last_error=f"Sent, but the copy to Sent failed: {e}")
                    return Outcome(key, "sent", str(e))
            self._set(key, state="filed")
        self.store.expunge(OUTBOX, [uid])
        reply = self.db.execute("SELECT reply FROM items WHERE key=?", (key,)).fetchone()
        self.db.execute("DELETE FROM items WHERE key=?", (key,))
        return Outcome(key, "filed", reply[0] if reply else "")

    def _failed(self, key: str, uid: int, error: SendError, attempts: int, created: float) -> Outcome:
        now = self.clock()
        if error.permanent or now - created > MAX_AGE:
            why = str(error) if error.permanent else f"Gave up after {attempts} tries over 5 days: {error}"
            self._set(key, state="failed", last_error=why, code=error.code)
            self.store.set_flags(OUTBOX, [uid], [FLAGGED])
            return Outcome(key, "failed", why)
        self._set(key, state="queued", next_try=now + backoff(attempts), last_error=str(error),
                  code=error.code)
        return Outcome(key, "queued", str(error))
