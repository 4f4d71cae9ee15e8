"""One error tree for the relay; every error carries a message an operator can act on."""

from __future__ import annotations


class RelayError(Exception):
    """Base of every error the relay raises on purpose."""


class ConfigError(RelayError):
    """relay.toml is wrong: names the file, the line, the key, what was expected and the fix."""

    def __init__(self, file: str, line: int | None, key: str | None, expected: str, fix: str | None = None):
        self.file, self.line, self.key, self.expected, self.fix = file, line, key, expected, fix
        where = file + (f", line {line}" if line else "")
        what = f"{key}: {expected}" if key else expected
        msg = f"{where}: {what}"
        if fix:
            msg += f" (fix: {fix})"
        super().__init__(msg)


class QueueError(RelayError):
    """The queue could not store or read a message (disk full, permissions, corruption)."""


class NotRunning(RelayError):
    """A command needs the relay running and it is not."""
