"""`tui-mail` with no subcommand: load the config, build each account, run the app.

Failures a user can fix (no config yet, a bad key, no password) are printed as one plain
sentence with the fix, never a traceback.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str]) -> argparse.Namespace:
    from tui_mail.cli import add_tui_arguments, common_options

    p = argparse.ArgumentParser(prog="tui-mail", description="Keyboard-driven terminal mail client",
                                parents=[common_options()])
    add_tui_arguments(p)
    p.add_argument("mailto", nargs="?", metavar="MAILTO-URL",
                   help="open the composer filled in from a mailto: link (RFC 6068)")
    args = p.parse_args(argv)
    args.config = getattr(args, "config", None)
    return args


def main(argv: list[str] | None = None) -> int:
    from tui_mail.ui import startup

    startup.hold()        # no garbage collection until the first screen is out
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    from tui_mail.errors import MailError
    from tui_mail.ui.trace import TraceBuffer

    trace = TraceBuffer()
    start_mail = None
    if args.mailto:
        from tui_mail.mail.mailto import MailtoError, parse_mailto

        try:
            start_mail = parse_mailto(args.mailto)
        except MailtoError as e:
            print(f"tui-mail: {e}", file=sys.stderr)
            return 2
    try:
        accounts, settings = build(args, trace)
    except MailError as e:
        print(f"tui-mail: {e}", file=sys.stderr)
        return 2
    from tui_mail.ui.app import MailApp

    MailApp(accounts, settings, trace=trace, start_mail=start_mail).run()
    return 0


def settings_from(ui, ascii_only: bool = False):
    """tui_mail.config's [ui] table → the app's UISettings (key ids checked here)."""
    from tui_mail.errors import ConfigError
    from tui_mail.ui.app import UISettings
    from tui_mail.ui.keys import validate_keymap

    mark = "never" if ui.mark_read == "never" else "open"    # "delay": open, with the delay below
    try:
        keys = validate_keymap(ui.keys)
    except ValueError as e:
        raise ConfigError("config.toml", None, "keys", str(e), "use the ids listed by ? in the app") from None
    return UISettings(mark_read=mark, mark_read_delay=ui.mark_read_delay, preview=ui.preview,
                      theme=ui.theme or "textual-dark",
                      keys=keys, ascii=ascii_only,
                      address_book_command=getattr(ui, "address_book_command", None),
                      address_book_dir=getattr(ui, "address_book_dir", None),
                      notify_command=getattr(ui, "notify_command", None),
                      notify_terminal=getattr(ui, "notify_terminal", "auto"))


def build(args: argparse.Namespace, trace):
    """Accounts (ordered, --account first) and UI settings from the config file."""
    from tui_mail import config as cfgmod
    from tui_mail import secrets
    from tui_mail.accounts import open_account
    from tui_mail.errors import MailError

    cfg = cfgmod.load_config(args.config)
    settings = settings_from(cfg.ui, ascii_only=args.ascii)
    configured = list(cfg.accounts)
    if not configured:
        raise MailError(f"no accounts in {cfg.path}: run `tui-mail account add` (or try `tui-mail demo`)")
    if args.account:
        if args.account not in {a.name for a in configured}:
            raise MailError(f"no account named {args.account!r} in {cfg.path}")
        configured.sort(key=lambda a: a.name != args.account)
    return [open_account(a, secrets.password_for, trace=trace.sink(a.name)) for a in configured], settings
