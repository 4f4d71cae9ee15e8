"""New-mail notifications outside the app: a user command and the terminal's own notification.

``notify_command`` (config ``[ui]``) is split with shlex and run WITHOUT a shell, with the
sender and the subject appended as two more arguments (``notify-send -a tui-mail`` shows
them as title and body). The terminal notification is an OSC escape written through Textual's
driver: OSC 9 (iTerm2, WezTerm, Windows Terminal, ghostty, kitty) or OSC 777 (foot, urxvt,
WezTerm, ghostty); inside tmux it is wrapped for passthrough (tmux needs ``set -g
allow-passthrough on`` to forward it).

Sender and subject come from strangers: control characters (ESC, BEL, C1 — anything that
could end the escape early or start another) and bidi overrides are removed, OSC 777's ``;``
field separator is replaced, and both are cut to a bounded length before they go anywhere.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping

MAX_FIELD = 120
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def safe_field(text: str | None, limit: int = MAX_FIELD) -> str:
    """``text`` with controls and bidi overrides replaced by spaces, one line, bounded."""
    out = " ".join(_UNSAFE.sub(" ", text or "").split())
    return out if len(out) <= limit else out[: limit - 1] + "…"


def command_argv(command: str, sender: str, subject: str) -> list[str]:
    """The argv for ``notify_command``: its own words, then sender and subject as arguments."""
    return [*shlex.split(command), safe_field(sender), safe_field(subject)]


def terminal_kind(setting: str, env: Mapping[str, str] | None = None) -> str | None:
    """"osc9", "osc777" or None (off) for the ``notify_terminal`` setting; "auto" picks by the
    terminal's own variables and stays off when it cannot tell."""
    if setting in ("osc9", "osc777"):
        return setting
    if setting != "auto":
        return None
    env = os.environ if env is None else env
    program = env.get("TERM_PROGRAM", "")
    term = env.get("TERM", "")
    if program in ("iTerm.app", "WezTerm", "ghostty") or env.get("WT_SESSION") or "kitty" in term:
        return "osc9"
    if term.startswith(("foot", "rxvt")):
        return "osc777"
    return None


def osc_sequence(kind: str, title: str, body: str, in_tmux: bool = False) -> str:
    """The escape that asks the terminal to show a notification (sanitised fields)."""
    title, body = safe_field(title), safe_field(body)
    if kind == "osc777":
        seq = f"\x1b]777;notify;{title.replace(';', ',')};{body.replace(';', ',')}\x1b\\"
    else:
        seq = f"\x1b]9;{title}: {body}\x1b\\" if body else f"\x1b]9;{title}\x1b\\"
    if in_tmux:     # DCS passthrough: every ESC inside doubled
        seq = "\x1bPtmux;" + seq.replace("\x1b", "\x1b\x1b") + "\x1b\\"
    return seq
