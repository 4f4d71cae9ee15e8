"""Routing: static routes, smarthost, and the real MX code path against a DNS server on loopback."""

from __future__ import annotations

import random

import pytest

from relay.config import parse_config
from relay.routing import MX, Destination, Router, RoutingError, domain_literal, is_null_mx, order_mx
from tests.dnsserver import DNSServer

ZONE = """
hamburger.edu.      60 IN MX 10 mx1.hamburger.edu.
hamburger.edu.      60 IN MX 20 mx2.hamburger.edu.
mx1.hamburger.edu.  60 IN A 127.0.0.2
mx2.hamburger.edu.  60 IN A 127.0.0.1
mx2.hamburger.edu.  60 IN AAAA ::1
plain.example.      60 IN A 127.0.0.3
nomail.example.     60 IN MX 0 .
ghost.example.      60 IN MX 10 nowhere.ghost.example.
ghost.example.      60 IN TXT "exists"
txtonly.example.    60 IN TXT "no mail here"
"""


def cfg_with(tmp_path, toml: str = "", dns_port: int | None = None):
    if dns_port is not None:
        toml = f'[dns]\nnameservers = ["127.0.0.1:{dns_port}"]\n' + toml
    return parse_config(toml, None, tmp_path / "data")


# ---- pure parts --------------------------------------------------------------------------

def test_order_mx_sorts_by_preference_and_drops_duplicates():
    recs = [MX(20, "b"), MX(10, "a"), MX(30, "c"), MX(20, "b")]
    assert order_mx(recs, random.Random(1)) == ["a", "b", "c"]


def test_order_mx_shuffles_equal_preferences():
    recs = [MX(10, h) for h in "abcdef"] + [MX(5, "first")]
    seen = {tuple(order_mx(recs, random.Random(seed))) for seed in range(20)}
    assert all(order[0] == "first" and sorted(order[1:]) == list("abcdef") for order in seen)
    assert len(seen) > 1


def test_null_mx_detection():
    assert is_null_mx([MX(0, "")])
    assert not is_null_mx([MX(0, ""), MX(10, "mx.example")])
    assert not is_null_mx([])


def test_domain_literals():
    assert domain_literal("[127.0.0.1]") == "127.0.0.1"
    assert domain_literal("[IPv6:::1]") == "::1"
    assert domain_literal("[not-an-ip]") is None
    assert domain_literal("example.org") is None


def test_destination_str_hides_password():
    d = Destination("127.0.0.1", 2526, "mx.example", user="u", password="hunter2")
    assert "hunter2" not in repr(d) and "hunter2" not in str(d)
    assert str(d) == "mx.example[127.0.0.1:2526]"


# ---- static routes and smarthost (no DNS involved) -------------------------------------

async def test_static_route_wins_over_smarthost(tmp_path):
    cfg = cfg_with(tmp_path, '[routes]\n"hamburger.edu" = "127.0.0.1:2526"\n'
                             '"secure.example" = { host = "127.0.0.1", port = 2600, require_tls = true }\n'
                             '[smarthost]\nhost = "smtp.example.com"\nport = 465\nsecurity = "tls"\n'
                             'user = "me"\npassword = "s3cret"\n')
    router = Router(cfg)
    r = await router.route("Hamburger.EDU.")
    assert r.kind == "static" and r.destinations == (Destination("127.0.0.1", 2526, "127.0.0.1", "may"),)
    r = await router.route("secure.example")
    assert r.destinations[0].tls == "require"
    r = await router.route("anywhere.example")
    assert r.kind == "smarthost"
    (d,) = r.destinations
    assert (d.host, d.port, d.tls, d.verify, d.user, d.password) == ("smtp.example.com", 465, "smtps", True, "me", "s3cret")


async def test_domain_literal_goes_straight_to_the_address(tmp_path):
    router = Router(cfg_with(tmp_path), mx_port=2999)
    r = await router.route("[127.0.0.9]")
    assert r.kind == "literal" and r.destinations == (Destination("127.0.0.9", 2999, "127.0.0.9"),)


# ---- DNS: the real resolver against a loopback server ----------------------------------

@pytest.fixture
async def dns_server():
    server = DNSServer(ZONE, servfail=("broken.example",))
    await server.start()
    yield server
    server.close()


async def test_mx_by_preference_with_addresses(tmp_path, dns_server):
    router = Router(cfg_with(tmp_path, dns_port=dns_server.port), mx_port=2525)
    r = await router.route("hamburger.edu")
    assert r.kind == "mx"
    assert [(d.host, d.port, d.name) for d in r.destinations] == [
        ("127.0.0.2", 2525, "mx1.hamburger.edu"),
        ("127.0.0.1", 2525, "mx2.hamburger.edu"),
        ("::1", 2525, "mx2.hamburger.edu"),
    ]


async def test_answers_are_cached(tmp_path, dns_server):
    router = Router(cfg_with(tmp_path, dns_port=dns_server.port))
    first = await router.route("hamburger.edu")
    asked = len(dns_server.queries)
    assert await router.route("hamburger.edu") == first
    assert len(dns_server.queries) == asked


async def test_no_mx_falls_back_to_address(tmp_path, dns_server):
    router = Router(cfg_with(tmp_path, dns_port=dns_server.port))
    r = await router.route("plain.example")
    assert r.kind == "address" and [d.host for d in r.destinations] == ["127.0.0.3"]
    assert r.destinations[0].port == 25


async def test_null_mx_is_permanent(tmp_path, dns_server):
    router = Router(cfg_with(tmp_path, dns_port=dns_server.port))
    with pytest.raises(RoutingError) as ei:
        await router.route("nomail.example")
    assert ei.value.permanent and ei.value.code == 556 and ei.value.status == "5.1.10"


async def test_nxdomain_is_permanent(tmp_path, dns_server):
    router = Router(cfg_with(tmp_path, dns_port=dns_server.port))
    with pytest.raises(RoutingError) as ei:
        await router.route("does-not-exist.example")
    assert ei.value.permanent and ei.value.status == "5.1.2"


async def test_no_mx_no_address_is_permanent(tmp_path, dns_server):
    router = Router(cfg_with(tmp_path, dns_port=dns_server.port))
    with pytest.raises(RoutingError) as ei:
        await router.route("txtonly.example")
    assert ei.value.permanent and "no MX and no address" in ei.value.text


async def test_mx_host_without_address_is_permanent(tmp_path, dns_server):
    router = Router(cfg_with(tmp_path, dns_port=dns_server.port))
    with pytest.raises(RoutingError) as ei:
        await router.route("ghost.example")
    assert ei.value.permanent and "nowhere.ghost.example" in ei.value.text


async def test_servfail_is_temporary(tmp_path, dns_server):
    router = Router(cfg_with(tmp_path, dns_port=dns_server.port))
    with pytest.raises(RoutingError) as ei:
        await router.route("broken.example")
    assert not ei.value.permanent and ei.value.code == 451 and ei.value.status == "4.4.3"


async def test_unreachable_nameserver_is_temporary(tmp_path, port_factory):
    from relay.routing import make_resolver

    cfg = cfg_with(tmp_path, dns_port=port_factory())  # nothing answers there
    router = Router(cfg, resolver=make_resolver(cfg, timeout=0.3))
    with pytest.raises(RoutingError) as ei:
        await router.route("hamburger.edu")
    assert not ei.value.permanent


async def test_resolver_without_nameservers_defers(tmp_path):
    import dns.asyncresolver

    empty = dns.asyncresolver.Resolver(configure=False)  # like a host without /etc/resolv.conf
    router = Router(cfg_with(tmp_path), resolver=empty)
    with pytest.raises(RoutingError) as ei:
        await router.route("hamburger.edu")
    assert not ei.value.permanent and ei.value.status == "4.4.3"
