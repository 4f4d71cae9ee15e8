"""Drive ``tui-mail demo --web`` in Debian's headless Chromium through Playwright (no browser
download: the system /usr/bin/chromium). Used by tests/test_web.py and
screenshots/make_web_screenshot.py."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

CHROMIUM = os.environ.get("TUI_MAIL_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent


def browser_available() -> str | None:
    """None when a browser test can run, else the reason to skip."""
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    return None


class WebDemo:
    """``tui-mail demo --web`` in a subprocess, on a free port; ``url`` has the token."""

    def __init__(self, root: Path):
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> WebDemo:
        env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="120", LINES="40")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tui_mail", "demo", "--web", "--listen", "127.0.0.1:0", "--messages", "0",
             "--keep", str(self.root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            start_new_session=True, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"(https?://\S+\?token=\S+)", line)
            if m:
                self.url = m.group(1)
                return self
        self.__exit__()
        raise RuntimeError(f"tui-mail demo --web did not print its URL: {self.proc.stderr.read()[-2000:]}")

    def app_processes(self) -> list[int]:
        """PIDs of the per-tab TUI processes (``-m tui_mail`` in the demo's session, not the demo)."""
        out = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == self.proc.pid:
                continue
            try:
                sid = int((proc / "stat").read_text().rpartition(")")[2].split()[3])
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            if sid == self.proc.pid and b"tui_mail" in cmd and b"demo" not in cmd and b"sh" not in cmd[0]:
                out.append(int(proc.name))
        return out

    @property
    def base(self) -> str:
        return self.url.split("/?", 1)[0]

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)   # its own session: the demo and its app processes
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc:
            self.proc.stdout.close()
            self.proc.stderr.close()


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Za-z]")


class Screen:
    """What the app process sent to the page's terminal (xterm.js draws it on a canvas, so
    the text is read from the websocket frames the page received, escape sequences removed)."""

    def __init__(self, page) -> None:
        self.page = page
        self.chunks: list[str] = []
        page.on("websocket", self._socket)

    def _socket(self, ws) -> None:
        ws.on("framereceived", self._frame)

    def _frame(self, payload) -> None:
        if isinstance(payload, bytes):
            payload = payload.decode("utf-8", "ignore")
        self.chunks.append(payload)

    def text(self) -> str:
        return _ANSI.sub(" ", "".join(self.chunks))

    def wait_for(self, needle: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return
            self.page.wait_for_timeout(100)
        raise AssertionError(f"{needle!r} not sent to the page within {timeout} s")


__all__ = ["WebDemo", "Screen", "browser_available", "launch", "shutil"]
