"""Bound the work of parsing a hostile message before the ``email`` parser sees it.

The stdlib parser costs about 0.2 ms per MIME part and 30 ms per MB, and the view built on it
more: a message of 50,000 tiny parts took 28.7 s to open, 40 MB of quoted-printable 6.3 s. The
reader must open in well under a second whatever arrives, so :func:`bound_raw` makes a cheaper
copy of the bytes for display, in one linear regex pass:

- **Parts**: boundary delimiter lines of every declared boundary are counted; after
  ``max_parts`` of them the copy ends (the parser notes the missing close delimiter) and the
  number left out is reported.
- **Part size**: a part body (or a single-part message body) longer than ``max_part_bytes`` is
  cut at a line end, and the part gets a private ``X-Tui-Mail-Cut: <encoded length>`` header so
  the view can show the real size and say that it shows only the start. The original bytes stay
  in the view: saving or opening an attachment parses the whole message then.
- **Depth** is bounded where the tree is walked (``MAX_DEPTH`` in parse.py), text shown by
  ``MAX_TEXT_CHARS``.

Hand-written: no MIME library offers a streaming pre-scan with limits; ``email.feedparser`` has
none (the relay caps message size, but a client also reads other servers' mail).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_PARTS = 200                    # parts listed and parsed; the rest counted and reported
MAX_PART_BYTES = 4 * 1024 * 1024   # encoded bytes of one part body parsed for display (= parse.HTML_LIMIT)
MAX_DEPTH = 64                     # multipart / message nesting walked (real mail: < 10)
MAX_TEXT_CHARS = 2_000_000         # characters of body text shown
MAX_BOUNDARIES = 1000              # distinct boundaries honoured (more: the rest is one body)

CUT_HEADER = "X-Tui-Mail-Cut"

_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))', re.I)
_DASH_LINE = re.compile(rb"--([^\r\n]*?)[ \t]*\r?(?:\n|\Z)")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass
class Bounded:
    raw: bytes                     # what to parse for display
    parts_left_out: int = 0        # part delimiters after the first max_parts
    bodies_cut: int = 0            # part bodies shortened to max_part_bytes

    @property
    def complete(self) -> bool:
        return not (self.parts_left_out or self.bodies_cut)


def bound_raw(raw: bytes, max_parts: int | None = None, max_part_bytes: int | None = None) -> Bounded:
    """A copy of ``raw`` with at most ``max_parts`` parts and part bodies of at most
    ``max_part_bytes`` (default: the module's limits); ``raw`` itself when it is within both."""
    max_parts = MAX_PARTS if max_parts is None else max_parts
    max_part_bytes = MAX_PART_BYTES if max_part_bytes is None else max_part_bytes
    boundaries: set[bytes] = set()
    low = raw.lower()                    # bytes.find is C-fast; a re.I scan of 40 MB is not
    at = low.find(b"boundary")
    seen = 0
    while at >= 0 and len(boundaries) < MAX_BOUNDARIES and seen < 20 * MAX_BOUNDARIES:
        seen += 1
        m = _BOUNDARY.match(raw, at)
        if m:
            boundaries.add((m.group(1) or m.group(2)).rstrip(b" \t"))
        at = low.find(b"boundary", at + 8)
    del low
    delimiters: list[tuple[int, int, bool]] = []     # (line start, line end, is close)
    opens = 0
    end = len(raw)
    left_out = 0
    if boundaries:
        at = 0 if raw.startswith(b"--") else _next_dash_line(raw, 0)
        while at >= 0:
            m = _DASH_LINE.match(raw, at)
            if m:
                token = m.group(1)
                if token in boundaries:
                    if opens == max_parts:          # the first part left out: stop here
                        end = m.start()
                        left_out = _count_opens(raw, boundaries, end)
                        break
                    opens += 1
                    delimiters.append((m.start(), m.end(), False))
                elif token.endswith(b"--") and token[:-2] in boundaries:
                    delimiters.append((m.start(), m.end(), True))
            at = _next_dash_line(raw, at + 1)
    if end == len(raw) and len(raw) <= max_part_bytes:
        return Bounded(raw)

    # Segments: the top-level headers and body up to the first delimiter, then each part.
    out: list[bytes] = []
    cut = 0
    starts = [0] + [d[1] for d in delimiters]
    stops = [d[0] for d in delimiters] + [end]
    closes = [False] + [d[2] for d in delimiters]
    for i, (start, stop, after_close) in enumerate(zip(starts, stops, closes)):
        if i:
            out.append(raw[stops[i - 1]:start])        # the delimiter line itself
        segment = raw[start:stop]
        if len(segment) <= max_part_bytes:
            out.append(segment)
            continue
        if after_close:                                  # an epilogue: nobody reads it
            out.append(_ended(segment[:_line_end(segment, 4096)]))
            continue
        if i == 0 and delimiters:
            # top-level headers + preamble: keep the headers, cut the preamble
            head = _HEADER_END.search(segment)
            keep = head.end() if head else _line_end(segment, max_part_bytes)
            out.append(segment[:keep] + b"\r\n")
            continue
        head_end, body_start = _split_head(segment)
        if head_end > max_part_bytes:
            out.append(_ended(segment[:_line_end(segment, max_part_bytes)]))
            cut += 1
            continue
        body = segment[body_start:]
        newline = b"\r\n" if b"\r\n" in segment[:body_start] or not body_start else b"\n"
        data_len = len(body) - body.count(b"\n") - body.count(b"\r")      # line breaks are not data
        marker = f"{CUT_HEADER}: {data_len}".encode() + newline
        out.append(segment[:head_end] + marker + newline + _ended(body[:_line_end(body, max_part_bytes)], newline))
        cut += 1
    return Bounded(b"".join(out), left_out, cut)


def _count_opens(raw: bytes, boundaries: set[bytes], start: int) -> int:
    """Open delimiters from ``start`` on, counted at C speed (the count is only reported)."""
    if len(boundaries) > 16:      # a hostile nest of boundaries: lines starting "--" will do
        return raw.count(b"\n--", start - 1)
    n = 0
    for b in boundaries:
        n += raw.count(b"\n--" + b, start - 1) - raw.count(b"\n--" + b + b"--", start - 1)
    return n


def _next_dash_line(raw: bytes, start: int) -> int:
    i = raw.find(b"\n--", start)
    return -1 if i < 0 else i + 1


def _split_head(segment: bytes) -> tuple[int, int]:
    """(end of the header lines incl. their last newline, start of the body) of one part."""
    if segment.startswith((b"\r\n", b"\n")):                 # no headers at all
        return 0, 2 if segment.startswith(b"\r\n") else 1
    head = _HEADER_END.search(segment)
    if head is None:
        return len(segment), len(segment)
    first_nl = segment.index(b"\n", head.start()) + 1      # keep the last header's newline
    return first_nl, head.end()


def _ended(piece: bytes, newline: bytes = b"\r\n") -> bytes:
    """A cut piece ends with a newline, so the delimiter after it stays on its own line."""
    return piece if piece.endswith(b"\n") else piece + newline


def _line_end(data: bytes, limit: int) -> int:
    """An index ≤ ``limit`` just after a newline (so a cut never splits a line), or ``limit``."""
    nl = data.rfind(b"\n", 0, limit)
    return nl + 1 if nl > limit // 2 else limit


def cut_size(part) -> int | None:
    """The original encoded body length (line breaks not counted) of a part ``bound_raw``
    shortened, else None."""
    value = part.get(CUT_HEADER)
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None
