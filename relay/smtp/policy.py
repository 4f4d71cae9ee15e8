"""Pure accept/reject rules for incoming SMTP: no sockets, no files, no aiosmtpd.

Every function takes facts and returns ``None`` (accept) or the reply line to send, so the
rules can be tested by the hundred. Replies carry RFC 3463 enhanced status codes and follow
Postfix's wording where operators expect it ("Relay access denied", "User unknown").
"""

from __future__ import annotations

import re
from collections.abc import Callable

OK = "250 2.1.0 Ok"
OK_RCPT = "250 2.1.5 Ok"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
AUTH_NOT_OFFERED = "503 5.5.1 Error: authentication not enabled on this port (use submission)"
AUTH_NEEDS_TLS = "538 5.7.11 Encryption required for requested authentication mechanism"
TOO_MANY_RCPTS = "452 4.5.3 Error: too many recipients"
TOO_MANY_HOPS = "554 5.4.6 Error: too many hops (mail loop?)"
BARE_NEWLINE = "550 5.5.2 Error: bare <CR> or <LF> in message data (RFC 5321 2.3.8); use <CR><LF>"
QUEUE_FAILED = "451 4.3.0 Error: queue file write error"
TOO_BIG = "552 5.3.4 Error: message file too big"
NO_NUL = "550 5.6.0 Error: NUL character in message data"

# RFC 5321 Mailbox, loosely: local@domain with no spaces or angle brackets; SMTPUTF8 allows
# non-ASCII in both parts (we accept it when the session asked for SMTPUTF8).
_MAILBOX = re.compile(r"^[^\s<>@]+@[^\s<>@]+$")
# no trailing dot: "bob@example.org." must not become a second mailbox next to bob@example.org
_DOMAIN = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s<>@.\[\]]+(\.[^\s<>@.\[\]]+)*)$")


def split_address(address: str) -> tuple[str, str] | None:
    if not _MAILBOX.match(address):
        return None
    local, _, domain = address.rpartition("@")
    if not local or not _DOMAIN.match(domain):
        return None
    return local, domain.lower()


def check_sender(sender: str, *, smtputf8: bool) -> str | None:
    if sender == "":
        return None  # null sender: bounces
    if not smtputf8 and not sender.isascii():
        return "553 5.6.7 Error: non-ASCII sender address needs SMTPUTF8"
    if split_address(sender) is None:
        return f"553 5.1.7 <{sender}>: Sender address rejected: bad address syntax"
    return None


def check_sender_login(sender: str, login: str, allowed: frozenset[str]) -> str | None:
    """An authenticated client may use only its own addresses as envelope sender
    (Postfix's ``reject_sender_login_mismatch``); the null sender (bounces) is allowed."""
    if sender == "" or sender.lower() in allowed:
        return None
    return f"553 5.7.1 <{sender}>: Sender address rejected: not owned by user {login}"


def check_header_senders(addresses: list[str] | None, login: str, allowed: frozenset[str]) -> str | None:
    """Every address in the From: header must be the login's too (None: no From header)."""
    for addr in addresses or ():
        if addr.lower() not in allowed:
            shown = addr[:200] or "(empty)"
            return f"553 5.7.1 <{shown}>: From: header address rejected: not owned by user {login}"
    return None


def check_recipient(address: str, *, count: int, max_recipients: int, authenticated: bool,
                    is_local_domain: Callable[[str], bool], user_exists: Callable[[str], bool],
                    smtputf8: bool) -> str | None:
    """Decide one RCPT TO. ``count`` is how many recipients were accepted before this one."""
    if count >= max_recipients:
        return TOO_MANY_RCPTS
    if not smtputf8 and not address.isascii():
        return "553 5.6.7 Error: non-ASCII recipient address needs SMTPUTF8"
    parts = split_address(address)
    if parts is None:
        return f"501 5.1.3 <{address}>: Recipient address rejected: bad address syntax"
    _, domain = parts
    if is_local_domain(domain):
        if not user_exists(address):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in local recipient table"
        return None
    if not authenticated:
        return f"554 5.7.1 <{address}>: Relay access denied"
    return None


def count_received(data: bytes) -> int:
    """Number of Received: headers in the header block (loop detection by hop count)."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end + 2]
    return len(re.findall(rb"(?im)^received:", head))


def check_data(data: bytes, *, max_hops: int) -> str | None:
    """Checks on the DATA payload after aiosmtpd un-dot-stuffed it (lines end in CRLF).

    SMTP smuggling: aiosmtpd only ends DATA on CRLF.CRLF, but a bare LF or CR inside a line
    (``<LF>.<LF>``, ``<CR>.<CR><LF>`` …) would reach the queue and, relayed onward, could be
    read as end-of-data by a laxer next hop. We refuse such messages outright.
    """
    if b"\r" in data.replace(b"\r\n", b""):
        return BARE_NEWLINE
    if b"\n" in data.replace(b"\r\n", b""):
        return BARE_NEWLINE
    if b"\x00" in data:
        return NO_NUL
    if count_received(data) >= max_hops:
        return TOO_MANY_HOPS
    return None


def received_header(*, helo: str, client_ip: str, client_host: str | None, by: str, protocol: str,
                    queue_id: str, recipient: str | None, date: str) -> bytes:
    """Our Received trace header (RFC 5321 4.4), folded, CRLF-terminated.

    ``protocol``: ESMTP / ESMTPS / ESMTPA / ESMTPSA (RFC 3848)."""
    rdns = client_host or "unknown"
    helo_clean = re.sub(r"[^\x21-\x7e]", "?", helo or "unknown")[:255]
    line = f"Received: from {helo_clean} ({rdns} [{client_ip}])\r\n\tby {by} (tui-mail relay) with {protocol} id {queue_id}"
    if recipient:
        line += f"\r\n\tfor <{recipient}>"
    line += f"; {date}\r\n"
    return line.encode("utf-8")


def protocol_name(*, esmtp: bool, tls: bool, authenticated: bool) -> str:
    name = "ESMTP" if esmtp else "SMTP"
    if tls:
        name += "S"
    if authenticated:
        name += "A"
    return name
