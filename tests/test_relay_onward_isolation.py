"""One stalled destination must not hold up the rest (issue 17), with real relays on loopback.

crepes.fr relays to a healthy hamburger.edu (a real relay) and, at the same time, to peers that
misbehave the way real ones do: a tarpit (accepts, never greets), a slow talker (1 byte/s), a
refused port, and a server that answers 4xx at RCPT. Healthy mail must flow at once; each bad
destination occupies at most its own window, and repeated connection failures make it "dead"
(everything for it deferred at once, nothing tried until its retry time). Timeouts are set in
seconds through relay.toml so the tests stay fast."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from relay.config import parse_config
from relay.users import UserDB
from tests.test_relay_onward import PASSWORD, cli, maildir_files, message, relay_cfg, start, submit_many, wait_for
from tests.test_relay_remote import ScriptedServer


class Tarpit:
    """Accepts TCP connections and never says a word."""

    def __init__(self):
        self.connections = 0
        self.open = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def talk(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up

    async def start(self) -> Tarpit:
        async def client(reader, writer):
            self.connections += 1
            self.open += 1
            self.writers.append(writer)
            try:
                await self.talk(reader, writer)
            except ConnectionError:
                pass
            finally:
                self.open -= 1
                writer.close()

        self.server = await asyncio.start_server(client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()


class SlowTalker(Tarpit):
    """Greets (and would answer) at one byte per second."""

    async def talk(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for b in b"220 slow.test ESMTP at one byte per second\r\n":
            writer.write(bytes([b]))
            await writer.drain()
            await asyncio.sleep(1.0)


def crepes_cfg(root, routes: dict[str, int], delivery: str):
    toml = ('hostname = "crepes.fr"\ndomains = ["crepes.fr"]\n[listen]\nsmtp = "127.0.0.1:0"\n'
            'submission = "127.0.0.1:0"\nimap = ""\npop3 = ""\n[queue]\nfirst_retry = "1h"\n'
            f"[delivery]\n{delivery}\n[routes]\n" + "".join(f'"{d}" = "127.0.0.1:{p}"\n' for d, p in routes.items()))
    cfg = parse_config(toml, None, root / "crepes.fr")
    cfg.data_dir.mkdir(parents=True)
    UserDB(cfg.users_file).add("alice@crepes.fr", PASSWORD)
    return cfg


@pytest.fixture
async def hamburger(tmp_path, port_factory):
    cfg = relay_cfg(tmp_path, "hamburger.edu", smtp_port=port_factory())
    cfg.data_dir.mkdir(parents=True)
    UserDB(cfg.users_file).add("bob@hamburger.edu", PASSWORD)
    server = await start(cfg)
    yield server
    await server.stop()


def by_domain(dests: list[dict]) -> dict[str, dict]:
    return {d: x for x in dests for d in x["domains"]}


async def test_healthy_mail_flows_beside_a_tarpit_a_slow_talker_a_refusing_port_and_4xx(tmp_path, port_factory,
                                                                                         hamburger):
    tarpit, slow = await Tarpit().start(), await SlowTalker().start()
    busy = await ScriptedServer(RCPT="451 4.3.0 mailbox busy, try later").start()
    ham_port = hamburger.cfg.listen.smtp.port
    cfg = crepes_cfg(tmp_path, {"hamburger.edu": ham_port, "tarpit.test": tarpit.port, "slow.test": slow.port,
                                "refused.test": port_factory(), "busy.test": busy.port},
                     # long RFC-style waits: the stalled destinations stay stalled for the whole test
                     'greeting_timeout = "60s"\ncommand_timeout = "60s"\nmax_connections_per_destination = 3\n')
    crepes = await start(cfg)
    try:
        # the bad destinations get their mail first ...
        for dom in ("tarpit.test", "slow.test", "refused.test", "busy.test"):
            await submit_many(crepes, [message(f"to {dom} {i}", to=f"u@{dom}") for i in range(6)], f"u@{dom}")
        # ... then the healthy one, which must not wait for any of them
        started = time.monotonic()
        await submit_many(crepes, [message(f"healthy {i}") for i in range(20)], "bob@hamburger.edu")
        await wait_for(lambda: len(maildir_files(hamburger.cfg, "bob@hamburger.edu")) == 20, timeout=30,
                       what="healthy mail")
        healthy = time.monotonic() - started
        # well before any stalled peer could time out (60 s): nothing waited for them
        assert healthy < 20.0, f"healthy mail took {healthy:.1f}s"
        assert tarpit.open >= 1 and slow.open >= 1  # ... which are still stuck meanwhile

        dests = by_domain(crepes.runner.remote.destinations())
        # the tarpit and the slow talker hold connections, but no more than their window
        assert 1 <= tarpit.open <= 3 and dests["tarpit.test"]["active"] == tarpit.open
        assert 1 <= slow.open <= 3 and dests["slow.test"]["active"] <= 3
        assert dests["tarpit.test"]["queued"] + dests["tarpit.test"]["sending"] == 6
        # the refusing port is dead after dead_after (3) refusals: nothing more tried
        ref = await wait_for(lambda: (d := by_domain(crepes.runner.remote.destinations())["refused.test"])
                             ["state"] == "dead" and d, what="refused.test dead")
        assert ref["active"] == 0 and ref["dead_until"] > time.time() and "connection refused" in ref["last_error"]
        # 4xx at RCPT: the messages wait for a retry; the link itself is fine (not dead)
        b = await wait_for(lambda: (d := by_domain(crepes.runner.remote.destinations())["busy.test"])
                           ["waiting"] == 6 and d, what="busy.test deferrals")
        assert b["state"] == "deferred" and b["failures"] == 0
        assert "mailbox busy" in b["last_error"] and busy.connections <= 3
        # the crepes.fr queue holds the 24 bad messages; the healthy ones are gone
        assert sum(1 for e in crepes.runner.entries.values() if "hamburger" in e.recipients[0].address) == 0

        # `relay queue list` shows it all, in text and JSON
        rc, out, err = await asyncio.to_thread(cli, ["--json"], cfg)
        assert rc == 0, err
        shown = by_domain(json.loads(out)["destinations"])
        assert shown["refused.test"]["state"] == "dead" and shown["busy.test"]["state"] == "deferred"
        assert shown["hamburger.edu"]["state"] == "ok" and shown["hamburger.edu"]["delivered"] == 20
        rc, out, err = await asyncio.to_thread(cli, [], cfg)
        row = next(line for line in out.splitlines() if "refused.test" in line and line.startswith("127.0.0.1:"))
        assert "DEAD" in row and "dead, in" in row and "connection refused" in row
    finally:
        stopping = time.monotonic()
        await crepes.stop()  # grace 1 s: the stalled connections are cut, their mail stays queued
        assert time.monotonic() - stopping < 5
        for s in (tarpit, slow, busy):
            await s.stop()


async def test_tarpit_becomes_dead_and_flush_revives_it(tmp_path):
    tarpit = await Tarpit().start()
    cfg = crepes_cfg(tmp_path, {"tarpit.test": tarpit.port},
                     'greeting_timeout = "0.4s"\ndead_after = 2\ninitial_concurrency = 1\n')
    crepes = await start(cfg)
    try:
        await submit_many(crepes, [message(f"stuck {i}", to="u@tarpit.test") for i in range(8)], "u@tarpit.test")
        started = time.monotonic()
        await wait_for(lambda: len(crepes.runner.entries) == 8 and all(
            e.recipients[0].status == "deferred" for e in crepes.runner.entries.values()), what="all deferred")
        # two greeting timeouts, not eight: the rest were deferred at once when it died
        assert tarpit.connections == 2
        assert time.monotonic() - started < 10.0
        (d,) = crepes.runner.remote.destinations()
        assert d["state"] == "dead" and d["failures"] == 2 and "timed out after 0.4s waiting for the greeting" in d["last_error"]
        texts = {e.recipients[0].text for e in crepes.runner.entries.values()}
        assert any("not tried again before" in t for t in texts)
        rc, out, err = await asyncio.to_thread(cli, ["flush"], cfg)
        assert rc == 0
        await wait_for(lambda: tarpit.connections > 2, what="a new attempt after flush")
    finally:
        await crepes.stop()
        await tarpit.stop()
