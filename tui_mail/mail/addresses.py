"""Address lists as a user types them in To/Cc/Bcc, and as they are shown.

``parse_addresses("Alice <alice@crepes.fr>, bob@hamburger.edu")`` gives ``Addr`` values or
raises ``AddressError`` listing every bad entry with its position and text, so the composer
can mark each one inline. ``check_addresses`` returns both lists without raising.

Why hand-written: ``email.utils.getaddresses`` is lenient by design (it turns "bob" into an
address and silently drops or merges broken entries) and says nothing about *where* an entry
went wrong. Here the splitting respects quotes, angle brackets and comments, and each entry
is checked first by our own rules (messages a user can act on: "'..' in the part before '@'")
and then by ``email-validator`` (syntax only, never DNS), with UTF-8 local parts and domains
allowed (RFC 6532). Domains go on the wire through IDNA 2008 / UTS 46 (the ``idna``
package), never Python's built-in ``idna`` codec: that is IDNA 2003, which maps ``ß`` to
``ss`` and so turns ``straße.de`` into a different domain, ``strasse.de``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import idna

from tui_mail.errors import MailError

# RFC 5322 atext, plus any non-ASCII character (RFC 6532 UTF8-non-ascii).
_ATEXT_ASCII = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
_LDH = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_SPECIALS_IN_NAME = frozenset('()<>[]:;@\\,."')


@dataclass(frozen=True)
class Addr:
    """One mailbox: display name (may be empty) and address ``local@domain``."""

    name: str
    addr: str

    @property
    def local(self) -> str:
        return self.addr.rpartition("@")[0]

    @property
    def domain(self) -> str:
        return self.addr.rpartition("@")[2]

    @property
    def ascii_addr(self) -> str:
        """The address with the domain IDNA-encoded (the local part is left as it is)."""
        return f"{self.local}@{domain_to_ascii(self.domain)}" if "@" in self.addr else self.addr

    @property
    def needs_smtputf8(self) -> bool:
        """True when the local part is not ASCII: only SMTPUTF8 (RFC 6531) can carry it."""
        return not self.local.isascii()

    def display(self) -> str:
        """For people: ``Alice Crêpe <alice@crepes.fr>``, or the bare address without a name;
        IDNA ``xn--`` domains shown in Unicode."""
        shown = f"{self.local}@{domain_to_unicode(self.domain)}" if "@" in self.addr else self.addr
        return f"{self.name} <{shown}>" if self.name else shown

    def header(self) -> str:
        """For a header value (before MIME encoding): the name quoted when it has specials."""
        if not self.name:
            return self.addr
        return f"{quote_name(self.name)} <{self.addr}>"

    @property
    def key(self) -> str:
        """For comparing and de-duplicating: case-folded, domain in ASCII form."""
        return f"{self.local}@{domain_to_ascii(self.domain)}".casefold()

    def __str__(self) -> str:
        return self.display()


@dataclass(frozen=True)
class BadAddress:
    """One entry that is not a valid address: where it starts in the input, its text, why."""

    position: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"{self.text!r} at {self.position}: {self.reason}"


class AddressError(MailError, ValueError):
    """One or more entries of an address list are invalid; ``bad`` lists them in order."""

    def __init__(self, bad: list[BadAddress]):
        self.bad = bad
        first = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        super().__init__(f"Invalid address {first.text!r} at position {first.position}: {first.reason}{more}")

    @property
    def position(self) -> int:
        return self.bad[0].position

    @property
    def text(self) -> str:
        return self.bad[0].text


# --- IDNA ------------------------------------------------------------------------------

def domain_to_ascii(domain: str) -> str:
    """``bücher.example`` → ``xn--bcher-kva.example``, ``straße.de`` → ``xn--strae-oqa.de``
    (IDNA 2008 with UTS 46 mapping, non-transitional: ß stays ß); ASCII and literals unchanged.
    Raises ValueError for a label IDNA cannot encode."""
    if domain.isascii() or domain.startswith("["):
        return domain
    try:
        return idna.encode(domain, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(f"domain {domain!r} cannot be encoded with IDNA") from exc


def envelope_address(addr: str) -> str:
    """An address as it goes into SMTP MAIL FROM / RCPT TO: the domain as IDNA 2008 A-labels
    (``bob@straße.de`` → ``bob@xn--strae-oqa.de``), the local part as it is (a non-ASCII one
    needs SMTPUTF8). An address whose domain IDNA cannot encode is returned unchanged, for
    the server to refuse."""
    local, at, domain = addr.rpartition("@")
    if not at or domain.isascii():
        return addr
    try:
        return f"{local}@{domain_to_ascii(domain)}"
    except ValueError:
        return addr


def domain_to_unicode(domain: str) -> str:
    """``xn--bcher-kva.example`` → ``bücher.example``; leaves anything undecodable as it is."""
    if "xn--" not in domain.lower():
        return domain
    try:
        return idna.decode(domain)
    except (idna.IDNAError, UnicodeError):
        return domain


# --- splitting -------------------------------------------------------------------------

def _split(text: str) -> list[tuple[int, str, str | None]]:
    """Split at top-level commas/semicolons → (start, entry text, structural problem or None).
    Entries keep their own whitespace trimmed; positions index into ``text``."""
    entries: list[tuple[int, str, str | None]] = []
    start = 0
    i = 0
    n = len(text)
    in_quote = False
    angle = 0
    paren = 0
    while i < n:
        ch = text[i]
        if in_quote:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                in_quote = False
        elif paren:
            if ch == "\\":
                i += 2
                continue
            if ch == "(":
                paren += 1
            elif ch == ")":
                paren -= 1
        elif ch == '"':
            in_quote = True
        elif ch == "(":
            paren += 1
        elif ch == "<":
            angle += 1
        elif ch == ">":
            angle = max(0, angle - 1)
        elif ch in ",;" and not angle:
            entries.append((start, text[start:i], None))
            start = i + 1
        i += 1
    problem = None
    if in_quote:
        problem = "unbalanced quote"
    elif paren:
        problem = "unbalanced parenthesis"
    elif angle:
        problem = "missing '>'"
    entries.append((start, text[start:], problem))
    out = []
    for pos, raw, prob in entries:
        stripped = raw.strip()
        if not stripped:
            continue
        out.append((pos + (len(raw) - len(raw.lstrip())), stripped, prob))
    return out


# --- one entry -------------------------------------------------------------------------

def _unquote(s: str) -> str:
    s = s[1:-1] if len(s) >= 2 and s[0] == s[-1] == '"' else s
    return re.sub(r"\\(.)", r"\1", s)


def _decode_words(name: str) -> str:
    if "=?" not in name:
        return name
    from email.header import decode_header, make_header

    try:
        return str(make_header(decode_header(name)))
    except (UnicodeError, LookupError, ValueError):
        return name


def _clean_name(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == '"' and raw[-1] == '"':
        return _unquote(raw)
    return _decode_words(" ".join(raw.replace('"', "").split()))


def _find_top_level(s: str, target: str) -> int:
    in_quote = False
    i = 0
    while i < len(s):
        ch = s[i]
        if in_quote:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == target:
            return i
        i += 1
    return -1


def validate_addr_spec(spec: str) -> str | None:
    """Why ``spec`` (``local@domain``) is not a valid address, or None when it is."""
    if not spec:
        return "empty address"
    if any(ch.isspace() for ch in spec) and not spec.startswith('"'):
        return "address contains a space"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in spec):
        return "address contains a control character"
    at = spec.rfind("@")
    if at < 0:
        return "missing '@' (expected name@domain)"
    local, domain = spec[:at], spec[at + 1:]
    if not local:
        return "nothing before '@'"
    if not domain:
        return "nothing after '@'"
    why = _check_local(local)
    if why:
        return why
    why = _check_domain(domain)
    if why:
        return why
    if len(local.encode("utf-8")) > 64:
        return "the part before '@' is longer than 64 bytes"
    try:
        if len(local.encode("utf-8")) + 1 + len(domain_to_ascii(domain)) > 254:
            return "address longer than 254 bytes"
    except ValueError:  # pragma: no cover - _check_domain already refused it
        return "bad domain"
    return _library_verdict(spec)


# email-validator refuses special-use names (localhost, .test, .local…) as undeliverable on
# the Internet; a mail client talking to a local relay or a test server must accept them.
_SPECIAL_USE = "special-use or reserved name"


def _library_verdict(spec: str) -> str | None:
    """email-validator's syntax check (no DNS), as a reason or None."""
    import email_validator  # here, not at the top: its regexes cost ~25 ms of start-up

    try:
        email_validator.validate_email(
            spec, check_deliverability=False, allow_smtputf8=True, allow_quoted_local=True,
            allow_domain_literal=True, globally_deliverable=False)
    except email_validator.EmailNotValidError as exc:
        reason = str(exc)
        if _SPECIAL_USE in reason:
            return None
        return reason[:1].lower() + reason[1:].rstrip(".")
    return None


def _check_local(local: str) -> str | None:
    if local.startswith('"'):
        if len(local) < 2 or not local.endswith('"'):
            return "unbalanced quote in the part before '@'"
        body = local[1:-1]
        i = 0
        while i < len(body):
            if body[i] == "\\":
                if i + 1 >= len(body):
                    return "dangling backslash in quoted part"
                i += 2
                continue
            if body[i] == '"':
                return "stray quote in the part before '@'"
            i += 1
        return None
    if local.startswith(".") or local.endswith("."):
        return "the part before '@' cannot start or end with '.'"
    if ".." in local:
        return "'..' in the part before '@'"
    for ch in local:
        if ch == "." or ch in _ATEXT_ASCII or (ord(ch) > 127 and ch.isprintable()):
            continue
        return f"character {ch!r} not allowed before '@'"
    return None


def _check_domain(domain: str) -> str | None:
    if domain.startswith("["):
        if not domain.endswith("]"):
            return "unterminated domain literal"
        inner = domain[1:-1]
        import ipaddress

        try:
            if inner.lower().startswith("ipv6:"):
                ipaddress.IPv6Address(inner[5:])
            else:
                ipaddress.IPv4Address(inner)
        except ValueError:
            return f"bad address literal {domain!r}"
        return None
    if domain.startswith(".") or domain.endswith(".") or ".." in domain:
        return f"domain {domain!r} has an empty label"
    for label in domain.split("."):
        if label.isascii():
            if not _LDH.match(label):
                return f"bad domain label {label!r}"
        else:
            try:
                encoded = domain_to_ascii(label)
            except ValueError:
                return f"domain label {label!r} is not valid IDNA"
            if not _LDH.match(encoded):
                return f"bad domain label {label!r}"
    return None


def parse_entry(entry: str) -> Addr:
    """One entry (``Name <a@b>``, ``"Last, First" <a@b>``, ``a@b (Name)``, ``<a@b>`` or
    ``a@b``) → Addr; raises ValueError with the reason."""
    lt = _find_top_level(entry, "<")
    if lt >= 0:
        gt = entry.find(">", lt)
        if gt < 0:
            raise ValueError("missing '>'")
        rest = entry[gt + 1:].strip()
        if rest and not (rest.startswith("(") and rest.endswith(")")):
            raise ValueError(f"unexpected text after '>': {rest!r}")
        if _find_top_level(entry[:lt], ">") >= 0:
            raise ValueError("stray '>' before '<'")
        name = _clean_name(entry[:lt])
        spec = entry[lt + 1:gt].strip()
    else:
        if ">" in entry:
            raise ValueError("'>' without '<'")
        name = ""
        spec = entry
        m = re.match(r"^(\S+)\s*\((.*)\)$", entry, re.S)
        if m:
            spec, name = m.group(1), " ".join(m.group(2).split())
        elif " " in entry.strip() and not entry.startswith('"'):
            # "Bob bob@x" — a name without brackets; say what to type.
            raise ValueError("put the address in <…> after a name, e.g. Bob <bob@example.org>")
    why = validate_addr_spec(spec)
    if why:
        raise ValueError(why)
    return Addr(name, spec)


# --- lists -----------------------------------------------------------------------------

def check_addresses(text: str) -> tuple[list[Addr], list[BadAddress]]:
    """Parse a typed list without raising: (good addresses, bad entries), both in order."""
    good: list[Addr] = []
    bad: list[BadAddress] = []
    for pos, entry, problem in _split(text):
        if problem:
            bad.append(BadAddress(pos, entry, problem))
            continue
        try:
            good.append(parse_entry(entry))
        except ValueError as exc:
            bad.append(BadAddress(pos, entry, str(exc)))
    return good, bad


def parse_addresses(text: str) -> list[Addr]:
    """Parse a typed list; raises AddressError naming every bad entry."""
    good, bad = check_addresses(text)
    if bad:
        raise AddressError(bad)
    return good


def parse_address(text: str) -> Addr:
    """Exactly one address (e.g. an identity's From)."""
    addrs = parse_addresses(text)
    if len(addrs) != 1:
        raise AddressError([BadAddress(0, text, "expected exactly one address")])
    return addrs[0]


def quote_name(name: str) -> str:
    """A display name as a header phrase: quoted (with escapes) when it contains specials."""
    if name and not any(ch in _SPECIALS_IN_NAME for ch in name) and name == " ".join(name.split()):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_addresses(addrs: Iterable[Addr]) -> str:
    """For display: ``Alice <a@x>, bob@y``."""
    return ", ".join(a.display() for a in addrs)


def format_for_input(addrs: Iterable[Addr]) -> str:
    """For an editable To/Cc field: parseable back by ``parse_addresses`` (names quoted)."""
    return ", ".join(a.header() for a in addrs)


def dedup(addrs: Iterable[Addr], exclude: Iterable[str | Addr] = ()) -> list[Addr]:
    """Drop repeats (case-insensitive, first one wins) and any address in ``exclude``."""
    seen = set()
    for e in exclude:
        seen.add(e.key if isinstance(e, Addr) else Addr("", e).key)
    out = []
    for a in addrs:
        if a.key in seen:
            continue
        seen.add(a.key)
        out.append(a)
    return out


def from_header_value(value: str) -> list[Addr]:
    """Lenient: addresses from a received message's (decoded) header value. Entries that are
    not addresses are skipped rather than refused — this is someone else's mail."""
    from email.utils import getaddresses

    out = []
    for name, spec in getaddresses([value]):
        if spec and "@" in spec:
            out.append(Addr(" ".join(name.split()), spec))
    return out
