"""config.toml: loading, validation errors that name file/line/key/fix, saving without secrets."""

from __future__ import annotations

import os
import tomllib

import pytest

from tui_mail.config import (Account, Pop3Server, Server, cache_dir, config_path, data_dir, load_config,
                             parse_config, save_account)
from tui_mail.errors import ConfigError

GOOD = '''
[ui]
mark_read = "delay:2.5"
theme = "textual-light"
preview = false

[keys]
delete = "x"

[[accounts]]
name = "work"
address = "bob@example.org"
display_name = "Bob B"
signature = "-- \\nBob"
[accounts.imap]
host = "imap.example.org"
port = 993
user = "bob"
password_command = "pass show work"
[accounts.smtp]
host = "smtp.example.org"
[accounts.roles]
sent = "Sent Items"

[[accounts]]
name = "home"
address = "bob@home.example"
[accounts.pop3]
host = "pop.home.example"
security = "starttls"
mode = "leave"
leave_days = 3
'''


def test_a_full_config_loads_into_frozen_dataclasses(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text(GOOD)
    cfg = load_config(p)
    assert cfg.ui.mark_read == "delay" and cfg.ui.mark_read_delay == 2.5
    assert cfg.ui.theme == "textual-light" and cfg.ui.preview is False and cfg.ui.keys == {"delete": "x"}
    work = cfg.account("work")
    assert work.imap == Server("imap.example.org", 993, "tls", "bob", "pass show work")
    assert work.smtp.security == "starttls" and work.smtp.port is None
    assert work.roles == {"sent": "Sent Items"} and work.pop3 is None
    assert work.signature == "-- \nBob"
    home = cfg.account("home")
    assert home.pop3 == Pop3Server("pop.home.example", None, "starttls", mode="leave", leave_days=3)
    assert home.incoming is home.pop3
    with pytest.raises(AttributeError):
        work.name = "x"  # frozen
    with pytest.raises(ConfigError, match="no account named 'nope'"):
        cfg.account("nope")


def test_missing_file_is_an_empty_config_and_locations_follow_env(tmp_path, monkeypatch):
    cfg = load_config()
    assert cfg.accounts == () and cfg.ui.mark_read == "open" and cfg.ui.preview
    assert config_path() == tmp_path / "xdg" / "config" / "tui-mail" / "config.toml"
    monkeypatch.setenv("TUI_MAIL_CONFIG", str(tmp_path / "other.toml"))
    assert config_path() == tmp_path / "other.toml"
    assert config_path(tmp_path / "explicit.toml") == tmp_path / "explicit.toml"
    assert data_dir() == tmp_path / "xdg" / "data" / "tui-mail"
    monkeypatch.setenv("TUI_MAIL_DATA", str(tmp_path / "d"))
    assert data_dir() == tmp_path / "d"
    assert cache_dir() == tmp_path / "xdg" / "cache" / "tui-mail"


@pytest.mark.parametrize("text, line, key, words", [
    ('[[accounts]]\nname = "a"\naddress = "a@b"\n[accounts.imap]\nhost = "h"\nsecurity = "ssl"\n',
     6, "accounts[0].imap.security", "starttls"),
    ('[[accounts]]\nname = "a"\naddress = "a@b"\n[accounts.imap]\nhost = "h"\nport = 99999\n',
     6, "accounts[0].imap.port", "1–65535"),
    ('[[accounts]]\nname = "a"\n', 1, "accounts[0].address", "add address"),
    ('[[accounts]]\nname = "a"\naddress = "nope"\n[accounts.imap]\nhost = "h"\n', 3,
     "accounts[0].address", "e-mail address"),
    ('[[accounts]]\nname = "a"\naddress = "a@b"\n', 1, "accounts[0].imap", "exactly one"),
    ('[ui]\nmark_read = "sometimes"\n', 2, "ui.mark_read", "delay:N"),
    ('[ui]\ncolour = 1\n', 2, "ui.colour", "unknown setting"),
    ('[[accounts]]\nname = "a"\naddress = "a@b"\n[accounts.imap]\nhost = "h"\npassword = "x"\n',
     6, "accounts[0].imap.password", "password_command"),
    ('[[accounts]]\nname = "a"\naddress = "a@b"\n[accounts.pop3]\nhost = "h"\nmode = "sometimes"\n',
     6, "accounts[0].pop3.mode", "leave"),
    ('[[accounts]]\nname = "a"\naddress = "a@b"\n[accounts.imap]\nhost = "h"\n[accounts.roles]\nspam = "S"\n',
     7, "accounts[0].roles.spam", "junk"),
])
def test_errors_name_file_line_key_and_fix(tmp_path, text, line, key, words):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    e = ei.value
    assert (e.file, e.line, e.key) == (str(p), line, key)
    assert words in str(e) and e.fix


def test_toml_syntax_error_names_the_line():
    with pytest.raises(ConfigError) as ei:
        parse_config('[ui]\nmark_read = open\n', "x.toml")
    assert ei.value.line == 2 and "not valid TOML" in str(ei.value)


def test_duplicate_account_names_are_refused():
    text = '[[accounts]]\nname="a"\naddress="a@b"\n[accounts.imap]\nhost="h"\n' * 2
    with pytest.raises(ConfigError, match="two accounts are named 'a'"):
        parse_config(text)


def test_save_account_adds_replaces_keeps_other_settings_and_never_writes_a_password(tmp_path):
    p = tmp_path / "cfg" / "config.toml"
    acc = Account("work", "bob@example.org", display_name="Bob",
                  imap=Server("imap.example.org", user="bob"), smtp=Server("smtp.example.org", 587, "starttls"),
                  roles={"trash": "Bin"})
    save_account(acc, p)
    assert load_config(p).accounts == (acc,)
    assert os.stat(p).st_mode & 0o777 == 0o600
    with p.open("a") as f:
        f.write('\n[ui]\ntheme = "nord"\n')
    home = Account("home", "b@home.example", pop3=Pop3Server("pop.home.example", mode="delete"))
    save_account(home, p)
    changed = Account("work", "bob@example.org", imap=Server("imap2.example.org", password_command="pass x"))
    save_account(changed, p)
    cfg = load_config(p)
    assert cfg.accounts == (changed, home) and cfg.ui.theme == "nord"
    text = p.read_text()
    assert "password =" not in text and "password_command" in text
    assert tomllib.loads(text)["accounts"][0]["imap"]["host"] == "imap2.example.org"


def test_save_account_refuses_to_rewrite_a_broken_file(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text("[ui]\nmark_read = nope\n")
    with pytest.raises(ConfigError):
        save_account(Account("a", "a@b", imap=Server("h")), p)
    assert p.read_text() == "[ui]\nmark_read = nope\n"


COMMENTED = '''# my mail setup -- keep this comment
[ui]
theme = "nord"   # dark, like my terminal

# the job
[[accounts]]
name = "work"
address = "bob@example.org"
password_command = "pass show mail/work"   # one password for every server
[accounts.imap]
host = "imap.example.org"   # via the VPN
[accounts.smtp]
host = "smtp.example.org"
password_command = "pass show mail/smtp"   # this one differs

# at home
[[accounts]]
name = "home"
address = "b@home.example"
[accounts.pop3]
host = "pop.home.example"
'''


def test_account_level_password_and_token_commands_are_inherited():
    cfg = parse_config(COMMENTED)
    work = cfg.account("work")
    assert work.password_command == "pass show mail/work"
    assert work.imap.password_command == "pass show mail/work"           # inherited
    assert work.smtp.password_command == "pass show mail/smtp"           # its own wins
    assert cfg.account("home").pop3.password_command is None
    tok = parse_config(COMMENTED.replace('password_command = "pass show mail/work"',
                                         'token_command = "oauth2-token work"'))
    assert tok.account("work").imap.token_command == tok.account("work").smtp.token_command == "oauth2-token work"


def test_save_account_keeps_comments_and_accounts_layout(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text(COMMENTED)
    save_account(Account("new", "n@example.net", imap=Server("imap.example.net", 993, "tls"),
                         password_command="pass show mail/new"), p)
    work = parse_config(COMMENTED).account("work")
    save_account(Account(work.name, work.address, imap=Server("imap2.example.org", password_command=work.imap.password_command),
                         smtp=work.smtp, password_command=work.password_command), p)
    text = p.read_text()
    for line in ("# my mail setup -- keep this comment", 'theme = "nord"   # dark, like my terminal',
                 "# the job", "# at home", 'password_command = "pass show mail/work"   # one password for every server',
                 'password_command = "pass show mail/smtp"   # this one differs'):
        assert line in text, line
    assert text.count("[[accounts]]") == 3 and "[accounts.imap]" in text and "{" not in text
    assert 'host = "imap2.example.org"' in text
    cfg = load_config(p)
    assert [a.name for a in cfg.accounts] == ["work", "home", "new"]
    assert cfg.account("work").imap.password_command == "pass show mail/work"
    new = text[text.index('name = "new"'):]
    assert 'password_command = "pass show mail/new"' in new and new.count("password_command") == 1  # inherited
    # line numbers in errors still point into the user's layout
    bad = text.replace('host = "pop.home.example"', 'host = "pop.home.example"\nport = "x"')
    with pytest.raises(ConfigError) as e:
        parse_config(bad)
    assert e.value.line == bad.splitlines().index('port = "x"') + 1


def test_tls_keys_and_fingerprint_normalised():
    fp = "sha256:" + ":".join(["AB"] * 32)
    cfg = parse_config(f'[[accounts]]\nname = "a"\naddress = "a@b.org"\n[accounts.imap]\nhost = "h"\n'
                       f'tls_fingerprint = "{fp}"\ntls_verify = false\nauth = "oauth2"\n')
    imap = cfg.account("a").imap
    assert imap.tls_fingerprint == "sha256:" + "ab" * 32 and imap.tls_verify is False and imap.auth == "oauth2"
    for bad, what in (('tls_fingerprint = "sha1:ab"', "fingerprint"), ('tls_verify = "no"', "true or false"),
                      ('auth = "kerberos"', "login method")):
        with pytest.raises(ConfigError, match=what) as e:
            parse_config(f'[[accounts]]\nname = "a"\naddress = "a@b.org"\n[accounts.imap]\nhost = "h"\n{bad}\n')
        assert e.value.line == 6
