"""The bundled mail relay: SMTP in (inbound and submission), a durable queue, local Maildir
delivery, onward delivery, and IMAP/POP3 access to its mailboxes.

Boundary: this package never imports tui_mail or textual (tests/test_imports.py)."""

def _version() -> str:
    """The installed distribution's version (pyproject.toml is the one place it is written)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tui-mail")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


__version__ = _version()
