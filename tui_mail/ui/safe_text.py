"""Strings from strangers → text that is safe to put on a terminal.

Everything a message or a server sends us (names, subjects, addresses, attachment names, folder
names, error texts, notifications, protocol trace lines) passes through here before any widget
sees it. Two dangers, two rules:

- **Markup.** Textual parses ``str`` as content markup in many places (``Label``, ``Static``,
  ``notify``, ``Tree`` labels, ``OptionList`` prompts, Rich ``Table`` cells): ``[/]`` raises,
  ``[@click=app.quit]`` becomes an action. So we hand widgets ``rich.text.Text`` objects (never
  parsed) from :func:`as_text`, or plain strings only where markup is switched off.
- **Control characters.** ``Text`` and ``Content`` pass ESC, C1 controls and bidi overrides
  straight to the terminal (clear screen, OSC 52 clipboard writes, reordered lines). They are
  replaced by visible stand-ins: C0 by the Unicode control pictures (ESC → ``␛``, NUL → ``␀``),
  DEL by ``␡``, C1 and bidi/line-separator format characters by their escape (``\\x9b``,
  ``\\u202e``), lone surrogates (undecodable bytes kept by ``surrogateescape``) by ``�``.

Hand-written: rich's ``strip_control_codes`` only drops a handful of C0 codes and
``rich.markup.escape`` handles markup but not controls; neither makes anything visible.
"""

from __future__ import annotations

from rich.text import Text

# Format characters that reorder or break lines: bidi embeddings/overrides/isolates, marks.
_FORMAT = (0x061C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))

_LINE: dict[int, str] = {c: chr(0x2400 + c) for c in range(0x20)}
_LINE[0x7F] = "\u2421"
_LINE.update({c: f"\\x{c:02x}" for c in range(0x80, 0xA0)})
_LINE.update({c: f"\\u{c:04x}" for c in _FORMAT})
_LINE.update({c: "\ufffd" for c in range(0xD800, 0xE000)})

_BLOCK = dict(_LINE)           # multi-line text keeps newlines and tabs
del _BLOCK[0x0A], _BLOCK[0x09]

LIMIT = 1000                   # one-line fields longer than this are cut (a 1 MB "name")


def shown(value: object, limit: int | None = LIMIT) -> str:
    """One line of safe text: every control character visible, at most ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.translate(_LINE)


def shown_block(value: str) -> str:
    """Several lines of safe text (bodies, raw source): newlines and tabs kept, CR/CRLF → LF."""
    return value.replace("\r\n", "\n").replace("\r", "\n").translate(_BLOCK)


def as_text(value: object, style: str = "", limit: int | None = LIMIT) -> Text:
    """A Rich ``Text`` (never parsed as markup) holding :func:`shown` of ``value``."""
    return Text(shown(value, limit), style=style)


def is_clean(text: str) -> bool:
    """True when ``text`` holds no character this module would replace (newlines allowed)."""
    return text.replace("\n", "") == text.replace("\n", "").translate(_LINE)
