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

        def toast() -> None:
            self.app.notify(text, title="TLS", severity="warning", timeout=10)

        if getattr(self.app, "_thread_id", None) == threading.get_ident():
            toast()
            return
        # from a worker thread: hand it to the app's loop without waiting (call_from_thread
        # would block this thread until the loop runs it, and the loop may be waiting for us)
        loop = getattr(self.app, "_loop", None)
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(toast)
            except RuntimeError:   # the loop closed meanwhile: the trace still has the warning
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
