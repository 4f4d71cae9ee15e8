"""`tui-mail demo`: the whole sender-to-recipient journey on one machine, in one command.

Two relays — crepes.fr and hamburger.edu — run inside this process (each in its own thread
with its own asyncio loop, exactly the RelayServer that `tui-mail relay start` runs), on free
loopback ports, with static routes to each other. alice@crepes.fr reads over IMAP, bob@
hamburger.edu over POP3; both submit through their own relay. Everything lives in one
temporary directory that is removed on exit (``--keep DIR`` keeps it).

    DemoWorld(root).setup()     ports, relay configs, users, seeded mail, client config.toml
    world.start()               both relays up (``stop_hamburger=True``: crepes.fr only)
    world.relay("hamburger.edu").stop() / .start()    take a relay down and back up
    world.stop()                everything down; no thread, socket or process stays

The client side is the ordinary TUI over an ordinary config.toml (written into the temp dir);
passwords come from ``password_command`` reading a 0600 file, so none is in the config.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import logging
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

ALICE = "alice@crepes.fr"
BOB = "bob@hamburger.edu"
PASSWORDS = {ALICE: "ketchup-and-pickles", BOB: "mustard-on-fridays"}
BULK_FOLDER = "Lists/crepe-lovers"

# Which relay a log record came from: set in each relay thread before its loop starts, and
# copied by asyncio into every task and to_thread call of that loop.
_current_relay: contextvars.ContextVar[str] = contextvars.ContextVar("tui_mail_demo_relay", default="")


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A free port below Linux's ephemeral range (32768-60999 by default), so no outgoing
    connection can take it between this check and the relay's bind; never one this process
    handed out before (a demo picks eight ports before its relays bind any: two picks of one
    number made the second relay fail with "address already in use")."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # crowded: let the kernel pick
        s.bind((host, 0))
        return s.getsockname()[1]


class RelayLog(logging.Handler):
    """Keeps the last lines of the relays' mail log, tagged with the relay's domain."""

    def __init__(self, size: int = 500):
        super().__init__(logging.INFO)
        self.lines: deque[tuple[float, str, str]] = deque(maxlen=size)
        self.version = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # a bad format string must not break the relay
            return
        self.lines.append((record.created, _current_relay.get(), msg))
        self.version += 1

    def tail(self, relay: str | None = None, n: int = 50) -> list[tuple[float, str, str]]:
        rows = [r for r in list(self.lines) if relay is None or r[1] == relay]
        return rows[-n:]


class RelayHost:
    """One RelayServer in its own thread and event loop, startable and stoppable at will."""

    def __init__(self, domain: str, cfg):
        self.domain = domain
        self.cfg = cfg
        self.server = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.server is not None

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        return dict(self.server.addresses) if self.server is not None else {}

    def start(self, timeout: float = 15.0) -> None:
        if self.running:
            return
        started = threading.Event()
        self.error = None

        def run() -> None:
            _current_relay.set(self.domain)
            asyncio.run(self._main(started))

        self._thread = threading.Thread(target=run, name=f"relay-{self.domain}", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise RuntimeError(f"{self.domain}: the relay did not start within {timeout:.0f} s")
        if self.error is not None:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError(f"{self.domain}: {self.error}") from self.error

    async def _main(self, started: threading.Event) -> None:
        from relay.server import RelayServer

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = RelayServer(self.cfg, grace=2.0)
        try:
            await server.start()
        except BaseException as e:  # reported to start()'s caller
            self.error = e
            started.set()
            return
        self.server = server
        started.set()
        try:
            await self._stop.wait()
        finally:
            try:
                await server.stop()
            finally:
                self.server = None

    def stop(self, timeout: float = 15.0) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        self._thread = None
        self._loop = None

    def queue(self) -> list[dict]:
        """The relay's queue as the control socket reports it ([] when the relay is down)."""
        if not self.running:
            return []
        from relay.control import request

        try:
            return request(self.cfg.control_socket, "queue.list", timeout=5)
        except Exception:  # noqa: BLE001 - the panel shows an empty queue rather than crash
            return []

    def destinations(self) -> list[dict]:
        """The onward scheduler's per-destination state ([] when the relay is down)."""
        if not self.running:
            return []
        from relay.control import request

        try:
            return request(self.cfg.control_socket, "queue.destinations", timeout=5)
        except Exception:  # noqa: BLE001 - the panel shows no destinations rather than crash
            return []

    def flush(self) -> None:
        if self.running:
            from relay.control import request

            request(self.cfg.control_socket, "queue.flush", timeout=5)


@dataclass
class DemoAccountFiles:
    config: Path
    home: Path


class DemoWorld:
    """Builds and runs the two-relay world under ``root``."""

    def __init__(self, root: Path, *, now: datetime | None = None, bulk: int = 3000):
        self.root = Path(root)
        self.now = now or datetime.now(timezone.utc)
        self.bulk = bulk
        self.relays: dict[str, RelayHost] = {}
        self.log = RelayLog()
        self.client_config = self.root / "client" / "config.toml"
        self._bulk_thread: threading.Thread | None = None
        self._log_attached = False

    # --- set-up --------------------------------------------------------------------------
    def setup(self) -> None:
        from relay.config import parse_config
        from relay.users import UserDB

        self.root.mkdir(parents=True, exist_ok=True)
        smtp_ports = {"crepes.fr": free_port(), "hamburger.edu": free_port()}
        other = {"crepes.fr": "hamburger.edu", "hamburger.edu": "crepes.fr"}
        for domain in ("crepes.fr", "hamburger.edu"):
            peer = other[domain]
            text = f"""
hostname = "mail.{domain}"
domains = ["{domain}"]
[listen]
smtp = "127.0.0.1:{smtp_ports[domain]}"
submission = "127.0.0.1:{free_port()}"
imap = "127.0.0.1:{free_port()}"
pop3 = "127.0.0.1:{free_port()}"
[queue]
first_retry = "5s"
retry_interval = "15s"
max_lifetime = "1h"
delay_warning = "0"
[delivery]
connect_timeout = "3s"
[routes]
"{peer}" = "127.0.0.1:{smtp_ports[peer]}"
"""
            path = self.root / domain / "relay.toml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            cfg = parse_config(text, path, self.root / domain / "data")
            cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            users = UserDB(cfg.users_file)
            for address, password in PASSWORDS.items():
                if address.endswith("@" + domain) and not users.exists(address):
                    users.add(address, password)
            self.relays[domain] = RelayHost(domain, cfg)
        self._seed_small()
        self._write_client_config()

    def _seed_small(self) -> None:
        """The hand-written samples, through the store (a few messages: quick)."""
        from relay.events import ChangeBus
        from relay.store.registry import MailStore
        from tui_mail import demo_data

        for domain, address, folders in (
            ("crepes.fr", ALICE, {"INBOX": demo_data.alice_inbox(self.now), "Sent": demo_data.alice_sent(self.now)}),
            ("hamburger.edu", BOB, {"INBOX": demo_data.bob_inbox(self.now)}),
        ):
            store = MailStore(self.relays[domain].cfg.mail_dir, ChangeBus())
            try:
                user = store.user(address)
                if user.status("INBOX")["MESSAGES"]:
                    continue  # --keep DIR reused: already seeded
                for folder, messages in folders.items():
                    for data in messages:
                        flags = ("\\Seen",) if folder == "Sent" or b"Gazette" in data else ()
                        user.append(folder, data, flags=flags)
                if domain == "crepes.fr":
                    user.create(BULK_FOLDER)
            finally:
                store.close()

    def seed_bulk(self, count: int | None = None) -> None:
        """A few thousand messages in alice's Lists/crepe-lovers, written as Maildir files and
        indexed in one sync (appending one by one with fsync would take ~20 s)."""
        from relay.store import names
        from tui_mail import demo_data

        count = self.bulk if count is None else count
        host = self.relays["crepes.fr"]
        root = host.cfg.mail_dir / ALICE / names.to_dirname(BULK_FOLDER)
        cur = root / "cur"
        cur.mkdir(parents=True, exist_ok=True)
        if any(cur.iterdir()):
            return
        tmp = root / "tmp"
        tmp.mkdir(exist_ok=True)
        base = int(self.now.timestamp())
        for i, data in enumerate(demo_data.bulk(count, self.now - timedelta(days=3))):
            name = f"{base}.demo{i:05d}.mail.crepes.fr"
            t = tmp / name
            t.write_bytes(data)
            flags = "S" if i < count - 40 else ""
            os.replace(t, cur / f"{name}:2,{flags}")
        store = host.server.mail_store if host.server is not None else None
        if store is not None:
            store.user(ALICE).sync(BULK_FOLDER)
            host.server.bus.publish(ALICE, BULK_FOLDER)

    def _write_client_config(self) -> None:
        import tomlkit

        secrets = self.root / "client" / "secrets"
        secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        for address, password in PASSWORDS.items():
            f = secrets / address
            f.write_text(password, encoding="utf-8")
            f.chmod(0o600)

        def server(domain: str, listener: str, **extra) -> dict:
            host = self.relays[domain]
            addr = getattr(host.cfg.listen, listener)
            address = ALICE if domain == "crepes.fr" else BOB
            return {"host": "127.0.0.1", "port": addr.port, "security": "none", "user": address,
                    "password_command": f"cat '{secrets / address}'", **extra}

        doc = {
            "ui": {"mark_read": "open", "preview": True},
            "accounts": [
                {"name": "alice", "address": ALICE, "display_name": "Alice Crêpe",
                 "signature": "Alice, crepes.fr",
                 "imap": server("crepes.fr", "imap"), "smtp": server("crepes.fr", "submission")},
                {"name": "bob", "address": BOB, "display_name": "Bob Hamburger",
                 "signature": "Bob, hamburger.edu",
                 "pop3": server("hamburger.edu", "pop3", mode="keep"),
                 "smtp": server("hamburger.edu", "submission")},
            ],
        }
        self.client_config.parent.mkdir(parents=True, exist_ok=True)
        self.client_config.write_text(tomlkit.dumps(doc), encoding="utf-8")

    # --- running -------------------------------------------------------------------------
    def relay(self, domain: str) -> RelayHost:
        return self.relays[domain]

    def start(self, *, stop_hamburger: bool = False, bulk_in_background: bool = True) -> None:
        if not self._log_attached:
            logger = logging.getLogger("relay")
            self._log_saved = (logger.level, logger.propagate)
            logger.addHandler(self.log)
            logger.setLevel(logging.INFO)
            logger.propagate = False
            logging.getLogger("mail.log").setLevel(logging.WARNING)
            self._log_attached = True
        self.relays["crepes.fr"].start()
        if not stop_hamburger:
            self.relays["hamburger.edu"].start()
        if self.bulk:
            if bulk_in_background:
                self._bulk_thread = threading.Thread(target=self.seed_bulk, name="demo-seed", daemon=True)
                self._bulk_thread.start()
            else:
                self.seed_bulk()

    def stop(self) -> None:
        if self._bulk_thread is not None:
            self._bulk_thread.join(60)
            self._bulk_thread = None
        for host in self.relays.values():
            host.stop()
        if self._log_attached:
            logger = logging.getLogger("relay")
            logger.removeHandler(self.log)
            logger.setLevel(self._log_saved[0])
            logger.propagate = self._log_saved[1]
            self._log_attached = False

    def client_env(self) -> dict[str, str]:
        """Environment that points the client at the demo's config, data and cache dirs."""
        c = self.root / "client"
        return {"TUI_MAIL_CONFIG": str(self.client_config), "XDG_DATA_HOME": str(c / "data"),
                "XDG_CACHE_HOME": str(c / "cache"), "XDG_STATE_HOME": str(c / "state"),
                "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}


DESCRIPTION = ("Two relays (crepes.fr, hamburger.edu) and the TUI as alice and bob, in a temp dir. "
               "The demo writes its own config.toml there: --config is accepted and not used.")


def parse_args(argv: list[str]) -> argparse.Namespace:
    from tui_mail.cli import common_options

    p = argparse.ArgumentParser(prog="tui-mail demo", description=DESCRIPTION, parents=[common_options()])
    add_arguments(p)
    return p.parse_args(argv)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep", metavar="DIR", help="use DIR instead of a temp dir and keep it afterwards")
    p.add_argument("--stop-hamburger", action="store_true",
                   help="start with hamburger.edu down: mail to bob waits in crepes.fr's queue")
    p.add_argument("--messages", type=int, default=3000, metavar="N",
                   help="messages in alice's Lists/crepe-lovers folder (default 3000)")
    p.add_argument("--ascii", action="store_true", help="ASCII flag marks")
    p.add_argument("--no-ui", action="store_true",
                   help="run only the two relays and print how to connect (Ctrl+C stops)")
    p.add_argument("--web", action="store_true",
                   help="serve the TUI to a browser instead (tui-mail web) and print its URL")
    p.add_argument("--listen", default="127.0.0.1:8025", metavar="HOST:PORT", help="with --web: where")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    # aiosmtpd 1.4 warns about its own deprecated attribute on every AUTH; not ours to fix,
    # and a warning printed over the TUI would garble the screen.
    warnings.filterwarnings("ignore", message="Session.login_data is deprecated")
    if args.keep:
        root = Path(args.keep).expanduser().resolve()
        cleanup = False
    else:
        root = Path(tempfile.mkdtemp(prefix="tui-mail-demo-"))
        cleanup = True
    world = DemoWorld(root, bulk=max(0, args.messages))

    def terminate(signum, frame):  # a closed terminal or `kill` still cleans up
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, terminate)
    try:
        world.setup()
        os.environ.update(world.client_env())
        world.start(stop_hamburger=args.stop_hamburger)
        if args.no_ui:
            return _run_headless(world)
        if args.web:   # issue 15: one TUI process per browser tab, as alice (tui_mail/web.py)
            from tui_mail.web import run as run_web

            return run_web(args.listen, None, None, ["--ascii"] if args.ascii else [],
                           banner=f"demo relays: {world.client_config.parent}\n")
        from tui_mail.ui.demo_app import run_demo_app

        run_demo_app(world, ascii_only=args.ascii)
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - one clear line, never a traceback
        print(f"tui-mail demo: {e}", file=sys.stderr)
        return 1
    finally:
        world.stop()
        if cleanup:
            shutil.rmtree(root, ignore_errors=True)
        elif args.keep:
            print(f"demo files kept in {root}", file=sys.stderr)


def _run_headless(world: DemoWorld) -> int:
    for domain, host in world.relays.items():
        listeners = ", ".join(f"{k} {h}:{p}" for k, (h, p) in sorted(host.addresses.items()))
        print(f"{domain}: {listeners or 'stopped'}")
    print(f"client config: {world.client_config}")
    print("Ctrl+C stops both relays.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
