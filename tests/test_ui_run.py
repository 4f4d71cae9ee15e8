"""`tui-mail` (no subcommand): config → accounts → app, including a POP3 account on Dovecot."""

from __future__ import annotations

import pytest

from peers import Dovecot, dovecot_available
from test_ui_app import mlist, settle
from tui_mail.ui import run
from tui_mail.ui.app import MailApp
from tui_mail.ui.trace import TraceBuffer


def test_no_accounts_is_one_plain_sentence(tmp_path, capsys):
    cfg = tmp_path / "config.toml"
    assert run.main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "tui-mail account add" in err and "Traceback" not in err


def test_unknown_key_id_names_the_fix(tmp_path, capsys):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[keys]\ndelet = "x"\n\n[[accounts]]\nname = "a"\naddress = "a@b.c"\n'
                   '[accounts.pop3]\nhost = "127.0.0.1"\nsecurity = "none"\npassword_command = "echo x"\n')
    assert run.main(["--config", str(cfg)]) == 2
    assert "delet" in capsys.readouterr().err


@pytest.mark.skipif(not dovecot_available(), reason="dovecot not installed")
async def test_pop3_account_from_config_downloads_and_shows_mail(tmp_path):
    dc = Dovecot(tmp_path / "dovecot")
    dc.add_user("bob", "secret")
    dc.seed("bob", 12)
    dc.start()
    try:
        cfg = tmp_path / "config.toml"
        cfg.write_text(f'[ui]\nmark_read = "never"\n\n[[accounts]]\nname = "bob"\naddress = "bob@hamburger.edu"\n'
                       f'[accounts.pop3]\nhost = "127.0.0.1"\nport = {dc.pop3_port}\nsecurity = "none"\n'
                       f'user = "bob"\npassword_command = "echo secret"\n')
        trace = TraceBuffer()
        accounts, settings = run.build(run.parse_args(["--config", str(cfg)]), trace)
        assert settings.mark_read == "never"
        app = MailApp(accounts, settings, trace=trace)
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(pilot, app, lambda: len(mlist(app).rows) == 12, timeout=20)
            texts = [l.text for l in trace.since(0)]
            assert any(t.startswith("USER bob") for t in texts)
            assert not any("secret" in t for t in texts)
            dc.deliver("bob", b"From: a@b.c\r\nTo: bob@hamburger.edu\r\nSubject: late\r\n\r\nhi\r\n")
            await pilot.press("ctrl+r")
            await settle(pilot, app, lambda: len(mlist(app).rows) == 13, timeout=20)
    finally:
        dc.cleanup()
