"""The textbook journey with two real relays on loopback: crepes.fr (alice) → hamburger.edu (bob).

Alice submits with AUTH to crepes.fr; crepes.fr queues and delivers onward over SMTP (static
route) to hamburger.edu, which drops the message into bob's Maildir. Then the unhappy paths:
hamburger down (deferred, visible in `relay queue`, flush delivers once it is up), expiry and
unknown users (RFC 3464 bounces in alice's INBOX), no bounce of a bounce, one connection for
many messages, and the MX path with the first MX down."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import time
from pathlib import Path

import aiosmtplib
import pytest

from relay.config import parse_config
from relay.control import request
from relay.queue_cli import main as queue_main
from relay.remote import RemoteDelivery
from relay.routing import Router
from relay.server import RelayServer
from relay.users import UserDB
from tests.dnsserver import DNSServer

PASSWORD = "ketchup-and-mustard"


def message(subject: str = "Lunch?", to: str = "bob@hamburger.edu", body: str = "Ketchup or mustard?\r\n") -> bytes:
    return (f"From: Alice <alice@crepes.fr>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{abs(hash(subject))}@crepes.fr>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()


def relay_cfg(root: Path, name: str, *, smtp_port: int = 0, submission: bool = False, routes: dict | None = None,
              queue: str = "", dns_port: int | None = None):
    if "first_retry" not in queue:  # by default no automatic retry during a test
        queue = 'first_retry = "1h"\n' + queue
    toml = (f'hostname = "{name}"\ndomains = ["{name}"]\n[listen]\nsmtp = "127.0.0.1:{smtp_port}"\n'
            f'submission = "{"127.0.0.1:0" if submission else ""}"\nimap = ""\npop3 = ""\n'
            f'[queue]\n{queue}\n')
    if routes:
        toml += "[routes]\n" + "".join(f'"{d}" = "127.0.0.1:{p}"\n' for d, p in routes.items())
    if dns_port:
        toml += f'[dns]\nnameservers = ["127.0.0.1:{dns_port}"]\n'
    return parse_config(toml, None, root / name)


async def start(cfg) -> RelayServer:
    server = RelayServer(cfg, grace=1.0)
    await server.start()
    return server


async def submit(server: RelayServer, data: bytes, rcpts: list[str], sender: str = "alice@crepes.fr") -> None:
    host, port = server.addresses["submission"]
    await aiosmtplib.send(data, sender=sender, recipients=rcpts, hostname=host, port=port,
                          username="alice@crepes.fr", password=PASSWORD, start_tls=False, timeout=10)


async def submit_many(server: RelayServer, messages: list[bytes], rcpt: str) -> None:
    """Several messages over one authenticated submission session (one password check)."""
    host, port = server.addresses["submission"]
    async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=10,
                               username="alice@crepes.fr", password=PASSWORD) as smtp:
        for data in messages:
            await smtp.sendmail("alice@crepes.fr", [rcpt], data)


def maildir_files(cfg, user: str) -> list[Path]:
    new = cfg.mail_dir / user / "new"
    return sorted(new.iterdir()) if new.exists() else []


async def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def cli(argv, cfg) -> tuple[int, str, str]:
    """Run `tui-mail relay queue …` in a thread (it talks to the relay in this test's loop)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = queue_main(argv, cfg)
    return rc, out.getvalue(), err.getvalue()


class Relays:
    def __init__(self, tmp_path: Path, hamburger_port: int, crepes_queue: str = ""):
        self.hamburger_cfg = relay_cfg(tmp_path, "hamburger.edu", smtp_port=hamburger_port)
        self.crepes_cfg = relay_cfg(tmp_path, "crepes.fr", submission=True,
                                    routes={"hamburger.edu": hamburger_port}, queue=crepes_queue)
        for cfg, user in ((self.hamburger_cfg, "bob@hamburger.edu"), (self.crepes_cfg, "alice@crepes.fr")):
            cfg.data_dir.mkdir(parents=True)
            UserDB(cfg.users_file).add(user, PASSWORD)
        self.crepes: RelayServer | None = None
        self.hamburger: RelayServer | None = None
        self.hamburger_connections = 0

    async def start_hamburger(self) -> RelayServer:
        self.hamburger = await start(self.hamburger_cfg)
        handler = self.hamburger.smtp_handlers["smtp"]
        relays = self

        class Counting(set):  # counts SMTP connections at the receiving relay
            def add(self, item):
                relays.hamburger_connections += 1
                super().add(item)

        handler.connections = Counting(handler.connections)
        return self.hamburger

    async def stop(self) -> None:
        for s in (self.crepes, self.hamburger):
            if s is not None:
                await s.stop()


@pytest.fixture
async def relays(tmp_path, port_factory):
    r = Relays(tmp_path, port_factory())
    await r.start_hamburger()
    r.crepes = await start(r.crepes_cfg)
    yield r
    await r.stop()


@pytest.fixture
async def relays_hamburger_down(tmp_path, port_factory):
    r = Relays(tmp_path, port_factory())
    r.crepes = await start(r.crepes_cfg)
    yield r
    await r.stop()


def parse(path: Path):
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


# ---- the happy path --------------------------------------------------------------------------

async def test_alice_to_bob_lands_byte_intact_in_bobs_maildir(relays):
    data = message(body="Ketchup or mustard?\r\n.a line starting with a dot\r\n\r\n-- \r\nAlice\r\n")
    await submit(relays.crepes, data, ["bob@hamburger.edu"])
    (path,) = await wait_for(lambda: maildir_files(relays.hamburger_cfg, "bob@hamburger.edu"), what="bob's mail")
    raw = path.read_bytes()
    assert raw.endswith(data)  # the original, byte for byte ...
    trace = raw[: -len(data)].split(b"\r\n")
    # ... under trace headers only: Return-Path, Delivered-To, one Received per relay
    assert trace[0] == b"Return-Path: <alice@crepes.fr>" and trace[1] == b"Delivered-To: bob@hamburger.edu"
    received = [i for i, line in enumerate(trace) if line.startswith(b"Received:")]
    assert len(received) == 2
    assert all(line.startswith((b"Received:", b" ", b"\t", b"Return-Path:", b"Delivered-To:")) or line == b""
               for line in trace)
    assert b"by hamburger.edu" in b" ".join(trace[received[0]: received[1]])
    assert b"by crepes.fr" in b" ".join(trace[received[1]:])
    await wait_for(lambda: not relays.crepes.runner.entries, what="crepes.fr queue to empty")


async def test_twenty_messages_share_a_few_connections(relays):
    # hold the queue (no deliveries) while 20 messages pile up, then let them go at once
    remote = relays.crepes.runner.remote
    gate = asyncio.Event()

    class Held:
        async def deliver(self, entry, recipients):
            await gate.wait()
            return await remote.deliver(entry, recipients)

        async def aclose(self):
            await remote.aclose()

    relays.crepes.runner.remote = Held()
    await submit_many(relays.crepes, [message(f"message {i}") for i in range(20)], "bob@hamburger.edu")
    gate.set()
    await wait_for(lambda: len(maildir_files(relays.hamburger_cfg, "bob@hamburger.edu")) == 20, what="20 messages")
    # slow start: two connections at first, more only as deliveries succeed, never past the cap
    cap = relays.crepes_cfg.delivery.max_connections_per_destination
    assert 1 <= relays.hamburger_connections <= cap
    assert remote.connections_opened == relays.hamburger_connections
    assert remote.pipelined == 20  # our relay offers PIPELINING: one round trip for MAIL, RCPT, DATA


# ---- deferral, the queue view, flush ---------------------------------------------------------

async def test_hamburger_down_then_flush_delivers(relays_hamburger_down):
    r = relays_hamburger_down
    await submit(r.crepes, message("while you were down"), ["bob@hamburger.edu"])
    # recorded, not only judged: the state is written and the scheduler told (busy ends last)
    entry = await wait_for(lambda: next((e for e in r.crepes.runner.entries.values()
                                        if e.recipients[0].status == "deferred" and not r.crepes.runner.busy(e.id)),
                                        None), what="deferral")
    assert "connect to 127.0.0.1:" in entry.recipients[0].text

    rc, out, _ = await asyncio.to_thread(cli, ["--json"], r.crepes_cfg)
    assert rc == 0
    listing = json.loads(out)
    (listed,) = listing["messages"]
    assert listed["id"] == entry.id and listed["sender"] == "alice@crepes.fr"
    assert listed["recipients"][0]["status"] == "deferred" and "connect to" in listed["last_error"]
    (dest,) = listing["destinations"]  # the onward scheduler's view of hamburger.edu
    port = r.crepes_cfg.routes["hamburger.edu"].port
    assert dest["destination"] == f"127.0.0.1:{port}" and dest["domains"] == ["hamburger.edu"]
    assert dest["state"] == "deferred" and dest["active"] == 0 and dest["failures"] == 1
    assert dest["deferred_until"] == entry.next_attempt and dest["dead_until"] is None
    assert "connection refused" in dest["last_error"]
    rc, out, _ = await asyncio.to_thread(cli, [], r.crepes_cfg)
    assert rc == 0 and entry.id in out and "deferred" in out and "connection refused" in out
    dest_row = next(line for line in out.splitlines() if line.startswith(f"127.0.0.1:{port}"))
    assert dest_row.split()[1:5] == ["hamburger.edu", "deferred", "0/1", "1"] and "retry in" in dest_row

    await r.start_hamburger()
    rc, out, _ = await asyncio.to_thread(cli, ["flush"], r.crepes_cfg)
    assert rc == 0 and "flushing 1 message" in out
    (path,) = await wait_for(lambda: maildir_files(r.hamburger_cfg, "bob@hamburger.edu"), what="delivery after flush")
    assert b"Subject: while you were down" in path.read_bytes()
    await wait_for(lambda: not r.crepes.runner.entries, what="queue to empty")
    rc, out, _ = await asyncio.to_thread(cli, [], r.crepes_cfg)
    assert "Mail queue is empty" in out


# ---- bounces --------------------------------------------------------------------------------

def dsn_parts(path: Path):
    msg = parse(path)
    assert msg.get_content_type() == "multipart/report"
    human, status, headers = msg.iter_parts()
    per_message, *per_rcpt = status.get_payload()
    return msg, human.get_content(), per_message, per_rcpt, headers.get_content()


async def test_unknown_remote_user_bounces_immediately(relays):
    await submit(relays.crepes, message("to nobody", to="nobody@hamburger.edu"), ["nobody@hamburger.edu"])
    (path,) = await wait_for(lambda: maildir_files(relays.crepes_cfg, "alice@crepes.fr"), what="the bounce")
    assert path.read_bytes().startswith(b"Return-Path: <>\r\n")
    msg, text, per_message, (rcpt,), headers = dsn_parts(path)
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@crepes.fr"
    assert per_message["Reporting-MTA"] == "dns; crepes.fr"
    assert rcpt["Final-Recipient"] == "rfc822; nobody@hamburger.edu"
    assert rcpt["Action"] == "failed" and rcpt["Status"].startswith("5.1.")
    assert rcpt["Diagnostic-Code"].startswith("smtp; 550")
    assert "Subject: to nobody" in headers
    await wait_for(lambda: not relays.crepes.runner.entries, what="queue to empty")
    assert not maildir_files(relays.hamburger_cfg, "nobody@hamburger.edu")


async def test_expiry_bounces_to_alice(tmp_path, port_factory):
    r = Relays(tmp_path, port_factory(), crepes_queue='first_retry = "0.3s"\nretry_interval = "1s"\nmax_lifetime = "1s"\ndelay_warning = "0"')
    r.crepes = await start(r.crepes_cfg)
    try:
        await submit(r.crepes, message("never arrives"), ["bob@hamburger.edu"])
        (path,) = await wait_for(lambda: maildir_files(r.crepes_cfg, "alice@crepes.fr"), what="the expiry bounce")
        msg, text, _, (rcpt,), headers = dsn_parts(path)
        assert msg["To"] == "alice@crepes.fr" and msg["Auto-Submitted"] == "auto-replied"
        assert rcpt["Action"] == "failed" and rcpt["Status"] == "4.4.7"
        assert "connect to 127.0.0.1:" in rcpt["Diagnostic-Code"]
        assert "Subject: never arrives" in headers and "could not be delivered" in text
        await wait_for(lambda: not r.crepes.runner.entries, what="queue to empty")
    finally:
        await r.stop()


async def test_delay_warning_once(tmp_path, port_factory):
    r = Relays(tmp_path, port_factory(), crepes_queue='first_retry = "0.2s"\nretry_interval = "1s"\ndelay_warning = "0.3s"')
    r.crepes = await start(r.crepes_cfg)
    try:
        await submit(r.crepes, message("slow"), ["bob@hamburger.edu"])
        (path,) = await wait_for(lambda: maildir_files(r.crepes_cfg, "alice@crepes.fr"), what="the delay warning")
        _, text, _, (rcpt,), _ = dsn_parts(path)
        assert rcpt["Action"] == "delayed" and rcpt["Will-Retry-Until"]
        assert "WARNING ONLY" in text
        (entry,) = [e for e in r.crepes.runner.entries.values() if e.sender == "alice@crepes.fr"]
        attempts = entry.attempts
        await wait_for(lambda: entry.attempts >= attempts + 1, what="another retry")
        assert len(maildir_files(r.crepes_cfg, "alice@crepes.fr")) == 1  # warned once only
    finally:
        await r.stop()


async def test_no_bounce_of_a_bounce(relays):
    spool, runner = relays.crepes.spool, relays.crepes.runner
    entry = await spool.store("", ["nobody@hamburger.edu"], message("a bounce", to="nobody@hamburger.edu"))
    runner.add(entry)
    await wait_for(lambda: entry.id not in runner.entries, what="the failed bounce to leave the queue")
    assert entry.recipients[0].status == "failed"
    await asyncio.sleep(0.2)
    assert not runner.entries
    assert relays.crepes.queue_services.notifier.sent == []
    assert not maildir_files(relays.crepes_cfg, "alice@crepes.fr")


# ---- queue control ----------------------------------------------------------------------------

async def test_queue_show_delete_and_bounce(relays_hamburger_down):
    r = relays_hamburger_down
    await submit(r.crepes, message("first"), ["bob@hamburger.edu"])
    await submit(r.crepes, message("second"), ["bob@hamburger.edu"])
    await wait_for(lambda: len(r.crepes.runner.entries) == 2 and all(
        e.recipients[0].status == "deferred" for e in r.crepes.runner.entries.values()), what="two deferrals")
    first, second = sorted(r.crepes.runner.entries.values(), key=lambda e: e.arrival)

    rc, out, _ = await asyncio.to_thread(cli, ["show", first.id], r.crepes_cfg)
    assert rc == 0 and "Subject: first" in out and "bob@hamburger.edu" in out and "deferred" in out
    rc, out, _ = await asyncio.to_thread(cli, ["show", first.id, "--json"], r.crepes_cfg)
    assert json.loads(out)["meta"]["auth"] == "alice@crepes.fr"

    rc, out, _ = await asyncio.to_thread(cli, ["delete", first.id], r.crepes_cfg)
    assert rc == 0 and first.id not in r.crepes.runner.entries and not first.path.exists()

    rc, out, _ = await asyncio.to_thread(cli, ["bounce", second.id], r.crepes_cfg)
    assert rc == 0 and "1 recipient" in out
    (path,) = await wait_for(lambda: maildir_files(r.crepes_cfg, "alice@crepes.fr"), what="the operator's bounce")
    _, _, _, (rcpt,), headers = dsn_parts(path)
    assert rcpt["Action"] == "failed" and "Subject: second" in headers
    await wait_for(lambda: not r.crepes.runner.entries, what="queue to empty")

    rc, _, err = await asyncio.to_thread(cli, ["delete", first.id], r.crepes_cfg)
    assert rc == 1 and f"no message {first.id}" in err


async def test_bounce_waits_for_the_attempt_in_progress(relays_hamburger_down):
    r = relays_hamburger_down
    remote, gate = r.crepes.runner.remote, asyncio.Event()

    class Held:
        async def deliver(self, entry, recipients):
            await gate.wait()
            return await remote.deliver(entry, recipients)

        async def aclose(self):
            await remote.aclose()

    r.crepes.runner.remote = Held()
    await submit(r.crepes, message("in flight"), ["bob@hamburger.edu"])
    (entry,) = r.crepes.runner.entries.values()
    await wait_for(lambda: r.crepes.runner.busy(entry.id), what="the attempt to start")
    bouncing = asyncio.ensure_future(asyncio.to_thread(cli, ["bounce", entry.id], r.crepes_cfg))
    await asyncio.sleep(0.2)
    assert not bouncing.done()  # waiting for the attempt, not refusing
    gate.set()
    rc, out, err = await bouncing
    assert rc == 0, err
    await wait_for(lambda: maildir_files(r.crepes_cfg, "alice@crepes.fr"), what="the bounce")


async def test_control_socket_is_private(relays):
    sock = relays.crepes_cfg.control_socket
    assert sock.exists() and (sock.stat().st_mode & 0o777) == 0o600
    pong = await asyncio.to_thread(request, sock, "ping")
    assert isinstance(pong["pid"], int)


async def test_tui_mail_relay_queue_command_reaches_the_running_relay(relays_hamburger_down):
    import contextlib
    import io

    from relay.cli import main as relay_main

    r = relays_hamburger_down
    await submit(r.crepes, message("via the real CLI"), ["bob@hamburger.edu"])
    await wait_for(lambda: any(e.recipients[0].status == "deferred" for e in r.crepes.runner.entries.values()),
                   what="deferral")

    def run(*argv):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = relay_main(["--data-dir", str(r.crepes_cfg.data_dir), *argv])
        return rc, out.getvalue()

    rc, out = await asyncio.to_thread(run, "queue", "--json")
    assert rc == 0 and json.loads(out)["messages"][0]["recipients"][0]["address"] == "bob@hamburger.edu"
    rc, out = await asyncio.to_thread(run, "queue", "list", "--json")
    assert rc == 0 and len(json.loads(out)["messages"]) == 1


def test_queue_cli_refuses_when_relay_not_running(tmp_path):
    cfg = relay_cfg(tmp_path, "crepes.fr")
    rc, out, err = cli([], cfg)
    assert rc == 3 and out == "" and "not running" in err


# ---- the MX path through real relays ---------------------------------------------------------

async def test_mx_path_first_mx_down(tmp_path, port_factory):
    port = port_factory()
    zone = ("hamburger.edu. 60 IN MX 10 mx1.hamburger.edu.\n"
            "hamburger.edu. 60 IN MX 20 mx2.hamburger.edu.\n"
            "mx1.hamburger.edu. 60 IN A 127.0.0.2\n"   # down: nothing listens on 127.0.0.2
            "mx2.hamburger.edu. 60 IN A 127.0.0.1\n")
    async with DNSServer(zone) as dns:
        r = Relays(tmp_path, port)
        r.crepes_cfg = relay_cfg(tmp_path, "crepes.fr", submission=True, dns_port=dns.port)
        await r.start_hamburger()
        r.crepes = await start(r.crepes_cfg)
        try:
            cfg = r.crepes_cfg
            old = r.crepes.runner.remote
            r.crepes.runner.remote = RemoteDelivery(cfg, Router(cfg, mx_port=port))
            await old.aclose()
            await submit(r.crepes, message("via MX"), ["bob@hamburger.edu"])
            (path,) = await wait_for(lambda: maildir_files(r.hamburger_cfg, "bob@hamburger.edu"), what="MX delivery")
            assert b"Subject: via MX" in path.read_bytes()
            assert ("hamburger.edu", "MX") in dns.queries
        finally:
            await r.stop()
