"""screenshots/web_inbox.png: ``tui-mail demo --web`` in Debian's headless Chromium, Alice's inbox.

    .venv/bin/python screenshots/make_web_screenshot.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.web_browser import Screen, WebDemo, browser_available, launch  # noqa: E402


def main() -> int:
    reason = browser_available()
    if reason:
        print(f"skipped: {reason}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as d, WebDemo(Path(d) / "demo") as demo, sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 720})
            screen = Screen(page)
            page.goto(demo.url)
            screen.wait_for("5 messages", 40)
            page.wait_for_timeout(1000)
            out = HERE / "web_inbox.png"
            page.screenshot(path=str(out))
            print(out)
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
