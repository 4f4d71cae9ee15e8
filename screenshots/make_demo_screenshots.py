"""Regenerate screenshots/demo_main.svg and screenshots/demo_relays.svg from the real demo.

A real DemoWorld (both relays in this process, in a temp dir) and the real DemoApp, driven
headless by Textual's Pilot at 160x45: the main screen once alice's INBOX is loaded, then the
relay panel (F3) after hamburger.edu is taken down (h) and a message from alice waits,
deferred, in crepes.fr's queue. Never edit the SVGs by hand.

    .venv/bin/python screenshots/make_demo_screenshots.py
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from make_screenshots import until  # noqa: E402  (same folder: the waiting helper)
from tui_mail.demo import BOB, DemoWorld  # noqa: E402
from tui_mail.ui.demo_app import RelayPanel, build_demo_app  # noqa: E402
from tui_mail.ui.widgets.message_list import MessageList  # noqa: E402

SIZE = (160, 45)
OUT = ROOT / "screenshots"


async def shoot(world: DemoWorld) -> None:
    app = build_demo_app(world)
    async with app.run_test(size=SIZE) as pilot:
        ml = lambda: app.main_screen.query_one(MessageList)  # noqa: E731
        await until(pilot, lambda: app.main_screen.folder == "INBOX" and ml().current_summary is not None
                    and app.main_screen.preview.uid is not None)
        await asyncio.sleep(0.5)
        await pilot.pause()
        app.save_screenshot("demo_main.svg", str(OUT))

        await pilot.press("f3")
        await until(pilot, lambda: isinstance(app.screen, RelayPanel))
        await pilot.press("h")
        await until(pilot, lambda: not world.relay("hamburger.edu").running)
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.main_screen)
        await pilot.press("c")
        await pilot.pause()
        app.screen.query_one("#to").value = BOB
        app.screen.query_one("#subject").value = "Lunch on Saturday"
        app.screen.query_one("#body").load_text("Crêpes at noon? Bring the ketchup.\n")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: app.screen is app.main_screen)
        await pilot.press("f3")
        await until(pilot, lambda: isinstance(app.screen, RelayPanel))
        await until(pilot, lambda: any(r.get("status") == "deferred" for e in world.relay("crepes.fr").queue()
                                       for r in e.get("recipients", [])))
        app.clear_notifications()
        await asyncio.sleep(1.2)                 # two panel refreshes
        await pilot.pause()
        app.save_screenshot("demo_relays.svg", str(OUT))
        await pilot.press("ctrl+q")


def main() -> None:
    warnings.filterwarnings("ignore", message="Session.login_data is deprecated")
    root = Path(tempfile.mkdtemp(prefix="tui-mail-demo-shots-"))
    world = DemoWorld(root, bulk=300)
    try:
        world.setup()
        os.environ.update(world.client_env())
        world.start(bulk_in_background=False)
        asyncio.run(shoot(world))
    finally:
        world.stop()
        shutil.rmtree(root, ignore_errors=True)
    print("wrote", ", ".join(str(OUT / n) for n in ("demo_main.svg", "demo_relays.svg")))


if __name__ == "__main__":
    main()
