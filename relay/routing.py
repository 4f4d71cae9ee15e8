"""Where mail for a domain goes next: static route, smarthost, or DNS MX (RFC 5321 §5.1).

For each recipient domain, in order:

1. a static route from ``[routes]`` in relay.toml (``"hamburger.edu" = "127.0.0.1:2526"``);
2. the ``[smarthost]``, when one is configured (every non-local domain goes there);
3. DNS: the MX records by preference (equal preferences shuffled, as §5.1 asks), each MX host
   resolved to its A/AAAA addresses through the *same* resolver; no MX at all means the domain's
   own A/AAAA ("implicit MX"); a null MX (RFC 7505, a single ``MX 0 .``) is a permanent failure.

The result is an ordered tuple of :class:`Destination` — the delivery code connects to them in
order, moving on after a connection failure or a 4xx. Failures are :class:`RoutingError` with
``permanent`` telling the queue whether to bounce (NXDOMAIN, null MX) or retry later (timeouts,
SERVFAIL). The resolver's nameservers come from ``[dns] nameservers`` (with ports), which is
also how the tests drive the real MX path against a DNS server on loopback.

Everything DNS-shaped goes through dnspython; what is hand-written here is only the ordering and
failure policy, kept in pure functions (:func:`order_mx`, :func:`is_null_mx`).
"""

from __future__ import annotations

import ipaddress
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from relay.config import RelayConfig
from relay.errors import RelayError

SMTP_PORT = 25


@dataclass(frozen=True)
class Destination:
    """One server to try: where to connect and how to talk to it.

    ``tls`` is ``"may"`` (opportunistic STARTTLS, unauthenticated — the norm between MXes),
    ``"require"`` (STARTTLS must succeed, for ``require_tls`` routes), ``"smtps"`` (TLS from the
    first byte) or ``"none"``. ``verify`` asks for certificate verification (smarthosts).
    """

    host: str
    port: int
    name: str = ""
    tls: str = "may"
    verify: bool = False
    user: str = ""
    password: str = field(default="", repr=False, compare=False)

    def __str__(self) -> str:
        shown = self.name if self.name and self.name != self.host else ""
        addr = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        return f"{shown}[{addr}]" if shown else addr


@dataclass(frozen=True)
class Route:
    """How to reach one domain: the destinations in the order to try them."""

    domain: str
    kind: str  # "static" | "smarthost" | "mx" | "address" | "literal"
    destinations: tuple[Destination, ...]


class RoutingError(RelayError):
    """No way to reach a domain; ``permanent`` means bounce now, else retry later."""

    def __init__(self, domain: str, text: str, *, permanent: bool, code: int, status: str):
        self.domain, self.text, self.permanent, self.code, self.status = domain, text, permanent, code, status
        super().__init__(f"{domain}: {text}")


@dataclass(frozen=True)
class MX:
    preference: int
    exchange: str  # without the trailing dot; "" is the null MX


def is_null_mx(records: Sequence[MX]) -> bool:
    """RFC 7505: the domain accepts no mail (a lone ``MX 0 .``; any "." exchange counts)."""
    return bool(records) and all(r.exchange == "" for r in records)


def order_mx(records: Iterable[MX], rng: random.Random | None = None) -> list[str]:
    """MX host names by ascending preference, ties shuffled (RFC 5321 §5.1), null MXes dropped."""
    rng = rng or random.Random()
    by_pref: dict[int, list[str]] = {}
    for r in records:
        if r.exchange:
            by_pref.setdefault(r.preference, []).append(r.exchange)
    out: list[str] = []
    for pref in sorted(by_pref):
        group = list(dict.fromkeys(by_pref[pref]))
        rng.shuffle(group)
        out.extend(h for h in group if h not in out)
    return out


def domain_literal(domain: str) -> str | None:
    """``[192.0.2.1]`` / ``[IPv6:2001:db8::1]`` → the address, else None."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner.lower().startswith("ipv6:"):
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None


def make_resolver(cfg: RelayConfig, timeout: float = 5.0) -> dns.asyncresolver.Resolver:
    """dnspython resolver on ``[dns] nameservers`` (with their ports), else the system's."""
    if cfg.dns.nameservers:
        res = dns.asyncresolver.Resolver(configure=False)
        res.nameservers = [dns.nameserver.Do53Nameserver(a.host, a.port) for a in cfg.dns.nameservers]
    else:
        try:
            res = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration:  # no /etc/resolv.conf: every lookup defers
            res = dns.asyncresolver.Resolver(configure=False)
    res.lifetime = timeout
    res.timeout = min(res.timeout, timeout)
    return res


class Router:
    """Resolves a domain to a :class:`Route`; caches answers for their DNS TTL (max 5 min).

    ``mx_port`` is the port MX hosts listen on — 25 in the world; tests running unprivileged
    servers on loopback pass their port here.
    """

    def __init__(self, cfg: RelayConfig, *, resolver: dns.asyncresolver.Resolver | None = None,
                 mx_port: int = SMTP_PORT, rng: random.Random | None = None, clock=time.monotonic):
        self.cfg = cfg
        self.resolver = resolver or make_resolver(cfg)
        self.mx_port = mx_port
        self.rng = rng or random.Random()
        self.clock = clock
        self._cache: dict[str, tuple[float, Route]] = {}

    async def route(self, domain: str) -> Route:
        domain = domain.lower().rstrip(".")
        literal = domain_literal(domain)
        if literal is not None:
            return Route(domain, "literal", (Destination(literal, self.mx_port, literal),))
        static = self.cfg.routes.get(domain)
        if static is not None:
            tls = "require" if static.require_tls else "may"
            return Route(domain, "static", (Destination(static.host, static.port, static.host, tls),))
        sh = self.cfg.smarthost
        if sh is not None:
            tls = {"tls": "smtps", "starttls": "require", "none": "none"}[sh.security]
            return Route(domain, "smarthost",
                         (Destination(sh.host, sh.port, sh.host, tls, verify=tls != "none",
                                      user=sh.user, password=sh.password),))
        cached = self._cache.get(domain)
        if cached and cached[0] > self.clock():
            return cached[1]
        route, ttl = await self._resolve_mx(domain)
        self._cache[domain] = (self.clock() + min(ttl, 300), route)
        return route

    async def _resolve_mx(self, domain: str) -> tuple[Route, float]:
        try:
            answer = await self.resolver.resolve(domain, "MX")
        except dns.resolver.NXDOMAIN:
            raise RoutingError(domain, "the domain does not exist (NXDOMAIN)",
                               permanent=True, code=550, status="5.1.2") from None
        except dns.resolver.NoAnswer:
            answer = None
        except dns.exception.DNSException as e:  # timeout, SERVFAIL, no nameservers…: try later
            raise RoutingError(domain, f"MX lookup failed: {_dns_text(e)}",
                               permanent=False, code=451, status="4.4.3") from None
        if answer is None:  # no MX: the domain itself is the mail host (RFC 5321 §5.1)
            addrs, ttl = await self._addresses(domain)
            if not addrs:
                raise RoutingError(domain, "no MX and no address records",
                                   permanent=True, code=550, status="5.1.2")
            return Route(domain, "address", tuple(Destination(a, self.mx_port, domain) for a in addrs)), ttl
        records = [MX(r.preference, r.exchange.to_text(omit_final_dot=True).lower()
                      if r.exchange.to_text() != "." else "") for r in answer]
        if is_null_mx(records):
            raise RoutingError(domain, "the domain accepts no mail (null MX, RFC 7505)",
                               permanent=True, code=556, status="5.1.10")
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else 60.0
        dests: list[Destination] = []
        missing = temporary = 0
        hosts = order_mx(records, self.rng)
        for host in hosts:
            try:
                addrs, attl = await self._addresses(host, strict=True)
            except RoutingError as e:
                temporary += not e.permanent
                missing += e.permanent
                continue
            ttl = min(ttl, attl)
            dests.extend(Destination(a, self.mx_port, host) for a in addrs if
                         Destination(a, self.mx_port, host) not in dests)
        if not dests:
            permanent = missing == len(hosts)
            raise RoutingError(domain, f"no address for any MX host ({', '.join(hosts)})",
                               permanent=permanent, code=550 if permanent else 451,
                               status="5.4.4" if permanent else "4.4.3")
        return Route(domain, "mx", tuple(dests)), ttl

    async def _addresses(self, host: str, strict: bool = False) -> tuple[list[str], float]:
        """A then AAAA records of ``host`` (an IP literal is its own address)."""
        try:
            return [str(ipaddress.ip_address(host))], 300.0
        except ValueError:
            pass
        addrs: list[str] = []
        ttl = 300.0
        nx = True
        errors: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                ans = await self.resolver.resolve(host, rdtype)
            except dns.resolver.NXDOMAIN:
                continue
            except dns.resolver.NoAnswer:
                nx = False
                continue
            except dns.exception.DNSException as e:
                nx = False
                errors.append(_dns_text(e))
                continue
            nx = False
            if ans.rrset is not None:
                ttl = min(ttl, float(ans.rrset.ttl))
            addrs.extend(r.address for r in ans)
        if not addrs and errors:
            raise RoutingError(host, f"address lookup failed: {errors[0]}", permanent=False,
                               code=451, status="4.4.3")
        if strict and not addrs:
            raise RoutingError(host, "host not found" if nx else "no address records",
                               permanent=True, code=550, status="5.4.4")
        return addrs, ttl


def _dns_text(e: Exception) -> str:
    if isinstance(e, dns.exception.Timeout):
        return "DNS timeout"
    if isinstance(e, dns.resolver.NoNameservers):
        return "no nameserver answered (SERVFAIL or refused)"
    return str(e) or type(e).__name__
