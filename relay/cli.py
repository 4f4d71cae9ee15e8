"""``tui-mail relay …``: start/stop/status of the relay and its user accounts.

    tui-mail relay start [--foreground] [--config FILE] [--data-dir DIR]
    tui-mail relay stop | status
    tui-mail relay user add|passwd ADDRESS [--password-stdin]
    tui-mail relay user del ADDRESS
    tui-mail relay user list
    tui-mail relay queue [list|show ID|flush [ID]|delete ID|bounce ID] [--json]   (relay/queue_cli.py)

``start`` without ``--foreground`` launches ``python -m relay start --foreground`` as a detached
process in its own session (through a short-lived launcher, so no zombie is left behind), waits
until its listeners accept connections and prints them. The running relay writes
``relay.state.json`` (pid, listeners) into the data dir; ``stop`` and ``status`` read it.

Exit codes: 0 ok, 1 failure, 2 bad usage or bad config (one line on stderr, no traceback),
3 ``status``/``stop`` when the relay is not running.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from relay import __version__
from relay.config import RelayConfig, load_config
from relay.errors import ConfigError, RelayError
from relay.private import private_dir, private_file
from relay.server import can_connect, pid_alive, read_state

PROG = "tui-mail relay"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's unset option must not clobber one given before the subcommand.
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="relay.toml to use")
    common.add_argument("--data-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help="queue, mailboxes, users, certs, log")
    common.add_argument("-V", "--version", action="version", version=f"tui-mail relay {__version__}")
    p = argparse.ArgumentParser(prog=PROG, description="The bundled mail relay.", parents=[common])
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    s = sub.add_parser("start", parents=[common], help="start the relay")
    s.add_argument("--foreground", action="store_true", help="run in this terminal, log to stderr")
    s.add_argument("--quiet-stderr", action="store_true", help=argparse.SUPPRESS)  # daemon child
    s.add_argument("--sink", action="store_true",
                   help="test mail server: keep all mail for any recipient in mailbox 'sink', deliver nothing")
    sub.add_parser("stop", parents=[common], help="stop the running relay gracefully")
    sub.add_parser("status", parents=[common], help="pid, listeners and queue size")
    sub.add_parser("_launch", parents=[common]).add_argument("--sink", action="store_true")  # the daemon's child; kept out of --help:
    w = sub.add_parser("_worker", parents=[common])   # a worker process of relay/workers.py
    for opt in ("--index", "--workers", "--master", "--link"):
        w.add_argument(opt, type=int, required=True)
    w.add_argument("--fds", required=True)
    w.add_argument("--log-stderr", action="store_true")
    sub._choices_actions = [a for a in sub._choices_actions if a.dest not in ("_launch", "_worker")]  # (3.11 prints ==SUPPRESS==)
    u = sub.add_parser("user", parents=[common], help="manage mail accounts")
    usub = u.add_subparsers(dest="ucmd", required=True, metavar="ACTION")
    for name, hlp in (("add", "create an account"), ("passwd", "change a password")):
        x = usub.add_parser(name, parents=[common], help=hlp)
        x.add_argument("address")
        x.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    x = usub.add_parser("del", parents=[common], help="delete an account (its mail stays on disk)")
    x.add_argument("address")
    usub.add_parser("list", parents=[common], help="list accounts")
    from relay.queue_cli import configure_parser as queue_parser
    queue_parser(sub.add_parser("queue", parents=[common], help="show and control the mail queue"), (common,))
    return p


def _err(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse already printed the usage error
        return int(e.code or 0)
    args.config = getattr(args, "config", None)
    args.data_dir = getattr(args, "data_dir", None)
    try:
        cfg = load_config(args.config, args.data_dir)
    except ConfigError as e:
        _err(f"error: {e}")
        return 2
    if getattr(args, "sink", False):
        cfg = sink_config(cfg)
    try:
        if args.cmd == "start":
            return cmd_start(cfg, args)
        if args.cmd == "_launch":
            return cmd_launch(cfg, args)
        if args.cmd == "_worker":
            from relay.workers import run_worker
            return run_worker(cfg, args)
        if args.cmd == "stop":
            return cmd_stop(cfg)
        if args.cmd == "status":
            return cmd_status(cfg)
        if args.cmd == "queue":
            from relay.queue_cli import run as queue_run
            return queue_run(args, cfg)
        return cmd_user(cfg, args)
    except RelayError as e:
        _err(f"error: {e}")
        return 1
    except OSError as e:   # every start-up failure is one line, never a traceback
        where = f": {e.filename}" if e.filename else ""
        _err(f"error: {e.strerror or e}{where}")
        return 1
    except KeyboardInterrupt:
        return 130


# ---- start / stop / status ---------------------------------------------------------------

def running_pid(cfg: RelayConfig) -> int | None:
    state = read_state(cfg)
    if state and isinstance(state.get("pid"), int) and pid_alive(state["pid"]):
        return state["pid"]
    return None


def cmd_start(cfg: RelayConfig, args) -> int:
    pid = running_pid(cfg)
    if pid is not None:
        _err(f"the relay is already running (pid {pid}); 'tui-mail relay stop' first")
        return 1
    if args.foreground:
        return run_foreground(cfg, stderr_log=not args.quiet_stderr)
    return start_daemon(cfg, args)


def run_foreground(cfg: RelayConfig, *, stderr_log: bool = True) -> int:
    from relay.log import setup_logging, teardown_logging

    from relay.limits import raise_fd_limit
    from relay.private import private_umask

    import logging
    logging._srcfile = None   # the mail log never shows caller info: skip finding it (logging HOWTO, Optimization)
    old_umask = private_umask()   # queue, mail, log, state: 0600 files in 0700 dirs
    try:
        private_dir(cfg.data_dir)
        raise_fd_limit()
        handlers = setup_logging(cfg, foreground=stderr_log)
        try:
            return asyncio.run(_serve(cfg, announce=stderr_log))
        finally:
            teardown_logging(handlers)
    finally:
        os.umask(old_umask)


async def _serve(cfg: RelayConfig, *, announce: bool) -> int:
    from relay.log import maillog
    from relay.server import RelayServer
    from relay.workers import Master, worker_count

    from relay.limits import quiet_loop_errors

    workers = worker_count(cfg)
    server = Master(cfg, workers, log_stderr=announce) if workers > 1 else RelayServer(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    quiet_loop_errors(loop)   # e.g. out of file descriptors: one line a second, not tracebacks
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        listeners = ", ".join(f"{k} {h}:{p}" for k, (h, p) in server.addresses.items())
        maillog().info("daemon started -- version %s, listening on %s, data in %s, %s", __version__, listeners,
                       cfg.data_dir, f"{workers} workers" if workers > 1 else "one process")
        if announce:
            procs = f", {workers} workers" if workers > 1 else ""
            print(f"relay running (pid {os.getpid()}{procs}): {listeners}; Ctrl-C stops", flush=True)
            if cfg.sink.enabled:
                from relay.sink.service import banner
                print(banner(cfg), flush=True)
        await stop.wait()
        maillog().info("terminating on signal; finishing open transactions")
    finally:
        await server.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    maillog().info("stopped")
    return 0


def sink_config(cfg: RelayConfig) -> RelayConfig:
    """``--sink``: [sink] enabled, and the HTTP API on its default address unless configured."""
    from dataclasses import replace

    from relay.config import SINK_HTTP_DEFAULT
    return replace(cfg, sink=replace(cfg.sink, enabled=True),
                   listen=replace(cfg.listen, http=cfg.listen.http or SINK_HTTP_DEFAULT))


def _child_args(cfg: RelayConfig, args) -> list[str]:
    out = ["--data-dir", str(cfg.data_dir)]
    if getattr(args, "sink", False):
        out.append("--sink")
    if args.config:
        out += ["--config", str(args.config)]
    return out


def cmd_launch(cfg: RelayConfig, args) -> int:
    """Internal: start the relay detached in a new session and exit at once (so the real
    relay is re-parented and never becomes our caller's zombie)."""
    private_dir(cfg.data_dir)
    err = open(private_file(cfg.data_dir / "relay.stderr"), "wb")
    with err:
        subprocess.Popen([sys.executable, "-m", "relay", "start", "--foreground", "--quiet-stderr",
                          *_child_args(cfg, args)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                         start_new_session=True, close_fds=True)
    return 0


def start_daemon(cfg: RelayConfig, args) -> int:
    private_dir(cfg.data_dir)
    try:
        cfg.state_file.unlink()
    except FileNotFoundError:
        pass
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "relay", "_launch", *_child_args(cfg, args)], check=True,
                   stdin=subprocess.DEVNULL)
    errfile = cfg.data_dir / "relay.stderr"
    while time.monotonic() - started < START_TIMEOUT:
        state = read_state(cfg)
        if state and pid_alive(state.get("pid", -1)):
            listeners = state.get("listeners", {})
            if all(can_connect(h, p) for h, p in listeners.values()):
                workers = state.get("workers") or []
                procs = f", {len(workers)} workers: {' '.join(str(w['pid']) for w in workers)}" if workers else ""
                print(f"relay started (pid {state['pid']}{procs})")
                for name, (h, p) in listeners.items():
                    print(f"  {name:<11} {h}:{p}")
                if cfg.sink.enabled:
                    from relay.sink.service import banner
                    print(banner(cfg))
                return 0
        elif errfile.exists() and errfile.stat().st_size and _launch_failed(errfile):
            break
        time.sleep(0.05)
    text = errfile.read_text(errors="replace").strip() if errfile.exists() else ""
    last = text.splitlines()[-1] if text else "no listener came up in time"
    _err(f"error: the relay did not start: {last}")
    return 1


def _launch_failed(errfile) -> bool:
    text = errfile.read_text(errors="replace")
    return "error:" in text or "Traceback" in text


def cmd_stop(cfg: RelayConfig) -> int:
    pid = running_pid(cfg)
    if pid is None:
        print("relay is not running")
        return 3
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            print(f"relay stopped (pid {pid})")
            return 0
        time.sleep(0.05)
    _err(f"error: the relay (pid {pid}) did not stop within {STOP_TIMEOUT:.0f}s")
    return 1


def cmd_status(cfg: RelayConfig) -> int:
    from relay.queue.spool import Spool

    state = read_state(cfg)
    pid = running_pid(cfg)
    if pid is None or state is None:
        print("relay is not running")
        return 3
    print(f"relay running (pid {pid}), data in {cfg.data_dir}")
    for name, (h, p) in state.get("listeners", {}).items():
        ok = "accepting" if can_connect(h, p) else "NOT ACCEPTING"
        print(f"  {name:<11} {h}:{p}  {ok}")
    workers = state.get("workers") or []
    if workers:
        print(f"workers: {len(workers)} (the master above owns the queue and the control socket)")
        for w in workers:
            print("  " + worker_line(w))
    else:
        print("workers: none (one process serves and delivers)")
    queued = Spool(cfg.queue_dir).count() if cfg.queue_dir.exists() else 0
    print(f"queue: {queued} message(s)")
    return 0


def worker_line(w: dict) -> str:
    """One worker of ``relay status``: pid, up time, restarts, CPU time and memory (from /proc)."""
    pid = w.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return f"worker {w.get('index')}  pid {pid}  NOT RUNNING (the master restarts it)"
    up = max(0.0, time.time() - float(w.get("started") or time.time()))
    cpu = rss = None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        pass
    extra = "" if cpu is None else f"  cpu {cpu:.1f}s  rss {rss:.0f} MB"
    from relay.queue_cli import human_age
    return (f"worker {w.get('index')}  pid {pid}  up {human_age(up)}  restarts {w.get('restarts', 0)}{extra}")


# ---- users -------------------------------------------------------------------------------

def _read_password(args, confirm: bool = True) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    pw = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Again: ") != pw:
        raise RelayError("the passwords do not match")
    return pw


def cmd_user(cfg: RelayConfig, args) -> int:
    from relay.users import UserDB

    db = UserDB(cfg.users_file)
    if args.ucmd == "list":
        for addr in db.list():
            print(addr)
        return 0
    if args.ucmd == "add":
        db.add(args.address, _read_password(args))
        print(f"added {args.address.lower()}")
    elif args.ucmd == "passwd":
        if not db.exists(args.address):
            raise RelayError(f"no such user: {args.address.lower()}")
        db.set_password(args.address, _read_password(args))
        print(f"password changed for {args.address.lower()}")
    elif args.ucmd == "del":
        db.remove(args.address)
        print(f"deleted {args.address.lower()} (mail in {cfg.mail_dir / args.address.lower()} kept)")
    return 0
