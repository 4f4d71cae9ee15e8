"""RFC 5322/MIME bytes → a ``MessageView``: what the reader pane shows.

Decoded headers (RFC 2047/2231, any charset; bad charsets fall back instead of failing), the
best text to show (text/plain preferred, else HTML converted to readable text by inscriptis
with links kept as numbered references), the links found, the attachments with IMAP section
numbers ("2", "1.3"), and ``problems``: what could not be shown and why.

``parse_message`` never raises on a malformed message: the ``email`` package is lenient and
records defects, and every step that could still fail (header classes, charsets, base64,
the HTML converter) is guarded so the rest of the message is still shown.

``summary_from_headers`` is the fast path for stores that only have the header block: it
returns exactly the fields of ``tui_mail.store.base.MessageSummary`` that headers determine.
"""

from __future__ import annotations

import mimetypes
import os
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path

from tui_mail.mail.addresses import Addr, from_header_value
from tui_mail.mail.charsets import decode_bytes, decode_words, fix_surrogates
from tui_mail.mail.format import sanitize
from tui_mail.mail.mime_limits import CUT_HEADER, MAX_DEPTH, MAX_TEXT_CHARS, bound_raw, cut_size

_URL = re.compile(r"""(?:https?://|ftp://|mailto:|www\.)[^\s<>"'()\[\]{}]+[^\s<>"'()\[\]{}.,;:!?]""", re.I)
_MSGID = re.compile(r"<[^<>\s]+>")
# Python's email folder sometimes encodes the comma between two addresses as an encoded word
# of its own; read it as the separator it was meant to be.
_ENCODED_COMMA = re.compile(r"=\?[^?\s]+\?(?:[Qq]\?=2[Cc]|[Bb]\?LA==)\?=")


@dataclass(frozen=True)
class Attachment:
    """A part the user can open or save. ``part_id`` is its IMAP section number."""

    part_id: str
    filename: str
    content_type: str
    size: int                # decoded bytes (or the Content-Disposition size= when omitted)
    inline: bool             # Content-Disposition inline / an embedded resource (cid:)
    content_id: str = ""


@dataclass
class MessageView:
    raw: bytes
    subject: str = ""
    from_: list[Addr] = field(default_factory=list)
    to: list[Addr] = field(default_factory=list)
    cc: list[Addr] = field(default_factory=list)
    bcc: list[Addr] = field(default_factory=list)
    reply_to: list[Addr] = field(default_factory=list)
    date: datetime | None = None
    message_id: str = ""
    in_reply_to: str = ""
    references: tuple[str, ...] = ()
    headers: list[tuple[str, str]] = field(default_factory=list)   # every header, decoded
    text: str = ""
    text_source: str = "none"        # "plain" | "html" | "none"
    links: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    parts_left_out: int = 0          # parts beyond mime_limits.MAX_PARTS, not parsed
    _message: Message | None = field(default=None, repr=False, compare=False)
    _parts: dict[str, Message] = field(default_factory=dict, repr=False, compare=False)
    _complete: bool = field(default=True, repr=False, compare=False)   # parsed from all of raw

    @property
    def from_name(self) -> str:
        return (self.from_[0].name or self.from_[0].addr) if self.from_ else ""

    @property
    def from_addr(self) -> str:
        return self.from_[0].addr if self.from_ else ""

    def header(self, name: str) -> str:
        """First decoded value of a header, or ""."""
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return ""

    @property
    def message(self) -> Message:
        """The parsed ``email`` message (policy.default)."""
        assert self._message is not None
        return self._message

    def part_bytes(self, part_id: str) -> bytes:
        """A part's decoded payload by IMAP section number; KeyError if there is none.
        A message/rfc822 part is returned as the whole embedded message."""
        if not self._complete:
            # Display parsed a bounded copy (mime_limits); saving needs every byte: parse all
            # of the message now, once, on the user's request.
            full = BytesParser(policy=policy.compat32).parsebytes(self.raw)   # payloads only: fast
            self._parts = dict(_number(full))
            self._complete = True
        part = self._parts[part_id]
        return _payload_bytes(part)

    def attachment(self, part_id: str) -> Attachment:
        for a in self.attachments:
            if a.part_id == part_id:
                return a
        raise KeyError(part_id)


# --- headers ---------------------------------------------------------------------------

def _decoded_header(msg: Message, name: str, problems: list[str] | None = None) -> str:
    """First value of a header, decoded, whatever the damage."""
    raw = None
    for k, v in msg.raw_items():
        if k.lower() == name.lower():
            raw = v
            break
    if raw is None:
        return ""
    text, probs = decode_words(_unfold(str(raw)))
    if problems is not None:
        problems.extend(f"{name}: {p}" for p in probs)
    return text.strip()


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n([ \t])", r"\1", value).replace("\r", "").replace("\n", "")


def _addresses(msg: Message, name: str, problems: list[str]) -> list[Addr]:
    """Addresses of a header. Our own decoding first: the stdlib's address parser inserts a
    space between adjacent encoded words in a display name and gives up on unknown charsets;
    its header classes are the fallback for syntax ``getaddresses`` cannot read."""
    raw_values = [_ENCODED_COMMA.sub(",", _unfold(str(v)))
                  for k, v in msg.raw_items() if k.lower() == name.lower()]
    if not raw_values:
        return []
    out: list[Addr] = []
    for raw in raw_values:
        for a in from_header_value(fix_surrogates(raw)):
            if not _plausible(a.addr):
                continue
            decoded, probs = decode_words(a.name)
            problems.extend(f"{name}: {p}" for p in probs)
            out.append(Addr(" ".join(decoded.split()), a.addr))
    if out:
        return out
    try:
        for value in msg.get_all(name, failobj=[]):
            for a in getattr(value, "addresses", ()):
                if _plausible(a.addr_spec):
                    out.append(Addr(fix_surrogates(a.display_name or ""), fix_surrogates(a.addr_spec)))
    except Exception:  # noqa: BLE001 - header classes have raised on odd input before
        pass
    return out


def _plausible(spec: str | None) -> bool:
    """Worth showing as an address (received mail is not validated, only sanity-checked)."""
    return bool(spec) and "@" in spec[1:] and not any(c in spec for c in "<>\r\n")


def _date(value: str, problems: list[str]) -> datetime | None:
    if not value:
        return None
    try:
        d = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        problems.append(f"Date: cannot read {value!r}")
        return None
    if d is None:  # pragma: no cover - older Pythons
        problems.append(f"Date: cannot read {value!r}")
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d


def _msgids(value: str) -> tuple[str, ...]:
    return tuple(_MSGID.findall(value))


def _all_headers(msg: Message) -> list[tuple[str, str]]:
    out = []
    for k, v in msg.raw_items():
        if k == CUT_HEADER:          # added by mime_limits.bound_raw, not the sender's
            continue
        text, _ = decode_words(_unfold(str(v)))
        out.append((k, text.strip()))
    return out


# --- parts -----------------------------------------------------------------------------

def _payload_bytes(part: Message) -> bytes:
    if part.get_content_maintype() == "message" and part.is_multipart():
        inner = part.get_payload(0)
        try:
            return inner.as_bytes(policy=policy.SMTP.clone(cte_type="8bit"))
        except Exception:  # noqa: BLE001
            return bytes(inner)
    try:
        data = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 - a broken CTE must not stop the reader
        data = None
    if data is None:
        payload = part.get_payload()
        if isinstance(payload, str):
            return payload.encode("utf-8", "surrogateescape")
        return b""
    return data


def _children(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    return []


def _number(msg: Message) -> list[tuple[str, Message]]:
    """Every part with its IMAP section number (RFC 3501 §6.4.5), depth first."""
    out: list[tuple[str, Message]] = []

    def walk(part: Message, prefix: str) -> None:
        if prefix.count(".") >= MAX_DEPTH:       # deeper parts: not numbered, not shown
            return
        kids = _children(part)
        if part.get_content_maintype() == "multipart":
            for i, kid in enumerate(kids, 1):
                pid = f"{prefix}.{i}" if prefix else str(i)
                out.append((pid, kid))
                walk(kid, pid)
        elif part.get_content_type() == "message/rfc822" and kids:
            inner = kids[0]
            if inner.get_content_maintype() == "multipart":
                walk(inner, prefix)
            else:
                out.append((f"{prefix}.1", inner))

    if msg.get_content_maintype() == "multipart":
        walk(msg, "")
    else:
        out.append(("1", msg))
        if msg.get_content_type() == "message/rfc822":
            walk(msg, "1")
    return out


def _filename(part: Message) -> str:
    name = None
    try:
        name = part.get_filename()
    except Exception:  # noqa: BLE001
        name = None
    if not name:
        try:
            name = part.get_param("name")
            if isinstance(name, tuple):
                from email.utils import collapse_rfc2231_value

                name = collapse_rfc2231_value(name)
        except Exception:  # noqa: BLE001
            name = None
    if not name:
        return ""
    text, _ = decode_words(fix_surrogates(str(name)))
    return text.strip()


def _disposition(part: Message) -> str:
    try:
        return (part.get_content_disposition() or "").lower()
    except Exception:  # noqa: BLE001
        return ""


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:  # noqa: BLE001
        return "application/octet-stream"


class _Collector:
    """Walks the MIME tree once, choosing text to show and listing attachments."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        self.texts: list[tuple[str, str]] = []   # (source, text)
        self.attachments: list[Attachment] = []
        self.shown: set[int] = set()             # id() of parts whose text is shown
        self.links: list[str] = []               # numbered link targets of the HTML shown
        self.ids: dict[int, str] = {}

    def text_of(self, part: Message, pid: str) -> str:
        data = _payload_bytes(part)
        original = cut_size(part)
        if original is not None:
            self.problems.append(f"part {pid} is {_mb(original)}; only its first {_mb(len(data))} "
                                 "is shown")
        for d in getattr(part, "defects", ()):
            self.problems.append(f"part {pid}: {_defect_text(d)}")
        try:
            charset = part.get_content_charset()
        except Exception:  # noqa: BLE001
            charset = None
        text, problem = decode_bytes(data, charset)
        if problem:
            self.problems.append(f"part {pid}: {problem}")
        return text.replace("\r\n", "\n").replace("\r", "\n")

    depth = 0

    def visit(self, part: Message, inline_ok: bool = True) -> None:
        """Visit one part; parts nested deeper than ``MAX_DEPTH`` are skipped and reported."""
        if self.depth >= MAX_DEPTH:
            self.problems.append(f"parts nested deeper than {MAX_DEPTH} levels are not shown")
            return
        self.depth += 1
        try:
            self._visit(part, inline_ok)
        finally:
            self.depth -= 1

    def _visit(self, part: Message, inline_ok: bool = True) -> None:
        ctype = _content_type(part)
        pid = self.ids.get(id(part), "1")
        maintype = ctype.split("/")[0]
        disp = _disposition(part)
        is_attachment = disp == "attachment" or (disp != "inline" and bool(_filename(part)) and maintype != "text")
        if maintype == "multipart":
            kids = _children(part)
            if not kids:
                self.problems.append(f"part {pid}: multipart without parts (missing boundary?)")
                body = part.get_payload()
                if isinstance(body, str) and body.strip():
                    self.texts.append(("plain", body))
                return
            sub = ctype.split("/")[1]
            if sub == "alternative":
                self.visit_alternative(kids, inline_ok)
            elif sub == "related":
                root = self.related_root(part, kids)
                self.visit(root, inline_ok)
                for kid in kids:
                    if kid is not root:
                        self.add_attachment(kid, force_inline=True)
            elif sub == "signed":
                self.visit(kids[0], inline_ok)
                for kid in kids[1:]:
                    self.add_attachment(kid)
            elif sub == "encrypted":
                self.problems.append(f"part {pid}: encrypted message; cannot show its text")
                for kid in kids:
                    self.add_attachment(kid)
            else:  # mixed, digest, report, unknown → mixed
                for kid in kids:
                    self.visit(kid, inline_ok)
            return
        if ctype in ("text/plain", "text/html") and not is_attachment and inline_ok:
            text = self.text_of(part, pid)
            if ctype == "text/html":
                text, links = html_to_text_and_links(text, self.problems)
                self.links.extend(links)
                self.texts.append(("html", text))
            else:
                self.texts.append(("plain", text))
            self.shown.add(id(part))
            if _filename(part):  # a named text file shown inline (Apple Mail): still saveable
                self.add_attachment(part, force_inline=True)
            return
        if ctype == "text/rfc822-headers" and not is_attachment and inline_ok:
            self.texts.append(("plain", self.text_of(part, pid)))
            return
        self.add_attachment(part)

    def visit_alternative(self, kids: list[Message], inline_ok: bool) -> None:
        def find(ctype: str) -> Message | None:
            for kid in kids:
                if _content_type(kid) == ctype:
                    return kid
                if _content_type(kid).startswith("multipart/"):
                    # e.g. alternative(text/plain, related(text/html, image))
                    for sub in _children(kid):
                        if _content_type(sub) == ctype:
                            return kid
            return None

        chosen = None
        plain = find("text/plain")
        if plain is not None and (_content_type(plain) != "text/plain" or _decode_part(plain).strip()):
            chosen = plain
        if chosen is None:
            chosen = find("text/html") or plain
        if chosen is None:
            chosen = kids[-1]  # RFC 2046: the last alternative is the richest
        # Only the chosen alternative is shown; the others are the same content.
        self.visit(chosen, inline_ok)

    def related_root(self, part: Message, kids: list[Message]) -> Message:
        start = part.get_param("start")
        if isinstance(start, str):
            for kid in kids:
                if (kid.get("Content-ID") or "").strip() == start.strip():
                    return kid
        return kids[0]

    def add_attachment(self, part: Message, force_inline: bool = False) -> None:
        pid = self.ids.get(id(part), "1")
        ctype = _content_type(part)
        name = _filename(part)
        if not name:
            if ctype == "message/rfc822":
                inner = _children(part)
                subject = _decoded_header(inner[0], "Subject") if inner else ""
                name = (subject or "message") + ".eml"
            else:
                ext = mimetypes.guess_extension(ctype) or ".bin"
                name = f"part-{pid}{ext}"
        original = cut_size(part)
        if original is not None:      # shortened for display: estimate the decoded size
            base64 = str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64"
            size = original * 3 // 4 if base64 else original
        else:
            size = len(_payload_bytes(part))
        if not size:
            try:
                size = int(part.get_param("size", header="content-disposition") or 0)
            except (TypeError, ValueError):
                size = 0
        for d in getattr(part, "defects", ()):
            self.problems.append(f"part {pid}: {_defect_text(d)}")
        cid = (str(part.get("Content-ID") or "")).strip()
        inline = force_inline or _disposition(part) == "inline"
        self.attachments.append(Attachment(pid, name, ctype, size, inline, cid))


def _defect_text(defect: Exception) -> str:
    name = type(defect).__name__
    words = re.sub(r"(?<!^)(?=[A-Z])", " ", name.replace("Defect", "")).lower().strip()
    return words or "malformed part"


# --- HTML ------------------------------------------------------------------------------

class _LinkFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            for k, v in attrs:
                if k == "href" and v and not v.startswith("#"):
                    self.links.append(v.strip())


def html_links(html: str) -> list[str]:
    finder = _LinkFinder()
    try:
        finder.feed(html)
        finder.close()
    except Exception:  # noqa: BLE001 - html.parser is lenient; belt and braces
        pass
    return finder.links


HTML_LIMIT = 4 * 1024 * 1024   # inscriptis converts ~1 MB in 0.4 s (bench/html_parse.py); beyond this, cut
_SAFE_SCHEMES = ("http://", "https://", "mailto:", "ftp://")
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _link_target(href: str | None) -> str:
    """A link worth listing: absolute http(s)/ftp/mailto only (no javascript:, data:, anchors)."""
    href = (href or "").strip()
    return href if href.lower().startswith(_SAFE_SCHEMES) and not any(c.isspace() for c in href) else ""


def html_to_text_and_links(html: str, problems: list[str] | None = None) -> tuple[str, list[str]]:
    """Readable text from HTML by inscriptis (Apache-2.0; it lays out tables as columns):
    each link is followed by its number, ``[1]``, and the numbered targets are listed at the
    end so they can be read and opened (the same target keeps one number); ``<blockquote>``
    lines are marked ``> `` (nested: ``> > ``); images show their alt text; scripts and styles
    are dropped. Returns (text, links) where ``links[n-1]`` is the target of ``[n]``.
    Very large HTML (over ``HTML_LIMIT``) is cut, and ``problems`` says so."""
    from inscriptis.model.config import ParserConfig
    from inscriptis.html_engine import Inscriptis
    from inscriptis.model.tag import CustomHtmlTagHandlerMapping
    from lxml.html import document_fromstring

    if len(html) > HTML_LIMIT:
        cut = html.rfind("<", 0, HTML_LIMIT)
        html = html[: cut if cut > HTML_LIMIT // 2 else HTML_LIMIT]
        if problems is not None:
            problems.append(f"HTML part is large; showing its first {HTML_LIMIT // (1024 * 1024)} MB as text")
    html = _XML_BAD.sub("", html).strip()
    if html.startswith("<?xml"):
        html = re.sub(r"^<\?xml[^>]*>", "", html, count=1)
    links: dict[str, int] = {}
    open_links: list[str] = []

    def a_start(state, attrs) -> None:
        open_links.append(_link_target(attrs.get("href")))

    def a_end(state) -> None:
        target = open_links.pop() if open_links else ""
        if target:
            n = links.setdefault(target, len(links) + 1)
            state.tags[-1].write(f"[{n}]")

    config = ParserConfig(
        display_images=True, deduplicate_captions=True, annotation_rules={"blockquote": ["quote"]},
        custom_html_tag_handler_mapping=CustomHtmlTagHandlerMapping({"a": a_start}, {"a": a_end}))
    try:
        if not html:
            return "\n", []
        tree = document_fromstring(html)
        engine = Inscriptis(tree, config)
        text = engine.get_text()
        quotes = [(a.start, a.end) for a in engine.get_annotations() if a.metadata == "quote"]
    except Exception as exc:  # noqa: BLE001 - third-party parser on hostile input (incl. RecursionError)
        if problems is not None:
            problems.append(f"HTML could not be converted ({type(exc).__name__}); tags stripped")
        import html as html_mod

        text = re.sub(r"<[^>]*>", "", re.sub(r"(?is)<(script|style)\b.*?</\1>", "", html))
        text, quotes, links = html_mod.unescape(text), [], {}
        links = {m: i for i, m in enumerate(dict.fromkeys(_link_target(u) for u in html_links(html)), 1) if m}
    if quotes:
        text = _mark_quotes(text, quotes)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"
    if links:
        text += "\n" + "".join(f"[{n}] {url}\n" for url, n in links.items())
    return text, list(links)


def _mark_quotes(text: str, spans: list[tuple[int, int]]) -> str:
    """Prefix each line inside a blockquote span with one ``> `` per level of nesting."""
    out, pos = [], 0
    for line in text.split("\n"):
        depth = sum(1 for s, e in spans if s < pos + len(line) and pos < e) if line.strip() else \
            sum(1 for s, e in spans if s < pos < e)
        out.append(("> " * depth + line).rstrip() if depth else line)
        pos += len(line) + 1
    return "\n".join(out)


def html_to_text(html: str, problems: list[str] | None = None, width: int = 78) -> str:
    """Readable text from HTML (see ``html_to_text_and_links``); ``width`` is kept for
    callers: the reader pane wraps lines itself."""
    return html_to_text_and_links(html, problems)[0]


def text_links(text: str) -> list[str]:
    return [m.group(0) for m in _URL.finditer(text)]


# --- the view --------------------------------------------------------------------------

def parse_message(raw: bytes) -> MessageView:
    """Parse RFC 5322 bytes into a MessageView. Never raises for malformed input."""
    if isinstance(raw, str):  # tolerate callers holding text
        raw = raw.encode("utf-8", "surrogateescape")
    problems: list[str] = []
    bounded = bound_raw(raw)          # at most MAX_PARTS parts of at most MAX_PART_BYTES each
    try:
        msg = BytesParser(policy=policy.default).parsebytes(bounded.raw)
    except Exception as exc:  # noqa: BLE001 - should not happen; show the raw text then
        view = MessageView(raw=raw, problems=[f"message could not be parsed ({type(exc).__name__})"])
        view.text, _ = decode_bytes(raw, None)
        view.text_source = "plain"
        return view
    msg = _repair_boundary(msg, bounded.raw, problems)
    view = MessageView(raw=raw, _message=msg, parts_left_out=bounded.parts_left_out,
                       _complete=bounded.complete)
    view.headers = _all_headers(msg)
    view.subject = _decoded_header(msg, "Subject", problems)
    for attr, name in (("from_", "From"), ("to", "To"), ("cc", "Cc"), ("bcc", "Bcc"), ("reply_to", "Reply-To")):
        try:
            setattr(view, attr, _addresses(msg, name, problems))
        except Exception:  # noqa: BLE001
            problems.append(f"{name}: cannot read addresses")
    view.date = _date(_decoded_header(msg, "Date"), problems)
    ids = _msgids(_decoded_header(msg, "Message-ID"))
    view.message_id = ids[0] if ids else ""
    irt = _msgids(_decoded_header(msg, "In-Reply-To"))
    view.in_reply_to = irt[0] if irt else ""
    view.references = _msgids(_decoded_header(msg, "References"))

    try:
        numbered = _number(msg)
    except RecursionError:
        numbered = [("1", msg)]
        problems.append("MIME structure nested too deeply")
    view._parts = dict(numbered)
    collector = _Collector(problems)
    collector.ids = {id(p): pid for pid, p in numbered}
    for d in getattr(msg, "defects", ()):
        if not (bounded.parts_left_out and type(d).__name__ == "CloseBoundaryNotFoundDefect"):
            problems.append(f"message: {_defect_text(d)}")
    try:
        collector.visit(msg)
    except RecursionError:
        problems.append("MIME structure nested too deeply")
    except Exception as exc:  # noqa: BLE001 - keep what was collected so far
        problems.append(f"part of the message could not be read ({type(exc).__name__})")

    texts = [(src, t) for src, t in collector.texts if t.strip()]
    if texts:
        text = "\n\n".join(t.rstrip("\n") for _, t in texts) + "\n"
        if len(text) > MAX_TEXT_CHARS:
            cut = text.rfind("\n", 0, MAX_TEXT_CHARS) + 1 or MAX_TEXT_CHARS
            problems.append(f"… {len(text) - cut:,} more characters of text not shown")
            text = text[:cut]
        view.text = sanitize(text.replace("\r\n", "\n"), keep_newlines=True)
        view.text_source = "plain" if all(s == "plain" for s, _ in texts) else "html"
    view.attachments = collector.attachments
    if bounded.parts_left_out:
        problems.append(f"… {bounded.parts_left_out:,} more parts not shown (listing stops at "
                        f"{len(numbered):,}; saving reads the whole message)")
    links = collector.links
    if not links:
        links = text_links(view.text)
    view.links = list(dict.fromkeys(links))
    view.problems = list(dict.fromkeys(problems))
    return view


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _repair_boundary(msg: Message, raw: bytes, problems: list[str]) -> Message:
    """A multipart whose Content-Type lost its boundary parameter: if the body starts with
    a ``--something`` line, use that as the boundary and parse again."""
    try:
        if msg.get_content_maintype() != "multipart" or msg.get_boundary() or msg.is_multipart():
            return msg
    except Exception:  # noqa: BLE001
        return msg
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    m = re.search(rb"^--([ -~]{1,70}?)[ \t]*\r?$", body, re.M)
    if not m or not sep:
        return msg
    boundary = m.group(1).decode("ascii")
    if boundary.endswith("--"):
        return msg
    try:
        fixed = BytesParser(policy=policy.default).parsebytes(raw)
        fixed.set_param("boundary", boundary)
        header_end = len(head) + len(sep)
        new_head = b"".join(
            f"{k}: {v}\r\n".encode("utf-8", "surrogateescape") for k, v in
            ((k, _unfold(str(v))) for k, v in fixed.raw_items())) + b"\r\n"
        repaired = BytesParser(policy=policy.default).parsebytes(new_head + raw[header_end:])
    except Exception:  # noqa: BLE001
        return msg
    if not repaired.is_multipart():
        return msg
    problems.append(f"multipart without a boundary parameter; guessed {boundary!r}")
    return repaired


def _decode_part(part: Message) -> str:
    try:
        charset = part.get_content_charset()
    except Exception:  # noqa: BLE001
        charset = None
    return decode_bytes(_payload_bytes(part), charset)[0]


# --- headers only ----------------------------------------------------------------------

def summary_from_headers(header_bytes: bytes) -> dict:
    """The MessageSummary fields a header block determines: date, from_name, from_addr, to,
    cc, subject, message_id, in_reply_to, references, has_attachment (a guess from the
    top-level Content-Type). Fast: no body, no header classes."""
    try:
        msg = BytesHeaderParser(policy=policy.compat32).parsebytes(header_bytes)
    except Exception:  # noqa: BLE001
        msg = Message()

    first: dict[str, str] = {}
    for k, v in msg.raw_items():  # raw: 8-bit bytes kept as surrogates, not replaced
        first.setdefault(k.lower(), v if isinstance(v, str) else str(v))

    def get(name: str) -> str:
        return _unfold(fix_surrogates(first.get(name.lower(), "")))

    subject, _ = decode_words(get("Subject"))
    froms = _decoded_addrs(get("From"))
    to = _decoded_addrs(get("To"))
    cc = _decoded_addrs(get("Cc"))
    date = _date(get("Date"), [])
    ids = _msgids(get("Message-ID"))
    irt = _msgids(get("In-Reply-To"))
    ctype = get("Content-Type").lower()
    has_attachment = ctype.startswith("multipart/mixed") or (
        bool(ctype) and not ctype.startswith(("text/", "multipart/alternative", "multipart/related")))
    return {
        "date": date,
        "from_name": (froms[0].name or froms[0].addr) if froms else "",
        "from_addr": froms[0].addr if froms else "",
        "to": ", ".join(a.display() for a in to),
        "cc": ", ".join(a.display() for a in cc),
        "subject": subject.strip(),
        "message_id": ids[0] if ids else "",
        "in_reply_to": irt[0] if irt else "",
        "references": _msgids(get("References")),
        "has_attachment": has_attachment,
    }


def _decoded_addrs(value: str) -> list[Addr]:
    out = []
    for a in from_header_value(value):
        if _plausible(a.addr):
            out.append(Addr(decode_words(a.name)[0], a.addr))
    return out


# --- saving ----------------------------------------------------------------------------

_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def safe_filename(name: str, default: str = "attachment", max_bytes: int = 200) -> str:
    """A file name that cannot escape the target directory or confuse a shell/terminal:
    last path component only, no control characters, no leading dots or dashes, not a
    reserved device name, at most ``max_bytes`` UTF-8 bytes (keeping the extension)."""
    name = unicodedata.normalize("NFC", name or "")
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = re.sub(r'[<>:"|?*]', "_", name)
    name = name.strip().lstrip(".-").rstrip(". ")
    stem, ext = os.path.splitext(name)
    if stem.lower() in _RESERVED:
        name = f"_{name}"
    if not name:
        name = default
    if len(name.encode("utf-8")) > max_bytes:
        stem, ext = os.path.splitext(name)
        if len(ext.encode("utf-8")) > 20:
            stem, ext = name, ""
        budget = max_bytes - len(ext.encode("utf-8"))
        stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore")
        name = stem + ext
    return name


def save_bytes(data: bytes, directory: str | os.PathLike, filename: str) -> Path:
    """Write ``data`` under ``directory`` with a sanitised ``filename``; never overwrites:
    an existing name becomes "name (1).ext", "name (2).ext"… Returns the path written."""
    directory = Path(directory)
    name = safe_filename(filename)
    stem, ext = os.path.splitext(name)
    for n in range(0, 10000):
        candidate = directory / (name if n == 0 else f"{stem} ({n}){ext}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        except BaseException:
            candidate.unlink(missing_ok=True)
            raise
        return candidate
    raise FileExistsError(f"too many files named like {name!r} in {directory}")


def save_attachment(view: MessageView, part_id: str, directory: str | os.PathLike,
                    filename: str | None = None) -> Path:
    """Save one attachment of a parsed message into ``directory`` (see ``save_bytes``)."""
    att = view.attachment(part_id)
    return save_bytes(view.part_bytes(part_id), directory, filename or att.filename)
