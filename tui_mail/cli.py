"""`tui-mail` entry point, and the one argparse definition of the whole command line (the
help, the shell completions and the man page are generated from it).

    tui-mail [--config FILE] [--account NAME] [--ascii]    open the TUI
    tui-mail mailto:bob@example.org?subject=hi              the TUI with the composer filled in
    tui-mail demo                 two relays + the TUI, in a temp dir
    tui-mail web                  the TUI in a browser (one-time token login)
    tui-mail send …               send a message from a script (body on stdin)
    tui-mail account add|list|test
    tui-mail relay …              the bundled relay (relay.cli)
    tui-mail completion bash|zsh|fish, tui-mail man, tui-mail install …

``--config`` and ``--version`` are accepted everywhere, before or after the subcommand.
Subcommands import their modules lazily so `tui-mail relay …` never loads Textual.
"""

from __future__ import annotations

import argparse
import sys

COMMANDS = ("send", "account", "demo", "web", "relay", "completion", "man", "install")
DESCRIPTION = ("A keyboard-driven terminal mail client (IMAP, POP3, SMTP) with a bundled mail relay. "
               "Without a command it opens the mail reader on the accounts in config.toml.")
EPILOG = ("tui-mail mailto:ADDR?subject=… opens the composer filled in from a mailto: link (RFC 6068). "
          "Configuration: $TUI_MAIL_CONFIG or ~/.config/tui-mail/config.toml.")


def version() -> str:
    from tui_mail import __version__

    return __version__


class _LazyVersion(argparse._VersionAction):
    """``--version`` whose text is read from the package metadata only when it is shown
    (importlib.metadata costs ~25 ms, and the TUI builds this parser on every start)."""

    @property
    def version(self) -> str:
        return f"tui-mail {version()}"

    @version.setter
    def version(self, value) -> None:
        pass


def common_options() -> argparse.ArgumentParser:
    """Options every (sub)command takes; SUPPRESS so a subcommand's unset option never
    clobbers one given before the subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="config.toml to use (default: $TUI_MAIL_CONFIG, else "
                             "~/.config/tui-mail/config.toml)")
    common.add_argument("-V", "--version", action=_LazyVersion)
    return common


def add_tui_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--account", metavar="NAME", help="open this account first")
    p.add_argument("--ascii", action="store_true", help="ASCII flag marks instead of ● ★ ↩ ⊕")


def build_parser(parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser
                 ) -> argparse.ArgumentParser:
    """Every command and option of ``tui-mail`` (for dispatch, --help, completion, man)."""
    from relay.cli import _parser as relay_parser
    from tui_mail.commands import add_account_parser, add_send_parser
    from tui_mail.demo import DESCRIPTION as DEMO_DESCRIPTION
    from tui_mail.demo import add_arguments as add_demo_arguments

    common = common_options()
    p = parser_class(prog="tui-mail", description=DESCRIPTION, epilog=EPILOG, parents=[common])
    add_tui_arguments(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands", parser_class=parser_class)
    add_send_parser(sub, common)
    add_account_parser(sub, common)
    add_demo_arguments(sub.add_parser("demo", parents=[common], description=DEMO_DESCRIPTION,
                                      help="try it: two local relays and the TUI in a temp dir"))
    from tui_mail.web import DESCRIPTION as WEB_DESCRIPTION
    from tui_mail.web import add_arguments as add_web_arguments

    add_web_arguments(sub.add_parser("web", parents=[common], description=WEB_DESCRIPTION,
                                     help="the TUI in a browser on 127.0.0.1:8025, behind a one-time token"))
    sub.add_parser("relay", parents=[relay_parser()], add_help=False, description="The bundled mail relay.",
                   help="the bundled mail relay: start, stop, status, user, queue "
                        "(its --config is relay.toml)")
    comp = sub.add_parser("completion", parents=[common], help="print a shell completion script",
                          description="Print the completion script for a shell, e.g. "
                                      "`tui-mail completion bash > ~/.local/share/bash-completion/"
                                      "completions/tui-mail` (or use `tui-mail install --completion`).")
    comp.add_argument("shell", choices=("bash", "zsh", "fish"))
    sub.add_parser("man", parents=[common], help="print the manual page (roff)",
                   description="Print the man page, e.g. `tui-mail man | man -l -`.")
    inst = sub.add_parser("install", parents=[common],
                          help="install shell completion, the man page and the mailto: desktop handler",
                          description="Install into your home directory (XDG locations): shell "
                                      "completion for bash, zsh and fish, the man page, and a .desktop "
                                      "file registering tui-mail as the handler of mailto: links. "
                                      "Without options, all of them.")
    inst.add_argument("--completion", action="store_true", help="only the shell completions")
    inst.add_argument("--man", action="store_true", help="only the man page")
    inst.add_argument("--desktop", action="store_true",
                      help="only the .desktop file (and make it the default mailto: handler)")
    inst.add_argument("--terminal", metavar="COMMAND",
                      help="run the TUI in this terminal emulator from the .desktop file "
                           "(default: Terminal=true, the desktop's own choice)")
    inst.add_argument("--print", action="store_true", help="show what would be written where; write nothing")
    return p


def _first_command(argv: list[str]) -> tuple[int, str | None]:
    """(index, name) of the subcommand or mailto: URL in argv, skipping the global options."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--config", "--account"):
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        if a in COMMANDS or a[:7].lower() == "mailto:":
            return i, a
        return i, None
    return -1, None


def _version_flag(argv: list[str]) -> bool:
    return any(a in ("-V", "--version") for a in argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    at, command = _first_command(argv)
    before, rest = (argv[:at], argv[at + 1:]) if at >= 0 else (argv, [])
    if command == "relay":
        from relay.cli import main as relay_main

        return relay_main(_only_config(before) + rest)
    if command == "demo":
        from tui_mail.demo import main as demo_main

        return _exit_code(demo_main, _only_config(before) + rest)
    if command == "web":   # the TUI in a browser (tui_mail/web.py)
        from tui_mail.web import main as web_main

        return _exit_code(web_main, _only_config(before) + rest)
    if command in ("send", "account"):
        from tui_mail.commands import main as commands_main

        return commands_main(argv)
    if command in ("completion", "man", "install") or (command is None and ("-h" in argv or "--help" in argv)) \
            or (command is None and _version_flag(argv)):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:
            return int(e.code or 0)
        from tui_mail import install

        return install.run(args, build_parser())
    from tui_mail.ui.run import main as ui_main

    return _exit_code(ui_main, argv)


def _exit_code(run, argv: list[str]) -> int:
    """``run(argv)``, with argparse's exit (--help, --version, a usage error) as the result."""
    try:
        return run(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)


def _only_config(before: list[str]) -> list[str]:
    """The global options given before ``relay``/``demo`` that those commands take too."""
    out: list[str] = []
    i = 0
    while i < len(before):
        if before[i] == "--config" and i + 1 < len(before):
            out += before[i:i + 2]
            i += 2
            continue
        if before[i].startswith("--config=") or before[i] in ("-V", "--version"):
            out.append(before[i])
        i += 1
    return out


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
