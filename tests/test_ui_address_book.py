"""The address book and new-mail notifications in the running app, against the real local
Maildir store (tui_mail.store.local) and a real notify command."""

from __future__ import annotations

import sys
import textwrap
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime

from textual.widgets import Input

from test_ui_app import mlist, settle
from test_ui_real import NOW, SIZE, local_app, smtp_sink  # noqa: F401 - smtp_sink is a fixture
from tui_mail.ui.app import UISettings


def message(sender: str, to: str, subject: str, minutes: int = 0) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, to, subject
    m["Date"] = format_datetime(NOW - timedelta(minutes=minutes))
    m["Message-ID"] = f"<{abs(hash((sender, to, subject, minutes)))}@test>"
    m.set_content("hello\n")
    return bytes(m)


async def test_compose_completes_from_the_contacts_index_built_from_sent_mail(tmp_path, smtp_sink):
    app, store, _ = local_app(tmp_path, smtp_port=smtp_sink.port)
    for i in range(3):          # written to three times: ranks above a one-off correspondent
        store.append("Sent", message("Alice <alice@crepes.fr>", "Zed Zimmer <zed@far.example>", f"plan {i}", i))
    store.append("Sent", message("Alice <alice@crepes.fr>", "Zoe <zoe@far.example>", "once", 500))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        worker = app.rebuild_contacts()
        await worker.wait()
        ranked = [c.address for c in app.address_book.ranked]
        assert ranked.index("zed@far.example") < ranked.index("zoe@far.example")
        assert "alice@crepes.fr" not in ranked                      # our own address
        await pilot.press("c")
        await settle(pilot, app, lambda: app.screen.query("#to"))
        to = app.screen.query_one("#to", Input)
        to.focus()
        await pilot.press("z")
        await pilot.press("e")
        await settle(pilot, app, lambda: to._suggestion == "Zed Zimmer <zed@far.example>")
        await pilot.press("right")                                  # accept the suggestion
        assert to.value == "Zed Zimmer <zed@far.example>"


async def test_new_mail_runs_notify_command_and_writes_the_terminal_notification(tmp_path):
    log = tmp_path / "notified.txt"
    script = tmp_path / "notify.py"
    script.write_text(textwrap.dedent(f"""\
        import sys
        open({str(log)!r}, "a").write(repr(sys.argv[1:]) + "\\n")
        """))
    app, store, _ = local_app(tmp_path)
    app.settings = UISettings(notify_command=f"{sys.executable} {script} --new", notify_terminal="osc777")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        before = len(mlist(app).rows)
        store.append("INBOX", message("Mallory $HOME <m@evil.example>", "alice@crepes.fr",
                                      "Urgent\x1b]0;pwned\x07; rm -rf ~"))
        await settle(pilot, app, lambda: len(mlist(app).rows) == before + 1 and log.exists()
                     and app.terminal_notifications, timeout=10)
        argv = eval(log.read_text().splitlines()[-1])
        assert argv[0] == "--new" and argv[1] == "Mallory $HOME"
        assert argv[2].startswith("Urgent") and "\x1b" not in argv[2] and "\x07" not in argv[2]
        seq = app.terminal_notifications[-1]
        assert seq.startswith("\x1b]777;notify;Mallory $HOME;Urgent") and seq.endswith("\x1b\\")
        assert "\x07" not in seq and seq.count("\x1b") == 2
