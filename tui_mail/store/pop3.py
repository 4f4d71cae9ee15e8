"""POP3 accounts: download with poplib into a local Maildir, then read it like any folder.

``Pop3Store`` is a ``LocalStore`` (folders, flags, search, watch all local) plus ``sync()``,
which logs in (implicit TLS, STLS or plain; USER/PASS), lists the server's messages by UIDL,
downloads (RETR) those never seen before into INBOX, and then, by the account's mode, keeps
them on the server (default), deletes them after download, or deletes them N days after they
were first downloaded. DELE only takes effect at QUIT (RFC 1939), so a dropped connection
deletes nothing.

Why the state file: POP3 keeps no state between sessions, so which UIDLs were already
downloaded (and when) is kept in ``.pop3-state.sqlite`` beside the mail; nothing is downloaded
twice. Servers without UIDL get a stand-in id: a hash of the message's headers (TOP n 0), which
is stable as long as the server does not rewrite headers; a warning says so.

The dialogue goes to ``self.trace`` (C:/S: status lines; PASS masked; message bodies omitted).
Every failure is raised as a MailError subclass.
"""

from __future__ import annotations

import hashlib
import logging
import os
import poplib
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tui_mail.errors import AuthError, ConnectError, MailError, ProtocolError, TLSError
from tui_mail.store.base import Cancel
from tui_mail.store import guard
from tui_mail.store.guard import DEFAULT_COMMAND_DEADLINE, DEFAULT_LOGIN_DEADLINE, DEFAULT_MAX_LITERAL, Deadline
from tui_mail.store.local import LocalStore
from tui_mail.store.private import private_file

log = logging.getLogger(__name__)

SECURITY = ("tls", "starttls", "none")
MODES = ("keep", "delete", "leave")
STATE_FILE = ".pop3-state.sqlite"


@dataclass(frozen=True)
class Pop3Settings:
    host: str
    port: int = 995
    security: str = "tls"                # tls | starttls | none
    user: str = ""
    # a str, or a callable asked at login time (keyring/password_command: no lookup until needed)
    password: str | Callable[[], str | None] | None = field(default=None, repr=False)
    mode: str = "keep"                   # keep | delete | leave (leave_days on the server)
    leave_days: int = 14
    timeout: float = 30.0
    cafile: str | None = None            # added to the system CAs
    tls_fingerprint: str | None = None   # "sha256:…" pin (tui_mail.tls)
    tls_verify: bool = True              # False: unchecked, warned on every connect
    # auth = "oauth2": token(refresh) → access token, used with AUTH OAUTHBEARER/XOAUTH2
    oauth2: Callable[[bool], str] | None = field(default=None, repr=False)
    use_uidl: bool = True                # False: always use the header-hash stand-in
    # hostile-server limits (tui_mail.store.guard): totals whatever the server's pace, and the
    # largest multi-line answer (a RETR) accepted
    login_deadline: float = DEFAULT_LOGIN_DEADLINE
    command_deadline: float = DEFAULT_COMMAND_DEADLINE
    max_message_bytes: int = DEFAULT_MAX_LITERAL

    def __post_init__(self) -> None:
        if self.security not in SECURITY:
            raise ValueError(f"security must be one of {', '.join(SECURITY)}, not {self.security!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")


@dataclass
class SyncResult:
    on_server: int = 0
    downloaded: int = 0
    deleted: int = 0
    new_uids: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def header_id(header_lines: list[bytes]) -> str:
    """Stand-in for UIDL: a hash of the message's header block (TOP n 0)."""
    digest = hashlib.sha256(b"\r\n".join(line.rstrip(b"\r\n") for line in header_lines)).hexdigest()
    return "hdr-" + digest[:40]


def parse_listing(lines: list[bytes]) -> dict[int, str]:
    """UIDL listing lines (b"1 abc") → {message number: uid}."""
    out = {}
    for line in lines:
        parts = line.decode("ascii", "replace").split()
        if len(parts) >= 2 and parts[0].isdigit():
            out[int(parts[0])] = parts[1]
    return out


class _Traced:
    """Mixin over poplib.POP3: report status lines to ``sink`` with PASS masked."""

    sink: Callable[[str, str], None] | None = None

    def __init__(self, *args, **kw):
        try:
            super().__init__(*args, **kw)
        except BaseException:  # poplib leaves the socket open when the greeting fails
            for name in ("file", "sock"):  # the makefile() reader keeps the socket alive too
                thing = getattr(self, name, None)
                if thing is not None:
                    thing.close()
            raise

    max_message_bytes = DEFAULT_MAX_LITERAL
    command_deadline: float | None = DEFAULT_COMMAND_DEADLINE
    where = "the POP3 server"

    def _create_socket(self, timeout):
        sock = super()._create_socket(timeout)
        deadline = guard.current()
        if deadline is not None:
            deadline.attach(sock)
        return sock

    def _shortcmd(self, line):
        return self._bounded(super()._shortcmd, line)

    def _longcmd(self, line):
        return self._bounded(super()._longcmd, line)

    def _bounded(self, command, line):
        """One command within ``command_deadline`` (a server dripping its answer is cut off)."""
        verb = (line.split(" ", 1)[0] if isinstance(line, str) else "").upper()
        deadline = Deadline(self.command_deadline, self.where, f"answer to {verb}")
        with deadline:
            deadline.attach(getattr(self, "sock", None))
            try:
                return command(line)
            except MailError:
                raise
            except BaseException:
                if deadline.expired:
                    raise deadline.error() from None
                raise

    def _getlongresp(self):
        """poplib's, with a cap on the whole answer (poplib caps one line, not a RETR)."""
        resp = self._getresp()
        lines, octets = [], 0
        line, o = self._getline()
        while line != b".":
            if line.startswith(b".."):
                o -= 1
                line = line[1:]
            octets += o
            if octets > self.max_message_bytes:
                raise guard.ResponseTooLarge(
                    f"{self.where} sent more than {self.max_message_bytes:,} bytes in one answer; this account "
                    "accepts no more (max_literal_mb in config.toml)")
            lines.append(line)
            line, o = self._getline()
        return resp, lines, octets

    def _putcmd(self, line):
        if self.sink:
            shown = "PASS ****" if line.upper().startswith("PASS ") else line
            if line.upper().startswith("AUTH ") and line.count(" ") >= 2:   # SASL initial response
                shown = " ".join(line.split(" ")[:2]) + " ****"
            self.sink("C", shown)
        super()._putcmd(line)

    def _getresp(self):
        resp = super()._getresp()
        if self.sink:
            self.sink("S", resp.decode("utf-8", "replace"))
        return resp


class _POP3(_Traced, poplib.POP3):
    pass


class _POP3_SSL(_Traced, poplib.POP3_SSL):
    def _create_socket(self, timeout):
        # poplib's, but the plain socket is handed to the deadline before the TLS handshake
        sock = poplib.POP3._create_socket(self, timeout)
        deadline = guard.current()
        if deadline is not None:
            deadline.attach(sock)
        return self.context.wrap_socket(sock, server_hostname=self.host)


def _text(e: Exception) -> str:
    arg = e.args[0] if e.args else e
    return (arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)).strip()


class Pop3Session:
    """One logged-in POP3 connection (context manager). Used by sync() and ``account test``."""

    def __init__(self, settings: Pop3Settings, trace: Callable[[str, str], None] | None = None):
        self.settings = settings
        self.trace = trace
        self.conn: poplib.POP3 | None = None
        self.capabilities: dict[str, list[str]] = {}

    def _tls_context(self) -> ssl.SSLContext:
        from tui_mail.tls import client_context, log

        s = self.settings

        def warn(text: str) -> None:
            log.warning("%s", text)
            if self.trace:
                self.trace("C", f"(warning: {text})")

        return client_context(cafile=s.cafile, tls_fingerprint=s.tls_fingerprint, tls_verify=s.tls_verify,
                              on_insecure=warn, where=f"POP3 {s.host}:{s.port}")

    def __enter__(self) -> "Pop3Session":
        s = self.settings
        deadline = Deadline(s.login_deadline, f"{s.host}:{s.port}", "greeting and login")
        with deadline:
            try:
                return self._enter()
            except BaseException:
                self._drop()
                if deadline.expired:
                    raise deadline.error() from None
                raise

    def _enter(self) -> "Pop3Session":
        s = self.settings
        where = f"{s.host}:{s.port}"
        ctx = self._tls_context() if s.security != "none" else None
        try:
            if self.trace:
                self.trace("C", f"(connect {where}{' TLS' if s.security == 'tls' else ''})")
            if s.security == "tls":
                conn = _POP3_SSL(s.host, s.port, timeout=s.timeout, context=ctx)
            else:
                conn = _POP3(s.host, s.port, timeout=s.timeout)
        except ssl.SSLError as e:
            raise TLSError(f"TLS with {where} failed: {e.reason or e}. Check the port (995 is TLS, "
                           "110 is plain/STLS) and the server certificate.") from None
        except (OSError, poplib.error_proto) as e:
            raise ConnectError(f"Cannot reach the POP3 server {where}: {_text(e)}") from None
        conn.sink = self.trace
        conn.where, conn.max_message_bytes = where, s.max_message_bytes
        conn.command_deadline = s.command_deadline
        if self.trace:
            self.trace("S", conn.welcome.decode("utf-8", "replace"))
        self.conn = conn
        try:
            self._capa()
            if s.security == "starttls":
                if "STLS" not in self.capabilities:
                    raise TLSError(f"{where} does not offer STLS; use security = \"tls\" (port 995) "
                                   "or \"none\" on a trusted network.")
                conn.stls(context=ctx)
                self._capa()
            if s.oauth2 is not None:
                from tui_mail.oauth2 import pop3_login

                pop3_login(conn, s.user, s.oauth2, list(self.capabilities.get("SASL", [])), where)
                return self
            conn.user(s.user)
            try:
                conn.pass_((s.password() if callable(s.password) else s.password) or "")
            except poplib.error_proto as e:
                raise AuthError(f"{s.host} refused the user name or password for {s.user!r}: "
                                f"{_text(e)}") from None
        except BaseException as e:
            self._drop()
            if isinstance(e, MailError):
                raise
            raise self.convert(e) from None
        return self

    def _capa(self) -> None:
        try:
            self.capabilities = {k.upper(): v for k, v in self.conn.capa().items()}
        except poplib.error_proto:
            self.capabilities = {}

    def convert(self, e: BaseException) -> MailError:
        where = f"{self.settings.host}:{self.settings.port}"
        if isinstance(e, ssl.SSLError):
            return TLSError(f"TLS with {where} failed: {e.reason or e}")
        if isinstance(e, poplib.error_proto) and _text(e) == "-ERR EOF":  # poplib's "closed"
            return ConnectError(f"The connection to {where} dropped; try again later.")
        if isinstance(e, poplib.error_proto):
            return ProtocolError(f"The POP3 server {where} answered: {_text(e)}")
        if isinstance(e, (OSError, EOFError)):
            return ConnectError(f"The connection to {where} dropped: {_text(e) or type(e).__name__}")
        return MailError(f"POP3 with {where} failed: {e}")

    def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def quit(self) -> None:
        """QUIT (which applies any DELE) and close."""
        if self.conn is not None:
            try:
                self.conn.quit()
            except (poplib.error_proto, OSError) as e:
                self._drop()
                raise self.convert(e) from None
            self._drop()

    def __exit__(self, *exc) -> None:
        self._drop()  # without quit(): no DELE takes effect


class Pop3Store(LocalStore):
    """A POP3 account: its local Maildir at ``root`` plus ``sync()`` from the server."""

    def __init__(self, root: str | os.PathLike, settings: Pop3Settings, *,
                 clock: Callable[[], float] = time.time, check_interval: float = 300.0, **kw):
        super().__init__(root, **kw)
        self.settings = settings
        self.clock = clock
        self.check_interval = check_interval
        self.last_sync_error: MailError | None = None
        self._state: sqlite3.Connection | None = None
        self._sync_lock = threading.Lock()
        self._checker: threading.Thread | None = None
        self._checker_stop = threading.Event()

    # --- new mail: the local watch plus a periodic sync from the server ----------------
    def watch(self, folder: str, callback) -> None:
        """Report changes of ``folder`` (local polling) and, while INBOX is watched, fetch new
        mail from the server now and every ``check_interval`` seconds; new messages then show
        up as "exists" changes. A failed check is kept in ``last_sync_error`` (and logged)."""
        # Already checking (the inbox is reloaded after every change): keep that checker, or
        # each reload would log in to the server again.
        running = self._checker is not None and self._checker.is_alive()
        self._keep_checker = running and self._is_root(folder)
        try:
            super().watch(folder, callback)     # (LocalStore.watch calls stop_watch first)
        finally:
            self._keep_checker = False
        if not self._is_root(folder) or (running and self._checker is not None):
            return
        stop = threading.Event()
        self._checker_stop = stop

        def run() -> None:
            while not stop.is_set():
                try:
                    self.sync()
                    self.last_sync_error = None
                except MailError as e:
                    self.last_sync_error = e
                    log.warning("POP3 check of %s failed: %s", self.settings.host, e)
                if stop.wait(self.check_interval):
                    return

        self._checker = threading.Thread(target=run, name="pop3-check", daemon=True)
        self._checker.start()

    def stop_watch(self) -> None:
        if getattr(self, "_keep_checker", False):
            super().stop_watch()
            return
        self._checker_stop.set()
        thread, self._checker = self._checker, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.settings.timeout + 5)
        super().stop_watch()

    def connect(self) -> None:
        super().connect()
        with self._lock:
            if self._state is None:
                try:
                    db = sqlite3.connect(private_file(Path(self.root) / STATE_FILE),
                                         check_same_thread=False,
                                         isolation_level=None)
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute("CREATE TABLE IF NOT EXISTS seen (uidl TEXT PRIMARY KEY,"
                               " first_seen REAL NOT NULL, local_key TEXT NOT NULL DEFAULT '')")
                except sqlite3.Error as e:
                    raise MailError(f"Cannot open the POP3 state in {self.root}: {e}") from e
                self._state = db

    def close(self) -> None:
        self.stop_watch()
        super().close()
        with self._lock:
            db, self._state = self._state, None
            if db is not None:
                db.close()

    def known(self) -> dict[str, float]:
        """UIDLs already downloaded → when first downloaded."""
        self.connect()
        return dict(self._state.execute("SELECT uidl, first_seen FROM seen"))

    def sync(self, progress: Callable[[int, int], None] | None = None,
             cancel: Cancel | None = None) -> SyncResult:
        """Download new messages into INBOX and apply the deletion mode; see the module doc."""
        self.connect()
        with self._sync_lock:  # one session at a time (background check vs. "get mail")
            return self._sync_locked(progress, cancel)

    def _sync_locked(self, progress, cancel) -> SyncResult:
        s = self.settings
        result = SyncResult()
        with Pop3Session(s, self.trace) as session:
            conn = session.conn
            try:
                ids = self._listing(session, result)
                result.on_server = len(ids)
                known = self.known()
                todo = [(n, uid) for n, uid in sorted(ids.items()) if uid not in known]
                for i, (n, uid) in enumerate(todo):
                    if cancel:
                        cancel.check()
                    _, lines, _ = conn.retr(n)
                    data = b"\r\n".join(lines) + b"\r\n"
                    local = self.append("INBOX", data)
                    key = self.keys("INBOX").get(local, "") if local else ""
                    self._state.execute("INSERT OR REPLACE INTO seen (uidl, first_seen, local_key)"
                                        " VALUES (?,?,?)", (uid, self.clock(), key))
                    result.downloaded += 1
                    if local:
                        result.new_uids.append(local)
                    if progress:
                        progress(i + 1, len(todo))
                known = self.known()
                now = self.clock()
                deleted: set[str] = set()
                for n, uid in sorted(ids.items()):
                    if uid not in known:
                        continue
                    if s.mode == "delete" or (s.mode == "leave" and now - known[uid] >= s.leave_days * 86400):
                        conn.dele(n)
                        deleted.add(uid)
                        result.deleted += 1
            except MailError:
                raise
            except (poplib.error_proto, OSError, EOFError, ssl.SSLError, ValueError, IndexError) as e:
                raise session.convert(e) from None
            session.quit()
        # forget UIDLs the server no longer has (only after a clean QUIT applied the DELEs)
        gone = (set(self.known()) - set(ids.values())) | deleted
        self._state.executemany("DELETE FROM seen WHERE uidl=?", [(u,) for u in gone])
        return result

    def _listing(self, session: Pop3Session, result: SyncResult) -> dict[int, str]:
        conn = session.conn
        if self.settings.use_uidl:
            try:
                _, lines, _ = conn.uidl()
                return parse_listing(lines)
            except poplib.error_proto as e:
                reason = _text(e)
        else:
            reason = "UIDL turned off for this account"
        msg = (f"{self.settings.host} does not support UIDL ({reason}); telling messages apart by "
               "a hash of their headers instead")
        result.warnings.append(msg)
        log.warning(msg)
        _, lines, _ = conn.list()
        out = {}
        for n in sorted(parse_listing(lines)):
            _, head, _ = conn.top(n, 0)
            out[n] = header_id(head)
        return out


def check_pop3(settings: Pop3Settings, trace=None) -> dict[str, list[str]]:
    """Log in and out; the server's CAPA (for ``tui-mail account test``)."""
    with Pop3Session(settings, trace) as session:
        caps = dict(session.capabilities)
        session.quit()
    return caps
