"""The IMAP MailStore (imapclient), with the SQLite header cache in front of it.

Big folders never load whole: ``folder_state`` gets the ordered UID list in one command (ESORT /
UID SORT when offered, else UID SEARCH + cached dates), ``summaries`` serves the visible window
from the cache and fetches only what is missing, and ``fill_cache`` fetches the rest in chunks
(UID sets always sent as compressed ranges, never 100,000 numbers in one command). Flags are
resynchronised with CONDSTORE CHANGEDSINCE when the server offers it.

One connection per store, guarded by a lock; a dropped connection is reopened once, the folder
reselected and the command retried, so the user keeps their place. ``watch`` runs a second
connection in IDLE (NOOP polling without IDLE) on a thread. Every library error is converted
here into a tui_mail.errors.MailError subclass with a plain message.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import logging
import quopri
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone

from typing import TYPE_CHECKING

from tui_mail.lazy_import import on_first_use
from tui_mail.errors import (AuthError, ConnectError, FolderError, MailError, MessageGone,
                             ProtocolError, TLSError)
from tui_mail.mail import charsets
from tui_mail.store.base import (DELETED, Cancel, Change, FolderInfo, FolderState, MailStore,
                                 MessageSummary, Progress)
from tui_mail.store.cache import HeaderCache
from tui_mail.store.sorting import local_order
from tui_mail.store.guard import (DEFAULT_COMMAND_DEADLINE, DEFAULT_LOGIN_DEADLINE, DEFAULT_MAX_LITERAL, Deadline,
                                  ResponseTooLarge)
from tui_mail.store.trace import attach_imaplib

if TYPE_CHECKING:
    from imapclient import IMAPClient


imapx = on_first_use("imapclient.exceptions")   # ~20 ms: imported on the first connect

# common names when the server has no SPECIAL-USE (compared case-insensitively, last segment)
ROLE_NAMES = {
    "sent": ("sent", "sent items", "sent messages", "sent mail"),
    "drafts": ("drafts", "draft"),
    "trash": ("trash", "deleted items", "deleted messages", "bin"),
    "junk": ("junk", "spam", "junk e-mail", "bulk mail"),
    "archive": ("archive", "archives", "all mail"),
}
SPECIAL_USE = {b"\\sent": "sent", b"\\drafts": "drafts", b"\\trash": "trash",
               b"\\junk": "junk", b"\\archive": "archive", b"\\all": "archive"}
LOCAL_SORT = object()   # folder_state: "this server cannot SORT; sort on the client"
SORT_KEYS = {"date": b"DATE", "arrival": b"ARRIVAL", "from": b"FROM", "subject": b"SUBJECT",
             "size": b"SIZE"}
# Summaries come from a handful of header fields rather than ENVELOPE + BODYSTRUCTURE: a
# header block is one literal to imapclient's pure-Python lexer, where ENVELOPE/BODYSTRUCTURE
# are ~70 nested tokens each; this makes filling a 100,000-message cache ~4x faster.
HEADER_FIELDS = b"DATE FROM TO CC SUBJECT MESSAGE-ID IN-REPLY-TO REFERENCES CONTENT-TYPE CONTENT-TRANSFER-ENCODING"
SUMMARY_ITEMS = [b"UID", b"FLAGS", b"RFC822.SIZE", b"BODY.PEEK[HEADER.FIELDS (" + HEADER_FIELDS + b")]"]
HEADER_KEY = b"BODY[HEADER.FIELDS (" + HEADER_FIELDS + b")]"
WHOLE_LIMIT = 512 * 1024      # messages up to this size are fetched whole by fetch_message
PART_LIMIT = 256 * 1024       # bigger non-text parts are left out unless full=True
RANGE_CHUNK = 1000            # UIDs per FETCH

log = logging.getLogger(__name__)


def _dropped() -> tuple[type[BaseException], ...]:
    """What a dropped connection raises (imapclient's abort error among them)."""
    return (imapx.IMAPClientAbortError, ConnectionError, EOFError, socket.timeout, ssl.SSLEOFError)


# What a malformed server answer makes imapclient/imaplib raise besides their own errors
# (STATUS without data: IndexError; a non-number where a number belongs: ValueError; …).
_ANOMALY = (IndexError, KeyError, ValueError, TypeError, AttributeError, UnicodeError, AssertionError)


# --- pure helpers --------------------------------------------------------------------------

def uid_ranges(uids: Iterable[int]) -> str:
    """Compress UIDs into an IMAP sequence set: [1,2,3,7,9,10] → "1:3,7,9:10"."""
    s = sorted(set(uids))
    if not s:
        raise ValueError("empty UID set")
    out, start, prev = [], s[0], s[0]
    for u in s[1:]:
        if u == prev + 1:
            prev = u
            continue
        out.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = u
    out.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(out)


def parse_sequence_set(text: str | bytes) -> list[int]:
    """Expand "1:3,7,10:8" in order (a descending range stays descending, as in ESORT)."""
    if isinstance(text, bytes):
        text = text.decode("ascii")
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            a, b = (int(x) for x in part.split(":"))
            out.extend(range(a, b + 1) if a <= b else range(a, b - 1, -1))
        else:
            out.append(int(part))
    return out


def parse_copyuid(texts: Iterable[bytes | str]) -> dict[int, int]:
    """old uid → new uid from a ``[COPYUID v src dst]`` response code (RFC 4315)."""
    for t in texts:
        if isinstance(t, bytes):
            t = t.decode("ascii", "replace")
        m = re.search(r"\[COPYUID \d+ ([\d:,]+) ([\d:,]+)\]", t, re.I)
        if m:
            src = sorted(parse_sequence_set(m.group(1)))
            dst = parse_sequence_set(m.group(2))
            if len(src) == len(dst):
                return dict(zip(src, dst))
    return {}


def copyuid_validity(texts: Iterable[bytes | str]) -> int | None:
    """The destination's UIDVALIDITY from a ``[COPYUID v src dst]`` response code."""
    for t in texts:
        if isinstance(t, bytes):
            t = t.decode("ascii", "replace")
        m = re.search(r"\[COPYUID (\d+) ", t, re.I)
        if m:
            return int(m.group(1))
    return None


def parse_appenduid(text: bytes | str) -> int | None:
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    m = re.search(r"\[APPENDUID \d+ (\d+)\]", text, re.I)
    return int(m.group(1)) if m else None


def decode_words(value: bytes | str | None) -> str:
    """RFC 2047 encoded words (any charset) → str; raw 8-bit bytes read as UTF-8. The same
    decoder as the reader and preview (``tui_mail.mail.charsets.decode_words``), so the list
    shows a subject exactly as the preview does, unknown charsets included."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if "=?" not in value:
        return value
    return charsets.decode_words(value)[0]


def parse_header_block(raw: bytes) -> dict[str, str]:
    """A header block → lower-case name: unfolded value (first occurrence wins). Bytes that
    are not UTF-8 are kept as latin-1 so nothing is lost before RFC 2047 decoding."""
    out: dict[str, str] = {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    name = None
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line:
            continue
        if line[0] in " \t":
            if name is not None and name in out:
                out[name] += " " + line.strip()
            continue
        k, sep, v = line.partition(":")
        if not sep:
            name = None
            continue
        name = k.strip().lower()
        if name in out:
            name = None          # keep the first occurrence
            continue
        out[name] = v.strip()
    return out


def _parse_date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        d = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if d is None:
        return None
    return d.astimezone(timezone.utc) if d.tzinfo else d.replace(tzinfo=timezone.utc)


_SIMPLE_ADDR = re.compile(r"^\s*(?:([^<>\",;:()\\@]*?)\s*<([^<>\s\",;]+@[^<>\s\",;]+)>|([^<>\s\",;]+@[^<>\s\",;]+))\s*$")


def _address_list(value: str) -> list[tuple[str, str]]:
    if not value:
        return []
    m = _SIMPLE_ADDR.match(value)          # fast path: one plain address (most headers)
    if m:
        return [(decode_words(m.group(1) or ""), m.group(2) or m.group(3))]
    return [(decode_words(n), a) for n, a in email.utils.getaddresses([value]) if a or n]


def summary_from_headers(uid: int, data: dict) -> MessageSummary:
    """MessageSummary from UID FETCH (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (…)])."""
    h = parse_header_block(data.get(HEADER_KEY) or b"")
    froms = _address_list(h.get("from", ""))
    from_name, from_addr = froms[0] if froms else ("", "")

    def show(lst):
        return ", ".join(f"{n} <{a}>" if n else a for n, a in lst)

    ctype = h.get("content-type", "").lower()
    main = ctype.split("/", 1)[0].strip() if ctype else "text"
    attach = ctype.startswith("multipart/mixed") or main not in ("text", "multipart", "")
    return MessageSummary(
        uid=uid, date=_parse_date(h.get("date", "")), from_name=from_name or from_addr,
        from_addr=from_addr, to=show(_address_list(h.get("to", ""))),
        cc=show(_address_list(h.get("cc", ""))), subject=decode_words(h.get("subject", "")),
        flags=_flags(data), size=int(data.get(b"RFC822.SIZE", 0) or 0), has_attachment=attach,
        message_id=h.get("message-id", ""), in_reply_to=h.get("in-reply-to", ""),
        references=tuple(re.findall(r"<[^<>\s]+>", h.get("references", ""))))


def decode_payload(raw: bytes, encoding: str) -> bytes:
    enc = (encoding or "").lower()
    if enc == "base64":
        cleaned = re.sub(rb"[^A-Za-z0-9+/=]", b"", raw)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4]
        try:
            return base64.b64decode(cleaned)
        except binascii.Error:
            return b""
    if enc == "quoted-printable":
        return quopri.decodestring(raw)
    return raw


def _part_encoding(mime_header: bytes) -> str:
    m = re.search(rb"^content-transfer-encoding:\s*([^\s;]+)", mime_header, re.I | re.M)
    return m.group(1).decode("ascii", "replace") if m else ""


def _flag_bytes(flags: Iterable[str]) -> list[bytes]:
    return [f.encode() if isinstance(f, str) else f for f in flags]


# --- the store -----------------------------------------------------------------------------

class ImapStore(MailStore):
    """MailStore over IMAP for one account.

    ``body_index_bytes``: how much of each message's first body part is fetched with its
    summary for the FTS ``body`` column (0: none; body: searches then only find what the
    server search finds). ``poll_interval``: seconds between NOOPs when IDLE is absent."""

    def __init__(self, account: str, host: str, port: int, user: str,
                 password: Callable[[], str] | str, *, security: str = "tls",
                 cache: HeaderCache | None = None, roles: dict[str, str] | None = None,
                 ssl_context: ssl.SSLContext | None = None, timeout: float = 30.0,
                 body_index_bytes: int = 1024, poll_interval: float = 60.0,
                 max_literal: int = DEFAULT_MAX_LITERAL, login_deadline: float = DEFAULT_LOGIN_DEADLINE,
                 command_deadline: float = DEFAULT_COMMAND_DEADLINE,
                 oauth2: Callable[[bool], str] | None = None):
        if security not in ("tls", "starttls", "none"):
            raise ValueError(f"security must be tls, starttls or none, not {security!r}")
        self.account, self.host, self.port, self.user = account, host, port, user
        self._password = password if callable(password) else (lambda: password)
        self.security, self.timeout = security, timeout
        # Hostile-server limits (tui_mail.store.guard): largest literal accepted, and total
        # seconds for connect+login and for one command, whatever the server's pace.
        self.max_literal, self.login_deadline = max_literal, login_deadline
        self.command_deadline = command_deadline
        self.ssl_context = ssl_context
        self.oauth2 = oauth2            # auth = "oauth2": token(refresh) → access token (tui_mail.oauth2)
        self.cache = cache if cache is not None else HeaderCache(":memory:")
        self.roles = dict(roles or {})
        self.body_index_bytes = body_index_bytes
        self.poll_interval = poll_interval
        self.trace = None
        self._client: IMAPClient | None = None
        self._caps: frozenset[bytes] = frozenset()
        self._selected: str | None = None
        self._select_info: dict = {}
        self._lock = threading.RLock()
        self._partial_orders: set[str] = set()   # folders sorted on the client before fully cached
        self._watcher: _Watcher | None = None
        self._folders_cache: list[FolderInfo] | None = None
        # folder → (UIDVALIDITY, highest UID) as of the last folder_state: the caller's list
        self._listed: dict[str, tuple[int, int | None]] = {}

    # --- connection ----------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def _open(self) -> IMAPClient:
        """A logged-in client (raises MailError subclasses) within ``login_deadline``."""
        deadline = Deadline(self.login_deadline, self.where, "greeting and login")
        deadline.max_literal = self.max_literal
        with deadline:
            try:
                return self._open_guarded(deadline)
            except ResponseTooLarge:
                raise
            except BaseException as e:
                if deadline.expired:
                    raise deadline.error() from None
                if isinstance(e, _ANOMALY):
                    raise ProtocolError(f"{self.where} answered the login with something we cannot read "
                                        f"({type(e).__name__}); is it an IMAP server?") from None
                raise

    def _open_guarded(self, deadline: Deadline) -> IMAPClient:
        try:
            from tui_mail.store.imap_client import GuardedClient

            c = GuardedClient(self.host, self.port, ssl=self.security == "tls",
                              ssl_context=self.ssl_context, timeout=self.timeout)
        except ssl.SSLError as e:
            raise TLSError(f"TLS with {self.where} failed: {e.reason or e}") from None
        except (socket.timeout, TimeoutError):
            raise ConnectError(f"{self.where} did not answer within {self.timeout:g} s") from None
        except OSError as e:
            raise ConnectError(f"cannot connect to {self.where}: {e.strerror or e}") from None
        except imapx.IMAPClientError as e:
            raise ConnectError(f"{self.where} is not an IMAP server we can use: {e}") from None
        c._imap.debug = 0
        c._imap.max_literal, c._imap.where = self.max_literal, self.where
        attach_imaplib(c._imap, lambda: self.trace)
        try:
            if self.security == "starttls":
                if b"STARTTLS" not in c.capabilities():
                    raise TLSError(f"{self.where} does not offer STARTTLS; use security = \"tls\" "
                                   "(port 993) or \"none\"")
                c.starttls(self.ssl_context)
            if self.oauth2 is not None:
                from tui_mail.oauth2 import imap_login

                imap_login(c, self.user, self.oauth2, self.where)
            else:
                c.login(self.user, self._password())
            self._caps = frozenset(x.upper() for x in c.capabilities())
            if b"CONDSTORE" in self._caps and b"ENABLE" in self._caps:
                c.enable("CONDSTORE")
            return c
        except BaseException as e:
            try:
                c.shutdown()
            except OSError:
                pass
            if isinstance(e, MailError):
                raise
            if isinstance(e, imapx.LoginError):
                raise AuthError(f"{self.where} refused the login for {self.user}: "
                                f"{_server_text(e)}") from None
            if isinstance(e, ssl.SSLError):
                raise TLSError(f"TLS with {self.where} failed: {e.reason or e}") from None
            if deadline.expired:
                raise deadline.error() from None
            if isinstance(e, _dropped() + (OSError,)):
                raise ConnectError(f"the connection to {self.where} dropped during login") from None
            if isinstance(e, imapx.IMAPClientError) and not isinstance(e, MailError):
                raise ProtocolError(f"{self.where}: {_server_text(e)}") from None
            raise

    def connect(self) -> None:
        with self._lock:
            if self._client is None:
                self._client = self._open()
                self._selected = None

    def close(self) -> None:
        self.stop_watch()
        with self._lock:
            c, self._client = self._client, None
            self._selected = None
            if c is not None:
                try:
                    c.logout()
                except Exception:  # noqa: BLE001 - a dead connection cannot log out
                    try:
                        c.shutdown()
                    except OSError:
                        pass

    def _discard(self) -> None:
        c, self._client = self._client, None
        self._selected = None
        if c is not None:
            try:
                c.shutdown()
            except OSError:
                pass

    def capabilities(self) -> frozenset[bytes]:
        self._call(lambda c: None)
        return self._caps

    def _call(self, fn, folder: str | None = None, *, what: str = "", folder_error: bool = False):
        """Run ``fn(client)`` (after selecting ``folder``), reconnecting once if the connection
        dropped; convert errors."""
        with self._lock:
            for attempt in (0, 1):
                try:
                    if self._client is None:
                        self._client = self._open()
                        self._selected = None
                    deadline = Deadline(self.command_deadline, self.where, "answer" + (f" ({what})" if what else ""))
                    deadline.max_literal = self.max_literal
                    try:
                        with deadline:
                            deadline.attach(self._client.socket())
                            if folder is not None:
                                self._select(folder)
                            return fn(self._client)
                    except ResponseTooLarge:
                        self._discard()          # the literal was not read: the stream is lost
                        raise
                    except MailError:
                        raise
                    except BaseException as e:
                        if deadline.expired:
                            self._discard()
                            raise deadline.error() from None
                        if isinstance(e, _ANOMALY):
                            self._discard()
                            raise ProtocolError(f"{what + ': ' if what else ''}{self.where} sent an answer we "
                                                f"cannot read ({type(e).__name__}: {str(e)[:200]})") from None
                        raise
                except MailError:
                    raise
                except _dropped() + (BrokenPipeError, ConnectionResetError) as e:
                    self._discard()
                    if attempt:
                        raise ConnectError(f"lost the connection to {self.where} ({e or type(e).__name__})") from None
                except ssl.SSLError as e:
                    self._discard()
                    raise TLSError(f"TLS with {self.where} failed: {e.reason or e}") from None
                except OSError as e:
                    self._discard()
                    if attempt:
                        raise ConnectError(f"lost the connection to {self.where}: {e.strerror or e}") from None
                except imapx.IMAPClientError as e:
                    text = _server_text(e)
                    prefix = f"{what}: " if what else ""
                    if folder_error or "NONEXISTENT" in text.upper() or "doesn't exist" in text:
                        raise FolderError(prefix + text) from None
                    raise ProtocolError(f"{prefix}{self.where} said: {text}") from None

    def _select(self, folder: str) -> dict:
        if self._selected == folder:
            return self._select_info
        try:
            info = self._client.select_folder(folder)
        except imapx.IMAPClientAbortError:
            raise
        except imapx.IMAPClientError as e:
            self._selected = None
            raise FolderError(f"cannot open folder {folder!r}: {_server_text(e)}") from None
        self._selected, self._select_info = folder, info
        self.cache.check_uidvalidity(self.account, folder, int(info[b"UIDVALIDITY"]))
        return info

    def _has(self, cap: bytes) -> bool:
        return cap in self._caps

    # --- folders ---------------------------------------------------------------------
    def list_folders(self, with_counts: bool = True) -> list[FolderInfo]:
        def run(c: IMAPClient):
            listed = c.list_folders()
            out = []
            for flags, delim, name in listed:
                name = name if isinstance(name, str) else name.decode("utf-8", "replace")
                attrs = frozenset(f.decode() if isinstance(f, bytes) else str(f) for f in flags)
                lower = {f.lower().encode() for f in attrs}
                role = next((SPECIAL_USE[f] for f in lower if f in SPECIAL_USE), None)
                if name.upper() == "INBOX":
                    role = "inbox"
                selectable = b"\\noselect" not in lower and b"\\nonexistent" not in lower
                total = unread = None
                if with_counts and selectable:
                    try:
                        st = c.folder_status(name, [b"MESSAGES", b"UNSEEN"])
                        total, unread = int(st[b"MESSAGES"]), int(st[b"UNSEEN"])
                    except imapx.IMAPClientAbortError:
                        raise
                    except (imapx.IMAPClientError, *_ANOMALY):
                        pass          # no counts for this folder (e.g. STATUS without data)
                d = delim.decode() if isinstance(delim, bytes) else (delim or "")
                out.append(FolderInfo(name=name, delimiter=d, role=role, attributes=attrs,
                                      total=total, unread=unread, selectable=selectable))
            return out

        folders = self._call(run, what="listing folders")
        folders = _assign_roles(folders, self.roles)
        self._folders_cache = folders
        return folders

    def folder_for_role(self, role: str) -> str | None:
        folders = self._folders_cache or self.list_folders(with_counts=False)
        return next((f.name for f in folders if f.role == role), None)

    def create_folder(self, name: str) -> None:
        self._call(lambda c: c.create_folder(name), what=f"creating folder {name!r}", folder_error=True)
        self._folders_cache = None

    def rename_folder(self, old: str, new: str) -> None:
        def run(c):
            if self._selected == old:
                c.unselect_folder() if self._has(b"UNSELECT") else c.close_folder()
                self._selected = None
            c.rename_folder(old, new)
        self._call(run, what=f"renaming folder {old!r} to {new!r}", folder_error=True)
        self.cache.drop_folder(self.account, old)
        self._folders_cache = None

    def delete_folder(self, name: str) -> None:
        def run(c):
            if self._selected == name:
                c.unselect_folder() if self._has(b"UNSELECT") else c.close_folder()
                self._selected = None
            c.delete_folder(name)
        self._call(run, what=f"deleting folder {name!r}", folder_error=True)
        self.cache.drop_folder(self.account, name)
        self._folders_cache = None

    # --- message lists -----------------------------------------------------------------
    def folder_state(self, folder: str, sort: str = "date") -> FolderState:
        key = SORT_KEYS.get(sort)
        if key is None:
            raise ValueError(f"unknown sort {sort!r}")

        def run(c: IMAPClient):
            self._selected = None            # fresh SELECT: current UIDVALIDITY and counts
            info = self._select(folder)
            uv = int(info[b"UIDVALIDITY"])
            hms = info.get(b"HIGHESTMODSEQ")
            hms = int(hms) if hms is not None else None
            exists = int(info.get(b"EXISTS", 0))
            # what the caller is about to show: a watch started after this reports any UID above
            self._listed[folder] = (uv, int(info[b"UIDNEXT"]) - 1 if info.get(b"UIDNEXT") else None)
            # no new mail (same UIDNEXT) and no expunge (same EXISTS): the saved order holds
            stamp = f"{uv}/{info.get(b'UIDNEXT')}/{exists}" if info.get(b"UIDNEXT") else None
            if stamp is not None:
                saved = self.cache.load_order(self.account, folder, sort, state=stamp)
                if saved is not None:
                    return FolderState(folder, uv, saved, hms), stamp, False
            if not exists:
                uids: list[int] = []
            elif sort == "arrival":
                uids = self._all_uids(c)
            elif self._has(b"ESORT"):
                data = c._raw_command_untagged(b"SORT", [b"RETURN", b"(ALL)", b"(" + key + b")",
                                                         b"UTF-8", b"ALL"],
                                               response_name="ESEARCH", unpack=True)
                uids = _esearch_all(data)
            elif self._has(b"SORT"):
                uids = list(c.sort([key.decode()], "ALL", "UTF-8"))
            else:
                uids = self._all_uids(c)
                stamp = LOCAL_SORT   # sorted below, on the client
            return FolderState(folder, uv, tuple(uids), hms), stamp, True

        state, stamp, fresh = self._call(run, what=f"listing {folder!r}")
        if stamp is LOCAL_SORT:
            state = FolderState(folder, state.uidvalidity, tuple(self._sort_locally(folder, state.uids, sort)),
                                state.highestmodseq)
            stamp = None     # depends on what was cached: never reused blindly
        if fresh:
            self.cache.save_order(self.account, folder, sort, state.uids, stamp)
        return state

    def cached_folder_state(self, folder: str, sort: str = "date") -> FolderState | None:
        """The last known ordered UID list from the cache, without the network (warm start)."""
        sync = self.cache.folder_sync(self.account, folder)
        uids = self.cache.load_order(self.account, folder, sort)
        if sync is None or uids is None or sync.uidvalidity is None:
            return None
        return FolderState(folder, sync.uidvalidity, uids, sync.highestmodseq)

    def _all_uids(self, c: IMAPClient) -> list[int]:
        if self._has(b"ESEARCH"):
            data = c._raw_command_untagged(b"SEARCH", [b"RETURN", b"(ALL)", b"ALL"],
                                           response_name="ESEARCH", unpack=True)
            return sorted(_esearch_all(data))
        return sorted(c.search("ALL"))

    @property
    def sorts_on_client(self) -> bool:
        """True when the server cannot SORT, so the order depends on what is cached."""
        return self._client is not None and not (self._has(b"SORT") or self._has(b"ESORT"))

    def order_incomplete(self, folder: str) -> bool:
        """The last order of ``folder`` was sorted on the client with messages not cached
        yet: once they are (window fetch, background fill), sorting again changes it."""
        return folder in self._partial_orders

    def _sort_locally(self, folder: str, uids: Sequence[int], sort: str) -> list[int]:
        """The server has no SORT: sort from the header cache (tui_mail.store.sorting). For
        from/subject/size the summaries not cached yet are fetched first (in chunks, like
        fill_cache would), so the order is complete. Date sorting never waits for the network
        (the first screen of a folder is its visible window only): what is not cached sorts
        as newest, and the UI re-sorts once the background fill has cached the dates
        (``order_incomplete``)."""
        if sort != "date":
            cached = self.cache.cached_uids(self.account, folder)
            missing = [u for u in uids if u not in cached]
            for i in range(0, len(missing), 1000):
                self._fetch_summaries(folder, missing[i:i + 1000])
        rows = self.cache.sort_rows(self.account, folder)
        if not set(uids) <= {r[0] for r in rows}:
            self._partial_orders.add(folder)
        else:
            self._partial_orders.discard(folder)
        return local_order(uids, rows, sort)

    def cached_summaries(self, folder: str, uids: Sequence[int]) -> dict[int, MessageSummary]:
        return self.cache.get(self.account, folder, uids)

    def thread_fields(self, folder: str, uids: Sequence[int]) -> list:
        wanted = set(uids)
        return [f for f in self.cache.thread_fields(self.account, folder) if f.uid in wanted]

    def summaries(self, folder: str, uids: Sequence[int]) -> dict[int, MessageSummary]:
        have = self.cache.get(self.account, folder, uids)
        missing = [u for u in uids if u not in have]
        if missing:
            have.update(self._fetch_summaries(folder, missing))
        return have

    def _fetch_summaries(self, folder: str, uids: Sequence[int],
                         with_body: bool = False) -> dict[int, MessageSummary]:
        """Fetch and cache summaries; ``with_body`` also fetches the start of the body for the
        search index. The visible window is fetched without it: asking Dovecot for BODY[1] of
        a few messages can cost it a second on a huge folder, so bodies come with the
        background fill."""
        items = list(SUMMARY_ITEMS)
        body_key = None
        if with_body and self.body_index_bytes:
            items.append(f"BODY.PEEK[1]<0.{self.body_index_bytes}>".encode())
            body_key = b"BODY[1]<0>"

        def run(c: IMAPClient):
            out: dict[int, MessageSummary] = {}
            uv = int(self._select_info[b"UIDVALIDITY"])
            for i in range(0, len(uids), RANGE_CHUNK):
                part = uids[i:i + RANGE_CHUNK]
                resp = uid_fetch(c, part, items)
                rows = []
                for uid, data in resp.items():
                    s = summary_from_headers(uid, data)
                    out[uid] = s
                    body = _body_text(data.get(body_key), data.get(HEADER_KEY)) if body_key else None
                    rows.append((s, body))
                self.cache.put(self.account, folder, uv, rows)
            return out

        return self._call(run, folder, what=f"fetching messages of {folder!r}")

    def fill_cache(self, folder: str, progress: Callable[[Progress], None] | None = None,
                   cancel: Cancel | None = None, chunk: int = 1000) -> None:
        def server_uids(c):
            self._selected = None
            self._select(folder)
            return self._all_uids(c)

        uids = self._call(server_uids, what=f"listing {folder!r}")
        cached = self.cache.cached_uids(self.account, folder)
        gone = cached - set(uids)
        if gone:
            self.cache.remove(self.account, folder, gone)
        missing = [u for u in reversed(uids) if u not in cached]   # newest first
        prog = Progress(0, len(missing))
        if progress:
            progress(prog)
        for i in range(0, len(missing), chunk):
            if cancel is not None:
                cancel.check()
            part = missing[i:i + chunk]
            self._fetch_summaries(folder, part, with_body=True)
            prog.done += len(part)
            if progress:
                progress(Progress(prog.done, prog.total))
        if self.body_index_bytes:   # the windows shown before the fill: index their bodies too
            todo = self.cache.unindexed_uids(self.account, folder)
            for i in range(0, len(todo), chunk):
                if cancel is not None:
                    cancel.check()
                self._fetch_summaries(folder, todo[i:i + chunk], with_body=True)
        if cancel is not None:
            cancel.check()
        self.resync_flags(folder, known=cached - gone)

    def resync_flags(self, folder: str, known: set[int] | None = None) -> int:
        """Bring cached flags up to date: CHANGEDSINCE when CONDSTORE is offered and a modseq
        is known, else all flags in chunks. Returns how many messages' flags were refreshed."""
        sync = self.cache.folder_sync(self.account, folder)
        known = self.cache.cached_uids(self.account, folder) if known is None else known
        if not known:
            hms = self._select_info.get(b"HIGHESTMODSEQ") if self._selected == folder else None
            if hms is not None:
                self.cache.set_sync(self.account, folder, highestmodseq=int(hms))
            return 0

        def run(c: IMAPClient):
            info = self._select_info
            hms = info.get(b"HIGHESTMODSEQ")
            flags: dict[int, frozenset[str]] = {}
            if hms is not None and sync is not None and sync.highestmodseq and self._has(b"CONDSTORE"):
                if int(hms) != sync.highestmodseq:
                    resp = uid_fetch(c, f"1:{max(known)}", [b"FLAGS"],
                                     modifiers=[f"CHANGEDSINCE {sync.highestmodseq}".encode()])
                    flags = {u: _flags(d) for u, d in resp.items() if u in known}
            else:
                ordered = sorted(known)
                for i in range(0, len(ordered), 5000):
                    resp = uid_fetch(c, ordered[i:i + 5000], [b"FLAGS"])
                    flags.update({u: _flags(d) for u, d in resp.items()})
            return flags, (int(hms) if hms is not None else None)

        flags, hms = self._call(run, folder, what=f"syncing flags of {folder!r}")
        if flags:
            self.cache.update_flags(self.account, folder, flags)
        if hms is not None:
            self.cache.set_sync(self.account, folder, highestmodseq=hms)
        return len(flags)

    # --- one message -------------------------------------------------------------------
    def fetch_message(self, folder: str, uid: int, full: bool = False) -> bytes:
        def run(c: IMAPClient):
            meta = c.fetch(str(uid), [b"RFC822.SIZE", b"BODYSTRUCTURE"]).get(uid)
            if meta is None:
                raise MessageGone(f"message {uid} is no longer in {folder!r}")
            size = int(meta.get(b"RFC822.SIZE", 0))
            bs = meta.get(b"BODYSTRUCTURE")
            if full or size <= WHOLE_LIMIT or bs is None or not bs.is_multipart:
                data = c.fetch(str(uid), [b"BODY.PEEK[]"]).get(uid, {}).get(b"BODY[]")
                if data is None:
                    raise MessageGone(f"message {uid} is no longer in {folder!r}")
                return data
            return _fetch_trimmed(c, uid, bs)

        data = self._call(run, folder, what=f"fetching message {uid}")
        return data

    def fetch_part(self, folder: str, uid: int, part: str) -> bytes:
        if not re.fullmatch(r"\d+(\.\d+)*", part):
            raise ValueError(f"bad part number {part!r}")

        def run(c: IMAPClient):
            resp = c.fetch(str(uid), [f"BODY.PEEK[{part}.MIME]".encode(),
                                      f"BODY.PEEK[{part}]".encode()]).get(uid)
            if resp is None:
                raise MessageGone(f"message {uid} is no longer in {folder!r}")
            body = resp.get(f"BODY[{part}]".encode())
            if body is None:
                raise MessageGone(f"message {uid} has no part {part}")
            mime = resp.get(f"BODY[{part}.MIME]".encode()) or b""
            return decode_payload(body, _part_encoding(mime))

        return self._call(run, folder, what=f"fetching part {part} of message {uid}")

    # --- changes -----------------------------------------------------------------------
    def set_flags(self, folder: str, uids: Iterable[int], flags: Iterable[str], add: bool = True) -> None:
        uids, fl = sorted(set(uids)), _flag_bytes(flags)
        if not uids:
            return

        def run(c: IMAPClient):
            return uid_store(c, uid_ranges(uids), "+FLAGS" if add else "-FLAGS", fl)

        result = self._call(run, folder, what="changing flags")
        wanted = set(uids)
        new = {u: v for u, v in result.items() if u in wanted}
        if new:
            self.cache.update_flags(self.account, folder, new)

    def copy(self, folder: str, uids: Iterable[int], dest: str) -> dict[int, int]:
        uids = sorted(set(uids))
        if not uids:
            return {}

        def run(c: IMAPClient):
            return uid_command(c, "COPY", uid_ranges(uids), dest)

        texts = self._call(run, folder, what=f"copying to {dest!r}")
        mapping = parse_copyuid(texts)
        self._carry_cache(folder, dest, mapping, copyuid_validity(texts))
        return mapping

    def _carry_cache(self, folder: str, dest: str, mapping: dict[int, int], uidvalidity: int | None) -> None:
        """Cached summaries follow a copy/move to their new UIDs (COPYUID), so the destination
        shows them at once in their sorted place — an undone delete goes back where it was,
        also where the server cannot SORT and the order comes from this cache."""
        sync = self.cache.folder_sync(self.account, dest)
        if sync is not None and sync.uidvalidity is not None and sync.uidvalidity != uidvalidity:
            return                       # the cache of dest is stale: it is renewed when opened
        if not mapping or uidvalidity is None:
            return
        from dataclasses import replace

        have = self.cache.get(self.account, folder, list(mapping))
        self.cache.put(self.account, dest, uidvalidity,
                       [(replace(s, uid=mapping[u]), None) for u, s in have.items()])

    def move(self, folder: str, uids: Iterable[int], dest: str) -> dict[int, int]:
        uids = sorted(set(uids))
        if not uids:
            return {}

        def run(c: IMAPClient):
            if self._has(b"MOVE"):
                return uid_command(c, "MOVE", uid_ranges(uids), dest)
            texts = uid_command(c, "COPY", uid_ranges(uids), dest)
            uid_store(c, uid_ranges(uids), "+FLAGS.SILENT", [DELETED.encode()])
            self._expunge(c, uids)
            return texts

        texts = self._call(run, folder, what=f"moving to {dest!r}")
        mapping = parse_copyuid(texts)
        self._carry_cache(folder, dest, mapping, copyuid_validity(texts))
        self.cache.remove(self.account, folder, uids)
        return mapping

    def delete(self, folder: str, uids: Iterable[int]) -> dict[int, int]:
        trash = self.folder_for_role("trash")
        if trash is None or trash == folder:
            self.expunge(folder, uids)
            return {}
        return self.move(folder, uids, trash)

    def expunge(self, folder: str, uids: Iterable[int]) -> None:
        uids = sorted(set(uids))
        if not uids:
            return

        def run(c: IMAPClient):
            uid_store(c, uid_ranges(uids), "+FLAGS.SILENT", [DELETED.encode()])
            self._expunge(c, uids)

        self._call(run, folder, what="deleting messages")
        self.cache.remove(self.account, folder, uids)

    def _expunge(self, c: IMAPClient, uids: list[int]) -> None:
        if self._has(b"UIDPLUS"):
            c.uid_expunge(uid_ranges(uids))
        else:
            c.expunge()   # without UIDPLUS other \Deleted messages go too (RFC 3501)

    def append(self, folder: str, data: bytes, flags: Iterable[str] = (),
               date: datetime | None = None) -> int | None:
        fl = _flag_bytes(flags)

        def run(c: IMAPClient):
            return c.append(folder, data, fl, date)

        text = self._call(run, what=f"saving to {folder!r}")
        return parse_appenduid(text or b"")

    # --- search ------------------------------------------------------------------------
    def search(self, folder: str, query: str) -> list[int]:
        from tui_mail.mail.search import imap_needs_utf8, to_imap

        criteria = to_imap(query)       # raises SearchSyntaxError naming the bad token
        charset = "UTF-8" if imap_needs_utf8(criteria) else None

        def run(c: IMAPClient):
            return sorted(c.search(criteria, charset=charset))

        return self._call(run, folder, what="searching")

    def local_search(self, folder: str | None, query: str) -> list[tuple[str, int]]:
        return self.cache.search(query, account=self.account, folder=folder)

    def server_threads(self, folder: str) -> list[list[tuple[int, int]]] | None:
        """The folder threaded by the server (``UID THREAD REFERENCES``, RFC 5256): one list
        of ``(depth, uid)`` per thread (tui_mail.store.imap_thread), or None when the server
        does not offer THREAD=REFERENCES (the caller threads on the client)."""
        if not self._has(b"THREAD=REFERENCES"):
            return None
        from tui_mail.store.imap_thread import ThreadSyntaxError, parse_threads

        def run(c: IMAPClient):
            try:
                tag = c._imap._command("UID", "THREAD", "REFERENCES", "UTF-8", "ALL")
                typ, data = c._imap._command_complete("THREAD", tag)
            except c._imap.error as e:     # e.g. an answer line over imaplib's 1 MB limit
                raise ProtocolError(f"{self.where}: THREAD failed: {e}") from None
            c._checkok("thread", typ, data)
            typ, data = c._imap._untagged_response(typ, data, "THREAD")
            return b" ".join(d for d in data if isinstance(d, bytes))

        raw = self._call(run, folder, what=f"threading {folder!r}")
        try:
            return parse_threads(raw)
        except ThreadSyntaxError as e:
            raise ProtocolError(f"{self.where}: {e}") from None

    def find_message_id(self, folder: str, message_id: str) -> int | None:
        wanted = message_id.strip()
        if not wanted:
            return None

        def run(c: IMAPClient):
            return c.search([b"HEADER", b"Message-ID", wanted.encode("utf-8")],
                            charset=None if wanted.isascii() else "UTF-8")

        hits = self._call(run, folder, what="looking for the original message")
        return max(hits) if hits else None

    # --- new mail ----------------------------------------------------------------------
    def watch(self, folder: str, callback: Callable[[Change], None]) -> None:
        self.stop_watch()
        self._watcher = _Watcher(self, folder, callback)
        self._watcher.start()

    def stop_watch(self) -> None:
        w, self._watcher = self._watcher, None
        if w is not None:
            w.stop()


# --- watching ------------------------------------------------------------------------------

class _Watcher:
    """A second connection on a thread: IDLE (re-issued every few minutes), or NOOP polling."""

    REIDLE = 25 * 60

    def __init__(self, store: ImapStore, folder: str, callback: Callable[[Change], None]):
        self.store, self.folder, self.callback = store, folder, callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"imap-watch-{folder}", daemon=True)
        self._client: IMAPClient | None = None
        self._max_uid = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        backoff, reconnected = 0.5, False
        while not self._stop.is_set():
            try:
                self._client = self.store._open()
                info = self._client.select_folder(self.folder, readonly=True)
                self._max_uid = int(info.get(b"UIDNEXT", 1)) - 1
                listed = self.store._listed.get(self.folder)
                if reconnected:
                    self._emit(Change(self.folder, "reconnected"))
                elif (listed is not None and listed[1] is not None and listed[1] < self._max_uid
                      and listed[0] == int(info.get(b"UIDVALIDITY", 0))):
                    # mail that came between the caller's listing and this SELECT (the watch is
                    # started after the folder is shown): reported now, not silently taken as known
                    self._max_uid = listed[1]
                    self._report(self._client, [(1, b"EXISTS")])
                backoff = 0.5
                if b"IDLE" in self.store._caps:
                    self._idle_loop()
                else:
                    self._poll_loop()
            except (MailError, imapx.IMAPClientError, OSError, EOFError, *_ANOMALY):
                reconnected = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30)
            finally:
                c, self._client = self._client, None
                if c is not None:
                    try:
                        c.shutdown()
                    except OSError:
                        pass

    def _idle_loop(self) -> None:
        c = self._client
        while not self._stop.is_set():
            c.idle()
            started = time.monotonic()
            responses: list = []
            silent_reads = 0
            while not self._stop.is_set() and time.monotonic() - started < self.REIDLE:
                responses = c.idle_check(timeout=0.2)
                if responses:
                    break
                # imapclient's idle_check swallows EOF and returns []: a socket that stays
                # readable while nothing can be read is a connection the server closed.
                silent_reads = silent_reads + 1 if _readable(c) else 0
                if silent_reads >= 3:
                    raise ConnectError(f"{self.store.where}: the server closed the connection")
            if any(isinstance(r, tuple) and r and r[0] == b"BYE" for r in responses):
                raise ConnectError(f"{self.store.where}: the server ended the session")
            _, more = c.idle_done()
            responses = list(responses) + list(more or [])
            if responses:
                self._report(c, responses)

    def _poll_loop(self) -> None:
        c = self._client
        while not self._stop.wait(self.store.poll_interval):
            _, responses = c.noop()
            if responses:
                self._report(c, responses)

    def _emit(self, change: Change) -> None:
        try:
            self.callback(change)
        except Exception:  # noqa: BLE001 - a failing callback must not end the watch
            log.exception("watch callback failed for %s", change)

    def _report(self, c: IMAPClient, responses: list) -> None:
        kinds = {r[1] for r in responses if isinstance(r, tuple) and len(r) > 1}
        if b"EXPUNGE" in kinds:
            self._emit(Change(self.folder, "expunge"))
        if b"FETCH" in kinds:
            uids, seqs = [], []
            for r in responses:
                if len(r) > 2 and r[1] == b"FETCH":
                    data = r[2]
                    uid = next((int(data[i + 1]) for i in range(0, len(data) - 1, 2) if data[i] == b"UID"), None)
                    if uid is not None:
                        uids.append(uid)
                    else:  # RFC 3501 7.4.2: unsolicited FETCH may carry only the sequence number
                        seqs.append(int(r[0]))
            if seqs:
                uids.extend(_uids_of_sequence_numbers(c, seqs))
            self._emit(Change(self.folder, "flags", tuple(sorted(set(uids)))))
        if b"EXISTS" in kinds:
            new = [u for u in c.search(["UID", f"{self._max_uid + 1}:*"]) if u > self._max_uid]
            if new:
                self._max_uid = max(new)
            self._emit(Change(self.folder, "exists", tuple(sorted(new))))


# --- small helpers -------------------------------------------------------------------------

def _readable(c: IMAPClient) -> bool:
    """True when the connection's socket has something to read (data or EOF) right now."""
    import select

    try:
        sock = c.socket()
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _uids_of_sequence_numbers(c: IMAPClient, seqs: Sequence[int]) -> list[int]:
    """Map message sequence numbers to UIDs with a (non-UID) FETCH of the UID item."""
    c.use_uid = False
    try:
        return sorted(int(d[b"UID"]) for d in c.fetch(sorted(set(seqs)), ["UID"]).values() if b"UID" in d)
    finally:
        c.use_uid = True


def _paren(items: Sequence) -> str:
    return "(" + " ".join((i.decode() if isinstance(i, bytes) else str(i)).upper() for i in items) + ")"


def uid_fetch(c: IMAPClient, uids: str | Iterable[int], items: Sequence, modifiers=None) -> dict:
    """UID FETCH with a sequence-set string (imapclient 4.1's fetch() only takes int lists and
    drops the answers for ranges): returns uid → data like imapclient's fetch."""
    seqset = uids if isinstance(uids, str) else uid_ranges(uids)
    args = ["UID", "FETCH", seqset, _paren(items)]
    if modifiers:
        args.append(_paren(modifiers))
    tag = c._imap._command(*args)
    typ, data = c._imap._command_complete("FETCH", tag)
    c._checkok("fetch", typ, data)
    typ, data = c._imap._untagged_response(typ, data, "FETCH")
    from imapclient.response_parser import parse_fetch_response

    return parse_fetch_response(data, c.normalise_times, True)


def uid_command(c: IMAPClient, verb: str, seqset: str, folder: str) -> list[bytes]:
    """UID COPY/MOVE; returns the tagged and untagged OK texts (where COPYUID hides:
    imaplib's uid() keeps neither for these verbs)."""
    c._imap.untagged_responses.pop("OK", None)
    tag = c._imap._command("UID", verb, seqset, c._normalise_folder(folder))
    typ, data = c._imap._command_complete(verb, tag)
    c._checkok(verb.lower(), typ, data)
    extra = c._imap.untagged_responses.pop("OK", None) or []
    return [d for d in [*data, *extra] if isinstance(d, bytes)]


def uid_store(c: IMAPClient, uids: str, op: str, flags: Sequence[bytes]) -> dict[int, frozenset[str]]:
    """UID STORE ``op`` (+FLAGS / -FLAGS) and return the new flags the server reported."""
    flaglist = b"(" + b" ".join(flags) + b")"
    typ, data = c._imap.uid("STORE", uids, op, flaglist.decode("utf-8"))
    c._checkok("store", typ, data)
    from imapclient.response_parser import parse_fetch_response

    return {u: _flags(d) for u, d in parse_fetch_response(data, c.normalise_times, True).items()
            if b"FLAGS" in d}


def _server_text(e: Exception) -> str:
    text = str(e.args[0] if e.args else e)
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text.strip() or type(e).__name__


def _flags(data: dict) -> frozenset[str]:
    """FLAGS as str, without the session-only \\Recent."""
    return frozenset(x for x in (f.decode() if isinstance(f, bytes) else str(f)
                                 for f in data.get(b"FLAGS", ())) if x != "\\Recent")


def _esearch_all(data) -> list[int]:
    """Parse ``(TAG "A5") UID ALL 1:3,7`` (ESEARCH/ESORT) → the ALL set in order."""
    if isinstance(data, (list, tuple)):
        data = b" ".join(d if isinstance(d, bytes) else str(d).encode() for d in data if d)
    if not data:
        return []
    m = re.search(rb"\bALL ([\d:,]+)", data)
    return parse_sequence_set(m.group(1)) if m else []


def _assign_roles(folders: list[FolderInfo], overrides: dict[str, str]) -> list[FolderInfo]:
    """SPECIAL-USE roles are kept; config overrides win; missing roles fall back to names."""
    from dataclasses import replace

    taken = {f.role for f in folders if f.role}
    by_name = {f.name: f for f in folders}
    for role, name in overrides.items():
        for n, f in list(by_name.items()):
            if f.role == role and n != name:
                by_name[n] = replace(f, role=None)
        if name in by_name:
            by_name[name] = replace(by_name[name], role=role)
            taken.add(role)
    for role, names in ROLE_NAMES.items():
        if role in taken:
            continue
        for n, f in by_name.items():
            last = f.parts[-1].lower() if f.parts else n.lower()
            if f.role is None and f.selectable and last in names:
                by_name[n] = replace(f, role=role)
                taken.add(role)
                break
    return [by_name[f.name] for f in folders]


def _body_text(raw: bytes | None, header_block: bytes | None) -> str:
    """Best-effort text of a body start for the search index: decoded by the top-level
    Content-Transfer-Encoding and charset for a single part; a multipart's first part is
    indexed raw (its own MIME headers and all)."""
    if not raw:
        return ""
    h = parse_header_block(header_block or b"")
    ctype = h.get("content-type", "")
    if ctype.lower().startswith("multipart/"):
        return raw.decode("utf-8", "replace")
    m = re.search(r'charset\s*=\s*"?([^";\s]+)', ctype, re.I)
    data = decode_payload(raw, h.get("content-transfer-encoding", "").strip())
    try:
        return data.decode(m.group(1) if m else "utf-8", "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _fetch_trimmed(c: IMAPClient, uid: int, bs) -> bytes:
    """Rebuild a big multipart message from its parts, leaving out large non-text bodies
    (their MIME headers stay, so the parser still lists them as attachments)."""
    sections: list[bytes] = [b"BODY.PEEK[HEADER]"]
    plan: list = []

    def walk(node, path: str):
        if node.is_multipart:
            kids = []
            for i, child in enumerate(node[0], 1):
                sub = f"{path}.{i}" if path else str(i)
                kids.append(walk(child, sub))
            boundary = None
            params = node[2] if len(node) > 2 and isinstance(node[2], tuple) else ()
            for k, v in zip(params[::2], params[1::2]):
                if isinstance(k, bytes) and k.lower() == b"boundary":
                    boundary = v
            if path:
                sections.append(f"BODY.PEEK[{path}.MIME]".encode())
            return ("multi", path, boundary, kids)
        sections.append(f"BODY.PEEK[{path}.MIME]".encode())
        maintype = (node[0] or b"").lower()
        size = int(node[6] or 0) if len(node) > 6 and isinstance(node[6], int) else 0
        keep = maintype == b"text" or size <= PART_LIMIT
        if keep:
            sections.append(f"BODY.PEEK[{path}]".encode())
        return ("leaf", path, keep)

    tree = walk(bs, "")
    data = c.fetch(str(uid), sections).get(uid)
    if data is None:
        raise MessageGone(f"message {uid} is gone")

    def get(key: str) -> bytes:
        return data.get(key.encode()) or b""

    def render(node) -> bytes:
        if node[0] == "leaf":
            _, path, keep = node
            return get(f"BODY[{path}.MIME]") + (get(f"BODY[{path}]") if keep else b"")
        _, path, boundary, kids = node
        head = get("BODY[HEADER]") if not path else get(f"BODY[{path}.MIME]")
        if boundary is None:
            return head
        out = [head]
        for k in kids:
            out.append(b"--" + boundary + b"\r\n" + render(k) + b"\r\n")
        out.append(b"--" + boundary + b"--\r\n")
        return b"".join(out)

    return render(tree)
