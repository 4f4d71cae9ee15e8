"""The demo's app: the ordinary MailApp plus a relay panel (F3) that shows both relays'
queues and mail logs live, and takes hamburger.edu down and up (h) or flushes the queues (f),
so a user can watch a message go from Alice's outbox through crepes.fr's queue to
hamburger.edu and into Bob's mailbox.

The panel reads the queues over each relay's control socket (the same path `tui-mail relay
queue` uses) in a thread worker, twice a second; it never blocks the UI on a relay. Under each
queue, one line per onward destination shows the scheduler's view: connections in use out of
its window, messages queued, deferred or dead until when, and the last error.
"""

from __future__ import annotations

import contextvars
import logging
import time
from datetime import datetime

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult, SystemCommand
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, RichLog, Static

from tui_mail.ui.app import MailApp
from tui_mail.ui.keys import DEMO_KEYS, RELAY_KEYS, bindings
from tui_mail.ui.safe_text import as_text, shown


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def queue_table(domain: str, running: bool, listeners: dict, entries: list[dict], now: float) -> Table:
    """The mailq-like table of one relay (pure: data in, renderable out)."""
    state = "[green]● running[/]" if running else "[red]○ stopped[/]"
    ports = "  ".join(f"{k} :{p}" for k, (_, p) in sorted(listeners.items()))
    n = len(entries)
    count = "queue empty" if not n else f"{n} message{'s' if n != 1 else ''} queued"
    t = Table(title=f"[b]{domain}[/b]  {state}  [dim]{count}   {ports}[/dim]", title_justify="left",
              expand=True, show_edge=False, pad_edge=False, show_header=bool(entries))
    t.add_column("ID", no_wrap=True, width=12)
    t.add_column("age", no_wrap=True, width=6)
    t.add_column("from", no_wrap=True, overflow="ellipsis", ratio=2)
    t.add_column("to (state)", overflow="fold", ratio=3)
    t.add_column("next", no_wrap=True, width=6)
    t.add_column("last error", overflow="fold", ratio=4)
    for e in entries:
        rcpts = Text()
        for i, r in enumerate(e.get("recipients", [])):
            status = shown(r.get("status", ""), 40)
            rcpts.append((", " if i else "") + f"{shown(r['address'], 300)} ")
            rcpts.append(f"({status})", style={"deferred": "yellow", "failed": "red", "sent": "green"}.get(status, ""))
        nxt = e.get("next_attempt") or 0
        errors = [r.get("text", "") for r in e.get("recipients", []) if r.get("status") != "sent" and r.get("text")]
        # Senders, recipients and error texts come from the network: Text cells, never markup.
        t.add_row(as_text(str(e.get("id", ""))[:12]), _age(now - float(e.get("arrival", now))),
                  as_text(e.get("sender") or "<>", limit=300), rcpts,
                  _age(nxt - now) if nxt > now else "now", as_text(errors[0] if errors else "", "yellow"))
    return t


def destinations_text(dests: list[dict], now: float) -> Text:
    """One line per onward destination: connections/window, queued, deferred or dead until,
    last error (pure; every string from the relay is shown as text, never markup)."""
    out = Text()
    for d in dests:
        state = d.get("state", "ok")
        out.append("  → ", style="dim")
        out.append(shown(", ".join(d.get("domains", [])) or "?", 200), style="bold")
        out.append(f" {shown(d.get('destination', ''), 200)}  ", style="dim")
        out.append(state.upper() if state == "dead" else state,
                   style={"ok": "green", "deferred": "yellow", "dead": "bold red"}.get(state, ""))
        queued = d.get("queued", 0) + d.get("sending", 0) + d.get("waiting", 0)
        out.append(f"  {d.get('active', 0)}/{d.get('window', 0)} conns  {queued} queued  {d.get('delivered', 0)} sent")
        if d.get("dead_until"):
            out.append(f"  dead for {_age(d['dead_until'] - now)}", style="red")
        elif d.get("deferred_until"):
            out.append(f"  retry in {_age(d['deferred_until'] - now)}", style="yellow")
        if state != "ok" and d.get("last_error"):
            out.append(f"  {shown(d['last_error'], 300)}", style="yellow")
        out.append("\n")
    out.rstrip()
    return out


def log_text(lines: list[tuple[float, str, str]]) -> Text:
    out = Text()
    for created, relay, msg in lines:
        stamp = datetime.fromtimestamp(created).strftime("%H:%M:%S")
        out.append(f"{stamp} ", style="dim")
        out.append(f"{shown(relay or '?', 40):>13} ", style="bold cyan" if relay == "crepes.fr" else "bold magenta")
        out.append(shown(msg, limit=2000) + "\n")
    return out


def note(domain: str, text: str) -> None:
    """A line in the demo's mail log on behalf of ``domain`` (taking a relay down or up is
    part of the journey the log tells)."""
    from tui_mail.demo import _current_relay

    def emit() -> None:
        _current_relay.set(domain)
        logging.getLogger("relay.demo").info(text)

    contextvars.copy_context().run(emit)


class RelayPanel(Screen):
    """Both relays: status, queue and the tail of the mail log."""

    BINDINGS = bindings(RELAY_KEYS)
    DEFAULT_CSS = """
    RelayPanel #queues { height: auto; max-height: 60%; }
    RelayPanel .queue { width: 100%; height: auto; padding: 0 1; margin-bottom: 1; }
    RelayPanel #log-title { border-top: solid $primary; padding: 0 1; text-style: bold; }
    RelayPanel #log { height: 1fr; min-height: 4; padding: 0 1; background: $surface; }
    """
    LOG_LINES = 500

    def __init__(self, world):
        super().__init__()
        self.world = world
        self._log_version = 0

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical():
            with Vertical(id="queues"):
                yield Static(id="q-crepes", classes="queue")
                yield Static(id="q-hamburger", classes="queue")
            yield Static("Mail log (newest at the bottom; j/k scroll, G follows)", id="log-title")
            # a scrolling log that follows the tail: at 40 rows the newest lines stay in view
            yield RichLog(id="log", max_lines=self.LOG_LINES, wrap=False, auto_scroll=False)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "Relays — the journey of a message"
        self.refresh_panel()
        self.set_interval(0.5, self.refresh_panel)

    @work(thread=True, exclusive=True, group="relay-panel", exit_on_error=False)
    def refresh_panel(self) -> None:
        snap = {d: (h.running, h.addresses, h.queue(), h.destinations()) for d, h in self.world.relays.items()}
        self.app.call_from_thread(self._show, snap)

    def _show(self, snap: dict) -> None:
        now = time.time()
        for domain, wid in (("crepes.fr", "#q-crepes"), ("hamburger.edu", "#q-hamburger")):
            running, listeners, entries, dests = snap[domain]
            table = queue_table(domain, running, listeners, entries, now)
            self.query_one(wid, Static).update(Group(table, destinations_text(dests, now)) if dests else table)
        version = self.world.log.version
        if version != self._log_version:
            new = min(version - self._log_version, self.LOG_LINES)
            self._log_version = version
            log = self.query_one("#log", RichLog)
            follow = log.scroll_y >= log.max_scroll_y      # the user did not scroll up
            for line in log_text(self.world.log.tail(n=new)).split("\n"):
                if line.plain:
                    log.write(line, scroll_end=follow)

    def action_log_scroll(self, lines: int) -> None:
        self.query_one("#log", RichLog).scroll_relative(y=lines, animate=False)

    def action_log_end(self) -> None:
        self.query_one("#log", RichLog).scroll_end(animate=False)

    @work(thread=True, exclusive=True, group="relay-toggle", exit_on_error=False)
    def action_toggle_hamburger(self) -> None:
        host = self.world.relay("hamburger.edu")
        if host.running:
            host.stop()
            note("hamburger.edu", "relay stopped: listeners closed, mail for it waits at the sender")
            self.app.call_from_thread(self.notify, "hamburger.edu is down: mail for bob waits in crepes.fr's queue")
        else:
            host.start()
            note("hamburger.edu", "relay started")
            self.world.relay("crepes.fr").flush()
            self.app.call_from_thread(self.notify, "hamburger.edu is up again: crepes.fr's queue is flushed")

    @work(thread=True, group="relay-flush", exit_on_error=False)
    def action_flush(self) -> None:
        for host in self.world.relays.values():
            host.flush()


class DemoApp(MailApp):
    BINDINGS = MailApp.BINDINGS + bindings(DEMO_KEYS)

    def __init__(self, world, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.world = world
        self.title = "tui-mail demo"

    def action_relays(self) -> None:
        if not isinstance(self.screen, RelayPanel):
            self.push_screen(RelayPanel(self.world))

    def get_system_commands(self, screen):
        yield from super().get_system_commands(screen)
        yield SystemCommand("Relays", "Queues and logs of crepes.fr and hamburger.edu (F3)", self.action_relays)


def build_demo_app(world, ascii_only: bool = False, **kwargs) -> DemoApp:
    """The demo app over the world's client config (the environment must point at it)."""
    import argparse

    from tui_mail.ui.run import build
    from tui_mail.ui.trace import TraceBuffer

    trace = TraceBuffer()
    args = argparse.Namespace(config=str(world.client_config), account=None, ascii=ascii_only)
    accounts, settings = build(args, trace)
    return DemoApp(world, accounts, settings, trace=trace, **kwargs)


def run_demo_app(world, ascii_only: bool = False) -> None:
    build_demo_app(world, ascii_only).run()
