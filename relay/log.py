"""The relay's mail log: one line per event with the queue ID, in Postfix's shape.

    Nov 23 09:44:22 localhost relay[4242]: 0192A…: from=<alice@crepes.fr>, size=1234, nrcpt=1
    Nov 23 09:44:22 localhost relay[4242]: 0192A…: to=<bob@hamburger.edu>, status=sent (delivered to maildir)

Lines go to ``cfg.log_file`` and, in the foreground, to stderr. Only envelope facts are logged:
never message bodies, never passwords or AUTH data (the SMTP layer logs only the mechanism and
the login name).
"""

from __future__ import annotations

import logging
import os
import sys
import time

from relay.config import RelayConfig
from relay.limits import OncePerSecond
from relay.private import private_dir, private_file

MAIL_LOGGER = "relay"


class PostfixFormatter(logging.Formatter):
    def __init__(self, hostname: str):
        super().__init__()
        self.hostname = hostname

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime(record.created))
        msg = record.getMessage()
        if record.levelno >= logging.WARNING and not msg.startswith(("warning:", "error:", "fatal:")):
            msg = f"{record.levelname.lower()}: {msg}"
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return f"{stamp} {self.hostname} relay[{os.getpid()}]: {msg}"


def setup_logging(cfg: RelayConfig, *, foreground: bool, level: int = logging.INFO) -> list[logging.Handler]:
    """Attach file (and stderr) handlers to the ``relay`` logger; returns them for teardown."""
    logger = logging.getLogger(MAIL_LOGGER)
    logger.setLevel(level)
    logger.propagate = False
    fmt = PostfixFormatter(cfg.hostname)
    private_dir(cfg.log_file.parent)
    private_file(cfg.log_file)   # senders, recipients and logins: 0600 (issue 10)
    handlers: list[logging.Handler] = [logging.FileHandler(cfg.log_file, encoding="utf-8")]
    if foreground:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(OncePerSecond())   # a flood of one warning: one line a second, with a count
        logger.addHandler(h)
    # aiosmtpd logs every connection at INFO; keep only its warnings, one a second per kind,
    # without tracebacks (clients can cause them at will, e.g. by dropping a STARTTLS handshake)
    quiet_third_party()
    return handlers


_QUIET = OncePerSecond(tracebacks=False)


def quiet_third_party() -> None:
    """aiosmtpd's and asyncio's own loggers: warnings and up, rate-limited, no tracebacks."""
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    for name in ("mail.log", "asyncio"):
        lg = logging.getLogger(name)
        if _QUIET not in lg.filters:
            lg.addFilter(_QUIET)


def teardown_logging(handlers: list[logging.Handler]) -> None:
    logger = logging.getLogger(MAIL_LOGGER)
    for h in handlers:
        logger.removeHandler(h)
        h.close()


def maillog() -> logging.Logger:
    return logging.getLogger(MAIL_LOGGER + ".mail")
