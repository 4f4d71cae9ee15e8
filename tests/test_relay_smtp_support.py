"""Shared helpers for the relay tests (no tests here): a RelayServer on port 0 in the test's
own event loop with two users, and a raw-socket SMTP dialogue for byte-level tests."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from relay.config import RelayConfig, parse_config
from relay.server import RelayServer
from relay.users import AuthThrottle

PASSWORDS = {"bob@example.org": "bob-secret", "alice@example.org": "alice-secret"}


def relay_config(data_dir: Path, extra: str = "", *, domains=("example.org",)) -> RelayConfig:
    doms = ", ".join(f'"{d}"' for d in domains)
    text = (f'hostname = "mx.example.org"\ndomains = [{doms}]\n'
            '[listen]\nsmtp = "127.0.0.1:0"\nsubmission = "127.0.0.1:0"\nimap = ""\npop3 = ""\n' + extra)
    return parse_config(text, None, data_dir)


def add_users(server: RelayServer) -> None:
    for addr, pw in PASSWORDS.items():
        if not server.users.exists(addr):
            server.users.add(addr, pw)


@pytest.fixture
async def relay(tmp_path):
    srv = RelayServer(relay_config(tmp_path / "relay"), throttle=AuthThrottle(base=0.05, maximum=0.4), grace=2.0)
    add_users(srv)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def maildir_messages(server: RelayServer, address: str) -> list[Path]:
    new = server.cfg.mail_dir / address.lower() / "new"
    return sorted(new.iterdir()) if new.exists() else []


async def wait_delivered(server: RelayServer, address: str, count: int, timeout: float = 5.0) -> list[Path]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msgs = maildir_messages(server, address)
        if len(msgs) >= count or loop.time() > deadline:
            return msgs
        await asyncio.sleep(0.02)


QUEUED = re.compile(rb"250 2\.0\.0 Ok: queued as ([0-9A-F]+)")


class RawSMTP:
    """A byte-level SMTP client: send exactly these bytes, read whole replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, addr: tuple[str, int]) -> RawSMTP:
        r, w = await asyncio.open_connection(*addr)
        self = cls(r, w)
        await self.reply()
        return self

    async def reply(self, timeout: float = 5.0) -> bytes:
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError("server closed the connection")
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def cmd(self, line: bytes) -> bytes:
        await self.send(line + b"\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
