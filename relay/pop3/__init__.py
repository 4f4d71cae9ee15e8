"""The relay's POP3 server (RFC 1939 + CAPA, STLS, UIDL, TOP, USER, AUTH PLAIN) over relay.store.

``start_pop3_server`` (server.py) is the entry point; protocol.py is the pure state machine.
"""

from relay.pop3.server import start_pop3_server

__all__ = ["start_pop3_server"]
