"""TLS warnings as toasts: ``tls_verify = false`` is warned on every connect ("certificate of
IMAP host:993 NOT checked…") on the ``tui_mail.tls`` logger, from whichever thread connects.
In the TUI they become warning toasts; without a handler Python's last-resort handler would
print them over the screen."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

LOGGER = "tui_mail.tls"


class ToastHandler(logging.Handler):
    def __init__(self, app) -> None:
        super().__init__(logging.WARNING)
        self.app = app

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        try:
            if getattr(self.app, "_thread_id", None) == threading.get_ident():
                self.app.notify(text, title="TLS", severity="warning", timeout=10)
            else:
                self.app.call_from_thread(self.app.notify, text, title="TLS", severity="warning", timeout=10)
        except RuntimeError:   # the app is not running (closing): the trace still has it
            pass


def install(app) -> Callable[[], None]:
    """Route TLS warnings to ``app``'s toasts; returns the function that undoes it."""
    logger = logging.getLogger(LOGGER)
    handler, saved = ToastHandler(app), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False

    def undo() -> None:
        logger.removeHandler(handler)
        logger.propagate = saved
    return undo
