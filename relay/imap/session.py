"""The IMAP4rev1 session state machine: one object per connection, commands in, response bytes out.

States (RFC 3501 3): not-authenticated → authenticated → selected → logout. Each ``cmd_*``
method checks its state, parses its arguments (relay.imap.parser), talks to the user's
:class:`relay.imap.backend.Mailbox` and appends response lines to ``self.out``; the asyncio glue
in relay/imap/server.py writes them, upgrades TLS, runs IDLE and owns the socket.

Rules kept here:
- The client's view of a selected mailbox is ``self.uids`` (sequence number n is
  ``self.uids[n-1]``). It changes only when we tell the client: ``EXPUNGE`` is never sent
  during FETCH, STORE or SEARCH (RFC 3501 7.4.1), so sequence numbers stay right when another
  session expunges; new mail is announced with ``EXISTS``; flag changes made by others with an
  unsolicited ``FETCH (FLAGS …)``.
- Checking for changes is O(1) while nothing changed (``Mailbox.version``), so NOOP and IDLE do
  not rescan large mailboxes.
- EXAMINE is read-only: no flag changes (not even implicit \\Seen), no EXPUNGE, and it never
  claims \\Recent (RFC 3501 6.3.2).
- \\Recent (RFC 3501 2.3.2): a message is recent in the one session that hears of it first
  (SELECT, or ``EXISTS`` in ``sync``); ``* n RECENT`` follows every ``* n EXISTS``.
- Keywords: every FLAGS output goes through ``_flags``, which announces a keyword the client
  was not told about with ``* FLAGS``/PERMANENTFLAGS before the FETCH that carries it.
- Messages another session expunged meanwhile are left out of FETCH (OK, RFC 2180 4.1.2) and
  SEARCH (``OK [EXPUNGEISSUED]``, RFC 5530), as Dovecot answers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
from array import array
import datetime as _dt
import re
from collections.abc import Awaitable, Callable, Sequence
from operator import itemgetter

import logging

from relay.imap import fetch as F
from relay.store import mime as MIME
from relay.store.types import offset_tz
from relay.imap.backend import BackendError, Mailbox, MessageRecord
from relay.imap.parser import MAX_LITERAL
from relay.imap.parser import (
    Atom, BadCharset, Command, FetchAtt, Literal, ParseError, Raw, SequenceSet, astring, decode_mailbox,
    encode, encode_body, encode_envelope, format_uid_set, mutf7_encode, number, parse_datetime, parse_fetch_items, parse_flags,
    parse_search, valid_mailbox_wire,
)
from relay.imap.search import keys_use_modseq, search_mailbox
from relay.imap import esearch as ES
from relay.imap import threads as TH
from relay.imap import listext as LX
from relay.imap import qresync as QR
from relay.imap import binary as BX
from relay.imap import append as AP
from relay.imap import notify as NT
from relay.imap.sortkeys import (CacheRegistry, SortCache, SortError, from_store_row, parse_criteria,
                                 sort_messages)
from relay.errors import RelayError

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
CAPS_ANY = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE"
CAPS_AUTH = ("IMAP4rev1 LITERAL+ SASL-IR IDLE UIDPLUS MOVE NAMESPACE CHILDREN SPECIAL-USE ENABLE ID "
             "UNSELECT CONDSTORE")
CAPS_AUTH += " SORT SORT=DISPLAY THREAD=REFERENCES THREAD=ORDEREDSUBJECT ESEARCH ESORT"
CAPS_AUTH += " LIST-EXTENDED LIST-STATUS QRESYNC BINARY MULTIAPPEND CATENATE"
CAPS_AUTH += " CONTEXT=SEARCH CONTEXT=SORT NOTIFY"
SEP = "/"
log = logging.getLogger("relay.imap")
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
FLUSH_EVERY = 500

Authenticator = Callable[[str, str], Awaitable[bool]]


class Bad(Exception):
    """Tagged BAD (syntax / wrong state)."""


class No(Exception):
    """Tagged NO (the command was valid but failed)."""


def imap_date(d: _dt.datetime) -> str:
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    off = d.utcoffset() or _dt.timedelta(0)
    mins = int(off.total_seconds() // 60)
    sign = "+" if mins >= 0 else "-"
    mins = abs(mins)
    return (f"{d.day:02d}-{_MONTHS[d.month - 1]}-{d.year:04d} {d.hour:02d}:{d.minute:02d}:{d.second:02d} "
            f"{sign}{mins // 60:02d}{mins % 60:02d}")




# FETCH items the store's index rows answer alone (Session._fetch_column_lines): the format
# piece and the index into (seq, uid, flags, modseq, size, envelope, bodystructure, date, BODY)
_COLUMN_ITEMS = {"UID": (b"UID %d", 1), "FLAGS": (b"FLAGS %s", 2), "MODSEQ": (b"MODSEQ (%d)", 3),
                 "RFC822.SIZE": (b"RFC822.SIZE %d", 4), "ENVELOPE": (b"ENVELOPE %s", 5),
                 "BODYSTRUCTURE": (b"BODYSTRUCTURE %s", 6), "INTERNALDATE": (b'INTERNALDATE "%s"', 7),
                 "BODY": (b"BODY %s", 8)}

_FLAG_ORDER = {f: i for i, f in enumerate(SYSTEM_FLAGS)}
_FLAG_LISTS: dict = {}


def flag_list(flags) -> Raw:
    """``(\\Seen $Work)``: system flags first in a fixed order, then keywords (memoised per set)."""
    key = flags if isinstance(flags, frozenset) else frozenset(flags)
    r = _FLAG_LISTS.get(key)
    if r is None:
        r = Raw(("(" + " ".join(sorted(key, key=lambda f: (_FLAG_ORDER.get(f, 99), f))) + ")").encode())
        if len(_FLAG_LISTS) < 4096:
            _FLAG_LISTS[key] = r
    return r


_ATOM_NAME = re.compile(r"^[A-Za-z0-9&'+,\-._/:;<=>?@!#$^`|~]+$")


def mbox_name(name: str) -> bytes:
    """A mailbox name on the wire: an atom when it can be one (as Dovecot does), else quoted."""
    wire = mutf7_encode(name)
    return wire.encode() if _ATOM_NAME.match(wire) else encode(wire)


class list_pattern:
    """LIST wildcards: * matches anything, % anything but the separator; the INBOX part of a
    name matches case-insensitively (RFC 3501 5.1)."""

    def __init__(self, ref: str, pattern: str) -> None:
        full = ref + pattern if ref and not pattern.startswith(SEP) else pattern
        rx = ""
        for ch in full:
            rx += ".*" if ch == "*" else (f"[^{re.escape(SEP)}]*" if ch == "%" else re.escape(ch))
        self._rx = re.compile("^" + rx + "$", re.S)
        self._rx_ci = re.compile("^" + rx + "$", re.S | re.I)

    def match(self, name: str) -> bool:
        if self._rx.match(name):
            return True
        if name == "INBOX" or name.startswith("INBOX" + SEP):
            return bool(self._rx_ci.match(name)) and bool(self._rx_ci.match("INBOX" + name[5:]))
        return False


class Session:
    def __init__(self, *, open_mailbox: Callable[[str], Mailbox], authenticate: Authenticator,
                 hostname: str = "localhost", tls_active: bool = False, tls_available: bool = False,
                 allow_plaintext: bool = True, throttle=None, peer: str = "127.0.0.1") -> None:
        self.open_mailbox, self.authenticate = open_mailbox, authenticate
        self.hostname, self.tls_active, self.tls_available = hostname, tls_active, tls_available
        self.allow_plaintext, self.throttle, self.peer = allow_plaintext, throttle, peer
        self.state = "notauth"
        self.user: str | None = None
        self.mailbox: Mailbox | None = None
        self.folder: str | None = None
        self.readonly = False
        self.uids: Sequence[int] = []
        # SELECT shares the store's UID list (never changed once handed out): 100 sessions on a
        # 100,000-message folder hold one list, not 100; the view gets its own compact copy
        # (array of 32-bit UIDs) the first time it changes (_own_view)
        self.uids_own = True
        self.version: object = None
        self.modseq_seen = 0
        self.own_modseqs: set[int] = set()
        self.pending_gone: set[int] = set()   # expunged elsewhere, not yet told (RFC 3501 7.4.1)
        self.recent: set[int] = set()          # UIDs this session reports as \Recent
        self.keywords: set[str] = set()        # keywords announced in FLAGS
        self.known_flags: set[str] = set(SYSTEM_FLAGS)
        # flags text (as the store keeps it) → its FLAGS form, for texts whose flags this
        # session has announced (known_flags only grows while a mailbox stays selected)
        self.flag_forms: dict[str, str] = {}
        self.condstore = False
        self.qresync = False                    # RFC 7162: VANISHED instead of EXPUNGE
        self.contexts: dict[str, ES.LiveResult] = {}    # RFC 5267 RETURN (UPDATE), by tag
        self.max_append = MAX_LITERAL                    # largest message APPEND/CATENATE builds
        self.notify: NT.NotifySpec | None = None         # RFC 5465, None = NOTIFY NONE
        self.notify_told: dict[str, dict] = {}            # last STATUS values told per mailbox
        self.notify_names: set[str] = set()
        self.notify_subs: set[str] = set()
        self.out: list[bytes] = []
        self.flush: Callable[[], Awaitable[None]] | None = None
        self.idle_tag: str | None = None
        self.auth_tag: str | None = None
        self.want_starttls = False

    # ------------------------------------------------------------------ output
    def untagged(self, text: str | bytes) -> None:
        self.out.append((b"* " + (text if isinstance(text, bytes) else text.encode()) + b"\r\n"))

    def tagged(self, tag: str, status: str, text: str) -> None:
        self.out.append(f"{tag} {status} {text}\r\n".encode())

    def greeting(self) -> bytes:
        return f"* OK [CAPABILITY {self.capabilities()}] {self.hostname} IMAP4rev1 ready\r\n".encode()

    def take_output(self) -> bytes:
        data = b"".join(self.out)
        self.out.clear()
        return data

    async def _maybe_flush(self) -> None:
        if self.flush is not None:
            await self.flush()
        await asyncio.sleep(0)  # let other sessions run between chunks of a long FETCH

    def capabilities(self) -> str:
        if self.state != "notauth":
            return CAPS_AUTH
        caps = CAPS_ANY
        if self.tls_available and not self.tls_active:
            caps += " STARTTLS"
        if self.login_allowed():
            caps += " AUTH=PLAIN"
        else:
            caps += " LOGINDISABLED"
        return caps

    def login_allowed(self) -> bool:
        return self.tls_active or self.allow_plaintext

    # ------------------------------------------------------------------ dispatch
    async def handle(self, cmd: Command) -> None:
        """Run one command; responses accumulate in ``self.out``."""
        name = cmd.name.replace(" ", "_")
        handler = getattr(self, "cmd_" + name, None)
        try:
            if handler is None:
                raise Bad(f"Unknown command {cmd.name[:30]}")
            await handler(cmd.tag, cmd.args)
        except (Bad, ParseError) as e:
            self.tagged(cmd.tag, "BAD", str(e) or "Invalid arguments")
        except No as e:
            self.tagged(cmd.tag, "NO", str(e))
        except (BackendError, RelayError) as e:  # relay.store's StoreError is a RelayError
            code = getattr(e, "code", "")
            code = f"[{code}] " if code else ""
            self.tagged(cmd.tag, "NO", code + str(e))
        except (OSError, ValueError, LookupError) as e:  # a bug or a disk problem: keep the session
            log.exception("IMAP %s failed for %s", cmd.name, self.user)
            self.tagged(cmd.tag, "NO", f"[SERVERBUG] {type(e).__name__}")

    def _need(self, *states: str) -> None:
        if self.state not in states:
            hint = {"notauth": "log in first", "auth": "select a mailbox first"}.get(self.state, "")
            if self.state == "auth" and "auth" in states:
                hint = ""
            raise Bad("Command not valid in this state" + (f" ({hint})" if hint and "notauth" not in states
                                                           else ""))

    @staticmethod
    def _nargs(args: list, lo: int, hi: int | None = None) -> None:
        hi = lo if hi is None else hi
        if not lo <= len(args) <= hi:
            raise Bad("Wrong number of arguments")

    # ------------------------------------------------------------------ any state
    async def cmd_CAPABILITY(self, tag, args):
        self._nargs(args, 0)
        self.untagged("CAPABILITY " + self.capabilities())
        self.tagged(tag, "OK", "Capability completed")

    async def cmd_NOOP(self, tag, args):
        self._nargs(args, 0)
        if self.state == "selected":
            self.sync(expunge=True)
        self.tagged(tag, "OK", "NOOP completed")

    async def cmd_LOGOUT(self, tag, args):
        self._nargs(args, 0)
        self.untagged("BYE Logging out")
        self.tagged(tag, "OK", "Logout completed")
        self.state = "logout"

    async def cmd_ID(self, tag, args):
        self._nargs(args, 1)
        self.untagged(b"ID " + encode(["name", "tui-mail relay", "vendor", "tui-mail"]))
        self.tagged(tag, "OK", "ID completed")

    async def cmd_ENABLE(self, tag, args):
        self._need("auth", "selected")
        if not args:
            raise Bad("ENABLE needs a capability")
        enabled = []
        for a in args:
            cap = astring(a).upper()
            if cap == "CONDSTORE" and "CONDSTORE" not in enabled:
                self.condstore = True
                enabled.append("CONDSTORE")
            elif cap == "QRESYNC" and "QRESYNC" not in enabled:
                self.condstore = self.qresync = True
                enabled.append("QRESYNC")
        self.untagged("ENABLED" + "".join(" " + e for e in enabled))
        self.tagged(tag, "OK", "Enabled")

    # ------------------------------------------------------------------ not authenticated
    async def cmd_STARTTLS(self, tag, args):
        self._need("notauth")
        self._nargs(args, 0)
        if not self.tls_available or self.tls_active:
            raise Bad("STARTTLS not available")
        self.tagged(tag, "OK", "Begin TLS negotiation now")
        self.want_starttls = True

    async def cmd_LOGIN(self, tag, args):
        self._need("notauth")
        self._nargs(args, 2)
        if not self.login_allowed():
            raise No("[PRIVACYREQUIRED] LOGIN is disabled without TLS")
        await self._login(tag, astring(args[0]), astring(args[1]))

    async def cmd_AUTHENTICATE(self, tag, args):
        self._need("notauth")
        self._nargs(args, 1, 2)
        if astring(args[0]).upper() != "PLAIN":
            raise No("Unsupported authentication mechanism")
        if not self.login_allowed():
            raise No("[PRIVACYREQUIRED] Authentication is disabled without TLS")
        if len(args) == 2:
            await self._auth_plain(tag, astring(args[1]).encode("ascii", "replace"))
        else:
            self.auth_tag = tag
            self.out.append(b"+ \r\n")

    async def auth_continue(self, line: bytes) -> None:
        tag, self.auth_tag = self.auth_tag, None
        if line.strip() == b"*":
            self.tagged(tag, "BAD", "Authentication cancelled")
            return
        await self._auth_plain(tag, line.strip())

    async def _auth_plain(self, tag: str, b64: bytes) -> None:
        try:
            raw = base64.b64decode(b64, validate=True) if b64 != b"=" else b""
            _authz, user, password = raw.split(b"\0")
            await self._login(tag, user.decode("utf-8"), password.decode("utf-8"))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            self.tagged(tag, "BAD", "Invalid SASL PLAIN response")

    async def _login(self, tag: str, user: str, password: str) -> None:
        if self.throttle is not None:   # per IP and per account, shared with SMTP and POP3
            ok = await self.throttle.check(self.peer, user, lambda: self.authenticate(user, password))
        else:
            ok = await self.authenticate(user, password)
        if not ok:
            self.tagged(tag, "NO", "[AUTHENTICATIONFAILED] Authentication failed")
            return
        self.user = user
        self.mailbox = await asyncio.to_thread(self.open_mailbox, user)
        self.state = "auth"
        self.tagged(tag, "OK", f"[CAPABILITY {CAPS_AUTH}] Logged in")

    # ------------------------------------------------------------------ authenticated
    def _mb(self) -> Mailbox:
        assert self.mailbox is not None
        return self.mailbox

    def _folder_names(self) -> dict[str, object]:
        return {f.name: f for f in self._mb().folders()}

    async def cmd_SELECT(self, tag, args, readonly: bool = False):
        self._need("auth", "selected")
        self._nargs(args, 1, 2)
        name = decode_mailbox(args[0])
        qr = None
        if len(args) == 2:
            params = args[1] if isinstance(args[1], list) else [args[1]]
            qr = QR.parse_select_params(params, self.qresync)
            self.condstore = True
        if self.state == "selected":
            self._close_view()
            self.state = "auth"
            if self.qresync:
                self.untagged("OK [CLOSED] Previous mailbox closed")
        mb = self._mb()

        def load():
            if name not in self._folder_names():
                return None
            version = mb.version(name)          # before state: never miss a change
            st = mb.state(name)
            # \Recent (RFC 3501 2.3.2): SELECT claims the messages it reports; EXAMINE only looks
            recent = self._recent_of(name, st.uids, readonly)
            kws = getattr(mb, "keywords", None)
            return version, st, recent, set(kws(name)) if kws is not None else set()
        # one trip to a worker thread (a new big Maildir is indexed on first use: the event
        # loop, i.e. every other session, stays free meanwhile)
        got = await asyncio.to_thread(load)
        if got is None:
            raise No("[NONEXISTENT] Mailbox does not exist")
        version, st, self.recent, self.keywords = got
        self.folder, self.readonly, self.state = name, readonly, "selected"
        self.uids, self.uids_own = st.uids, False
        self.view_validity = st.uidvalidity
        self.version = version
        self.modseq_seen = st.highestmodseq
        self.own_modseqs.clear()
        self.pending_gone.clear()
        self.known_flags = set(SYSTEM_FLAGS) | self.keywords
        self.flag_forms = {}
        self._flags_lines()
        self.untagged(f"{len(self.uids)} EXISTS")
        self.untagged(f"{len(self.recent)} RECENT")
        unseen = self._first_unseen()
        if unseen:
            self.untagged(f"OK [UNSEEN {unseen}] First unseen")
        self.untagged(f"OK [UIDVALIDITY {st.uidvalidity}] UIDs valid")
        self.untagged(f"OK [UIDNEXT {st.uidnext}] Predicted next UID")
        self.untagged(f"OK [HIGHESTMODSEQ {st.highestmodseq}] Highest")
        if qr is not None and qr.uidvalidity == st.uidvalidity:
            await self._qresync_report(qr)
        mode = "READ-ONLY" if readonly else "READ-WRITE"
        self.tagged(tag, "OK", f"[{mode}] {'EXAMINE' if readonly else 'SELECT'} completed")

    def _recent_of(self, folder: str, uids: Sequence[int], readonly: bool | None = None) -> set[int]:
        """The \\Recent messages among ``uids``, claimed unless the view is read-only."""
        mb = self._mb()
        if self.readonly if readonly is None else readonly:
            peek = getattr(mb, "peek_recent", None)
            return set(peek(folder, uids)) if peek is not None else set()
        claim = getattr(mb, "claim_recent", None)
        if claim is not None:
            return set(claim(folder, uids))
        return set(mb.recent(folder)) & set(uids)

    def _flags_lines(self) -> None:
        """``* FLAGS`` and PERMANENTFLAGS with the mailbox's keywords (at SELECT, and again
        whenever a keyword new to this session shows up, before the FETCH that carries it)."""
        kws = sorted(self.keywords)
        self.untagged("FLAGS " + flag_list(list(SYSTEM_FLAGS) + kws).decode())
        self.untagged("OK [PERMANENTFLAGS " + ("()" if self.readonly else flag_list(
            list(SYSTEM_FLAGS) + kws + ["\\*"]).decode()) + "] Flags permitted")

    def _first_unseen(self) -> int | None:
        mb, folder = self._mb(), self.folder
        first = getattr(mb, "first_unseen", None)
        if first is not None:
            uid = first(folder)
            if uid is None:
                return None
            i = bisect.bisect_left(self.uids, uid)
            return i + 1 if i < len(self.uids) and self.uids[i] == uid else None
        i, step = 0, 64
        while i < len(self.uids):   # growing chunks: the first unseen is usually near the top
            for rec in mb.records(folder, self.uids[i:i + step]):
                if "\\Seen" not in rec.flags:
                    return bisect.bisect_left(self.uids, rec.uid) + 1
            i += step
            step = min(step * 4, 16384)
        return None

    async def cmd_EXAMINE(self, tag, args):
        await self.cmd_SELECT(tag, args, readonly=True)

    def _check_name(self, name: str) -> str:
        if not name or len(name) > 512 or any(ord(c) < 0x20 for c in name):
            raise No("[CANNOT] Invalid mailbox name")
        parts = name.split(SEP)
        if (any(p in ("", ".", "..") for p in parts) or any(c in name for c in "\\%*")
                or name.startswith(".")):
            raise No("[CANNOT] Invalid mailbox name")
        return name

    async def cmd_CREATE(self, tag, args):
        self._need("auth", "selected")
        self._nargs(args, 1)
        if not valid_mailbox_wire(args[0]):
            raise No("[CANNOT] Mailbox name is not valid modified UTF-7")
        name = decode_mailbox(args[0]).rstrip(SEP)
        if name == "INBOX":
            raise No("[ALREADYEXISTS] INBOX always exists")
        self._mb().create(self._check_name(name))
        self.tagged(tag, "OK", "CREATE completed")

    async def cmd_DELETE(self, tag, args):
        self._need("auth", "selected")
        self._nargs(args, 1)
        name = decode_mailbox(args[0])
        if name == "INBOX":
            raise No("[CANNOT] INBOX cannot be deleted")
        if name not in self._folder_names():
            raise No("[NONEXISTENT] Mailbox does not exist")
        if self.state == "selected" and name == self.folder:
            self._close_view()
            self.state = "auth"
        self._mb().delete(name)
        self.tagged(tag, "OK", "DELETE completed")

    async def cmd_RENAME(self, tag, args):
        self._need("auth", "selected")
        self._nargs(args, 2)
        old, new = decode_mailbox(args[0]), decode_mailbox(args[1]).rstrip(SEP)
        if not valid_mailbox_wire(args[1]):
            raise No("[CANNOT] Mailbox name is not valid modified UTF-7")
        names = self._folder_names()
        if old not in names:
            raise No("[NONEXISTENT] Mailbox does not exist")
        if new in names or new == "INBOX":
            raise No("[ALREADYEXISTS] Target mailbox exists")
        self._mb().rename(old, self._check_name(new))
        self.tagged(tag, "OK", "RENAME completed")

    async def cmd_SUBSCRIBE(self, tag, args, on: bool = True):
        self._need("auth", "selected")
        self._nargs(args, 1)
        name = decode_mailbox(args[0])
        if on and name not in self._folder_names():
            raise No("[NONEXISTENT] Mailbox does not exist")
        self._mb().subscribe(name, on)
        self.tagged(tag, "OK", ("SUBSCRIBE" if on else "UNSUBSCRIBE") + " completed")

    async def cmd_UNSUBSCRIBE(self, tag, args):
        await self.cmd_SUBSCRIBE(tag, args, on=False)

    async def cmd_LIST(self, tag, args, lsub: bool = False):
        self._need("auth", "selected")
        if not lsub and LX.is_extended(args):
            await self._list_extended(tag, args)
            return
        self._nargs(args, 2)
        ref, pattern = astring(args[0]), astring(args[1])
        verb = "LSUB" if lsub else "LIST"
        if pattern == "":
            self.untagged(f'{verb} (\\Noselect) "{SEP}" ""')
            self.tagged(tag, "OK", f"{verb} completed")
            return
        rx = list_pattern(_lenient_mutf7(ref), _lenient_mutf7(pattern))
        folders = self._mb().folders()
        names = {f.name for f in folders}
        subs = self._mb().subscriptions() if lsub else set()
        if lsub:
            self._lsub(rx, "%" in pattern, folders, subs)
            self.tagged(tag, "OK", "LSUB completed")
            return
        for f in sorted(folders, key=lambda f: (f.name != "INBOX", f.name)):
            if lsub and f.name not in subs:
                continue
            if not rx.match(f.name):
                continue
            attrs = []
            if not f.selectable:
                attrs.append("\\Noselect")
            if lsub:  # as Dovecot: LSUB carries no child or special-use attributes
                self.untagged(f"{verb} ({' '.join(attrs)}) \"{SEP}\" ".encode() + mbox_name(f.name))
                continue
            prefix = f.name + SEP
            kids = getattr(f, "has_children", None)
            if kids is None:
                kids = any(n.startswith(prefix) for n in names)
            attrs.append("\\HasChildren" if kids else "\\HasNoChildren")
            if f.special_use and not lsub:
                attrs.append(f.special_use)
            self.untagged(f"{verb} ({' '.join(attrs)}) \"{SEP}\" ".encode() + mbox_name(f.name))
        self.tagged(tag, "OK", f"{verb} completed")

    async def cmd_LSUB(self, tag, args):
        await self.cmd_LIST(tag, args, lsub=True)

    def _lsub(self, rx: "list_pattern", percent: bool, folders, subs: set[str]) -> None:
        """LSUB lines: subscribed names that match (as Dovecot: no child or special-use
        attributes); with ``%``, an unsubscribed parent of a subscribed child that matches is
        listed as \\Noselect (RFC 3501 6.3.9)."""
        selectable = {f.name: f.selectable for f in folders}
        rows: dict[str, str] = {}
        for name in subs:
            if rx.match(name):
                rows[name] = "" if selectable.get(name, True) else "\\Noselect"
        if percent:
            for name in subs:
                parts = name.split(SEP)
                for i in range(len(parts) - 1, 0, -1):
                    parent = SEP.join(parts[:i])
                    if parent not in subs and parent not in rows and rx.match(parent):
                        rows[parent] = "\\Noselect"
        for name in sorted(rows, key=lambda n: (n != "INBOX", n)):
            self.untagged(f"LSUB ({rows[name]}) \"{SEP}\" ".encode() + mbox_name(name))

    async def _list_extended(self, tag, args) -> None:
        """LIST-EXTENDED (RFC 5258), SPECIAL-USE selection (RFC 6154), LIST-STATUS (RFC 5819)."""
        from relay.imap.parser import mutf7_decode
        req = LX.parse(args, lambda s: mutf7_decode(s) if "&" in s else s)
        mb = self._mb()
        folders = await asyncio.to_thread(mb.folders)
        subs = await asyncio.to_thread(mb.subscriptions)
        for row in LX.select(req, folders, subs, list_pattern, SEP):
            line = f"LIST ({' '.join(row.attrs)}) \"{SEP}\" ".encode() + mbox_name(row.name)
            if row.childinfo:
                line += b' (CHILDINFO ("SUBSCRIBED"))'
            self.untagged(line)
            if req.status and row.selectable:
                values = await asyncio.to_thread(mb.status, row.name)
                if row.name == self.folder:
                    values = dict(values, RECENT=len(self.recent))
                items = " ".join(f"{k} {values.get(k, 0)}" for k in req.status)
                self.untagged(b"STATUS " + mbox_name(row.name) + f" ({items})".encode())
        self.tagged(tag, "OK", "LIST completed")

    async def cmd_NAMESPACE(self, tag, args):
        self._need("auth", "selected")
        self._nargs(args, 0)
        self.untagged(f'NAMESPACE (("" "{SEP}")) NIL NIL')
        self.tagged(tag, "OK", "NAMESPACE completed")

    async def cmd_STATUS(self, tag, args):
        self._need("auth", "selected")
        self._nargs(args, 2)
        name = decode_mailbox(args[0])
        items = args[1] if isinstance(args[1], list) else [args[1]]
        if not items:
            raise Bad("STATUS needs items")
        mb = self._mb()
        status = getattr(mb, "status", None)

        def load():     # one trip to a worker thread
            if name not in self._folder_names():
                return None
            if status is not None:   # one cheap query; never claims \Recent
                return status(name)
            st = mb.state(name)
            return {"MESSAGES": len(st.uids), "UIDNEXT": st.uidnext, "UIDVALIDITY": st.uidvalidity,
                    "HIGHESTMODSEQ": st.highestmodseq, "RECENT": 0,
                    "UNSEEN": sum(1 for r in mb.records(name, list(st.uids)) if "\\Seen" not in r.flags)}
        values = await asyncio.to_thread(load)
        if values is None:
            raise No("[NONEXISTENT] Mailbox does not exist")
        if name == self.folder:
            values = dict(values, RECENT=len(self.recent))
        out = []
        for it in items:
            k = astring(it).upper()
            if k not in ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "RECENT", "HIGHESTMODSEQ"):
                raise Bad(f"Unknown STATUS item {k[:20]}")
            out.append(f"{k} {values[k]}")
        self.untagged(b"STATUS " + mbox_name(name) + f" ({' '.join(out)})".encode())
        self.tagged(tag, "OK", "STATUS completed")

    async def cmd_APPEND(self, tag, args):
        """APPEND with MULTIAPPEND (several messages, all or none), CATENATE (parts from TEXT
        literals and IMAP URLs) and BINARY literal8."""
        self._need("auth", "selected")
        if len(args) < 2:
            raise Bad("Wrong number of arguments")
        name = decode_mailbox(args[0])
        items = AP.parse(list(args[1:]))
        if name not in self._folder_names():
            raise No("[TRYCREATE] Mailbox does not exist")
        mb = self._mb()

        def run() -> list[tuple[int, int]]:
            datas = []
            for it in items:
                try:
                    data = AP.build(it, self._resolve_url, self.max_append)
                except AP.TooBig as e:
                    raise No(f"[TOOBIG] {e}") from None
                except AP.BadURL as e:
                    url = e.url.replace("\\", "\\\\").replace('"', '\\"')
                    raise No(f'[BADURL "{url}"] {e}') from None
                if it.binary:
                    data = BX.binary_to_base64(data)
                if not data:
                    raise No("Empty message")
                datas.append(data)
            done: list[tuple[int, int]] = []
            try:
                for it, data in zip(items, datas):
                    done.append(mb.append(name, data, it.flags, it.date))
            except BaseException:
                if done:        # MULTIAPPEND is all or nothing (RFC 3502)
                    mb.expunge(name, [u for _, u in done], force=True)
                raise
            return done

        done = await asyncio.to_thread(run)
        if self.state == "selected":
            self.sync(expunge=True)
        uids = format_uid_set([u for _, u in done])
        self.tagged(tag, "OK", f"[APPENDUID {done[0][0]} {uids}] APPEND completed")

    def _resolve_url(self, url: str) -> bytes:
        """CATENATE: the bytes an IMAP URL names in this user's mail (RFC 4469/5092)."""
        u = AP.parse_url(url)
        mb = self._mb()
        names = self._folder_names()
        folder = u.mailbox if u.mailbox in names else decode_mailbox(u.mailbox.encode())
        if folder not in names:
            raise AP.BadURL(url, "no such mailbox")
        if u.uidvalidity is not None and mb.state(folder).uidvalidity != u.uidvalidity:
            raise AP.BadURL(url, "UIDVALIDITY does not match")
        try:
            data = mb.read(folder, u.uid)
        except (BackendError, RelayError):
            raise AP.BadURL(url, "no such message") from None
        try:
            part, text, fields = AP.section_of(u)
        except AP.BadURL:
            raise AP.BadURL(url, "invalid section") from None
        sec = F.section_bytes(data, FetchAtt("BODY[]", part, text, fields))
        if sec is None:
            raise AP.BadURL(url, "no such section")
        if u.partial is not None:
            off, length = u.partial
            sec = sec[off:] if length is None else sec[off:off + length]
        return sec

    # ------------------------------------------------------------------ selected
    async def cmd_CHECK(self, tag, args):
        self._need("selected")
        self._nargs(args, 0)
        self.sync(expunge=True)
        self.tagged(tag, "OK", "CHECK completed")

    def _close_view(self) -> None:
        self.contexts.clear()
        self.folder, self.uids, self.version, self.recent = None, [], None, set()
        self.uids_own = True
        self.pending_gone.clear()

    async def cmd_CLOSE(self, tag, args):
        self._need("selected")
        self._nargs(args, 0)
        if not self.readonly:
            await asyncio.to_thread(self._mb().expunge, self.folder, None)
        self._close_view()
        self.state = "auth"
        self.tagged(tag, "OK", "CLOSE completed")

    async def cmd_UNSELECT(self, tag, args):
        self._need("selected")
        self._nargs(args, 0)
        self._close_view()
        self.state = "auth"
        self.tagged(tag, "OK", "UNSELECT completed")

    async def cmd_EXPUNGE(self, tag, args, uid_set: SequenceSet | None = None):
        self._need("selected")
        if self.readonly:
            raise No("[READ-ONLY] Mailbox is read-only")
        only = None
        if uid_set is not None:
            only = [self.uids[i] for i in uid_set.uid_indexes(self.uids)]
        await asyncio.to_thread(self._mb().expunge, self.folder, only)
        self.sync(expunge=True)
        self.tagged(tag, "OK", "EXPUNGE completed")

    async def cmd_UID_EXPUNGE(self, tag, args):
        self._nargs(args, 1)
        await self.cmd_EXPUNGE(tag, [], SequenceSet.parse(str(args[0])))

    def _resolve(self, text, uid_mode: bool) -> list[int]:
        """Sequence/UID set → 0-based indexes into the client's view."""
        if not isinstance(text, Atom):
            raise Bad("Invalid sequence set")
        ss = SequenceSet.parse(str(text))
        if uid_mode:
            return ss.uid_indexes(self.uids)
        try:
            return [n - 1 for n in ss.message_numbers(len(self.uids))]
        except ParseError:
            raise Bad("Invalid message sequence number") from None

    # FETCH ---------------------------------------------------------------------------------
    async def cmd_FETCH(self, tag, args, uid_mode: bool = False):
        self._need("selected")
        self._nargs(args, 2, 3)
        idx = self._resolve(args[0], uid_mode)
        atts = parse_fetch_items(args[1])
        changedsince = None
        if len(args) == 3:
            changedsince, vanished = QR.parse_fetch_modifiers(args[2], uid_mode, self.qresync)
            self._condstore_on()
            if vanished:
                self._vanished_earlier(changedsince, [self.uids[i] for i in idx], SequenceSet.parse(str(args[0])))
        elif any(a.name == "MODSEQ" for a in atts):
            self._condstore_on()
        if uid_mode and not any(a.name == "UID" for a in atts):
            atts.insert(0, FetchAtt("UID"))
        if changedsince is not None and not any(a.name == "MODSEQ" for a in atts):
            atts.append(FetchAtt("MODSEQ"))
        sets_seen = not self.readonly and any(a.sets_seen for a in atts)
        want_env = any(a.name == "ENVELOPE" for a in atts)
        want_body = any(a.name in ("BODY", "BODYSTRUCTURE") for a in atts)
        uid_only = all(a.name == "UID" for a in atts)
        mb, folder = self._mb(), self.folder
        if (not sets_seen and hasattr(mb, "flag_rows")
                and all(a.name in ("UID", "FLAGS", "MODSEQ") for a in atts)):
            # FETCH (FLAGS), UID FETCH (FLAGS MODSEQ)…: three columns, lines built in bulk
            for start in range(0, len(idx), FLUSH_EVERY * 40):
                chunk = idx[start:start + FLUSH_EVERY * 40]
                if not self._fetch_flag_text(chunk, atts, changedsince):
                    for sub in range(0, len(chunk), FLUSH_EVERY * 10):
                        self._fetch_flag_lines(chunk[sub:sub + FLUSH_EVERY * 10], atts, changedsince)
                if start + FLUSH_EVERY * 40 < len(idx):    # (the last part goes with the OK)
                    await self._maybe_flush()
            self.sync(expunge=uid_mode)
            self.tagged(tag, "OK", "FETCH completed")
            return
        if (not sets_seen and getattr(mb, "fetch_rows", None) is not None
                and all(a.name in _COLUMN_ITEMS for a in atts)):
            # FETCH 1:* (UID FLAGS ENVELOPE RFC822.SIZE INTERNALDATE)…: index columns, the
            # ENVELOPE/BODYSTRUCTURE ones already in wire form: one format string per command
            for start in range(0, len(idx), FLUSH_EVERY * 4):
                self._fetch_column_lines(idx[start:start + FLUSH_EVERY * 4], atts, changedsince)
                if start + FLUSH_EVERY * 4 < len(idx):
                    await self._maybe_flush()
            self.sync(expunge=uid_mode)
            self.tagged(tag, "OK", "FETCH completed")
            return
        envs_of = getattr(mb, "envelopes_wire", None) or getattr(mb, "envelopes", None)
        for start in range(0, len(idx), FLUSH_EVERY):
            chunk = idx[start:start + FLUSH_EVERY]
            uids = [self.uids[i] for i in chunk]
            recs = {r.uid: r for r in mb.records(folder, uids)}
            envs = envs_of(folder, uids) if want_env and envs_of is not None else {}
            # BODY/BODYSTRUCTURE from the index for the whole chunk, not one store call each
            bodies = mb.bodystructures(folder, uids) if want_body and hasattr(mb, "bodystructures") else {}
            seen_now: set[int] = set()
            if sets_seen:   # implicit \Seen for the whole chunk in one store transaction
                unseen = [u for u, r in recs.items() if "\\Seen" not in r.flags]
                if unseen:
                    changed, _ = mb.set_flags(folder, unseen, "add", ["\\Seen"])
                    for r in changed:
                        recs[r.uid] = r
                        seen_now.add(r.uid)
                        self.own_modseqs.add(r.modseq)
            for i in chunk:
                rec = recs.get(self.uids[i])
                if rec is None:
                    # expunged by another session, not yet reported: what the view still knows
                    # (its UID) is answered, the rest is gone (RFC 2180 4.1.1)
                    if uid_only:
                        self.out.append(b"* %d FETCH (UID %d)\r\n" % (i + 1, self.uids[i]))
                    continue
                if changedsince is not None and rec.modseq <= changedsince:
                    continue
                try:
                    line = self._fetch_one(i + 1, rec, atts, rec.uid in seen_now, envs.get(rec.uid),
                                           bodies.get(rec.uid))
                except (BackendError, RelayError) as e:
                    # the store says EXPUNGEISSUED when the file went, NONEXISTENT when the
                    # index row went (another session's EXPUNGE between records() and read())
                    if getattr(e, "code", "") not in ("EXPUNGEISSUED", "NONEXISTENT"):
                        raise
                    # expunged by another session while we answer: the rest of the command
                    # still gets its data and OK (RFC 2180 4.1.2, as Dovecot does)
                    continue
                self.out.append(line)
            if start + FLUSH_EVERY < len(idx):
                await self._maybe_flush()
        self.sync(expunge=uid_mode)
        self.tagged(tag, "OK", "FETCH completed")

    def _fetch_flag_text(self, chunk: list[int], atts: list[FetchAtt], changedsince: int | None) -> bool:
        """The same lines as _fetch_flag_lines for a contiguous run of the view, written by the
        store's SQLite in one statement (no Python step per message); False when the store
        cannot (the index holds other messages in that UID range than the view: expunged
        meanwhile) and the caller goes row by row."""
        mb = self._mb()
        render = getattr(mb, "render_flag_rows", None)
        if render is None or chunk[-1] - chunk[0] + 1 != len(chunk):
            return False
        lo, hi = self.uids[chunk[0]], self.uids[chunk[-1]]
        marked = [u for u in self.recent if lo <= u <= hi] if self.recent else []
        names = [a.name for a in atts]
        pieces: list = [chunk[0], "* ", 0, " FETCH ("]
        for k, n in enumerate(names):
            if k:
                pieces.append(" ")
            if n == "UID":
                pieces += ["UID ", 1]
            elif n == "FLAGS":
                pieces += ["FLAGS ", 2]
                if self.condstore and "MODSEQ" not in names:   # RFC 7162 3.1.4
                    pieces += [" MODSEQ (", 3, ")"]
            else:
                pieces += ["MODSEQ (", 3, ")"]
        pieces.append(")\r\n")
        forms = self.flag_forms
        text = None
        for learn in (False, True):
            if learn:
                # a flags text the session has no form for yet: learn the range's texts,
                # announcing new keywords first (* FLAGS), then once more
                if len(forms) > 256:
                    forms.clear()
                for t in mb.flag_texts(self.folder, lo, hi):
                    if t in forms:
                        continue
                    flags = frozenset(t.split())
                    if not flags <= self.known_flags:
                        self._flags(MessageRecord(0, flags, 0, None, 0))
                    form = bytes(flag_list(flags))
                    if not form.isascii():
                        return False
                    forms[t] = form.decode()
            if not forms:
                continue
            marked_forms = ({t: bytes(flag_list(frozenset(t.split()) | {"\\Recent"})).decode()
                             for t in forms} if marked else None)
            text = mb.render_flag_rows(self.folder, lo, hi, len(chunk), pieces, forms, marked,
                                       marked_forms, changedsince)
            if text is not None:
                break
        if text is None:
            return False
        self.out.append(text.encode())
        return True

    def _fetch_flag_lines(self, chunk: list[int], atts: list[FetchAtt], changedsince: int | None) -> None:
        """``* n FETCH`` lines for items among UID, FLAGS and MODSEQ only (what _fetch_one would
        give, byte for byte), from (uid, flag text, modseq) rows: one format string for the
        whole command, each distinct flag set encoded once."""
        uids = [self.uids[i] for i in chunk]
        rows = {r[0]: r for r in self._mb().flag_rows(self.folder, uids[0], uids[-1])}
        names = [a.name for a in atts]
        parts, order = [], []      # order: indexes into (seq, uid, flags, modseq)
        for n in names:
            if n == "UID":
                parts.append(b"UID %d")
                order.append(1)
            elif n == "FLAGS":
                parts.append(b"FLAGS %s")
                order.append(2)
                if self.condstore and "MODSEQ" not in names:   # RFC 7162 3.1.4
                    parts.append(b"MODSEQ (%d)")
                    order.append(3)
            else:
                parts.append(b"MODSEQ (%d)")
                order.append(3)
        fmt = b"* %d FETCH (" + b" ".join(parts) + b")\r\n"
        pick = itemgetter(0, *order)
        memo: dict[str, tuple[frozenset, bytes]] = {}
        recent, out = self.recent, self.out
        for i, uid in zip(chunk, uids):
            r = rows.get(uid)
            if r is None:   # expunged by another session, not reported yet (RFC 2180 4.1.1)
                if all(n == "UID" for n in names):
                    out.append(b"* %d FETCH (UID %d)\r\n" % (i + 1, uid))
                continue
            _, text, modseq = r
            if changedsince is not None and modseq <= changedsince:
                continue
            m = memo.get(text)
            if m is None:
                flags = frozenset(text.split())
                m = memo[text] = (flags, bytes(flag_list(flags)) if flags <= self.known_flags else None)
            fl = m[1]
            if fl is None or (recent and uid in recent):   # new keyword or \Recent: the slow way
                fl = bytes(flag_list(self._flags(MessageRecord(uid, m[0], 0, None, modseq))))
                if m[1] is None and m[0] <= self.known_flags:
                    memo[text] = (m[0], bytes(flag_list(m[0])))
            out.append(fmt % pick((i + 1, uid, fl, modseq)))

    def _fetch_column_lines(self, chunk: list[int], atts: list[FetchAtt], changedsince: int | None) -> None:
        """``* n FETCH`` lines for items among _COLUMN_ITEMS (what _fetch_one would give, byte
        for byte) from the store's index rows: one format string for the whole command, each
        distinct flag set encoded once, ENVELOPE/BODYSTRUCTURE sent as cached."""
        uids = [self.uids[i] for i in chunk]
        names = [a.name for a in atts]
        parts, order = [], []      # order: indexes into (seq, uid, flags, modseq, size, env, body, date, BODY)
        for n in names:
            if n == "FLAGS" and self.condstore and "MODSEQ" not in names:   # RFC 7162 3.1.4
                parts += [b"FLAGS %s", b"MODSEQ (%d)"]
                order += [2, 3]
            else:
                part, k = _COLUMN_ITEMS[n]
                parts.append(part)
                order.append(k)
        mb = self._mb()
        rows = mb.fetch_rows(self.folder, uids[0], uids[-1], envelope="ENVELOPE" in names,
                             body="BODYSTRUCTURE" in names)
        want_body = 8 in order      # BODY: the cached structure without its extension data
        structs = mb.bodystructures(self.folder, uids) if want_body else {}
        if len(rows) == len(uids) and chunk[-1] - chunk[0] + 1 == len(chunk):
            # a contiguous run of the view: the index never holds a UID in its range that the
            # view lacks (new UIDs are above all others), so as many rows as view UIDs are
            # exactly those messages (for 1,6,9 the rows of 1..9 are no such proof)
            pairs = zip(chunk, rows)
        else:
            by_uid = {r[0]: r for r in rows}
            pairs = ((i, by_uid.get(u) or u) for i, u in zip(chunk, uids))
        fmt = b"* %d FETCH (" + b" ".join(parts) + b")\r\n"
        pick = itemgetter(0, *order)
        want_date = 7 in order
        plain = b""
        memo: dict[str, tuple[frozenset, bytes | None]] = {}
        recent, out, known = self.recent, self.out, self.known_flags
        date = b""
        for i, r in pairs:
            if type(r) is int:   # expunged by another session, not reported yet (RFC 2180 4.1.1)
                if all(n == "UID" for n in names):
                    out.append(b"* %d FETCH (UID %d)\r\n" % (i + 1, r))
                continue
            uid, text, modseq, size, idate, tzo, env, body = r
            if changedsince is not None and modseq <= changedsince:
                continue
            m = memo.get(text)
            if m is None:
                flags = frozenset(text.split())
                m = memo[text] = (flags, bytes(flag_list(flags)) if flags <= known else None)
            fl = m[1]
            if fl is None or (recent and uid in recent):   # new keyword or \Recent: the slow way
                fl = bytes(flag_list(self._flags(MessageRecord(uid, m[0], 0, None, modseq))))
                known = self.known_flags
                if m[1] is None and m[0] <= known:
                    memo[text] = (m[0], bytes(flag_list(m[0])))
            if want_date:
                date = imap_date(_dt.datetime.fromtimestamp(idate, offset_tz(tzo))).encode()
            if want_body:
                bs = structs.get(uid)
                if bs is None:      # expunged between the two reads (RFC 2180 4.1.2)
                    continue
                plain = encode_body(F.strip_extensions(bs))
            out.append(fmt % pick((i + 1, uid, fl, modseq, size, env, body, date, plain)))

    def _fetch_one(self, seq: int, rec: MessageRecord, atts: list[FetchAtt], flags_changed: bool,
                   env: list | bytes | None = None, body: list | None = None) -> bytes:
        """One ``* n FETCH (…)`` line; ``flags_changed``: this FETCH just set \\Seen (so FLAGS
        is reported even when not asked for, first, as Dovecot does)."""
        mb, folder = self._mb(), self.folder
        data: bytes | None = None
        root = None
        items: list[bytes] = []
        for a in atts:
            n = a.name
            if n == "UID":
                items.append(b"UID %d" % rec.uid)
            elif n == "FLAGS":
                items.append(b"FLAGS " + flag_list(self._flags(rec)))
                if self.condstore and not any(x.name == "MODSEQ" for x in atts):
                    items.append(b"MODSEQ (%d)" % rec.modseq)  # RFC 7162 3.1.4
            elif n == "MODSEQ":
                items.append(b"MODSEQ (%d)" % rec.modseq)
            elif n == "RFC822.SIZE":
                # the size with CRLF line ends, as sent (files from other tools may use bare LF)
                items.append(b"RFC822.SIZE %d" % (getattr(rec, "vsize", 0) or rec.size))
            elif n == "INTERNALDATE":
                items.append(b'INTERNALDATE "' + imap_date(rec.internaldate).encode() + b'"')
            elif n == "ENVELOPE":
                if env is None:
                    env = mb.envelope(folder, rec.uid)
                if env is None:
                    data = data if data is not None else MIME.to_crlf(mb.read(folder, rec.uid))
                    env = MIME.envelope(data)
                # (bytes: the store's cached wire form, see relay.store.mime.envelope_wire)
                items.append(b"ENVELOPE " + (env if type(env) is bytes else encode_envelope(env)))
            elif n in ("BODY", "BODYSTRUCTURE") and (body is not None or (
                    data is None and hasattr(mb, "bodystructure"))):
                # cached in the index: no file read, no MIME parse
                bs = body if body is not None else mb.bodystructure(folder, rec.uid)
                if bs is None:
                    data = MIME.to_crlf(mb.read(folder, rec.uid))
                    bs = MIME.bodystructure(data)
                items.append(n.encode() + b" " + encode_body(bs if n == "BODYSTRUCTURE" else F.strip_extensions(bs)))
            else:
                if data is None:
                    data = MIME.to_crlf(mb.read(folder, rec.uid))
                if n in ("BODY", "BODYSTRUCTURE"):
                    bs = MIME.bodystructure(data)
                    items.append(n.encode() + b" " + encode_body(bs if n == "BODYSTRUCTURE" else F.strip_extensions(bs)))
                elif n == "RFC822":
                    items.append(b"RFC822 " + encode(Literal(_no_nul(data))))
                elif n == "RFC822.HEADER":
                    he, _ = F.split_header(data)
                    items.append(b"RFC822.HEADER " + encode(Literal(_no_nul(data[:he]))))
                elif n == "RFC822.TEXT":
                    _, bs = F.split_header(data)
                    items.append(b"RFC822.TEXT " + encode(Literal(_no_nul(data[bs:]))))
                elif n in ("BINARY[]", "BINARY.SIZE[]"):     # RFC 3516
                    if a.part:
                        root = root or F.parse_structure(data)
                    try:
                        content, decoded = BX.decode_part(data, a.part, root) or (b"", False)
                    except BX.UnknownCTE as e:
                        raise No(f"[UNKNOWN-CTE] Cannot decode Content-Transfer-Encoding {e}") from None
                    head = a.response_name().encode() + b" "
                    if n == "BINARY.SIZE[]":
                        items.append(head + b"%d" % len(content))
                    else:
                        items.append(head + BX.wire(F.apply_partial(content, a.partial), decoded))
                else:  # BODY[section]
                    if a.part:   # the whole message, its header or text: no MIME parse
                        root = root or F.parse_structure(data)
                    sec = F.section_bytes(data, a, root)
                    if sec is None:
                        sec = b""
                    part = _no_nul(F.apply_partial(sec, a.partial))
                    items.append(a.response_name().encode() + b" " + encode(Literal(part)))
        if flags_changed and not any(a.name == "FLAGS" for a in atts):
            items.insert(0, b"FLAGS " + flag_list(self._flags(rec)))  # first, as Dovecot does
        return b"* %d FETCH (" % seq + b" ".join(items) + b")\r\n"

    def _flags(self, rec: MessageRecord):
        """The flags to send for ``rec``; a keyword this session has not been told about yet is
        announced first with ``* FLAGS`` (clients must never see a keyword not in FLAGS)."""
        if not rec.flags <= self.known_flags:
            self.keywords.update(f for f in rec.flags if not f.startswith("\\"))
            self.known_flags |= self.keywords
            self._flags_lines()
        if self.recent and rec.uid in self.recent:
            return frozenset(rec.flags) | {"\\Recent"}
        return rec.flags

    async def cmd_UID_FETCH(self, tag, args):
        await self.cmd_FETCH(tag, args, uid_mode=True)

    # STORE ---------------------------------------------------------------------------------
    async def cmd_STORE(self, tag, args, uid_mode: bool = False):
        self._need("selected")
        if len(args) not in (3, 4):
            raise Bad("Wrong number of arguments")
        idx = self._resolve(args[0], uid_mode)
        unchangedsince = None
        rest = args[1:]
        if len(rest) == 3:
            mods = rest[0]
            if (not isinstance(mods, list) or len(mods) != 2 or astring(mods[0]).upper() != "UNCHANGEDSINCE"):
                raise Bad("Unknown STORE modifier")
            unchangedsince = number(mods[1])
            self._condstore_on()
            rest = rest[1:]
        op = astring(rest[0]).upper()
        m = re.match(r"^([+-]?)FLAGS(\.SILENT)?$", op)
        if not m:
            raise Bad("Invalid STORE item")
        flags = parse_flags(rest[1])
        if self.readonly:
            raise No("[READ-ONLY] Mailbox is read-only")
        mode = {"": "set", "+": "add", "-": "remove"}[m.group(1)]
        silent = bool(m.group(2))
        uids = [self.uids[i] for i in idx]
        flags = [f for f in flags if f != "\\Recent"]
        changed, failed = await asyncio.to_thread(self._mb().set_flags, self.folder, uids, mode, flags,
                                                  unchangedsince)
        by_uid = {r.uid: r for r in changed}
        for r in changed:
            self.own_modseqs.add(r.modseq)
        show_modseq = self.condstore
        if not silent or unchangedsince is not None:
            report = uids if not silent else []
            recs = {r.uid: r for r in self._mb().records(self.folder, report)} if report else {}
            for uid in report:
                if uid in failed:
                    continue
                r = by_uid.get(uid) or recs.get(uid)
                if r is None:
                    continue
                seq = bisect.bisect_left(self.uids, uid) + 1
                parts = []
                if uid_mode:
                    parts.append(b"UID %d" % uid)
                parts.append(b"FLAGS " + flag_list(self._flags(r)))
                if show_modseq:
                    parts.append(b"MODSEQ (%d)" % r.modseq)
                self.out.append(b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n")
        self.sync(expunge=uid_mode)
        if failed:
            if uid_mode:
                mod = format_uid_set(sorted(failed))
            else:
                mod = format_uid_set([bisect.bisect_left(self.uids, u) + 1 for u in sorted(failed)])
            self.tagged(tag, "OK", f"[MODIFIED {mod}] Conditional STORE failed for some messages")
        else:
            self.tagged(tag, "OK", "STORE completed")

    async def cmd_UID_STORE(self, tag, args):
        await self.cmd_STORE(tag, args, uid_mode=True)

    # SEARCH --------------------------------------------------------------------------------
    async def cmd_SEARCH(self, tag, args, uid_mode: bool = False):
        self._need("selected")
        ret, args = ES.parse_return(args)
        if ret is not None:
            await self._esearch(tag, args, ret, uid_mode)
            return
        try:
            _charset, keys = parse_search(args)
        except BadCharset as e:
            self.tagged(tag, "NO", f"[BADCHARSET (UTF-8 US-ASCII)] {e}")
            return
        # sequence-set keys with numbers beyond the mailbox are simply empty (as Dovecot does)
        hits = await asyncio.to_thread(self._search, keys)
        uses_modseq = keys_use_modseq(keys)
        nums = [self.uids[i] if uid_mode else i + 1 for i, _ in hits]
        line = "SEARCH" + "".join(f" {n}" for n in nums)
        if uses_modseq and hits:
            line += f" (MODSEQ {max(m for _, m in hits)})"
        self.untagged(line)
        self.sync(expunge=uid_mode)
        # messages of the client's view that another session expunged (not told yet) could not
        # be searched: say so (RFC 5530, as Dovecot), the client knows they may be missing
        self.tagged(tag, "OK", ("[EXPUNGEISSUED] " if self.pending_gone else "") + "SEARCH completed")

    def _search(self, keys) -> list[tuple[int, int]]:
        return search_mailbox(self._mb(), self.folder, self.uids, keys, self.recent)

    async def cmd_UID_SEARCH(self, tag, args):
        await self.cmd_SEARCH(tag, args, uid_mode=True)

    def _search_keys(self, tag, args) -> list | None:
        """[CHARSET c] keys → keys; None when the charset was refused (NO already sent)."""
        try:
            return parse_search(args)[1]
        except BadCharset as e:
            self.tagged(tag, "NO", f"[BADCHARSET (UTF-8 US-ASCII)] {e}")
            return None

    async def _esearch(self, tag, args, ret: ES.ReturnOptions, uid_mode: bool, order=None,
                       criteria=None) -> None:
        """SEARCH/SORT RETURN (…) (RFC 4731, 5267): one ``* ESEARCH`` line."""
        verb = "SEARCH" if order is None else "SORT"
        if order is None:
            keys = self._search_keys(tag, args)
            if keys is None:
                return
            hits = await asyncio.to_thread(self._search, keys)
            order = [i for i, _ in hits]
            modseqs = {i: m for i, m in hits}
            uses_modseq = keys_use_modseq(keys)
        else:
            order, modseqs, uses_modseq, keys = order
        nums = [self.uids[i] if uid_mode else i + 1 for i in order]
        modseq = None
        if uses_modseq:
            by_num = {(self.uids[i] if uid_mode else i + 1): modseqs.get(i, 0) for i in order}
            modseq = ES.result_modseq(nums, by_num, ret)
        self.untagged(ES.encode(tag, uid_mode, nums, ret, modseq))
        note = ""
        if ret.update:      # CONTEXT=SEARCH/SORT: keep the result live (RFC 5267 4)
            if len(self.contexts) >= ES.MAX_LIVE and tag not in self.contexts:
                note = '[NOUPDATE "' + tag.replace("\\", "\\\\").replace('"', '\\"') + '"] '
            else:
                self.contexts[tag] = ES.LiveResult(keys, uid_mode, criteria, [self.uids[i] for i in order])
        self.sync(expunge=uid_mode)
        self.tagged(tag, "OK", note + ("UID " if uid_mode else "") + verb + " completed")

    def _sort_data(self, idx: list[int]):
        """SortData for the view's messages at 0-based ``idx``, a UID → index map and the
        folder's SortCache. Call with the cache's lock held (``self._sort_lock()``)."""
        uids = [self.uids[i] for i in idx]
        mb, folder = self._mb(), self.folder
        cache = _sort_cache(mb, folder, getattr(self, "view_validity", 0))
        data = cache.rows_for(uids, lambda missing: mb.sort_fields(folder, missing))
        _SORT_CACHES.trim(keep=cache)
        pos = {self.uids[i]: i for i in idx}
        return data, pos, cache

    async def _sort_hits(self, keys) -> list[tuple[int, int]]:
        """The messages a SORT/THREAD looks at; ALL needs no search (the sort reads the index
        anyway, and skips messages another session expunged)."""
        if keys == [("all",)]:
            return [(i, 0) for i in range(len(self.uids))]
        return await asyncio.to_thread(self._search, keys)

    def _sort_lock(self):
        return _sort_cache(self._mb(), self.folder, getattr(self, "view_validity", 0)).lock

    # SORT / THREAD (RFC 5256) ----------------------------------------------------------------
    async def cmd_SORT(self, tag, args, uid_mode: bool = False):
        self._need("selected")
        ret, args = ES.parse_return(args)
        if len(args) < 3:
            raise Bad("SORT needs sort criteria, a charset and search keys")
        try:
            criteria = parse_criteria(args[0])
        except SortError as e:
            raise Bad(str(e)) from None
        keys = self._search_keys(tag, [Atom("CHARSET"), args[1]] + list(args[2:]))
        if keys is None:
            return
        hits = await self._sort_hits(keys)

        def run():
            idx = [i for i, _ in hits]
            if all(k in ("ARRIVAL", "DATE", "SIZE") for k, _ in criteria):
                # numbers only: four index columns, no cache needed (a client's first screen)
                uids = [self.uids[i] for i in idx]
                data = [from_store_row(r) for r in self._mb().sort_fields(self.folder, uids, full=False)]
                pos = {self.uids[i]: i for i in idx}
                return [pos[m.uid] for m in sort_messages(data, criteria)]
            with self._sort_lock():
                data, pos, cache = self._sort_data(idx)
                return [pos[m.uid] for m in sort_messages(data, criteria, cache)]

        order = await asyncio.to_thread(run)
        if ret is not None:
            await self._esearch(tag, None, ret, uid_mode,
                                (order, dict(hits), keys_use_modseq(keys), keys), criteria)
            return
        nums = [self.uids[i] for i in order] if uid_mode else [i + 1 for i in order]
        self.untagged(" ".join(["SORT", *map(str, nums)]))
        self.sync(expunge=uid_mode)
        self.tagged(tag, "OK", ("UID " if uid_mode else "") + "SORT completed")

    async def cmd_UID_SORT(self, tag, args):
        await self.cmd_SORT(tag, args, uid_mode=True)

    async def cmd_THREAD(self, tag, args, uid_mode: bool = False):
        self._need("selected")
        if len(args) < 3 or not isinstance(args[0], Atom):
            raise Bad("THREAD needs an algorithm, a charset and search keys")
        algo = args[0].upper()
        if algo not in ("REFERENCES", "ORDEREDSUBJECT"):
            raise Bad(f"Unknown threading algorithm {algo[:20]}")
        keys = self._search_keys(tag, [Atom("CHARSET"), args[1]] + list(args[2:]))
        if keys is None:
            return
        hits = await self._sort_hits(keys)

        def run():
            with self._sort_lock():
                data, pos, cache = self._sort_data([i for i, _ in hits])
                roots = (TH.references(data, cache) if algo == "REFERENCES"
                         else TH.ordered_subject(data, cache))
            return TH.encode_threads(roots, (lambda m: m.uid) if uid_mode else (lambda m: pos[m.uid] + 1))

        text = await asyncio.to_thread(run)
        self.untagged("THREAD" + (" " + text if text else ""))
        self.sync(expunge=uid_mode)
        self.tagged(tag, "OK", ("UID " if uid_mode else "") + "THREAD completed")

    async def cmd_UID_THREAD(self, tag, args):
        await self.cmd_THREAD(tag, args, uid_mode=True)

    # COPY / MOVE ---------------------------------------------------------------------------
    async def cmd_COPY(self, tag, args, uid_mode: bool = False, move: bool = False):
        self._need("selected")
        self._nargs(args, 2)
        idx = self._resolve(args[0], uid_mode)
        dest = decode_mailbox(args[1])
        if move and self.readonly:
            raise No("[READ-ONLY] Mailbox is read-only")
        if dest not in self._folder_names():
            raise No("[TRYCREATE] Mailbox does not exist")
        uids = [self.uids[i] for i in idx]
        if not uids:
            if uid_mode:
                self.tagged(tag, "OK", "No messages")
                return
            raise Bad("Invalid message sequence number")
        validity, src, new = await asyncio.to_thread(self._mb().copy, self.folder, uids, dest, move=move)
        code = f"COPYUID {validity} {format_uid_set(src)} {format_uid_set(new)}" if src else ""
        if move:
            if code:
                self.untagged(f"OK [{code}] Moved")
            self.sync(expunge=True)
            self.tagged(tag, "OK", "MOVE completed")
        else:
            if uid_mode:
                self.sync(expunge=True)
            self.tagged(tag, "OK", (f"[{code}] " if code else "") + "COPY completed")

    async def cmd_UID_COPY(self, tag, args):
        await self.cmd_COPY(tag, args, uid_mode=True)

    async def cmd_MOVE(self, tag, args):
        await self.cmd_COPY(tag, args, move=True)

    async def cmd_UID_MOVE(self, tag, args):
        await self.cmd_COPY(tag, args, uid_mode=True, move=True)

    # IDLE ----------------------------------------------------------------------------------
    async def cmd_IDLE(self, tag, args):
        self._need("auth", "selected")
        self._nargs(args, 0)
        self.idle_tag = tag
        self.out.append(b"+ idling\r\n")
        if self.state == "selected":
            self.sync(expunge=True)

    def idle_done(self, line: bytes) -> None:
        tag, self.idle_tag = self.idle_tag, None
        if line.strip().upper() == b"DONE":
            self.tagged(tag, "OK", "IDLE terminated")
        else:
            self.tagged(tag, "BAD", "Expected DONE")

    # CONDSTORE / QRESYNC (RFC 7162) ------------------------------------------------------------
    def _condstore_on(self) -> None:
        """A CONDSTORE-enabling command (RFC 7162 3.1): MODSEQs are reported from now on; in a
        selected mailbox the HIGHESTMODSEQ is told once, as Dovecot does."""
        if self.condstore:
            return
        self.condstore = True
        if self.state == "selected" and self.folder is not None:
            self.untagged(f"OK [HIGHESTMODSEQ {self._mb().version(self.folder)}] Highest")

    async def _qresync_report(self, qr: "QR.SelectQresync") -> None:
        """SELECT … (QRESYNC …): what vanished and what changed since the client's MODSEQ."""
        recs, gone = await asyncio.to_thread(self._mb().changes_since, self.folder, qr.modseq)
        gone = QR.filter_known(gone, qr.known_uids, self.uids[-1] if self.uids else 0)
        if gone:
            self.untagged("VANISHED (EARLIER) " + format_uid_set(gone))
        top = self.uids[-1] if self.uids else 0
        for r in recs:          # only the client's known UIDs, when it named them (RFC 7162 3.2.5)
            if qr.known_uids is not None and not qr.known_uids.contains_uid(r.uid, top):
                continue
            i = bisect.bisect_left(self.uids, r.uid)
            if i < len(self.uids) and self.uids[i] == r.uid:
                self.out.append(b"* %d FETCH (UID %d FLAGS " % (i + 1, r.uid) + flag_list(self._flags(r))
                                + b" MODSEQ (%d))\r\n" % r.modseq)

    def _vanished_earlier(self, since: int, _uids: list[int], asked: SequenceSet) -> None:
        """UID FETCH … (CHANGEDSINCE n VANISHED): UIDs in the requested set expunged after n."""
        _recs, gone = self._mb().changes_since(self.folder, since)
        top = max([self.uids[-1] if self.uids else 0] + list(gone))
        gone = [u for u in gone if asked.contains_uid(u, top)]
        if gone:
            self.untagged("VANISHED (EARLIER) " + format_uid_set(gone))

    # CONTEXT=SEARCH / CONTEXT=SORT (RFC 5267) --------------------------------------------------
    async def cmd_CANCELUPDATE(self, tag, args):
        self._need("selected")
        if not args:
            raise Bad("CANCELUPDATE needs a tag")
        for a in args:
            self.contexts.pop(astring(a), None)
        self.tagged(tag, "OK", "CANCELUPDATE completed")

    def _context_refresh(self) -> None:
        """Re-run every live search/sort and tell the client what changed."""
        for ctag, ctx in list(self.contexts.items()):
            hits = self._search(ctx.keys)
            if ctx.criteria is None:
                new = [self.uids[i] for i, _ in hits]
            else:
                with self._sort_lock():
                    data, _pos, cache = self._sort_data([i for i, _ in hits])
                    new = [m.uid for m in sort_messages(data, ctx.criteria, cache)]
            self._context_send(ctag, ctx, new)

    def _context_send(self, ctag: str, ctx: "ES.LiveResult", new: list[int]) -> None:
        for kind, pos, items in ES.context_updates(ctx.result, new, ctx.criteria is not None):
            nums = items if ctx.uid else [bisect.bisect_left(self.uids, u) + 1 for u in items]
            self.untagged(ES.encode_update(ctag, ctx.uid, kind, pos, nums))
        ctx.result = new

    # NOTIFY (RFC 5465) ---------------------------------------------------------------------------
    async def cmd_NOTIFY(self, tag, args):
        self._need("auth", "selected")
        try:
            spec = NT.parse(args, decode_mailbox)
        except NT.BadEvent as e:
            raise No(f"[BADEVENT (MessageNew MessageExpunge FlagChange MailboxName "
                     f"SubscriptionChange)] Unsupported event: {str(e)[:60]}") from None
        self.notify = spec
        if spec is not None:
            if any("FLAGCHANGE" in g.events for g in spec.groups):
                self._condstore_on()        # flag changes are told with MODSEQs (as Dovecot)
            await asyncio.to_thread(self._notify_snapshot, spec.status)
        self.tagged(tag, "OK", "NOTIFY completed")

    def _notify_targets(self, names, initial: bool = False) -> dict[str, list[str]]:
        """STATUS items to watch per (not selected) mailbox among ``names``."""
        assert self.notify is not None
        subs = self._mb().subscriptions() if any(g.filter == "SUBSCRIBED" for g in self.notify.groups) else set()
        out = {}
        for name in names:
            if name == self.folder:
                continue
            events = NT.events_for(self.notify, name, selected=False, subscribed=name in subs, sep=SEP)
            items = NT.status_items(events, self.condstore, initial=initial)
            if items:
                out[name] = items
        return out

    def _notify_snapshot(self, tell: bool) -> None:
        mb = self._mb()
        folders = [f for f in mb.folders() if f.selectable]
        self.notify_names = {f.name for f in mb.folders()}
        self.notify_subs = set(mb.subscriptions())
        self.notify_told = {}
        for name, items in self._notify_targets([f.name for f in folders], initial=True).items():
            values = mb.status(name)
            self.notify_told[name] = values
            if tell:
                self._notify_status(name, items, values)

    def _notify_status(self, name: str, items: list[str], values: dict) -> None:
        text = " ".join(f"{k} {values.get(k, 0)}" for k in items)
        self.untagged(b"STATUS " + mbox_name(name) + f" ({text})".encode())

    def notify_poll(self, changed: set[str] | None = None) -> None:
        """Between commands (the server calls this when the store changed): tell what NOTIFY
        asked for. ``changed``: folders the change bus named (None: look at all)."""
        spec = self.notify
        if spec is None:
            return
        mb = self._mb()
        sel = spec.selected_group()
        if self.state == "selected" and sel is not None and sel.events:
            before = len(self.uids)
            # SELECTED-DELAYED: expunges wait for a command that may report them (RFC 5465 5.2)
            self.sync(expunge=sel.filter != "SELECTED-DELAYED")
            if sel.fetch and len(self.uids) > before:
                atts = parse_fetch_items(sel.fetch)
                recs = {r.uid: r for r in mb.records(self.folder, self.uids[before:])}
                for i in range(before, len(self.uids)):
                    rec = recs.get(self.uids[i])
                    if rec is not None:
                        self.out.append(self._fetch_one(i + 1, rec, atts, False))
        if spec.wants_names() or changed is None or any(c not in self.notify_told for c in changed):
            names = {f.name for f in mb.folders()}
            if spec.wants_names():
                for n in sorted(names - self.notify_names):
                    self.untagged(f'LIST () "{SEP}" '.encode() + mbox_name(n))
                for n in sorted(self.notify_names - names):
                    self.untagged(f'LIST (\\NonExistent) "{SEP}" '.encode() + mbox_name(n))
            self.notify_names = names
        if spec.wants_subscriptions():
            subs = set(mb.subscriptions())
            for n in sorted(subs - self.notify_subs):
                self.untagged(f'LIST (\\Subscribed) "{SEP}" '.encode() + mbox_name(n))
            for n in sorted(self.notify_subs - subs):
                self.untagged(f'LIST () "{SEP}" '.encode() + mbox_name(n))
            self.notify_subs = subs
        look = self.notify_names if changed is None else [c for c in changed if c in self.notify_names]
        for name, items in self._notify_targets(look).items():
            try:
                values = mb.status(name)
            except (BackendError, RelayError):
                continue
            old = self.notify_told.get(name)
            self.notify_told[name] = values
            if old is None or any(old.get(k) != values.get(k) for k in items):
                self._notify_status(name, items, values)

    # ------------------------------------------------------------------ change reporting
    def _own_view(self) -> None:
        """Before the view changes: a copy of its own if it still shares the store's list
        (array('I'): 4 bytes a UID, against 8 for a list's pointer plus the int objects)."""
        if not self.uids_own:
            self.uids, self.uids_own = array("I", self.uids), True

    def sync(self, *, expunge: bool = True) -> None:
        """Tell the client what changed in the selected mailbox since it last heard.

        With ``expunge=False`` (at the end of non-UID FETCH, STORE and SEARCH, where RFC 3501
        7.4.1 forbids EXPUNGE responses) new messages and flag changes are still reported but
        expunges wait in ``pending_gone`` until the next point where they are allowed, so the
        client's sequence numbers stay right. O(1) while nothing changed; with a store that keeps
        a change log (``changes_since``) the cost is O(changes), not O(mailbox size)."""
        if self.state != "selected" or self.folder is None:
            return
        mb = self._mb()
        v = mb.version(self.folder)
        if v != self.version:
            changes = getattr(mb, "changes_since", None)
            if changes is not None:
                recs, gone = changes(self.folder, self.modseq_seen)
                top = max([self.modseq_seen, v if isinstance(v, int) else 0] + [r.modseq for r in recs])
            else:
                st = mb.state(self.folder)
                now = set(st.uids)
                gone = [u for u in self.uids if u not in now]
                recs = [r for r in mb.records(self.folder, list(st.uids)) if r.modseq > self.modseq_seen]
                top = st.highestmodseq
            self.pending_gone.update(u for u in gone if _in(self.uids, u))
        else:
            recs, top = [], self.modseq_seen
        if expunge and self.pending_gone and self.contexts:
            for ctag, ctx in list(self.contexts.items()):   # REMOVEFROM before the EXPUNGEs
                self._context_send(ctag, ctx, [u for u in ctx.result if u not in self.pending_gone])
        if expunge and self.pending_gone and self.qresync:
            gone = sorted(u for u in self.pending_gone if _in(self.uids, u))
            if gone:
                self.untagged("VANISHED " + format_uid_set(gone))
            gone_set = set(gone)
            self.uids, self.uids_own = array("I", [u for u in self.uids if u not in gone_set]), True
            self.recent -= gone_set
            self.pending_gone.clear()
        if expunge and self.pending_gone:
            self._own_view()
            # highest first, so no renumbering between the lines (as Dovecot sends them)
            for u in sorted(self.pending_gone, reverse=True):
                i = bisect.bisect_left(self.uids, u)
                if i < len(self.uids) and self.uids[i] == u:
                    self.untagged(f"{i + 1} EXPUNGE")
                    del self.uids[i]
                    self.recent.discard(u)
            self.pending_gone.clear()
        if v == self.version:
            return
        last = self.uids[-1] if self.uids else 0
        added = sorted(r.uid for r in recs if r.uid > last)
        if added:
            self._own_view()
            self.uids.extend(added)
            self.recent |= self._recent_of(self.folder, added)
            self.untagged(f"{len(self.uids)} EXISTS")
            self.untagged(f"{len(self.recent)} RECENT")
        added_set = set(added)
        for r in recs:
            if r.modseq in self.own_modseqs or r.uid in added_set:
                continue
            i = bisect.bisect_left(self.uids, r.uid)
            if i >= len(self.uids) or self.uids[i] != r.uid:
                continue
            extra = b" MODSEQ (%d)" % r.modseq if self.condstore else b""
            if self.qresync:    # UID first, then MODSEQ and FLAGS, as Dovecot writes them
                self.out.append(b"* %d FETCH (UID %d MODSEQ (%d) FLAGS " % (i + 1, r.uid, r.modseq)
                                + flag_list(self._flags(r)) + b")\r\n")
                continue
            self.out.append(b"* %d FETCH (FLAGS " % (i + 1) + flag_list(self._flags(r)) + extra + b")\r\n")
        self.modseq_seen = top
        self.own_modseqs.clear()
        self.version = v
        if self.contexts:
            self._context_refresh()


def _no_nul(b: bytes) -> bytes:
    """A literal never carries NUL (RFC 3501 CHAR8): 0x80 instead, same length, as Dovecot
    sends it (BINARY's literal8 is the way to get the exact bytes)."""
    return b.replace(b"\0", b"\x80") if b"\0" in b else b


def _lenient_mutf7(s: str) -> str:
    """A LIST reference/pattern: modified UTF-7 decoded when valid, else as sent (it then
    matches nothing, as Dovecot answers, instead of a BAD)."""
    if "&" not in s:
        return s
    from relay.imap.parser import mutf7_decode
    try:
        return mutf7_decode(s)
    except ParseError:
        return s


_SORT_CACHES = CacheRegistry()     # per (user store, folder, UIDVALIDITY), bounded in messages


def _sort_cache(mb, folder: str, validity: int) -> SortCache:
    """The SortCache of a user's folder, shared by that user's sessions."""
    return _SORT_CACHES.get(mb, folder, validity)


def _in(uids: list[int], uid: int) -> bool:
    i = bisect.bisect_left(uids, uid)
    return i < len(uids) and uids[i] == uid


__all__ = ["Session", "imap_date", "list_pattern"]
