"""``tui-mail relay …``: bad config, user commands, daemon start/status/stop, foreground logs."""

from __future__ import annotations

import io
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time

import pytest

from relay.cli import main
from relay.users import UserDB

CONFIG = """\
hostname = "mx.example.org"
domains = ["example.org"]
[listen]
smtp = "127.0.0.1:0"
submission = "127.0.0.1:0"
imap = ""
pop3 = ""
"""


def start_with_bad_config(tmp_path, capsys, text: str) -> str:
    """``relay start --foreground`` with ``text`` as relay.toml: exit 2 and one line on stderr
    without a traceback; returns that stderr."""
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    assert main(["start", "--foreground", "--config", str(bad), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    return err


@pytest.fixture
def setup(tmp_path):
    cfg = tmp_path / "relay.toml"
    cfg.write_text(CONFIG)
    return ["--config", str(cfg), "--data-dir", str(tmp_path / "data")], tmp_path / "data"


@pytest.mark.parametrize("text, needle", [
    ("hostname = 3\n", "line 1: hostname: expected a string"),
    ("[queue]\nmax_hops = \"many\"\n", "line 2: queue.max_hops"),
    ("[listen]\nsmtp = \"nowhere\"\n", "listen.smtp"),
    ("colour = \"red\"\n", "colour: unknown key"),
    ("domains = [\n", "not valid TOML"),
])
def test_bad_config_is_one_clear_line_and_exit_2(tmp_path, capsys, text, needle):
    assert needle in start_with_bad_config(tmp_path, capsys, text)
    assert not (tmp_path / "d").exists()


def test_missing_config_file_and_usage_errors(tmp_path, capsys):
    assert main(["status", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert main(["user", "add"]) == 2


def test_user_commands(setup, monkeypatch, capsys):
    opts, data = setup
    monkeypatch.setattr(sys, "stdin", io.StringIO("first pass\n"))
    assert main(["user", "add", "Bob@Example.org", "--password-stdin", *opts]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("second\n"))
    assert main(["user", "passwd", "bob@example.org", "--password-stdin", *opts]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("x\n"))
    assert main(["user", "add", "carol@example.org", "--password-stdin", *opts]) == 0
    capsys.readouterr()
    assert main(["user", "list", *opts]) == 0
    assert capsys.readouterr().out.split() == ["bob@example.org", "carol@example.org"]
    db = UserDB(data / "users")
    assert db.authenticate("bob@example.org", "second") and not db.authenticate("bob@example.org", "first pass")
    assert main(["user", "del", "carol@example.org", *opts]) == 0
    assert db.list() == ["bob@example.org"]
    assert main(["user", "del", "carol@example.org", *opts]) == 1
    assert "no such user" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw\n"))
    assert main(["user", "add", "not-an-address", "--password-stdin", *opts]) == 1


def test_daemon_start_status_send_stop(setup, capsys, monkeypatch):
    opts, data = setup
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw\n"))
    assert main(["user", "add", "bob@example.org", "--password-stdin", *opts]) == 0
    assert main(["status", *opts]) == 3
    assert "not running" in capsys.readouterr().out
    assert main(["start", *opts]) == 0
    try:
        out = capsys.readouterr().out
        assert out.startswith("relay started (pid ")
        ports = {line.split()[0]: int(line.split()[1].rsplit(":", 1)[1]) for line in out.splitlines()[1:]}
        assert set(ports) == {"smtp", "submission"}
        assert main(["start", *opts]) == 1  # already running
        assert "already running" in capsys.readouterr().err
        with smtplib.SMTP("127.0.0.1", ports["smtp"]) as s:
            s.sendmail("a@x.org", ["bob@example.org"], b"Subject: via daemon\r\n\r\nhi\r\n")
        with smtplib.SMTP("127.0.0.1", ports["submission"]) as s:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                s.login("bob@example.org", "not-the-password-xyzzy")
            s.login("bob@example.org", "pw")
            s.sendmail("bob@example.org", ["friend@far.net"], b"Subject: onward\r\n\r\nhi\r\n")
        new = data / "mail" / "bob@example.org" / "new"
        deadline = time.monotonic() + 5
        while not (new.exists() and os.listdir(new)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(os.listdir(new)) == 1
        time.sleep(0.2)
        assert main(["status", *opts]) == 0
        status = capsys.readouterr().out
        assert "relay running (pid" in status and "accepting" in status
        assert re.search(r"^queue: \d+ message\(s\)$", status, re.M)
    finally:
        rc = main(["stop", *opts])
    assert rc == 0 and "relay stopped" in capsys.readouterr().out
    assert main(["status", *opts]) == 3
    assert main(["stop", *opts]) == 3
    log = (data / "relay.log").read_text()
    assert "from=<a@x.org>, size=" in log
    assert "to=<bob@example.org>, relay=local" in log and "status=sent (delivered to maildir)" in log
    assert "to=<friend@far.net>" in log  # deferred or failed, depending on onward delivery
    assert "sasl_username=bob@example.org" in log and "SASL PLAIN authentication failed" in log
    assert "not-the-password-xyzzy" not in log and "\tpw" not in log


def test_foreground_logs_to_stderr_and_stops_on_sigterm(setup):
    opts, data = setup
    proc = subprocess.Popen([sys.executable, "-m", "relay", "start", "--foreground", *opts],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("relay running (pid ") and "smtp 127.0.0.1:" in line
        port = int(line.split("smtp 127.0.0.1:")[1].split(",")[0])
        with smtplib.SMTP("127.0.0.1", port) as s:
            s.ehlo("client.test")
            code, _ = s.docmd("MAIL FROM:<x@y.test>")
            assert code == 250
            assert s.docmd("RCPT TO:<someone@far.net>")[0] == 554
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert ("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <someone@far.net>: Relay access denied; "
            "from=<x@y.test> to=<someone@far.net> proto=ESMTP helo=<client.test>") in err
    assert "relay[" in err and "stopped" in err
    assert not (data / "relay.state.json").exists()


def test_port_in_use_is_a_clear_error_in_foreground_and_daemon(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "relay.toml"
        cfg.write_text(CONFIG.replace('smtp = "127.0.0.1:0"', f'smtp = "127.0.0.1:{port}"'))
        opts = ["--config", str(cfg), "--data-dir", str(tmp_path / "data")]
        r = subprocess.run([sys.executable, "-m", "relay", "start", "--foreground", *opts],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1
        assert f"cannot listen for smtp on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr
        assert main(["start", *opts]) == 1
        err = capsys.readouterr().err
        assert "the relay did not start" in err and f"127.0.0.1:{port}" in err
        assert main(["status", *opts]) == 3
