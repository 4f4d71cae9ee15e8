"""`tui-mail relay queue …`: look at and steer the running relay's queue (like mailq/postqueue).

    tui-mail relay queue [list] [--json]   ID, age, size, sender, recipients with their state,
                                           next attempt and last error; then each onward
                                           destination: connections, window, queued,
                                           deferred/dead until, last error
    tui-mail relay queue show ID [--json]  one message: envelope, per-recipient state, headers
    tui-mail relay queue flush [ID]        retry now (everything, or one message)
    tui-mail relay queue delete ID         drop a message without telling anyone
    tui-mail relay queue bounce ID         give up now and send the sender a bounce

Everything goes through the relay's control socket (relay/control.py): the running relay owns
the queue, so this never edits queue files behind its back, and it refuses clearly (exit 3)
when no relay is running. Exit codes: 0 done, 1 the relay refused, 2 usage, 3 not running.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from rich.console import Console
from rich.table import Table

from relay.config import RelayConfig
from relay.control import ControlError, request
from relay.errors import NotRunning

STATE_MARK = {"pending": "pending", "deferred": "deferred", "sent": "sent", "failed": "FAILED"}


def human_age(seconds: float) -> str:
    """3s, 4m, 2h05m, 1d04h: compact like mailq, never negative."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def human_size(n: int) -> str:
    for unit in ("B", "K", "M"):
        if n < 1024 or unit == "M":
            return f"{n}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def configure_parser(p: argparse.ArgumentParser, parents: tuple[argparse.ArgumentParser, ...] = ()) -> None:
    """Add the queue options and actions to ``p`` (our own parser, or relay.cli's ``queue``)."""
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    # SUPPRESS: an action's unset --json must not clobber one given before the action
    ls = sub.add_parser("list", parents=list(parents), help="the queue as a table (the default)")
    ls.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    show = sub.add_parser("show", parents=list(parents), help="one queued message")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    fl = sub.add_parser("flush", parents=list(parents), help="retry now (all, or one message)")
    fl.add_argument("id", nargs="?")
    for name, text in (("delete", "remove a message without a bounce"),
                       ("bounce", "give up on a message and bounce it to its sender")):
        sub.add_parser(name, parents=list(parents), help=text).add_argument("id")


def main(argv: list[str], cfg: RelayConfig) -> int:
    parser = argparse.ArgumentParser(prog="tui-mail relay queue", description="Show and control the relay's queue.")
    configure_parser(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    return run(args, cfg)


def run(args: argparse.Namespace, cfg: RelayConfig) -> int:
    as_json = args.json
    action = args.action or "list"
    # a terminal gets its own width; a pipe or file gets long lines rather than folded ones
    width = None if sys.stdout.isatty() else 200
    out = Console(file=sys.stdout, highlight=False, markup=False, soft_wrap=False, width=width)
    sock = cfg.control_socket
    try:
        if action == "list":
            entries = request(sock, "queue.list")
            dests = request(sock, "queue.destinations")
            if as_json:
                print(json.dumps({"messages": entries, "destinations": dests}, indent=2, ensure_ascii=False))
            else:
                render_list(out, entries)
                render_destinations(out, dests)
        elif action == "show":
            entry = request(sock, "queue.show", id=args.id)
            if as_json:
                print(json.dumps(entry, indent=2, ensure_ascii=False))
            else:
                render_show(out, entry)
        elif action == "flush":
            n = request(sock, "queue.flush", id=args.id)
            print(f"flushing {n} message{'s' if n != 1 else ''}" + (f" ({args.id})" if args.id else ""))
        elif action == "delete":
            request(sock, "queue.delete", id=args.id)
            print(f"deleted {args.id}")
        elif action == "bounce":
            n = request(sock, "queue.bounce", id=args.id)
            print(f"bounced {args.id}: {n} recipient{'s' if n != 1 else ''} returned to the sender")
    except NotRunning as e:
        print(f"tui-mail relay queue: {e}", file=sys.stderr)
        return 3
    except ControlError as e:
        print(f"tui-mail relay queue: {e}", file=sys.stderr)
        return 1
    return 0


def render_list(out: Console, entries: list[dict]) -> None:
    """mailq-like: one row per recipient, the message's columns on its first row."""
    if not entries:
        out.print("Mail queue is empty")
        return
    now = time.time()
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("ID", "Age", "Size", "Sender", "Recipient", "State", "Next attempt"):
        table.add_column(col, no_wrap=True)
    table.add_column("Last error", overflow="fold", min_width=20)
    total = 0
    for e in entries:
        total += e["size"]
        nxt = e.get("next_attempt") or 0
        when = "now" if nxt <= now else "in " + human_age(nxt - now)
        first = [e["id"], human_age(now - e["arrival"]), human_size(e["size"]), e["sender"] or "<>"]
        for i, r in enumerate(e["recipients"]):
            lead = first if i == 0 else ["", "", "", ""]
            error = r.get("text", "") if r["status"] in ("deferred", "failed") else ""
            table.add_row(*lead, r["address"], STATE_MARK.get(r["status"], r["status"]),
                          when if i == 0 else "", error)
    out.print(table)
    out.print(f"-- {human_size(total)} in {len(entries)} message{'s' if len(entries) != 1 else ''}")


DEST_STATE = {"ok": "ok", "deferred": "deferred", "dead": "DEAD"}


def render_destinations(out: Console, dests: list[dict]) -> None:
    """The onward scheduler's view: one row per destination it has talked to (or tried)."""
    if not dests:
        return
    now = time.time()
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("Destination", "Domains", "State", "Conns", "Queued", "Sent", "Until"):
        table.add_column(col, no_wrap=True)
    table.add_column("Last error", overflow="fold", min_width=20)
    for d in dests:
        until = ""
        if d.get("dead_until"):
            until = f"dead, in {human_age(d['dead_until'] - now)}"
        elif d.get("deferred_until"):
            until = f"retry in {human_age(d['deferred_until'] - now)}"
        table.add_row(d["destination"], ", ".join(d.get("domains", [])), DEST_STATE.get(d["state"], d["state"]),
                      f"{d['active']}/{d['window']}", str(d.get("queued", 0) + d.get("sending", 0) + d.get("waiting", 0)),
                      str(d.get("delivered", 0)), until, d.get("last_error", "") if d["state"] != "ok" else "")
    out.print()
    out.print(table)


def render_show(out: Console, e: dict) -> None:
    now = time.time()
    out.print(f"Queue ID:  {e['id']}")
    out.print(f"Sender:    {e['sender'] or '<>'}")
    out.print(f"Arrived:   {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e['arrival']))} "
              f"({human_age(now - e['arrival'])} ago)")
    out.print(f"Size:      {e['size']} bytes; attempts: {e.get('attempts', 0)}")
    nxt = e.get("next_attempt") or 0
    out.print(f"Next try:  {'now' if nxt <= now else 'in ' + human_age(nxt - now)}")
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("Recipient", "State", "Attempts", "Last reply"):
        table.add_column(col, overflow="fold")
    for r in e["recipients"]:
        reply = f"{r['code']} {r['text']}".strip() if r.get("code") else r.get("text", "")
        table.add_row(r["address"], STATE_MARK.get(r["status"], r["status"]), str(r.get("attempts", 0)), reply)
    out.print(table)
    if e.get("headers"):
        out.print()
        out.print(e["headers"].rstrip(), markup=False)
