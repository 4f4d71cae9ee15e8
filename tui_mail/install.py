"""``tui-mail completion SHELL``, ``tui-mail man`` and ``tui-mail install``: what a desktop
and a shell need to know about tui-mail, generated from the argparse definitions
(tui_mail.cli.build_parser) so they never drift from the real options.

- completion scripts: ``shtab`` (bash, zsh, fish)
- the man page: ``argparse-manpage``
- a freedesktop ``.desktop`` file that registers ``tui-mail %u`` as the ``mailto:`` handler
  (``xdg-mime default`` makes it the default when xdg-utils is installed)

``install`` writes into the user's XDG directories only (never system paths, never sudo),
atomically, and prints each path; ``--print`` shows them without writing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DESKTOP_ID = "tui-mail.desktop"


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    import shtab

    return shtab.complete(parser, shell=shell)


def man_page(parser: argparse.ArgumentParser) -> str:
    from argparse_manpage.manpage import Manpage

    from tui_mail.cli import version

    page = Manpage(parser, _data={"project_name": "tui-mail", "version": version(),
                                  "manual_title": "tui-mail manual",
                                  "description": "a keyboard-driven terminal mail client with a bundled mail relay"})
    return str(page)


def _desktop_exec_arg(path: str) -> str:
    """A path as one argument of a .desktop Exec key (Desktop Entry spec, "Exec key")."""
    if not any(c in path for c in ' \t\n"\'\\><~|&;$*?#()`'):
        return path
    escaped = path.replace("\\", "\\\\\\\\").replace('"', '\\\\"').replace("`", "\\\\`").replace("$", "\\\\$")
    return f'"{escaped}"'


def desktop_entry(program: str, terminal: str | None = None) -> str:
    """The .desktop file: ``program mailto:…`` in a terminal, registered for mailto: links."""
    run = _desktop_exec_arg(program) + " %u"
    if terminal:
        exec_line, term = f"{_desktop_exec_arg(terminal)} -e {run}", "false"
    else:
        exec_line, term = run, "true"
    return ("[Desktop Entry]\n"
            "Type=Application\n"
            "Name=tui-mail\n"
            "GenericName=Mail Client\n"
            "Comment=Read and write mail in the terminal\n"
            f"Exec={exec_line}\n"
            f"Terminal={term}\n"
            "Categories=Network;Email;ConsoleOnly;\n"
            "Keywords=mail;email;imap;smtp;\n"
            "MimeType=x-scheme-handler/mailto;\n")


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value and os.path.isabs(value) else Path.home() / default


def targets() -> dict[str, Path]:
    data, config = _xdg("XDG_DATA_HOME", ".local/share"), _xdg("XDG_CONFIG_HOME", ".config")
    return {
        "bash": data / "bash-completion" / "completions" / "tui-mail",
        "zsh": data / "zsh" / "site-functions" / "_tui-mail",
        "fish": config / "fish" / "completions" / "tui-mail.fish",
        "man": data / "man" / "man1" / "tui-mail.1",
        "desktop": data / "applications" / DESKTOP_ID,
    }


def program_path() -> str:
    """The absolute path of the ``tui-mail`` script being run (for the .desktop file)."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if argv0 and os.path.basename(argv0) == "tui-mail" and os.path.exists(argv0):
        return os.path.abspath(argv0)
    return shutil.which("tui-mail") or os.path.join(os.path.dirname(sys.executable), "tui-mail")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install(args, parser: argparse.ArgumentParser, out=None) -> int:
    out = out or sys.stdout
    everything = not (args.completion or args.man or args.desktop)
    where = targets()
    files: dict[str, str] = {}
    if everything or args.completion:
        for shell in ("bash", "zsh", "fish"):
            files[shell] = completion_script(parser, shell)
    if everything or args.man:
        files["man"] = man_page(parser)
    if everything or args.desktop:
        files["desktop"] = desktop_entry(program_path(), args.terminal)
    for kind, text in files.items():
        if args.print:
            print(f"would write {where[kind]} ({len(text)} bytes)", file=out)
            continue
        _write(where[kind], text)
        print(f"wrote {where[kind]}", file=out)
    if args.print:
        return 0
    if "zsh" in files:
        print(f"zsh: add  fpath+=({where['zsh'].parent})  before compinit in ~/.zshrc", file=out)
    if "man" in files:
        print("man: `man tui-mail` finds it when ~/.local/bin is on PATH (else: "
              f"export MANPATH=\"{where['man'].parent.parent}:$MANPATH\")", file=out)
    if "desktop" in files:
        xdg_mime = shutil.which("xdg-mime")
        if xdg_mime:
            done = subprocess.run([xdg_mime, "default", DESKTOP_ID, "x-scheme-handler/mailto"],
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
            print("mailto: links now open tui-mail" if done.returncode == 0 else
                  f"xdg-mime could not set the mailto: handler (exit {done.returncode})", file=out)
        else:
            print("mailto: install xdg-utils and run  xdg-mime default tui-mail.desktop "
                  "x-scheme-handler/mailto  to make tui-mail the default", file=out)
    return 0


def run(args, parser: argparse.ArgumentParser) -> int:
    """Dispatch for the documentation commands (tui_mail.cli)."""
    if args.command == "completion":
        sys.stdout.write(completion_script(parser, args.shell))
        return 0
    if args.command == "man":
        sys.stdout.write(man_page(parser))
        return 0
    if args.command == "install":
        return install(args, parser)
    parser.print_help()
    return 0
