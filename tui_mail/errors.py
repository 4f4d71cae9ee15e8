"""The client's error tree. Library exceptions (imaplib, poplib, aiosmtplib, ssl, OSError…)
are converted at the store/send boundary into these, each with a message a user can act on."""

from __future__ import annotations


class MailError(Exception):
    """Base of every error the client raises on purpose; ``str()`` is fit to show a user."""


class ConfigError(MailError):
    """config.toml is wrong: names the file, line, key and fix."""

    def __init__(self, file: str, line: int | None, key: str | None, expected: str, fix: str | None = None):
        self.file, self.line, self.key, self.expected, self.fix = file, line, key, expected, fix
        where = file + (f", line {line}" if line else "")
        msg = f"{where}: {key}: {expected}" if key else f"{where}: {expected}"
        if fix:
            msg += f" (fix: {fix})"
        super().__init__(msg)


class ConnectError(MailError, ConnectionError):
    """The server could not be reached, or the connection dropped."""


class TLSError(ConnectError):
    """TLS handshake or certificate verification failed."""


class AuthError(MailError):
    """The server refused the user name or password."""


class SecretError(MailError):
    """No password could be obtained (no keyring backend, password_command failed…)."""


class ProtocolError(MailError):
    """The server answered something we cannot use (NO/BAD/-ERR with its text)."""


class FolderError(MailError):
    """A folder does not exist, already exists, or cannot be changed."""


class MessageGone(MailError):
    """The message was expunged or moved by another client."""


class SendError(MailError):
    """Submission failed. ``permanent`` tells a 5xx (do not retry) from a 4xx/network error."""

    def __init__(self, message: str, permanent: bool = False, code: int | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.code = code


class SearchSyntaxError(MailError):
    """The search query has a bad token; ``token`` and ``position`` say which."""

    def __init__(self, message: str, token: str = "", position: int = 0):
        super().__init__(message)
        self.token = token
        self.position = position
