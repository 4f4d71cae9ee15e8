"""``tui-mail web``: the TUI in a browser, never open to whoever can reach the port.

    tui-mail web [--listen 127.0.0.1:8025] [--cert FILE --key FILE] [--config FILE] [--account NAME]

textual-serve does the terminal-in-a-page part (xterm.js over a websocket, one ``tui-mail``
process per browser session, ended when the tab closes). Around it, this module adds:

- **A one-time token**, printed at start in a URL (as Jupyter does). The first request that
  brings it gets a random session cookie (HttpOnly, SameSite=Strict, Secure under TLS) and a
  redirect to ``/`` (the token leaves the address bar); the token is then spent. Every other
  request without that cookie gets 401; a wrong token 403, and the address that sent it waits
  longer each time (0.5 s doubling to 30 s) before its next attempt is even looked at.
- **Loopback unless TLS**: ``--listen`` on a non-loopback address needs ``--cert/--key``.
- **Nothing from elsewhere**: the page is textual-serve's without the Google Fonts link (the
  font is served from here); a Content-Security-Policy limits the page to this server.
- **Host and Origin checks**: requests naming another host (DNS rebinding) and websockets
  opened from another origin are refused.

Tokens and cookies are never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import os
import secrets
import shlex
import signal
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

COOKIE = "tui_mail_session"
DEFAULT_LISTEN = "127.0.0.1:8025"
TEMPLATES = Path(__file__).with_name("web_templates")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValueError(f"--listen wants host:port, not {text!r}")
    return host.strip("[]"), int(port)


@dataclass
class _Failures:
    count: int = 0
    until: float = 0.0


@dataclass
class TokenGate:
    """The one-time token, the sessions it turned into, and the wrong-token throttle (pure;
    the clock is injectable)."""

    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    clock: object = time.monotonic
    base_delay: float = 0.5
    max_delay: float = 30.0
    sessions: set[str] = field(default_factory=set)
    spent: bool = False
    failures: dict[str, _Failures] = field(default_factory=dict)

    def wait_for(self, ip: str) -> float:
        """Seconds ``ip`` must still wait before a token attempt is considered."""
        f = self.failures.get(ip)
        return max(0.0, f.until - self.clock()) if f else 0.0

    def exchange(self, ip: str, given: str) -> str | None:
        """A new session id for the right, unspent token; None (and a longer wait) otherwise."""
        if not self.spent and hmac.compare_digest(given.encode(), self.token.encode()):
            self.spent = True
            self.failures.pop(ip, None)
            sid = secrets.token_urlsafe(32)
            self.sessions.add(sid)
            return sid
        f = self.failures.setdefault(ip, _Failures())
        if len(self.failures) > 10000:   # bounded memory under a spray of addresses
            self.failures.clear()
            self.failures[ip] = f
        f.count += 1
        f.until = self.clock() + min(self.max_delay, self.base_delay * 2 ** (f.count - 1))
        return None

    def valid(self, sid: str | None) -> bool:
        return bool(sid) and any(hmac.compare_digest(sid.encode(), s.encode()) for s in self.sessions)


_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        "font-src 'self'; img-src 'self' data:; connect-src 'self' {ws}; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'")


def _page(status: int, text: str):
    from aiohttp import web
    html = (f"<!DOCTYPE html><html lang=en><meta charset=utf-8><title>tui-mail</title>"
            f"<body style='font-family:monospace'><p>{text}</p></body></html>")
    return web.Response(status=status, text=html, content_type="text/html")


def make_server(command: str, host: str, port: int, gate: TokenGate, *, tls: bool, title: str = "tui-mail"):
    """A textual-serve Server with the gate in front (see the module docstring)."""
    import aiohttp_jinja2
    import jinja2
    from aiohttp import web
    from textual_serve.server import Server

    allowed_hosts = {host, "localhost", "127.0.0.1", "[::1]"} if is_loopback(host) else {host}

    class WebServer(Server):
        def __init__(self) -> None:
            super().__init__(command, host=host, port=port, title=title, templates_path=TEMPLATES)
            self.scheme = "https" if tls else "http"

        @web.middleware
        async def guard(self, request: web.Request, handler):
            hostname = request.host.rsplit(":", 1)[0] if not request.host.startswith("[") \
                else request.host.split("]")[0] + "]"
            if hostname not in allowed_hosts:
                return _page(403, "Unknown host name.")
            ip = request.remote or "?"
            sid = request.cookies.get(COOKIE)
            if not gate.valid(sid):
                given = request.query.get("token")
                if given is None or request.path != "/":
                    return _page(401, "Open the URL with the token that <code>tui-mail web</code> printed.")
                if (wait := gate.wait_for(ip)) > 0:
                    await asyncio.sleep(min(wait, 30.0))
                new = gate.exchange(ip, given)
                if new is None:
                    return _page(403, "Wrong or used token. Restart <code>tui-mail web</code> for a new one.")
                resp = web.HTTPSeeOther("/")
                resp.set_cookie(COOKIE, new, httponly=True, samesite="Strict", secure=tls, path="/")
                raise resp
            if request.path == "/ws":
                origin = request.headers.get("Origin", "")
                if origin != f"{self.scheme}://{request.host}":
                    return _page(403, "Cross-origin websocket refused.")
            resp = await handler(request)
            ws = f"{'wss' if tls else 'ws'}://{request.host}"
            resp.headers["Content-Security-Policy"] = _CSP.format(ws=ws)
            resp.headers["X-Content-Type-Options"] = "nosniff"
            resp.headers["Referrer-Policy"] = "no-referrer"
            resp.headers["Cache-Control"] = "no-store"
            return resp

        async def _make_app(self) -> web.Application:
            app = web.Application(middlewares=[self.guard])
            aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(self.templates_path), autoescape=True)
            import textual_serve
            statics = Path(textual_serve.__file__).parent / "static"
            app.add_routes([
                web.get("/", self.handle_index, name="index"),
                web.get("/ws", self.handle_websocket, name="websocket"),
                web.get("/download/{key}", self.handle_download, name="download"),
                web.static("/static", statics, show_index=False, name="static"),
            ])
            return app

        async def handle_index(self, request: web.Request):
            font_size = max(8, min(40, int(request.query.get("fontsize", "16"))
                                   if request.query.get("fontsize", "16").isdigit() else 16))
            base = f"{self.scheme}://{request.host}"
            ws_base = f"{'wss' if tls else 'ws'}://{request.host}"
            context = {"font_size": font_size,
                       "app_websocket_url": ws_base + str(request.app.router["websocket"].url_for()),
                       "config": {"static": {"url": base + "/static/"}},
                       "application": {"name": self.title}}
            return aiohttp_jinja2.render_template("app_index.html", request, context)

    return WebServer()


async def serve(server, host: str, port: int, ssl_context, started=None, stop: asyncio.Event | None = None):
    """Run ``server`` until ``stop`` is set; ``started(bound_port)`` once listening."""
    from aiohttp import web

    app = await server._make_app()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]
    if started:
        started(bound)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


def app_command(args_for_app: list[str]) -> str:
    """The shell command textual-serve runs per session (it uses a shell: everything quoted)."""
    return shlex.join([sys.executable, "-m", "tui_mail", *args_for_app])


DESCRIPTION = "Serve the TUI to a browser, behind a one-time token printed at start."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"where to listen (default {DEFAULT_LISTEN}; not loopback only with --cert/--key)")
    p.add_argument("--cert", metavar="FILE", help="TLS certificate (PEM)")
    p.add_argument("--key", metavar="FILE", help="TLS private key (PEM)")
    p.add_argument("--account", metavar="NAME", help="open this account first")


def parse_args(argv: list[str], prog: str = "tui-mail web") -> argparse.Namespace:
    from tui_mail.cli import common_options

    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, parents=[common_options()])
    add_arguments(p)
    return p.parse_args(argv)


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert and not key:
        return None
    if not (cert and key):
        raise ValueError("--cert and --key go together")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def run(listen: str, cert: str | None, key: str | None, app_args: list[str], *, banner: str = "",
        out=None) -> int:
    out = out or sys.stdout
    try:
        host, port = parse_listen(listen)
        ctx = tls_context(cert, key)
    except (ValueError, OSError) as e:
        print(f"tui-mail web: {e}", file=sys.stderr)
        return 2
    if ctx is None and not is_loopback(host):
        print(f"tui-mail web: listening on {host} needs TLS: add --cert FILE --key FILE", file=sys.stderr)
        return 2
    gate = TokenGate()
    server = make_server(app_command(app_args), host, port, gate, tls=ctx is not None)

    def started(bound: int) -> None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        shown = f"[{shown}]" if ":" in shown else shown
        scheme = "https" if ctx else "http"
        print(f"{banner}tui-mail in a browser: open {scheme}://{shown}:{bound}/?token={gate.token}\n"
              "(the token works once; Ctrl+C stops)", file=out, flush=True)

    try:
        asyncio.run(serve(server, host, port, ctx, started))
    except OSError as e:
        print(f"tui-mail web: cannot listen on {listen}: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    app_args = []
    if getattr(args, "config", None):
        app_args += ["--config", os.path.abspath(args.config)]
    if args.account:
        app_args += ["--account", args.account]
    return run(args.listen, args.cert, args.key, app_args)
