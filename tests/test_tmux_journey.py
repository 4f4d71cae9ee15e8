"""The journey in a real terminal: `tui-mail demo` in tmux (120x40), driven with `send-keys` at
full speed — each step is ONE send-keys call holding the whole burst, no pause between keys —
waiting only for screen states (capture-pane polling). Pilot tests wait for the app after every
key, which is why they never caught keys landing in the wrong field; this one would.

Compose with Tab between fields and send, reply (the original gets ↩), save a draft and recall
it from Drafts and send it, move to Archive and undo, search, quit. Asserts on the screen and on
what the server received: Bob's Maildir on the hamburger.edu relay, Alice's Drafts on crepes.fr.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """One private tmux server (its own socket) running one command in a 120x40 window."""

    def __init__(self, name: str, command: str, env: dict[str, str]):
        self.socket = name
        self.env = env
        self._tmux("new-session", "-d", "-s", "j", "-x", "120", "-y", "40", command)

    def _tmux(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], env=self.env, capture_output=True,
                             text=True, timeout=10)
        return out.stdout

    def keys(self, *keys: str) -> None:
        """One send-keys call: the terminal gets the whole burst at once."""
        self._tmux("send-keys", "-t", "j", *keys)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "j")

    def wait(self, what, timeout: float = 15.0) -> str:
        """Poll the screen until ``what`` (a string on screen, or a predicate of the screen)."""
        test = (lambda s: what in s) if isinstance(what, str) else what
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if test(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"screen never showed {what!r}; it shows:\n{text}")
            time.sleep(0.05)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], env=self.env, capture_output=True,
                       timeout=10)


def maildir_with(root: Path, text: str) -> list[Path]:
    """Message files under ``root`` (any Maildir folder) whose bytes contain ``text``."""
    if not root.exists():
        return []
    return [p for p in root.rglob("*") if p.is_file() and p.parent.name in ("cur", "new")
            and text.encode() in p.read_bytes()]


def wait_files(root: Path, text: str, n: int = 1, timeout: float = 15.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while True:
        found = maildir_with(root, text)
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def row_of(screen: str, text: str) -> str:
    return next((line for line in screen.splitlines() if text in line), "")


def test_journey_in_tmux_at_full_typing_speed(tmp_path):
    demo_dir = tmp_path / "demo"
    exe = Path(sys.executable).with_name("tui-mail")
    command = f"{exe} demo --keep {demo_dir} --messages 50; echo DEMO-EXITED $?; sleep 30"
    env = {**os.environ, "TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    env.pop("NO_COLOR", None)
    env.pop("TMUX", None)
    tmux = Tmux(f"tui-mail-journey-{os.getpid()}", command, env)
    bob_mail = demo_dir / "hamburger.edu" / "data" / "mail" / "bob@hamburger.edu"
    alice_mail = demo_dir / "crepes.fr" / "data" / "mail" / "alice@crepes.fr"
    try:
        tmux.wait(lambda s: "alice │ INBOX" in s and "Bob Hamburger" in s, timeout=40)

        # 1. compose: c, To, Tab Tab Tab (Cc, Bcc), Subject, Tab, body, Ctrl+S — one burst
        tmux.keys("c", "bob@hamburger.edu", "Tab", "Tab", "Tab", "Journey at full speed", "Tab",
                  "Typed as one burst, every key in its field.", "C-s")
        sent = wait_files(bob_mail, "Subject: Journey at full speed")
        assert len(sent) == 1, tmux.screen()
        data = sent[0].read_bytes()
        assert b"Typed as one burst, every key in its field." in data
        assert b"To: bob@hamburger.edu" in data and b"Cc:" not in data and b"Bcc" not in data
        tmux.wait(lambda s: "alice │ INBOX" in s and "c Compose" in s)

        # 2. reply to Bob's newest message (4th row): j j j r, text, Ctrl+S — one burst
        tmux.keys("g", "j", "j", "j", "r", "Ketchup yes, typed fast.", "C-s")
        replies = wait_files(bob_mail, "Ketchup yes, typed fast.")
        assert len(replies) == 1, tmux.screen()
        assert b"Subject: Re: Do you like ketchup?" in replies[0].read_bytes()
        screen = tmux.wait(lambda s: "↩" in row_of(s, "Bob Hamburger"))
        assert row_of(screen, "Bob Hamburger").index("↩") < row_of(screen, "Bob Hamburger").index("Bob")

        # 3. draft: write, Ctrl+D, Esc; then Shift+Tab to the folders, j to Drafts, Enter,
        #    Enter on the draft recalls it; finish and send
        tmux.keys("c", "bob@hamburger.edu", "Tab", "Tab", "Tab", "Recalled draft", "Tab",
                  "First half.", "C-d")
        drafts = wait_files(alice_mail, "Recalled draft")
        assert len(drafts) == 1 and "Drafts" in str(drafts[0]), tmux.screen()
        tmux.keys("Escape")
        tmux.wait(lambda s: "alice │ INBOX" in s and "c Compose" in s)
        tmux.keys("BTab", "j", "Enter")
        tmux.wait(lambda s: "alice │ Drafts" in s and "Recalled draft" in s)
        tmux.keys("Enter", " Second half.", "C-s")
        arrived = wait_files(bob_mail, "Subject: Recalled draft")
        assert len(arrived) == 1 and b"First half. Second half." in arrived[0].read_bytes()
        deadline = time.monotonic() + 10
        while maildir_with(alice_mail / ".Drafts", "Recalled draft") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not maildir_with(alice_mail / ".Drafts", "Recalled draft"), "sending left the draft"

        # 4. back to the Inbox; move the top message to Archive, undo
        tmux.keys("BTab", "k", "Enter")
        screen = tmux.wait(lambda s: "alice │ INBOX" in s and "Zoë Ångström" in s)
        tmux.keys("g", "m", "Archive", "Enter")
        tmux.wait("Moved 1 message to Archive")
        assert maildir_with(alice_mail / ".Archive", "Grüße aus Köln") or wait_files(
            alice_mail / ".Archive", "Subject:", timeout=5)
        tmux.keys("z")
        screen = tmux.wait(lambda s: "Undid" in s and "Zoë Ångström" in row_of(s, "Grüße"))
        assert "new message" not in screen

        # 5. search; q leaves the search, q quits
        tmux.keys("/", "ketchup", "Enter")
        tmux.wait(lambda s: "search 'ketchup'" in s and "found" in s)
        tmux.keys("q", "q")
        tmux.wait("DEMO-EXITED 0", timeout=20)
    finally:
        tmux.kill()
