"""`tui-mail` entry point.

    tui-mail                      open the TUI
    tui-mail demo                 two relays + the TUI, in a temp dir
    tui-mail send …               send a message from a script (body on stdin)
    tui-mail account add|list|test
    tui-mail relay …              the bundled relay (relay.cli)

Subcommands import their modules lazily so `tui-mail relay …` never loads Textual.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "relay":
        from relay.cli import main as relay_main

        return relay_main(argv[1:])
    if argv and argv[0] == "demo":
        from tui_mail.demo import main as demo_main

        return demo_main(argv[1:])
    if argv and argv[0] == "web":   # issue 15: the TUI in a browser (tui_mail/web.py)
        from tui_mail.web import main as web_main

        return web_main(argv[1:])
    if argv and argv[0] in ("send", "account"):
        from tui_mail.commands import main as commands_main

        return commands_main(argv)
    if argv and argv[0] in ("-V", "--version"):
        from tui_mail import __version__

        print(f"tui-mail {__version__}")
        return 0
    from tui_mail.ui.run import main as ui_main

    return ui_main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
