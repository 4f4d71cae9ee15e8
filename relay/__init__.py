"""The bundled mail relay: SMTP in (inbound and submission), a durable queue, local Maildir
delivery, onward delivery, and IMAP/POP3 access to its mailboxes.

Boundary: this package never imports tui_mail or textual (tests/test_imports.py)."""

__version__ = "0.1.0"
