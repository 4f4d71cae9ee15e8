"""Protocol trace capture: the C:/S: dialogue of a connection, with credentials masked.

Why hand-written: imapclient/imaplib only offer a debug logger that misses some raw commands
(IDLE/DONE go through imapclient's own path) and logs passwords verbatim. Wrapping the wire
methods of the imaplib object (``send``, ``readline``, ``read``) sees every byte, whoever sends
it. ``TraceMasker`` is the pure part: bytes in, display lines out, with LOGIN/AUTHENTICATE
arguments (and any SASL continuation or literal that follows them) replaced by ``****``.
It also serves poplib/smtplib-style line protocols (USER/PASS/AUTH).
"""

from __future__ import annotations

import re

from tui_mail.store.base import TraceSink

MASK = "****"
_MAX_LINE = 300          # longer lines are cut for display
_LOGIN = re.compile(rb"^(\S+ LOGIN (?:\"(?:[^\"\\]|\\.)*\"|\S+))(.*)$", re.I | re.S)
_AUTH = re.compile(rb"^(\S+ AUTHENTICATE \S+)(.*)$", re.I | re.S)
_POP_PASS = re.compile(rb"^(PASS |APOP \S+ )(.*)$", re.I | re.S)
_SMTP_AUTH = re.compile(rb"^(AUTH \S+)(.*)$", re.I | re.S)
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r?\n?$")


def _show(data: bytes) -> str:
    text = data.rstrip(b"\r\n").decode("utf-8", "replace")
    return text if len(text) <= _MAX_LINE else text[:_MAX_LINE] + f"… ({len(text)} chars)"


class TraceMasker:
    """Turns raw protocol bytes into display lines, masking credentials.

    ``client(data)`` for bytes the client sent, ``server(line)`` for one line the server sent,
    ``server_literal(n)`` for a literal of n bytes read from the server."""

    def __init__(self) -> None:
        self._secret_pending = False   # next client bytes are credentials (literal/SASL step)

    def client(self, data: bytes) -> list[str]:
        if self._secret_pending:
            if data.rstrip(b"\r\n") == b"*":          # SASL cancel
                self._secret_pending = False
                return ["*"]
            # a SASL step or a credentials literal; after a literal the command goes on
            return [MASK]
        out = []
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            out.append(self._client_line(raw))
        if len(out) > 20:  # e.g. an APPENDed message body: summarise
            out = out[:5] + [f"… ({len(out) - 5} more lines, {len(data)} bytes)"]
        return out

    def _client_line(self, raw: bytes) -> str:
        m = _LOGIN.match(raw)
        if m:
            if _LITERAL.search(raw):       # user or password sent as a literal next
                self._secret_pending = True
            return _show(m.group(1)) + " " + MASK
        for rx in (_AUTH, _SMTP_AUTH):
            m = rx.match(raw)
            if m:
                self._secret_pending = True   # SASL continuations follow until a final reply
                return _show(m.group(1)) + (" " + MASK if m.group(2).strip() else "")
        m = _POP_PASS.match(raw)
        if m:
            return _show(m.group(1)) + MASK
        return _show(raw)

    def server(self, line: bytes) -> str:
        # a continuation ("+ ", "334 ") keeps a SASL exchange going; anything else ends it
        if self._secret_pending and not (line.startswith(b"+ ") or line.rstrip() == b"+"
                                         or line.startswith(b"334")):
            self._secret_pending = False
        return _show(line)

    @staticmethod
    def server_literal(n: int) -> str:
        return f"<{n} bytes>"


def attach_imaplib(imap, sink_ref) -> None:
    """Wrap an ``imaplib.IMAP4`` instance's wire methods so every line goes to
    ``sink_ref()`` (called per line; a None sink means tracing is off, at almost no cost)."""
    masker = TraceMasker()
    send, readline, read = imap.send, imap.readline, imap.read

    def traced_send(data: bytes):
        sink: TraceSink | None = sink_ref()
        if sink is not None:
            for line in masker.client(bytes(data)):
                sink("C", line)
        elif masker._secret_pending:
            masker.client(bytes(data))
        return send(data)

    def traced_readline():
        line = readline()
        sink = sink_ref()
        if sink is not None:
            sink("S", masker.server(line))
        else:
            masker.server(line)
        return line

    def traced_read(size: int):
        data = read(size)
        sink = sink_ref()
        if sink is not None:
            sink("S", masker.server_literal(len(data)))
        return data

    imap.send, imap.readline, imap.read = traced_send, traced_readline, traced_read
