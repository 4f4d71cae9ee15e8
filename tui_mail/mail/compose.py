"""Composing: a ``Draft`` (what the compose screen edits) → an RFC 5322 message ready to
submit, plus reply / reply-all / forward drafts made from a parsed message, and drafts saved
as messages (for the Drafts folder) and resumed from them.

Built with ``email.message.EmailMessage`` and ``email.policy.SMTP`` (``SMTPUTF8`` when an
address needs it, RFC 6531/6532): the library does the MIME encoding and folding; the rules
here are the mail-user-agent ones it leaves to us (Date, Message-ID with the sender's domain,
Bcc only in the envelope, reply targets, quoting, subject prefixes, References).
"""

from __future__ import annotations

import mimetypes
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid

from tui_mail.errors import MailError
from tui_mail.mail.addresses import (
    Addr, AddressError, BadAddress, check_addresses, dedup, domain_to_ascii, format_for_input,
    parse_addresses, quote_name,
)
from tui_mail.mail.parse import MessageView, parse_message

USER_AGENT = "tui-mail"
MAX_REFERENCES = 20

_DRAFT_PREFIX = "X-tui-mail-"
ORIGIN_FLAGS = ("\\Answered", "$Forwarded")    # the only flags a draft's Origin header may set
_BAD_HEADER_CHARS = re.compile(r"[\r\n\x00]")


class ComposeError(MailError, ValueError):
    """The draft cannot be sent as it is; ``field`` names the input to fix ("to", "subject"…)
    and ``bad`` lists invalid address entries for inline marking."""

    def __init__(self, message: str, field: str, bad: list[BadAddress] | None = None):
        super().__init__(message)
        self.field = field
        self.bad = bad or []


@dataclass(frozen=True)
class AttachedData:
    """An attachment held in memory (forwarded parts, a resumed draft's attachments)."""

    filename: str
    content_type: str
    data: bytes


@dataclass
class Draft:
    """What the user edits. Address fields are the text as typed."""

    from_: str = ""
    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    body: str = ""
    attachments: list[str] = field(default_factory=list)           # file paths
    parts: list[AttachedData] = field(default_factory=list)        # in-memory attachments
    in_reply_to: str = ""
    references: tuple[str, ...] = ()
    identity: str = ""                                             # account name
    # What the draft answers or forwards, so sending it (even recalled from Drafts later)
    # flags the original: the flag (\\Answered or $Forwarded), the original's Message-ID
    # and the folder it was in. Kept in X-tui-mail-Origin* headers of the saved draft, never
    # sent (build_message writes only the fields above).
    origin_flag: str = ""
    origin_id: str = ""
    origin_folder: str = ""


@dataclass(frozen=True)
class Composed:
    """A message ready for submission: its bytes and its SMTP envelope."""

    message: EmailMessage
    data: bytes
    sender: str                    # envelope MAIL FROM
    recipients: tuple[str, ...]    # envelope RCPT TO: To + Cc + Bcc, de-duplicated
    message_id: str
    smtputf8: bool

    @property
    def mail_options(self) -> list[str]:
        """ESMTP MAIL FROM parameters this message needs: SMTPUTF8 (RFC 6531) for UTF-8
        addresses, BODY=8BITMIME (RFC 6152) when any byte is not 7-bit (e.g. a forwarded
        8-bit message/rfc822, which MIME forbids re-encoding)."""
        opts = []
        if not self.data.isascii():
            opts.append("BODY=8BITMIME")
        if self.smtputf8:
            opts.append("SMTPUTF8")
        return opts


# --- checks ----------------------------------------------------------------------------

def check_header_value(field_name: str, value: str) -> None:
    """Refuse CR, LF or NUL in a user-supplied header value (header injection)."""
    m = _BAD_HEADER_CHARS.search(value or "")
    if m:
        what = {"\r": "a carriage return", "\n": "a line break", "\x00": "a NUL character"}[m.group(0)]
        raise ComposeError(f"{field_name.capitalize()} contains {what}; header values must be one line",
                           field_name)


def _addrs(field_name: str, text: str) -> list[Addr]:
    check_header_value(field_name, text)
    try:
        return parse_addresses(text)
    except AddressError as exc:
        raise ComposeError(f"{field_name.capitalize()}: {exc}", field_name, exc.bad) from exc


def _header_addresses(addrs: list[Addr], utf8: bool) -> str:
    """An address header value, encoded and folded by us.

    Not ``msg["To"] = [Address…]``: CPython's folder can encode the comma between two
    addresses into an encoded word (``=?utf-8?q?=2C?=``) when names are non-ASCII, which
    merges two recipients into one for every reader. Here each name is its own encoded
    word(s), lines stay under 78 characters so the policy never refolds them."""
    from email.header import Header

    entries = []
    for a in addrs:
        local = a.local
        domain = a.domain if utf8 else domain_to_ascii(a.domain)
        spec = f"{local}@{domain}"
        if not a.name:
            entries.append(spec)
        elif utf8 or a.name.isascii():
            entries.append(f"{quote_name(a.name)} <{spec}>")
        else:
            words = Header(a.name, "utf-8", maxlinelen=70, header_name="").encode(linesep="\n")
            entries.append(f"{words} <{spec}>")
    lines: list[str] = []
    for i, entry in enumerate(entries):
        piece = entry + ("," if i < len(entries) - 1 else "")
        last = lines[-1].rsplit("\n", 1)[-1] if lines else ""
        if lines and len(last) + 1 + len(piece.split("\n", 1)[0]) <= 70:
            lines[-1] += " " + piece
        else:
            lines.append(piece)
    return "\n ".join(lines)


def _policy(smtputf8: bool) -> policy.EmailPolicy:
    """SMTP (or SMTPUTF8) that never refolds a header we set raw: refolding address headers
    is where the stdlib breaks them (see ``_header_addresses``). Headers set as objects
    (Subject…) are still folded by the library."""
    return (policy.SMTPUTF8 if smtputf8 else policy.SMTP).clone(refold_source="none")


def _set_addresses(msg: EmailMessage, name: str, addrs: list[Addr], utf8: bool) -> None:
    msg.set_raw(name, _header_addresses(addrs, utf8))


def _msgids(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"<[^<>\s]+>", text or ""))


def trim_references(refs: tuple[str, ...], limit: int = MAX_REFERENCES) -> tuple[str, ...]:
    """Keep the thread root and the most recent ids (RFC 5322 §3.6.4 allows trimming)."""
    refs = tuple(dict.fromkeys(refs))
    if len(refs) <= limit:
        return refs
    return (refs[0],) + refs[-(limit - 1):]


# --- building --------------------------------------------------------------------------

def _attachment_part(msg: EmailMessage, filename: str, ctype: str, data: bytes) -> None:
    maintype, _, subtype = (ctype or "application/octet-stream").partition("/")
    if maintype == "message" and subtype == "rfc822":
        inner = BytesParser(policy=policy.default).parsebytes(data)
        msg.add_attachment(inner, disposition="attachment", filename=filename)
        return
    if maintype == "multipart" or not subtype:
        maintype, subtype = "application", "octet-stream"
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)


def guess_type(path: str) -> str:
    ctype, encoding = mimetypes.guess_type(path, strict=False)
    if ctype is None or encoding is not None:  # .tar.gz is a gzip file, not a tar
        return {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
                "xz": "application/x-xz"}.get(encoding or "", "application/octet-stream")
    return ctype


def _body(msg: EmailMessage, body: str) -> None:
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    if body and not body.endswith("\n"):
        body += "\n"
    if body.isascii() and all(len(line) <= 998 for line in body.split("\n")):
        msg.set_content(body, cte="7bit")
    else:
        msg.set_content(body, charset="utf-8", cte="quoted-printable")


def build_message(draft: Draft, now: datetime | None = None, message_id: str | None = None) -> Composed:
    """Validate the draft and make the message to submit. Raises ComposeError."""
    for name in ("subject", "in_reply_to", "identity"):
        check_header_value(name, getattr(draft, name))
    for ref in draft.references:
        check_header_value("references", ref)
    sender = _addrs("from", draft.from_)
    if len(sender) != 1:
        raise ComposeError("From must be exactly one address", "from")
    to, cc, bcc = _addrs("to", draft.to), _addrs("cc", draft.cc), _addrs("bcc", draft.bcc)
    if not (to or cc or bcc):
        raise ComposeError("No recipients: fill in To, Cc or Bcc", "to")
    for path in draft.attachments:
        if not os.path.isfile(path):
            raise ComposeError(f"Attachment not found: {path}", "attachments")
    everyone = sender + to + cc + bcc
    smtputf8 = any(a.needs_smtputf8 for a in everyone)
    pol = _policy(smtputf8)

    msg = EmailMessage(policy=pol)
    _set_addresses(msg, "From", sender, smtputf8)
    if to:
        _set_addresses(msg, "To", to, smtputf8)
    if cc:
        _set_addresses(msg, "Cc", cc, smtputf8)
    msg["Subject"] = draft.subject
    now = now or datetime.now(timezone.utc)
    msg["Date"] = format_datetime(now if now.tzinfo else now.replace(tzinfo=timezone.utc))
    message_id = message_id or make_msgid(domain=domain_to_ascii(sender[0].domain))
    msg["Message-ID"] = message_id
    irt = _msgids(draft.in_reply_to)
    if irt:
        msg["In-Reply-To"] = irt[0]
    refs = trim_references(tuple(r for ref in draft.references for r in _msgids(ref)))
    if refs:
        msg["References"] = " ".join(refs)
    msg["MIME-Version"] = "1.0"
    msg["User-Agent"] = USER_AGENT
    _body(msg, draft.body)
    for path in draft.attachments:
        with open(path, "rb") as fh:
            data = fh.read()
        _attachment_part(msg, os.path.basename(path), guess_type(path), data)
    for part in draft.parts:
        _attachment_part(msg, part.filename, part.content_type, part.data)

    envelope = dedup(to + cc + bcc)
    recipients = tuple(a.addr if smtputf8 else a.ascii_addr for a in envelope)
    sender_addr = sender[0].addr if smtputf8 else sender[0].ascii_addr
    return Composed(msg, msg.as_bytes(), sender_addr, recipients, message_id, smtputf8)


# --- subjects --------------------------------------------------------------------------

_REPLY_PREFIX = re.compile(r"^\s*(?:re|aw|sv|antw|vs|ref|rif|odp|res)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*", re.I)
_FWD_PREFIX = re.compile(r"^\s*(?:fwd?|tr|wg|rv|enc)\s*(?:\[\d+\])?\s*[:：]\s*", re.I)
_LIST_TAG = re.compile(r"^\s*\[[^\]]{1,40}\]\s*")
_FWD_SUFFIX = re.compile(r"\s*\((?:fwd|fw)\)\s*$", re.I)


def strip_reply_prefixes(subject: str) -> str:
    prev = None
    while prev != subject:
        prev = subject
        subject = _REPLY_PREFIX.sub("", subject)
    return subject


def base_subject(subject: str) -> str:
    """The subject without Re:/Fwd:/AW:/SV:… prefixes, leading list tags ("[list]") or a
    trailing "(fwd)", whitespace collapsed: what threading compares."""
    prev = None
    s = subject
    while prev != s:
        prev = s
        s = _LIST_TAG.sub("", s)
        s = _REPLY_PREFIX.sub("", s)
        s = _FWD_PREFIX.sub("", s)
        s = _FWD_SUFFIX.sub("", s)
    return " ".join(s.split())


def reply_subject(subject: str) -> str:
    """"Re: " once: ``Re: Re: AW: x`` → ``Re: x``."""
    return "Re: " + strip_reply_prefixes(subject).strip()


def forward_subject(subject: str) -> str:
    """"Fwd: " once: ``Fwd: FW: x`` → ``Fwd: x``."""
    s = subject
    prev = None
    while prev != s:
        prev = s
        s = _FWD_PREFIX.sub("", s)
    return "Fwd: " + s.strip()


# --- reply / forward -------------------------------------------------------------------

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _human_date(d: datetime | None) -> str:
    if d is None:
        return "an unknown date"
    return f"{_DAYS[d.weekday()]}, {d.day} {_MONTHS[d.month - 1]} {d.year} {d:%H:%M} {d:%z}".strip()


def attribution(view: MessageView) -> str:
    """The line above a quote: ``On Sat, 21 Nov 2026 06:00 +0000, Alice Crêpe wrote:``."""
    who = view.from_name or "someone"
    return f"On {_human_date(view.date)}, {who} wrote:"


def quote(text: str) -> str:
    """Quote for a reply: "> " before each line (">" before already quoted lines), without
    the sender's signature (from the "-- " line on) and trailing blank lines."""
    lines = text.replace("\r\n", "\n").split("\n")
    if "-- " in lines:
        lines = lines[: lines.index("-- ")]
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join((">" + line) if line.startswith(">") else ("> " + line if line else ">") for line in lines)


def _identity_addrs(identities) -> list[Addr]:
    out = []
    for ident in identities:
        if isinstance(ident, Addr):
            out.append(ident)
        else:
            good, _ = check_addresses(ident)
            out.extend(good)
    return out


def _choose_from(view: MessageView, mine: list[Addr]) -> str:
    keys = {a.key for a in view.to + view.cc + view.bcc}
    for a in mine:
        if a.key in keys:
            return a.header()
    return mine[0].header() if mine else ""


def reply(view: MessageView, identities=(), reply_all: bool = False, from_: str | None = None,
          identity: str = "", signature: str = "") -> Draft:
    """A reply draft. ``identities``: the user's own addresses (strings or Addr); the first
    one the original was sent to becomes From unless ``from_`` is given.

    To is Reply-To when present, else From; replying to one's own message goes to its To.
    Reply-all adds the original To and Cc, minus the user's own addresses, de-duplicated."""
    mine = _identity_addrs(identities)
    mine_keys = {a.key for a in mine}
    target = view.reply_to or view.from_
    own_message = bool(view.from_) and all(a.key in mine_keys for a in view.from_)
    if own_message and not view.reply_to:
        target = view.to or view.from_
    if reply_all:
        to = dedup(target + view.to, exclude=mine)
        cc = dedup(view.cc, exclude=mine + to)
        if not to and not cc:
            to = list(target)
    else:
        to = dedup(target, exclude=[] if own_message else mine) or list(target)
        cc = []
    refs = view.references or ((view.in_reply_to,) if view.in_reply_to else ())
    if view.message_id:
        refs = refs + (view.message_id,)
    body = "\n\n" + attribution(view) + "\n" + quote(view.text) + "\n"
    if signature:
        body += "\n-- \n" + signature.rstrip("\n") + "\n"
    return Draft(
        from_=from_ if from_ is not None else _choose_from(view, mine),
        to=format_for_input(to), cc=format_for_input(cc),
        subject=reply_subject(view.subject),
        body=body,
        in_reply_to=view.message_id,
        references=trim_references(refs),
        identity=identity,
    )


def reply_all(view: MessageView, identities=(), **kw) -> Draft:
    return reply(view, identities, reply_all=True, **kw)


def _forward_header_block(view: MessageView) -> str:
    lines = ["---------- Forwarded message ----------",
             f"From: {', '.join(a.display() for a in view.from_)}",
             f"Date: {_human_date(view.date) if view.date else ''}",
             f"Subject: {view.subject}"]
    if view.to:
        lines.append(f"To: {', '.join(a.display() for a in view.to)}")
    if view.cc:
        lines.append(f"Cc: {', '.join(a.display() for a in view.cc)}")
    return "\n".join(lines)


def forward(view: MessageView, from_: str = "", as_attachment: bool = False,
            identity: str = "", signature: str = "") -> Draft:
    """A forward draft: inline (the original text under a header block, with its
    attachments carried over) or as one message/rfc822 attachment."""
    sig = ("\n-- \n" + signature.rstrip("\n") + "\n") if signature else ""
    if as_attachment:
        name = (view.subject or "message").strip() + ".eml"
        return Draft(from_=from_, subject=forward_subject(view.subject), body="\n" + sig,
                     parts=[AttachedData(name, "message/rfc822", view.raw)], identity=identity)
    parts = []
    for att in view.attachments:
        try:
            parts.append(AttachedData(att.filename, att.content_type, view.part_bytes(att.part_id)))
        except KeyError:
            continue
    body = "\n\n" + _forward_header_block(view) + "\n\n" + view.text.rstrip("\n") + "\n" + sig
    return Draft(from_=from_, subject=forward_subject(view.subject), body=body, parts=parts,
                 identity=identity)


# --- drafts as messages ----------------------------------------------------------------

def draft_to_bytes(draft: Draft, now: datetime | None = None) -> bytes:
    """Store a draft as an RFC 5322 message (for the Drafts folder). Incomplete drafts are
    fine: address fields that do not parse are kept verbatim in X-tui-mail-* headers; the
    identity is kept in X-tui-mail-Identity. Raises ComposeError only for CR/LF in headers."""
    for name in ("from_", "to", "cc", "bcc", "subject", "in_reply_to", "identity", "origin_flag",
                 "origin_id", "origin_folder"):
        check_header_value(name.rstrip("_"), getattr(draft, name))
    for ref in draft.references:
        check_header_value("references", ref)
    parsed = {}
    for name in ("from_", "to", "cc", "bcc"):
        good, bad = check_addresses(getattr(draft, name))
        parsed[name] = None if bad else good
    smtputf8 = any(a.needs_smtputf8 for v in parsed.values() if v for a in v) or not all(
        getattr(draft, n).isascii() for n in ("from_", "to", "cc", "bcc"))
    msg = EmailMessage(policy=_policy(smtputf8))
    for name, header in (("from_", "From"), ("to", "To"), ("cc", "Cc"), ("bcc", "Bcc")):
        text = getattr(draft, name)
        if not text.strip():
            continue
        addrs = parsed[name]
        if addrs is None:
            msg[_DRAFT_PREFIX + header] = text
        else:
            _set_addresses(msg, header, addrs, smtputf8)
    msg["Subject"] = draft.subject
    now = now or datetime.now(timezone.utc)
    msg["Date"] = format_datetime(now if now.tzinfo else now.replace(tzinfo=timezone.utc))
    domain = parsed["from_"][0].domain if parsed["from_"] else "localhost"
    msg["Message-ID"] = make_msgid(domain=domain_to_ascii(domain) if domain.isascii() or not smtputf8 else domain)
    if draft.in_reply_to:
        msg["In-Reply-To"] = draft.in_reply_to
    if draft.references:
        msg["References"] = " ".join(draft.references)
    if draft.identity:
        msg[_DRAFT_PREFIX + "Identity"] = draft.identity
    if draft.origin_flag and draft.origin_id:
        msg[_DRAFT_PREFIX + "Origin"] = f"{draft.origin_flag} {draft.origin_id}"
        msg[_DRAFT_PREFIX + "Origin-Folder"] = draft.origin_folder
    msg["MIME-Version"] = "1.0"
    msg["User-Agent"] = USER_AGENT
    _body(msg, draft.body)
    for path in draft.attachments:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            msg[_DRAFT_PREFIX + "Missing-Attachment"] = os.path.basename(path)
            continue
        _attachment_part(msg, os.path.basename(path), guess_type(path), data)
    for part in draft.parts:
        _attachment_part(msg, part.filename, part.content_type, part.data)
    return msg.as_bytes()


def draft_from_bytes(raw: bytes) -> Draft:
    """Resume a draft saved by ``draft_to_bytes`` (or any message, e.g. "edit as new"):
    attachments come back as in-memory parts."""
    view = parse_message(raw)
    fields = {}
    for name, header in (("from_", "From"), ("to", "To"), ("cc", "Cc"), ("bcc", "Bcc")):
        verbatim = view.header(_DRAFT_PREFIX + header)
        if verbatim:
            fields[name] = verbatim
        else:
            fields[name] = format_for_input(getattr(view, name))
    parts = [AttachedData(a.filename, a.content_type, view.part_bytes(a.part_id))
             for a in view.attachments]
    body = view.text
    flag, _, origin_id = view.header(_DRAFT_PREFIX + "Origin").strip().partition(" ")
    if flag not in ORIGIN_FLAGS or not origin_id.strip():   # any other flag: a draft cannot ask for it
        flag, origin_id = "", ""
    return Draft(subject=view.subject, body=body, parts=parts,
                 in_reply_to=view.in_reply_to, references=view.references,
                 identity=view.header(_DRAFT_PREFIX + "Identity"),
                 origin_flag=flag, origin_id=origin_id.strip(),
                 origin_folder=view.header(_DRAFT_PREFIX + "Origin-Folder").strip() if flag else "",
                 **fields)


__all__ = [
    "AttachedData", "ComposeError", "Composed", "Draft", "attribution", "base_subject",
    "build_message", "check_header_value", "draft_from_bytes", "draft_to_bytes", "forward",
    "forward_subject", "guess_type", "quote", "reply", "reply_all", "reply_subject",
    "strip_reply_prefixes", "trim_references",
]
