"""Sink mode: the relay as a local test mail server (issue 15).

``tui-mail relay start --sink`` or ``[sink] enabled = true``: both SMTP listeners accept mail
for any recipient, nothing is ever delivered onward, and every message lands in one catch-all
mailbox, user ``sink`` (IMAP/POP3/HTTP read it), with the SMTP envelope recorded in
``X-Envelope-From``/``X-Envelope-To`` headers.

- envelope.py: pure rules (who needs AUTH, which recipients pass) and the envelope headers.
- smtp.py: the aiosmtpd handler hooks, storing straight into the sink mailbox.
- service.py: what RelayServer plugs in (handlers, the sink login, no onward delivery, HTTP).
- query.py: the client's search language → IMAP search keys (relay/imap/search.py runs them).
- message.py: a message as JSON (headers, text, html, attachments).
- http.py: the HTTP JSON API (aiohttp), shaped after Mailpit's.
"""

SINK_USER = "sink"
