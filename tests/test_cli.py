"""The `tui-mail` command line as a whole: --config and --version everywhere, --help that
lists every command, generated completion scripts (run in a real bash) and man page, the
desktop/mailto install, and `tui-mail mailto:…` opening a filled-in composer."""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tui_mail import cli, install

CONFIG = """# my accounts, with comments that must survive
[[accounts]]
name = "work"
address = "me@example.org"
[accounts.imap]
host = "127.0.0.1"
port = 1
password_command = "echo secret"
[accounts.smtp]
host = "127.0.0.1"
port = 1
security = "none"
"""


def all_parsers(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name != "_launch":
                    yield from all_parsers(sub, (*path, name))


def test_help_lists_every_command_with_one_line(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("send", "account", "demo", "relay", "completion", "man", "install"):
        assert f"\n    {name} " in out, name
    assert "--config" in out and "--version" in out and "mailto:" in out


def test_every_command_takes_config_and_version_and_no_internal_metavars():
    for path, parser in all_parsers(cli.build_parser()):
        options = {o for a in parser._actions for o in a.option_strings}
        assert {"--config", "--version"} <= options, path
        help_text = parser.format_help()
        assert "FROM_" not in help_text and "==SUPPRESS==" not in help_text, path


def test_send_help_says_the_body_comes_from_stdin(capsys):
    assert cli.main(["send", "--help"]) == 0
    assert "read from standard input" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("argv", [["--version"], ["send", "--version"], ["account", "list", "--version"],
                                  ["demo", "--version"], ["relay", "--version"], ["relay", "queue", "--version"],
                                  ["man", "--version"]])
def test_version_everywhere_from_package_metadata(argv, capsys):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith(version("tui-mail")), out


def test_relay_version_is_not_hard_coded():
    import relay
    import tui_mail

    assert relay.__version__ == tui_mail.__version__ == version("tui-mail")


@pytest.mark.parametrize("argv", [["--config", "{c}", "account", "list"], ["account", "list", "--config", "{c}"],
                                  ["account", "--config", "{c}", "list"], ["--config={c}", "account", "list"]])
def test_config_before_or_after_the_command(argv, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    assert cli.main([a.format(c=cfg) for a in argv]) == 0
    assert "me@example.org" in capsys.readouterr().out


@pytest.mark.parametrize("before", [True, False])
def test_send_takes_config_on_either_side(before, tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    monkeypatch.setattr(sys, "stdin", io.StringIO("body\n"))
    opts = ["--config", str(cfg)]
    argv = (opts + ["send"] if before else ["send"] + opts) + ["--account", "work", "--to", "bob@example.org",
                                                               "--queue-only"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "Queued in the Outbox of work" in capsys.readouterr().out


def test_usage_error_keeps_bracketed_text(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.split("[accounts.smtp]")[0])
    assert cli.main(["send", "--config", str(cfg), "--account", "work", "--to", "b@x.org"]) == 2
    assert "[smtp]" in capsys.readouterr().err


def test_first_command_skips_global_options():
    assert cli._first_command(["--config", "send", "account", "list"]) == (2, "account")
    assert cli._first_command(["--ascii", "mailto:a@b.org"]) == (1, "mailto:a@b.org")
    assert cli._first_command(["--account", "w"]) == (-1, None)


# --- completion, man page, install ------------------------------------------------------------
@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion_completes_commands_and_options(tmp_path):
    script = tmp_path / "tui-mail.bash"
    script.write_text(install.completion_script(cli.build_parser(), "bash"))
    probe = f"""source {script}
complete_words() {{ COMP_WORDS=("$@"); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); COMPREPLY=(); _shtab_tui_mail; echo "${{COMPREPLY[*]}}"; }}
complete_words tui-mail ac
complete_words tui-mail account a
complete_words tui-mail send --su
complete_words tui-mail relay qu
"""
    out = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True, timeout=30)
    assert out.stdout.splitlines() == ["account", "add", "--subject", "queue"], out.stderr


def test_zsh_and_fish_scripts_are_generated():
    parser = cli.build_parser()
    zsh = install.completion_script(parser, "zsh")
    fish = install.completion_script(parser, "fish")
    assert zsh.startswith("#compdef tui-mail") and "account" in zsh and "--config" in zsh
    assert "complete -c tui-mail" in fish and "relay" in fish


@pytest.mark.skipif(shutil.which("man") is None, reason="no man")
def test_man_page_renders_with_every_command(tmp_path):
    page = tmp_path / "tui-mail.1"
    page.write_text(install.man_page(cli.build_parser()))
    out = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "100"})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for piece in ("tui-mail send", "tui-mail account", "tui-mail relay", "--config", version("tui-mail")):
        assert piece in text, piece


def test_install_writes_every_file_into_xdg_dirs(tmp_path, capsys):
    assert cli.main(["install"]) == 0
    out = capsys.readouterr().out
    data, conf = Path(os.environ["XDG_DATA_HOME"]), Path(os.environ["XDG_CONFIG_HOME"])
    written = {data / "bash-completion/completions/tui-mail", data / "zsh/site-functions/_tui-mail",
               conf / "fish/completions/tui-mail.fish", data / "man/man1/tui-mail.1",
               data / "applications/tui-mail.desktop"}
    for path in written:
        assert path.is_file() and f"wrote {path}" in out
    desktop = (data / "applications/tui-mail.desktop").read_text()
    assert "MimeType=x-scheme-handler/mailto;" in desktop and " %u\n" in desktop
    assert "Terminal=true" in desktop


def test_install_print_writes_nothing(capsys):
    assert cli.main(["install", "--man", "--print"]) == 0
    assert "would write" in capsys.readouterr().out
    assert not (Path(os.environ["XDG_DATA_HOME"]) / "man").exists()


def test_desktop_exec_quoting():
    assert install._desktop_exec_arg("/usr/bin/tui-mail") == "/usr/bin/tui-mail"
    assert install._desktop_exec_arg("/home/a b/tui-mail") == '"/home/a b/tui-mail"'
    entry = install.desktop_entry("/opt/tm/tui-mail", terminal="foot")
    assert "Exec=foot -e /opt/tm/tui-mail %u" in entry and "Terminal=false" in entry


# --- mailto: opens the composer ---------------------------------------------------------------
async def test_mailto_opens_the_composer_filled_in():
    from textual.widgets import Input, TextArea

    from test_ui_app import SIZE, make_app, settle
    from tui_mail.mail.mailto import parse_mailto
    from tui_mail.ui.screens.compose import ComposeScreen

    app, _, _ = make_app()
    app.start_mail = parse_mailto("mailto:carol@example.org?subject=hi&cc=dave@example.org"
                                  "&body=line%20one%0D%0Aline%20two&attach=/etc/passwd")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: isinstance(app.screen, ComposeScreen))
        screen = app.screen
        assert screen.query_one("#to", Input).value == "carol@example.org"
        assert screen.query_one("#cc", Input).value == "dave@example.org"
        assert screen.query_one("#subject", Input).value == "hi"
        assert screen.query_one(TextArea).text.startswith("line one\nline two\n")
        assert screen.attachments == []
        assert any("attach" in str(n.message) for n in app._notifications)
