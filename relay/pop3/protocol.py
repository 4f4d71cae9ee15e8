"""POP3 (RFC 1939, CAPA/RESP-CODES RFC 2449, STLS RFC 2595, AUTH PLAIN RFC 5034) as a pure
state machine: lines in, replies and requests for I/O out; no sockets, no store.

Why hand-written: no maintained Python POP3 server library exists (the stdlib only has the
client), and the protocol is small enough that a pure core keeps every rule testable in memory.

Rules this module enforces:
- States AUTHORIZATION → TRANSACTION → UPDATE. USER/PASS/AUTH/STLS only in AUTHORIZATION;
  STAT/LIST/UIDL/RETR/TOP/DELE/RSET/NOOP only in TRANSACTION; CAPA and QUIT in both.
- Plaintext credentials are refused (``-ERR [AUTH]``) unless the connection is under TLS or the
  glue says plaintext is allowed here (loopback); STLS is offered only where TLS is available.
- Deletions are marks until QUIT; only then does the glue expunge them (UPDATE state).
- Replies are CRLF-terminated; multi-line data is dot-stuffed and ends with ".".

The machine returns ``Reply`` (send bytes) or a request the asyncio glue fulfils and reports
back: ``Authenticate`` → ``auth_result``, ``Fetch`` → ``fetched``, ``StartTLS`` → ``tls_started``,
``Update`` → ``update_result``.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from dataclasses import dataclass, field

MAX_LINE = 512           # RFC 2449 allows 255 octets per command; be a little lenient
MAX_ERRORS = 10          # consecutive bad commands before the server hangs up
_STUFF = re.compile(rb"^\.", re.M)
_EOL = re.compile(rb"\r?\n")

AUTHORIZATION, TRANSACTION, UPDATE, CLOSED = "AUTHORIZATION", "TRANSACTION", "UPDATE", "CLOSED"


# ------------------------------------------------------------------------------ outputs
@dataclass
class Reply:
    data: bytes
    close: bool = False


@dataclass
class Authenticate:
    user: str
    password: str
    mechanism: str


@dataclass
class Fetch:
    """Read message ``uid``; ``lines`` is None for RETR, the TOP line count otherwise."""
    number: int
    uid: int
    lines: int | None


@dataclass
class StartTLS:
    reply: bytes


@dataclass
class Update:
    """QUIT in TRANSACTION: remove these UIDs, then send ``update_result``'s reply and close."""
    uids: list[int]


Output = Reply | Authenticate | Fetch | StartTLS | Update


# ------------------------------------------------------------------------------ formatting
def ok(text: str = "") -> bytes:
    return b"+OK" + (b" " + text.encode("utf-8", "replace") if text else b"") + b"\r\n"


def err(text: str) -> bytes:
    return b"-ERR " + text.encode("utf-8", "replace") + b"\r\n"


def multiline(first: bytes, body: bytes) -> bytes:
    """A +OK line, the dot-stuffed body with CRLF line ends, and the terminating '.'."""
    if body.count(b"\n") != body.count(b"\r\n"):      # bare LFs: CRLF on the wire
        body = _EOL.sub(b"\r\n", body)
    if body.startswith(b".") or b"\n." in body:
        body = _STUFF.sub(b"..", body)
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return first + body + b".\r\n"


def top(data: bytes, lines: int) -> bytes:
    """Header, the blank line, and the first ``lines`` lines of the body (RFC 1939 TOP)."""
    m = re.search(rb"\r?\n\r?\n", data)
    if data.startswith(b"\r\n") or data.startswith(b"\n"):
        head_end = data.index(b"\n") + 1
    elif m is None:
        return data
    else:
        head_end = m.end()
    if lines <= 0:
        return data[:head_end]
    pos = head_end
    for _ in range(lines):
        nl = data.find(b"\n", pos)
        if nl < 0:
            return data
        pos = nl + 1
    return data[:pos]


def decode_plain(blob: str) -> tuple[str, str] | None:
    """SASL PLAIN: base64 of authzid NUL authcid NUL password → (authcid, password)."""
    try:
        raw = b64decode(blob, validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    parts = raw.split("\x00")
    if len(parts) != 3 or not parts[1]:
        return None
    authz, user, password = parts
    if authz and authz.lower() != user.lower():
        return None
    return user, password


# ------------------------------------------------------------------------------ the maildrop
@dataclass
class Message:
    uid: int
    size: int
    uidl: str


@dataclass
class Maildrop:
    """The session's snapshot of INBOX, numbered 1..n at PASS time (RFC 1939)."""
    messages: list[Message]
    deleted: set[int] = field(default_factory=set)    # message numbers

    def get(self, number: int) -> Message | None:
        if 1 <= number <= len(self.messages) and number not in self.deleted:
            return self.messages[number - 1]
        return None

    def live(self) -> list[tuple[int, Message]]:
        return [(i, m) for i, m in enumerate(self.messages, 1) if i not in self.deleted]

    def totals(self) -> tuple[int, int]:
        live = self.live()
        return len(live), sum(m.size for _, m in live)


def uidl_for(uidvalidity: int, uid: int) -> str:
    """Stable per message while its UID lives (flag changes do not touch it); the same form
    as Dovecot's default pop3_uidl_format %08Xu%08Xv."""
    return f"{uid:08X}{uidvalidity:08X}"


# ------------------------------------------------------------------------------ the machine
class Pop3Machine:
    def __init__(self, *, hostname: str, tls_active: bool, tls_available: bool,
                 plaintext_allowed: bool) -> None:
        self.hostname = hostname
        self.tls_active = tls_active
        self.tls_available = tls_available
        self.plaintext_allowed = plaintext_allowed
        self.state = AUTHORIZATION
        self.user: str | None = None
        self.pending_user: str | None = None
        self.awaiting_plain = False
        self.maildrop: Maildrop | None = None
        self.errors = 0

    # -------------------------------------------------------------- helpers
    @property
    def may_login(self) -> bool:
        return self.tls_active or self.plaintext_allowed

    def greeting(self) -> bytes:
        return ok(f"{self.hostname} POP3 ready")

    def capabilities(self) -> list[str]:
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER",
                "IMPLEMENTATION tui-mail-relay"]
        if self.state == AUTHORIZATION:
            if self.may_login:
                caps += ["USER", "SASL PLAIN"]
            if self.tls_available and not self.tls_active:
                caps.append("STLS")
        return caps

    def _bad(self, text: str) -> Reply:
        self.errors += 1
        if self.errors >= MAX_ERRORS:
            self.state = CLOSED
            return Reply(err(f"{text}; too many errors, bye"), close=True)
        return Reply(err(text))

    def _number(self, args: list[str]) -> int | None:
        if len(args) != 1 or not args[0].isdigit() or len(args[0]) > 9:
            return None
        return int(args[0])

    # -------------------------------------------------------------- input
    def receive_line(self, line: bytes) -> Output:
        """One command line (CRLF or LF stripped or not)."""
        if self.state in (UPDATE, CLOSED):
            return Reply(b"", close=True)
        if len(line) > MAX_LINE:
            return self._bad("line too long")
        text = line.rstrip(b"\r\n").decode("utf-8", "replace")
        if self.awaiting_plain:
            self.awaiting_plain = False
            if text == "*":
                return Reply(err("authentication cancelled"))
            return self._plain(text)
        verb, _, rest = text.partition(" ")
        verb = verb.upper()
        args = rest.split() if rest else []
        handler = getattr(self, f"cmd_{verb}", None) if verb.isalpha() else None
        if handler is None:
            return self._bad(f"unknown command {verb[:20]!r}")
        out = handler(args, rest)
        if isinstance(out, Reply) and out.data.startswith(b"+OK"):
            self.errors = 0
        return out

    # -------------------------------------------------------------- any state
    def cmd_CAPA(self, args, rest) -> Output:
        return Reply(multiline(ok("capability list follows"),
                               "".join(c + "\r\n" for c in self.capabilities()).encode()))

    def cmd_QUIT(self, args, rest) -> Output:
        if self.state == TRANSACTION and self.maildrop is not None:
            self.state = UPDATE
            return Update([self.maildrop.messages[i - 1].uid for i in sorted(self.maildrop.deleted)])
        self.state = CLOSED
        return Reply(ok(f"{self.hostname} POP3 signing off"), close=True)

    def update_result(self, removed: int, error: str | None = None) -> Reply:
        self.state = CLOSED
        if error:
            return Reply(err(f"[SYS/TEMP] some deleted messages not removed: {error}"), close=True)
        n = len(self.maildrop.messages) - removed if self.maildrop else 0
        return Reply(ok(f"{self.hostname} POP3 signing off ({n} messages left)"), close=True)

    # -------------------------------------------------------------- AUTHORIZATION
    def _need_auth_state(self) -> Reply | None:
        if self.state != AUTHORIZATION:
            return self._bad("already authenticated")
        return None

    def cmd_STLS(self, args, rest) -> Output:
        if (r := self._need_auth_state()) is not None:
            return r
        if self.tls_active:
            return self._bad("already using TLS")
        if not self.tls_available:
            return self._bad("TLS not available")
        return StartTLS(ok("begin TLS negotiation"))

    def tls_started(self) -> None:
        """After a successful handshake: forget everything said before it (RFC 2595)."""
        self.tls_active = True
        self.pending_user = None

    def cmd_USER(self, args, rest) -> Output:
        if (r := self._need_auth_state()) is not None:
            return r
        if not self.may_login:
            return self._bad("[AUTH] plaintext authentication disallowed without TLS (use STLS)")
        if len(args) != 1:
            return self._bad("usage: USER name")
        self.pending_user = args[0]
        return Reply(ok("send PASS"))

    def cmd_PASS(self, args, rest) -> Output:
        if (r := self._need_auth_state()) is not None:
            return r
        if self.pending_user is None:
            return self._bad("send USER first")
        if not rest:
            return self._bad("usage: PASS password")
        user, self.pending_user = self.pending_user, None
        return Authenticate(user, rest, "USER")    # the password may contain spaces

    def cmd_AUTH(self, args, rest) -> Output:
        if (r := self._need_auth_state()) is not None:
            return r
        if not args:
            return Reply(multiline(ok("SASL mechanisms follow"),
                                   b"PLAIN\r\n" if self.may_login else b""))
        if args[0].upper() != "PLAIN":
            return self._bad("unsupported authentication mechanism")
        if not self.may_login:
            return self._bad("[AUTH] plaintext authentication disallowed without TLS (use STLS)")
        if len(args) == 1:
            self.awaiting_plain = True
            return Reply(b"+ \r\n")
        return self._plain(args[1])

    def _plain(self, blob: str) -> Output:
        creds = decode_plain(blob)
        if creds is None:
            return self._bad("malformed SASL PLAIN response")
        return Authenticate(creds[0], creds[1], "PLAIN")

    def auth_result(self, user: str, maildrop: Maildrop | None, error: str | None = None) -> Reply:
        """The glue checked the password and locked the maildrop (or says why not). ``error``
        is an RFC 2449/3206 reply text such as "[IN-USE] ..." or "[AUTH] ..."."""
        if maildrop is None:
            return self._bad(error or "[AUTH] authentication failed")
        self.state = TRANSACTION
        self.user = user
        self.maildrop = maildrop
        n, size = maildrop.totals()
        self.errors = 0
        return Reply(ok(f"{user} has {n} messages ({size} octets)"))

    # -------------------------------------------------------------- TRANSACTION
    def _drop(self) -> Maildrop | Reply:
        if self.state != TRANSACTION or self.maildrop is None:
            return self._bad("not authenticated")
        return self.maildrop

    def cmd_STAT(self, args, rest) -> Output:
        md = self._drop()
        if isinstance(md, Reply):
            return md
        n, size = md.totals()
        return Reply(ok(f"{n} {size}"))

    def _listing(self, args, what: str) -> Output:
        md = self._drop()
        if isinstance(md, Reply):
            return md
        def item(m: Message) -> str:
            return str(m.size) if what == "LIST" else m.uidl
        if args:
            number = self._number(args)
            m = md.get(number) if number is not None else None
            if m is None:
                return self._bad("no such message")
            return Reply(ok(f"{number} {item(m)}"))
        body = "".join(f"{i} {item(m)}\r\n" for i, m in md.live()).encode()
        n, size = md.totals()
        head = ok(f"{n} messages ({size} octets)") if what == "LIST" else ok("unique-id listing follows")
        return Reply(multiline(head, body))

    def cmd_LIST(self, args, rest) -> Output:
        return self._listing(args, "LIST")

    def cmd_UIDL(self, args, rest) -> Output:
        return self._listing(args, "UIDL")

    def cmd_RETR(self, args, rest) -> Output:
        md = self._drop()
        if isinstance(md, Reply):
            return md
        number = self._number(args)
        m = md.get(number) if number is not None else None
        if m is None:
            return self._bad("no such message")
        return Fetch(number, m.uid, None)

    def cmd_TOP(self, args, rest) -> Output:
        md = self._drop()
        if isinstance(md, Reply):
            return md
        if len(args) != 2 or not args[1].isdigit() or len(args[1]) > 9:
            return self._bad("usage: TOP msg n")
        number = self._number(args[:1])
        m = md.get(number) if number is not None else None
        if m is None:
            return self._bad("no such message")
        return Fetch(number, m.uid, int(args[1]))

    def fetched(self, request: Fetch, data: bytes | None) -> Reply:
        """The glue read the message (None: it vanished, e.g. expunged over IMAP)."""
        if data is None:
            return self._bad("[SYS/TEMP] message is no longer available")
        if request.lines is None:
            return Reply(multiline(ok(f"{len(data)} octets"), data))
        return Reply(multiline(ok("top of message follows"), top(data, request.lines)))

    def cmd_DELE(self, args, rest) -> Output:
        md = self._drop()
        if isinstance(md, Reply):
            return md
        number = self._number(args)
        if number is None or md.get(number) is None:
            return self._bad("no such message" if number is None or number not in md.deleted
                             else f"message {number} already deleted")
        md.deleted.add(number)
        return Reply(ok(f"message {number} deleted"))

    def cmd_RSET(self, args, rest) -> Output:
        md = self._drop()
        if isinstance(md, Reply):
            return md
        md.deleted.clear()
        n, size = md.totals()
        return Reply(ok(f"maildrop has {n} messages ({size} octets)"))

    def cmd_NOOP(self, args, rest) -> Output:
        md = self._drop()
        if isinstance(md, Reply):
            return md
        return Reply(ok())
