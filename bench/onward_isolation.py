"""Onward isolation benchmark: healthy-destination latency with and without a stalled destination.

    python bench/onward_isolation.py                 # 200 healthy messages per phase, 20 to the tarpit
    python bench/onward_isolation.py --healthy 500 --stalled 50

Two relay processes on loopback, as in bench/relay_e2e.py: crepes.fr (submission, static
routes) and hamburger.edu (inbound SMTP, Maildir). Beside them this process runs the bad
peers crepes.fr also routes to: a *tarpit* (tarpit.test: accepts TCP, never greets), a *slow
talker* (slow.test: greets at one byte per second), a *refused* port (refused.test) and a
server answering *451 at RCPT* (busy.test). crepes.fr keeps the RFC 5321 default timeouts
(5 minutes for the greeting), so the stalled destinations stay stalled for the whole run.

Phases, in one run and against the same two relay processes:

1. ``without``: N messages to bob@hamburger.edu, nothing else queued.
2. ``with tarpit``: S messages to the tarpit first, then N to bob (the scenario of issue 17).
3. ``with all four``: S messages to each bad destination first, then N to bob.

Reported per phase: healthy messages' latency from the start of their submission to the file
in bob's Maildir (p50/p95/max, 2 ms polling included) and how many connections the tarpit
holds at the end (its window: ``max_connections_per_destination``).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from relay_e2e import PASSWORD, Relay, free_port, message, watch  # noqa: E402


class BadPeers:
    """The tarpit, the slow talker and the 451-at-RCPT server, in this process's loop."""

    def __init__(self):
        self.open = {"tarpit": 0, "slow": 0, "busy": 0}
        self.writers: list[asyncio.StreamWriter] = []
        self.servers: list[asyncio.base_events.Server] = []
        self.tasks: set[asyncio.Task] = set()

    async def start(self, ports: dict[str, int]) -> None:
        async def tarpit(reader, writer):
            await self._hold("tarpit", writer, reader.read())

        async def slow(reader, writer):
            async def talk():
                for b in b"220 slow.test ESMTP at one byte per second\r\n":
                    writer.write(bytes([b]))
                    await writer.drain()
                    await asyncio.sleep(1.0)
                await reader.read()
            await self._hold("slow", writer, talk())

        async def busy(reader, writer):
            async def talk():
                writer.write(b"220 busy.test ESMTP\r\n")
                while line := await reader.readline():
                    verb = line[:4].upper()
                    reply = {b"EHLO": b"250-busy.test\r\n250 PIPELINING", b"RCPT": b"451 4.3.0 mailbox busy, try later",
                             b"DATA": b"503 5.5.1 no valid recipients", b"QUIT": b"221 bye"}.get(verb, b"250 OK")
                    writer.write(reply + b"\r\n")
                    await writer.drain()
                    if verb == b"QUIT":
                        return
            await self._hold("busy", writer, talk())

        for name, handler in (("tarpit", tarpit), ("slow", slow), ("busy", busy)):
            self.servers.append(await asyncio.start_server(handler, "127.0.0.1", ports[name]))

    async def _hold(self, name: str, writer: asyncio.StreamWriter, work) -> None:
        self.open[name] += 1
        self.writers.append(writer)
        self.tasks.add(asyncio.current_task())
        try:
            await work
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # cancelled by stop(): the handler ends quietly
        finally:
            self.open[name] -= 1
            writer.close()

    async def stop(self) -> None:
        for s in self.servers:
            s.close()
        for w in self.writers:
            w.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for s in self.servers:
            await s.wait_closed()


def bad_message(i: int, to: str) -> bytes:
    return (f"From: Alice <alice@crepes.fr>\r\nTo: <{to}>\r\nSubject: stalled {i}\r\n"
            f"Message-ID: <stalled.{i}.{time.time_ns()}@crepes.fr>\r\n\r\nThis one waits.\r\n").encode()


async def submit(port: int, items: list[tuple[int | None, str, bytes]], started: dict[int, float]) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=60,
                               username="alice@crepes.fr", password=PASSWORD) as smtp:
        for seq, rcpt, data in items:
            if seq is not None:
                started[seq] = time.monotonic()
            await smtp.sendmail("alice@crepes.fr", [rcpt], data)


async def phase(name: str, sub_port: int, maildir: Path, first_seq: int, healthy: int, sessions: int,
                bad: list[str], stalled: int, peers: BadPeers) -> dict:
    # the bad destinations' mail goes in first (one session per destination) ...
    await asyncio.gather(*(submit(sub_port, [(None, f"u@{dom}", bad_message(i, f"u@{dom}")) for i in range(stalled)], {})
                           for dom in bad))
    # ... then the healthy mail, several sessions back to back, while the bad ones are stuck
    started: dict[int, float] = {}
    arrived: dict[int, float] = {}
    seqs = list(range(first_seq, first_seq + healthy))
    watcher = asyncio.create_task(watch(maildir, first_seq + healthy, arrived, time.monotonic() + 120))
    shares = [seqs[s::sessions] for s in range(sessions)]
    await asyncio.gather(*(submit(sub_port, [(i, "bob@hamburger.edu", message(i)) for i in share], started)
                           for share in shares))
    deadline = time.monotonic() + 120
    while any(i not in arrived for i in seqs) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    watcher.cancel()
    missing = [i for i in seqs if i not in arrived]
    lat = sorted((arrived[i] - started[i]) * 1000 for i in seqs if i in arrived)
    return {"name": name, "n": len(lat), "missing": len(missing), "p50": statistics.median(lat),
            "p95": lat[int(0.95 * (len(lat) - 1))], "max": lat[-1], "tarpit_open": peers.open["tarpit"],
            "slow_open": peers.open["slow"]}


async def run(args, sub_port: int, maildir: Path, ports: dict[str, int]) -> list[dict]:
    peers = BadPeers()
    await peers.start(ports)
    try:
        rows = []
        seq = 0
        for name, bad in (("without", []), ("with tarpit", ["tarpit.test"]),
                          ("with all four", ["tarpit.test", "slow.test", "refused.test", "busy.test"])):
            rows.append(await phase(name, sub_port, maildir, seq, args.healthy, args.sessions, bad, args.stalled, peers))
            seq += args.healthy
        return rows
    finally:
        await peers.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--healthy", type=int, default=200, help="healthy messages per phase")
    ap.add_argument("--stalled", type=int, default=20, help="messages to each bad destination")
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="tui-mail-isolation-"))
    ham_port, crepes_sub = free_port(), free_port()
    ports = {"tarpit": free_port(), "slow": free_port(), "busy": free_port(), "refused": free_port()}
    common = '[queue]\nfirst_retry = "1h"\n'
    hamburger = Relay(tmp, "hamburger.edu", (
        f'hostname = "hamburger.edu"\ndomains = ["hamburger.edu"]\n[listen]\nsmtp = "127.0.0.1:{ham_port}"\n'
        f'submission = ""\nimap = ""\npop3 = ""\n{common}'), "bob@hamburger.edu")
    crepes = Relay(tmp, "crepes.fr", (
        f'hostname = "crepes.fr"\ndomains = ["crepes.fr"]\n[listen]\nsmtp = ""\n'
        f'submission = "127.0.0.1:{crepes_sub}"\nimap = ""\npop3 = ""\n{common}'
        f'[routes]\n"hamburger.edu" = "127.0.0.1:{ham_port}"\n'
        + "".join(f'"{name}.test" = "127.0.0.1:{port}"\n' for name, port in ports.items())), "alice@crepes.fr")
    try:
        hamburger.start()
        crepes.start()
        hamburger.wait_ready([ham_port])
        crepes.wait_ready([crepes_sub])
        maildir = hamburger.cfg.mail_dir / "bob@hamburger.edu" / "new"
        print(f"onward isolation: {args.healthy} healthy messages per phase over {args.sessions} sessions; "
              f"{args.stalled} messages to each bad destination first (data in {tmp})")
        rows = asyncio.run(run(args, crepes_sub, maildir, ports))
    finally:
        crepes.stop()
        hamburger.stop()
    print(f"  {'phase':<15} {'delivered':>9} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}  tarpit conns  slow conns")
    for r in rows:
        print(f"  {r['name']:<15} {r['n']:>5}/{r['n'] + r['missing']:<3} {r['p50']:>9.1f} {r['p95']:>9.1f} "
              f"{r['max']:>9.1f}  {r['tarpit_open']:>12}  {r['slow_open']:>10}")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
