"""What a sink-mode RelayServer plugs in: the login ``sink``, no onward delivery, handlers, HTTP.

The sink login lives in memory, not in the users file: its password comes from ``[sink]
password``, or, when that is empty, a random one made once and kept in
``<data_dir>/sink.password`` (0600) so clients can read it and it survives restarts. It is
never logged.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from pathlib import Path

from relay.config import Address, RelayConfig
from relay.private import private_file
from relay.remote import DeliveryResult
from relay.sink import SINK_USER
from relay.sink.smtp import SinkHandler
from relay.users import UserDB

log = logging.getLogger(__name__)


def password_file(cfg: RelayConfig) -> Path:
    return cfg.data_dir / "sink.password"


def sink_password(cfg: RelayConfig) -> str:
    """The configured password, else the one in sink.password (made on first use)."""
    if cfg.sink.password:
        return cfg.sink.password
    path = password_file(cfg)
    try:
        text = path.read_text(encoding="utf-8").strip()
        if text:
            return text
    except FileNotFoundError:
        pass
    pw = secrets.token_urlsafe(18)
    with open(private_file(path), "w", encoding="utf-8") as fh:
        fh.write(pw + "\n")
    return pw


def banner(cfg: RelayConfig) -> str:
    """What `relay start --sink` prints (where the password is, never the password)."""
    where = "[sink] password in relay.toml" if cfg.sink.password else str(password_file(cfg))
    return ("sink mode: mail to any address is kept, nothing is delivered onward;\n"
            f"  read it over IMAP/POP3 as user 'sink' (password: {where}) or HTTP /api/v1/messages")


class SinkUsers:
    """The relay's UserDB plus the in-memory login ``sink`` (case-insensitive)."""

    def __init__(self, users: UserDB, password: str):
        self._users = users
        self._password = password.encode("utf-8")

    def exists(self, address: str) -> bool:
        return address.strip().lower() == SINK_USER or self._users.exists(address)

    def authenticate(self, address: str, password: str) -> bool:
        if address.strip().lower() == SINK_USER:
            return hmac.compare_digest(password.encode("utf-8", "surrogateescape"), self._password)
        return self._users.authenticate(address, password)

    def __getattr__(self, name):   # list(), add(), … as the real UserDB
        return getattr(self._users, name)


class NoOnward:
    """The runner's onward deliverer in a sink: never connects anywhere; anything that was in
    the queue from before stays there (deferred) until the relay runs without --sink."""

    async def deliver(self, entry, recipients: list[str]) -> dict[str, DeliveryResult]:
        return dict.fromkeys(recipients, DeliveryResult("deferred", 451, "sink mode: no onward delivery", "4.3.2"))


class SinkService:
    def __init__(self, server) -> None:
        self.server = server
        self.cfg: RelayConfig = server.cfg
        self.http_runner = None

    def prepare(self) -> None:
        """Before the listeners open: the sink login (IMAP, POP3, SMTP AUTH)."""
        self.server.users = SinkUsers(self.server.users, sink_password(self.cfg))

    def no_onward(self) -> None:
        """After the queue services started: replace the onward scheduler."""
        self.server.runner.remote = NoOnward()

    def store(self):
        return self.server.mail_store.user(SINK_USER)

    def smtp_handler(self, name: str, addr: Address, submission: bool) -> SinkHandler:
        return SinkHandler(self.cfg, self.server.users, self.server.throttle, submission=submission,
                           listen_host=addr.host, store=self.store)

    async def start_http(self) -> tuple[str, int] | None:
        if self.cfg.listen.http is None:
            return None
        from relay.sink.http import start_http
        self.http_runner, bound = await start_http(self, self.cfg.listen.http)
        return bound

    async def close(self) -> None:
        if self.http_runner is not None:
            runner, self.http_runner = self.http_runner, None
            await runner.cleanup()
