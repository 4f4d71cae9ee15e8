"""Implicit-TLS listeners: ``[listen] imaps``, ``pop3s`` and ``submissions`` (RFC 8314: TLS
from the first byte, the ports 993, 995 and 465 of public servers). Off by default; each
speaks the same protocol as its STARTTLS sibling, over the relay's certificate, with the same
mail store, users, throttle and limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.limits import listener_limiter

if TYPE_CHECKING:  # pragma: no cover
    from relay.server import RelayServer


async def start_implicit_tls(relay: RelayServer) -> None:
    """Open the configured implicit-TLS listeners of ``relay`` and register them (addresses,
    and servers to close on stop; SMTP ones with their handler so open transactions drain)."""
    import asyncio

    from relay.imap.server import start_imap_server
    from relay.pop3.server import start_pop3_server
    from relay.server import ListenError, bound_address, listen_args
    from relay.smtp.handlers import RelayHandler

    cfg, ctx = relay.cfg, relay.ssl_context
    listen = cfg.listen
    if listen.submissions is not None:
        addr = listen.submissions
        handler = RelayHandler(cfg, relay.spool, relay.users, relay.throttle, submission=True,
                               on_queued=relay.on_queued if getattr(relay, "role", "") == "worker" else relay.runner.add)
        try:   # tls_context None: the session is TLS already, so no STARTTLS is offered
            srv = await asyncio.get_running_loop().create_server(
                handler.factory(None), **listen_args(relay, "submissions", addr), ssl=ctx)
        except OSError as e:
            raise ListenError(f"cannot listen for submissions on {addr}: {e.strerror or e}"
                              " (change [listen] submissions in relay.toml)") from None
        relay.smtp_handlers["submissions"] = handler
        relay.servers["submissions"] = srv
        relay.addresses["submissions"] = bound_address(srv)
    for name, addr, start in (("imaps", listen.imaps, _imaps), ("pop3s", listen.pop3s, _pop3s)):
        if addr is None:
            continue
        try:
            srv = await start(relay, addr, start_imap_server if name == "imaps" else start_pop3_server)
        except OSError as e:
            raise ListenError(f"cannot listen for {name} on {addr}: {e.strerror or e}"
                              f" (change [listen] {name} in relay.toml)") from None
        relay.extra_servers.append(srv)
        relay.addresses[name] = bound_address(srv)


async def _imaps(relay, addr, start):
    from relay.server import listen_args
    cfg = relay.cfg
    return await start(addr.host, addr.port, store=relay.mail_store.user, authenticate=relay.authenticate,
                       ssl_context=relay.ssl_context, bus=relay.bus, throttle=relay.throttle,
                       allow_plaintext="loopback" if cfg.auth.allow_plaintext_loopback else False,
                       hostname=cfg.hostname, implicit_tls=True,
                       idle_timeout=cfg.limits.idle_timeout, login_timeout=cfg.limits.login_timeout,
                       max_literal=cfg.queue.max_message_size, spool_dir=cfg.data_dir,
                       limiter=listener_limiter(cfg, "imaps"), listen=listen_args(relay, "imaps", addr))


async def _pop3s(relay, addr, start):
    from relay.server import listen_args
    cfg = relay.cfg
    return await start(addr.host, addr.port, store=relay.mail_store, authenticate=relay.authenticate,
                       ssl_context=relay.ssl_context, throttle=relay.throttle,
                       allow_plaintext=cfg.auth.allow_plaintext_loopback, hostname=cfg.hostname,
                       implicit_tls=True, idle_timeout=min(cfg.limits.idle_timeout, 600.0),
                       login_timeout=cfg.limits.login_timeout, limiter=listener_limiter(cfg, "pop3s"),
                       listen=listen_args(relay, "pop3s", addr))
