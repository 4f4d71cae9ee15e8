"""``mailto:`` URLs (RFC 6068) → the fields of a new message, for ``tui-mail mailto:…`` and
the desktop's mailto handler.

    mailto:bob@example.org,carol@example.org?cc=dave@example.org&subject=Hi%20there&body=…

Pure: no I/O. The URL comes from a web page, so it is hostile: only ``to``, ``cc``, ``bcc``,
``subject``, ``body``, ``in-reply-to`` and ``references`` are taken (RFC 6068 §3 lets a
client ignore any header; ``from``, ``attach``/``attachment`` and the like are dropped and
listed in ``ignored`` so the composer can say so: an "attach=/etc/passwd" link must not
attach a file), CR/LF are removed from header values, and every part is bounded.

Why hand-written: ``urllib.parse`` splits the URL and percent-decodes, but knows nothing of
RFC 6068's rules (addresses in the path, repeated to= merged, ``+`` is a plus sign, not a
space, body line breaks as %0D%0A).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

MAX_URL = 64 * 1024          # browsers cap URLs near this; anything longer is not a link
MAX_HEADER = 2000            # one header value
ALLOWED = ("to", "cc", "bcc", "subject", "body", "in-reply-to", "references")


class MailtoError(ValueError):
    """Not a mailto: URL we can use."""


@dataclass
class MailtoFields:
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    subject: str = ""
    body: str = ""
    in_reply_to: str = ""
    references: tuple[str, ...] = ()
    ignored: list[str] = field(default_factory=list)   # header names we did not take

    def address_text(self, kind: str) -> str:
        """A To/Cc/Bcc field as the composer's text box holds it."""
        return ", ".join(getattr(self, kind))


def _decode(text: str) -> str:
    return unquote(text, encoding="utf-8", errors="replace")


def _one_line(text: str) -> str:
    return " ".join(text.replace("\r", " ").replace("\n", " ").split())[:MAX_HEADER]


def _addresses(text: str) -> list[str]:
    """RFC 6068 addresses are comma separated, percent-encoded each."""
    return [a for a in (_one_line(_decode(part)) for part in text.split(",")) if a]


def is_mailto(arg: str) -> bool:
    return arg[:7].lower() == "mailto:"


def parse_mailto(url: str) -> MailtoFields:
    """Parse a mailto: URL. Raises MailtoError when it is not one or is too long."""
    if not is_mailto(url):
        raise MailtoError(f"not a mailto: URL: {url[:80]!r}")
    if len(url) > MAX_URL:
        raise MailtoError(f"mailto: URL longer than {MAX_URL // 1024} KB")
    rest = url[7:]
    rest, _, _fragment = rest.partition("#")        # a fragment means nothing in mailto
    path, _, query = rest.partition("?")
    out = MailtoFields(to=_addresses(path))
    for pair in query.split("&") if query else ():
        if not pair:
            continue
        name, _, value = pair.partition("=")
        name = _decode(name).strip().lower()
        if name not in ALLOWED:
            if name and name not in out.ignored:
                out.ignored.append(_one_line(name)[:60])
            continue
        if name in ("to", "cc", "bcc"):
            getattr(out, name).extend(_addresses(value))
        elif name == "body":
            body = _decode(value).replace("\r\n", "\n").replace("\r", "\n")
            out.body = (out.body + "\n" + body) if out.body else body
        elif name == "subject":
            out.subject = _one_line(_decode(value))
        elif name == "in-reply-to":
            out.in_reply_to = _one_line(_decode(value))
        else:
            out.references = tuple(_one_line(_decode(value)).split())
    return out
