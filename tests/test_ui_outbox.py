"""Mail that could not be sent waits in the Outbox and goes out later without the user
re-sending it: by the periodic retry, or at once with Ctrl+O ("Send Outbox now")."""

from __future__ import annotations

import asyncio
import socket

from aiosmtpd.smtp import SMTP as SMTPProtocol

from test_ui_app import mlist, settle
from test_ui_real import SIZE, Sink, local_app


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_waiting_mail_goes_out_with_ctrl_o_once_the_server_is_back(tmp_path):
    port = _port()
    app, store, outbox = local_app(tmp_path, port)          # nothing listens on port yet
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, lambda: mlist(app).current_summary is not None)
        await pilot.press("c")
        await pilot.pause()
        await pilot.press(*"bob@hamburger.edu")
        app.screen.query_one("#subject").value = "Sent later"
        await pilot.press("ctrl+s")
        await settle(pilot, app, lambda: app.screen is app.main_screen, timeout=10)
        assert len(outbox.store.folder_state("Outbox").uids) == 1   # waits in the Outbox

        sink = Sink()
        server = await asyncio.get_running_loop().create_server(
            lambda: SMTPProtocol(sink, hostname="sink.test"), "127.0.0.1", port)
        try:
            await pilot.press("ctrl+o")
            await settle(pilot, app, lambda: sink.messages, timeout=10)
            await settle(pilot, app, lambda: any("sent from the Outbox" in n.message
                                                 for n in app._notifications), timeout=10)
        finally:
            server.close()
            await server.wait_closed()
    assert sink.messages[0][1] == ["bob@hamburger.edu"]
    assert b"Subject: Sent later" in sink.messages[0][2]
    assert outbox.store.folder_state("Outbox").uids == ()
    outbox.close()
