"""Passwords: keyring (a real file backend from keyrings.alt), password_command, and a clear
error naming both alternatives when no keyring backend works (the null/fail backends)."""

from __future__ import annotations

import sys

import pytest

from tui_mail.config import Account, Server
from tui_mail.errors import SecretError
from tui_mail.secrets import (delete_password, get_password, keyring_usable, password_for,
                              run_password_command, set_password)


@pytest.fixture
def file_keyring(monkeypatch):
    pytest.importorskip("keyrings.alt")
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    import keyring
    import keyring.core
    keyring.core._keyring_backend = None        # re-read the env var
    yield keyring
    keyring.core._keyring_backend = None


@pytest.fixture
def no_keyring(monkeypatch):
    import keyring.core
    keyring.core._keyring_backend = None
    yield
    keyring.core._keyring_backend = None


@pytest.mark.parametrize("backend", ["keyring.backends.null.Keyring", "keyring.backends.fail.Keyring"])
def test_no_backend_gives_a_message_naming_both_alternatives(monkeypatch, no_keyring, backend):
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", backend)
    import keyring.core
    keyring.core._keyring_backend = None
    assert keyring_usable()[0] is False
    for call in (lambda: get_password("work", "imap"), lambda: set_password("work", "s3cret", "imap")):
        with pytest.raises(SecretError) as ei:
            call()
        msg = str(ei.value)
        assert "password_command" in msg and "keyring" in msg and "[accounts.imap]" in msg
        assert "s3cret" not in msg
    assert delete_password("work") is False


def test_keyring_round_trip_with_kind_and_account_fallback(file_keyring, tmp_path):
    assert keyring_usable() == (True, "keyrings.alt.file.PlaintextKeyring")
    set_password("work", "account-wide")
    set_password("work", "smtp-only", "smtp")
    assert get_password("work", "smtp") == "smtp-only"
    assert get_password("work", "imap") == "account-wide"
    assert delete_password("work", "smtp") is True
    assert get_password("work", "smtp") == "account-wide"
    assert delete_password("work", "smtp") is False
    with pytest.raises(SecretError, match="No password stored for account 'other'"):
        get_password("other", "imap")
    assert get_password("other", "imap", prompt=lambda q: f"typed for {q}") == "typed for Password for other (imap): "
    # the file is under the test's XDG data dir, never the user's
    assert list((tmp_path / "xdg" / "data").rglob("keyring_pass.cfg"))


def test_password_command_first_line_and_failures(no_keyring):
    py = sys.executable
    assert run_password_command(f"{py} -c \"print('hunter2'); print('ignored')\"") == "hunter2"
    with pytest.raises(SecretError) as ei:
        run_password_command(f"{py} -c \"import sys; sys.stderr.write('locked'); sys.exit(3)\" hunter2", "work")
    assert "exit status 3" in str(ei.value) and "locked" in str(ei.value)
    assert "hunter2" not in str(ei.value)   # arguments may hold secrets: never echoed
    with pytest.raises(SecretError, match="printed nothing"):
        run_password_command("true", "work")


def test_password_for_uses_the_servers_password_command(no_keyring):
    acc = Account("work", "bob@example.org", imap=Server("h", password_command="echo from-cmd"),
                  smtp=None)
    assert password_for(acc, "imap") == "from-cmd"
    assert password_for(acc, "smtp") is None
    bare = Account("w2", "b@example.org", imap=Server("h"))
    with pytest.raises(SecretError, match="password_command"):
        password_for(bare, "imap")
