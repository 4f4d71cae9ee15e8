"""imapclient's client and imaplib connections with the guards of tui_mail.store.guard.

Apart from imap.py so that importing the store (to build an account and paint its folder
from the header cache) does not import imapclient: that costs ~20 ms (its version lookup
goes through importlib.metadata), paid here on the first connect, after the first screen.
"""

from __future__ import annotations

import socket

from imapclient import IMAPClient, imap4, tls

from tui_mail.store.guard import _Guarded, current


class GuardedIMAP4(_Guarded, imap4.IMAP4WithTimeout):
    pass


class GuardedIMAP4TLS(_Guarded, tls.IMAP4_TLS):
    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        # as imapclient's, but the plain socket is handed to the deadline before the TLS
        # handshake, so a server dripping its handshake is cut off too
        sock = socket.create_connection((self.host, self.port), timeout=timeout or self._timeout)
        deadline = current()
        if deadline is not None:
            deadline.attach(sock)
        return tls.wrap_socket(sock, self.ssl_context, self.host)


class GuardedClient(IMAPClient):
    """IMAPClient over the guarded imaplib classes: a cap on literals from the first byte of
    the greeting, and sockets a Deadline can cut."""

    def _create_IMAP4(self):
        connect_timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return GuardedIMAP4TLS(self.host, self.port, self.ssl_context, connect_timeout)
        return GuardedIMAP4(self.host, self.port, connect_timeout)
