"""The relay's IMAP4rev1 server (issue 4): users' mail from relay.store, served over IMAP.

- parser.py: sans-I/O protocol core (commands from bytes, values to bytes, grammar pieces)
- fetch.py / search.py: pure FETCH and SEARCH evaluation over message bytes and index data
- session.py: the per-connection state machine (every RFC 3501 command plus IDLE, UIDPLUS,
  MOVE, CONDSTORE, ENABLE, ID, NAMESPACE, UNSELECT, SPECIAL-USE)
- backend.py: the narrow Mailbox contract the session needs (relay.store.UserStore meets it)
- server.py: asyncio glue: listener, TLS/STARTTLS, IDLE woken by the ChangeBus, timeouts;
  ``start_for_relay`` opens the listener for relay.server.RelayServer
"""
